"""The encoder registry and the one signature every encoder builder shares.

Every encoder can also return its sequence (`create_encoder(..., sequence=True)`):
its model then outputs `{"pooled": (batch, dim), "sequence": (batch, steps,
dim), "mask": (batch, steps)}`, as KerasHub backbones return hidden states with
a padding mask. A builder hands its sequence to `finish_encoder` (image grid
cells, text tokens, audio frames, time steps); one that gives none is its
pooled vector as a single token.

An encoder builder is a function

    build(input_shape, *, weights=None, name="<modality>_encoder", **kwargs)
        -> keras.Model

that maps one modality's input to a pooled feature vector `(batch, dim)`.
The extra arguments a modality's builders receive come from the modality
(`Modality.encoder_kwargs`: text builders get `vocab_size`, audio builders
`sample_rate`).
"""

import contextlib
import contextvars

import keras

from mbm_keras.layers import SequenceMask
from mbm_keras.modalities import list_modalities
from mbm_keras.registry import Registry
from mbm_keras.weights import check_weights

# The modalities registered when the package loads (`list_modalities()` is the live list).
MODALITIES = tuple(list_modalities())

ENCODERS = Registry("encoder")


def register_encoder(name, modality, pretrained_file=None, description="", preset=False):
    """Registers an encoder builder under `name`.

    Args:
        name: the name users pass, e.g. `build_fusion_model(image=name)`.
        modality: a registered modality (`list_modalities()`).
        pretrained_file: file name of the ImageNet weights in Keras' cache
            (`$KERAS_HOME/models/`), or None when no pretrained weights exist.
        description: one line for `mbm-keras zoo`.
        preset: the builder takes a KerasHub preset (`preset=`), which sets
            its architecture and weights.

    Examples:
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
        preset=preset,
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

    Examples:
        >>> list_encoders("text")
        ['bilstm', 'cnn', 'gru', 'keras_hub', 'lstm']
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

    Examples:
        >>> encoder_info("resnet50")["pretrained_file"]
        'resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5'
    """
    _check_modality(modality)
    ENCODERS.get(name, modality=modality)
    return ENCODERS.meta(name)


# Set by create_encoder(sequence=True) while a builder runs; read by encoder_model.
_WITH_SEQUENCE = contextvars.ContextVar("mbm_keras_encoder_sequence", default=False)


@contextlib.contextmanager
def _sequence_outputs(enabled):
    token = _WITH_SEQUENCE.set(bool(enabled))
    try:
        yield
    finally:
        _WITH_SEQUENCE.reset(token)


def offered_kwargs(name, offered):
    """The part of `offered` (arguments a modality offers every encoder of its
    kind: `vocab_size`, a text feature's `preset`) that builder `name` names.

    Examples:
        >>> offered_kwargs("lstm", {"vocab_size": 50, "preset": "bert_tiny"})
        {'vocab_size': 50}
    """
    import inspect

    parameters = inspect.signature(ENCODERS.get(name)).parameters  # named ones only: **kwargs names none
    return {k: v for k, v in offered.items() if k in parameters and parameters[k].kind is not parameters[k].VAR_KEYWORD}


def create_encoder(name, modality, input_shape, /, *, weights=None, sequence=False, offered=None, **kwargs):
    """Builds the encoder registered as `name` for `modality`.

    Args:
        name: a name from `list_encoders(modality)`.
        modality: the modality it must encode; a name registered for another
            modality is refused.
        input_shape: shape of one example, without the batch dimension.
        weights: None (random), "imagenet" where available, or a file path.
        sequence: also output the sequence and its mask: the model returns
            `{"pooled", "sequence", "mask"}` (for sequence fusions).
        offered: arguments the modality offers (`Modality.encoder_kwargs`);
            the builder gets those it names (see `offered_kwargs`), `kwargs` win.
        **kwargs: builder-specific overrides (units, embed_dim, ...), and `name`
            of the encoder model (default `<modality>_encoder`).

    Examples:
        >>> enc = create_encoder("small_cnn", "image", (32, 32, 3))
        >>> create_encoder("small_cnn", "image", (32, 32, 3), sequence=True).output["sequence"].shape
        (None, 16, 64)
    """
    _check_modality(modality)
    builder = ENCODERS.get(name, modality=modality)
    kwargs = {**offered_kwargs(name, offered or {}), **kwargs}
    kwargs.setdefault("name", f"{modality}_encoder")
    try:
        with _sequence_outputs(sequence):
            model = builder(input_shape, weights=weights, **kwargs)
    except TypeError as e:
        if "unexpected keyword argument" in str(e):
            raise TypeError(
                f"Encoder {name!r} ({modality}) got an unknown keyword argument: {e}. "
                f"Check {modality}_kwargs (or the feature's kwargs)."
            ) from None
        raise
    if sequence and not isinstance(model.output, dict):  # a builder that does not use encoder_model
        model = keras.Model(model.inputs, _with_sequence(model.output, None, None), name=model.name)
    return model


