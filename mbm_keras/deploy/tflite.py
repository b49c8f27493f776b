"""TFLite export for phones and edge devices: builtin ops only, batch size 1.

What runs where:
- inside the .tflite graph: the model, including image scaling and the audio
  log-mel front end;
- in the app: decoding the image to `image_size` RGB floats in [0, 255],
  decoding and resampling audio to `sample_rate` mono floats, tokenizing text
  with `vocabulary.txt` (a pure-Python reference tokenizer, `tokenizer.py`, is
  written beside the model), scaling tabular values. `model.json` lists
  inputs, shapes, dtypes, labels and all of these settings.

Conversion runs in a child process: a converter crash (TF 2.21's int8
converter segfaults on some recurrent graphs) becomes a `TFLiteExportError`
in the caller instead of killing it.
"""

import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np

QUANTIZATIONS = ("none", "float16", "dynamic", "int8")
RECURRENT = ("LSTM", "GRU", "SimpleRNN")


class TFLiteExportError(RuntimeError):
    """A model that cannot be converted to builtin-op TFLite with the options given
    (a converter error, or the converter process killed by a signal).

    Examples:
        >>> try:
        ...     convert_to_tflite(model, "m.tflite", quantize="int8", representative=examples)
        ... except TFLiteExportError as e:
        ...     print(e)   # names the signal or the unsupported op, suggests quantize='dynamic'
    """


SCALED_HARD_SWISH = {"module": "builtins", "class_name": "function", "config": "mbm_keras>scaled_hard_swish",
                     "registered_name": "function"}


def _export_config(config, unroll):
    """A copy of a model config for quantized TFLite: recurrent layers unrolled
    and hard_swish as `scaled_hard_swish` (if `unroll`: int8), MelSpectrogram
    as `ElementwiseMelSpectrogram`."""
    if isinstance(config, dict):
        out = {k: SCALED_HARD_SWISH if unroll and k == "activation" and v in ("hard_swish", "hard_silu") else _export_config(v, unroll)
               for k, v in config.items()}
        if unroll and out.get("class_name") in RECURRENT and isinstance(out.get("config"), dict):
            out["config"] = {**out["config"], "unroll": True}
        if out.get("class_name") in ("MelSpectrogram", "LogMelSpectrogram"):
            out.update(module="mbm_keras.layers", class_name="ElementwiseMelSpectrogram",
                       registered_name="mbm_keras>ElementwiseMelSpectrogram")
        return out
    if isinstance(config, list):
        return [_export_config(v, unroll) for v in config]
    return config


def export_copy(model, unroll=False):
    """The same model (same weights) rebuilt for a quantized TFLite export:
    recurrent layers unrolled when `unroll` (a fixed number of steps instead of
    a TensorList loop, which full-integer quantization needs, see
    ../shared/FINDINGS.md) and the mel projection as an elementwise product
    (`ElementwiseMelSpectrogram`), whose constant stays float."""
    import mbm_keras.layers  # noqa: F401  (registers ElementwiseMelSpectrogram)

    clone = model.__class__.from_config(_export_config(model.get_config(), unroll))
    clone.set_weights(model.get_weights())
    return clone


def _front_end_tensors(float_model):
    """Names of the tensors of the audio front-end layers in a float .tflite model."""
    from ai_edge_litert.interpreter import Interpreter

    from mbm_keras.encoders.audio import FRONT_END_LAYERS

    names = [t["name"] for t in Interpreter(model_content=float_model).get_tensor_details()]
    return [n for n in names if any(f"/{layer}" in n for layer in FRONT_END_LAYERS)]


def representative_examples(examples):
    """`{input: (n, ...) array}` examples as the list of single examples `convert_to_tflite`'s
    `representative=` takes (int8 calibration), or None without examples."""
    if examples is None:
        return None
    n = len(next(iter(examples.values())))
    return [{k: v[i] for k, v in examples.items()} for i in range(n)]


