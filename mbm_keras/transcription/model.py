"""CTC transcription models: a per-frame audio encoder, an optional text context
fused into every frame by cross-attention, per-frame log-probabilities over a
character vocabulary, Keras' own CTC loss and decoder.

Model code uses `keras.layers` and `keras.ops` only (it runs on JAX too)."""

import keras
import numpy as np

from mbm_keras.encoders.base import create_encoder
from mbm_keras.fusions.cross_attention import CrossAttentionFusion
from mbm_keras.layers import TanhGate
from mbm_keras.codecs.vocabulary import Vocabulary


def build_transcription_model(
    vocabulary,
    audio="logmel_tcn",
    context=None,
    *,
    audio_length,
    sample_rate,
    context_length=32,
    context_vocab_size=None,
    audio_kwargs=None,
    context_kwargs=None,
    units=128,
    num_heads=4,
    num_layers=1,
    dropout=0.1,
    learning_rate=1e-3,
    compile=True,
    audio_name="audio",
    context_name="context",
    audio_from=None,
):
    """A functional model `{"audio"[, "context"]} -> (batch, frames, vocabulary.size)`
    log-probabilities; index 0 is CTC's blank.

    With `context` (a zoo text encoder), the context's tokens are encoded as a
    sequence and every audio frame attends to them (`cross_attention` fusion
    with `return_sequence=True`); a learned "no context" token is always there
    to attend to, so an empty context (all padding) is one more input the same
    model serves. The attended frames are added to the audio frames through a
    gate that starts closed (`layers.TanhGate`, as in Flamingo).

    Args:
        vocabulary: a `Vocabulary` (or its size, an int).
        audio: an audio encoder with per-frame output (`logmel_tcn`; the zoo's
            other audio encoders pool more coarsely).
        context: None, or a text encoder name (`cnn`, `lstm`, `gru`, `bilstm`).
        audio_length: samples per clip (clips are padded or cut to it).
        sample_rate: samples per second.
        context_length: tokens per context.
        context_vocab_size: size of the context's token vocabulary (0 padding, 1 unknown).
        audio_kwargs, context_kwargs: the encoders' own arguments.
        units, num_heads, num_layers, dropout: the cross-attention's.
        learning_rate: Adam's step size.
        compile: compile with `keras.losses.CTC` (targets: ids padded with 0).
        audio_name, context_name: the model inputs' names (the features' names
            in a run config).
        audio_from: a trained transcription model (usually without context)
            whose audio encoder and output layer this model copies and
            freezes, so that only the context path trains. As the context's
            gate starts closed, the new model starts out as that model, and
            given an empty context it stays close to it.

    Returns:
        The `keras.Model`; `model.get_layer("audio_encoder")` is the encoder.

    Examples:
        >>> vocab = Vocabulary.fit(["one two", "three"])
        >>> model = build_transcription_model(vocab, audio_length=16000, sample_rate=16000)
        >>> model.output.shape   # (None, 51, 13): 1 s at 20 ms per frame, blank + unknown + 11 characters
    """
    size = vocabulary.size if isinstance(vocabulary, Vocabulary) else int(vocabulary)
    if size < 3:
        raise ValueError(f"A vocabulary needs at least one character besides blank and unknown. Received size {size}")
    audio_in = keras.Input((audio_length,), name=audio_name)
    encoder = create_encoder(audio, "audio", (audio_length,), sequence=True, sample_rate=sample_rate,
                             **(audio_kwargs or {}))
    frames = encoder(audio_in)["sequence"]
    if len(frames.shape) != 3:
        raise ValueError(f"Audio encoder {audio!r} gives no per-frame sequence (shape {frames.shape})")
    inputs = {audio_name: audio_in}
    if context is not None:
        if not context_vocab_size:
            raise ValueError("context_vocab_size is needed with a context encoder (its token vocabulary's size)")
        context_in = keras.Input((context_length,), dtype="int32", name=context_name)
        text = create_encoder(context, "text", (context_length,), sequence=True, vocab_size=int(context_vocab_size),
                              name="context_encoder", **(context_kwargs or {}))(context_in)
        fusion = CrossAttentionFusion(units=units, num_heads=num_heads, num_layers=num_layers, query="audio",
                                      dropout=dropout, return_sequence=True, null_token=True, name="context_fusion")
        attended = fusion({"audio": frames, "context": text["sequence"], "context_mask": text["mask"]})
        # Added to the audio frames through a gate that starts closed (TanhGate): the audio path learns first.
        attended = keras.layers.Dense(frames.shape[-1], name="context_projection")(attended)
        frames = keras.layers.Add(name="with_context")([frames, TanhGate(name="context_gate")(attended)])
        inputs[context_name] = context_in
    x = keras.layers.Dropout(dropout, name="frame_dropout")(frames)
    logits = keras.layers.Dense(size, name="logits")(x)
    log_probs = keras.layers.Activation("log_softmax", dtype="float32", name="log_probs")(logits)
    model = keras.Model(inputs, log_probs, name="transcription_model")
    if audio_from is not None:
        _start_from(audio_from, model)
    if compile:
        model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=keras.losses.CTC())
    return model


