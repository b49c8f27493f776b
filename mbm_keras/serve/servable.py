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


class Signature:
    """One raw-input function a `Servable` runs: its inputs (name -> spec and modality) and outputs."""

    def __init__(self, name, call, specs, outputs, modalities):
        self.name, self.call, self.specs = name, call, dict(specs)
        self.modalities = {n: modalities.get(n, n) for n in self.specs}
        self.inputs = {n: {"modality": self.modalities[n], "dtype": "string",
                           "shape": [-1, *[int(d) for d in spec.shape[1:]]],
                           "binary": get_modality(self.modalities[n]).file_based}
                       for n, spec in self.specs.items()}
        self.output_specs = {k: {"dtype": v.dtype.name, "shape": [-1 if d is None else int(d) for d in v.shape]}
                             for k, v in outputs.items()}


class Servable:
    """A run folder or SavedModel loaded once: `examples -> outputs`, many examples per call, through each of
    the raw-input signatures its task exports (`Task.serving_functions`: `serving_default`; a retrieval model's
    `embed_query` and `embed_candidate` too).

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
        self.path = os.path.abspath(path)
        self.kind = artifact_kind(self.path)
        if self.kind == "keras":
            pre, self.signatures, self.vocabulary = self._load_run()
        elif self.kind == "saved_model":
            pre, self.signatures, self.vocabulary = self._load_saved_model()
        else:
            raise ValueError(f"{self.path}: mbm-keras serve runs a run folder or a SavedModel export, not a "
                             f"{self.kind} file (make one with mbm-keras export --format saved_model)")
        self.task.check_servable(self.path)
        default = self.signatures["serving_default"]
        self.specs, self.modalities, self.inputs = default.specs, default.modalities, default.inputs
        self.output_specs = default.output_specs
        self._features = dict(pre.features) if pre is not None else {}  # their header checks, before decoding
        labels = pre.labels if pre is not None else None
        self.preprocessor = pre
        self.classes = ([str(c) for c in labels.classes] if labels is not None and labels.classes
                        and labels.label_type != "transcript" else None)

    def _load_run(self):
        import tensorflow as tf

        from mbm_keras.deploy.raw_inputs import category_tables
        from mbm_keras.tasks import load_run

        model, pre, self.task = load_run(self.path)
        signatures, traced = {}, {}
        for name, (function, specs, function_pre) in self.task.serving_functions(model, pre).items():
            if id(function) not in traced:  # serving_default may be another signature's function
                category_tables(function_pre)  # lookup tables made once, outside the traced function (as the export)
                traced[id(function)] = tf.function(function, input_signature=[specs])
            call = traced[id(function)]
            outputs = call.get_concrete_function().structured_outputs
            signatures[name] = Signature(name, call, specs, outputs, pre.feature_modalities)
        vocabulary = pre.labels.vocabulary if pre.labels is not None and pre.labels.label_type == "transcript" else None
        return pre, signatures, vocabulary

    def _load_saved_model(self):
        import json

        from mbm_keras.deploy.predicting import _export_task, _load_saved_model

        loaded, modalities = _load_saved_model(self.path)
        self.task = _export_task(self.path)
        signatures = {}
        for name, function in loaded.signatures.items():
            if name.endswith("_tensors"):  # preprocessed tensors in: not a raw-input signature
                continue
            signatures[name] = Signature(name, lambda raw, f=function: f(**raw), function.structured_input_signature[1],
                                         function.structured_outputs, modalities)
        vocabulary = None
        if hasattr(loaded, "vocabulary_symbols"):
            from mbm_keras.transcription import Vocabulary

            vocabulary = Vocabulary(json.loads(loaded.vocabulary_symbols.numpy()))
        self._loaded = loaded  # its signatures' variables live as long as it does
        return _preprocessor_beside(self.path), signatures, vocabulary

    def signature(self, name):
        """The `Signature` named `name`; RequestError naming the ones there are."""
        if name not in self.signatures:
            raise RequestError(f"signature_name {name!r}: this model has {', '.join(sorted(self.signatures))}",
                               field="signature_name", status=400)
        return self.signatures[name]

    def _empty(self, signature, name):
        shape = signature.inputs[name]["shape"][1:]
        return [""] * shape[0] if shape else ""

    def example(self, values, signature="serving_default"):
        """One example's raw values from a request's `{input: value}`: bytes for files (given as bytes, or as
        `{"b64": ...}`), text as a string, tabular cells as a list of strings or numbers (or "a,b,c").
        Absent inputs are empty (models with masks take them as missing)."""
        signature = self.signature(signature)
        if not isinstance(values, dict):
            raise RequestError(f"an instance must be an object of inputs ({', '.join(signature.specs)}); "
                               f"received {type(values).__name__}")
        unknown = sorted(set(values) - set(signature.specs))
        if unknown:
            raise RequestError(f"the model has no input {unknown[0]!r}; its inputs are {', '.join(signature.specs)}",
                               field=unknown[0])
        example = {}
        for name in signature.specs:
            value = values.get(name)
            example[name] = self._empty(signature, name) if value is None else self._value(signature, name, value)
        return example

    def _value(self, signature, name, value):
        if isinstance(value, dict):
            if set(value) != {"b64"} or not isinstance(value["b64"], str):
                raise RequestError(f"input {name!r}: an object value must be {{\"b64\": \"<base64 text>\"}}",
                                   field=name)
            try:
                value = base64.b64decode(value["b64"], validate=True)
            except (binascii.Error, ValueError):
                raise RequestError(f"input {name!r}: b64 is not valid base64", field=name) from None
        shape = signature.inputs[name]["shape"][1:]
        if shape:  # tabular cells
            try:
                return get_modality(signature.modalities[name]).raw_example(value, name, shape)
            except ValueError as e:
                raise RequestError(f"input {name!r}: {e}", field=name) from None
        if signature.inputs[name]["binary"]:
            if not isinstance(value, bytes):
                modality = signature.modalities[name]
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

    def run(self, examples, signature="serving_default"):
        """`{output: array}` for a list of examples from `example()`, in one model call of `signature`; a
        TensorFlow input error becomes a `RequestError` with its reason in one line."""
        import tensorflow as tf

        from mbm_keras.codecs.asserts import explain

        signature = self.signature(signature)
        raw = {name: tf.constant([e[name] for e in examples], dtype=tf.string) for name in signature.specs}
        try:
            outputs = signature.call(raw)
        except tf.errors.InvalidArgumentError as e:
            reason = explain(e)
            field = next((n for n in signature.specs if f"'{n}'" in reason or reason.startswith(f"input {n} ")), None)
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
