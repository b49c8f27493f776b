"""`Run`: the one owner of a run folder's layout, and of telling model artifacts apart.

A run folder (written by `train()` and by `mbm-keras demo`) holds:

    model.keras          the model (last epoch), loaded with safe_mode=True
    preprocessor.json    the fitted preprocessing (+ vocabulary*.txt)
    labels.json          the class names, in output order
    config.json          the run config, defaults filled in (train() only)
    best.keras, history.csv, logs/, backup-*/   written while training
    summary.json         each modality's validation score next to the fusion's (train.balance)
    singles/<modality>/  that modality's own model, a run folder (train.balance: unimodal)
    fusion/              the fusion, when train.keep_best_of: all kept a single model instead

`train`, `evaluate`, `export_model`, `predict` and the demo read and write it
only through `Run`; `artifact_kind` says what any path a user passes holds.
"""

import json
import os

from mbm_keras.io import write_json

MODEL_FILE = "model.keras"
CONFIG_FILE = "config.json"
LABELS_FILE = "labels.json"
PREPROCESSOR_FILE = "preprocessor.json"
SAVED_MODEL_FILE = "saved_model.pb"
TFLITE_FILE = "model.tflite"
ONNX_FILE = "model.onnx"


def artifact_kind(path):
    """"keras", "saved_model", "tflite" or "onnx": what a model path holds.

    Args:
        path: a run folder or `.keras` file, a SavedModel folder, or a
            `.tflite` / `.onnx` file or its export folder.

    Raises:
        FileNotFoundError: naming the files it looked for.

    Examples:
        >>> artifact_kind("saved_models/demo")
        'keras'
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        for name, kind in ((SAVED_MODEL_FILE, "saved_model"), (TFLITE_FILE, "tflite"), (ONNX_FILE, "onnx"),
                           (MODEL_FILE, "keras")):
            if os.path.isfile(os.path.join(path, name)):
                return kind
        looked = f"{SAVED_MODEL_FILE}, {TFLITE_FILE}, {ONNX_FILE} or {MODEL_FILE} in that folder"
    elif os.path.isfile(path) and path.endswith(".tflite"):
        return "tflite"
    elif os.path.isfile(path) and path.endswith(".onnx"):
        return "onnx"
    elif os.path.isfile(path) and path.endswith(".keras"):
        return "keras"
    else:
        looked = "a file ending in .keras, .tflite or .onnx" if os.path.splitext(path)[1] else "a folder or a model file"
    raise FileNotFoundError(
        f"No model at {os.path.abspath(path)} (looked for {looked}): pass a .keras file or run folder, a SavedModel "
        f"folder, or a .tflite file (or its export folder)")


class ArtifactError(ValueError):
    """A model file that exists but cannot be loaded; the message names the file and the cause."""


def load_keras_file(path):
    """`keras.models.load_model(path, safe_mode=True)` with one-line errors that
    name the file: not a .keras archive (empty, truncated, another format),
    unreadable weights, or a refused unsafe layer.

    Examples:
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


def read_mapping(path):
    """The JSON object in `path` (a run's or an export's own file); ArtifactError naming the file when it is not
    valid JSON or not an object."""
    try:
        with open(path, encoding="utf-8") as f:
            value = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ArtifactError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(value, dict):
        raise ArtifactError(f"{path}: expected a JSON object, found {type(value).__name__}")
    return value


class Run:
    """A run folder: save a trained model with its preprocessing, load it back.

    Args:
        path: the run folder, or a `.keras` file inside one (its folder is the
            run; that file is the model).

    Examples:
        >>> Run("runs/first").save(model, pre, config)
        >>> model, pre = Run("runs/first").load()
        >>> Run("runs/first").default_data()     # the validation (else training) manifest
    """

    def __init__(self, path):
        path = os.path.abspath(os.fspath(path))
        if path.endswith(".keras"):
            self.folder, self.model_file = os.path.dirname(path), path
        else:
            self.folder, self.model_file = path, os.path.join(path, MODEL_FILE)

    def file(self, name):
        """The path of `name` inside the run folder."""
        return os.path.join(self.folder, name)

    # --- writing ---
    def save(self, model, pre, config=None):
        """Writes model.keras (through a temporary file), preprocessor.json,
        labels.json and, when given, config.json."""
        os.makedirs(self.folder, exist_ok=True)
        tmp = os.path.join(self.folder, ".model.keras.tmp.keras")
        model.save(tmp)
        os.replace(tmp, self.model_file)
        pre.save(self.folder)
        if pre.labels is not None and pre.labels.classes is not None:
            write_json(self.file(LABELS_FILE), pre.labels.classes)
        if config is not None:
            write_json(self.file(CONFIG_FILE), config)

    # --- reading ---
    def load(self):
        """`(model, preprocessor)`; the model is loaded with `safe_mode=True`.

        Raises:
            FileNotFoundError: no model.keras (naming what was looked for).
            ArtifactError: a model file that is damaged or unsafe.
        """
        from mbm_keras.data import Preprocessor

        model_file = self.existing_model_file()
        pre = Preprocessor.load(self.folder)
        return load_keras_file(model_file), pre

    def existing_model_file(self):
        """The run's model file; FileNotFoundError naming what was looked for when it is missing."""
        if not os.path.isfile(self.model_file):
            raise FileNotFoundError(f"No {MODEL_FILE} in {self.folder} (looked for {self.model_file}): pass a run "
                                    f"folder (from mbm-keras train) or a .keras file")
        return self.model_file

    def config(self):
        """The run's config.json as a dict, or None (a demo run has none)."""
        path = self.file(CONFIG_FILE)
        return read_mapping(path) if os.path.isfile(path) else None

    def default_data(self):
        """The validation (else training) manifest of the run's config, or None."""
        data = (self.config() or {}).get("data", {})
        return data.get("val") or data.get("train")
