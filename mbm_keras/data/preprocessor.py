"""The preprocessing state fitted on the training manifest and saved with the model:
label vocabulary, text tokenizer, tabular statistics, image and audio settings."""

import json
import os

from mbm_keras.data.labels import LabelEncoder
from mbm_keras.export import write_json
from mbm_keras.data.manifest import DataError, read_manifest
from mbm_keras.data.tabular import TabularEncoder
from mbm_keras.data.text import TextTokenizer

FEATURE_MODALITIES = ("image", "text", "audio", "tabular")
CONFIG_FILE = "preprocessor.json"
# Pillow's decompression-bomb limit (Image.MAX_IMAGE_PIXELS): far above any
# camera photo, far below the 16000x16000 PNGs that take gigabytes to decode.
MAX_IMAGE_PIXELS = 89_478_485
MAX_AUDIO_SECONDS = 600.0


def normalize_columns(columns):
    """Checks a `columns=` mapping; tabular becomes {"numeric": [...], "categorical": [...]}."""
    if not isinstance(columns, dict):
        raise ValueError(f"columns must be a dict such as {{'image': 'path', 'label': 'label'}}. Received: {columns!r}")
    unknown = set(columns) - set(FEATURE_MODALITIES) - {"label"}
    if unknown:
        raise ValueError(
            f"Unknown key(s) in columns: {sorted(unknown)}. Valid keys: {', '.join(FEATURE_MODALITIES)}, label"
        )
    if not any(m in columns for m in FEATURE_MODALITIES):
        raise ValueError(f"columns maps no modality. Received: columns={columns!r}")
    out = dict(columns)
    tab = out.get("tabular")
    if tab is not None:
        if isinstance(tab, (list, tuple)):
            tab = {"numeric": list(tab), "categorical": []}
        elif isinstance(tab, dict):
            extra = set(tab) - {"numeric", "categorical"}
            if extra:
                raise ValueError(f"columns['tabular'] takes 'numeric' and 'categorical'. Received keys: {sorted(extra)}")
            tab = {"numeric": list(tab.get("numeric", [])), "categorical": list(tab.get("categorical", []))}
        else:
            raise ValueError(f"columns['tabular'] must be a list of numeric columns or a dict. Received: {tab!r}")
        out["tabular"] = tab
    return out


def column_names(columns):
    names = [columns[m] for m in ("image", "text", "audio", "label") if m in columns]
    if "tabular" in columns:
        names += columns["tabular"]["numeric"] + columns["tabular"]["categorical"]
    return names


