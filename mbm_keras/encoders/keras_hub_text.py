"""`keras_hub` text encoder: a KerasHub backbone (BERT-class) from a preset.

The feature is tokenized by the same preset (`text_tokenizer: preset`,
`text_preset: <folder or name>`, see `mbm_keras/data/text.py`), and the
modality hands that preset to this builder, so the token ids and the
embedding table always agree. Presets load offline (`mbm_keras/hub.py`).
"""

import keras

from mbm_keras.encoders.base import encoder_input, finish_encoder, register_encoder
from mbm_keras.layers import BackboneTextInputs, MaskedMean, SequenceMask


@register_encoder("keras_hub", modality="text", preset=True,
                  description="a KerasHub text backbone (BERT-class) from a preset, tokenized by the preset")
def build_keras_hub_text(
    input_shape,
    *,
    weights=None,
    name="text_encoder",
    vocab_size,
    preset=None,
    preset_weights=True,
    pooling="backbone",
):
    """The backbone of a KerasHub preset over the preset's token ids.

    Args:
        input_shape: `(text_length,)`, at most the backbone's
            `max_sequence_length`.
        weights: None (the preset's weights) or a file saved from this encoder.
        name: the encoder model's name.
        vocab_size: the tokenizer's vocabulary size; must be the backbone's.
        preset: a KerasHub preset folder or cached name (given by the text
            feature when it is tokenized with `text_preset`).
        preset_weights: False keeps the architecture with random weights.
        pooling: "backbone" (its pooled output, e.g. BERT's [CLS] projection,
            or the masked mean where it has none) or "mean" (masked mean of
            the token states).

    Examples:
        >>> encoder = build_keras_hub_text((16,), vocab_size=30522, preset="bert_tiny_en_uncased")
    """
    import keras_hub

    from mbm_keras.hub import load_backbone, resolve_preset

    if preset is None:
        raise ValueError(
            "The keras_hub text encoder needs a KerasHub preset: tokenize the text feature with it "
            "(data.preprocessing text_tokenizer: preset and text_preset: FOLDER_OR_NAME, or the same options of "
            "fit_preprocessor), or pass text_kwargs={'preset': ...}")
    if pooling not in ("backbone", "mean"):
        raise ValueError(f"pooling must be 'backbone' or 'mean'. Received: pooling={pooling!r}")
    folder = resolve_preset(preset, "text")
    backbone = load_backbone(folder, "text", load_weights=preset_weights and weights is None)
    length = tuple(input_shape)[0] if len(tuple(input_shape)) == 1 else None
    if length is None:
        raise ValueError(f"Text encoders take `(text_length,)` token ids. Received: input_shape={input_shape}")
    limit = getattr(backbone, "max_sequence_length", None)
    if limit is not None and length > limit:
        raise ValueError(f"text_length={length} is longer than preset {preset!r}'s max_sequence_length={limit}")
    backbone_vocab = getattr(backbone, "vocabulary_size", None)
    if backbone_vocab is not None and vocab_size != backbone_vocab:
        raise ValueError(
            f"The text feature's tokenizer has vocab_size={vocab_size} but preset {preset!r}'s backbone has "
            f"{backbone_vocab} tokens: tokenize with the preset (text_tokenizer: preset, text_preset: {preset})")
    padding_id = keras_hub.models.Tokenizer.from_preset(folder).pad_token_id or 0
    takes = set(backbone.input) if isinstance(backbone.input, dict) else set()
    if not {"token_ids", "padding_mask"} <= takes:
        raise ValueError(f"Preset {preset!r} ({type(backbone).__name__}) does not take token_ids and padding_mask "
                         f"(it takes {sorted(takes)}): not a text backbone the keras_hub encoder can drive")

    tokens = encoder_input(input_shape, name, dtype="int32")
    inputs = BackboneTextInputs(padding_id, segment_ids="segment_ids" in takes, name="backbone_inputs")(tokens)
    outputs = backbone(inputs)
    sequence = outputs["sequence_output"] if isinstance(outputs, dict) else outputs
    mask = SequenceMask(padding_id, name="token_mask")(tokens)
    if pooling == "backbone" and isinstance(outputs, dict) and "pooled_output" in outputs:
        pooled = keras.layers.Identity(name="pooled")(outputs["pooled_output"])
    else:
        pooled = MaskedMean(name="pooled")([sequence, mask])
    return finish_encoder(tokens, pooled, weights=weights, encoder="keras_hub", name=name, sequence=sequence,
                          mask=mask)
