"""The encoder registry and the one signature every encoder builder shares.

An encoder builder is a function

    build(input_shape, *, weights=None, name="<modality>_encoder", **kwargs)
        -> keras.Model

that maps one modality's input to a pooled feature vector `(batch, dim)`.
The extra arguments a modality's builders receive come from the modality
(`Modality.encoder_kwargs`: text builders get `vocab_size`, audio builders
`sample_rate`).
"""

import keras

from mbm_keras.modalities import list_modalities
from mbm_keras.registry import Registry
from mbm_keras.weights import check_weights

# The modalities registered when the package loads (`list_modalities()` is the live list).
MODALITIES = tuple(list_modalities())

ENCODERS = Registry("encoder")


def register_encoder(name, modality, pretrained_file=None, description=""):
    """Registers an encoder builder under `name`.

    Args:
        name: the name users pass, e.g. `build_fusion_model(image=name)`.
        modality: a registered modality (`list_modalities()`).
        pretrained_file: file name of the ImageNet weights in Keras' cache
            (`$KERAS_HOME/models/`), or None when no pretrained weights exist.
        description: one line for `mbm-keras zoo`.

    Example:
        >>> @register_encoder("my_cnn", modality="image")
        ... def build_my_cnn(input_shape, *, weights=None, name="image_encoder"):
        ...     ...
    """
    if modality not in list_modalities():
        raise ValueError(f"modality must be one of {tuple(list_modalities())}. Received: modality={modality!r}")
    return ENCODERS.register(
        name,
        modality=modality,
        pretrained_file=pretrained_file,
        description=description,
    )


def _check_modality(modality):
    if modality is not None and modality not in list_modalities():
        raise ValueError(
            f"Unknown modality {modality!r}. Valid modalities: {', '.join(list_modalities())}."
        )


def list_encoders(modality=None, pattern="*"):
    """Names of registered encoders, optionally for one modality.

    Args:
        modality: a registered modality ("image", "text", ...), or None for all.
        pattern: shell-style wildcard on the name, e.g. "logmel_*".

    Example:
        >>> list_encoders("text")
        ['bilstm', 'cnn', 'gru', 'lstm']
    """
    _check_modality(modality)
    return ENCODERS.list(pattern, modality=modality)


def encoder_info(name, modality=None):
    """The registry metadata of one encoder.

    Args:
        name: a name from `list_encoders()`.
        modality: if given, the encoder must be registered for it.

    Returns:
        dict with `modality`, `pretrained_file` (None without ImageNet weights)
        and `description`.

    Example:
        >>> encoder_info("resnet50")["pretrained_file"]
        'resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5'
    """
    _check_modality(modality)
    ENCODERS.get(name, modality=modality)
    return ENCODERS.meta(name)


def create_encoder(name, modality, input_shape, /, *, weights=None, **kwargs):
    """Builds the encoder registered as `name` for `modality`.

    Args:
        name: a name from `list_encoders(modality)`.
        modality: the modality it must encode; a name registered for another
            modality is refused.
        input_shape: shape of one example, without the batch dimension.
        weights: None (random), "imagenet" where available, or a file path.
        **kwargs: builder-specific overrides (units, embed_dim, ...), and `name`
            of the encoder model (default `<modality>_encoder`).

    Example:
        >>> enc = create_encoder("small_cnn", "image", (32, 32, 3))
    """
    _check_modality(modality)
    builder = ENCODERS.get(name, modality=modality)
    kwargs.setdefault("name", f"{modality}_encoder")
    try:
        return builder(input_shape, weights=weights, **kwargs)
    except TypeError as e:
        if "unexpected keyword argument" in str(e):
            raise TypeError(
                f"Encoder {name!r} ({modality}) got an unknown keyword argument: {e}. "
                f"Check {modality}_kwargs (or the feature's kwargs)."
            ) from None
        raise


def encoder_input(input_shape, name, dtype="float32"):
    """The `keras.Input` of an encoder model called `name`."""
    return keras.Input(tuple(input_shape), dtype=dtype, name=f"{name}_input")


def finish_encoder(inputs, features, *, weights, encoder, name):
    """Wraps `inputs -> features` as the encoder model and loads `weights`
    (None or a file saved with `encoder.save_weights`)."""
    model = keras.Model(inputs, features, name=name)
    path = check_weights(weights, encoder, pretrained_file=None)
    if path is not None:
        try:
            model.load_weights(path)
        except Exception as e:
            raise ValueError(
                f"Could not load weights file {path} into encoder {encoder!r}: {e}"
            ) from e
    return model
