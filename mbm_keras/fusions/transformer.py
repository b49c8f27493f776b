"""`transformer` fusion: self-attention over the tokens of every feature.

Each feature's sequence (image grid cells, text tokens, audio frames, time
steps) is projected to `units`-sized tokens with a learned feature-type and
position embedding; a few transformer blocks attend over all tokens of all
features at once (padding and absent features masked out); the real tokens are
averaged. The idea of AutoGluon's fusion transformer and Ludwig's transformer
combiner, with builtin-op TFLite export.
"""

from keras import ops

from mbm_keras.fusions.base import (
    SequenceFusion,
    add_attention_block,
    apply_attention_block,
    build_attention_block,
    register_fusion,
)


@register_fusion("transformer", description="self-attention over the tokens of all features, then their mean")
class TransformerFusion(SequenceFusion):
    """Transformer blocks over the concatenated tokens of every feature.

    Args:
        units: token and output size.
        num_heads: attention heads.
        num_layers: transformer blocks.
        ffn_units: hidden size of each block's feed-forward part (default 2 * units).
        dropout: attention dropout.

    Examples:
        >>> model = build_fusion_model(image="small_cnn", text="gru", fusion="transformer",
        ...                            fusion_kwargs={"units": 64, "num_layers": 2}, num_classes=3)
    """

    def __init__(self, units=64, num_heads=4, num_layers=2, ffn_units=None, dropout=0.0, **kwargs):
        super().__init__(units=units, **kwargs)
        for key, value in (("num_heads", num_heads), ("num_layers", num_layers)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{key} must be a positive int. Received: {key}={value!r}")
        self.num_heads, self.num_layers = num_heads, num_layers
        self.ffn_units = ffn_units or 2 * units
        self.dropout = dropout
        self.blocks = [add_attention_block(self, units, num_heads, self.ffn_units, dropout, f"block{i + 1}")
                       for i in range(num_layers)]

    def build_fusion(self, shapes):
        self.add_token_embeddings(shapes, self.units)
        steps = sum(s[0] or 1 for s in shapes.values())
        for block in self.blocks:
            build_attention_block(self, block, (None, steps, self.units), (None, steps, self.units))

    def fuse(self, tokens, masks):
        x = ops.concatenate(self.embed(tokens), axis=1)
        mask = ops.concatenate(masks, axis=1)
        attention_mask = self.attention_mask(mask, mask)
        for block in self.blocks:
            x = apply_attention_block(self, block, x, x, attention_mask)
        return self.masked_mean(x, mask)

    def get_config(self):
        return {**super().get_config(), "num_heads": self.num_heads, "num_layers": self.num_layers,
                "ffn_units": self.ffn_units, "dropout": self.dropout}
