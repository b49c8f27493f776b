"""`conv1d` timeseries encoder: 1-D conv blocks over the steps of a multichannel series."""

import keras

from mbm_keras.encoders.base import encoder_input, finish_encoder, register_encoder


def _check_series_shape(input_shape):
    if len(tuple(input_shape)) != 2:
        raise ValueError(f"Timeseries encoders take `(timeseries_length, channels)` floats. "
                         f"Received: input_shape={input_shape}")


@register_encoder("conv1d", modality="timeseries", description="1-D conv blocks over the steps, then average")
def build_conv1d(input_shape, *, weights=None, name="timeseries_encoder", filters=(32, 64), kernel_size=5):
    """(Conv1D-BatchNorm-ReLU-MaxPool) x len(filters), then the average over steps.

    Args:
        input_shape: `(timeseries_length, channels)`; standardized floats.
        weights: None or a file saved from this encoder.
        name: the encoder model's name.
        filters: filters of each block.
        kernel_size: steps each convolution sees.

    Examples:
        >>> encoder = build_conv1d((128, 3))
    """
    _check_series_shape(input_shape)
    inputs = encoder_input(input_shape, name)
    x = inputs
    for i, f in enumerate(filters):
        x = keras.layers.Conv1D(f, kernel_size, padding="same", use_bias=False, name=f"block{i + 1}_conv")(x)
        x = keras.layers.BatchNormalization(momentum=0.9, name=f"block{i + 1}_bn")(x)
        x = keras.layers.Activation("relu", name=f"block{i + 1}_relu")(x)
        x = keras.layers.MaxPooling1D(2, padding="same", name=f"block{i + 1}_pool")(x)
    features = keras.layers.GlobalAveragePooling1D(name="pool")(x)
    return finish_encoder(inputs, features, weights=weights, encoder="conv1d", name=name, sequence=x)
