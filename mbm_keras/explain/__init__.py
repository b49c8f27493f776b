"""Why a model answers as it does: each feature's (modality's) share of the answer, and which parts of each
input mattered.

- `modality_shapley(model, inputs)`: Shapley values of the features, with the model's own "absent" masks;
- `integrated_gradients(model, example)`: attributions of pixels, tokens, samples and cells.
"""

from mbm_keras.explain.gradients import Attributions, integrated_gradients
from mbm_keras.explain.shapley import ShapleyValues, modality_shapley

__all__ = ["Attributions", "ShapleyValues", "integrated_gradients", "modality_shapley"]
