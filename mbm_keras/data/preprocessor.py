"""The preprocessing state fitted on the training manifest and saved with the model:
the label vocabulary and each feature's fitted part (tokenizer, statistics), with
the preprocessing options."""

import copy
import json
import os

from mbm_keras.data.labels import LabelEncoder
from mbm_keras.data.manifest import DataError, Manifest, read_manifest
from mbm_keras.io import write_json
from mbm_keras.modalities import get_modality, list_modalities

CONFIG_FILE = "preprocessor.json"
VERSION = 2


def _options():
    """`{option: (default, check, expected)}` of every registered modality, plus the label options."""
    from mbm_keras.data.labels import LABEL_TYPES

    out = {}
    for m in list_modalities():
        out.update(get_modality(m).OPTIONS)
    out["label_type"] = ("single", lambda v: v in LABEL_TYPES, f"one of {LABEL_TYPES}")
    out["label_delimiter"] = ("|", lambda v: isinstance(v, str) and v != "", "a non-empty string")
    # label_type transcript: the targets' width in characters (None: the longest training transcript).
    out["transcript_length"] = (None, lambda v: v is None or (isinstance(v, int) and not isinstance(v, bool) and v > 0),
                                "a positive int")
    return out


def option_names():
    """The valid `data.preprocessing` keys (every registered modality's options and the label options)."""
    return list(_options())


def normalize_columns(columns, modalities=None):
    """Checks a `columns=` mapping (feature -> column, plus "label") and the
    features' modalities; returns `(columns, {feature: modality})`, each column
    in its modality's normal form (tabular: `{"numeric": [...], "categorical": [...]}`)."""
    if not isinstance(columns, dict):
        raise ValueError(f"columns must be a dict such as {{'image': 'path', 'label': 'label'}}. Received: {columns!r}")
    modalities = dict(modalities or {})
    registered = list_modalities()
    unknown = set(modalities) - set(columns)
    if unknown:
        raise ValueError(f"modalities names feature(s) {sorted(unknown)} that columns does not map to a column")
    unknown = [name for name in columns if name != "label" and name not in modalities and name not in registered]
    if unknown:
        raise ValueError(
            f"Unknown key(s) in columns: {unknown}. Valid keys: {', '.join(registered)}, label; a feature of another "
            f"name needs its modality: modalities={{{unknown[0]!r}: 'image'}} (Python) or model.features (run config)")
    features = {}
    for name in columns:
        if name != "label":
            features[name] = modalities.get(name, name)
            get_modality(features[name])  # an unknown modality lists the valid ones
    if not features:
        raise ValueError(f"columns maps no modality. Received: columns={columns!r}")
    out = {name: (column if name == "label" else get_modality(features[name]).normalize_column(column, name))
           for name, column in columns.items()}
    return out, features


def column_names(columns, features=None):
    """Every manifest column a preprocessor reads."""
    if features is None:
        columns, features = normalize_columns(columns)
    names = []
    for name, column in columns.items():
        if name == "label":
            names.append(column)
        else:
            names += get_modality(features[name])(name, column, {}).columns()
    return names


