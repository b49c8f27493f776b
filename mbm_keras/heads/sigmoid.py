"""`sigmoid` head: multi-label classification, multi-hot labels."""

import keras

from mbm_keras.heads.base import Head, register_head


@register_head("sigmoid", description="multi-label, a multi-hot vector per example")
class SigmoidHead(Head):
    activation = "sigmoid"
    score = ("auc", "max")  # (metric, better) that compares models of this head

    def loss(self):
        return keras.losses.BinaryCrossentropy()

    def metrics(self):
        return [
            keras.metrics.BinaryAccuracy(name="accuracy"),
            keras.metrics.AUC(multi_label=True, name="auc"),
        ]
