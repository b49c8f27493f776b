"""Resolving `weights=` for encoders: None, "imagenet" (Keras' cache) or a file."""

import os


class PretrainedWeightsUnavailable(RuntimeError):
    """ImageNet weights could not be downloaded and are not in Keras' cache.

    The message names the file and the folder to copy it into.

    Examples:
        >>> try:
        ...     model = build_fusion_model(image="resnet50", text="lstm", num_classes=3, weights="imagenet")
        ... except PretrainedWeightsUnavailable as e:
        ...     print(e)   # names resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5 and ~/.keras/models/
    """


def keras_cache_dir():
    """The folder where Keras looks for downloaded weights files."""
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return os.path.join(home, "models")


def check_weights(weights, encoder, pretrained_file):
    """Validates a `weights=` value for the encoder called `encoder`.

    Returns the value to pass on: None, "imagenet" or an absolute path.
    """
    if weights is None:
        return None
    if weights == "imagenet":
        if pretrained_file is None:
            raise ValueError(
                f"Encoder {encoder!r} has no ImageNet weights. Use weights=None or the "
                f"path of a weights file saved from this encoder. Received: weights='imagenet'"
            )
        return "imagenet"
    if not isinstance(weights, (str, os.PathLike)):
        raise TypeError(
            f"weights must be None, 'imagenet' or a file path. Received: weights={weights!r} "
            f"for encoder {encoder!r}"
        )
    path = os.path.abspath(os.fspath(weights))
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"Weights file for encoder {encoder!r} not found: {path} (from weights={weights!r})"
        )
    return path


def build_with_weights(build, weights, encoder, pretrained_file):
    """Calls `build(weights)` and turns an offline download failure into an
    error that says which file to place where."""
    try:
        return build(weights)
    except Exception as e:  # Keras raises a bare Exception on URL fetch failure.
        if weights != "imagenet":
            raise
        target = os.path.join(keras_cache_dir(), pretrained_file)
        raise PretrainedWeightsUnavailable(
            f"Could not load ImageNet weights for encoder {encoder!r}: {e}\n"
            f"Offline? Copy the file '{pretrained_file}' to '{target}' "
            f"(Keras' cache; set KERAS_HOME to move it), or pass weights='/path/to/"
            f"{pretrained_file}', or weights=None for random initialization."
        ) from e
