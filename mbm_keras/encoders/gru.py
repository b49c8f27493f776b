"""`gru` text encoder: GRU over word embeddings (last state)."""

import keras

from mbm_keras.encoders.text import register_recurrent_text_encoder

build_gru = register_recurrent_text_encoder(
    "gru", keras.layers.GRU, bidirectional=False, description="GRU over word embeddings (last state)"
)
