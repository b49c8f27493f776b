"""Exports of a retrieval run: each tower on its own, raw inputs in, unit vectors out.

- SavedModel: `embed_query` and `embed_candidate` (raw inputs of that tower's
  features: image bytes, UTF-8 text, WAV bytes -> `embedding`), `serving_default`
  (= `embed_query`), and `query_tensors` / `candidate_tensors` (preprocessed
  tensors in).
- TFLite: `query.tflite` and `candidate.tflite` (batch 1, builtin ops only,
  float or quantized), each with its sidecar (`query.json`, `candidate.json`).

Both are checked against the Keras towers on examples of the run's data:
cosine similarity of every vector >= 0.999 (float), and for quantized TFLite
the overlap of each query's top 10 among the examples' candidates.
"""

import os

import numpy as np

from mbm_keras.deploy.formats import copy_tokenizer
from mbm_keras.io import write_json

TOWERS = ("query", "candidate")


def tower_preprocessor(pre, tower):
    """The preprocessing of one tower's features alone (no labels)."""
    return pre.subset([n for n in tower.input if not n.endswith("_mask")]).without_labels()


def _cosine(a, b):
    a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    return np.sum(a * b, axis=1)


def _top_overlap(queries, candidates, expected_queries, expected_candidates, k=10):
    k = min(k, len(candidates))
    got = np.argsort(-(queries @ candidates.T), axis=1)[:, :k]
    want = np.argsort(-(expected_queries @ expected_candidates.T), axis=1)[:, :k]
    return float(np.mean([len(set(a) & set(b)) / k for a, b in zip(got, want)]))


def serving_functions(model, pre):
    """`{signature: (function of raw inputs -> {"embedding"}, its input signature, its preprocessor)}`: each
    tower's `embed_query` and `embed_candidate`, and `serving_default` (= `embed_query`): what the SavedModel
    holds and what `mbm-keras serve` runs on a run folder.

    Examples:
        >>> function, signature, tower_pre = serving_functions(model, pre)["embed_candidate"]
    """
    from mbm_keras.deploy.raw_inputs import raw_signature, raw_to_inputs

    def endpoint(tower, tower_pre):  # one argument: a traced endpoint takes no defaults
        names = list(tower.input)

        def raw(inputs):
            return {"embedding": tower(raw_to_inputs(inputs, tower_pre, names), training=False)}

        return raw

    functions = {}
    for kind in TOWERS:
        tower = model.get_layer(f"{kind}_tower")
        tower_pre = tower_preprocessor(pre, tower)
        functions[f"embed_{kind}"] = (endpoint(tower, tower_pre), raw_signature(tower_pre), tower_pre)
    functions["serving_default"] = functions["embed_query"]
    return functions


def _tensors_endpoint(tower):
    """A tower's endpoint of preprocessed tensors (one argument: a traced endpoint takes no defaults)."""

    def tensors(inputs):
        return {"embedding": tower(inputs, training=False)}

    return tensors


def export_saved_model(model, pre, path):
    """Writes the towers' SavedModel to `path` (see the module doc).

    Args:
        model: the retrieval model (with `query_tower` and `candidate_tower`).
        pre: the run's fitted `Preprocessor`.
        path: the SavedModel folder.

    Examples:
        >>> export_saved_model(model, pre, "saved_models/search/saved_model")
        >>> tf.saved_model.load(path).signatures["embed_query"](text=tf.constant(["a red bird"]))
    """
    import json

    import keras
    import tensorflow as tf

    from mbm_keras.deploy.raw_inputs import category_tables
    from mbm_keras.deploy.saved_model import tensor_signature

    archive = keras.export.ExportArchive()
    archive.track(model)
    functions = serving_functions(model, pre)
    resources = []
    for kind in TOWERS:
        for trackable in category_tables(functions[f"embed_{kind}"][2]):
            if isinstance(trackable, keras.layers.Layer):
                archive.track(trackable)
            else:
                resources.append(trackable)
    archive._tf_trackable.preprocessing_resources = resources
    archive._tf_trackable.feature_modalities = tf.Variable(json.dumps(pre.feature_modalities), trainable=False)
    for kind in TOWERS:
        raw, signature, _ = functions[f"embed_{kind}"]
        archive.add_endpoint(f"embed_{kind}", raw, input_signature=[signature])
        if kind == "query":
            archive.add_endpoint("serving_default", raw, input_signature=[signature])
        tower = model.get_layer(f"{kind}_tower")
        archive.add_endpoint(f"{kind}_tensors", _tensors_endpoint(tower), input_signature=[tensor_signature(tower)])
    archive.write_out(path, verbose=False)
    return os.path.abspath(path)


