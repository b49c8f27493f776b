"""Reference preprocessing for apps that run a mbm_keras .tflite model.

Standalone (Python standard library only) and copied next to every TFLite
export as `tokenizer.py`: port it to your app's language. It reproduces the
"word", "character" and "wordpiece" tokenizers the model was trained with, a
KerasHub WordPiece preset's tokenizer and packing ("preset_wordpiece": BERT's
[CLS] ... [SEP]), and
the tabular scaling and one-hot encoding, including the refusal of cells that
are not finite float32 numbers (mbm_keras checks it against both in its tests).

Usage:
    python tokenizer.py model.json "a red cat"      # prints the ids
"""

import json
import math
import os
import re
import sys
import unicodedata

# What a numeric tabular cell may hold (as in training): a decimal number, no nan/inf.
NUMBER = re.compile(r"[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?")
FLOAT32_MAX = 3.4028234663852886e38

# Characters the "word" tokenizer turns into spaces.
PUNCTUATION = set("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~。，、！？；：「」『』（）《》【】")
# Scripts written without spaces (Han, Hiragana, Katakana, Thai, Lao, Khmer,
# Myanmar, Tibetan): each character is a word.
UNSEGMENTED = (
    (0x0E00, 0x0EFF), (0x0F00, 0x0FFF), (0x1000, 0x109F), (0x1780, 0x17FF), (0x19E0, 0x19FF),
    (0x2E80, 0x2FDF), (0x3005, 0x3007), (0x3021, 0x3029), (0x3038, 0x303B), (0x3041, 0x30FF),
    (0x31F0, 0x31FF), (0x3400, 0x4DBF), (0x4E00, 0x9FFF), (0xA9E0, 0xA9FF), (0xAA60, 0xAA7F),
    (0xF900, 0xFAFF), (0xFF66, 0xFF9D), (0x20000, 0x323AF),
)
ASCII_LOWER = {c: c + 32 for c in range(ord("A"), ord("Z") + 1)}  # TensorFlow lower-cases ASCII only


def _unsegmented(ch):
    code = ord(ch)
    return any(lo <= code <= hi for lo, hi in UNSEGMENTED)


def split_words(text):
    text = text.translate(ASCII_LOWER)
    out = []
    for ch in text:
        if ch in PUNCTUATION:
            out.append(" ")
        elif _unsegmented(ch):
            out.append(f" {ch} ")
        else:
            out.append(ch)
    return "".join(out).split()


def split_characters(text):
    return list(text.translate(ASCII_LOWER))


# CJK ideographs: split into single characters by BERT's basic tokenizer.
CJK = ((0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F), (0x2B740, 0x2B81F),
       (0x2B820, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F))


def _bert_punctuation(ch):
    code = ord(ch)
    ascii_punct = 33 <= code <= 47 or 58 <= code <= 64 or 91 <= code <= 96 or 123 <= code <= 126
    return ascii_punct or unicodedata.category(ch).startswith("P")


def split_bert(text):
    """BERT's basic tokenizer with lower_case=True: case fold, NFD, accents
    stripped, split on whitespace, punctuation and CJK characters kept as tokens."""
    text = unicodedata.normalize("NFD", text.casefold())
    text = "".join(ch for ch in text if unicodedata.category(ch) != "Mn")
    tokens, current = [], []
    for ch in text:
        if ch in " \t\n\r\f":
            tokens.append("".join(current))
            current = []
        elif _bert_punctuation(ch) or any(lo <= ord(ch) <= hi for lo, hi in CJK):
            tokens += ["".join(current), ch]
            current = []
        else:
            current.append(ch)
    tokens.append("".join(current))
    return [t for t in tokens if t]


# KerasHub's WordPiece pre-tokenizer (keras_hub.tokenizers.WordPieceTokenizer):
# ASCII non-alphanumerics and Unicode punctuation are kept as tokens; whitespace,
# control and format characters split; lower-casing is NFKC case folding that
# drops default-ignorable code points.
DEFAULT_IGNORABLE = ((0x00AD, 0x00AD), (0x034F, 0x034F), (0x061C, 0x061C), (0x115F, 0x1160), (0x17B4, 0x17B5),
                     (0x180B, 0x180F), (0x200B, 0x200F), (0x202A, 0x202E), (0x2060, 0x206F), (0x3164, 0x3164),
                     (0xFE00, 0xFE0F), (0xFEFF, 0xFEFF), (0xFFA0, 0xFFA0), (0xFFF0, 0xFFF8), (0x1BCA0, 0x1BCA3),
                     (0x1D173, 0x1D17A), (0xE0000, 0xE0FFF))


def _hub_punctuation(ch):
    code = ord(ch)
    ascii_punct = 33 <= code <= 47 or 58 <= code <= 64 or 91 <= code <= 96 or 123 <= code <= 126
    return ascii_punct or unicodedata.category(ch).startswith("P")


def _case_fold(word):
    word = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", word).casefold())
    return "".join(ch for ch in word if not any(lo <= ord(ch) <= hi for lo, hi in DEFAULT_IGNORABLE))


