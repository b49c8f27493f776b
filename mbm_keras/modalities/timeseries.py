"""Time series: multichannel sensor signals (a car's speed, steering angle,
acceleration), one `.npy` or `.csv` file per row.

A file holds `(steps, channels)` values: a `.npy` array of rank 1 or 2 (float16/32/64
or int8/16/32/64, little-endian, C order), or CSV rows of numbers (one row per
step, one column per channel; a header row is skipped). Each channel is
standardized with the mean and standard deviation of the training files, then
the series is padded with zeros (the training mean) or cut to
`timeseries_length` steps, or linearly resampled to it
(`timeseries_resize="resample"`). The model input is float32
`(timeseries_length, channels)`.
"""

import numpy as np

from mbm_keras.modalities.base import Modality, positive_int, register_modality

RESIZE = ("pad", "resample")
NPY_MAGIC = b"\x93NUMPY"
# .npy element types read in-graph (decode_raw), little-endian or single-byte.
NPY_TYPES = {"<f2": "float16", "<f4": "float32", "<f8": "float64", "|i1": "int8", "<i2": "int16",
             "<i4": "int32", "<i8": "int64", "|u1": "uint8", "<u2": "uint16"}
FORMAT_NOTE = ".npy (rank 1 or 2, little-endian numbers) or CSV (numbers, one row per step)"