def export_retrieval(model, pre, format, folder, quantize, examples, say=print):
    """Writes the towers' export into `folder` and checks it.

    Args:
        model: the retrieval model.
        pre: the run's fitted `Preprocessor`.
        format: "saved_model" or "tflite".
        folder: the (temporary) export folder.
        quantize: TFLite's quantization.
        examples: preprocessed paired examples `{input: array}`, or None.
        say: where progress goes.

    Returns:
        `(model file, check)`: the check has `examples`, `min_cosine` per
        tower and, quantized, `top10_overlap`.

    Examples:
        >>> export_retrieval(model, pre, "tflite", tmp, "int8", examples)
    """
    import tensorflow as tf

    from mbm_keras.deploy.tflite import (
        convert_to_tflite,
        representative_examples,
        run_tflite,
        sidecar,
        tflite_interpreter,
    )

    towers = {kind: model.get_layer(f"{kind}_tower") for kind in TOWERS}
    from mbm_keras.retrieval import tower_inputs

    mine = {kind: (tower_inputs(towers[kind], examples) if examples is not None else None) for kind in TOWERS}
    got = {}
    if format == "saved_model":
        export_saved_model(model, pre, folder)
        model_file = os.path.join(folder, "saved_model.pb")
        if examples is not None:
            served = tf.saved_model.load(folder)
            for kind in TOWERS:
                out = served.signatures[f"{kind}_tensors"](**{k: tf.constant(v) for k, v in mine[kind].items()})
                got[kind] = out["embedding"].numpy()
    elif format == "tflite":
        model_file = os.path.join(folder, "candidate.tflite")
        for kind in TOWERS:
            path = os.path.join(folder, f"{kind}.tflite")
            representative = representative_examples(mine[kind])  # None without examples
            say(f"Converting the {kind} tower to TFLite (quantize={quantize}) ...", flush=True)
            convert_to_tflite(towers[kind], path, quantize, representative=representative)
            interpreter = tflite_interpreter(path)
            card = sidecar(towers[kind], tower_preprocessor(pre, towers[kind]), interpreter, quantize)
            card["output"] = {"name": "embedding", "meaning": "L2-normalized vector: score = dot product"}
            write_json(os.path.join(folder, f"{kind}.json"), card)
            if examples is not None:
                got[kind] = np.asarray(run_tflite(interpreter, mine[kind]))
        copy_tokenizer(folder)
    else:
        raise ValueError(f"a retrieval run exports as saved_model or tflite (per tower). Received: format={format!r}")
    check = None
    if examples is not None:
        expected = {kind: np.asarray(towers[kind].predict(mine[kind], verbose=0)) for kind in TOWERS}
        check = {"examples": int(len(expected["query"])),
                 "min_cosine": {kind: float(_cosine(got[kind], expected[kind]).min()) for kind in TOWERS},
                 "top10_overlap": _top_overlap(got["query"], got["candidate"], expected["query"], expected["candidate"])}
        worst = min(check["min_cosine"].values())
        if quantize == "none" and not worst >= 0.999:
            raise AssertionError(f"The {format} towers differ from Keras: lowest cosine similarity {worst:.5f} "
                                 f"(< 0.999) on {check['examples']} examples; nothing was written")
    return model_file, check
