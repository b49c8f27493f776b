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
from mbm_keras.serve.endpoints import Served, add_endpoints
from mbm_keras.serve.forms import read_body
from mbm_keras.serve.servable import RequestError, Servable

log = logging.getLogger("mbm_keras.serve")
PUBLIC_PATHS = ("/healthz", "/")  # the page holds no answers: its requests need the token


@dataclasses.dataclass(frozen=True)
class ServeOptions:
    """How `mbm-keras serve` answers.

    Args:
        name: the model's name in `/v1/models/NAME` (default: the model folder's name).
        index: an index file (`mbm-keras index`) that `/search` searches (retrieval models).
        batching: a `BatchOptions` (dynamic batching).
        max_body_bytes: the largest request body taken (413 above it).
        token: when set, every request but `/healthz` needs `Authorization: Bearer TOKEN`.
        version: the version `/v1/models/NAME` reports.

    Examples:
        >>> ServeOptions(name="demo", batching=BatchOptions(max_batch_size=64), token="s3cret")
    """

    name: str = None
    index: str = None
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
    """The app serving `model`: TensorFlow Serving's REST API, its task's endpoints (`/predict`, `/search`,
    `/embed`, `/transcribe`), the web page, `/metrics` and `/healthz`.

    Args:
        model: a run folder, `model.keras` or SavedModel folder, or a loaded `Servable`.
        options: a `ServeOptions` (name, batching, body limit, API token).

    Examples:
        >>> app = create_app("saved_models/demo", ServeOptions(batching=BatchOptions(max_batch_size=16)))
        >>> uvicorn.run(app, host="127.0.0.1", port=8500)
        >>> app = create_app("runs/search", ServeOptions(index="catalogue.index"))   # /search too
    """
    import contextlib
    import functools

    from fastapi import FastAPI

    from mbm_keras.serve.catalogue import Catalogue

    servable = model if isinstance(model, Servable) else Servable(model)
    catalogue = Catalogue(options.index, servable) if options.index else None
    name = options.name or model_name(servable.path)
    metrics = _Metrics()
    batchers = {signature: Batcher(functools.partial(servable.run, signature=signature), options.batching,
                                   observe=metrics.batch_size.observe) for signature in servable.signatures}
    if catalogue is not None:  # queries embedded and searched in one call
        batchers["search"] = Batcher(catalogue.searcher(servable), options.batching, observe=metrics.batch_size.observe)
    served = Served(servable, batchers, catalogue, options)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        for batcher in batchers.values():
            await batcher.start()
        log.info("serving %s as %r (%s)", servable.path, name, servable.task.name)
        yield
        for batcher in batchers.values():
            await batcher.stop()  # requests in flight finish first

    app = FastAPI(title=f"mbm-keras serve: {name}", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.servable, app.state.batchers, app.state.metrics, app.state.name = servable, batchers, metrics, name
    app.state.catalogue = catalogue
    _add_guards(app, options, metrics)
    _add_routes(app, served, metrics, name)
    add_endpoints(app, served)
    return app


class _Metrics:
    """Prometheus metrics in a registry of this app's own (two apps in one process count apart)."""

    def __init__(self):
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        self.requests = Counter("mbm_keras_requests", "Requests answered, by endpoint and status code",
                                ["endpoint", "code"], registry=self.registry)
        self.in_progress = Gauge("mbm_keras_requests_in_progress", "Requests being answered now, by endpoint",
                                 ["endpoint"], registry=self.registry)
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
    from starlette.exceptions import HTTPException as StarletteHTTPException

    app.add_middleware(_Guard, options=options, metrics=metrics)

    @app.exception_handler(RequestError)
    async def request_error(request, error):
        return _error(error.status, str(error), error.field)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request, error):  # an unknown path or method: JSON like every other error
        if error.status_code == 404:
            paths = sorted({route.path for route in app.routes if route.path not in ("/openapi.json",)})
            return _error(404, f"no endpoint {request.url.path}; this server answers {', '.join(paths)}")
        return _error(error.status_code, str(error.detail))

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
        endpoint = _endpoint(path)
        self.metrics.in_progress.labels(endpoint).inc()
        try:
            await (refusal or self.app)(scope, receive, sending)
        except Exception:  # noqa: BLE001 -- one line to the client, the traceback to the log
            log.exception("unexpected failure on %s", path)
            if not status:
                await _error(500, "the server failed on this request (see its log)")(scope, receive, sending)
        finally:
            self.metrics.in_progress.labels(endpoint).dec()
        self.metrics.requests.labels(endpoint, str(status[0] if status else 500)).inc()
        self.metrics.latency.labels(endpoint).observe(time.perf_counter() - started)


KNOWN_ENDPOINTS = ("predict", "search", "embed", "transcribe", "healthz", "metrics")


def _endpoint(path):
    """The metrics' endpoint label of a path (a bounded set: a path from the request never becomes a label)."""
    if path.startswith("/v1/models/"):
        return "predict" if path.endswith(":predict") else "metadata" if path.endswith("/metadata") else "status"
    if path.startswith("/rows/"):
        return "rows"
    name = path.strip("/") or "page"
    return name if name in KNOWN_ENDPOINTS or name == "page" else "other"


def _add_routes(app, served, metrics, name):
    from fastapi import Request
    from fastapi.responses import HTMLResponse, JSONResponse, Response

    servable, options = served.servable, served.options

    def check_name(requested):
        if requested != name:
            raise RequestError(f"Servable not found for request: Latest({requested}); this server holds {name!r}",
                               field="name", status=404)

    page = _page(served, name)

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
        body = await read_body(request, options.max_body_bytes)
        try:
            data = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise RequestError(f"the body is not JSON: {e}", status=400) from None
        examples, columnar, signature = rest.parse_predict(data, servable)
        outputs, rows = await served.batchers[signature].submit(examples)
        return JSONResponse(rest.format_predict(servable, outputs, rows, columnar))


def _clip_seconds(servable):
    """`{audio input: the longest clip the model takes, in seconds}` (the page's recorder stops there): the
    model's whole length where a clip must fit it (transcription), else the decode limit."""
    pre = servable.preprocessor
    if pre is None:
        return {}
    return {name: round(f.options["audio_length"] / f.options["sample_rate"] if f.options["audio_whole_clip"]
                        else f.options["max_audio_seconds"], 2)
            for name, f in pre.features.items() if f.name == "audio"}


def _page(served, name):
    """The web page (`page.html` beside this file): a form per endpoint of the model's task, answers drawn."""
    import html

    def script(value):  # JSON inside <script>: no "</script>" can close it early
        return json.dumps(value).replace("<", "\\u003c")

    servable = served.servable
    with open(os.path.join(os.path.dirname(__file__), "page.html"), encoding="utf-8") as f:
        text = f.read()
    signatures = {s: {k: {"modality": v["modality"], "binary": v["binary"], "shape": v["shape"]}
                      for k, v in servable.signature(s).inputs.items()} for s in servable.signatures}
    # Every class as a bar: their count from the probabilities' columns when no preprocessor names them.
    columns = servable.output_specs.get("probabilities", {}).get("shape", [])
    count = len(servable.classes) if servable.classes else (columns[1] if len(columns) == 2 else 0)
    page = {"endpoints": list(servable.task.endpoints), "signatures": signatures, "classCount": max(count, 0),
            "seconds": _clip_seconds(servable),
            "token": bool(served.options.token), "rows": len(served.catalogue) if served.catalogue else None}
    for key, value in {"__NAME__": html.escape(name), "__TASK__": html.escape(servable.task.name),
                       "__PAGE__": script(page)}.items():
        text = text.replace(key, value)
    return text
