"""The output alphabet of a CTC model, fitted from the training transcripts."""

import collections
import json
import unicodedata

BLANK, UNKNOWN = 0, 1  # CTC's blank (keras.losses.CTC and keras.ops.ctc_decode use index 0), then <unk>


class Vocabulary:
    """Characters (any script: each Unicode character is one symbol, after NFC
    normalization) -> ids `2..`; id 0 is CTC's blank, id 1 the unknown symbol.

    Args:
        symbols: the characters, in id order.

    Examples:
        >>> vocab = Vocabulary.fit(["three seven one", "two two"])
        >>> vocab.decode(vocab.encode("two one"))
        'two one'
    """

    def __init__(self, symbols):
        symbols = list(symbols)
        if len(set(symbols)) != len(symbols) or any(not isinstance(s, str) or len(s) != 1 for s in symbols):
            raise ValueError(f"symbols must be distinct single characters. Received: {symbols!r}")
        self.symbols = symbols
        self.index = {s: i + 2 for i, s in enumerate(symbols)}
        self.unknown_count = 0  # symbols encode() met outside the vocabulary, counted

    @staticmethod
    def normalize(text):
        """NFC, whitespace runs as one space, stripped: what is fitted, encoded and scored."""
        return " ".join(unicodedata.normalize("NFC", str(text)).split())

    @classmethod
    def fit(cls, transcripts, min_count=1):
        """The characters of `transcripts` seen at least `min_count` times, in
        a fixed (sorted) order.

        Args:
            transcripts: an iterable of strings.
            min_count: rarer characters become the unknown symbol.

        Examples:
            >>> Vocabulary.fit(["你好", "好的"]).size
            6
        """
        counts = collections.Counter(c for t in transcripts for c in cls.normalize(t))
        symbols = sorted(c for c, n in counts.items() if n >= min_count)
        if not symbols:
            raise ValueError("No transcript has any character: the vocabulary would be empty")
        return cls(symbols)

    @property
    def size(self):
        """Output classes of the model: blank, unknown and the characters."""
        return len(self.symbols) + 2

    def encode(self, text):
        """The ids of `text` (unknown characters -> 1, and counted in
        `unknown_count`).

        Args:
            text: a transcript.

        Examples:
            >>> Vocabulary.fit(["ab"]).encode("abc")
            [2, 3, 1]
        """
        ids = [self.index.get(c, UNKNOWN) for c in self.normalize(text)]
        self.unknown_count += ids.count(UNKNOWN)
        return ids

    def decode(self, ids):
        """The text of `ids`; blanks and padding (0, -1) are dropped, the
        unknown symbol is shown as "?".

        Args:
            ids: a sequence of ints.

        Examples:
            >>> Vocabulary(["a", "b"]).decode([2, 0, 3, 1, -1])
            'ab?'
        """
        out = []
        for i in ids:
            i = int(i)
            if i == UNKNOWN:
                out.append("?")
            elif i >= 2:
                out.append(self.symbols[i - 2])
        return "".join(out)

    def get_config(self):
        return {"symbols": self.symbols}

    def save(self, path):
        """Writes the vocabulary as JSON (what `load` reads)."""
        with open(path, "w", encoding="utf-8") as f:
            json.dump(self.get_config(), f, ensure_ascii=False)

    @classmethod
    def load(cls, path):
        """Reads a vocabulary written by `save`."""
        with open(path, encoding="utf-8") as f:
            return cls(**json.load(f))


def min_frames(ids):
    """The fewest CTC frames that can emit `ids`: one per symbol, plus a blank
    between each pair of equal neighbours.

    Args:
        ids: a transcript's ids.

    Examples:
        >>> min_frames([2, 3, 3])   # "abb": a, b, blank, b
        4
    """
    ids = list(ids)
    return len(ids) + sum(1 for a, b in zip(ids, ids[1:]) if a == b)
