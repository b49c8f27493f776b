"""Word and character error rates, from jiwer (a maintained implementation of
the edit-distance alignment ASR papers use)."""

from mbm_keras.codecs.vocabulary import Vocabulary


def error_rates(references, hypotheses):
    """WER and CER of `hypotheses` against `references` (each normalized as
    the vocabulary normalizes: NFC, single spaces), over the whole set, and the
    share of utterances transcribed exactly.

    An empty reference counts its hypothesis' words as insertions (jiwer
    refuses empty references; this does not).

    Args:
        references: the true transcripts.
        hypotheses: the model's transcripts, in the same order.

    Returns:
        dict with `wer`, `cer`, `exact` (fraction of identical transcripts), `count`.

    Examples:
        >>> error_rates(["three seven one"], ["three one"])["wer"]
        0.3333333333333333
    """
    import jiwer

    refs = [Vocabulary.normalize(r) for r in references]
    hyps = [Vocabulary.normalize(h) for h in hypotheses]
    if len(refs) != len(hyps):
        raise ValueError(f"{len(refs)} references but {len(hyps)} hypotheses")
    if not refs:
        raise ValueError("error_rates needs at least one transcript")
    scored = [(r, h) for r, h in zip(refs, hyps) if r]
    extra_words = sum(len(h.split()) for r, h in zip(refs, hyps) if not r)
    extra_chars = sum(len(h) for r, h in zip(refs, hyps) if not r)
    words = sum(len(r.split()) for r, _ in scored)
    chars = sum(len(r) for r, _ in scored)
    if scored:
        w = jiwer.process_words([r for r, _ in scored], [h for _, h in scored])
        c = jiwer.process_characters([r for r, _ in scored], [h for _, h in scored])
        word_errors = w.substitutions + w.deletions + w.insertions
        char_errors = c.substitutions + c.deletions + c.insertions
    else:
        word_errors = char_errors = 0
    return {
        "wer": (word_errors + extra_words) / max(words, 1),
        "cer": (char_errors + extra_chars) / max(chars, 1),
        "exact": sum(r == h for r, h in zip(refs, hyps)) / len(refs),
        "count": len(refs),
    }
