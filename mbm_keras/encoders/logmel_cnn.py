"""`logmel_cnn` audio encoder: a 2-D conv net over the log-mel spectrogram."""

import keras

from mbm_keras.encoders.audio import log_mel_frames
from mbm_keras.encoders.base import finish_encoder, register_encoder
from mbm_keras.encoders.small_cnn import apply_conv_block


@register_encoder("logmel_cnn", modality="audio", description="log-mel spectrogram + 2-D conv blocks")
def build_logmel_cnn(
    input_shape,
    *,
    weights=None,
    name="audio_encoder",
    sample_rate,
    num_mel_bins=40,
    frame_ms=25.0,
    hop_ms=10.0,
    filters=(16, 32, 64),
):
    """Log-mel frames as a one-channel image, (conv-bn-relu-pool) blocks, global average.

    Args:
        input_shape: `(audio_length,)` float32 samples in [-1, 1].
        weights: None or a file saved from this encoder.
        name: the encoder model's name.
        sample_rate: samples per second of the input.
        num_mel_bins: mel bands.
        frame_ms: analysis window of the spectrogram, in milliseconds.
        hop_ms: step between frames, in milliseconds (20 halves the frames,
            and the encoder's cost, against the default 10).
        filters: filters of each conv block.

    Examples:
        >>> encoder = build_logmel_cnn((8000,), sample_rate=8000)
    """
    waveform, frames = log_mel_frames(input_shape, name, sample_rate, num_mel_bins, frame_ms, hop_ms)
    x = keras.layers.Reshape((-1, num_mel_bins, 1), name="as_image")(frames)
    for i, f in enumerate(filters):
        x = apply_conv_block(x, f, name=f"block{i + 1}")
    features = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    # Its sequence: one token per (pooled) frame, the mel bands and channels side by side.
    frames_out = keras.layers.Reshape((x.shape[1], x.shape[2] * x.shape[3]), name="frame_tokens")(x)
    return finish_encoder(waveform, features, weights=weights, encoder="logmel_cnn", name=name, sequence=frames_out)
