"""`export_model`: a trained run folder -> a SavedModel or TFLite export, checked."""

import os

from mbm_keras.deploy.formats import FORMATS, TASK_FILE
from mbm_keras.run import ArtifactError, load_keras_file  # noqa: F401  (public here since the first release)


def load_run_model(path):
    """`(model, preprocessor)` from a run folder (`mbm-keras train`, `mbm-keras demo`)
    or a `model.keras` file with `preprocessor.json` beside it.

    Args:
        path: the run folder or the `.keras` file (loaded with `safe_mode=True`).

    Examples:
        >>> model, pre = load_run_model("saved_models/demo")
        >>> test = make_dataset("test.csv", preprocessor=pre)
    """
    from mbm_keras.tasks import load_run

    model, pre, _ = load_run(path)
    return model, pre


def example_inputs(model, pre, manifest, count, allow_outside_root=False):
    """Up to `count` preprocessed examples of `manifest` as `{input: array}` (`Task.example_inputs`)."""
    from mbm_keras.tasks import Task

    return Task().example_inputs(model, pre, manifest, count, allow_outside_root)


def export_model(model, format="saved_model", out=None, quantize="none", data=None, num_examples=100, verbose=True,
                 allow_outside_root=False):
    """Exports a trained model and checks the export against Keras.

    Args:
        model: a run folder (model.keras + preprocessor.json) or a .keras file.
        format: "saved_model" (raw-input `serving_default` + `serve_tensors`
            signatures), "tflite" (batch 1, builtin ops only) or "onnx"
            (dynamic batch, ONNX Runtime; preprocessed tensors in, as TFLite).
        out: the export folder (replaced atomically; default
            `saved_models/<run name>-<format>`).
        quantize: TFLite only: "none", "float16", "dynamic" or "int8".
        data: a manifest whose examples calibrate int8 and check the export
            (default: the run's validation, else training, manifest).
        num_examples: examples used for calibration and the check.
        verbose: print what was written and the check's figures.
        allow_outside_root: accept file paths outside `data`'s folder.

    Returns:
        dict with `out`, `format`, `quantize`, `bytes` (model file size) and
        `check` (`examples`, `max_abs_diff`, `top1_agreement`; for a retrieval
        run, whose towers export on their own: `min_cosine` per tower and
        `top10_overlap`, see `deploy/retrieval_export.py`).

    Raises:
        TFLiteExportError: the converter failed or crashed.
        OnnxExportError: tf2onnx failed, or cannot convert an op (named).
        AssertionError: a float export differs from Keras by more than 1e-4.

    Examples:
        >>> export_model("runs/first", "tflite", "saved_models/first-int8", quantize="int8")
    """
    from mbm_keras.deploy.tflite import QUANTIZATIONS
    from mbm_keras.io import atomic_output_dir, write_json
    from mbm_keras.run import Run
    from mbm_keras.tasks import load_run

    if format not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}. Received: format={format!r}")
    if quantize not in QUANTIZATIONS:
        raise ValueError(f"quantize must be one of {QUANTIZATIONS}. Received: quantize={quantize!r}")
    if format != "tflite" and quantize != "none":
        raise ValueError(f"quantize applies to TFLite only. Received: format={format!r}, quantize={quantize!r}")
    run = Run(model)
    keras_model, pre, task = load_run(model)
    data = data or run.default_data()
    if quantize == "int8" and not data:
        raise ValueError("quantize='int8' needs calibration examples: pass data=<manifest> (--data)")
    examples = task.example_inputs(keras_model, pre, data, num_examples, allow_outside_root) if data else None
    out = os.path.abspath(out or os.path.join("saved_models", f"{os.path.basename(run.folder)}-{format}"
                                              + (f"-{quantize}" if quantize != "none" else "")))
    say = print if verbose else (lambda *a, **k: None)
    with atomic_output_dir(out) as tmp:
        model_file, check = task.export(keras_model, pre, format, tmp, quantize, examples, say)
        pre.save(tmp)  # preprocessor.json (+ vocabulary.txt): `predict` and apps read them
        write_json(os.path.join(tmp, TASK_FILE), {"task": task.name})  # which task answers for it (`predict`)
        size = os.path.getsize(model_file)
    say(f"Wrote {out} ({format}" + (f", quantize={quantize}" if format == "tflite" else "") + f", {size / 1e6:.2f} MB)")
    if check:
        task.report_check(check, format, quantize, say)
    return {"out": out, "format": format, "quantize": quantize, "bytes": size, "check": check}
