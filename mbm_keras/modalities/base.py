"""The modality registry and the `Modality` base class.

A *modality* is a kind of input (image, text, audio, tabular, timeseries); a
*feature* is one named model input of a modality, read from one manifest column
("front" and "rear" are two image features). A `Modality` subclass owns
everything about its kind of input, in one file:

- its preprocessing options (`OPTIONS`: data.preprocessing keys with defaults,
  `check_options`) and the model options they imply (`model_options`:
  `build_fusion_model` arguments such as `image_shape`);
- the model input (`input_spec`) and the extra arguments its encoders need
  (`encoder_kwargs`: vocabulary size, sample rate);
- what is fitted on training rows (`fit`, `get_config`, `save_files`);
- reading a manifest cell on the host (`host_value`, `check_file`);
- the one TensorFlow decode function that both `make_dataset` and the raw-input
  SavedModel call (`decode`, then `finish` per example and `finish_batch`);
- its raw serving spec (`raw_spec`), TFLite sidecar fields (`sidecar`),
  robustness perturbation (`perturb`) and a tiny spec for tests and the zoo
  (`TINY`).

An instance is bound to one feature: its name, its manifest column and the
preprocessing options. Nothing outside `mbm_keras/modalities/` branches on
modality names. The model side (`fusion_model.py`) only calls the class
methods that use no TensorFlow (`model_options` defaults, `input_spec`,
`encoder_kwargs`); TensorFlow is imported inside the data-side methods.
"""

import math
import numbers

from mbm_keras.errors import CellError  # noqa: F401  (raised by the modalities; public here since the first release)
from mbm_keras.registry import Registry

MODALITIES = Registry("modality")


def register_modality(cls):
    """Registers a `Modality` subclass under `cls.name`.

    Args:
        cls: the `Modality` subclass; its `name` is the registry key.

    Examples:
        >>> @register_modality
        ... class Timeseries(Modality):
        ...     name = "timeseries"
    """
    MODALITIES.register(cls.name, description=cls.description, order=len(MODALITIES.list()))(cls)
    return cls


def list_modalities():
    """Registered modality names, in registration order.

    Examples:
        >>> list_modalities()
        ['image', 'text', 'audio', 'tabular', 'timeseries']
    """
    return sorted(MODALITIES.list(), key=lambda n: MODALITIES.meta(n)["order"])


def get_modality(name):
    """The `Modality` class registered as `name`; an unknown name lists the valid ones.

    Args:
        name: a name from `list_modalities()`.

    Examples:
        >>> get_modality("image").MODEL_OPTIONS
        {'image_shape': (224, 224, 3)}
    """
    return MODALITIES.get(name)