def _start_from(base, model):
    """Copies `base`'s audio encoder and output layer into `model`, frozen."""
    for name in ("audio_encoder", "logits"):
        try:
            source = base.get_layer(name)
        except (AttributeError, ValueError):
            raise ValueError(f"audio_from must be a transcription model; it has no layer {name!r}") from None
        target = model.get_layer(name)
        shapes = [tuple(w.shape) for w in source.weights], [tuple(w.shape) for w in target.weights]
        if shapes[0] != shapes[1]:
            raise ValueError(f"audio_from's {name!r} layer does not match this model's (weight shapes {shapes[0]} vs "
                             f"{shapes[1]}): build with the same audio encoder, its arguments and the vocabulary")
        if name == "audio_encoder" and _front_end(source) != _front_end(target):
            raise ValueError(f"audio_from hears its audio differently: its log-mel front end is {_front_end(source)}, "
                             f"this model's {_front_end(target)}; use the same sample_rate and encoder settings")
        target.set_weights(source.get_weights())
        target.trainable = False


def _front_end(encoder):
    """The settings of an audio encoder's log-mel layer that decide what its weights hear."""
    try:
        config = encoder.get_layer("log_mel").get_config()
    except ValueError:
        return None
    keys = ("sampling_rate", "fft_length", "sequence_length", "sequence_stride", "num_mel_bins", "top_db")
    return {k: config.get(k) for k in keys}


def decode(log_probs, vocabulary, beam=None):
    """Transcripts of a batch of per-frame log-probabilities, by
    `keras.ops.ctc_decode`: greedy, or beam search with `beam` beams.

    Args:
        log_probs: `(batch, frames, vocabulary.size)` (a model's output).
        vocabulary: the model's `Vocabulary`.
        beam: None (greedy) or the beam width.

    Returns:
        A list of strings.

    Examples:
        >>> texts = decode(model.predict(x), vocab, beam=8)
    """
    if beam is not None and (isinstance(beam, bool) or int(beam) != beam or beam < 1):
        raise ValueError(f"beam must be a positive int (the beam width) or None for greedy decoding. Received: "
                         f"beam={beam!r}")
    log_probs = np.asarray(log_probs, np.float32)
    lengths = np.full((log_probs.shape[0],), log_probs.shape[1], np.int32)
    if beam:
        paths, _ = keras.ops.ctc_decode(log_probs, lengths, strategy="beam_search", beam_width=int(beam), top_paths=1)
    else:
        paths, _ = keras.ops.ctc_decode(log_probs, lengths, strategy="greedy")
    paths = keras.ops.convert_to_numpy(paths)[0]
    return [vocabulary.decode(row) for row in paths]


def greedy_decode(log_probs, vocabulary):
    """Greedy CTC decoding in plain numpy (the reference the TFLite sidecar's
    stdlib decoder follows): best class per frame, repeats merged, blanks dropped.

    Args:
        log_probs: `(frames, vocabulary.size)` of one clip.
        vocabulary: the model's `Vocabulary`.

    Examples:
        >>> greedy_decode(model.predict(x)[0], vocab)
    """
    best = np.argmax(np.asarray(log_probs), axis=-1)
    merged = [int(c) for i, c in enumerate(best) if i == 0 or c != best[i - 1]]
    return vocabulary.decode([c for c in merged if c != 0])


def pad_targets(texts, vocabulary, length=None):
    """Transcripts as CTC targets: ids padded with 0 to `length` (default: the longest).

    Args:
        texts: transcripts.
        vocabulary: the `Vocabulary`.
        length: the padded width.

    Examples:
        >>> y = pad_targets(["one two"], vocab, length=40)
    """
    ids = [vocabulary.encode(t) for t in texts]
    width = length or max(1, max(len(i) for i in ids))
    too_long = [n for n, i in enumerate(ids) if len(i) > width]
    if too_long:
        raise ValueError(f"Transcript {too_long[0]} has {len(ids[too_long[0]])} symbols; the targets hold {width}")
    out = np.zeros((len(ids), width), np.int32)
    for n, i in enumerate(ids):
        out[n, : len(i)] = i
    return out


def transcription_roles(model, pre):
    """`(audio feature, context feature or None)` of a trained transcription model, by its inputs.

    Args:
        model: the transcription model.
        pre: its preprocessor (each input's modality).

    Examples:
        >>> transcription_roles(*load_run("runs/transcription"))   # ("audio", "text")
    """
    names = list(model.input) if isinstance(model.input, dict) else [t.name for t in model.inputs]
    audio = next(n for n in names if pre.feature_modalities.get(n) == "audio")
    context = next((n for n in names if pre.feature_modalities.get(n) == "text"), None)
    return audio, context
