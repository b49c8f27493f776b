"""Encoders: one module per encoder; importing it registers it.

To add an encoder, write `mbm_keras/encoders/<name>.py` with a builder decorated
by `register_encoder(...)` (see base.py for the shared signature), and add its
import below.
"""

from mbm_keras.encoders.base import (
    MODALITIES,
    create_encoder,
    encoder_info,
    list_encoders,
    register_encoder,
)

# Registry: one line per encoder module.
# isort: off
from mbm_keras.encoders import resnet50  # noqa: E402,F401
from mbm_keras.encoders import vgg16  # noqa: E402,F401
from mbm_keras.encoders import mobilenet_v3_small  # noqa: E402,F401
from mbm_keras.encoders import efficientnet_b0  # noqa: E402,F401
from mbm_keras.encoders import small_cnn  # noqa: E402,F401
from mbm_keras.encoders import keras_hub_image  # noqa: E402,F401
from mbm_keras.encoders import lstm  # noqa: E402,F401
from mbm_keras.encoders import bilstm  # noqa: E402,F401
from mbm_keras.encoders import gru  # noqa: E402,F401
from mbm_keras.encoders import text_cnn  # noqa: E402,F401
from mbm_keras.encoders import keras_hub_text  # noqa: E402,F401
from mbm_keras.encoders import logmel_cnn  # noqa: E402,F401
from mbm_keras.encoders import logmel_lstm  # noqa: E402,F401
from mbm_keras.encoders import logmel_tcn  # noqa: E402,F401
from mbm_keras.encoders import mlp  # noqa: E402,F401
from mbm_keras.encoders import conv1d  # noqa: E402,F401
from mbm_keras.encoders import series_gru  # noqa: E402,F401
