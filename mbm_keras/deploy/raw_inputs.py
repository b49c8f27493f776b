"""Raw inputs -> model inputs, as TensorFlow ops that can live in a SavedModel.

The serving signature, `mbm-keras predict` and the TFLite reference all call
`raw_to_inputs`, so a deployed model sees exactly what training's
`make_dataset` produced: the same decode, resize, tokenizer, resampling and
tabular scaling functions.

Raw inputs, batched along the first axis:
- `image`: encoded JPEG/PNG/GIF/BMP bytes (`tf.string`, shape `(batch,)`);
- `text`: UTF-8 strings (`(batch,)`);
- `audio`: WAV file bytes (`(batch,)`);
- `tabular`: the manifest's cells as strings, `(batch, columns)` in the order
  `numeric + categorical` columns of the preprocessor.
An empty string marks a missing modality (a missing cell, for tabular); that is
accepted only by models built with `missing_modalities=True`.
"""

import re

import tensorflow as tf

from mbm_keras.data.audio import WAV_MAGIC, fix_length, resample
from mbm_keras.data.image import decode_image

RAW_MODALITIES = ("image", "text", "audio", "tabular")


def raw_signature(pre):
    """`{modality: tf.TensorSpec}` of the raw inputs a preprocessor's model takes:
    a batch of strings per modality (encoded image bytes, UTF-8 text, WAV
    bytes), tabular cells as a `(batch, columns)` string matrix.

    Args:
        pre: the fitted `Preprocessor` saved with the model.

    Example:
        >>> raw_signature(pre)["image"]
        TensorSpec(shape=(None,), dtype=tf.string, name='image')
    """
    spec = {}
    for m in pre.modalities:
        if m == "tabular":
            spec[m] = tf.TensorSpec([None, len(pre.tabular.numeric) + len(pre.tabular.categorical)], tf.string, name=m)
        else:
            spec[m] = tf.TensorSpec([None], tf.string, name=m)
    return spec


def _image(contents, pre):
    size, resize = pre.options["image_size"], pre.options["resize"]

    def one(c):
        return tf.cond(
            tf.strings.length(c) > 0,
            lambda: decode_image(c, size, resize),
            lambda: tf.zeros((*size, 3), tf.float32),
        )

    return tf.map_fn(one, contents, fn_output_signature=tf.TensorSpec((*size, 3), tf.float32))


def _audio(contents, pre):
    rate, length = float(pre.options["sample_rate"]), pre.options["audio_length"]

    def one(c):
        def load():
            tf.debugging.assert_equal(
                tf.strings.substr(c, 0, 4), WAV_MAGIC,
                message="input audio must hold WAV file bytes (RIFF header); decode other formats first",
            )
            audio, file_rate = tf.audio.decode_wav(c)
            return fix_length(resample(tf.reduce_mean(audio, axis=1), tf.cast(file_rate, tf.int32), rate), length)

        return tf.cond(tf.strings.length(c) > 0, load, lambda: tf.zeros((length,), tf.float32))

    return tf.map_fn(one, contents, fn_output_signature=tf.TensorSpec((length,), tf.float32))


def _tabular(cells, pre):
    tab = pre.tabular
    n_num = len(tab.numeric)
    parts = []
    if n_num:
        num = cells[:, :n_num]
        empty = tf.equal(num, "")
        values = tf.strings.to_number(tf.where(empty, "0", num), tf.float32)
        mean = tf.constant([tab.stats[c][0] for c in tab.numeric], tf.float32)
        std = tf.constant([tab.stats[c][1] for c in tab.numeric], tf.float32)
        parts.append(tf.where(empty, 0.0, (values - mean) / std))  # empty: the training mean
    for j, column in enumerate(tab.categorical):
        cats = tab.categories[column]
        table = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(tf.constant(cats, tf.string), tf.range(len(cats), dtype=tf.int64)),
            default_value=len(cats),  # unseen or empty: the "unknown" slot
        )
        parts.append(tf.one_hot(table.lookup(cells[:, n_num + j]), len(cats) + 1, dtype=tf.float32))
    return tf.concat(parts, axis=-1), tf.reduce_any(tf.not_equal(cells, ""), axis=-1)


def raw_to_inputs(raw, pre, input_names):
    """The model's input dict for a dict of raw inputs (see module doc).

    Args:
        raw: `{modality: tensor}` with every modality of `pre.modalities`.
        pre: the fitted `Preprocessor` saved with the model.
        input_names: the model's input names (masks are produced when the
            model has `<modality>_mask` inputs).

    Example:
        >>> raw = {"image": tf.constant([open("cat.png", "rb").read()]), "text": tf.constant(["a cat"])}
        >>> probabilities = model(raw_to_inputs(raw, pre, list(model.input)))
    """
    missing = [m for m in pre.modalities if m not in raw]
    if missing:
        raise ValueError(f"Raw inputs lack {missing}; the model takes {pre.modalities}")
    out = {}
    for m in pre.modalities:
        x = raw[m]
        if m == "tabular":
            out[m], present = _tabular(x, pre)
        else:
            present = tf.strings.length(x) > 0
            if m == "image":
                out[m] = _image(x, pre)
            elif m == "audio":
                out[m] = _audio(x, pre)
            else:
                out[m] = pre.tokenizer(x)
        if f"{m}_mask" in input_names:
            out[f"{m}_mask"] = tf.cast(tf.reshape(present, [-1, 1]), tf.float32)
        else:
            tf.debugging.assert_equal(
                tf.reduce_all(present), True,
                message=f"input {m} is empty for some example, but the model was built without "
                        "missing_modalities=True and needs every modality",
            )
    return out


def explain(error):
    """The useful line of a `tf.errors.InvalidArgumentError` raised by the ops above."""
    text = error.message if hasattr(error, "message") else str(error)
    found = re.search(r"assertion failed: \[(.*?)\]", text)
    if found:
        return found.group(1).replace("\\'", "'")
    lines = [line.strip() for line in text.splitlines() if line.strip() and "Graph execution error" not in line]
    return lines[0].split(" [[")[0] if lines else text
