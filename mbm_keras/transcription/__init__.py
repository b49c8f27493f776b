"""Speech transcription: CTC models over per-frame audio features, with an
optional text context fused into every frame (`cross_attention`), Keras' CTC
loss and decoder, WER/CER from jiwer.

    >>> from mbm_keras.transcription import Vocabulary, build_transcription_model, decode
    >>> vocab = Vocabulary.fit(train_transcripts)
    >>> model = build_transcription_model(vocab, context="cnn", context_vocab_size=100,
    ...                                   audio_length=32000, sample_rate=8000)
"""

from mbm_keras.transcription.candidates import candidate_scores, choose_candidates
from mbm_keras.transcription.metrics import error_rates
from mbm_keras.transcription.model import build_transcription_model, decode, greedy_decode, pad_targets
from mbm_keras.codecs.vocabulary import Vocabulary, min_frames

__all__ = ["Vocabulary", "build_transcription_model", "candidate_scores", "choose_candidates", "decode", "error_rates",
           "greedy_decode", "min_frames", "pad_targets"]
