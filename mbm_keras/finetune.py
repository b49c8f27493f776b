"""Two-stage fine-tuning: freeze pretrained backbones, then unfreeze the top.

A backbone is a nested model inside an encoder (a layer named
`<modality>_encoder`), such as the keras.applications ResNet50 inside
`image_encoder`. This holds for models reloaded from `.keras` files too.
"""

import keras


def find_backbones(model):
    """The nested backbone models of a fusion model's encoders.

    Args:
        model: a model from `build_fusion_model` (or reloaded from `.keras`).

    Returns:
        A list of `keras.Model`s, e.g. the ResNet50 inside `image_encoder`.

    Examples:
        >>> [b.name for b in find_backbones(model)]
        ['resnet50']
    """
    found = []
    for layer in model.layers:
        if isinstance(layer, keras.Model) and layer.name.endswith("_encoder"):
            found.extend(sub for sub in layer.layers if isinstance(sub, keras.Model))
    return found


def freeze_backbones(model):
    """Freezes every backbone (weights fixed, BatchNorm in inference mode).

    Args:
        model: a model from `build_fusion_model` (or reloaded from `.keras`).

    Returns:
        The names of the frozen backbones. Recompile afterwards if the model
        was compiled (build_fusion_model does this for you).

    Examples:
        >>> freeze_backbones(model)
        ['resnet50']
    """
    backbones = find_backbones(model)
    for backbone in backbones:
        backbone.trainable = False
    return [b.name for b in backbones]


def unfreeze_backbone(model, num_layers=None, learning_rate=1e-5, recompile=True):
    """The standard second stage: unfreeze the top `num_layers` layers of each
    backbone (all when None), keep BatchNorm layers frozen and in inference
    mode, and recompile with a lower learning rate, keeping loss and metrics.

    Args:
        model: a model from `build_fusion_model` (or reloaded from `.keras`).
        num_layers: how many of each backbone's last layers to train; None for all.
        learning_rate: Adam learning rate of the second stage.
        recompile: recompile so the change takes effect (needed after fit).

    Returns:
        The number of layers made trainable.

    Examples:
        >>> model.fit(train, epochs=5)              # stage one: backbone frozen
        >>> unfreeze_backbone(model, num_layers=20)
        >>> model.fit(train, epochs=5)              # stage two: fine-tuning
    """
    if num_layers is not None and (not isinstance(num_layers, int) or num_layers < 1):
        raise ValueError(f"num_layers must be a positive int or None. Received: num_layers={num_layers!r}")
    backbones = find_backbones(model)
    if not backbones:
        raise ValueError(f"Model {model.name!r} has no backbone to unfreeze (no nested model in an encoder).")
    unfrozen = 0
    for backbone in backbones:
        backbone.trainable = True
        top = backbone.layers if num_layers is None else backbone.layers[-num_layers:]
        top_ids = {id(layer) for layer in top}
        for layer in backbone.layers:
            # BatchNorm statistics learned on ImageNet are kept: small fine-tuning
            # batches would wreck them.
            trainable = id(layer) in top_ids and not isinstance(layer, keras.layers.BatchNormalization)
            layer.trainable = trainable
            unfrozen += bool(trainable and layer.weights)
    if recompile:
        config = model.get_compile_config() if model.compiled else None
        if config is None:
            raise ValueError(f"Model {model.name!r} is not compiled; pass recompile=False and compile it yourself.")
        config["optimizer"] = keras.optimizers.serialize(keras.optimizers.Adam(learning_rate))
        model.compile_from_config(config)
    return unfrozen