def wants_sequence():
    """True while `create_encoder(sequence=True)` runs a builder: a builder whose
    pooled vector is a recurrent layer's last state then lets that layer also
    return its sequence (see `apply_recurrent`)."""
    return _WITH_SEQUENCE.get()


def apply_recurrent(rnn_class, x, *, bidirectional=False, **kwargs):
    """`(last state, sequence)` of a recurrent layer over `x`; the sequence is
    None unless the encoder is built with its sequence (`wants_sequence()`).

    Args:
        rnn_class: `keras.layers.LSTM`, `GRU` or `SimpleRNN`.
        x: `(batch, steps, dim)`, a Keras mask attached or not.
        bidirectional: wrap it in `Bidirectional` (states concatenated).
        **kwargs: the layer's arguments (units, unroll, name).

    Examples:
        >>> state, sequence = apply_recurrent(keras.layers.GRU, frames, units=64, name="gru")
    """
    both = wants_sequence()
    rnn = rnn_class(return_sequences=both, return_state=both, **kwargs)
    if bidirectional:
        rnn = keras.layers.Bidirectional(rnn, name="bidirectional")
    if not both:
        return rnn(x), None
    sequence, *states = rnn(x)
    if not bidirectional:
        return states[0], sequence  # h (LSTM also returns c)
    half = len(states) // 2  # forward states, then backward states
    return keras.layers.Concatenate(name="last_states")([states[0], states[half]]), sequence


def encoder_input(input_shape, name, dtype="float32"):
    """The `keras.Input` of an encoder model called `name`."""
    return keras.Input(tuple(input_shape), dtype=dtype, name=f"{name}_input")


def _with_sequence(pooled, sequence, mask):
    if sequence is None:  # the pooled vector as one token
        sequence = keras.layers.Reshape((1, pooled.shape[-1]), name="as_token")(pooled)
    if len(sequence.shape) == 4:  # a (height, width, channels) grid: one token per cell
        sequence = keras.layers.Reshape((-1, sequence.shape[-1]), name="grid_tokens")(sequence)
    if mask is None:
        mask = SequenceMask(name="sequence_mask")(sequence)
    return {"pooled": pooled, "sequence": sequence, "mask": mask}


def encoder_model(inputs, pooled, name, sequence=None, mask=None):
    """The encoder `keras.Model`: `inputs -> pooled`, or, under
    `create_encoder(sequence=True)`, `inputs -> {"pooled", "sequence", "mask"}`.

    Args:
        inputs: the encoder's `keras.Input`.
        pooled: the `(batch, dim)` feature vector.
        name: the model's name.
        sequence: `(batch, steps, dim)` (or a `(batch, h, w, c)` grid) before
            pooling; None: the pooled vector as one token.
        mask: `(batch, steps)` (1 = real, 0 = padding); None: all real, or
            from the token ids (`SequenceMask(inputs)`) for text.

    Examples:
        >>> model = encoder_model(inputs, features, "image_encoder", sequence=grid)
    """
    if not _WITH_SEQUENCE.get():
        return keras.Model(inputs, pooled, name=name)
    return keras.Model(inputs, _with_sequence(pooled, sequence, mask), name=name)


def finish_encoder(inputs, features, *, weights, encoder, name, sequence=None, mask=None):
    """Wraps `inputs -> features` (and the sequence, see `encoder_model`) as the
    encoder model and loads `weights` (None or a file saved with
    `encoder.save_weights`)."""
    model = encoder_model(inputs, features, name, sequence, mask)
    path = check_weights(weights, encoder, pretrained_file=None)
    if path is not None:
        try:
            model.load_weights(path)
        except Exception as e:
            raise ValueError(
                f"Could not load weights file {path} into encoder {encoder!r}: {e}"
            ) from e
    return model
