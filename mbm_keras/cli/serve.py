"""`mbm-keras serve`: a run folder or a SavedModel behind an HTTP API (TensorFlow Serving's REST API, uploads,
dynamic batching, Prometheus metrics), on uvicorn."""

import argparse
import os

from mbm_keras.cli.common import positive_int

EPILOG_SERVE = """examples:
  mbm-keras serve --model saved_models/demo                        # http://127.0.0.1:8500
  mbm-keras serve --index catalogue.index                          # the retrieval run that built it: /search
  mbm-keras serve --model runs/transcription                       # /transcribe
  mbm-keras serve --model runs/first --name first --port 8600 --max-batch-size 64 --batch-timeout-ms 2
  MBM_KERAS_TOKEN=s3cret mbm-keras serve --model saved_models/demo --host 0.0.0.0

then (the files exist after: mbm-keras demo --data-only --data-dir data/demo):
  curl http://127.0.0.1:8500/v1/models/demo
  curl -d '{"instances": [{"text": "a brown terrier", "image": {"b64": "'$(base64 -w0 data/demo/images/0001.png)'"}}]}' \\
      http://127.0.0.1:8500/v1/models/demo:predict
  curl -F image=@data/demo/images/0001.png -F text="a brown terrier" http://127.0.0.1:8500/predict
  curl -F text="a red bird" -F k=5 http://127.0.0.1:8500/search               # (--index)
  curl -F audio=@data/demo/speech/0001.wav http://127.0.0.1:8500/transcribe
(each endpoint's fields: see the README's "Serve" section)
"""

TOKEN_VARIABLE = "MBM_KERAS_TOKEN"


def add_parser(sub):
    serve = sub.add_parser(
        "serve",
        help="serve a run or a SavedModel over HTTP (TensorFlow Serving's REST API, uploads, batching, metrics)",
        description="Loads the model once and answers HTTP requests: GET /v1/models/NAME and its /metadata, POST "
                    "/v1/models/NAME:predict (TensorFlow Serving's JSON bodies), the task's endpoints with file "
                    "uploads (classifiers: POST /predict; retrieval: /search with --index, /embed; transcription: "
                    "/transcribe), a web page at /, GET /metrics (Prometheus) and GET /healthz. Concurrent requests "
                    "are merged into one model "
                    "call. Listens on 127.0.0.1 unless --host says otherwise; with the environment variable "
                    f"{TOKEN_VARIABLE} set, every request but /healthz needs 'Authorization: Bearer <token>'. "
                    "Ctrl-C (or SIGTERM) finishes the requests in flight, then stops.",
        epilog=EPILOG_SERVE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    serve.add_argument("--model", default=None,
                       help="run folder (or its model.keras) or SavedModel folder, e.g. --model saved_models/demo "
                            "(with --index, default: the retrieval run that built the index)")
    serve.add_argument("--index", default=None,
                       help="index that POST /search searches (mbm-keras index), e.g. --index catalogue.index")
    serve.add_argument("--name", default=None,
                       help="the model's name in /v1/models/NAME, e.g. --name demo (default: the model folder's name)")
    serve.add_argument("--host", default="127.0.0.1",
                       help="address to listen on, e.g. --host 0.0.0.0 for every interface (default: %(default)s, this machine only)")
    serve.add_argument("--port", type=_port, default=8500, help="port, e.g. --port 8600 (default: %(default)s)")
    serve.add_argument("--max-batch-size", type=positive_int, default=32,
                       help="most examples merged into one model call, e.g. --max-batch-size 64 (default: %(default)s)")
    serve.add_argument("--batch-timeout-ms", type=_milliseconds, default=5.0,
                       help="how long a request waits for others to join its batch, e.g. --batch-timeout-ms 2 (default: %(default)s)")
    serve.add_argument("--no-batching", action="store_true", help="one model call per request, e.g. --no-batching to compare")
    serve.add_argument("--max-body-mb", type=positive_int, default=32,
                       help="largest request body taken, in MB, e.g. --max-body-mb 8 (default: %(default)s); larger ones get 413")
    serve.set_defaults(func=command)


def _index_run(index):
    """The retrieval run an index records (`mbm-keras index` writes it), for `serve --index` without `--model`."""
    from mbm_keras.retrieval.index import Index

    if index is None:
        raise ValueError("mbm-keras serve needs --model RUN_OR_SAVEDMODEL (or --index INDEX of a retrieval run)")
    run = Index.load(index).info.get("run")
    if not run:
        raise ValueError(f"--index {index} does not record the run that built it; give it with --model RUN")
    return run


def _port(text):
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"must be a port number from 1 to 65535. Received: {text}")
    return int(text)


def _milliseconds(text):
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 10_000:
        raise argparse.ArgumentTypeError(f"must be a number of milliseconds from 0 to 10000. Received: {text}")
    return value


def command(args):
    import uvicorn

    from mbm_keras.serve import BatchOptions, ServeOptions, create_app

    model = args.model or _index_run(args.index)
    options = ServeOptions(
        name=args.name,
        index=args.index,
        batching=BatchOptions(enabled=not args.no_batching, max_batch_size=args.max_batch_size,
                              timeout_ms=args.batch_timeout_ms),
        max_body_bytes=args.max_body_mb * 1024 * 1024,
        token=os.environ.get(TOKEN_VARIABLE) or None,
    )
    print(f"Loading {model} ...", flush=True)
    app = create_app(model, options)
    servable, catalogue = app.state.servable, app.state.catalogue
    if catalogue is not None and not catalogue.checked_model:
        print(f"Note: {args.index} cannot be checked against a SavedModel's run (its vectors' size matches); "
              f"serve the run folder to have it checked", flush=True)
    endpoints = ", ".join("/" + e for e in servable.task.endpoints if e != "search" or catalogue is not None)
    print(f"Serving {servable.task.name} model {app.state.name!r} on http://{args.host}:{args.port} "
          f"({endpoints}{f', {len(catalogue):,} catalogue rows' if catalogue is not None else ''}; "
          f"batching {'off' if args.no_batching else f'up to {args.max_batch_size} examples, {args.batch_timeout_ms:g} ms'}"
          f"{', API token required' if options.token else ''}); Ctrl-C stops", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", timeout_graceful_shutdown=30)
    return 0
