"""Text: UTF-8 strings, tokenized with a vocabulary fitted on the training rows,
or with a KerasHub preset's own tokenizer (`text_tokenizer: preset`)."""

import numpy as np

from mbm_keras.modalities.base import Modality, positive_int, register_modality

TOKENIZER_KINDS = ("word", "character", "wordpiece", "preset")


def _preset(value):
    return value is None or (isinstance(value, str) and bool(value))


@register_modality
class Text(Modality):
    """A text cell per row; the model input is int32 token ids `(text_length,)`, 0 = padding, 1 = unknown."""

    name = "text"
    description = "UTF-8 text -> int32 token ids (text_length,); 0 padding, 1 unknown"
    OPTIONS = {
        "text_tokenizer": ("word", lambda v: v in TOKENIZER_KINDS, f"one of {TOKENIZER_KINDS}"),
        "text_length": (64, positive_int, "a positive int"),
        "max_tokens": (20000, lambda v: positive_int(v) and v >= 3, "an int >= 3 (padding, unknown and one word)"),
        # With text_tokenizer: preset, the KerasHub preset (folder or cached name) whose tokenizer is used.
        "text_preset": (None, _preset, "a KerasHub preset folder or name"),
    }
    # text_preset reaches the encoders that take a `preset` (keras_hub), so the backbone matches the tokenizer.
    MODEL_OPTIONS = {"text_length": 64, "vocab_size": 20000, "text_preset": None}
    MODEL_MINIMUMS = {"vocab_size": 2}  # padding and unknown
    TINY = {"text_length": 8, "vocab_size": 50}
    ZOO = {"text_length": 64, "vocab_size": 20000}
    STARTER = "cnn"

    def __init__(self, feature, column, options):
        super().__init__(feature, column, options)
        self.tokenizer = None

    @property
    def vocabulary_file(self):
        # The feature of the one-text-per-model API keeps the historic file name.
        return "vocabulary.txt" if self.feature == "text" else f"vocabulary-{self.feature}.txt"

    def _new_tokenizer(self, vocabulary=None):
        from mbm_keras.codecs.text import TextTokenizer

        return TextTokenizer(self.options["text_tokenizer"], self.options["text_length"], self.options["max_tokens"],
                             vocabulary=vocabulary, preset=self.options["text_preset"])

    def fit(self, manifest, rows):
        texts = [str(manifest.rows[i][self.column]) for i in rows if manifest.rows[i][self.column] is not None]
        self.tokenizer = self._new_tokenizer().fit(texts)
        return self

    def adopt(self, other):
        self.tokenizer = other.tokenizer

    def save_files(self, folder):
        self.tokenizer.save(folder, self.vocabulary_file)

    def load_files(self, folder, config):
        from mbm_keras.codecs.text import TextTokenizer

        self.tokenizer = TextTokenizer.load(folder, self.tokenizer_config(), self.vocabulary_file)

    def tokenizer_config(self):
        config = {"kind": self.options["text_tokenizer"], "length": self.options["text_length"],
                  "max_tokens": self.options["max_tokens"]}
        return {**config, "preset": self.options["text_preset"]} if config["kind"] == "preset" else config

    def model_options(self):
        return {"text_length": self.tokenizer.length, "vocab_size": self.tokenizer.vocab_size,
                "text_preset": self.tokenizer.preset}

    @classmethod
    def check_model_options(cls, options):
        preset = options.get("text_preset")
        if not _preset(preset):
            raise ValueError(f"text_preset must be a KerasHub preset folder or name, or None. Received: {preset!r}")
        ints = super().check_model_options({**options, "text_preset": 1})
        return {**ints, "text_preset": preset}

    @classmethod
    def input_spec(cls, options):
        return (options["text_length"],), "int32"

    @classmethod
    def encoder_kwargs(cls, options):
        # `preset` goes only to builders that name it (see fusion_model.offered_kwargs).
        preset = options.get("text_preset")
        return {"vocab_size": options["vocab_size"], **({"preset": preset} if preset else {})}

    def decoded_spec(self):
        import tensorflow as tf

        return tf.TensorSpec([], tf.string)

    def finished_shape(self):
        return []

    def finish_batch(self, x):
        return self.tokenizer(x)

    def serve(self, raw):
        return self.tokenizer(raw), self.present(raw)

    def trackables(self):
        """The tokenizer's layer or lookup table, built (a SavedModel tracks it)."""
        import tensorflow as tf

        self.tokenizer(tf.constant(["warm up"]))  # a TextVectorization must be built to be tracked
        return [self.tokenizer._layer]

    def sidecar(self):
        config = {**self.tokenizer.get_config(), "vocabulary": self.vocabulary_file, "reference": "tokenizer.py",
                  "padding_id": 0, "unknown_id": 1}
        if self.tokenizer.kind != "preset":
            return config
        special = self.tokenizer.special_ids()
        if special is None:
            raise ValueError(
                f"Text feature {self.feature!r} uses preset {self.tokenizer.preset!r}, whose tokenizer "
                f"({type(self.tokenizer._layer.tokenizer).__name__}) the TFLite sidecar's reference tokenizer does not "
                "reproduce (it covers WordPiece presets: BERT, DistilBERT, ELECTRA, ...). Export a SavedModel, which "
                "tokenizes in-graph.")
        for key in ("preset", "max_tokens"):
            config.pop(key)
        config["padding_id"], config["unknown_id"] = special.pop("padding"), special.pop("unknown")
        return {**config, "kind": "preset_wordpiece", **special}

    @staticmethod
    def perturb(x, level, rng, unknown=1, keep=(0,)):
        """Each token replaced by the unknown token with probability `level`;
        the ids in `keep` (padding; a preset's start and end tokens) never are.
        `perturb_options()` gives a feature's own `unknown` and `keep`."""
        hit = (rng.random(x.shape) < level) & ~np.isin(x, np.asarray(keep, dtype=x.dtype))
        return np.where(hit, unknown, x).astype(x.dtype)

    def perturb_options(self):
        """`perturb`'s ids for this feature's tokenizer: ours (1 unknown, 0
        padding) or a preset's own ([UNK], [PAD], [CLS], [SEP] for BERT); a
        non-WordPiece preset's tokens are replaced by its padding (dropped)."""
        if self.tokenizer is None or self.tokenizer.kind != "preset":
            return {"unknown": 1, "keep": [0]}
        packing = self.tokenizer.packing_ids()
        special = self.tokenizer.special_ids()
        return {"unknown": special["unknown"] if special else packing["padding"],
                "keep": sorted({packing["padding"], *packing["start"], *packing["end"]})}

