"""`export_model`: a trained run folder -> a SavedModel or TFLite export, checked."""

import os
import shutil


FORMATS = ("saved_model", "tflite", "onnx")


def load_run_model(path):
    """`(model, preprocessor)` from a run folder (`mbm-keras train`, `mbm-keras demo`)
    or a `model.keras` file with `preprocessor.json` beside it.

    Args:
        path: the run folder or the `.keras` file (loaded with `safe_mode=True`).

    Example:
        >>> model, pre = load_run_model("saved_models/demo")
        >>> test = make_dataset("test.csv", preprocessor=pre)
    """
    from mbm_keras.run import Run

    return Run(path).load()


class ArtifactError(ValueError):
    """A model file that exists but cannot be loaded; the message names the file and the cause."""


def load_keras_file(path):
    """`keras.models.load_model(path, safe_mode=True)` with one-line errors that
    name the file: not a .keras archive (empty, truncated, another format),
    unreadable weights, or a refused unsafe layer.

    Example:
        >>> model = load_keras_file("runs/first/model.keras")
    """
    import zipfile

    import keras

    import mbm_keras  # noqa: F401  (registers the custom layers)
    import mbm_keras.retrieval.model  # noqa: F401  (a retrieval run's SimilarityLogits, before its model loads)

    if os.path.getsize(path) == 0:
        raise ArtifactError(f"{path}: the file is empty, not a .keras model")
    if not zipfile.is_zipfile(path):
        raise ArtifactError(f"{path}: not a .keras model (a .keras file is a zip archive; this one is truncated or "
                            f"another format)")
    try:
        return keras.models.load_model(path, safe_mode=True)
    except Exception as e:  # noqa: BLE001 -- Keras raises many types; all mean "cannot load"
        reason = " ".join(str(e).split())
        if "safe_mode" in reason or "Lambda" in reason:
            raise ArtifactError(
                f"{path}: refused to load: it holds code (a Lambda layer or unsafe deserialization), which "
                f"mbm_keras never runs from a file; rebuild the model without Lambda layers") from None
        raise ArtifactError(f"{path}: cannot load the .keras model ({type(e).__name__}: {reason[:300]})") from None


