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

import ast
import re

import tensorflow as tf

from mbm_keras.data.asserts import check
from mbm_keras.data.audio import check_duration, decode_wav, fix_length, resample
from mbm_keras.data.image import decode_image
from mbm_keras.data.tabular import FLOAT32_MAX, NUMBER_PATTERN

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
    max_pixels = pre.options["max_image_pixels"]

    def one(c):
        return tf.cond(
            tf.strings.length(c) > 0,
            lambda: decode_image(c, size, resize, max_pixels=max_pixels),
            lambda: tf.zeros((*size, 3), tf.float32),
        )

    return tf.map_fn(one, contents, fn_output_signature=tf.TensorSpec((*size, 3), tf.float32))


def _audio(contents, pre):
    rate, length = float(pre.options["sample_rate"]), pre.options["audio_length"]

    max_seconds = pre.options["max_audio_seconds"]

    def one(c):
        def load():
            samples, file_rate = decode_wav(c)  # asserts a 16-bit PCM WAV, with a message free of the raw bytes
            samples = check_duration(samples, file_rate, max_seconds)
            return fix_length(resample(samples, file_rate, rate), length)

        return tf.cond(tf.strings.length(c) > 0, load, lambda: tf.zeros((length,), tf.float32))

    return tf.map_fn(one, contents, fn_output_signature=tf.TensorSpec((length,), tf.float32))


def category_tables(pre):
    """One lookup table per categorical tabular column (category -> slot;
    unseen or empty -> the "unknown" slot). Made once, outside any traced
    function, so a SavedModel can track them (see `export_serving_model`)."""
    if pre.tabular is None:
        return []
    tables = []
    for column in pre.tabular.categorical:
        cats = pre.tabular.categories[column]
        tables.append(tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(tf.constant(cats, tf.string), tf.range(len(cats), dtype=tf.int64)),
            default_value=len(cats),
        ))
    return tables


def _assert(condition, message):
    """An assertion whose message is `message` alone (never the tensors' values,
    which may be raw file bytes)."""
    return check(condition, [message])


def _tabular(cells, pre, tables):
    tab = pre.tabular
    n_num = len(tab.numeric)
    parts = []
    if n_num:
        num = tf.strings.strip(cells[:, :n_num])
        empty = tf.equal(num, "")
        number = tf.strings.regex_full_match(num, NUMBER_PATTERN)
        values = tf.strings.to_number(tf.where(number, num, "0"), tf.float32)
        mean = tf.constant([tab.stats[c][0] for c in tab.numeric], tf.float32)
        std = tf.constant([tab.stats[c][1] for c in tab.numeric], tf.float32)
        scaled = tf.where(empty, 0.0, (values - mean) / std)  # empty: the training mean
        for j, column in enumerate(tab.numeric):
            _assert(tf.reduce_all(empty[:, j] | number[:, j]), f"tabular column {column!r}: a cell is not a number")
            # to_number gives inf beyond float32; scaling can overflow too.
            finite = tf.math.is_finite(values[:, j]) & (tf.abs(scaled[:, j]) <= FLOAT32_MAX)
            _assert(tf.reduce_all(finite), f"tabular column {column!r}: a cell is not a finite float32 number")
        parts.append(scaled)
    for j, column in enumerate(tab.categorical):
        cats = tab.categories[column]
        parts.append(tf.one_hot(tables[j].lookup(cells[:, n_num + j]), len(cats) + 1, dtype=tf.float32))
    return tf.concat(parts, axis=-1), tf.reduce_any(tf.not_equal(cells, ""), axis=-1)


