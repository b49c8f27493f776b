"""`softmax` head: single-label classification, integer labels."""

import keras

from mbm_keras.heads.base import Head, register_head


@register_head("softmax", description="multi-class, one integer label per example")
class SoftmaxHead(Head):
    activation = "softmax"
    score = ("accuracy", "max")  # (metric, better) that compares models of this head
    min_outputs = 2

    def loss(self):
        return keras.losses.SparseCategoricalCrossentropy()

    def metrics(self):
        return [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]
