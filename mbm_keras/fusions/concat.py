"""`concat` fusion: the seed's F = act(W · [F_image; F_text; ...] + b)."""

import keras
from keras import ops

from mbm_keras.fusions.base import Fusion, register_fusion


@register_fusion("concat", description="concatenate, then one dense projection (the baseline)")
class ConcatFusion(Fusion):
    """Concatenates the modality features and applies one dense projection.

    Args:
        units: size of the fused vector.
        activation: applied after the projection; None gives exactly
            `W · [F_1; ...; F_n] + b`.

    Examples:
        >>> fused = ConcatFusion(units=64)({"image": img_feats, "text": txt_feats})
    """

    def __init__(self, units=128, activation="relu", **kwargs):
        super().__init__(units=units, **kwargs)
        self.activation = keras.activations.get(activation)

    def build_fusion(self, dims):
        self.kernel = self.add_weight(
            shape=(sum(dims), self.units), initializer="glorot_uniform", name="kernel"
        )
        self.bias = self.add_weight(shape=(self.units,), initializer="zeros", name="bias")

    def fuse(self, features):
        x = features[0] if len(features) == 1 else ops.concatenate(features, axis=-1)
        return self.activation(ops.matmul(x, self.kernel) + self.bias)

    def get_config(self):
        return {**super().get_config(), "activation": keras.activations.serialize(self.activation)}
