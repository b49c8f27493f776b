"""Choosing among candidate transcripts by their CTC likelihood.

When the text an assistant already has is a short list of what the user may
say (contacts, numbers on screen, menu entries), the strongest use of it is to
score every candidate against the model's per-frame log-probabilities and keep
the likeliest: the CTC loss of a candidate is minus the log of the probability,
summed over every alignment, that the clip says it. Unlike picking the
candidate closest to a decoded transcript, nothing is thrown away by decoding
first, so a digit the greedy path lost in noise still counts for the right
candidate.

Model-side code: `keras.ops` only (runs on JAX too)."""

import keras
import numpy as np

from mbm_keras.transcription.model import pad_targets
from mbm_keras.codecs.vocabulary import Vocabulary, min_frames


def candidate_scores(log_probs, candidates, vocabulary):
    """CTC log-likelihood of each candidate transcript for each clip.

    Args:
        log_probs: `(batch, frames, vocabulary.size)` (a transcription model's output).
        candidates: one list of candidate strings per clip (lists may differ in length).
        vocabulary: the model's `Vocabulary`.

    Returns:
        A list (one per clip) of float arrays, `log P(candidate | clip)`; `-inf`
        for a candidate the clip is too short to align (or an empty one).

    Examples:
        >>> candidate_scores(model.predict(x), [["three seven one", "two nine"]], vocab)
        [array([ -1.7, -41.2])]
    """
    log_probs = np.asarray(log_probs, np.float32)
    if log_probs.ndim != 3:
        raise ValueError(f"log_probs must be (batch, frames, classes). Received shape {log_probs.shape}")
    if len(candidates) != log_probs.shape[0]:
        raise ValueError(f"{log_probs.shape[0]} clips but {len(candidates)} candidate lists")
    rows, texts = [], []
    for clip, options in enumerate(candidates):
        if isinstance(options, str):
            raise ValueError(f"Clip {clip}: candidates must be a list of strings, not one string {options!r}")
        for text in options:
            rows.append(clip)
            texts.append(text)
    if not texts:
        return [np.zeros((0,), np.float32) for _ in candidates]
    targets = pad_targets(texts, vocabulary)  # ids are >= 1, so a row's length is its nonzero count
    lengths = np.count_nonzero(targets, axis=1).astype(np.int32)
    frames = np.full((len(texts),), log_probs.shape[1], np.int32)
    loss = keras.ops.convert_to_numpy(keras.ops.ctc_loss(
        targets, log_probs[np.array(rows)], lengths, frames, mask_index=0))
    # CTC needs a frame per symbol and a blank between repeats; TensorFlow returns a large finite loss otherwise.
    alignable = np.array([0 < min_frames(row[:n].tolist()) <= log_probs.shape[1] for row, n in zip(targets, lengths)])
    scores = np.where(np.isfinite(loss) & alignable, -loss, -np.inf).astype(np.float32)
    out, start = [], 0
    for options in candidates:
        out.append(scores[start: start + len(options)])
        start += len(options)
    return out


def choose_candidates(log_probs, candidates, vocabulary):
    """For each clip, the candidate the model finds likeliest (CTC
    log-likelihood); an empty list gives "".

    Args:
        log_probs: `(batch, frames, vocabulary.size)`.
        candidates: one list of candidate strings per clip.
        vocabulary: the model's `Vocabulary`.

    Returns:
        A list of strings, the chosen candidates (normalized as transcripts are).

    Examples:
        >>> choose_candidates(model.predict(x), [["three seven one", "two nine four"]], vocab)
        ['three seven one']
    """
    chosen = []
    for options, scores in zip(candidates, candidate_scores(log_probs, candidates, vocabulary)):
        chosen.append(Vocabulary.normalize(options[int(np.argmax(scores))]) if len(options) else "")
    return chosen
