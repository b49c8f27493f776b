"""Greedy CTC decoding with the Python standard library only: what an app does
with the per-frame log-probabilities of a transcription model's .tflite file.

`model.json` beside the model lists `vocabulary`: index 0 is the CTC blank,
index 1 the unknown symbol, then one character per index.

    >>> import json
    >>> vocabulary = json.load(open("model.json"))["vocabulary"]
    >>> text = greedy_decode(log_probs, vocabulary)   # log_probs: frames x len(vocabulary)
"""


def greedy_decode(log_probs, vocabulary):
    """The best symbol of each frame, repeats merged, blanks (index 0) dropped;
    index 1 (unknown) is written as "?".

    Args:
        log_probs: a sequence of frames, each a sequence of len(vocabulary) numbers.
        vocabulary: the symbols, index 0 the blank.
    """
    out, previous = [], None
    for frame in log_probs:
        best = max(range(len(frame)), key=frame.__getitem__)
        if best != previous and best != 0:
            out.append("?" if best == 1 else vocabulary[best])
        previous = best
    return "".join(out)
