"""ONNX export for GPU servers and browsers (ONNX Runtime with the CUDA or
TensorRT providers, onnxruntime-web).

The ONNX graph is the TFLite one's: preprocessed tensors in (image floats in
[0, 255], token ids, audio samples, tabular floats, masks), the model's
output out, with the same `model.json` sidecar and reference tokenizer; the
batch axis stays dynamic. Conversion is tf2onnx's (the maintained TensorFlow
-> ONNX converter; Keras' own `export(format="onnx")` calls it too), from the
model's tensor SavedModel, in a child process so that a converter crash
becomes an `OnnxExportError`.
"""

import os
import re
import shutil
import subprocess
import sys
import tempfile

import numpy as np

OPSET = 17


class OnnxExportError(RuntimeError):
    """A model tf2onnx cannot convert; the message names the unsupported op(s).

    Examples:
        >>> try:
        ...     convert_to_onnx(model, "model.onnx")
        ... except OnnxExportError as e:
        ...     print(e)   # "tf2onnx cannot convert op(s) RFFT2D (opset 17) ..."
    """


def _unsupported_ops(log):
    """The op names of tf2onnx's "Unsupported ops: Counter({'X': 2})" line, or []."""
    found = re.search(r"Unsupported ops: Counter\(\{(.*?)\}\)", log)
    return re.findall(r"'([^']+)'", found.group(1)) if found else []


def _onnx_config(config):
    """A copy of a model config with MelSpectrogram as `DftMelSpectrogram`."""
    if isinstance(config, dict):
        out = {k: _onnx_config(v) for k, v in config.items()}
        if out.get("class_name") in ("MelSpectrogram", "LogMelSpectrogram"):
            out.update(module="mbm_keras.layers", class_name="DftMelSpectrogram",
                       registered_name="mbm_keras>DftMelSpectrogram")
        return out
    if isinstance(config, list):
        return [_onnx_config(v) for v in config]
    return config


def export_copy(model):
    """The same model (same weights) for tf2onnx: its STFTs as convolutions
    (`DftMelSpectrogram`) and its exact GELUs through `erf` (`erf_gelu`),
    the ops tf2onnx lacks being `Real`/`Imag` and `Erfc`."""
    import keras

    from mbm_keras.layers import erf_gelu

    clone = model.__class__.from_config(_onnx_config(model.get_config()))
    clone.set_weights(model.get_weights())
    for layer in clone._flatten_layers(include_self=False, recursive=True):
        if getattr(layer, "activation", None) is keras.activations.gelu:
            layer.activation = erf_gelu  # sublayers a config does not list (transformer blocks' feed-forward)
    return clone


def convert_to_onnx(model, path, opset=OPSET, timeout=900):
    """Converts a Keras model to an ONNX file (dynamic batch).

    Args:
        model: a functional Keras model with named inputs.
        path: the `.onnx` file to write.
        opset: the ONNX opset (17 runs on ONNX Runtime >= 1.13 and its CUDA
            and TensorRT providers).
        timeout: seconds the converter may run.

    Raises:
        OnnxExportError: tf2onnx failed, crashed, or left ops it cannot
            convert (named).

    Examples:
        >>> convert_to_onnx(model, "saved_models/first-onnx/model.onnx")
    """
    from mbm_keras.deploy.saved_model import tensor_signature

    try:
        import tf2onnx  # noqa: F401
    except ImportError:
        raise ImportError("ONNX export needs tf2onnx and onnxruntime: pip install 'mbm_keras[onnx]'") from None
    model = export_copy(model)
    work = tempfile.mkdtemp(prefix="mbm_keras_onnx-")
    try:
        saved = os.path.join(work, "saved_model")
        model.export(saved, format="tf_saved_model", input_signature=[tensor_signature(model)], verbose=False)
        out = os.path.join(work, "model.onnx")
        args = [sys.executable, "-m", "tf2onnx.convert", "--saved-model", saved, "--output", out,
                "--opset", str(opset), "--signature_def", "serving_default"]
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
        try:
            proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=env)
        except subprocess.TimeoutExpired:
            raise OnnxExportError(f"tf2onnx ran past {timeout} s") from None
        log = (proc.stdout or "") + (proc.stderr or "")
        unsupported = _unsupported_ops(log)
        if unsupported:
            raise OnnxExportError(f"tf2onnx cannot convert op(s) {', '.join(unsupported)} (opset {opset}) in "
                                  f"{model.name}; export this model as a SavedModel or TFLite instead")
        if proc.returncode != 0 or not os.path.isfile(out):
            how = f"crashed (signal {-proc.returncode})" if proc.returncode < 0 else f"failed (exit {proc.returncode})"
            tail = "\n".join(log.strip().splitlines()[-6:])
            raise OnnxExportError(f"tf2onnx {how} on {model.name} (opset {opset}):\n{tail}")
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        shutil.move(out, path)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return path


def onnx_session(path, providers=None, num_threads=None):
    """An ONNX Runtime session for `path` (CPU unless `providers` says otherwise).

    Args:
        path: a `.onnx` file from `export_model(..., "onnx")`.
        providers: ONNX Runtime execution providers, in order of preference
            (default: `["CPUExecutionProvider"]`).
        num_threads: intra-op threads (None: the runtime's default).

    Examples:
        >>> session = onnx_session("saved_models/first-onnx/model.onnx")
        >>> session = onnx_session(path, providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
    """
    try:
        import onnxruntime
    except ImportError:
        raise ImportError("Running an ONNX model needs onnxruntime: pip install 'mbm_keras[onnx]'") from None

    from mbm_keras.run import ArtifactError

    if not os.path.isfile(path):
        raise FileNotFoundError(f"No ONNX model at {path}")
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    if num_threads:
        options.intra_op_num_threads = num_threads
    try:
        return onnxruntime.InferenceSession(str(path), options, providers=providers or ["CPUExecutionProvider"])
    except Exception as e:  # noqa: BLE001 -- onnxruntime raises its own types for a damaged file
        reason = " ".join(str(e).split())
        raise ArtifactError(f"{path}: not a loadable ONNX model ({reason[:300]})") from None


def run_onnx(session, inputs):
    """The model's output for a batch.

    Args:
        session: from `onnx_session`.
        inputs: `{input name: array (batch, ...)}`, preprocessed as for TFLite.

    Returns:
        the output array `(batch, ...)`.

    Examples:
        >>> probabilities = run_onnx(onnx_session("model.onnx"), {"image": images, "text": token_ids})
    """
    names = {i.name: i for i in session.get_inputs()}
    feed = {}
    for name, value in inputs.items():
        if name not in names:
            raise ValueError(f"The ONNX model has no input {name!r}; its inputs are {', '.join(names)}")
        dtype = {"tensor(float)": np.float32, "tensor(int32)": np.int32, "tensor(int64)": np.int64}.get(
            names[name].type, None)
        feed[name] = np.asarray(value, dtype=dtype)
    return session.run(None, feed)[0]


def sidecar(model, pre):
    """The JSON an app or server needs next to the .onnx file (as TFLite's)."""
    from mbm_keras.deploy.tflite import sidecar as tflite_sidecar

    inputs = {t.name: {"shape": [None, *[int(d) for d in t.shape[1:]]], "dtype": str(t.dtype)} for t in model.inputs}
    return {**tflite_sidecar(model, pre, None, "none", inputs=inputs), "format": "onnx", "batch_size": None,
            "opset": OPSET}
