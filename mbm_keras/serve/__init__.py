"""`mbm-keras serve`: a run folder or a SavedModel export behind an HTTP API.

- `create_app(path, ServeOptions(...))`: the ASGI app (FastAPI), run by uvicorn: TensorFlow Serving's REST
  API, the endpoints of the model's task (`/predict`, `/search`, `/embed`, `/transcribe`), a web page;
- `Servable(path)`: the model as batched functions of raw inputs, one per raw-input signature;
- `Catalogue(index, servable)`: the index `/search` searches, its files served by row id;
- `BatchOptions`: dynamic batching (requests merged into one model call).
"""

from mbm_keras.serve.app import ServeOptions, create_app, model_name
from mbm_keras.serve.batching import BatchOptions, Batcher
from mbm_keras.serve.catalogue import Catalogue
from mbm_keras.serve.servable import RequestError, Servable

__all__ = ["BatchOptions", "Batcher", "Catalogue", "RequestError", "ServeOptions", "Servable", "create_app",
           "model_name"]
