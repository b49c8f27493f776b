"""`logmel_lstm` audio encoder: an LSTM over log-mel frames."""

import keras

from mbm_keras.encoders.audio import log_mel_frames
from mbm_keras.encoders.base import apply_recurrent, finish_encoder, register_encoder


@register_encoder("logmel_lstm", modality="audio", description="log-mel spectrogram + LSTM (last state)")
def build_logmel_lstm(
    input_shape,
    *,
    weights=None,
    name="audio_encoder",
    sample_rate,
    num_mel_bins=40,
    frame_ms=25.0,
    hop_ms=10.0,
    units=64,
    unroll=False,
):
    """Log-mel frames -> LSTM; the last state is the feature vector.

    Args:
        input_shape: `(audio_length,)` float32 samples in [-1, 1].
        weights: None or a file saved from this encoder.
        name: the encoder model's name.
        sample_rate: samples per second of the input.
        num_mel_bins: mel bands.
        frame_ms: analysis window of the spectrogram, in milliseconds.
        hop_ms: step between frames, in milliseconds (20 halves the frames,
            and the encoder's cost, against the default 10).
        units: LSTM units.
        unroll: unroll the recurrence (for int8 TFLite).

    Examples:
        >>> encoder = build_logmel_lstm((8000,), sample_rate=8000)
    """
    waveform, frames = log_mel_frames(input_shape, name, sample_rate, num_mel_bins, frame_ms, hop_ms)
    features, sequence = apply_recurrent(keras.layers.LSTM, frames, units=units, unroll=unroll, name="lstm")
    # Its sequence: the LSTM's output at every frame.
    return finish_encoder(waveform, features, weights=weights, encoder="logmel_lstm", name=name, sequence=sequence)
