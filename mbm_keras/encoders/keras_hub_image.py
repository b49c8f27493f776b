"""`keras_hub_image` image encoder: a KerasHub vision backbone from a preset.

The preset's image converter's rescaling (its `scale` and `offset`, per
channel or not) runs inside the model on the zoo's [0, 255] RGB input, as
keras.applications backbones' preprocessing does; resizing stays in the data
pipeline (`image_size`). Presets load offline (`mbm_keras/hub.py`); the preset
comes from `image_kwargs={"preset": ...}` (or `model.image_kwargs` in a config).
"""

import json
import os

import keras

from mbm_keras.encoders.base import encoder_input, finish_encoder, register_encoder


@register_encoder("keras_hub_image", modality="image", preset=True,
                  description="a KerasHub vision backbone (ResNet, EfficientNet, ViT, ...) from a preset")
def build_keras_hub_image(input_shape, *, weights=None, name="image_encoder", preset=None, preset_weights=True):
    """The backbone of a KerasHub vision preset, global-average pooled.

    Args:
        input_shape: `(height, width, 3)`; RGB floats in [0, 255].
        weights: None (the preset's weights) or a file saved from this encoder.
        name: the encoder model's name.
        preset: a KerasHub vision preset folder or cached name.
        preset_weights: False keeps the architecture with random weights.

    Examples:
        >>> encoder = build_keras_hub_image((224, 224, 3), preset="resnet_50_imagenet")
    """
    from mbm_keras.hub import load_backbone, resolve_preset

    if preset is None:
        raise ValueError("The keras_hub_image encoder needs a KerasHub vision preset: pass image_kwargs={'preset': "
                         "FOLDER_OR_NAME} (model.image_kwargs in a config)")
    folder = resolve_preset(preset, "image")
    backbone = load_backbone(folder, "image", load_weights=preset_weights and weights is None)
    fixed = tuple(backbone.input.shape[1:3]) if len(backbone.input.shape) == 4 else ()
    if any(d is not None for d in fixed) and tuple(fixed) != tuple(input_shape[:2]):
        raise ValueError(f"Preset {preset!r} takes {fixed[0]}x{fixed[1]} images; set image_size to "
                         f"[{fixed[0]}, {fixed[1]}] (it is {input_shape[0]}x{input_shape[1]})")
    scale, offset = _rescaling(folder)
    inputs = encoder_input(input_shape, name)
    x = keras.layers.Rescaling(scale, offset, name="preprocessing")(inputs)
    grid = backbone(x)
    if len(grid.shape) == 4:  # (batch, h, w, c): convolutional
        pooled = keras.layers.GlobalAveragePooling2D(name="pool")(grid)
    else:  # (batch, tokens, dim): a vision transformer
        pooled = keras.layers.GlobalAveragePooling1D(name="pool")(grid)
    return finish_encoder(inputs, pooled, weights=weights, encoder="keras_hub_image", name=name, sequence=grid)


def _rescaling(folder):
    """The preset image converter's `(scale, offset)` (1/255 and 0 without one)."""
    path = os.path.join(folder, "image_converter.json")
    if not os.path.isfile(path):
        return 1.0 / 255, 0.0
    with open(path, encoding="utf-8") as f:
        config = json.load(f).get("config", {})
    scale = config.get("scale")
    offset = config.get("offset")
    return (1.0 if scale is None else scale), (0.0 if offset is None else offset)
