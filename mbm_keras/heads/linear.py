"""`linear` head: regression of one or more float targets."""

import keras

from mbm_keras.heads.base import Head, register_head


@register_head("linear", description="regression, float targets")
class LinearHead(Head):
    activation = None
    score = ("mae", "min")  # (metric, better) that compares models of this head

    def loss(self):
        return keras.losses.MeanSquaredError()

    def metrics(self):
        return [keras.metrics.MeanAbsoluteError(name="mae")]