def positive_int(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= 1


def positive_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0


def shape_of(value, rank):
    """`value` as a tuple of `rank` positive ints, or None."""
    if not isinstance(value, (tuple, list)) or len(value) != rank or not all(positive_int(d) for d in value):
        return None
    return tuple(int(d) for d in value)


class Modality:
    """One kind of input; an instance is one feature of that kind.

    Args:
        feature: the feature's name (the model input's name).
        column: the manifest column(s) it reads (tabular: a dict of lists).
        options: the preprocessing options (all modalities'; this one reads its own).

    Class attributes a subclass sets:
        name: the registry name.
        description: one line for `mbm-keras zoo`.
        file_based: the cells are paths of files (resolved, checked, read).
        OPTIONS: `{option: (default, check, expected)}`, this modality's
            data.preprocessing keys; `check(value)` is True when valid.
        MODEL_OPTIONS: `{build_fusion_model argument: default}`.
        TINY: tiny model options for tests and the zoo.
        ZOO: the model options `mbm-keras zoo` counts parameters at.
        EXTENSIONS: file name endings (".png") by which `mbm-keras init`
            recognises a column of this modality's files.
        STARTER: the encoder `mbm-keras init` writes into a first config
            (default: the first registered one).

    Examples:
        >>> @register_modality
        ... class Depth(Modality):
        ...     name = "depth"
        ...     file_based = True
        ...     MODEL_OPTIONS = {"depth_shape": (64, 64, 1)}
        ...     @classmethod
        ...     def input_spec(cls, options):
        ...         return options["depth_shape"], "float32"
    """

    name = None
    description = ""
    file_based = False
    # build_fusion_model's `weights=` goes to this modality's encoders (pretrained backbones).
    WEIGHTS_ARGUMENT = False
    OPTIONS = {}
    MODEL_OPTIONS = {}
    TINY = {}
    ZOO = {}
    EXTENSIONS = ()
    STARTER = None

    def __init__(self, feature, column, options):
        self.feature = feature
        self.column = self.normalize_column(column, feature)
        self.options = {k: options.get(k, default) for k, (default, _, _) in self.OPTIONS.items()}

    # --- columns and options ---
    @classmethod
    def normalize_column(cls, column, feature):
        if not isinstance(column, str) or not column:
            raise ValueError(f"columns[{feature!r}] must be a column name. Received: {column!r}")
        return column

    def columns(self):
        """The manifest columns this feature reads."""
        return [self.column]

    @classmethod
    def check_options(cls, **options):
        """Raises ValueError naming the first of this modality's options outside its range."""
        for key, value in options.items():
            _, ok, expected = cls.OPTIONS[key]
            if not ok(value):
                raise ValueError(f"{key} must be {expected}. Received: {key}={value!r}")

    @classmethod
    def clean_options(cls, options):
        """JSON-safe copies of the option values (tuples as lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in options.items()}

    # --- fitting (host) ---
    def fit(self, manifest, rows):
        """Fits what this feature learns from the training rows (vocabulary, statistics)."""
        return self

    def adopt(self, other):
        """Takes the fitted state of `other` (a feature of the same modality whose
        encoder this one shares, so both see the same vocabulary or statistics)."""
        self.set_config(other.get_config())

    def get_config(self):
        """The fitted state, JSON-serializable."""
        return {}

    def set_config(self, config):
        """Restores `get_config()`'s state."""

    def save_files(self, folder):
        """Writes files beside preprocessor.json (a vocabulary)."""

    def load_files(self, folder, config):
        """Reads what `save_files` wrote."""

    # --- model side (no TensorFlow) ---
    def model_options(self):
        """The `build_fusion_model` options this fitted preprocessing implies."""
        return {}

    # The smallest valid value of each model option (default 1); see check_model_options.
    MODEL_MINIMUMS = {}

    @classmethod
    def check_model_options(cls, options):
        """Checked model options, or ValueError naming the bad one. The default:
        every model option is an int >= its `MODEL_MINIMUMS` entry (1 if none)."""
        for key in cls.MODEL_OPTIONS:
            minimum = cls.MODEL_MINIMUMS.get(key, 1)
            if not positive_int(options[key]) or options[key] < minimum:
                raise ValueError(f"{key} must be an int >= {minimum}. Received: {key}={options[key]!r}")
        return {k: int(options[k]) for k in cls.MODEL_OPTIONS}

    @classmethod
    def input_spec(cls, options):
        """`(shape, dtype)` of one example of the model input, from the model options."""
        raise NotImplementedError

    @classmethod
    def encoder_kwargs(cls, options):
        """Extra keyword arguments this modality's encoder builders take (vocab_size, sample_rate)."""
        return {}

    # --- host side of make_dataset ---
    def host_value(self, manifest, row, allow_outside_root):
        """The value of this feature for manifest row `row`, as the pipeline
        carries it (a path, a text, cells), or None when the cell is empty;
        raises `CellError` for an unusable cell."""
        cell = manifest.rows[row][self.column]
        if cell is None:
            return None
        if not self.file_based:
            return str(cell)
        import os

        from mbm_keras.codecs.paths import resolve_path
        from mbm_keras.errors import DataError

        try:
            path = resolve_path(manifest, row, self.column, cell, allow_outside_root)
        except DataError as e:
            raise CellError(self.column, e.reason, file=str(cell)) from None
        if not os.path.isfile(path):
            raise CellError(self.column, "file not found", file=path)
        return path

    def host_values(self, manifest, allow_outside_root):
        """`host_value` for every row at once: `(values, present, errors)`,
        values a numpy object array (`empty_value()` where absent or
        unusable), present a bool array, errors `[(row, CellError)]`.

        Vectorized for text cells and file paths: the paths are joined to the
        manifest's folder and checked lexically (a `..` or an absolute path is
        resolved, and refused outside the folder; each folder's symlinks too),
        without touching the files, so set-up time does not grow with the
        files. A missing or corrupt file is found when it is read. A
        subclass that overrides `host_value` alone is called row by row."""
        import numpy as np

        if type(self).host_value is not Modality.host_value:
            return _row_by_row(self, manifest, allow_outside_root)
        cells = manifest.column(self.column)
        present = cells != None  # noqa: E711 (elementwise on an object array)
        values = np.full(len(cells), self.empty_value(), dtype=object)
        if not self.file_based:
            values[present] = [c if isinstance(c, str) else str(c) for c in cells[present]]
            return values, present, []
        from mbm_keras.codecs.paths import resolve_paths

        paths, errors = resolve_paths(manifest, self.column, cells, present, allow_outside_root)
        for row, _ in errors:
            present[row] = False
        values[present] = paths[present]
        return values, present, errors  # relative paths stay relative: the pipeline joins them in-graph

    @classmethod
    def raw_example(cls, value, feature, shape, columns=None):
        """One example's raw serving value from what a user gives `predict`:
        file modalities read the file at the path `value`, others take the
        text; None gives the empty value (an absent input)."""
        if value is None:
            return b""
        if cls.file_based:
            import os

            if not os.path.isfile(value):
                which = "" if feature == cls.name else f" (feature {feature!r})"
                raise FileNotFoundError(f"{cls.name.capitalize()} file not found: {value}{which}")
            with open(value, "rb") as f:
                return f.read()
        return str(value).encode("utf-8")

    def empty_value(self):
        """The pipeline's value for an absent cell."""
        return ""

    def check_file(self, f):
        """None if an open file looks decodable from its header, else the reason."""
        return None

    # --- TensorFlow: the one decode path of training and serving ---
    def raw_spec(self):
        """`tf.TensorSpec` of one example's raw serving input (a string by default)."""
        import tensorflow as tf

        return tf.TensorSpec([], tf.string)

    def decoded_spec(self):
        """`tf.TensorSpec` of `decode`'s output for one example."""
        raise NotImplementedError

    def read(self, value):
        """The pipeline's carried value -> the raw serving value (file bytes for file modalities)."""
        import tensorflow as tf

        return tf.io.read_file(value) if self.file_based else value

    def present(self, raw):
        """True where a raw serving value is given (an empty string marks it absent)."""
        import tensorflow as tf

        return tf.strings.length(raw) > 0

    def decode(self, raw, header_checked=False, serving=False):
        """One example's raw value -> tensor (deterministic, cacheable)."""
        return raw

    def empty(self):
        """`decode`'s output for an absent example."""
        import tensorflow as tf

        spec = self.decoded_spec()
        return tf.zeros(spec.shape, spec.dtype) if spec.dtype != tf.string else tf.constant("")

    def finish(self, x, seed=None, augment=None):
        """The per-example part after decoding: fixed length, and in training
        (`seed` given) random crops and `augment`."""
        return x

    def finish_batch(self, x):
        """The batched part (text tokenization); the model input."""
        return x

    def serve(self, raw):
        """A batch of raw serving values -> (model input batch, present (batch,))."""
        import tensorflow as tf

        present = self.present(raw)

        def one(args):
            value, here = args
            return self.finish(tf.cond(here, lambda: self.decode(value, serving=True), self.empty))

        spec = self.decoded_spec()
        decoded = tf.map_fn(one, (raw, present), fn_output_signature=tf.TensorSpec(
            self.finished_shape(), spec.dtype))
        return self.finish_batch(decoded), present

    def finished_shape(self):
        return self.decoded_spec().shape

    def serving_checks(self, raw):
        """Assertions on a raw batch made before anything reads it (cell counts)."""
        return []

    # --- deployment and evaluation ---
    def sidecar(self):
        """What an app must do to this feature's raw input before the TFLite model (model.json)."""
        return {}

    @staticmethod
    def perturb(x, level, rng):
        """A copy of a batch of model inputs with noise of strength `level` (0..1), for `robustness_report`."""
        raise NotImplementedError

    def perturb_options(self):
        """Keyword arguments of `perturb` that depend on this feature (its
        tokenizer's special ids for text); none by default."""
        return {}


def _row_by_row(feature, manifest, allow_outside_root):
    """`host_values` from a subclass's own `host_value`, one row at a time."""
    import numpy as np

    n = len(manifest)
    values = np.empty(n, dtype=object)
    present = np.ones(n, dtype=bool)
    errors = []
    for i in range(n):
        try:
            value = feature.host_value(manifest, i, allow_outside_root)
        except CellError as e:
            errors.append((i, e))
            value = None
        if value is None:
            present[i] = False
            value = feature.empty_value()
        values[i] = value
    return values, present, errors