class Preprocessor:
    """Everything that turns a manifest row into model inputs, fitted on training data.

    An input is a named *feature* of a registered modality, read from a
    manifest column; every modality's preprocessing lives in
    `mbm_keras/modalities/<modality>.py`, and both `make_dataset` and the
    exported SavedModel call it.

    Args:
        columns: maps each feature to its manifest column (a tabular feature:
            a list of numeric columns or `{"numeric": [...], "categorical":
            [...]}`), and "label" to the label column. A feature named after a
            modality ("image", "text", ...) is of that modality.
        modalities: `{feature: modality}` for the other features, e.g.
            `{"front": "image", "rear": "image", "title": "text"}`.
        share: `{feature: other feature}` whose encoder it shares (as in
            `build_fusion_model(share_encoders=...)`): the two are fitted
            together (one vocabulary, one set of statistics).
        **options: preprocessing options, shared by the features of a
            modality: image_size, resize, max_image_pixels (image);
            text_tokenizer, text_length, max_tokens (text); sample_rate,
            audio_length, max_audio_seconds (audio); timeseries_length,
            timeseries_resize, max_timeseries_steps (timeseries); label_type
            ("single", "multi", "regression") and label_delimiter. Unknown
            names raise, listing the valid ones.

    Examples:
        >>> pre = Preprocessor({"image": "path", "text": "caption", "label": "label"},
        ...                    image_size=(64, 64)).fit("train.csv")
        >>> model = build_fusion_model(image="small_cnn", text="gru", **pre.model_kwargs())
        >>> cars = Preprocessor({"front": "front.png", "rear": "rear.png", "speed": "log.npy", "label": "label"},
        ...                     modalities={"front": "image", "rear": "image", "speed": "timeseries"})
    """

    def __init__(self, columns, modalities=None, share=None, **options):
        valid = _options()
        unknown = sorted(set(options) - set(valid))
        if unknown:
            raise TypeError(f"Unknown preprocessing option(s) {unknown}. Valid options: {', '.join(valid)}")
        self.check_options(**options)
        self.columns, self.feature_modalities = normalize_columns(columns, modalities)
        self.options = {k: options.get(k, default) for k, (default, _, _) in valid.items()}
        self.features = {name: get_modality(m)(name, self.columns[name], self.options)
                         for name, m in self.feature_modalities.items()}
        for feature in self.features.values():  # normalized values (tuples, ints), as the modality keeps them
            self.options.update(feature.options)
        self.share = dict(share or {})
        for user, owner in self.share.items():
            if user not in self.features or owner not in self.features:
                raise ValueError(f"share names a feature that columns does not map: {user!r} -> {owner!r}; "
                                 f"features: {', '.join(self.features)}")
            if self.feature_modalities[user] != self.feature_modalities[owner]:
                raise ValueError(f"Features {user!r} and {owner!r} share an encoder, so they need the same modality "
                                 f"({self.feature_modalities[user]} != {self.feature_modalities[owner]})")
        self.labels = (LabelEncoder(self.options["label_type"], self.options["label_delimiter"],
                                    length=self.options["transcript_length"])
                       if "label" in self.columns else None)
        self.fitted = False

    @staticmethod
    def check_options(**options):
        """Raises ValueError naming the first option outside its valid range
        ("text_length must be a positive int. Received: text_length=0")."""
        valid = _options()
        for key, value in options.items():
            _, ok, expected = valid[key]
            if not ok(value):
                raise ValueError(f"{key} must be {expected}. Received: {key}={value!r}")

    @property
    def modalities(self):
        """The feature names, in column order (for one feature per modality,
        named after it: the modalities)."""
        return list(self.features)

    # The one-feature-per-modality API's fitted parts, found by what they are.
    @property
    def tokenizer(self):
        return next((f.tokenizer for f in self.features.values() if getattr(f, "tokenizer", None)), None)

    @property
    def tabular(self):
        return next((f.encoder for f in self.features.values() if getattr(f, "encoder", None)), None)

    def fit(self, manifest):
        """Fits the label vocabulary and each feature (tokenizer, statistics) on the training manifest."""
        manifest = read_manifest(manifest)
        manifest.check_columns(column_names(self.columns, self.feature_modalities))
        rows = range(len(manifest))
        if self.labels is not None:
            self.labels.fit(manifest.rows[i][self.columns["label"]] for i in rows)
        for name, feature in self.features.items():
            if name in self.share:
                continue
            users = [u for u, owner in self.share.items() if owner == name]
            if not users:
                feature.fit(manifest, rows)
                continue
            if len(feature.columns()) != 1:
                raise ValueError(f"share: {feature.name} features read several columns each; only features of one "
                                 f"column can share an encoder's fitted preprocessing. Received: {users} -> {name!r}")
            # Features that share an encoder share what is fitted (one vocabulary,
            # one set of statistics), fitted on all their columns' cells stacked.
            stacked = [{feature.column: manifest.rows[i][self.features[f].column]} for f in [name, *users] for i in rows]
            feature.fit(Manifest(manifest.path, stacked, [feature.column]), range(len(stacked)))
            for user in users:
                self.features[user].adopt(feature)
        self.fitted = True
        return self

    def model_kwargs(self):
        """The `build_fusion_model` arguments that must agree with this
        preprocessing: the model options of each modality (`image_shape`,
        `text_length`, `vocab_size`, ...) and, when a modality has several
        features, `feature_options` per feature."""
        self._check_fitted()
        kwargs, per_feature = {}, {}
        counts = {}
        for feature in self.features.values():
            counts[feature.name] = counts.get(feature.name, 0) + 1
        for name, feature in self.features.items():
            if counts[feature.name] == 1:
                kwargs.update(feature.model_options())
            else:
                per_feature[name] = feature.model_options()
        if per_feature:
            kwargs["feature_options"] = per_feature
        if self.labels is not None:
            kwargs.update(num_classes=self.labels.num_outputs, head=self.labels.head)
        return kwargs

    def subset(self, features):
        """A fitted copy that reads only `features` (and the label): the
        preprocessing of a model of some of the features (a single-modality
        model kept by `train.keep_best_of`)."""
        self._check_fitted()
        unknown = [f for f in features if f not in self.features]
        if unknown:
            raise ValueError(f"subset: unknown feature(s) {unknown}; features: {', '.join(self.features)}")
        out = copy.copy(self)
        out.features = {n: f for n, f in self.features.items() if n in features}
        out.feature_modalities = {n: m for n, m in self.feature_modalities.items() if n in features}
        out.columns = {k: v for k, v in self.columns.items() if k in features or k == "label"}
        out.share = {a: b for a, b in self.share.items() if a in features and b in features}
        return out

    def without_labels(self):
        """A fitted copy that reads the features only: no label column, no labels (a catalogue to embed, rows
        to explain without their answers)."""
        out = self.subset(list(self.features))
        out.labels, out.columns = None, {k: v for k, v in out.columns.items() if k != "label"}
        return out

    def _check_fitted(self):
        if not self.fitted:
            raise DataError("The preprocessor is not fitted: call fit(training_manifest) (or fit_preprocessor) first")

    # --- saving ---
    def save(self, folder):
        """Writes `preprocessor.json` (+ a `vocabulary*.txt` per text feature) into `folder`."""
        self._check_fitted()
        os.makedirs(folder, exist_ok=True)
        config = {
            "version": VERSION,
            "columns": self.columns,
            "modalities": self.feature_modalities,
            "share": self.share,
            "options": {k: list(v) if isinstance(v, tuple) else v for k, v in self.options.items()},
            "labels": self.labels.get_config() if self.labels else None,
            "features": {name: f.get_config() for name, f in self.features.items()},
        }
        for feature in self.features.values():
            feature.save_files(folder)
        write_json(os.path.join(folder, CONFIG_FILE), config)

    @classmethod
    def load(cls, folder):
        path = os.path.join(folder, CONFIG_FILE)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"No {CONFIG_FILE} in {os.path.abspath(folder)}")
        with open(path, encoding="utf-8") as f:
            config = json.load(f)
        if config.get("version", 1) == 1:  # written before features: one per modality, named after it
            config = {**config, "modalities": {}, "features": {"tabular": config.get("tabular") or {}}}
        pre = cls(config["columns"], config["modalities"], config.get("share"), **config["options"])
        if config["labels"]:
            pre.labels = LabelEncoder(**config["labels"])
        for name, feature in pre.features.items():
            feature.set_config(config["features"].get(name, {}))
            feature.load_files(folder, config["features"].get(name, {}))
        pre.fitted = True
        return pre


def fit_preprocessor(manifest, columns, modalities=None, share=None, **options):
    """`Preprocessor(columns, **options).fit(manifest)` — fit on the training manifest only.

    Args:
        manifest: the training manifest (path or `Manifest`); label vocabulary,
            tokenizer vocabulary and tabular statistics come from it alone.
        columns: feature -> column name, e.g. `{"image": "path", "text":
            "caption", "label": "label"}`; tabular takes `{"numeric": [...],
            "categorical": [...]}`.
        modalities: `{feature: modality}` for features not named after their
            modality, e.g. `{"front": "image", "rear": "image"}`.
        share: `{feature: other feature}` whose encoder it shares; their
            vocabulary or statistics are fitted on both columns.
        **options: the `Preprocessor` options (image_size, text_tokenizer,
            text_length, max_tokens, sample_rate, audio_length, ...).

    Returns:
        A fitted `Preprocessor`; `pre.model_kwargs()` gives the matching
        `build_fusion_model` arguments.

    Examples:
        >>> pre = fit_preprocessor("train.csv", {"text": "caption", "label": "label"}, text_length=32)
    """
    return Preprocessor(columns, modalities, share, **options).fit(manifest)
