"""`low_rank_tensor` fusion: Low-rank Multimodal Fusion (Liu et al., ACL 2018)."""

import keras
from keras import ops

from mbm_keras.fusions.base import Fusion, register_fusion


@register_fusion("low_rank_tensor", description="low-rank multimodal fusion (Liu et al. 2018)")
class LowRankTensorFusion(Fusion):
    """The outer product of [x_m; 1] over modalities, projected to `units`
    through a rank-`rank` factorization of the weight tensor:

        h = sum_r w_r * prod_m ([x_m; 1] · W_m^(r)) + b

    Appending 1 keeps the unimodal and bimodal terms of the full tensor
    product; the cost is linear in the number of modalities.

    Args:
        units: size of the fused vector.
        rank: rank of the factorization.
        activation: applied to h (None: linear, as in the paper).

    Examples:
        >>> fused = LowRankTensorFusion(units=64, rank=4)({"image": a, "text": b, "audio": c})
    """

    def __init__(self, units=128, rank=4, activation=None, **kwargs):
        super().__init__(units=units, **kwargs)
        if not isinstance(rank, int) or rank < 1:
            raise ValueError(f"rank must be a positive int. Received: rank={rank!r}")
        self.rank = rank
        self.activation = keras.activations.get(activation)

    def build_fusion(self, dims):
        self.factors = [
            self.add_weight(
                shape=(self.rank, d + 1, self.units), initializer="glorot_normal", name=f"factor_{m}"
            )
            for m, d in zip(self.modalities, dims)
        ]
        self.rank_weights = self.add_weight(shape=(self.rank, 1, 1), initializer="glorot_normal", name="rank_weights")
        self.bias = self.add_weight(shape=(self.units,), initializer="zeros", name="bias")

    def fuse(self, features):
        product = None
        for x, factor in zip(features, self.factors):
            ones = ops.ones_like(x[:, :1])
            z = ops.concatenate([x, ones], axis=-1)  # (batch, d + 1)
            projected = ops.einsum("bd,rdu->rbu", z, factor)  # (rank, batch, units)
            product = projected if product is None else product * projected
        return self.activation(ops.sum(self.rank_weights * product, axis=0) + self.bias)

    def get_config(self):
        return {
            **super().get_config(),
            "rank": self.rank,
            "activation": keras.activations.serialize(self.activation),
        }
