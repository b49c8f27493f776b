"""Shared parts of the text encoders: int32 token ids in, 0 = padding."""

import keras

from mbm_keras.encoders.base import apply_recurrent, encoder_input, finish_encoder, register_encoder
from mbm_keras.layers import SequenceMask


def embed_tokens(input_shape, name, vocab_size, embed_dim, mask_zero):
    """Returns `(token_ids_input, embeddings)`."""
    if len(tuple(input_shape)) != 1:
        raise ValueError(
            f"Text encoders take `(text_length,)` token ids. Received: input_shape={input_shape}"
        )
    if not isinstance(vocab_size, int) or vocab_size < 2:
        raise ValueError(f"vocab_size must be an int >= 2. Received: vocab_size={vocab_size!r}")
    tokens = encoder_input(input_shape, name, dtype="int32")
    x = keras.layers.Embedding(vocab_size, embed_dim, mask_zero=mask_zero, name="embedding")(tokens)
    return tokens, x


def register_recurrent_text_encoder(encoder_name, rnn_class, *, bidirectional, description):
    """Registers `encoder_name` as Embedding(mask_zero) -> [Bidirectional] RNN (last state).

    The builder's extra arguments: `vocab_size` (given by build_fusion_model),
    `embed_dim=64`, `units=64`, `unroll=False` (True for fixed-length int8
    TFLite export).
    """

    def build(
        input_shape,
        *,
        weights=None,
        name="text_encoder",
        vocab_size,
        embed_dim=64,
        units=64,
        unroll=False,
    ):
        tokens, x = embed_tokens(input_shape, name, vocab_size, embed_dim, mask_zero=True)
        state, sequence = apply_recurrent(rnn_class, x, bidirectional=bidirectional, units=units, unroll=unroll,
                                          name=rnn_class.__name__.lower())
        # Its sequence: the recurrent outputs at every token, masked where the ids are padding.
        return finish_encoder(tokens, state, weights=weights, encoder=encoder_name, name=name, sequence=sequence,
                              mask=SequenceMask(name="token_mask")(tokens))

    build.__name__ = f"build_{encoder_name}"
    build.__doc__ = (
        f"{description}.\n\nArgs:\n    input_shape: `(text_length,)`.\n"
        "    weights: None or a file saved from this encoder.\n"
        "    name: the encoder model's name.\n    vocab_size: token ids are < vocab_size.\n"
        "    embed_dim: embedding size.\n    units: recurrent units (per direction).\n"
        "    unroll: unroll the recurrence (fixed length; for int8 TFLite).\n\n"
        f"Example:\n    >>> encoder = build_{encoder_name}((8,), vocab_size=50)\n"
    )
    return register_encoder(encoder_name, modality="text", description=description)(build)