def example_inputs(model, pre, manifest, count, allow_outside_root=False):
    """Up to `count` preprocessed examples of `manifest` as `{input: array}`."""
    from mbm_keras.data import make_dataset

    masks = any(t.name.endswith("_mask") for t in model.inputs)
    ds = make_dataset(manifest, preprocessor=pre, batch_size=count, missing_modalities=masks, verbose=False,
                      allow_outside_root=allow_outside_root)
    batch = next(iter(ds))
    x = batch[0] if isinstance(batch, tuple) else batch
    return {k: v.numpy() for k, v in x.items()}


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

    Example:
        >>> export_model("runs/first", "tflite", "saved_models/first-int8", quantize="int8")
    """
    from mbm_keras.deploy.saved_model import export_serving_model
    from mbm_keras.deploy.parity import check_parity
    from mbm_keras.deploy.tflite import QUANTIZATIONS, convert_to_tflite, sidecar, tflite_interpreter
    from mbm_keras.io import atomic_output_dir, write_json
    from mbm_keras.run import Run

    if format not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}. Received: format={format!r}")
    if quantize not in QUANTIZATIONS:
        raise ValueError(f"quantize must be one of {QUANTIZATIONS}. Received: quantize={quantize!r}")
    if format != "tflite" and quantize != "none":
        raise ValueError(f"quantize applies to TFLite only. Received: format={format!r}, quantize={quantize!r}")
    source = os.path.abspath(model)
    folder = source if os.path.isdir(source) else os.path.dirname(source)
    keras_model, pre = load_run_model(source)
    data = data or Run(folder).default_data()
    if quantize == "int8" and not data:
        raise ValueError("quantize='int8' needs calibration examples: pass data=<manifest> (--data)")
    transcription = pre.labels is not None and pre.labels.label_type == "transcript"
    if transcription:  # an empty context is an input (deploy/transcription_export.py)
        from mbm_keras.deploy import transcription_export

        examples = (transcription_export.example_inputs(keras_model, pre, data, num_examples, allow_outside_root)
                    if data else None)
    else:
        examples = example_inputs(keras_model, pre, data, num_examples, allow_outside_root) if data else None
    out = os.path.abspath(out or os.path.join("saved_models", f"{os.path.basename(folder)}-{format}"
                                              + (f"-{quantize}" if quantize != "none" else "")))
    say = print if verbose else (lambda *a, **k: None)

    retrieval = "query_tower" in [layer.name for layer in keras_model.layers]
    check = None
    with atomic_output_dir(out) as tmp:
        if retrieval:  # each tower on its own (deploy/retrieval_export.py)
            from mbm_keras.deploy.retrieval_export import export_retrieval

            model_file, check = export_retrieval(keras_model, pre, format, tmp, quantize, examples, say)
        elif transcription:  # transcripts out (deploy/transcription_export.py)
            model_file, check = transcription_export.export_transcription(keras_model, pre, format, tmp, quantize,
                                                                          examples, say)
        elif format == "saved_model":
            export_serving_model(keras_model, pre, tmp)
            model_file = os.path.join(tmp, "saved_model.pb")
        elif format == "onnx":
            from mbm_keras.deploy.onnx import convert_to_onnx
            from mbm_keras.deploy.onnx import sidecar as onnx_sidecar

            model_file = os.path.join(tmp, "model.onnx")
            say("Converting to ONNX (tf2onnx) ...", flush=True)
            convert_to_onnx(keras_model, model_file)
            write_json(os.path.join(tmp, "model.json"), onnx_sidecar(keras_model, pre))
            shutil.copy(os.path.join(os.path.dirname(__file__), "reference_tokenizer.py"), os.path.join(tmp, "tokenizer.py"))
        else:
            model_file = os.path.join(tmp, "model.tflite")
            representative = None
            if examples is not None:
                n = len(next(iter(examples.values())))
                representative = [{k: v[i] for k, v in examples.items()} for i in range(n)]
            say(f"Converting to TFLite (quantize={quantize}) ...", flush=True)
            convert_to_tflite(keras_model, model_file, quantize, representative=representative)
            interpreter = tflite_interpreter(model_file)
            write_json(os.path.join(tmp, "model.json"), sidecar(keras_model, pre, interpreter, quantize))
            shutil.copy(os.path.join(os.path.dirname(__file__), "reference_tokenizer.py"), os.path.join(tmp, "tokenizer.py"))
        pre.save(tmp)  # preprocessor.json (+ vocabulary.txt): `predict` and apps read them
        if examples is not None and not retrieval and not transcription:
            artifact = ("saved_model", tmp) if format == "saved_model" else (format, model_file)
            check = check_parity(keras_model, examples, {format: artifact}, atol=None)[format]
            if quantize == "none" and not check["max_abs_diff"] <= 1e-4:
                raise AssertionError(f"The {format} export differs from Keras by {check['max_abs_diff']:.2e} (> 1e-4) "
                                     f"on {check['examples']} examples; nothing was written to {out}")
        size = os.path.getsize(model_file)
    result = {"out": out, "format": format, "quantize": quantize, "bytes": size, "check": check}
    say(f"Wrote {out} ({format}" + (f", quantize={quantize}" if format == "tflite" else "") + f", {size / 1e6:.2f} MB)")
    if check and retrieval:
        overlap = f", top-10 overlap {100 * check['top10_overlap']:.1f}%"
        say(f"Checked against Keras on {check['examples']} examples: lowest cosine similarity "
            + ", ".join(f"{k} {v:.5f}" for k, v in check["min_cosine"].items()) + overlap)
    elif check and transcription:
        if quantize == "none" and check["identical_transcripts"] < 1:
            raise AssertionError(f"The {format} export's greedy transcripts differ from Keras' on "
                                 f"{100 * (1 - check['identical_transcripts']):.1f}% of {check['examples']} examples")
    elif check:
        agreement = "" if check["top1_agreement"] is None else f", top-1 agreement {100 * check['top1_agreement']:.1f}%"
        say(f"Checked against Keras on {check['examples']} examples: max |diff| {check['max_abs_diff']:.2e}{agreement}")
    return result