class Preprocessor:
    """Everything that turns a manifest row into model inputs, fitted on training data.

    Args:
        columns: maps "image", "text", "audio", "label" to manifest columns and
            "tabular" to a list of numeric columns or
            `{"numeric": [...], "categorical": [...]}`.
        image_size: `(height, width)` of model images.
        resize: "stretch", "crop" (keep aspect, centre crop) or "pad".
        text_tokenizer: "word", "character" or "wordpiece".
        text_length: token ids per text.
        max_tokens: text vocabulary cap.
        sample_rate: audio rate of the model; files are resampled to it.
        audio_length: samples per clip.
        label_type: "single", "multi" or "regression".
        label_delimiter: separator of multi-label cells.
        max_image_pixels: images with more pixels (width x height, read from
            the file header before decoding) are refused, naming the file;
            default Pillow's decompression-bomb limit, 89,478,485.
        max_audio_seconds: audio longer than this (decoded) is refused.

    Example:
        >>> pre = Preprocessor({"image": "path", "text": "caption", "label": "label"},
        ...                    image_size=(64, 64)).fit("train.csv")
        >>> model = build_fusion_model(image="small_cnn", text="gru", **pre.model_kwargs())
    """

    def __init__(
        self,
        columns,
        *,
        image_size=(224, 224),
        resize="stretch",
        text_tokenizer="word",
        text_length=64,
        max_tokens=20000,
        sample_rate=16000,
        audio_length=16000,
        label_type="single",
        label_delimiter="|",
        max_image_pixels=MAX_IMAGE_PIXELS,
        max_audio_seconds=MAX_AUDIO_SECONDS,
    ):
        self.check_options(image_size=image_size, resize=resize, text_tokenizer=text_tokenizer, text_length=text_length,
                           max_tokens=max_tokens, sample_rate=sample_rate, audio_length=audio_length,
                           label_type=label_type, max_image_pixels=max_image_pixels,
                           max_audio_seconds=max_audio_seconds)
        self.columns = normalize_columns(columns)
        self.options = dict(
            image_size=tuple(int(v) for v in image_size),
            resize=resize,
            text_tokenizer=text_tokenizer,
            text_length=text_length,
            max_tokens=max_tokens,
            sample_rate=int(sample_rate),
            audio_length=int(audio_length),
            label_type=label_type,
            label_delimiter=label_delimiter,
            max_image_pixels=int(max_image_pixels),
            max_audio_seconds=float(max_audio_seconds),
        )
        self.labels = LabelEncoder(label_type, label_delimiter) if "label" in self.columns else None
        self.tokenizer = TextTokenizer(text_tokenizer, text_length, max_tokens) if "text" in self.columns else None
        tab = self.columns.get("tabular")
        self.tabular = TabularEncoder(tab["numeric"], tab["categorical"]) if tab else None
        self.fitted = False

    @staticmethod
    def check_options(**options):
        """Raises ValueError naming the first option outside its valid range
        ("text_length must be a positive int. Received: text_length=0")."""
        import math

        from mbm_keras.data.image import RESIZE_MODES
        from mbm_keras.data.labels import LABEL_TYPES
        from mbm_keras.data.text import TOKENIZER_KINDS as TOKENIZERS

        def positive_int(v):
            return isinstance(v, int) and not isinstance(v, bool) and v >= 1

        def positive_number(v):
            return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0

        checks = {
            "image_size": (lambda v: isinstance(v, (list, tuple)) and len(v) == 2 and all(positive_int(d) for d in v),
                           "a pair of positive ints [height, width]"),
            "resize": (lambda v: v in RESIZE_MODES, f"one of {RESIZE_MODES}"),
            "text_tokenizer": (lambda v: v in TOKENIZERS, f"one of {TOKENIZERS}"),
            "text_length": (positive_int, "a positive int"),
            "max_tokens": (lambda v: positive_int(v) and v >= 3, "an int >= 3 (padding, unknown and one word)"),
            "sample_rate": (positive_int, "a positive int (Hz)"),
            "audio_length": (positive_int, "a positive int (samples)"),
            "label_type": (lambda v: v in LABEL_TYPES, f"one of {LABEL_TYPES}"),
            "label_delimiter": (lambda v: isinstance(v, str) and v != "", "a non-empty string"),
            "max_image_pixels": (positive_int, "a positive int"),
            "max_audio_seconds": (positive_number, "a positive finite number"),
        }
        for key, value in options.items():
            ok, expected = checks[key]
            if not ok(value):
                raise ValueError(f"{key} must be {expected}. Received: {key}={value!r}")

    @property
    def modalities(self):
        return [m for m in FEATURE_MODALITIES if m in self.columns]

    def fit(self, manifest):
        """Fits the label vocabulary, tokenizer and tabular statistics on the training manifest."""
        manifest = read_manifest(manifest)
        manifest.check_columns(column_names(self.columns))
        if self.labels is not None:
            self.labels.fit(manifest.rows[i][self.columns["label"]] for i in range(len(manifest)))
        if self.tokenizer is not None:
            self.tokenizer.fit([str(r[self.columns["text"]]) for r in manifest.rows if r[self.columns["text"]] is not None])
        if self.tabular is not None:
            self.tabular.fit(manifest)
        self.fitted = True
        return self

    def model_kwargs(self):
        """The `build_fusion_model` arguments that must agree with this preprocessing."""
        self._check_fitted()
        kwargs = {}
        if "image" in self.columns:
            kwargs["image_shape"] = (*self.options["image_size"], 3)
        if self.tokenizer is not None:
            kwargs.update(text_length=self.tokenizer.length, vocab_size=self.tokenizer.vocab_size)
        if "audio" in self.columns:
            kwargs.update(audio_length=self.options["audio_length"], sample_rate=self.options["sample_rate"])
        if self.tabular is not None:
            kwargs["tabular_dim"] = self.tabular.dim
        if self.labels is not None:
            kwargs.update(num_classes=self.labels.num_outputs, head=self.labels.head)
        return kwargs

    def _check_fitted(self):
        if not self.fitted:
            raise DataError("The preprocessor is not fitted: call fit(training_manifest) (or fit_preprocessor) first")

    # --- saving ---
    def save(self, folder):
        """Writes `preprocessor.json` (+ `vocabulary.txt`) into `folder`."""
        self._check_fitted()
        os.makedirs(folder, exist_ok=True)
        config = {
            "columns": self.columns,
            "options": {**self.options, "image_size": list(self.options["image_size"])},
            "labels": self.labels.get_config() if self.labels else None,
            "tabular": self.tabular.get_config() if self.tabular else None,
        }
        if self.tokenizer is not None:
            self.tokenizer.save(folder)
        write_json(os.path.join(folder, CONFIG_FILE), config)

    @classmethod
    def load(cls, folder):
        path = os.path.join(folder, CONFIG_FILE)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"No {CONFIG_FILE} in {os.path.abspath(folder)}")
        with open(path, encoding="utf-8") as f:
            config = json.load(f)
        pre = cls(config["columns"], **config["options"])
        if config["labels"]:
            pre.labels = LabelEncoder(**config["labels"])
        if pre.tokenizer is not None:
            pre.tokenizer = TextTokenizer.load(folder, pre.tokenizer.get_config())
        if config["tabular"]:
            pre.tabular = TabularEncoder.from_config(config["tabular"])
        pre.fitted = True
        return pre


def fit_preprocessor(manifest, columns, **options):
    """`Preprocessor(columns, **options).fit(manifest)` — fit on the training manifest only.

    Args:
        manifest: the training manifest (path or `Manifest`); label vocabulary,
            tokenizer vocabulary and tabular statistics come from it alone.
        columns: modality -> column name, e.g. `{"image": "path", "text":
            "caption", "label": "label"}`; tabular takes `{"numeric": [...],
            "categorical": [...]}`.
        **options: the `Preprocessor` options (image_size, text_tokenizer,
            text_length, max_tokens, sample_rate, audio_length, ...).

    Returns:
        A fitted `Preprocessor`; `pre.model_kwargs()` gives the matching
        `build_fusion_model` arguments.

    Example:
        >>> pre = fit_preprocessor("train.csv", {"text": "caption", "label": "label"}, text_length=32)
    """
    return Preprocessor(columns, **options).fit(manifest)
