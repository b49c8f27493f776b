"""`logmel_tcn` audio encoder: log-mel frames, a strided convolution, residual
dilated 1-D convolutions. It keeps the time axis (one token per `hop_ms *
time_stride` ms), so it serves frame-level tasks (CTC transcription) as well as
classifiers (the pooled mean)."""

import keras

from mbm_keras.encoders.audio import log_mel_frames
from mbm_keras.encoders.base import finish_encoder, register_encoder
from mbm_keras.layers import SpecAugment


def frame_count(audio_length, sample_rate, hop_ms=10.0, time_stride=2):
    """The encoder's output frames for `audio_length` samples (what CTC aligns
    a transcript to).

    Args:
        audio_length: samples of the input.
        sample_rate: samples per second.
        hop_ms, time_stride: the encoder's arguments.

    Examples:
        >>> frame_count(16000, 16000)   # 1 s -> 101 spectrogram frames -> 51
        51
    """
    hop = max(1, int(round(sample_rate * hop_ms / 1000)))
    frames = 1 + audio_length // hop  # the spectrogram's frames are centred (padded at both ends)
    return -(-frames // time_stride)


@register_encoder("logmel_tcn", modality="audio",
                  description="log-mel + strided conv + residual dilated 1-D convs; per-frame output (CTC)")
def build_logmel_tcn(
    input_shape,
    *,
    weights=None,
    name="audio_encoder",
    sample_rate,
    num_mel_bins=40,
    frame_ms=25.0,
    hop_ms=10.0,
    time_stride=2,
    units=128,
    kernel_size=5,
    dilations=(1, 2, 4, 1, 2, 4),
    dropout=0.1,
    spec_augment=True,
    top_db=80.0,
):
    """Log-mel frames -> Conv1D (stride `time_stride`) -> residual blocks of
    (dilated Conv1D, batch norm, ReLU, dropout); the pooled vector is the
    frames' mean, the sequence is every frame.

    Args:
        input_shape: `(audio_length,)` float32 samples in [-1, 1].
        weights: None or a file saved from this encoder.
        name: the encoder model's name.
        sample_rate: samples per second of the input.
        num_mel_bins: mel bands.
        frame_ms: analysis window of the spectrogram, in milliseconds.
        hop_ms: step between spectrogram frames, in milliseconds.
        time_stride: frames merged by the first convolution (output frame =
            `hop_ms * time_stride` ms).
        units: channels of every convolution (the frame features' size).
        kernel_size: width of the dilated convolutions.
        dilations: one residual block per entry (receptive field grows with their sum).
        dropout: dropout after each block.
        spec_augment: mask random time spans and mel bands in training
            (`layers.SpecAugment`; an identity at inference): True (2 spans
            of up to 100 ms, 2 of up to 1/8 of the bands), False, or a dict
            of `SpecAugment` arguments, e.g. `{"time_masks": 4}`.
        top_db: decibels kept below each clip's loudest mel bin (quieter
            bins are raised to that floor).

    Examples:
        >>> encoder = build_logmel_tcn((16000,), sample_rate=16000)
    """
    waveform, frames = log_mel_frames(input_shape, name, sample_rate, num_mel_bins, frame_ms, hop_ms, top_db)
    if spec_augment:
        masks = {"max_time": max(1, int(100 / hop_ms)), "max_bands": max(1, num_mel_bins // 8)}
        if isinstance(spec_augment, dict):
            unknown = set(spec_augment) - {"time_masks", "max_time", "band_masks", "max_bands", "seed"}
            if unknown:
                raise ValueError(f"spec_augment takes time_masks, max_time, band_masks, max_bands and seed. "
                                 f"Received: {sorted(unknown)}")
            masks.update(spec_augment)
        frames = SpecAugment(**masks, name="spec_augment")(frames)
    x = keras.layers.Conv1D(units, kernel_size, strides=time_stride, padding="same", name="subsample")(frames)
    x = keras.layers.BatchNormalization(momentum=0.9, name="subsample_bn")(x)
    x = keras.layers.Activation("relu", name="subsample_relu")(x)
    for i, rate in enumerate(dilations):
        y = keras.layers.Conv1D(units, kernel_size, dilation_rate=rate, padding="same", name=f"block{i + 1}_conv")(x)
        y = keras.layers.BatchNormalization(momentum=0.9, name=f"block{i + 1}_bn")(y)
        y = keras.layers.Activation("relu", name=f"block{i + 1}_relu")(y)
        y = keras.layers.Dropout(dropout, name=f"block{i + 1}_dropout")(y)
        x = keras.layers.Add(name=f"block{i + 1}_residual")([x, y])
    features = keras.layers.GlobalAveragePooling1D(name="pool")(x)
    return finish_encoder(waveform, features, weights=weights, encoder="logmel_tcn", name=name, sequence=x)
