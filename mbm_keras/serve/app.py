"""The ASGI app of `mbm-keras serve` (FastAPI on uvicorn): TensorFlow Serving's REST API, upload endpoints,
dynamic batching, Prometheus metrics, a health check, an optional API token and a request size limit.

Every error answers JSON `{"error": ..., "field": ...}` with a 4xx status naming the input at fault; an
unexpected failure answers 500 with a one-line message (the traceback goes to the server's log only).
"""

import dataclasses
import hmac
import json
import logging
import os
import time

from mbm_keras.serve import rest
from mbm_keras.serve.batching import BatchOptions, Batcher
from mbm_keras.serve.servable import RequestError, Servable

log = logging.getLogger("mbm_keras.serve")
PUBLIC_PATHS = ("/healthz", "/")  # the page holds no answers: its requests need the token


@dataclasses.dataclass(frozen=True)
class ServeOptions:
    """How `mbm-keras serve` answers.

    Args:
        name: the model's name in `/v1/models/NAME` (default: the model folder's name).
        batching: a `BatchOptions` (dynamic batching).
        max_body_bytes: the largest request body taken (413 above it).
        token: when set, every request but `/healthz` needs `Authorization: Bearer TOKEN`.
        version: the version `/v1/models/NAME` reports.

    Examples:
        >>> ServeOptions(name="demo", batching=BatchOptions(max_batch_size=64), token="s3cret")
    """

    name: str = None
    batching: BatchOptions = BatchOptions()
    max_body_bytes: int = 32 * 1024 * 1024
    token: str = None
    version: int = 1


def model_name(path):
    """TensorFlow Serving's `--model_name` default here: the model folder's name.

    Args:
        path: the served run folder, `model.keras` file or SavedModel folder.

    Examples:
        >>> model_name("saved_models/demo")
        'demo'
    """
    path = os.path.abspath(path)
    folder = os.path.dirname(path) if os.path.isfile(path) else path
    return os.path.basename(folder.rstrip(os.sep)) or "model"


def create_app(model, options=ServeOptions()):
    """The app serving `model`: TensorFlow Serving's REST API, `/predict` uploads, `/metrics`, `/healthz`.

    Args:
        model: a run folder, `model.keras` or SavedModel folder, or a loaded `Servable`.
        options: a `ServeOptions` (name, batching, body limit, API token).

    Examples:
        >>> app = create_app("saved_models/demo", ServeOptions(batching=BatchOptions(max_batch_size=16)))
        >>> uvicorn.run(app, host="127.0.0.1", port=8500)
    """
    import contextlib

    from fastapi import FastAPI

    servable = model if isinstance(model, Servable) else Servable(model)
    name = options.name or model_name(servable.path)
    metrics = _Metrics()
    batcher = Batcher(servable.run, options.batching, observe=metrics.batch_size.observe)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        await batcher.start()
        log.info("serving %s as %r (%s)", servable.path, name, servable.task.name)
        yield
        await batcher.stop()  # requests in flight finish first

    app = FastAPI(title=f"mbm-keras serve: {name}", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.servable, app.state.batcher, app.state.metrics, app.state.name = servable, batcher, metrics, name
    _add_guards(app, options, metrics)
    _add_routes(app, servable, batcher, metrics, name, options)
    return app


class _Metrics:
    """Prometheus metrics in a registry of this app's own (two apps in one process count apart)."""

    def __init__(self):
        from prometheus_client import CollectorRegistry, Counter, Histogram

        self.registry = CollectorRegistry()
        self.requests = Counter("mbm_keras_requests", "Requests answered, by endpoint and status code",
                                ["endpoint", "code"], registry=self.registry)
        self.latency = Histogram("mbm_keras_request_seconds", "Time to answer a request, by endpoint",
                                 ["endpoint"], registry=self.registry,
                                 buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
        self.batch_size = Histogram("mbm_keras_batch_size", "Examples per model call", registry=self.registry,
                                    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024))


def _error(status, message, field=None):
    from fastapi.responses import JSONResponse

    return JSONResponse({"error": message, **({"field": field} if field else {})}, status_code=status)


def _add_guards(app, options, metrics):
    from fastapi.exceptions import RequestValidationError

    app.add_middleware(_Guard, options=options, metrics=metrics)

    @app.exception_handler(RequestError)
    async def request_error(request, error):
        return _error(error.status, str(error), error.field)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request, error):
        first = error.errors()[0] if error.errors() else {}
        field = ".".join(str(p) for p in first.get("loc", ())[1:]) or None
        return _error(422, first.get("msg", "invalid request"), field)


