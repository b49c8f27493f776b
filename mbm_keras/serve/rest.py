"""TensorFlow Serving's REST API (https://www.tensorflow.org/tfx/serving/api_rest): the request bodies it takes
and the answers it gives, for the model `mbm-keras serve` holds.

- `POST /v1/models/NAME:predict` with `{"instances": [{input: value, ...}, ...]}` (row format) answers
  `{"predictions": [{output: value, ...}, ...]}`; with `{"inputs": {input: [value, ...], ...}}` (columnar)
  it answers `{"outputs": {output: [value, ...], ...}}`. Binary values are `{"b64": "..."}`.
- `GET /v1/models/NAME` (status) and `GET /v1/models/NAME/metadata` (the signature).

The same bodies work against the SavedModel export under TensorFlow Serving: its `serving_default` takes these
inputs and gives these outputs, one row per example.
"""

from mbm_keras.serve.servable import RequestError

MAX_INSTANCES = 1024


def parse_predict(body, servable):
    """`(examples, columnar, signature name)` from a `:predict` body (a dict from JSON)."""
    if not isinstance(body, dict):
        raise RequestError("the body must be a JSON object with \"instances\" or \"inputs\"", status=400)
    chosen = body.get("signature_name", "serving_default") or "serving_default"
    if not isinstance(chosen, str):
        raise RequestError("signature_name must be a string", field="signature_name", status=400)
    signature = servable.signature(chosen)
    if ("instances" in body) == ("inputs" in body):
        raise RequestError("give either \"instances\" (row format) or \"inputs\" (columnar format), not both or "
                           "neither", status=400)
    if "instances" in body:
        instances = body["instances"]
        if not isinstance(instances, list) or not instances:
            raise RequestError("\"instances\" must be a non-empty list", field="instances", status=400)
        if len(signature.specs) == 1 and not all(isinstance(i, dict) and set(i) <= set(signature.specs)
                                                 for i in instances):
            only = next(iter(signature.specs))  # one named input: the instances are its values
            instances = [{only: i} for i in instances]
        return [servable.example(i, chosen) for i in _bounded(instances)], False, chosen
    inputs = body["inputs"]
    if not isinstance(inputs, dict):
        if len(signature.specs) != 1:
            raise RequestError(f"\"inputs\" must be an object of inputs ({', '.join(signature.specs)})",
                               field="inputs", status=400)
        inputs = {next(iter(signature.specs)): inputs}
    lengths = {name: len(v) if isinstance(v, list) else None for name, v in inputs.items()}
    bad = next((name for name, n in lengths.items() if not n), None)
    if bad is not None:
        raise RequestError(f"input {bad!r}: a columnar input must be a non-empty list, one value per example",
                           field=bad, status=400)
    if len(set(lengths.values())) > 1:
        raise RequestError(f"inputs hold different numbers of examples: {lengths}", status=400)
    count = next(iter(lengths.values()))
    rows = [{name: values[i] for name, values in inputs.items()} for i in range(count)]
    return [servable.example(r, chosen) for r in _bounded(rows)], True, chosen


def _bounded(rows):
    if len(rows) > MAX_INSTANCES:
        raise RequestError(f"{len(rows)} examples in one request; at most {MAX_INSTANCES}", status=413)
    return rows


def format_predict(servable, outputs, rows, columnar):
    """The `:predict` answer for `rows` of a model call's `outputs`."""
    answers = [servable.answer(outputs, row) for row in rows]
    if columnar:
        return {"outputs": {key: [a[key] for a in answers] for key in answers[0]}}
    return {"predictions": answers}


def status(version):
    """`GET /v1/models/NAME`: one version, available."""
    return {"model_version_status": [{"version": str(version), "state": "AVAILABLE",
                                      "status": {"error_code": "OK", "error_message": ""}}]}


_DTYPES = {"string": "DT_STRING", "float32": "DT_FLOAT", "int32": "DT_INT32", "int64": "DT_INT64"}


def metadata(servable, name, version):
    """`GET /v1/models/NAME/metadata`: the raw-input signatures as TensorFlow Serving describes them, and
    what mbm_keras knows more (each input's modality, the classes, the task, its endpoints)."""

    def tensor(key, dtype, shape):
        return {"dtype": _DTYPES.get(dtype, dtype), "name": key,
                "tensor_shape": {"dim": [{"size": str(d), "name": ""} for d in shape], "unknown_rank": False}}

    def signature_def(signature):
        return {"inputs": {k: tensor(k, v["dtype"], v["shape"]) for k, v in signature.inputs.items()},
                "outputs": {k: tensor(k, v["dtype"], v["shape"]) for k, v in signature.output_specs.items()},
                "method_name": "tensorflow/serving/predict"}

    return {
        "model_spec": {"name": name, "signature_name": "", "version": str(version)},
        "metadata": {
            "signature_def": {"signature_def": {k: signature_def(v) for k, v in sorted(servable.signatures.items())}},
            "mbm_keras": {"task": servable.task.name, "classes": servable.classes,
                          "endpoints": ["/" + e for e in servable.task.endpoints],
                          "inputs": {k: {"modality": v["modality"], "binary": v["binary"]}
                                     for k, v in servable.inputs.items()}},
        },
    }
