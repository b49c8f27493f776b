"""`vgg16` image encoder: VGG16 (Simonyan and Zisserman 2014)."""

import keras

from mbm_keras.encoders.applications import register_application_encoder

build_vgg16 = register_application_encoder(
    "vgg16",
    keras.applications.VGG16,
    pretrained_file="vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
    preprocessing="caffe",
    description="VGG16 (Simonyan and Zisserman 2014)",
)
