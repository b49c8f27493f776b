"""Shared front end of the audio encoders: waveform -> normalized log-mel frames.

The spectrogram is computed inside the model (`layers.LogMelSpectrogram`), so
a trained model takes raw float32 mono waveforms in [-1, 1], also after export.
"""

import numbers

import keras

from mbm_keras.encoders.base import encoder_input
from mbm_keras.layers import LogMelSpectrogram

# Layers of the front end (kept float in int8 TFLite exports).
FRONT_END_LAYERS = ("log_mel", "mel_norm")


def log_mel_frames(input_shape, name, sample_rate, num_mel_bins=40, frame_ms=25.0, hop_ms=10.0, top_db=80.0):
    """Returns `(waveform_input, frames)` with frames `(batch, time, num_mel_bins)`.

    Args:
        input_shape: `(audio_length,)` samples.
        name: the encoder model's name.
        sample_rate: samples per second of the input.
        num_mel_bins: mel bands.
        frame_ms, hop_ms: analysis window and hop; the FFT length is the next
            power of two above the window.
        top_db: decibels kept below each clip's loudest mel bin; quieter
            bins are raised to that floor.
    """
    if len(tuple(input_shape)) != 1:
        raise ValueError(
            f"Audio encoders take `(audio_length,)` mono samples. Received: input_shape={input_shape}"
        )
    if not isinstance(sample_rate, int) or sample_rate <= 0:
        raise ValueError(f"sample_rate must be a positive int. Received: sample_rate={sample_rate!r}")
    if isinstance(top_db, bool) or not isinstance(top_db, numbers.Real) or not top_db > 0:
        raise ValueError(f"top_db must be a positive number of decibels. Received: top_db={top_db!r}")
    window = max(2, int(round(sample_rate * frame_ms / 1000)))
    fft_length = 1 << (window - 1).bit_length()
    hop = max(1, int(round(sample_rate * hop_ms / 1000)))
    if input_shape[0] < fft_length:
        raise ValueError(
            f"audio_length must be at least one FFT frame ({fft_length} samples at "
            f"sample_rate={sample_rate}). Received: audio_length={input_shape[0]}"
        )
    waveform = encoder_input(input_shape, name)
    mel = LogMelSpectrogram(  # keras.layers.MelSpectrogram with its dB floor per example, not per batch
        fft_length=fft_length,
        sequence_stride=hop,
        sequence_length=window,
        sampling_rate=sample_rate,
        num_mel_bins=num_mel_bins,
        max_freq=sample_rate / 2,
        power_to_db=True,
        top_db=float(top_db),
        name="log_mel",
    )(waveform)
    frames = keras.layers.Permute((2, 1), name="time_major")(mel)
    # Log-mel values are in dB (about -100..0). Standardizing each frame over its
    # bands keeps the spectral shape, needs no running statistics (so train and
    # inference agree from the first step) and ignores overall loudness.
    frames = keras.layers.LayerNormalization(axis=-1, name="mel_norm")(frames)
    return waveform, frames
