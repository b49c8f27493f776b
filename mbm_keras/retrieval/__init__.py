"""Multimodal search: two-tower embedding models, contrastive training, a vector index, metrics."""

from mbm_keras.retrieval.data import contrastive_dataset
from mbm_keras.retrieval.index import Index, IndexFileError
from mbm_keras.retrieval.metrics import retrieval_metrics
from mbm_keras.retrieval.model import (
    ContrastiveLoss,
    SimilarityLogits,
    build_retrieval_model,
    in_batch_accuracy,
    tower_inputs,
)

__all__ = [
    "ContrastiveLoss",
    "Index",
    "IndexFileError",
    "SimilarityLogits",
    "build_retrieval_model",
    "contrastive_dataset",
    "in_batch_accuracy",
    "retrieval_metrics",
    "tower_inputs",
]
