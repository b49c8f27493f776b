"""`lstm` text encoder: LSTM over word embeddings (last state)."""

import keras

from mbm_keras.encoders.text import register_recurrent_text_encoder

build_lstm = register_recurrent_text_encoder(
    "lstm", keras.layers.LSTM, bidirectional=False, description="LSTM over word embeddings (last state)"
)
