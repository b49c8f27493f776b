"""mbm_keras: multimodal fusion models in Keras 3.

Encode each modality with a network suited to it, fuse the feature vectors,
put a task head on top:

    >>> from mbm_keras import build_fusion_model
    >>> model = build_fusion_model(image="resnet50", text="bilstm", fusion="concat",
    ...                            num_classes=10, weights=None)
"""

__version__ = "0.1.0"

from mbm_keras.encoders import MODALITIES, create_encoder, encoder_info, list_encoders, register_encoder
from mbm_keras.finetune import find_backbones, freeze_backbones, unfreeze_backbone
from mbm_keras.fusion_model import build_fusion_model
from mbm_keras.fusions import Fusion, create_fusion, list_fusions, register_fusion
from mbm_keras.heads import Head, get_head, list_heads, register_head
from mbm_keras.layers import ImagePreprocessing, ModalityMask
from mbm_keras.model_spec import (CompileOptions, EncoderOptions, Feature, FusionModelSpec, FusionOptions, HeadOptions,
                                  InputOptions)
from mbm_keras.weights import PretrainedWeightsUnavailable

# The autoencoders' layers and loss are registered on import, so a pretraining run's model.keras loads.
from mbm_keras import pretraining  # noqa: E402,F401

__all__ = [
    "MODALITIES",
    "CompileOptions",
    "EncoderOptions",
    "Feature",
    "Fusion",
    "FusionModelSpec",
    "FusionOptions",
    "HeadOptions",
    "InputOptions",
    "Head",
    "ImagePreprocessing",
    "ModalityMask",
    "PretrainedWeightsUnavailable",
    "build_fusion_model",
    "create_encoder",
    "create_fusion",
    "encoder_info",
    "find_backbones",
    "freeze_backbones",
    "get_head",
    "list_encoders",
    "list_fusions",
    "list_heads",
    "register_encoder",
    "register_fusion",
    "register_head",
    "unfreeze_backbone",
]
