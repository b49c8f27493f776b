"""`late` fusion: one linear head per modality, logits averaged."""

from keras import ops

from mbm_keras.fusions.base import Fusion, register_fusion


@register_fusion("late", description="per-modality heads, logits averaged")
class LateFusion(Fusion):
    """Each modality predicts on its own (logits_m = W_m x_m + b_m); the output
    is the mean of the logits. `build_fusion_model` sets `units` to the number
    of outputs and puts only the head's activation after it.

    Args:
        units: number of outputs (classes).

    Examples:
        >>> logits = LateFusion(units=10)({"image": img_feats, "text": txt_feats})
    """

    produces_logits = True

    def build_fusion(self, dims):
        self.kernels, self.biases = self.add_projections(dims, self.units)

    def fuse(self, features):
        logits = self.project(features, self.kernels, self.biases)
        return ops.mean(ops.stack(logits, axis=1), axis=1)
