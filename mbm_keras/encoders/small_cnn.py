"""`small_cnn` image encoder: three conv blocks, for tiny images and fast tests."""

import keras

from mbm_keras.encoders.base import encoder_input, finish_encoder, register_encoder


def apply_conv_block(x, filters, name):
    x = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_conv")(x)
    # momentum 0.9: these nets train from scratch for few steps; Keras' 0.99
    # leaves inference statistics far from the training ones for hundreds of steps.
    x = keras.layers.BatchNormalization(momentum=0.9, name=f"{name}_bn")(x)
    x = keras.layers.Activation("relu", name=f"{name}_relu")(x)
    return keras.layers.MaxPooling2D(2, padding="same", name=f"{name}_pool")(x)


@register_encoder(
    "small_cnn", modality="image", description="3 conv blocks, no pretrained weights; tiny and fast"
)
def build_small_cnn(input_shape, *, weights=None, name="image_encoder", filters=(16, 32, 64)):
    """A small conv net: (conv-bn-relu-pool) x len(filters), then global average.

    Args:
        input_shape: `(height, width, channels)`; RGB floats in [0, 255].
        weights: None or a file saved from this encoder.
        name: the encoder model's name.
        filters: filters of each block.

    Examples:
        >>> encoder = build_small_cnn((32, 32, 3))
    """
    inputs = encoder_input(input_shape, name)
    x = keras.layers.Rescaling(1.0 / 255, name="rescale")(inputs)
    for i, f in enumerate(filters):
        x = apply_conv_block(x, f, name=f"block{i + 1}")
    features = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    return finish_encoder(inputs, features, weights=weights, encoder="small_cnn", name=name, sequence=x)