def _convert_main(saved_model, out, quantize, representative):
    """Child process: SavedModel -> .tflite with builtin ops only."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_saved_model(saved_model)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if quantize == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif quantize == "dynamic":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    elif quantize == "int8":
        samples = np.load(representative)
        names = sorted({k.split("/")[1] for k in samples.files})
        count = len({k.split("/")[0] for k in samples.files})

        def dataset():
            for i in range(count):
                yield {name: samples[f"{i}/{name}"] for name in names}

        # The audio front end (power spectrum -> log-mel -> normalization) spans
        # many orders of magnitude: int8 activations there wreck the features,
        # so it stays float; everything after it is int8.
        float_nodes = _front_end_tensors(converter.convert())
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = dataset
        # One scale per dense weight instead of one per output: an unrolled
        # recurrent layer repeats its dense ops at every step, each with its own
        # copy of the per-channel scales (about 400 KB for a 32-step BiLSTM).
        converter._experimental_disable_per_channel_quantization_for_dense_layers = True
        # int8 kernels everywhere they exist; float kept only where none does.
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8, tf.lite.OpsSet.TFLITE_BUILTINS]
        if float_nodes:
            debugger = tf.lite.experimental.QuantizationDebugger(
                converter=converter,
                debug_dataset=dataset,
                debug_options=tf.lite.experimental.QuantizationDebugOptions(denylisted_nodes=float_nodes),
            )
            data = debugger.get_nondebug_quantized_model()
        else:
            data = converter.convert()
    if quantize != "int8":
        data = converter.convert()
    with open(out, "wb") as f:
        f.write(_strip_tensor_names(data))


def _strip_tensor_names(data):
    """The model without its tensor names (a few hundred KB in unrolled
    recurrent graphs); inputs and outputs keep their signature names, which is
    how apps and `run_tflite` address them."""
    from ai_edge_litert.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(data))
    for subgraph in model.subgraphs:
        for tensor in subgraph.tensors:
            tensor.name = None
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def cover_every_step(model, representative, extra=32):
    """The calibration examples plus up to `extra` copies whose padded token
    positions (id 0) are filled with the example's own tokens, repeated.

    An unrolled recurrent layer quantizes each step on its own: a step that
    only ever sees padding in calibration (texts all shorter than
    `text_length`; a backward LSTM starts on the padding) gets a zero range,
    hence a scale near 1e-8. XNNPACK then refuses the model ("failed to
    prepare"), and a longer text at run time would saturate that step. With
    every position seen holding a real token, every step has a real range.
    """
    ids = [t.name for t in model.inputs if "int" in str(t.dtype)]
    more = []
    for example in representative:
        if len(more) >= extra:
            break
        filled, changed = dict(example), False
        for name in ids:
            tokens = np.asarray(example[name])
            if tokens.ndim != 1:
                continue
            real = tokens[tokens != 0]
            if len(real) and (tokens == 0).any():
                filled[name] = np.resize(real, tokens.shape).astype(tokens.dtype)
                changed = True
        if changed:
            more.append(filled)
    return list(representative) + more


def convert_to_tflite(model, path, quantize="none", representative=None, timeout=900):
    """Converts a Keras model to a batch-1, builtin-ops-only `.tflite` file.

    Args:
        model: a functional Keras model with named inputs.
        path: the `.tflite` file to write.
        quantize: "none" (float32), "float16" (float16 weights), "dynamic"
            (int8 weights, float activations) or "int8" (int8 weights and
            activations, calibrated on `representative`; float inputs/outputs).
        representative: for "int8", a list of input dicts (one example each,
            no batch axis) shaped like the model's inputs; 50-200 real examples
            (`cover_every_step` adds copies whose padding holds tokens).
        timeout: seconds the int8 converter may run (it runs in a child process;
            the other quantizations convert in this one).

    Raises:
        TFLiteExportError: the conversion failed or crashed (the message says
            which model option and quantization, and the converter's last words).

    Examples:
        >>> convert_to_tflite(model, "model_int8.tflite", "int8", representative=examples[:100])
    """
    from mbm_keras.deploy.saved_model import tensor_signature

    if quantize not in QUANTIZATIONS:
        raise ValueError(f"quantize must be one of {QUANTIZATIONS}. Received: quantize={quantize!r}")
    if quantize == "int8" and not representative:
        raise ValueError("quantize='int8' needs representative examples (a list of input dicts) to calibrate on")
    if quantize != "none":
        model = export_copy(model, unroll=quantize == "int8")
    if quantize == "int8":
        representative = cover_every_step(model, representative)
    work = tempfile.mkdtemp(prefix="mbm_keras_tflite-")
    try:
        saved = os.path.join(work, "saved_model")
        # A fixed batch of 1: recurrent layers then convert to builtin ops.
        model.export(saved, format="tf_saved_model", input_signature=[tensor_signature(model, 1)], verbose=False)
        if quantize == "int8":
            _convert_in_child(saved, os.path.join(work, "model.tflite"), representative, work, timeout)
        else:
            _convert_here(saved, os.path.join(work, "model.tflite"), quantize)
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        shutil.move(os.path.join(work, "model.tflite"), path)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return path


def _convert_here(saved, out, quantize):
    """Float, float16 and dynamic-range conversions run in this process (no converter crash is known for them,
    FINDINGS.md; a child process would add TensorFlow's start-up, about 4 s, to each export)."""
    try:
        _convert_main(saved, out, quantize, None)
    except Exception as e:  # noqa: BLE001 -- the converter's own errors (ConverterError, ValueError, ...)
        tail = "\n".join(str(e).strip().splitlines()[-8:])
        raise TFLiteExportError(f"The TFLite converter failed for quantize={quantize!r}.\n{tail}") from e


def _convert_in_child(saved, out, representative, work, timeout):
    """Full-integer conversion runs in a child process: TF 2.21's int8 converter has died from a signal on some
    recurrent graphs (FINDINGS.md), and a crash there must not take the caller down."""
    npz = os.path.join(work, "representative.npz")
    np.savez(npz, **{f"{i}/{k}": np.asarray(v)[None] for i, ex in enumerate(representative) for k, v in ex.items()})
    args = [sys.executable, "-m", "mbm_keras.deploy.tflite", saved, out, "int8", npz]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    try:
        proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        raise TFLiteExportError(f"TFLite conversion (quantize='int8') ran past {timeout} s") from None
    if proc.returncode != 0:
        how = f"crashed (signal {-proc.returncode})" if proc.returncode < 0 else f"failed (exit {proc.returncode})"
        tail = "\n".join((proc.stderr or "").strip().splitlines()[-8:])
        raise TFLiteExportError(f"The TFLite converter {how} for quantize='int8'. Try quantize='dynamic'.\n{tail}")


def tflite_interpreter(path, num_threads=None):
    """An `ai_edge_litert` interpreter for `path`, tensors allocated.

    Args:
        path: a `.tflite` file.
        num_threads: CPU threads (None: the runtime's default).

    Examples:
        >>> interpreter = tflite_interpreter("saved_models/first-tflite/model.tflite", num_threads=2)
    """
    from ai_edge_litert.interpreter import Interpreter

    from mbm_keras.run import ArtifactError

    if not os.path.isfile(path):
        raise FileNotFoundError(f"No TFLite model at {path}")
    try:
        interpreter = Interpreter(model_path=str(path), num_threads=num_threads)
        interpreter.allocate_tensors()
    except (ValueError, RuntimeError) as e:
        reason = " ".join(str(e).split())
        raise ArtifactError(f"{path}: not a loadable TFLite model ({reason[:300]})") from None
    return interpreter


def run_tflite(interpreter, inputs):
    """Runs a batch through a batch-1 interpreter, one example at a time.

    Args:
        interpreter: from `tflite_interpreter`.
        inputs: `{input name: array (batch, ...)}`.

    Returns:
        the output array `(batch, ...)`.

    Examples:
        >>> probabilities = run_tflite(tflite_interpreter("model.tflite"), {"image": images, "text": token_ids})
    """
    runner = interpreter.get_signature_runner()
    n = len(next(iter(inputs.values())))
    outputs = []
    for i in range(n):
        result = runner(**{k: np.asarray(v[i : i + 1]) for k, v in inputs.items()})
        outputs.append(next(iter(result.values()))[0])
    return np.stack(outputs)


def sidecar(model, pre, interpreter, quantize, inputs=None):
    """The JSON an app needs next to the .tflite file (`inputs`: given by the ONNX export)."""
    if inputs is None:
        inputs = {
            name: {"shape": [int(d) for d in detail["shape"]], "dtype": np.dtype(detail["dtype"]).name}
            for name, detail in interpreter.get_signature_runner().get_input_details().items()
        }
    preprocessing = {name: {"modality": feature.name, **feature.sidecar()} for name, feature in pre.features.items()}
    masks = [k for k in inputs if k.endswith("_mask")]
    return {
        "format": "tflite",
        "quantize": quantize,
        "batch_size": 1,
        "inputs": inputs,
        "masks": {k: "1.0 when the input is present, 0.0 when absent (its input is then ignored)" for k in masks},
        "output": {"name": "predictions", "meaning": "class probabilities" if pre.labels and pre.labels.classes else "values"},
        "labels": [str(c) for c in pre.labels.classes] if pre.labels is not None and pre.labels.classes is not None else None,
        "preprocessing": preprocessing,
    }


if __name__ == "__main__":
    _convert_main(*sys.argv[1:4], sys.argv[4] if len(sys.argv) > 4 else None)
