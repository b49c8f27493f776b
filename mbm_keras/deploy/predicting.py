"""`predict`: one example through a `.keras` run folder, a SavedModel or a `.tflite` export."""

import os

import numpy as np


def _kind(path):
    if path.endswith(".tflite"):
        return "tflite"
    if os.path.isdir(path):
        if os.path.isfile(os.path.join(path, "saved_model.pb")):
            return "saved_model"
        if os.path.isfile(os.path.join(path, "model.tflite")):
            return "tflite"
        if os.path.isfile(os.path.join(path, "model.keras")):
            return "keras"
    if path.endswith(".keras"):
        return "keras"
    raise FileNotFoundError(
        f"No model at {path}: pass a .keras file or run folder, a SavedModel folder, or a .tflite file (or its export folder)"
    )


def _read(path, what):
    if path is None:
        return b""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what} file not found: {path}")
    with open(path, "rb") as f:
        return f.read()


def predict(path, image=None, text=None, audio=None, tabular=None, top=3):
    """Top classes for one example.

    Args:
        path: a run folder or `.keras` file (with `preprocessor.json` beside
            it), a SavedModel folder from `export_model`, or a `.tflite` file /
            its export folder.
        image: an image file path (JPEG/PNG/GIF/BMP).
        text: the text.
        audio: a WAV file path.
        tabular: the tabular cells, in the preprocessor's column order
            (numeric, then categorical), as strings or numbers.
        top: how many classes to return.

    Returns:
        a list of `(class name, probability)`, most likely first (regression
        heads: `[("prediction", values)]`).

    Example:
        >>> predict("saved_models/demo", image="cat.png", text="a red cat", audio="meow.wav")
        [('red-cat-high', 0.93), ...]
    """
    import tensorflow as tf

    from mbm_keras.deploy.raw_inputs import raw_to_inputs

    path = os.path.abspath(path)
    kind = _kind(path)
    raw_values = {
        "image": _read(image, "Image"),
        "text": (text or "").encode("utf-8"),
        "audio": _read(audio, "Audio"),
    }
    folder = path if os.path.isdir(path) else os.path.dirname(path)
    if kind == "saved_model":
        signature = _load_signature(path)
        names = list(signature.structured_input_signature[1])
        raw = {m: tf.constant([raw_values[m]]) for m in names if m != "tabular"}
        if "tabular" in names:
            columns = signature.structured_input_signature[1]["tabular"].shape[-1]
            raw["tabular"] = tf.constant([_tabular_cells(tabular, columns)])
        _check_given(names, raw_values, tabular)
        out = _run(signature, raw)
        probabilities = out.get("probabilities", out.get("predictions")).numpy()[0]
        classes = [c.decode("utf-8") for c in out["classes"].numpy()] if "classes" in out else None
    else:
        if kind == "keras":
            from mbm_keras.deploy.exporting import load_run_model

            model, pre = load_run_model(path)
            names = [t.name for t in model.inputs]
        else:
            from mbm_keras.data import Preprocessor
            from mbm_keras.deploy.tflite import run_tflite, tflite_interpreter

            pre = Preprocessor.load(folder)
            tflite_file = path if path.endswith(".tflite") else os.path.join(path, "model.tflite")
            interpreter = tflite_interpreter(tflite_file)
            names = list(interpreter.get_signature_runner().get_input_details())
        _check_given(pre.modalities, raw_values, tabular, names)
        raw = {m: tf.constant([raw_values[m]]) for m in pre.modalities if m != "tabular"}
        if "tabular" in pre.modalities:
            tab = pre.tabular
            raw["tabular"] = tf.constant([_tabular_cells(tabular, len(tab.numeric) + len(tab.categorical),
                                                         tab.numeric + tab.categorical)])
        inputs = _run(lambda **r: raw_to_inputs(r, pre, names), raw)
        inputs = {k: v.numpy() for k, v in inputs.items()}
        if kind == "keras":
            probabilities = model.predict(inputs, verbose=0)[0]
        else:
            probabilities = run_tflite(interpreter, inputs)[0]
        classes = [str(c) for c in pre.labels.classes] if pre.labels is not None and pre.labels.classes else None
    if classes is None:
        return [("prediction", probabilities.tolist())]
    order = np.argsort(-probabilities)[:top]
    return [(classes[i], float(probabilities[i])) for i in order]


def _load_signature(path):
    import tensorflow as tf

    from mbm_keras.deploy.exporting import ArtifactError

    try:
        served = tf.saved_model.load(path)
    except Exception as e:  # noqa: BLE001 -- TF raises many types for a damaged SavedModel
        reason = " ".join(str(e).split())
        raise ArtifactError(f"{path}: cannot load the SavedModel ({type(e).__name__}: {reason[:300]}); "
                            f"re-export it with mbm-keras export") from None
    if "serving_default" not in served.signatures:
        raise ArtifactError(f"{path}: the SavedModel has no serving_default signature; it is not an mbm_keras export")
    return served.signatures["serving_default"]


def _run(function, raw):
    """Calls `function(**raw)`; TensorFlow's errors become one-line ValueErrors
    with the reason (TF's text may hold raw input bytes that are not UTF-8)."""
    import tensorflow as tf

    from mbm_keras.deploy.raw_inputs import explain

    try:
        return function(**raw)
    except tf.errors.InvalidArgumentError as e:
        raise ValueError(explain(e)) from None
    except UnicodeDecodeError:
        raise ValueError("an input could not be decoded (TensorFlow's message held bytes of the input that are "
                         "not text): check that --image is an image file and --audio a 16-bit PCM WAV file") from None


def _tabular_cells(tabular, count, names=None):
    cells = ["" if v is None else str(v) for v in (tabular or [])]
    if tabular is not None and len(cells) != count:
        which = f" ({', '.join(names)})" if names else ""
        raise ValueError(f"The model takes {count} tabular cell(s){which}, numeric columns first; received {len(cells)}")
    return cells or [""] * count


def _check_given(modalities, raw_values, tabular, input_names=None):
    given = {m for m, v in raw_values.items() if v} | ({"tabular"} if tabular else set())
    if not given & set(modalities):
        raise ValueError(f"Give at least one input; the model takes {sorted(modalities)}")
    if input_names is None:
        return
    for m in modalities:
        if m not in given and f"{m}_mask" not in input_names:
            raise ValueError(f"The model needs an input for '{m}' (it was built without missing_modalities=True)")
