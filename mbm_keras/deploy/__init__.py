"""Deployment: SavedModel with raw inputs, TFLite for phones, `predict` for all.

- `export_model(run_dir, "saved_model" | "tflite", out, quantize=...)`
- `predict(path, image=..., text=..., audio=...)` for a `.keras` run folder, a
  SavedModel folder or a `.tflite` export alike.
"""

from mbm_keras.deploy.exporting import export_model, load_run_model
from mbm_keras.deploy.predicting import predict
from mbm_keras.deploy.raw_inputs import raw_signature, raw_to_inputs
from mbm_keras.deploy.saved_model import export_serving_model
from mbm_keras.deploy.tflite import QUANTIZATIONS, TFLiteExportError, convert_to_tflite, run_tflite, tflite_interpreter

__all__ = [
    "QUANTIZATIONS",
    "TFLiteExportError",
    "convert_to_tflite",
    "export_model",
    "export_serving_model",
    "load_run_model",
    "predict",
    "raw_signature",
    "raw_to_inputs",
    "run_tflite",
    "tflite_interpreter",
]
