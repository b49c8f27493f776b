"""Text tokenizers fitted on the training text and saved with the model.

- "word": lower-cased words, punctuation stripped (Keras TextVectorization);
  characters of unsegmented scripts (Han, Hiragana, Katakana, Thai, ...) are
  split into one token each, so Chinese text gets one token per character.
- "character": one token per Unicode character.
- "wordpiece": subwords (tensorflow-text), vocabulary learned from the training
  text with tensorflow-text's BERT vocabulary learner; the BERT basic
  tokenizer splits CJK characters and punctuation.
- "preset": a KerasHub preset's own preprocessor (its tokenizer and
  vocabulary, start and end tokens, padding), nothing fitted; a copy is saved
  with the model, so a run never needs the preset folder again to tokenize.

Ids: 0 is padding, 1 is out-of-vocabulary (a preset: its own ids); texts are
padded/truncated to `length` ids.
"""

import os

import tensorflow as tf

TOKENIZER_KINDS = ("word", "character", "wordpiece", "preset")

# Scripts written without spaces between words: each character is a token.
_UNSEGMENTED = r"(\p{Han}|\p{Hiragana}|\p{Katakana}|\p{Thai}|\p{Lao}|\p{Khmer}|\p{Myanmar}|\p{Tibetan})"
_PUNCTUATION = r"[!\"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~。，、！？；：「」『』（）《》【】]"


def standardize_words(texts):
    texts = tf.strings.lower(texts)
    texts = tf.strings.regex_replace(texts, _PUNCTUATION, " ")
    return tf.strings.regex_replace(texts, _UNSEGMENTED, r" \1 ")


