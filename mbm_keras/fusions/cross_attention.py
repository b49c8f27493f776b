"""`cross_attention` fusion: one feature's sequence attends to the others'.

The query feature's tokens (by default the first feature by name; choose it
with `query=`) attend to the tokens of every other feature (a transformer
block with cross-attention); the attended query tokens and the other
features' tokens are each averaged and projected together. An absent query
feature leaves the others' average to decide.

`return_sequence=True` returns the attended query tokens instead (one vector
per audio frame: transcription fuses a text context into every frame), and
`null_token=True` adds a learned "no context" token the queries can always
attend to, so an empty context (all of it masked) is a state the model
learns rather than an attention over nothing.
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
        return_sequence: output the query's attended tokens `(batch, steps,
            units)` instead of the pooled, projected vector.
        null_token: add a learned context token that is never masked (the
            "no context" state).

    Examples:
        >>> model = build_fusion_model(image="small_cnn", audio="logmel_cnn", fusion="cross_attention",
        ...                            fusion_kwargs={"query": "audio"}, num_classes=10)
    """

    min_features = 2  # a query and a context

    def __init__(self, units=64, num_heads=4, num_layers=1, query=None, ffn_units=None, dropout=0.0,
                 return_sequence=False, null_token=False, **kwargs):
        super().__init__(units=units, **kwargs)
        self.return_sequence, self.null_token = bool(return_sequence), bool(null_token)
        for key, value in (("num_heads", num_heads), ("num_layers", num_layers)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{key} must be a positive int. Received: {key}={value!r}")
        self.num_heads, self.num_layers, self.query = num_heads, num_layers, query
        self.ffn_units = ffn_units or 2 * units
        self.dropout = dropout
        self.blocks = [add_attention_block(self, units, num_heads, self.ffn_units, dropout, f"block{i + 1}")
                       for i in range(num_layers)]
        # The pooled output's projection (none when the attended tokens are the output).
        self.output_projection = None if self.return_sequence else keras.layers.Dense(units, name="output_projection")

    def build_fusion(self, shapes):
        if len(self.modalities) < self.min_features:
            raise ValueError(f"Fusion 'cross_attention' needs at least two features. Received: {self.modalities}")
        query = self.query if self.query is not None else self.modalities[0]
        if query not in self.modalities:
            raise ValueError(f"cross_attention: query={query!r} is not a feature; the features are {self.modalities}")
        self.query_index = self.modalities.index(query)
        self.add_token_embeddings(shapes, self.units)
        query_steps = shapes[query][0] or 1
        self.query_steps = shapes[query][0]
        context_steps = sum(s[0] or 1 for m, s in shapes.items() if m != query) + self.null_token
        if self.null_token:
            self.null_context = self.add_weight(shape=(1, self.units), initializer="random_normal",
                                                name="null_context")
        for block in self.blocks:
            build_attention_block(self, block, (None, query_steps, self.units), (None, context_steps, self.units))
        if self.output_projection is not None:
            self.output_projection.build((None, 2 * self.units))

    def fuse(self, tokens, masks):
        embedded = self.embed(tokens)
        q = self.query_index
        x, query_mask = embedded[q], masks[q]
        context = ops.concatenate([t for i, t in enumerate(embedded) if i != q], axis=1)
        context_mask = ops.concatenate([m for i, m in enumerate(masks) if i != q], axis=1)
        if self.null_token:
            batch = ops.shape(context)[0]
            null = ops.broadcast_to(ops.expand_dims(self.null_context, 0), (batch, 1, self.units))
            context = ops.concatenate([ops.cast(null, context.dtype), context], axis=1)
            context_mask = ops.concatenate([ops.ones((batch, 1), dtype=context_mask.dtype), context_mask], axis=1)
        attention_mask = self.attention_mask(query_mask, context_mask)
        for block in self.blocks:
            x = apply_attention_block(self, block, x, context, attention_mask)
        if self.return_sequence:
            return x
        pooled = ops.concatenate([self.masked_mean(x, query_mask), self.masked_mean(context, context_mask)], axis=-1)
        return self.output_projection(pooled)

    def compute_output_shape(self, input_shape):
        if not self.return_sequence:
            return super().compute_output_shape(input_shape)
        query = self.query if self.query is not None else sorted(k for k in input_shape if not k.endswith("_mask"))[0]
        shape = tuple(input_shape[query])
        return (shape[0], shape[1] if len(shape) == 3 else 1, self.units)

    def get_config(self):
        config = {**super().get_config(), "num_heads": self.num_heads, "num_layers": self.num_layers,
                  "query": self.query, "ffn_units": self.ffn_units, "dropout": self.dropout}
        if self.return_sequence or self.null_token:  # saved models from before these options load as they were
            config.update(return_sequence=self.return_sequence, null_token=self.null_token)
        return config
