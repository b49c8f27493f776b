"""`gated` fusion: the gated multimodal unit (Arevalo et al. 2017), n modalities."""

from keras import ops

from mbm_keras.fusions.base import Fusion, register_fusion


@register_fusion("gated", description="gated multimodal unit; gates start equal (an average)")
class GatedFusion(Fusion):
    """h_m = tanh(W_m x_m + b_m); gates z = softmax over modalities of
    W_z [x_1; ...; x_n]; output sum_m z_m * h_m (per unit).

    The gate weights start at zero, so training begins from an equal-weight
    average of the modality projections and learns which modality to trust
    per example and per unit.

    Args:
        units: size of the fused vector.

    Examples:
        >>> fused = GatedFusion(units=64)({"image": img_feats, "audio": aud_feats})
    """

    def build_fusion(self, dims):
        self.kernels, self.biases = self.add_projections(dims, self.units)
        n = len(dims)
        self.gate_kernel = self.add_weight(
            shape=(sum(dims), n * self.units), initializer="zeros", name="gate_kernel"
        )
        self.gate_bias = self.add_weight(shape=(n * self.units,), initializer="zeros", name="gate_bias")

    def fuse(self, features):
        n = len(features)
        hidden = ops.tanh(ops.stack(self.project(features, self.kernels, self.biases), axis=1))
        # hidden: (batch, n_modalities, units)
        if n == 1:  # one feature (a retrieval tower's): its gate is softmax over one value, exactly 1
            return hidden[:, 0]
        x = ops.concatenate(features, axis=-1)
        gates = ops.matmul(x, self.gate_kernel) + self.gate_bias
        gates = ops.softmax(ops.reshape(gates, (-1, n, self.units)), axis=1)
        return ops.sum(gates * hidden, axis=1)
