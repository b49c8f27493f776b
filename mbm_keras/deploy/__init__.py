"""Deployment: SavedModel with raw inputs, TFLite for phones, `predict` for all.

- `export_model(run_dir, "saved_model" | "tflite" | "onnx", out, quantize=...)`
- `predict(path, image=..., text=..., audio=...)` for a `.keras` run folder, a
  SavedModel folder, a `.tflite` or a `.onnx` export alike; `Predictor(path)`
  loads one once for many examples.
"""

from mbm_keras.deploy.exporting import export_model, load_run_model
from mbm_keras.deploy.onnx import OnnxExportError, convert_to_onnx, onnx_session, run_onnx
from mbm_keras.deploy.predicting import Predictor, predict
from mbm_keras.deploy.raw_inputs import raw_signature, raw_to_inputs
from mbm_keras.deploy.saved_model import export_serving_model
from mbm_keras.deploy.tflite import QUANTIZATIONS, TFLiteExportError, convert_to_tflite, run_tflite, tflite_interpreter

__all__ = [
    "OnnxExportError",
    "Predictor",
    "QUANTIZATIONS",
    "TFLiteExportError",
    "convert_to_onnx",
    "convert_to_tflite",
    "export_model",
    "export_serving_model",
    "load_run_model",
    "onnx_session",
    "predict",
    "raw_signature",
    "raw_to_inputs",
    "run_onnx",
    "run_tflite",
    "tflite_interpreter",
]
