"""The generic builder behind every keras.applications image encoder.

Each variant (resnet50.py, vgg16.py, ...) only names its backbone, its
preprocessing mode and its weights file, like `ResNet50` over `ResNet` in
keras.applications.
"""

import keras

from mbm_keras.encoders.base import encoder_model, register_encoder
from mbm_keras.layers import ImagePreprocessing
from mbm_keras.weights import build_with_weights, check_weights


def build_application_encoder(
    backbone_fn,
    input_shape,
    *,
    encoder,
    pretrained_file,
    preprocessing,
    weights=None,
    pooling="avg",
    name="image_encoder",
    **backbone_kwargs,
):
    """Wraps a keras.applications backbone as `image -> pooled features`.

    Args:
        backbone_fn: e.g. `keras.applications.ResNet50`.
        input_shape: `(height, width, 3)`; RGB floats in [0, 255].
        encoder: the registry name, for error messages.
        pretrained_file: the `_notop` weights file name in Keras' cache.
        preprocessing: an `ImagePreprocessing` mode, or "none" when the backbone
            preprocesses by itself (MobileNetV3, EfficientNet).
        weights: None, "imagenet" or a path to weights of the `include_top=False`
            backbone.
        pooling: "avg" or "max".
        name: the encoder model's name.
    """
    if pooling not in ("avg", "max"):
        raise ValueError(f"pooling must be 'avg' or 'max'. Received: pooling={pooling!r}")
    pool = keras.layers.GlobalAveragePooling2D if pooling == "avg" else keras.layers.GlobalMaxPooling2D
    weights = check_weights(weights, encoder, pretrained_file)
    inputs = keras.Input(input_shape, name=f"{name}_input")
    backbone = build_with_weights(
        lambda w: backbone_fn(
            include_top=False,
            weights=w,
            input_shape=tuple(input_shape),
            pooling=None,  # pooled outside, so the grid is the encoder's sequence
            **backbone_kwargs,
        ),
        weights,
        encoder,
        pretrained_file,
    )
    x = inputs
    if preprocessing != "none":
        x = ImagePreprocessing(preprocessing, name="preprocessing")(x)
    grid = backbone(x)
    return encoder_model(inputs, pool(name="pool")(grid), name, sequence=grid)


def register_application_encoder(encoder_name, backbone_fn, *, pretrained_file, preprocessing, description):
    """Registers `encoder_name` as a keras.applications encoder and returns its builder.

    The builder has the common encoder signature
    `build(input_shape, *, weights=None, name="image_encoder", pooling="avg", **kwargs)`;
    extra kwargs go to `backbone_fn`.
    """

    def build(input_shape, *, weights=None, name="image_encoder", **kwargs):
        return build_application_encoder(
            backbone_fn,
            input_shape,
            encoder=encoder_name,
            pretrained_file=pretrained_file,
            preprocessing=preprocessing,
            weights=weights,
            name=name,
            **kwargs,
        )

    build.__name__ = f"build_{encoder_name}"
    build.__doc__ = (
        f"{description}.\n\n`include_top=False`, pooled; takes RGB floats in [0, 255] "
        f"and applies {backbone_fn.__name__}'s preprocessing inside the model.\n\n"
        "Args:\n    input_shape: `(height, width, 3)`, at least 32x32.\n"
        "    weights: None, 'imagenet' (Keras' cache) or a weights file path.\n"
        "    name: the encoder model's name.\n"
        f"    **kwargs: `pooling` ('avg' or 'max') and other {backbone_fn.__name__} arguments.\n\n"
        f"Example:\n    >>> encoder = build_{encoder_name}((32, 32, 3))\n"
    )
    return register_encoder(
        encoder_name, modality="image", pretrained_file=pretrained_file, description=description
    )(build)
