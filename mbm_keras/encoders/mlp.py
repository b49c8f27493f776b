"""`mlp` tabular encoder: a stack of dense layers over a float feature vector."""

import keras

from mbm_keras.encoders.base import encoder_input, finish_encoder, register_encoder


@register_encoder("mlp", modality="tabular", description="dense stack over normalized float features")
def build_mlp(input_shape, *, weights=None, name="tabular_encoder", hidden_units=(64, 64)):
    """Dense + ReLU layers over a `(tabular_dim,)` float vector.

    Args:
        input_shape: `(tabular_dim,)`; features should already be normalized.
        weights: None or a file saved from this encoder.
        name: the encoder model's name.
        hidden_units: width of each dense layer.

    Examples:
        >>> encoder = build_mlp((12,))
    """
    if len(tuple(input_shape)) != 1:
        raise ValueError(
            f"The tabular encoder takes `(tabular_dim,)` floats. Received: input_shape={input_shape}"
        )
    inputs = encoder_input(input_shape, name)
    x = inputs
    for i, units in enumerate(hidden_units):
        x = keras.layers.Dense(units, activation="relu", name=f"dense{i + 1}")(x)
    return finish_encoder(inputs, x, weights=weights, encoder="mlp", name=name)