@register_modality
class Timeseries(Modality):
    """A `.npy`/`.csv` file per row; the model input is float32 `(timeseries_length, channels)`."""

    name = "timeseries"
    description = ".npy/.csv sensor files -> standardized float32 (timeseries_length, channels)"
    file_based = True
    OPTIONS = {
        "timeseries_length": (128, positive_int, "a positive int (steps)"),
        "timeseries_resize": ("pad", lambda v: v in RESIZE, f"one of {RESIZE}"),
        "max_timeseries_steps": (1_000_000, positive_int, "a positive int"),
    }
    MODEL_OPTIONS = {"timeseries_length": 128, "timeseries_channels": None}
    TINY = {"timeseries_length": 16, "timeseries_channels": 3}
    ZOO = {"timeseries_length": 128, "timeseries_channels": 3}
    EXTENSIONS = (".npy", ".csv")
    STARTER = "conv1d"

    def __init__(self, feature, column, options):
        super().__init__(feature, column, options)
        self.channels, self.mean, self.std = None, None, None

    # --- fitting ---
    def fit(self, manifest, rows):
        """Channel count (the most common among the training files) and per-channel
        mean and standard deviation, read with the same decoder as training."""
        import tensorflow as tf

        from mbm_keras.errors import DataError

        paths = []
        for i in rows:
            try:
                path = self.host_value(manifest, i, allow_outside_root=True)
            except ValueError:
                continue  # make_dataset names the row
            if path is not None:
                paths.append(path)
        ds = tf.data.Dataset.from_tensor_slices(tf.constant(paths, tf.string))

        def moments(path):
            x = tf.cast(self.parse(tf.io.read_file(path)), tf.float64)
            return tf.shape(x)[1], tf.shape(x)[0], tf.reduce_sum(x, 0), tf.reduce_sum(x * x, 0)

        per_channels = {}
        for c, n, s, s2 in ds.map(moments, num_parallel_calls=tf.data.AUTOTUNE).ignore_errors().as_numpy_iterator():
            entry = per_channels.setdefault(int(c), [0, 0, 0.0, 0.0, 0])
            entry[0] += int(n)
            entry[2], entry[3], entry[4] = entry[2] + s, entry[3] + s2, entry[4] + 1
        if not per_channels:
            raise DataError(f"{manifest.path}: no readable {self.name} file in column {self.column!r} to fit on "
                            f"({FORMAT_NOTE})")
        self.channels = max(per_channels, key=lambda c: per_channels[c][4])
        n, _, s, s2, _ = per_channels[self.channels]
        mean = s / n
        std = np.sqrt(np.maximum(s2 / n - mean**2, 0.0))
        self.mean = [float(v) for v in mean]
        self.std = [float(v) if np.float32(v) > 1e-12 else 1.0 for v in std]
        return self

    def get_config(self):
        return {"channels": self.channels, "mean": self.mean, "std": self.std}

    def set_config(self, config):
        self.channels, self.mean, self.std = config["channels"], config["mean"], config["std"]

    # --- model side ---
    def model_options(self):
        return {"timeseries_length": self.options["timeseries_length"], "timeseries_channels": self.channels}

    @classmethod
    def input_spec(cls, options):
        return (options["timeseries_length"], options["timeseries_channels"]), "float32"

    # --- host ---
    def check_file(self, f):
        head = f.read(64)
        if not head:
            return "the file is empty"
        if head.startswith(NPY_MAGIC):
            return None
        try:
            head.decode("utf-8")
        except UnicodeDecodeError as e:
            if e.start < len(head) - 3:  # not a character cut at the end of the 64 bytes
                return f"not a {FORMAT_NOTE} file"
        if b"\0" in head:
            return f"not a {FORMAT_NOTE} file"
        return None

    # --- TensorFlow ---
    def parse(self, contents):
        """File bytes -> float32 `(steps, channels)` as stored (not standardized),
        failing with a message that names the problem."""
        import tensorflow as tf

        values = tf.cond(tf.equal(tf.strings.substr(contents, 0, 6), NPY_MAGIC),
                         lambda: _parse_npy(contents), lambda: _parse_csv(contents))
        from mbm_keras.codecs.asserts import check

        steps = tf.shape(values)[0]
        limit = self.options["max_timeseries_steps"]
        checks = [
            check(steps >= 1, ["the series has no steps"]),
            check(steps <= limit, ["the series has ", steps, f" steps, above max_timeseries_steps={limit:,} "
                                   "(data.preprocessing.max_timeseries_steps)"]),
            check(tf.reduce_all(tf.math.is_finite(values)), ["the series holds NaN or infinite values"]),
        ]
        with tf.control_dependencies(checks):
            return tf.identity(values)

    def decoded_spec(self):
        import tensorflow as tf

        return tf.TensorSpec([self.options["timeseries_length"], self.channels], tf.float32)

    def decode(self, raw, header_checked=False, serving=False):
        """File bytes -> standardized float32 `(timeseries_length, channels)`."""
        import tensorflow as tf

        from mbm_keras.codecs.asserts import check

        values = self.parse(raw)
        channels = tf.shape(values)[1]
        with tf.control_dependencies([check(tf.equal(channels, self.channels), [
                "the series has ", channels, f" channel(s); the model takes {self.channels} (the training files')"])]):
            values = tf.identity(values)
        # A product with the reciprocal, not a division: graph optimizers turn a
        # division by a constant into this product in some graphs and not in
        # others, which would make serving and training differ in the last bit.
        x = (values - tf.constant(self.mean, tf.float32)) * tf.constant(1 / np.array(self.std), tf.float32)
        length = self.options["timeseries_length"]
        if self.options["timeseries_resize"] == "resample":
            steps = tf.shape(x)[0]
            position = tf.cast(tf.range(length), tf.float32) * tf.cast(steps - 1, tf.float32) / max(length - 1, 1)
            lo = tf.cast(tf.floor(position), tf.int32)
            hi = tf.minimum(lo + 1, steps - 1)
            frac = (position - tf.floor(position))[:, None]
            x = tf.gather(x, lo) * (1 - frac) + tf.gather(x, hi) * frac
        else:
            x = tf.pad(x[:length], [[0, tf.maximum(length - tf.shape(x)[0], 0)], [0, 0]])
        x.set_shape([length, self.channels])
        return x

    def sidecar(self):
        return {"length": self.options["timeseries_length"], "channels": self.channels,
                "resize": self.options["timeseries_resize"], "mean": self.mean, "std": self.std,
                "note": f"read {FORMAT_NOTE} as (steps, channels); (value - mean) / std per channel; then pad with "
                        "zeros or keep the first `length` steps ('pad'), or resample linearly to `length` steps"}

    @staticmethod
    def perturb(x, level, rng):
        """Gaussian noise of std `2 * level` (channels are standardized)."""
        return (x + rng.normal(0, 2 * level, x.shape)).astype(x.dtype)


