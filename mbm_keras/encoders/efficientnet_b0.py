"""`efficientnet_b0` image encoder: EfficientNet-B0 (preprocessing built into the backbone)."""

import keras

from mbm_keras.encoders.applications import register_application_encoder

build_efficientnet_b0 = register_application_encoder(
    "efficientnet_b0",
    keras.applications.EfficientNetB0,
    pretrained_file="efficientnetb0_notop.h5",
    preprocessing="none",
    description="EfficientNet-B0 (preprocessing built into the backbone)",
)
