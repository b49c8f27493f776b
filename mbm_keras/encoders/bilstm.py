"""`bilstm` text encoder: Bidirectional LSTM over word embeddings."""

import keras

from mbm_keras.encoders.text import register_recurrent_text_encoder

build_bilstm = register_recurrent_text_encoder(
    "bilstm", keras.layers.LSTM, bidirectional=True, description="Bidirectional LSTM over word embeddings"
)
