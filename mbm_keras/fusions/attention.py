"""`attention` fusion: learned per-example weights over modalities."""

from keras import ops

from mbm_keras.fusions.base import Fusion, register_fusion


@register_fusion("attention", description="per-example softmax weights over modality projections")
class AttentionFusion(Fusion):
    """Projects each modality to `units` (h_m = tanh(W_m x_m + b_m)), scores it
    with s_m = v · tanh(W_a h_m + b_a), and returns sum_m softmax(s)_m h_m.

    Args:
        units: size of the fused vector.
        attention_units: size of the scoring layer.

    Examples:
        >>> fused = AttentionFusion(units=64)({"image": img_feats, "text": txt_feats})
    """

    def __init__(self, units=128, attention_units=64, **kwargs):
        super().__init__(units=units, **kwargs)
        self.attention_units = attention_units

    def build_fusion(self, dims):
        self.kernels, self.biases = self.add_projections(dims, self.units)
        self.score_kernel = self.add_weight(
            shape=(self.units, self.attention_units), initializer="glorot_uniform", name="score_kernel"
        )
        self.score_bias = self.add_weight(shape=(self.attention_units,), initializer="zeros", name="score_bias")
        self.score_vector = self.add_weight(
            shape=(self.attention_units, 1), initializer="glorot_uniform", name="score_vector"
        )

    def modality_weights(self, features):
        """Per-example attention weights `(batch, n_modalities)` and projections."""
        hidden = ops.tanh(ops.stack(self.project(features, self.kernels, self.biases), axis=1))
        # hidden: (batch, n_modalities, units)
        scores = ops.matmul(ops.tanh(ops.matmul(hidden, self.score_kernel) + self.score_bias), self.score_vector)
        return ops.softmax(ops.squeeze(scores, axis=-1), axis=-1), hidden

    def fuse(self, features):
        weights, hidden = self.modality_weights(features)
        return ops.sum(ops.expand_dims(weights, -1) * hidden, axis=1)

    def get_config(self):
        return {**super().get_config(), "attention_units": self.attention_units}
