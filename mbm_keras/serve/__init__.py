"""`mbm-keras serve`: a run folder or a SavedModel export behind an HTTP API.

- `create_app(path, ServeOptions(...))`: the ASGI app (FastAPI), run by uvicorn;
- `Servable(path)`: the model as one batched function of raw inputs;
- `BatchOptions`: dynamic batching (requests merged into one model call).
"""

from mbm_keras.serve.app import ServeOptions, create_app, model_name
from mbm_keras.serve.batching import BatchOptions, Batcher
from mbm_keras.serve.servable import RequestError, Servable

__all__ = ["BatchOptions", "Batcher", "RequestError", "ServeOptions", "Servable", "create_app", "model_name"]