class _Guard:
    """Plain ASGI middleware (Starlette's BaseHTTPMiddleware costs a task group per request): the API token,
    the body size from Content-Length, metrics, and a JSON 500 for anything unexpected."""

    def __init__(self, app, options, metrics):
        self.app, self.options, self.metrics = app, options, metrics
        self.expected = f"Bearer {options.token}".encode() if options.token else None

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started, path, status = time.perf_counter(), scope["path"], []

        async def sending(message):
            if message["type"] == "http.response.start":
                status.append(message["status"])
            await send(message)

        headers = dict(scope["headers"])
        refusal = None
        if self.expected and path not in PUBLIC_PATHS and not hmac.compare_digest(
                headers.get(b"authorization", b""), self.expected):
            refusal = _error(401, "a valid API token is needed: Authorization: Bearer <token>")
        length = headers.get(b"content-length")
        if refusal is None and length is not None and (not length.isdigit()
                                                       or int(length) > self.options.max_body_bytes):
            refusal = _error(413, f"the request body is over the limit of {self.options.max_body_bytes:,} bytes")
        try:
            await (refusal or self.app)(scope, receive, sending)
        except Exception:  # noqa: BLE001 -- one line to the client, the traceback to the log
            log.exception("unexpected failure on %s", path)
            if not status:
                await _error(500, "the server failed on this request (see its log)")(scope, receive, sending)
        endpoint = _endpoint(path)
        self.metrics.requests.labels(endpoint, str(status[0] if status else 500)).inc()
        self.metrics.latency.labels(endpoint).observe(time.perf_counter() - started)


def _endpoint(path):
    if path.startswith("/v1/models/"):
        return "predict" if path.endswith(":predict") else "metadata" if path.endswith("/metadata") else "status"
    return path.strip("/") or "page"


async def _body(request, limit):
    """The body, read up to `limit` bytes (a client may send more than its Content-Length says)."""
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestError(f"the request body is over the limit of {limit:,} bytes", status=413)
        chunks.append(chunk)
    return b"".join(chunks)


def _add_routes(app, servable, batcher, metrics, name, options):
    from fastapi import Request
    from fastapi.responses import HTMLResponse, JSONResponse, Response

    def check_name(requested):
        if requested != name:
            raise RequestError(f"Servable not found for request: Latest({requested}); this server holds {name!r}",
                               field="name", status=404)

    page = _page(servable, name, options)

    @app.get("/", response_class=HTMLResponse)
    async def web_page():
        return page

    @app.get("/healthz")
    async def healthz():
        return {"status": "ok", "model": name}

    @app.get("/metrics")
    async def prometheus():
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/models/{requested}")
    async def model_status(requested: str):
        check_name(requested)
        return rest.status(options.version)

    @app.get("/v1/models/{requested}/metadata")
    async def model_metadata(requested: str):
        check_name(requested)
        return rest.metadata(servable, name, options.version)

    @app.post("/v1/models/{requested}:predict")
    async def tf_serving_predict(requested: str, request: Request):
        check_name(requested)  # any Content-Type, as TensorFlow Serving (curl -d sends a form's)
        body = await _body(request, options.max_body_bytes)
        try:
            data = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise RequestError(f"the body is not JSON: {e}", status=400) from None
        examples, columnar = rest.parse_predict(data, servable)
        outputs, rows = await batcher.submit(examples)
        return JSONResponse(rest.format_predict(servable, outputs, rows, columnar))

    @app.post("/predict")
    async def predict_upload(request: Request):
        _media_type(request, "multipart/form-data")
        body = await _body(request, options.max_body_bytes)

        async def replay():
            return {"type": "http.request", "body": body, "more_body": False}

        form = await Request(request.scope, replay).form()
        values, top = {}, 3
        for key, value in form.multi_items():
            if key == "top":
                top = _top(value)
            elif hasattr(value, "read"):  # an uploaded file
                values[key] = await value.read()
            else:
                values[key] = value
        outputs, rows = await batcher.submit([servable.example(values)])
        return _top_classes(servable, servable.answer(outputs, rows[0]), top)


def _page(servable, name, options):
    """The web page (`page.html` beside this file): a form of the model's inputs, the answer as bars."""
    import html

    def script(value):  # JSON inside <script>: no "</script>" can close it early
        return json.dumps(value).replace("<", "\\u003c")

    with open(os.path.join(os.path.dirname(__file__), "page.html"), encoding="utf-8") as f:
        text = f.read()
    inputs = {k: {"modality": v["modality"], "binary": v["binary"], "shape": v["shape"]}
              for k, v in servable.inputs.items()}
    # Every class as a bar: their count from the probabilities' columns when no preprocessor names them.
    columns = servable.output_specs.get("probabilities", {}).get("shape", [])
    count = len(servable.classes) if servable.classes else (columns[1] if len(columns) == 2 else 0)
    for key, value in {"__NAME__": html.escape(name), "__TASK__": html.escape(servable.task.name),
                       "__INPUTS__": script(inputs), "__CLASS_COUNT__": script(max(count, 0)),
                       "__TOKEN__": script(bool(options.token))}.items():
        text = text.replace(key, value)
    return text


def _media_type(request, expected):
    given = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if given != expected:
        raise RequestError(f"Content-Type {given or 'none'!r}: this endpoint takes {expected}", field="content-type",
                           status=415)


def _top(value):
    if not str(value).isdigit() or int(value) < 1:
        raise RequestError(f"top must be a whole number >= 1. Received: {value!r}", field="top")
    return int(value)


def _top_classes(servable, answer, top):
    """`/predict`'s answer: the top classes with their probabilities, most likely first (ranked by the task, as
    `predict` ranks them)."""
    if "probabilities" not in answer or "classes" not in answer:
        return {"predictions": answer.get("predictions", answer)}
    ranked = servable.task.answer(answer["probabilities"], answer["classes"], top, servable.path)
    return {"label": answer["label"], "score": answer["score"],
            "classes": [{"class": c, "probability": p} for c, p in ranked]}
