"""SavedModel for serving (TF Serving, Vertex AI, `tf.saved_model.load`).

Two signatures:
- `serving_default`: raw inputs (image bytes, UTF-8 text, WAV bytes, tabular
  cells as strings; see `raw_inputs`) -> `probabilities` and the top class's
  `label` and `score` of the top class, and `classes` (the class names in
  column order, one row per example; regression heads: `predictions` only);
- `serve_tensors`: the preprocessed tensors the Keras model takes.

Models with a wordpiece tokenizer need `import tensorflow_text` before loading.
"""

import json
import os

import keras
import tensorflow as tf

from mbm_keras.deploy.raw_inputs import category_tables, raw_signature, raw_to_inputs


def tensor_signature(model, batch_size=None):
    """`{input name: tf.TensorSpec}` of a functional model's inputs."""
    return {
        t.name: tf.TensorSpec((batch_size, *t.shape[1:]), t.dtype, name=t.name)
        for t in model.inputs
    }


def _outputs(probabilities, pre):
    if pre.labels is None or pre.labels.label_type == "regression" or pre.labels.classes is None:
        return {"predictions": probabilities}
    classes = tf.constant([str(c) for c in pre.labels.classes])
    top = tf.argmax(probabilities, axis=-1)
    return {
        "probabilities": probabilities,
        "label": tf.gather(classes, top),
        "score": tf.reduce_max(probabilities, axis=-1),
        # The class of each probability column, so the SavedModel is self-describing: one row per example, as
        # TF Serving's row format ("instances") needs every output to be (it refuses an output of another batch size).
        "classes": tf.tile(classes[None], [tf.shape(probabilities)[0], 1]),
    }


def serving_function(model, pre):
    """`raw inputs -> named outputs`: the SavedModel's `serving_default`, and what `mbm-keras serve` runs on a
    run folder (one implementation of both).

    Args:
        model: the trained Keras model.
        pre: the fitted `Preprocessor` it was trained with.

    Examples:
        >>> serve = tf.function(serving_function(model, pre), input_signature=[raw_signature(pre)])
        >>> serve({"text": tf.constant(["a red cat"]), ...})["label"]
    """
    names = [t.name for t in model.inputs]

    def serve_raw(raw):
        return _outputs(model(raw_to_inputs(raw, pre, names), training=False), pre)

    return serve_raw


def serving_functions(model, pre):
    """`{signature: (function of raw inputs, its input signature, its preprocessor)}` of a single-output model:
    `serving_default` alone (what `Task.serving_functions` gives by default)."""
    return {"serving_default": (serving_function(model, pre), raw_signature(pre), pre)}


def export_serving_model(model, pre, path):
    """Writes a SavedModel with `serving_default` (raw inputs) and
    `serve_tensors` (preprocessed tensors) signatures to `path`.

    Args:
        model: the trained Keras model.
        pre: the fitted `Preprocessor` it was trained with.
        path: the SavedModel folder to write (use `atomic_output_dir` around it).

    Examples:
        >>> export_serving_model(model, pre, "saved_models/demo/saved_model")
        >>> served = tf.saved_model.load("saved_models/demo/saved_model")
        >>> served.signatures["serving_default"](text=tf.constant(["a red cat"]), image=...)
    """
    archive = keras.export.ExportArchive()
    archive.track(model)
    # Tokenizers and lookup tables made here, outside the traced endpoint, and
    # tracked: one made inside it is an untracked resource the SavedModel cannot hold.
    resources = []
    for trackable in category_tables(pre):
        if isinstance(trackable, keras.layers.Layer):
            archive.track(trackable)
        else:  # lookup tables, tensorflow-text tokenizers: trackable resources
            resources.append(trackable)
    archive._tf_trackable.preprocessing_resources = resources
    # Which modality each raw input is, for `predict` on the SavedModel alone.
    archive._tf_trackable.feature_modalities = tf.Variable(json.dumps(pre.feature_modalities), trainable=False)

    def serve_tensors(inputs):
        return _outputs(model(inputs, training=False), pre)

    archive.add_endpoint("serving_default", serving_function(model, pre), input_signature=[raw_signature(pre)])
    archive.add_endpoint("serve_tensors", serve_tensors, input_signature=[tensor_signature(model)])
    archive.write_out(path, verbose=False)
    return os.path.abspath(path)
