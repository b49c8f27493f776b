"""One model into each export format, checked against Keras: what a task exports
when its model is one Keras model with one output (`Task.export`)."""

import os
import shutil

FORMATS = ("saved_model", "tflite", "onnx")
TASK_FILE = "task.json"  # in every export folder: {"task": the run's task.kind}


def copy_tokenizer(folder):
    """`tokenizer.py` (the reference tokenizer in plain Python) into an export folder, for apps without TensorFlow."""
    shutil.copy(os.path.join(os.path.dirname(__file__), "reference_tokenizer.py"), os.path.join(folder, "tokenizer.py"))


def export_single_model(model, pre, format, folder, quantize, examples, say):
    """Writes `model` as `format` into `folder` (plus its sidecar), then checks
    it against Keras on `examples`; returns `(model file, check or None)`.

    Raises:
        AssertionError: a float export differs from Keras by more than 1e-4.
    """
    from mbm_keras.deploy.parity import check_parity
    from mbm_keras.io import write_json

    if format == "saved_model":
        from mbm_keras.deploy.saved_model import export_serving_model

        export_serving_model(model, pre, folder)
        model_file = os.path.join(folder, "saved_model.pb")
    elif format == "onnx":
        from mbm_keras.deploy.onnx import convert_to_onnx, sidecar

        model_file = os.path.join(folder, "model.onnx")
        say("Converting to ONNX (tf2onnx) ...", flush=True)
        convert_to_onnx(model, model_file)
        write_json(os.path.join(folder, "model.json"), sidecar(model, pre))
        copy_tokenizer(folder)
    else:
        from mbm_keras.deploy.tflite import convert_to_tflite, representative_examples, sidecar, tflite_interpreter

        model_file = os.path.join(folder, "model.tflite")
        say(f"Converting to TFLite (quantize={quantize}) ...", flush=True)
        convert_to_tflite(model, model_file, quantize, representative=representative_examples(examples))
        write_json(os.path.join(folder, "model.json"), sidecar(model, pre, tflite_interpreter(model_file), quantize))
        copy_tokenizer(folder)
    if examples is None:
        return model_file, None
    artifact = ("saved_model", folder) if format == "saved_model" else (format, model_file)
    check = check_parity(model, examples, {format: artifact}, atol=None)[format]
    if quantize == "none" and not check["max_abs_diff"] <= 1e-4:
        raise AssertionError(f"The {format} export differs from Keras by {check['max_abs_diff']:.2e} (> 1e-4) "
                             f"on {check['examples']} examples; nothing was written")
    return model_file, check


def report_parity(check, format, quantize, say):
    """Prints `export_single_model`'s check: the largest difference and the top-1 agreement."""
    if not check:
        return
    agreement = "" if check["top1_agreement"] is None else f", top-1 agreement {100 * check['top1_agreement']:.1f}%"
    say(f"Checked against Keras on {check['examples']} examples: max |diff| {check['max_abs_diff']:.2e}{agreement}")
