"""The one parity check: a written artifact predicts what the Keras model predicts."""

import os

import numpy as np


def artifact_predictions(kind, path, inputs):
    """Predictions of a written artifact on preprocessed `inputs`.

    Args:
        kind: "keras" (a .keras file, reloaded with safe_mode=True),
            "saved_model" (its `serve_tensors` signature), "tflite" or "onnx"
            (ONNX Runtime, CPU).
        path: the artifact's file or folder.
        inputs: `{input name: array (batch, ...)}`.

    Examples:
        >>> artifact_predictions("tflite", "saved_models/first-tflite/model.tflite", examples)
    """
    if kind == "keras":
        from mbm_keras.run import load_keras_file

        return np.asarray(load_keras_file(path).predict(inputs, verbose=0))
    if kind == "saved_model":
        import tensorflow as tf  # export side

        served = tf.saved_model.load(path).signatures["serve_tensors"]
        out = served(**{k: tf.constant(v) for k, v in inputs.items()})
        return next(out[k] for k in ("probabilities", "predictions") if k in out).numpy()
    if kind == "tflite":
        from mbm_keras.deploy.tflite import run_tflite, tflite_interpreter

        return run_tflite(tflite_interpreter(path), inputs)
    if kind == "onnx":
        from mbm_keras.deploy.onnx import onnx_session, run_onnx

        return np.asarray(run_onnx(onnx_session(path), inputs))
    raise ValueError(f"kind must be 'keras', 'saved_model', 'tflite' or 'onnx'. Received: kind={kind!r}")


def check_parity(model, inputs, artifacts, atol=1e-4):
    """Compares each artifact's predictions with `model.predict(inputs)`.

    Args:
        model: the Keras model that was written.
        inputs: a dict batch of preprocessed inputs.
        artifacts: `{label: (kind, path)}`, kinds as in `artifact_predictions`.
        atol: the largest difference accepted, or None to only measure
            (quantized exports).

    Returns:
        `{label: {"examples", "max_abs_diff", "top1_agreement"}}` (top-1
        agreement is None for one-output models).

    Raises:
        AssertionError: naming each artifact that differs by more than `atol`.

    Examples:
        >>> check_parity(model, batch, {"model.keras": ("keras", "runs/first/model.keras")})
        {'model.keras': {'examples': 32, 'max_abs_diff': 0.0, 'top1_agreement': 1.0}}
    """
    expected = np.asarray(model.predict(inputs, verbose=0))
    results = {}
    for label, (kind, path) in artifacts.items():
        got = artifact_predictions(kind, os.fspath(path), inputs)
        agreement = None
        if expected.ndim == 2 and expected.shape[1] > 1:
            agreement = float(np.mean(got.argmax(-1) == expected.argmax(-1)))
        results[label] = {"examples": int(len(expected)), "max_abs_diff": float(np.abs(got - expected).max()),
                          "top1_agreement": agreement}
    bad = {k: r["max_abs_diff"] for k, r in results.items() if atol is not None and not r["max_abs_diff"] <= atol}
    if bad:
        raise AssertionError(f"Predictions differ from the Keras model's by more than {atol}: "
                             + ", ".join(f"{k} by {v:.2e}" for k, v in bad.items()))
    return results