class TextTokenizer:
    """Turns raw strings into int32 token ids `(batch, length)` inside tf.data.

    Args:
        kind: "word", "character", "wordpiece" or "preset".
        length: ids per text (padded with 0, truncated).
        max_tokens: vocabulary size cap, padding and OOV included.
        vocabulary: a fixed vocabulary (skips fitting); entry 0 is padding,
            entry 1 the OOV token.
        preset: with kind="preset", a KerasHub preset folder or cached name.

    Examples:
        >>> tok = TextTokenizer("word", length=8).fit(["a cat", "一只猫"])
        >>> tok(tf.constant(["a cat"]))  # int32 (1, 8)
    """

    def __init__(self, kind="word", length=64, max_tokens=20000, vocabulary=None, preset=None):
        if kind not in TOKENIZER_KINDS:
            raise ValueError(f"text tokenizer must be one of {TOKENIZER_KINDS}. Received: {kind!r}")
        if not isinstance(length, int) or length < 1:
            raise ValueError(f"text_length must be a positive int. Received: {length!r}")
        if (kind == "preset") != (preset is not None):
            raise ValueError("text_tokenizer='preset' and text_preset go together: give the KerasHub preset folder "
                             f"or name as text_preset. Received: text_tokenizer={kind!r}, text_preset={preset!r}")
        self.kind, self.length, self.max_tokens, self.preset = kind, length, max_tokens, preset
        self.vocabulary = None
        self._layer = None
        if vocabulary is not None:
            self._set_vocabulary(list(vocabulary))

    # --- fitting ---
    def fit(self, texts):
        texts = [t for t in texts if t is not None]
        if not texts:
            raise ValueError("No training text to fit the tokenizer on")
        if self.kind == "preset":  # the preset's tokenizer: nothing to learn
            return self._use_preset(self.preset)
        if self.kind == "wordpiece":
            from tensorflow_text.tools.wordpiece_vocab import bert_vocab_from_dataset as bert_vocab

            vocab = bert_vocab.bert_vocab_from_dataset(
                tf.data.Dataset.from_tensor_slices(texts).batch(1024),
                vocab_size=self.max_tokens,
                reserved_tokens=["[PAD]", "[UNK]"],
                bert_tokenizer_params={"lower_case": True},
                learn_params={},
            )
            self._set_vocabulary([str(v) for v in vocab])
        else:
            layer = self._vectorizer(None)
            layer.adapt(tf.constant(texts))
            self._set_vocabulary([str(v) for v in layer.get_vocabulary()])
        return self

    def _use_preset(self, preset):
        from mbm_keras.hub import load_text_preprocessor, resolve_preset

        self._folder = resolve_preset(preset, "text")
        self._layer = load_text_preprocessor(self._folder, self.length)
        self._layer.build(None)  # makes its packer (start, end and padding ids)
        self.vocabulary = [str(v) for v in self._layer.tokenizer.get_vocabulary()]
        return self

    def packing_ids(self):
        """A preset's packing, any tokenizer: `{"start": [...], "end": [...],
        "padding": id}` (start and end lists may be empty)."""
        packer = self._layer.packer

        def ids(value):  # a packer holds None, one id or a list of them
            if value is None:
                return []
            return [int(v) for v in value] if hasattr(value, "__iter__") else [int(value)]

        return {"start": ids(packer.start_value), "end": ids(packer.end_value), "padding": int(packer.pad_value)}

    def special_ids(self):
        """A preset's packing: `{"start", "end", "padding", "unknown"}` ids, or
        None where its tokenizer is not WordPiece (BPE, SentencePiece), which
        the TFLite sidecar's reference tokenizer does not reproduce."""
        import keras_hub

        tokenizer = self._layer.tokenizer
        if not isinstance(tokenizer, keras_hub.tokenizers.WordPieceTokenizer):
            return None
        return {**self.packing_ids(), "unknown": int(tokenizer.token_to_id(tokenizer.oov_token)),
                "lowercase": bool(tokenizer.lowercase), "strip_accents": bool(tokenizer.strip_accents),
                "split": bool(tokenizer.split), "split_on_cjk": bool(tokenizer.split_on_cjk),
                "suffix_indicator": tokenizer.suffix_indicator}

    def _vectorizer(self, vocabulary):
        import keras

        return keras.layers.TextVectorization(
            max_tokens=self.max_tokens,
            output_sequence_length=self.length,
            standardize=standardize_words if self.kind == "word" else "lower",
            split="whitespace" if self.kind == "word" else "character",
            vocabulary=vocabulary,
        )

    def _set_vocabulary(self, vocabulary):
        if len(vocabulary) < 3:
            raise ValueError(f"A text vocabulary needs padding, OOV and at least one token. Received {len(vocabulary)} entries")
        self.vocabulary = vocabulary
        if self.kind == "wordpiece":
            import tensorflow_text as tf_text

            table = tf.lookup.StaticVocabularyTable(
                tf.lookup.KeyValueTensorInitializer(vocabulary, tf.range(len(vocabulary), dtype=tf.int64)),
                num_oov_buckets=1,
            )
            self._layer = tf_text.BertTokenizer(table, token_out_type=tf.int64, lower_case=True, unknown_token="[UNK]")
        else:
            # TextVectorization's own vocabulary starts with "" and "[UNK]": pass the rest.
            self._layer = self._vectorizer(vocabulary[2:])

    @property
    def vocab_size(self):
        return len(self.vocabulary)

    # --- tokenizing ---
    def __call__(self, texts):
        """int32 ids `(batch, length)` for a batch of strings (or `(length,)` for one)."""
        if self._layer is None:
            raise RuntimeError("The text tokenizer is not fitted: call fit(training_texts) first")
        texts = tf.convert_to_tensor(texts)
        single = texts.shape.rank == 0
        batch = tf.reshape(texts, [-1])
        if self.kind == "preset":
            ids = self._layer(batch)["token_ids"]
        elif self.kind == "wordpiece":
            ids = self._layer.tokenize(batch).merge_dims(-2, -1)
            ids = ids[:, : self.length].to_tensor(default_value=0, shape=[None, self.length])
        else:
            ids = self._layer(batch)
        ids = tf.cast(ids, tf.int32)
        return ids[0] if single else ids

    # --- saving ---
    def get_config(self):
        config = {"kind": self.kind, "length": self.length, "max_tokens": self.max_tokens}
        return {**config, "preset": self.preset} if self.kind == "preset" else config

    @staticmethod
    def preset_folder(folder, filename):
        """Where a preset tokenizer's copy is saved beside `filename`."""
        return os.path.join(folder, os.path.splitext(filename)[0] + "_preset")

    def save(self, folder, filename="vocabulary.txt"):
        with open(os.path.join(folder, filename), "w", encoding="utf-8") as f:
            f.write("\n".join(v.replace("\n", " ") for v in self.vocabulary) + "\n")
        if self.kind == "preset":  # the preprocessor itself: its vocabulary, rules and special tokens
            import shutil

            copy = self.preset_folder(folder, filename)
            self._layer.save_to_preset(copy)
            shutil.copy(os.path.join(self._folder, "config.json"), copy)  # the backbone's limits, read on loading

    @classmethod
    def load(cls, folder, config, filename="vocabulary.txt"):
        if config.get("kind") == "preset":
            tokenizer = cls(**config)
            return tokenizer._use_preset(cls.preset_folder(folder, filename))
        with open(os.path.join(folder, filename), encoding="utf-8") as f:
            vocabulary = f.read().split("\n")[:-1]
        return cls(vocabulary=vocabulary, **{k: v for k, v in config.items() if k != "preset"})