def _parse_npy(contents):
    import tensorflow as tf

    from mbm_keras.codecs.asserts import check

    b = tf.cast(tf.io.decode_raw(tf.strings.substr(contents, 6, 6), tf.uint8, fixed_length=6), tf.int32)
    version_one = tf.equal(b[0], 1)
    header_length = tf.where(version_one, b[2] + 256 * b[3], b[2] + 256 * b[3] + 65536 * b[4] + 16777216 * b[5])
    start = tf.where(version_one, 10, 12)
    header = tf.strings.substr(contents, start, header_length)
    descr = tf.strings.regex_replace(header, r"(?s).*'descr':\s*'([^']*)'.*", r"\1")
    fortran = tf.strings.regex_full_match(header, r"(?s).*'fortran_order':\s*True.*")
    dims_text = tf.strings.split(tf.strings.regex_replace(header, r"(?s).*'shape':\s*\(([^)]*)\).*", r"\1"), ",")
    dims_text = tf.strings.strip(dims_text)
    dims = tf.strings.to_number(tf.boolean_mask(dims_text, dims_text != ""), tf.int32)
    known = tf.reduce_any(tf.equal(descr, list(NPY_TYPES)))
    rank = tf.size(dims)
    checks = [
        check(known, ["a .npy file of element type ", descr, f", not one of {', '.join(NPY_TYPES)}"]),
        check(~fortran, ["a .npy file in Fortran order; save it with np.save(path, np.ascontiguousarray(x))"]),
        check((rank == 1) | (rank == 2), ["a .npy array of rank ", rank, "; a series is (steps,) or (steps, channels)"]),
    ]
    with tf.control_dependencies(checks):
        data = tf.strings.substr(contents, start + header_length, tf.strings.length(contents) - start - header_length)
    branches = [(tf.equal(descr, name), lambda t=t: tf.cast(tf.io.decode_raw(data, getattr(tf, t)), tf.float32))
                for name, t in NPY_TYPES.items()]
    values = tf.case(branches, default=lambda: tf.zeros([0], tf.float32), exclusive=True)
    dims = tf.concat([dims, [1]], 0)[:2]  # (steps,) -> (steps, 1)
    with tf.control_dependencies([check(tf.equal(tf.size(values), dims[0] * dims[1]),
                                        ["a truncated .npy file (", tf.size(values), " values for shape ", dims, ")"])]):
        return tf.reshape(values, dims)


def _parse_csv(contents):
    import tensorflow as tf

    from mbm_keras.codecs.asserts import check
    from mbm_keras.codecs.tabular import NUMBER_PATTERN

    lines = tf.strings.split(tf.strings.regex_replace(contents, "\r", ""), "\n")
    lines = tf.boolean_mask(lines, tf.strings.strip(lines) != "")
    first = tf.strings.strip(tf.strings.split(lines[:1], ",").flat_values)
    header = ~tf.reduce_all(tf.strings.regex_full_match(first, NUMBER_PATTERN))
    lines = lines[tf.cast(header, tf.int32):]
    cells = tf.strings.split(lines, ",")
    widths = cells.row_lengths()
    table = tf.strings.strip(cells.to_tensor(""))
    number = tf.strings.regex_full_match(table, NUMBER_PATTERN)
    checks = [
        check(tf.size(lines) > 0, ["the CSV file holds no rows of numbers"]),
        check(tf.reduce_all(tf.equal(widths, widths[0])), ["CSV rows with different numbers of columns"]),
        check(tf.reduce_all(number), ["a CSV cell is not a number (nan, inf and text are refused)"]),
    ]
    with tf.control_dependencies(checks):
        return tf.strings.to_number(tf.identity(table), tf.float32)
