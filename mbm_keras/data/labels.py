"""Labels: class names or integers, delimited multi-label lists, or floats."""

from mbm_keras.data.manifest import DataError

LABEL_TYPES = ("single", "multi", "regression", "transcript")


def _sort_key(value):
    # Integer-like class names sort numerically ("2" before "10").
    try:
        return (0, int(value), "")
    except (TypeError, ValueError):
        return (1, 0, str(value))


class LabelEncoder:
    """Maps manifest label cells to model targets.

    - "single": one class per example -> int id (softmax head);
    - "multi": classes joined by `delimiter` -> multi-hot float vector (sigmoid head);
    - "regression": a float -> float32 `(1,)` target (linear head);
    - "transcript": a text -> int32 `(length,)` character ids padded with 0
      (CTC targets; `classes` holds the characters, see
      `mbm_keras.transcription.Vocabulary`). A transcript longer than
      `length`, or needing more CTC frames than `max_frames`, is a row error.

    The class vocabulary comes from the training manifest only and is saved with
    the preprocessor, so validation, test and export use the same ids.

    Args:
        label_type: one of "single", "multi", "regression".
        delimiter: separator of multi-label cells.
        classes: a fixed vocabulary (skips fitting).

    Examples:
        >>> enc = LabelEncoder("single").fit(["cat", "dog", "cat"])
        >>> enc.classes, enc.encode("dog")
        (['cat', 'dog'], 1)
    """

    def __init__(self, label_type="single", delimiter="|", classes=None, length=None):
        if label_type not in LABEL_TYPES:
            raise ValueError(f"label_type must be one of {LABEL_TYPES}. Received: label_type={label_type!r}")
        self.label_type = label_type
        self.delimiter = delimiter
        self.classes = list(classes) if classes is not None else None
        self.length = length  # transcript: the targets' width
        self.max_frames = None  # transcript: the model's frames (set by the trainer), or no check

    def _split(self, value):
        return [v.strip() for v in str(value).split(self.delimiter) if v.strip()]

    @property
    def vocabulary(self):
        """The transcript labels' `Vocabulary` (characters in `classes`)."""
        from mbm_keras.codecs.vocabulary import Vocabulary

        return Vocabulary(self.classes)

    def fit(self, values):
        if self.label_type == "regression":
            self.classes = None
            return self
        if self.label_type == "transcript":
            from mbm_keras.codecs.vocabulary import Vocabulary

            texts = [v for v in values if v is not None and Vocabulary.normalize(v)]
            if not texts:
                raise DataError("The training manifest has no non-empty transcript")
            self.classes = Vocabulary.fit(texts).symbols
            return self
        names = set()
        for v in values:
            if v is None:
                continue
            names.update(self._split(v) if self.label_type == "multi" else [str(v).strip()])
        if len(names) < (2 if self.label_type == "single" else 1):
            raise DataError(f"The training labels hold {len(names)} class(es): {sorted(names)}; need at least 2")
        self.classes = sorted(names, key=_sort_key)
        return self

    @property
    def num_outputs(self):
        if self.label_type == "transcript":
            return len(self.classes) + 2  # blank, unknown, the characters
        return 1 if self.label_type == "regression" else len(self.classes)

    @property
    def head(self):
        return {"single": "softmax", "multi": "sigmoid", "regression": "linear", "transcript": "ctc"}[self.label_type]

    def encode(self, value):
        """The target of one cell; raises ValueError naming the value."""
        if value is None:
            raise ValueError("empty transcript" if self.label_type == "transcript" else "empty label")
        if self.label_type == "transcript":
            return self._encode_transcript(value)
        if self.label_type == "regression":
            try:
                return [float(value)]
            except (TypeError, ValueError):
                raise ValueError(f"label {value!r} is not a number") from None
        index = {c: i for i, c in enumerate(self.classes)}
        if self.label_type == "single":
            name = str(value).strip()
            if name not in index:
                raise ValueError(f"label {name!r} is not in the training vocabulary ({len(self.classes)} classes)")
            return index[name]
        target = [0.0] * len(self.classes)
        for name in self._split(value):
            if name not in index:
                raise ValueError(f"label {name!r} is not in the training vocabulary ({len(self.classes)} classes)")
            target[index[name]] = 1.0
        return target

    @property
    def unknown_count(self):
        """Transcript characters outside the vocabulary met so far (each mapped to the unknown id)."""
        vocab = getattr(self, "_vocab", None)
        return vocab.unknown_count if vocab is not None else 0

    def _encode_transcript(self, value):
        from mbm_keras.codecs.vocabulary import min_frames

        vocab = self._vocab if getattr(self, "_vocab", None) is not None else self.vocabulary
        self._vocab = vocab
        ids = vocab.encode(value)
        if not ids:
            raise ValueError("empty transcript")
        needed = min_frames(ids)
        if self.max_frames is not None and needed > self.max_frames:
            raise ValueError(f"transcript of {len(ids)} characters needs {needed} CTC frames; the audio gives "
                             f"{self.max_frames} (a longer audio_length, or a smaller time_stride of the encoder)")
        width = self.width
        if len(ids) > width:
            raise ValueError(f"transcript of {len(ids)} characters is longer than transcript_length={width} "
                             f"(data.preprocessing.transcript_length)")
        return ids + [0] * (width - len(ids))

    @property
    def width(self):
        """Transcript targets' width: transcript_length, else the model's frames (no longer transcript can align)."""
        width = self.length or self.max_frames
        if width is None:
            raise ValueError("transcript targets need a width: set data.preprocessing.transcript_length, or the "
                             "model's frames (labels.max_frames)")
        return int(width)

    def encode_column(self, cells):
        """The targets of a column of cells at once: `(array, [(row, message)])`.
        Class names are looked up by pyarrow (no per-row Python for "single");
        rows that fail go through `encode` for its message."""
        import numpy as np
        import pyarrow as pa
        import pyarrow.compute as pc

        n = len(cells)
        if self.label_type == "single":
            targets = np.zeros(n, np.int32)
            try:
                texts = pc.utf8_trim_whitespace(pa.array(cells, type=pa.string()))
            except (pa.ArrowInvalid, pa.ArrowTypeError):  # numbers from JSON Lines / Parquet
                texts = pa.array([None if c is None else str(c).strip() for c in cells], type=pa.string())
            found = pc.index_in(texts, value_set=pa.array([str(c) for c in self.classes], type=pa.string()))
            bad = found.is_null().to_numpy(zero_copy_only=False)
            targets[~bad] = found.drop_null().to_numpy()
        else:  # row by row: multi-hot, a number, or a transcript's padded ids
            if self.label_type == "transcript":
                targets = np.zeros((n, self.width), np.int32)
            else:
                targets = np.zeros((n, 1 if self.label_type == "regression" else len(self.classes)), np.float32)
            bad = np.zeros(n, bool)
            for i, cell in enumerate(cells):
                try:
                    targets[i] = self.encode(cell)
                except ValueError:
                    bad[i] = True
        errors = []
        for i in np.flatnonzero(bad):
            try:
                self.encode(cells[i])
            except ValueError as e:
                errors.append((int(i), str(e)))
        return targets, errors

    def tensor_encoder(self):
        """`encode` for a string tensor inside tf.data (shards): `(cell) ->
        (target, ok)`, ok False for a label outside the vocabulary or not a
        number. Its lookup table is made here, outside any traced function."""
        import tensorflow as tf

        if self.label_type == "transcript":
            return self._tensor_transcript_encoder()
        if self.label_type == "regression":
            def encode(cell):
                ok = tf.strings.regex_full_match(tf.strings.strip(cell), r"[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?")
                number = tf.where(ok, tf.strings.to_number(tf.where(ok, cell, "0"), tf.float32), 0.0)
                return tf.reshape(number, [1]), ok
            return encode
        names = [str(c) for c in self.classes]
        table = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(tf.constant(names), tf.range(len(names), dtype=tf.int64)), -1)
        count = len(names)
        if self.label_type == "single":
            def encode(cell):
                index = table.lookup(tf.strings.strip(cell))
                return tf.cast(tf.maximum(index, 0), tf.int32), index >= 0
            return encode

        def encode(cell):
            parts = tf.strings.strip(tf.strings.split(cell, self.delimiter))
            parts = tf.boolean_mask(parts, parts != "")
            index = table.lookup(parts)
            hot = tf.reduce_sum(tf.one_hot(tf.maximum(index, 0), count), axis=0)
            return tf.minimum(hot, 1.0), tf.reduce_all(index >= 0) & (tf.size(parts) > 0)
        encode.table = table
        return encode

    def _tensor_transcript_encoder(self):
        """The in-graph transcript encoder (shards): NFC, whitespace runs as one
        space, characters looked up (unknown -> 1), padded; ok False for an
        empty or too long transcript or too few frames."""
        import tensorflow as tf
        import tensorflow_text as tf_text

        chars = list(self.classes)
        table = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(tf.constant(chars), tf.range(2, len(chars) + 2, dtype=tf.int64)), 1)
        length, frames = self.width, self.max_frames

        def encode(cell):
            text = tf.strings.strip(tf.strings.regex_replace(tf_text.normalize_utf8(cell, "NFC"), r"\s+", " "))
            ids = tf.cast(table.lookup(tf.strings.unicode_split(text, "UTF-8")), tf.int32)
            n = tf.size(ids)
            repeats = tf.reduce_sum(tf.cast(tf.equal(ids[1:], ids[:-1]), tf.int32))
            ok = (n > 0) & (n <= length)
            if frames is not None:
                ok &= n + repeats <= frames
            padded = tf.pad(ids[:length], [[0, length - tf.minimum(n, length)]])
            return tf.reshape(padded, [length]), ok
        encode.table = table
        return encode

    def get_config(self):
        config = {"label_type": self.label_type, "delimiter": self.delimiter, "classes": self.classes}
        if self.label_type == "transcript":
            config["length"] = self.length
        return config