def raw_to_inputs(raw, pre, input_names, tables=None):
    """The model's input dict for a dict of raw inputs (see module doc).

    Args:
        raw: `{modality: tensor}` with every modality of `pre.modalities`.
        pre: the fitted `Preprocessor` saved with the model.
        input_names: the model's input names (masks are produced when the
            model has `<modality>_mask` inputs).
        tables: `category_tables(pre)`, made outside a traced function
            (made here when None: fine eagerly, not inside a SavedModel).

    Example:
        >>> raw = {"image": tf.constant([open("cat.png", "rb").read()]), "text": tf.constant(["a cat"])}
        >>> probabilities = model(raw_to_inputs(raw, pre, list(model.input)))
    """
    missing = [m for m in pre.modalities if m not in raw]
    if missing:
        raise ValueError(f"Raw inputs lack {missing}; the model takes {pre.modalities}")
    # The shape checks run before anything reads the inputs (their control
    # dependencies). Ranks are not checked here: inside a signature the rank
    # is the declared one, so such a check would be constant-folded away.
    checks = []
    first = pre.modalities[0]
    for m in pre.modalities[1:]:
        checks.append(_assert(tf.equal(tf.shape(raw[m])[0], tf.shape(raw[first])[0]),
                              f"inputs {first!r} and {m!r} hold different numbers of examples"))
    if "tabular" in pre.modalities:
        columns = len(pre.tabular.numeric) + len(pre.tabular.categorical)
        checks.append(_assert(tf.equal(tf.shape(raw["tabular"])[-1], columns),
                              f"input 'tabular' must hold {columns} cells per example "
                              f"({', '.join(pre.tabular.numeric + pre.tabular.categorical)})"))
    with tf.control_dependencies(checks):
        raw = {m: tf.identity(raw[m]) for m in pre.modalities}
    tables = category_tables(pre) if tables is None else tables
    out = {}
    for m in pre.modalities:
        x = raw[m]
        if m == "tabular":
            out[m], present = _tabular(x, pre, tables)
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
            _assert(tf.reduce_all(present), f"input {m} is empty for some example, but the model was built without "
                                            "missing_modalities=True and needs every modality")
    return out


def _clean(line):
    line = re.sub(r"\{\{function_node [^}]*\}\}\s*", "", line).strip()
    return re.sub(r"\s*\[Op:[^]]*\].*$|\s*\[\[.*$", "", line).strip()


def explain(error):
    """The reason in a TensorFlow error raised by the ops above, as one line:
    the message of a failed assertion, else TensorFlow's own reason, without
    the traceback, graph-node and function-name decorations around it.

    Example:
        >>> explain(e)   # "Unknown image file format. One of JPEG, PNG, GIF, BMP required."
    """
    text = getattr(error, "message", None) or str(error)
    found = re.search(r"assertion failed: (\[.*)$", text, flags=re.M)
    if found:  # "[piece] [7] [piece]", maybe followed by " [Op:Assert]" or " name: "
        line = re.sub(r"(\s*\[Op:[^]]*\])?(\s*name:.*)?\s*$", "", found.group(1))
        pieces = re.findall(r"\[(.*?)\](?: |$)", line)
        return "".join(pieces).replace("\\'", "'").replace("\\n", " ")
    found = re.search(r"Summarized data: (.*?)(?:\n\n|$)", text, flags=re.S)
    if found:  # eager mode: one piece a line, strings as b'...'
        pieces = []
        for piece in found.group(1).strip().splitlines():
            try:
                value = ast.literal_eval(piece)
            except (ValueError, SyntaxError):
                value = piece
            pieces.append(value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value))
        return "".join(pieces)
    lines = text.splitlines()
    for line in reversed(lines):  # "in user code" blocks end with "    SomeError: reason"
        found = re.match(r"\s+\w+Error: (.+)$", line)
        if found:
            return _clean(found.group(1))
    for i, line in enumerate(lines):  # graph errors: the reason comes right before "[[{{node ...}}]]"
        if line.strip().startswith("[[") and i > 0 and _clean(lines[i - 1]):
            return _clean(lines[i - 1])
    for line in lines:
        if _clean(line) and not re.match(r"(Graph execution error|Detected at node|<stack traces)", line.strip()):
            return _clean(line)
    return type(error).__name__
