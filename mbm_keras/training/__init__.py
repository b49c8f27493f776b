"""Training from one config: `train(config)` and `mbm-keras train --config run.yaml`."""

from mbm_keras.training.config import ConfigError, load_config
from mbm_keras.training.trainer import train

__all__ = ["ConfigError", "load_config", "train"]
