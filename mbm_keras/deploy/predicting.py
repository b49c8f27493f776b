"""`predict`: one example through a `.keras` run folder, a SavedModel, or a `.tflite` or `.onnx` export."""

import json
import os

from mbm_keras.modalities import get_modality
from mbm_keras.run import artifact_kind


def predict(path, image=None, text=None, audio=None, tabular=None, top=3, *, features=None, **more):
    """Top classes for one example.

    Loads `path` each time; `Predictor(path)` loads it once for many examples.

    Args:
        path: a run folder or `.keras` file (with `preprocessor.json` beside
            it), a SavedModel folder from `export_model`, or a `.tflite` or
            `.onnx` file / its export folder.
        image: an image file path (JPEG/PNG/GIF/BMP).
        text: the text.
        audio: a WAV file path.
        tabular: the tabular cells, in the preprocessor's column order
            (numeric, then categorical), as strings or numbers.
        top: how many classes to return.
        features: `{feature: value}` for models with named features: a file
            path for image, audio and timeseries features, the text for text
            features, the cells for tabular ones, e.g.
            `{"front": "f.jpg", "rear": "r.jpg", "title": "red car"}`.
        **more: a value for a feature named after another modality, e.g.
            `timeseries="drive.npy"`.

    Returns:
        a list of `(class name, probability)`, most likely first (regression
        heads: `[("prediction", values)]`).

    Examples:
        >>> predict("saved_models/demo", image="cat.png", text="a red cat", audio="meow.wav")
        [('red-cat-high', 0.93), ...]
        >>> predict("runs/cars", features={"front": "f.jpg", "rear": "r.jpg", "title": "red hatchback"})
    """
    return Predictor(path)(image=image, text=text, audio=audio, tabular=tabular, top=top, features=features, **more)


class Predictor:
    """A model artifact loaded once, answering one example per call as `predict` does.

    Args:
        path: as `predict`'s: a run folder or `.keras` file, a SavedModel
            folder, or a `.tflite` or `.onnx` file or export folder.

    Examples:
        >>> predictor = Predictor("saved_models/demo")
        >>> predictor(image="cat.png", text="a red cat", top=2)
        [('red-cat-high', 0.93), ('red-cat-low', 0.05)]
    """

    def __init__(self, path):
        self.path = os.path.abspath(path)
        self.kind = artifact_kind(self.path)
        if self.kind == "saved_model":
            self._load_saved_model()
        else:
            self._load_preprocessed()

    def __call__(self, image=None, text=None, audio=None, tabular=None, top=3, *, features=None, **more):
        """`predict`'s answer for one example; the arguments are `predict`'s after `path`."""
        given = {k: v for k, v in dict(image=image, text=text, audio=audio, tabular=tabular, **more).items()
                 if v is not None}
        for name, value in (features or {}).items():
            if name in given:
                raise ValueError(f"{name!r} is given twice: as a keyword and in features")
            given[name] = value
        if self.kind == "saved_model":
            return self._answer_saved_model(given, top)
        return self._answer_preprocessed(given, top)

    def _load_saved_model(self):
        self._signature, self._feature_modalities = _load_signature(self.path)
        self.task = _export_task(self.path)
        self.task.check_predictable(self.path, "saved_model")

    def _answer_saved_model(self, given, top):
        """Raw inputs into the SavedModel's serving signature; its task reads the answer."""
        import tensorflow as tf

        specs = self._signature.structured_input_signature[1]
        _check_given(list(specs), given)
        raw = {}
        for name, spec in specs.items():
            modality = get_modality(self._feature_modalities.get(name, name))
            raw[name] = tf.constant([modality.raw_example(given.get(name), name, spec.shape[1:])])
        return self.task.answer(_run(self._signature, raw), None, top, self.path)

    def _load_preprocessed(self):
        """A `.keras` run, a TFLite or an ONNX export, with its preprocessor and task."""
        path, kind = self.path, self.kind
        folder = path if os.path.isdir(path) else os.path.dirname(path)
        if kind == "keras":
            from mbm_keras.tasks import load_run

            self._model, self.pre, self.task = load_run(path)
            self._names = [t.name for t in self._model.inputs]
        else:
            from mbm_keras.data import Preprocessor

            self.pre = Preprocessor.load(folder)
            self.task = _export_task(folder, self.pre)
        self.task.check_predictable(path, kind)
        if kind == "onnx":
            from mbm_keras.deploy.onnx import onnx_session

            self._model = onnx_session(path if path.endswith(".onnx") else os.path.join(path, "model.onnx"))
            self._names = [i.name for i in self._model.get_inputs()]
        elif kind == "tflite":
            from mbm_keras.deploy.tflite import tflite_interpreter

            self._model = tflite_interpreter(path if path.endswith(".tflite") else os.path.join(path, "model.tflite"))
            self._names = list(self._model.get_signature_runner().get_input_details())

    def _answer_preprocessed(self, given, top):
        """Each input preprocessed as the SavedModel would, then the model; the task reads the answer."""
        import tensorflow as tf

        from mbm_keras.deploy.raw_inputs import raw_to_inputs

        pre, names = self.pre, self._names
        _check_given(pre.modalities, given, names)
        raw = {name: tf.constant([feature.raw_example(given.get(name), name, feature.raw_spec().shape, feature.columns())])
               for name, feature in pre.features.items()}
        inputs = {k: v.numpy() for k, v in _run(lambda **r: raw_to_inputs(r, pre, names), raw).items()}
        if self.kind == "keras":
            outputs = self._model.predict(inputs, verbose=0)[0]
        elif self.kind == "onnx":
            from mbm_keras.deploy.onnx import run_onnx

            outputs = run_onnx(self._model, inputs)[0]
        else:
            from mbm_keras.deploy.tflite import run_tflite

            outputs = run_tflite(self._model, inputs)[0]
        classes = [str(c) for c in pre.labels.classes] if pre.labels is not None and pre.labels.classes else None
        return self.task.answer(outputs, classes, top, self.path)


