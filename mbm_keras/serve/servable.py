"""What `mbm-keras serve` runs: a run folder or a SavedModel export as one batched function of raw inputs.

A run folder is served through the very function its SavedModel export holds (`deploy.saved_model.serving_function`:
`raw_to_inputs`, then the model, then the named outputs), so a served run and its export answer alike, and
training, `predict` and the server share each modality's decoding (`mbm_keras/modalities/`).
"""

import base64
import binascii
import io
import os

import numpy as np

from mbm_keras.modalities import get_modality
from mbm_keras.run import artifact_kind


def _preprocessor_beside(path):
    """The preprocessor export_model writes beside a SavedModel (its class names), or None."""
    from mbm_keras.data import Preprocessor

    return Preprocessor.load(path) if os.path.isfile(os.path.join(path, "preprocessor.json")) else None


class RequestError(ValueError):
    """A request the model cannot take: `status` is its HTTP status, `field` the input it names.

    Examples:
        >>> raise RequestError("input 'image': not a JPEG, PNG, BMP or GIF file", field="image")
    """

    def __init__(self, message, field=None, status=422):
        super().__init__(message)
        self.field = field
        self.status = status


class Servable:
    """A run folder or SavedModel loaded once: `examples -> outputs`, many examples per call.

    Args:
        path: a run folder (or its `model.keras`) or a SavedModel folder from
            `mbm-keras export --format saved_model`.

    Examples:
        >>> servable = Servable("saved_models/demo")
        >>> servable.inputs["image"]
        {'modality': 'image', 'dtype': 'string', 'shape': [-1], 'binary': True}
        >>> servable.run([{"text": "a red cat", "image": png_bytes}])["label"]
    """

    def __init__(self, path):
        import tensorflow as tf

        from mbm_keras.deploy.predicting import _export_task, _load_signature

        self.path = os.path.abspath(path)
        self.kind = artifact_kind(self.path)
        if self.kind == "keras":
            from mbm_keras.deploy.raw_inputs import category_tables, raw_signature
            from mbm_keras.deploy.saved_model import serving_function
            from mbm_keras.tasks import load_run

            model, pre, self.task = load_run(self.path)
            specs = raw_signature(pre)
            category_tables(pre)  # lookup tables made once, outside the traced function (as the export does)
            function = tf.function(serving_function(model, pre), input_signature=[specs])
            self._call = function
            outputs = function.get_concrete_function().structured_outputs
            modalities = pre.feature_modalities
        elif self.kind == "saved_model":
            signature, modalities = _load_signature(self.path)
            specs = signature.structured_input_signature[1]
            self._call = lambda raw: signature(**raw)
            outputs = signature.structured_outputs
            self.task = _export_task(self.path)
            pre = _preprocessor_beside(self.path)
        else:
            raise ValueError(f"{self.path}: mbm-keras serve runs a run folder or a SavedModel export, not a "
                             f"{self.kind} file (make one with mbm-keras export --format saved_model)")
        self.task.check_predictable(self.path, self.kind)
        self.specs = dict(specs)
        self.modalities = {name: modalities.get(name, name) for name in self.specs}
        self.inputs = {name: {"modality": self.modalities[name], "dtype": "string",
                              "shape": [-1, *[int(d) for d in spec.shape[1:]]],
                              "binary": get_modality(self.modalities[name]).file_based}
                       for name, spec in self.specs.items()}
        self.output_specs = {k: {"dtype": v.dtype.name, "shape": [-1 if d is None else int(d) for d in v.shape]}
                             for k, v in outputs.items()}
        self._features = dict(pre.features) if pre is not None else {}  # their header checks, before decoding
        labels = pre.labels if pre is not None else None
        self.classes = [str(c) for c in labels.classes] if labels is not None and labels.classes else None

    def _empty(self, name):
        shape = self.inputs[name]["shape"][1:]
        return [""] * shape[0] if shape else ""

    def example(self, values):
        """One example's raw values from a request's `{input: value}`: bytes for files (given as bytes, or as
        `{"b64": ...}`), text as a string, tabular cells as a list of strings or numbers (or "a,b,c").
        Absent inputs are empty (models with masks take them as missing)."""
        if not isinstance(values, dict):
            raise RequestError(f"an instance must be an object of inputs ({', '.join(self.specs)}); "
                               f"received {type(values).__name__}")
        unknown = sorted(set(values) - set(self.specs))
        if unknown:
            raise RequestError(f"the model has no input {unknown[0]!r}; its inputs are {', '.join(self.specs)}",
                               field=unknown[0])
        example = {}
        for name in self.specs:
            value = values.get(name)
            example[name] = self._empty(name) if value is None else self._value(name, value)
        return example

    def _value(self, name, value):
        if isinstance(value, dict):
            if set(value) != {"b64"} or not isinstance(value["b64"], str):
                raise RequestError(f"input {name!r}: an object value must be {{\"b64\": \"<base64 text>\"}}",
                                   field=name)
            try:
                value = base64.b64decode(value["b64"], validate=True)
            except (binascii.Error, ValueError):
                raise RequestError(f"input {name!r}: b64 is not valid base64", field=name) from None
        shape = self.inputs[name]["shape"][1:]
        if shape:  # tabular cells
            try:
                return get_modality(self.modalities[name]).raw_example(value, name, shape)
            except ValueError as e:
                raise RequestError(f"input {name!r}: {e}", field=name) from None
        if self.inputs[name]["binary"]:
            if not isinstance(value, bytes):
                modality = self.modalities[name]
                raise RequestError(f"input {name!r} is {'an' if modality[0] in 'aeiou' else 'a'} {modality} file: "
                                   f"send its bytes as "
                                   f"{{\"b64\": ...}} (JSON) or a file upload", field=name)
            feature = self._features.get(name)
            reason = feature.check_file(io.BytesIO(value)) if feature is not None and value else None
            if reason:  # the pixel and duration limits, from the header, before anything is decoded
                raise RequestError(f"input {name!r}: {reason}", field=name)
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, (str, bytes)):
            raise RequestError(f"input {name!r} must be a string; received {type(value).__name__}", field=name)
        return value

    def run(self, examples):
        """`{output: array}` for a list of examples from `example()`, in one model call; a
        TensorFlow input error becomes a `RequestError` with its reason in one line."""
        import tensorflow as tf

        from mbm_keras.codecs.asserts import explain

        raw = {name: tf.constant([e[name] for e in examples], dtype=tf.string) for name in self.specs}
        try:
            outputs = self._call(raw)
        except tf.errors.InvalidArgumentError as e:
            reason = explain(e)
            field = next((n for n in self.specs if f"'{n}'" in reason or reason.startswith(f"input {n} ")), None)
            raise RequestError(reason, field=field) from None
        return {k: v.numpy() for k, v in outputs.items()}

    def answer(self, outputs, row):
        """One example's answer from `run`'s outputs, as JSON: every output's row (strings decoded)."""
        answer = {}
        for key, value in outputs.items():
            item = value[row]
            if isinstance(item, bytes):
                item = item.decode("utf-8", "replace")
            elif isinstance(item, np.ndarray) and item.dtype.kind in "SO":
                item = [x.decode("utf-8", "replace") for x in item.tolist()]
            elif isinstance(item, np.ndarray):
                item = item.tolist()
            elif isinstance(item, np.generic):
                item = item.item()
            answer[key] = item
        return answer
