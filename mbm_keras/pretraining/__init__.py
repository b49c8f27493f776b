"""Self-supervised pretraining of zoo encoders: autoencoders on unlabelled files
(`build_autoencoder`; `mbm-keras pretrain` / `pretrain()` in mbm_keras.training)."""

from mbm_keras.pretraining.autoencoder import (  # noqa: F401
    MaskedTokenLoss,
    ReconstructionError,
    TokenMasking,
    build_autoencoder,
    per_example_loss,
    reconstruction_model,
)