def _export_task(folder, pre=None):
    """The task of an export folder: its task.json (written by export_model), else the one that
    recognizes its preprocessor (an export of an earlier release)."""
    from mbm_keras.data import Preprocessor
    from mbm_keras.deploy.formats import TASK_FILE
    from mbm_keras.run import read_mapping
    from mbm_keras.tasks import task_of
    from mbm_keras.tasks.base import task_named

    path = os.path.join(folder, TASK_FILE)
    if os.path.isfile(path):
        return task_named(read_mapping(path).get("task"), path)
    if pre is None and os.path.isfile(os.path.join(folder, "preprocessor.json")):
        pre = Preprocessor.load(folder)
    return task_of(None, None, pre)


def _load_signature(path):
    """`(serving_default, {feature: modality})` of a SavedModel export."""
    served, modalities = _load_saved_model(path)
    return served.signatures["serving_default"], modalities


def _load_saved_model(path):
    """`(the loaded SavedModel, {feature: modality})`; ArtifactError naming the folder when it is no export."""
    import tensorflow as tf

    from mbm_keras.run import ArtifactError

    try:
        served = tf.saved_model.load(path)
    except Exception as e:  # noqa: BLE001 -- TF raises many types for a damaged SavedModel
        reason = " ".join(str(e).split())
        raise ArtifactError(f"{path}: cannot load the SavedModel ({type(e).__name__}: {reason[:300]}); "
                            f"re-export it with mbm-keras export") from None
    if "serving_default" not in served.signatures:
        raise ArtifactError(f"{path}: the SavedModel has no serving_default signature; it is not an mbm_keras export")
    # {feature: modality}, saved by export_serving_model (absent before named features: names are modalities).
    modalities = json.loads(served.feature_modalities.numpy()) if hasattr(served, "feature_modalities") else {}
    return served, modalities


def _run(function, raw):
    """Calls `function(**raw)`; TensorFlow's errors become one-line ValueErrors
    with the reason (TF's text may hold raw input bytes that are not UTF-8)."""
    import tensorflow as tf

    from mbm_keras.codecs.asserts import explain

    try:
        return function(**raw)
    except tf.errors.InvalidArgumentError as e:
        raise ValueError(explain(e)) from None
    except UnicodeDecodeError:
        raise ValueError("an input could not be decoded (TensorFlow's message held bytes of the input that are "
                         "not text): check that --image is an image file and --audio a 16-bit PCM WAV file") from None


def _check_given(names, given, input_names=None):
    unknown = sorted(set(given) - set(names))
    if unknown:
        raise ValueError(f"The model has no input {unknown[0]!r}; its inputs are {', '.join(names)}")
    if not given:
        raise ValueError(f"Give at least one input; the model takes {sorted(names)}")
    if input_names is None:
        return
    for m in names:
        if m not in given and f"{m}_mask" not in input_names:
            raise ValueError(f"The model needs an input for '{m}' (it was built without missing_modalities=True)")
