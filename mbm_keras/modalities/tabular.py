"""Tabular: numeric cells standardized with training statistics, categorical
cells one-hot over the training categories (+ unknown)."""

from mbm_keras.modalities.base import CellError, Modality, positive_int, register_modality


@register_modality
class Tabular(Modality):
    """Several manifest columns per row; the model input is float32 `(tabular_dim,)`.

    The column of a tabular feature is a list of numeric columns or
    `{"numeric": [...], "categorical": [...]}`. Raw serving input: the cells as
    strings, numeric columns first.
    """

    name = "tabular"
    description = "numeric + categorical cells -> float32 (tabular_dim,): standardized, one-hot"
    MODEL_OPTIONS = {"tabular_dim": None}
    TINY = {"tabular_dim": 5}
    ZOO = {"tabular_dim": 16}
    STARTER = "mlp"

    def __init__(self, feature, column, options):
        super().__init__(feature, column, options)
        self.encoder = None
        self._tables = None

    @classmethod
    def normalize_column(cls, column, feature):
        where = f"columns[{feature!r}]"
        if isinstance(column, (list, tuple)):
            column = {"numeric": list(column), "categorical": []}
        elif isinstance(column, dict):
            extra = set(column) - {"numeric", "categorical"}
            if extra:
                raise ValueError(f"{where} takes 'numeric' and 'categorical'. Received keys: {sorted(extra)}")
            column = {"numeric": list(column.get("numeric", [])), "categorical": list(column.get("categorical", []))}
        else:
            raise ValueError(f"{where} must be a list of numeric columns or a dict. Received: {column!r}")
        if not column["numeric"] and not column["categorical"]:
            raise ValueError(f"{where} names no numeric or categorical column")
        return column

    def columns(self):
        return self.column["numeric"] + self.column["categorical"]

    def fit(self, manifest, rows):
        from mbm_keras.codecs.tabular import TabularEncoder

        self.encoder = TabularEncoder(self.column["numeric"], self.column["categorical"]).fit(manifest, rows)
        return self

    def get_config(self):
        return self.encoder.get_config()

    def set_config(self, config):
        from mbm_keras.codecs.tabular import TabularEncoder

        self.encoder = TabularEncoder.from_config(config)

    def model_options(self):
        return {"tabular_dim": self.encoder.dim}

    @classmethod
    def check_model_options(cls, options):
        dim = options["tabular_dim"]
        if dim is None:
            raise ValueError("tabular= needs tabular_dim (the number of feature columns). Received: tabular_dim=None")
        if not positive_int(dim):
            raise ValueError(f"tabular_dim must be an int >= 1. Received: tabular_dim={dim!r}")
        return {"tabular_dim": int(dim)}

    @classmethod
    def input_spec(cls, options):
        return (options["tabular_dim"],), "float32"

    # --- host ---
    def host_value(self, manifest, row, allow_outside_root):
        """The cells as strings (checked: a bad number raises naming its column); None when all are empty."""
        cells = manifest.rows[row]
        self.encoder.encode(cells)  # raises CellError naming the column
        values = ["" if cells[c] is None else str(cells[c]) for c in self.columns()]
        return values if any(values) else None

    def host_values(self, manifest, allow_outside_root):
        """All rows' cells as strings `(rows, columns)`, checked by column
        (pyarrow's regex and numpy's parsing); only rows that look wrong go
        through `encode`, which names the column and value."""
        import numpy as np
        import pyarrow as pa
        import pyarrow.compute as pc

        from mbm_keras.codecs.tabular import FLOAT32_MAX, NUMBER_PATTERN

        names = self.columns()
        cells = np.stack([manifest.column(c) for c in names], axis=1)
        empty = cells == None  # noqa: E711 (elementwise on an object array)
        strings = cells.copy()
        strings[empty] = ""
        other = np.frompyfunc(lambda c: not isinstance(c, str), 1, 1)(strings).astype(bool)
        suspect = other.any(axis=1)  # numbers and booleans from JSON Lines / Parquet: checked one by one
        if other.any():
            strings[other] = [str(c) for c in strings[other]]
        for j, column in enumerate(self.encoder.numeric):
            texts = pa.array(strings[:, j], type=pa.string())
            number = pc.match_substring_regex(texts, rf"^\s*({NUMBER_PATTERN})\s*$").to_numpy(zero_copy_only=False)
            suspect |= ~number & ~empty[:, j]
            parsed = np.zeros(len(texts))
            parsed[number] = np.asarray(strings[number, j], dtype=np.float64)
            mean, std = self.encoder.stats[column]
            with np.errstate(over="ignore", invalid="ignore"):
                suspect |= ~(np.abs(parsed) <= FLOAT32_MAX) | ~(np.abs((parsed - mean) / std) <= FLOAT32_MAX)
        errors = []
        for row in np.flatnonzero(suspect):
            try:
                self.encoder.encode(dict(zip(names, cells[row])))
            except CellError as e:
                errors.append((int(row), e))
        present = ~empty.all(axis=1)
        for row, _ in errors:
            present[row] = False
        return strings, present, errors

    @classmethod
    def raw_example(cls, value, feature, shape, columns=None):
        """The cells as strings (numeric columns first); None: all empty."""
        count = int(shape[-1])
        if isinstance(value, str):  # "42,paris", as the command line gives it
            value = value.split(",")
        cells = ["" if v is None else str(v) for v in (value or [])]
        if value is not None and len(cells) != count:
            which = f" ({', '.join(columns)})" if columns else ""
            raise ValueError(f"The model takes {count} tabular cell(s){which}, numeric columns first; "
                             f"received {len(cells)}")
        return cells or [""] * count

    def empty_value(self):
        return [""] * len(self.columns())

    # --- TensorFlow ---
    def raw_spec(self):
        import tensorflow as tf

        return tf.TensorSpec([len(self.columns())], tf.string)

    def decoded_spec(self):
        import tensorflow as tf

        return tf.TensorSpec([self.encoder.dim], tf.float32)

    def present(self, raw):
        import tensorflow as tf

        return tf.reduce_any(tf.not_equal(raw, ""), axis=-1)

    def trackables(self):
        """The categorical lookup tables, made once outside any traced function
        (a SavedModel tracks them; see `export_serving_model`)."""
        if self._tables is None:
            import tensorflow as tf

            self._tables = []
            for column in self.encoder.categorical:
                cats = self.encoder.categories[column]
                self._tables.append(tf.lookup.StaticHashTable(
                    tf.lookup.KeyValueTensorInitializer(tf.constant(cats, tf.string),
                                                        tf.range(len(cats), dtype=tf.int64)),
                    default_value=len(cats)))
        return self._tables

    def scale(self, cells):
        """`(batch, columns)` string cells -> `(batch, tabular_dim)` float32: the
        one implementation of tabular preprocessing, for training and serving.
        A non-number or a value that is not finite in float32 (before or after
        scaling) fails naming the column; an empty numeric cell is the training
        mean, an empty or unseen category the unknown slot."""
        import tensorflow as tf

        from mbm_keras.codecs.asserts import check
        from mbm_keras.codecs.tabular import FLOAT32_MAX, NUMBER_PATTERN

        enc = self.encoder
        n_num = len(enc.numeric)
        parts, checks = [], []
        if n_num:
            num = tf.strings.strip(cells[:, :n_num])
            empty = tf.equal(num, "")
            number = tf.strings.regex_full_match(num, NUMBER_PATTERN)
            values = tf.strings.to_number(tf.where(number, num, "0"), tf.float32)
            mean = tf.constant([enc.stats[c][0] for c in enc.numeric], tf.float32)
            # A product with the reciprocal, not a division: graph optimizers rewrite
            # a division by a constant in some graphs only, which would make
            # serving and training differ in the last bit.
            inverse_std = tf.constant([1 / enc.stats[c][1] for c in enc.numeric], tf.float32)
            scaled = tf.where(empty, 0.0, (values - mean) * inverse_std)
            for j, column in enumerate(enc.numeric):
                checks.append(check(tf.reduce_all(empty[:, j] | number[:, j]),
                                    [f"tabular column {column!r}: a cell is not a number"]))
                # to_number gives inf beyond float32; scaling can overflow too.
                finite = tf.math.is_finite(values[:, j]) & (tf.abs(scaled[:, j]) <= FLOAT32_MAX)
                checks.append(check(tf.reduce_all(finite),
                                    [f"tabular column {column!r}: a cell is not a finite float32 number"]))
            parts.append(scaled)
        tables = self.trackables()
        for j, column in enumerate(enc.categorical):
            parts.append(tf.one_hot(tables[j].lookup(cells[:, n_num + j]), len(enc.categories[column]) + 1,
                                    dtype=tf.float32))
        with tf.control_dependencies(checks):
            return tf.identity(tf.concat(parts, axis=-1))

    def decode(self, raw, header_checked=False, serving=False):
        return self.scale(raw[None])[0]

    def serve(self, raw):
        return self.scale(raw), self.present(raw)

    def serving_checks(self, raw):
        import tensorflow as tf

        from mbm_keras.codecs.asserts import check

        names = self.columns()
        return [check(tf.equal(tf.shape(raw)[-1], len(names)),
                      [f"input {self.feature!r} must hold {len(names)} cells per example ({', '.join(names)})"])]

    def sidecar(self):
        enc = self.encoder
        return {
            "numeric": [{"column": c, "mean": enc.stats[c][0], "std": enc.stats[c][1]} for c in enc.numeric],
            "categorical": [{"column": c, "categories": enc.categories[c], "unknown_slot": len(enc.categories[c])}
                            for c in enc.categorical],
            "note": "(value - mean) / std, then one-hot per categorical column (unknown/empty -> last slot)",
        }

    @staticmethod
    def perturb(x, level, rng):
        """Gaussian noise of std `2 * level` (features are standardized)."""
        return (x + rng.normal(0, 2 * level, x.shape)).astype(x.dtype)


__all__ = ["CellError", "Tabular"]
