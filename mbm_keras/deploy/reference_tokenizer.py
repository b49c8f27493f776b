"""Reference text tokenizer for apps that run a mbm_keras .tflite model.

Standalone (Python standard library only) and copied next to every TFLite
export as `tokenizer.py`: port it to your app's language. It reproduces the
"word" and "character" tokenizers the model was trained with (mbm_keras
checks it against them in its tests); "wordpiece" needs a BERT WordPiece
implementation (tensorflow_text.BertTokenizer with vocabulary.txt,
lower_case=True, unknown token "[UNK]").

Usage:
    python tokenizer.py model.json "a red cat"      # prints the ids
"""

import json
import os
import sys

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


class Tokenizer:
    """Token ids for one text: 0 pads, 1 is an unknown token, `length` ids."""

    def __init__(self, vocabulary, kind="word", length=64):
        if kind not in ("word", "character"):
            raise ValueError(f"The reference tokenizer covers 'word' and 'character'; received kind={kind!r}")
        self.kind, self.length = kind, length
        self.ids = {token: i for i, token in enumerate(vocabulary) if i >= 2}

    @classmethod
    def from_export(cls, model_json):
        """Reads `model.json` and the `vocabulary.txt` beside it."""
        with open(model_json, encoding="utf-8") as f:
            text = json.load(f)["preprocessing"]["text"]
        with open(os.path.join(os.path.dirname(os.path.abspath(model_json)), text["vocabulary"]), encoding="utf-8") as f:
            vocabulary = f.read().split("\n")[:-1]
        return cls(vocabulary, text["kind"], text["length"])

    def __call__(self, text):
        tokens = split_words(text) if self.kind == "word" else split_characters(text)
        ids = [self.ids.get(t, 1) for t in tokens][: self.length]
        return ids + [0] * (self.length - len(ids))


if __name__ == "__main__":
    print(Tokenizer.from_export(sys.argv[1])(sys.argv[2]))