def split_hub(text, lowercase=True, strip_accents=False, split=True, split_on_cjk=True):
    """The words KerasHub's WordPiece tokenizer splits `text` into."""
    if strip_accents:
        text = "".join(ch for ch in unicodedata.normalize("NFD", text) if unicodedata.category(ch) != "Mn")
    if split:
        words, current = [], []
        for ch in text:
            cjk = split_on_cjk and any(lo <= ord(ch) <= hi for lo, hi in CJK)
            if ch in " \t\n\r\f" or unicodedata.category(ch) in ("Cc", "Cf"):
                words.append("".join(current))
                current = []
            elif _hub_punctuation(ch) or cjk:
                words += ["".join(current), ch]
                current = []
            else:
                current.append(ch)
        words = [w for w in words + ["".join(current)] if w]
    else:
        words = [text]
    return [_case_fold(w) for w in words] if lowercase else words


def wordpieces(word, vocabulary, unknown="[UNK]", max_bytes=100, suffix="##"):
    """Greedy longest-match-first subwords of one word (`suffix` marks a continuation)."""
    if len(word.encode("utf-8")) > max_bytes:
        return [unknown]
    pieces, start = [], 0
    while start < len(word):
        end = len(word)
        while end > start:
            piece = word[start:end] if start == 0 else suffix + word[start:end]
            if piece in vocabulary:
                break
            end -= 1
        if end == start:
            return [unknown]
        pieces.append(piece)
        start = end
    return pieces


KINDS = ("word", "character", "wordpiece", "preset_wordpiece")


class Tokenizer:
    """Token ids for one text, `length` ids: 0 pads and 1 is an unknown token,
    except for "preset_wordpiece", which uses the preset's ids (`preset`: the
    text entry of model.json: start/end ids, padding_id, unknown_id and the
    pre-tokenizer's rules)."""

    def __init__(self, vocabulary, kind="word", length=64, preset=None):
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}. Received: kind={kind!r}")
        self.kind, self.length, self.preset = kind, length, preset
        if kind == "preset_wordpiece":
            self.ids = {token: i for i, token in enumerate(vocabulary)}
            self.unknown = vocabulary[preset["unknown_id"]]
        else:  # ids 0 and 1 are padding and unknown ("[PAD]", "[UNK]" for wordpiece)
            self.ids = {token: i for i, token in enumerate(vocabulary) if i >= 2}

    @classmethod
    def from_export(cls, model_json, feature="text"):
        """Reads `model.json` and the vocabulary file beside it, for the text
        input named `feature` ("text", or a named feature such as "title")."""
        with open(model_json, encoding="utf-8") as f:
            text = json.load(f)["preprocessing"][feature]
        with open(os.path.join(os.path.dirname(os.path.abspath(model_json)), text["vocabulary"]), encoding="utf-8") as f:
            vocabulary = f.read().split("\n")[:-1]
        return cls(vocabulary, text["kind"], text["length"], preset=text)

    def __call__(self, text):
        if self.kind == "preset_wordpiece":
            return self._preset_ids(text)
        if self.kind == "word":
            tokens = split_words(text)
        elif self.kind == "character":
            tokens = split_characters(text)
        else:
            tokens = [p for w in split_bert(text) for p in wordpieces(w, self.ids)]
        ids = [self.ids.get(t, 1) for t in tokens][: self.length]
        return ids + [0] * (self.length - len(ids))

    def _preset_ids(self, text):
        p = self.preset
        words = split_hub(text, p["lowercase"], p["strip_accents"], p["split"], p["split_on_cjk"])
        pieces = [piece for w in words for piece in wordpieces(w, self.ids, self.unknown, suffix=p["suffix_indicator"])]
        room = self.length - len(p["start"]) - len(p["end"])
        ids = p["start"] + [self.ids[piece] for piece in pieces][: max(room, 0)] + p["end"]
        ids = ids[: self.length]
        return ids + [p["padding_id"]] * (self.length - len(ids))


class TabularEncoder:
    """The model's tabular input for one row of cells (strings, numeric columns
    first, then categorical, as in model.json). An empty numeric cell is the
    training mean; an empty or unseen category is the column's unknown slot.
    Raises ValueError naming the column for a cell that is not a number or not
    finite in float32, before or after scaling."""

    def __init__(self, numeric, categorical):
        self.numeric, self.categorical = numeric, categorical

    @classmethod
    def from_export(cls, model_json, feature="tabular"):
        """Reads the tabular input named `feature` from `model.json`."""
        with open(model_json, encoding="utf-8") as f:
            tabular = json.load(f)["preprocessing"][feature]
        return cls(tabular["numeric"], tabular["categorical"])

    def __call__(self, cells):
        cells = ["" if c is None else str(c) for c in cells]
        if len(cells) != len(self.numeric) + len(self.categorical):
            raise ValueError(f"expected {len(self.numeric) + len(self.categorical)} tabular cells, got {len(cells)}")
        out = []
        for spec, cell in zip(self.numeric, cells):
            cell = cell.strip()
            if cell == "":
                out.append(0.0)
                continue
            if not NUMBER.fullmatch(cell):
                raise ValueError(f"tabular column {spec['column']!r}: {cell!r} is not a number")
            value = (float(cell) - spec["mean"]) / spec["std"]
            if not (abs(float(cell)) <= FLOAT32_MAX and math.isfinite(value) and abs(value) <= FLOAT32_MAX):
                raise ValueError(f"tabular column {spec['column']!r}: {cell!r} is not a finite float32 number")
            out.append(value)
        for spec, cell in zip(self.categorical, cells[len(self.numeric):]):
            onehot = [0.0] * (len(spec["categories"]) + 1)
            onehot[spec["categories"].index(cell) if cell in spec["categories"] else spec["unknown_slot"]] = 1.0
            out.extend(onehot)
        return out


if __name__ == "__main__":
    print(Tokenizer.from_export(sys.argv[1])(sys.argv[2]))
