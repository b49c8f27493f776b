"""Raw inputs -> model inputs, as TensorFlow ops that can live in a SavedModel.

The serving signature, `mbm-keras predict` and the TFLite reference all call
`raw_to_inputs`, which calls each feature's modality (`Modality.serve` in
`mbm_keras/modalities/`): the same decode, resize, tokenizer, resampling and
scaling functions that training's `make_dataset` calls.

Raw inputs, one per feature, batched along the first axis:
- image, audio, timeseries features: the file's bytes (`tf.string`, `(batch,)`);
- text features: UTF-8 strings (`(batch,)`);
- tabular features: the manifest's cells as strings, `(batch, columns)` in the
  order numeric, then categorical columns of the preprocessor.
An empty string marks a missing input (all cells empty, for tabular); that is
accepted only by models built with `missing_modalities=True`.
"""


import tensorflow as tf

from mbm_keras.codecs.asserts import check, explain  # noqa: F401  (explain: public here since the first release)


def raw_signature(pre):
    """`{feature: tf.TensorSpec}` of the raw inputs a preprocessor's model takes:
    a batch of strings per feature (encoded image bytes, UTF-8 text, file
    bytes), tabular cells as a `(batch, columns)` string matrix.

    Args:
        pre: the fitted `Preprocessor` saved with the model.

    Examples:
        >>> raw_signature(pre)["image"]
        TensorSpec(shape=(None,), dtype=tf.string, name='image')
    """
    spec = {}
    for name, feature in pre.features.items():
        one = feature.raw_spec()
        spec[name] = tf.TensorSpec([None, *one.shape], one.dtype, name=name)
    return spec


def category_tables(pre):
    """The lookup tables of the preprocessing (categorical tabular columns), made
    once, outside any traced function, so a SavedModel can track them (see
    `export_serving_model`).

    Args:
        pre: the fitted `Preprocessor`.

    Examples:
        >>> archive._tf_trackable.category_tables = category_tables(pre)
    """
    tables = []
    for feature in pre.features.values():
        tables += getattr(feature, "trackables", list)()
    return tables


def _assert(condition, message):
    """An assertion whose message is `message` alone (never the tensors' values,
    which may be raw file bytes)."""
    return check(condition, [message])


def raw_to_inputs(raw, pre, input_names, tables=None):
    """The model's input dict for a dict of raw inputs (see module doc).

    Args:
        raw: `{feature: tensor}` with every feature of the preprocessor.
        pre: the fitted `Preprocessor` saved with the model.
        input_names: the model's input names (masks are produced when the
            model has `<feature>_mask` inputs).
        tables: unused; each feature keeps its own lookup tables
            (`category_tables(pre)` makes them).

    Examples:
        >>> raw = {"image": tf.constant([open("cat.png", "rb").read()]), "text": tf.constant(["a cat"])}
        >>> probabilities = model(raw_to_inputs(raw, pre, list(model.input)))
    """
    names = pre.modalities
    missing = [m for m in names if m not in raw]
    if missing:
        raise ValueError(f"Raw inputs lack {missing}; the model takes {names}")
    # The shape checks run before anything reads the inputs (their control
    # dependencies). Ranks are not checked here: inside a signature the rank
    # is the declared one, so such a check would be constant-folded away.
    checks = []
    first = names[0]
    for m in names[1:]:
        checks.append(_assert(tf.equal(tf.shape(raw[m])[0], tf.shape(raw[first])[0]),
                              f"inputs {first!r} and {m!r} hold different numbers of examples"))
    for name, feature in pre.features.items():
        checks += feature.serving_checks(raw[name])
    with tf.control_dependencies(checks):
        raw = {m: tf.identity(raw[m]) for m in names}
    out = {}
    for name, feature in pre.features.items():
        out[name], present = feature.serve(raw[name])
        if f"{name}_mask" in input_names:
            out[f"{name}_mask"] = tf.cast(tf.reshape(present, [-1, 1]), tf.float32)
        else:
            _assert(tf.reduce_all(present), f"input {name} is empty for some example, but the model was built without "
                                            "missing_modalities=True and needs every input")
    return out
