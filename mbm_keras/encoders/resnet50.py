"""`resnet50` image encoder: ResNet50 (He et al. 2015)."""

import keras

from mbm_keras.encoders.applications import register_application_encoder

build_resnet50 = register_application_encoder(
    "resnet50",
    keras.applications.ResNet50,
    pretrained_file="resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
    preprocessing="caffe",
    description="ResNet50 (He et al. 2015)",
)
