"""`cross_attention` fusion: one feature's sequence attends to the others'.

The query feature's tokens (by default the first feature by name; choose it
with `query=`) attend to the tokens of every other feature (a transformer
block with cross-attention); the attended query tokens and the other
features' tokens are each averaged and projected together. An absent query
feature leaves the others' average to decide.
"""

from keras import ops
import keras

from mbm_keras.fusions.base import (
    SequenceFusion,
    add_attention_block,
    apply_attention_block,
    build_attention_block,
    register_fusion,
)


@register_fusion("cross_attention", description="one feature's tokens attend to the other features' tokens")
class CrossAttentionFusion(SequenceFusion):
    """Cross-attention from a query feature to the other features.

    Args:
        units: token and output size.
        num_heads: attention heads.
        num_layers: cross-attention blocks.
        query: the feature whose tokens attend (default: the first by name).
        ffn_units: hidden size of each block's feed-forward part (default 2 * units).
        dropout: attention dropout.

    Example:
        >>> model = build_fusion_model(image="small_cnn", audio="logmel_cnn", fusion="cross_attention",
        ...                            fusion_kwargs={"query": "audio"}, num_classes=10)
    """

    min_features = 2  # a query and a context

    def __init__(self, units=64, num_heads=4, num_layers=1, query=None, ffn_units=None, dropout=0.0, **kwargs):
        super().__init__(units=units, **kwargs)
        for key, value in (("num_heads", num_heads), ("num_layers", num_layers)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{key} must be a positive int. Received: {key}={value!r}")
        self.num_heads, self.num_layers, self.query = num_heads, num_layers, query
        self.ffn_units = ffn_units or 2 * units
        self.dropout = dropout
        self.blocks = [add_attention_block(self, units, num_heads, self.ffn_units, dropout, f"block{i + 1}")
                       for i in range(num_layers)]
        self.output_projection = keras.layers.Dense(units, name="output_projection")

    def build_fusion(self, shapes):
        if len(self.modalities) < self.min_features:
            raise ValueError(f"Fusion 'cross_attention' needs at least two features. Received: {self.modalities}")
        query = self.query if self.query is not None else self.modalities[0]
        if query not in self.modalities:
            raise ValueError(f"cross_attention: query={query!r} is not a feature; the features are {self.modalities}")
        self.query_index = self.modalities.index(query)
        self.add_token_embeddings(shapes, self.units)
        query_steps = shapes[query][0] or 1
        context_steps = sum(s[0] or 1 for m, s in shapes.items() if m != query)
        for block in self.blocks:
            build_attention_block(self, block, (None, query_steps, self.units), (None, context_steps, self.units))
        self.output_projection.build((None, 2 * self.units))

    def fuse(self, tokens, masks):
        embedded = self.embed(tokens)
        q = self.query_index
        x, query_mask = embedded[q], masks[q]
        context = ops.concatenate([t for i, t in enumerate(embedded) if i != q], axis=1)
        context_mask = ops.concatenate([m for i, m in enumerate(masks) if i != q], axis=1)
        attention_mask = self.attention_mask(query_mask, context_mask)
        for block in self.blocks:
            x = apply_attention_block(self, block, x, context, attention_mask)
        pooled = ops.concatenate([self.masked_mean(x, query_mask), self.masked_mean(context, context_mask)], axis=-1)
        return self.output_projection(pooled)

    def get_config(self):
        return {**super().get_config(), "num_heads": self.num_heads, "num_layers": self.num_layers,
                "query": self.query, "ffn_units": self.ffn_units, "dropout": self.dropout}
