"""`mobilenet_v3_small` image encoder: MobileNetV3-Small, edge-friendly (preprocessing built into the backbone)."""

import keras

from mbm_keras.encoders.applications import register_application_encoder

build_mobilenet_v3_small = register_application_encoder(
    "mobilenet_v3_small",
    keras.applications.MobileNetV3Small,
    pretrained_file="weights_mobilenet_v3_small_224_1.0_float_no_top_v2.h5",
    preprocessing="none",
    description="MobileNetV3-Small, edge-friendly (preprocessing built into the backbone)",
)
