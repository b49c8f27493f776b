"""`cnn` text encoder: 1-D convolutions over word embeddings, max-pooled (Kim 2014)."""

import keras

from mbm_keras.encoders.base import finish_encoder, register_encoder
from mbm_keras.layers import SequenceMask
from mbm_keras.encoders.text import embed_tokens


@register_encoder("cnn", modality="text", description="1-D convolutions + global max pool (Kim 2014)")
def build_text_cnn(
    input_shape,
    *,
    weights=None,
    name="text_encoder",
    vocab_size,
    embed_dim=64,
    filters=64,
    kernel_sizes=(3, 5),
):
    """Parallel Conv1D branches over embeddings, each max-pooled, concatenated.

    Args:
        input_shape: `(text_length,)`.
        weights: None or a file saved from this encoder.
        name: the encoder model's name.
        vocab_size: token ids are < vocab_size.
        embed_dim: embedding size.
        filters: filters per branch.
        kernel_sizes: one branch per kernel size.

    Examples:
        >>> encoder = build_text_cnn((8,), vocab_size=50)
    """
    # Convolutions do not consume Keras masks; padding ids get their own embedding.
    tokens, x = embed_tokens(input_shape, name, vocab_size, embed_dim, mask_zero=False)
    branches, convolved = [], []
    for k in kernel_sizes:
        b = keras.layers.Conv1D(filters, k, padding="same", activation="relu", name=f"conv{k}")(x)
        convolved.append(b)
        branches.append(keras.layers.GlobalMaxPooling1D(name=f"pool{k}")(b))
    features = (
        branches[0] if len(branches) == 1 else keras.layers.Concatenate(name="concat")(branches)
    )
    # Its sequence: the convolutions at every token, masked where the ids are padding.
    sequence = convolved[0] if len(convolved) == 1 else keras.layers.Concatenate(name="token_concat")(convolved)
    return finish_encoder(tokens, features, weights=weights, encoder="cnn", name=name, sequence=sequence,
                          mask=SequenceMask(name="token_mask")(tokens))
