"""`series_gru` timeseries encoder: a GRU over the steps (last state).

Encoder names are one namespace across modalities (as in timm), so `gru`
stays the text encoder's name and this one is `series_gru`.
"""

import keras

from mbm_keras.encoders.base import apply_recurrent, encoder_input, finish_encoder, register_encoder
from mbm_keras.encoders.conv1d import _check_series_shape


@register_encoder("series_gru", modality="timeseries", description="GRU over the steps of the series (last state)")
def build_series_gru(input_shape, *, weights=None, name="timeseries_encoder", units=64, unroll=False):
    """A GRU over `(timeseries_length, channels)`, its last state.

    Args:
        input_shape: `(timeseries_length, channels)`; standardized floats.
        weights: None or a file saved from this encoder.
        name: the encoder model's name.
        units: recurrent units.
        unroll: unroll the recurrence (fixed length; int8 TFLite does it itself).

    Examples:
        >>> encoder = build_series_gru((128, 3), units=32)
    """
    _check_series_shape(input_shape)
    inputs = encoder_input(input_shape, name)
    features, sequence = apply_recurrent(keras.layers.GRU, inputs, units=units, unroll=unroll, name="gru")
    # Its sequence: the GRU's output at every step.
    return finish_encoder(inputs, features, weights=weights, encoder="series_gru", name=name, sequence=sequence)
