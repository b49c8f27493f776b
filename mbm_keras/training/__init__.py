"""Training: `train(config)` / `mbm-keras train --config run.yaml` writes a run
folder; the parts it is made of (strategies, the distributed loop, optimizers,
resumable callbacks) are usable on their own with `model.fit`.

    >>> from mbm_keras.training import train
    >>> run = train("run.yaml", epochs=3)
"""

from mbm_keras.training.callbacks import BestModelCheckpoint, ReseedEachEpoch, ResumableEarlyStopping
from mbm_keras.training.config import ConfigError, load_config
from mbm_keras.training.init_config import init_config
from mbm_keras.training.loop import distributed_fit
from mbm_keras.training.optimizer import make_optimizer
from mbm_keras.training.strategy import STRATEGIES, get_strategy
from mbm_keras.training.trainer import pretrain, train

__all__ = [
    "STRATEGIES",
    "BestModelCheckpoint",
    "ConfigError",
    "ReseedEachEpoch",
    "ResumableEarlyStopping",
    "distributed_fit",
    "get_strategy",
    "init_config",
    "load_config",
    "make_optimizer",
    "pretrain",
    "train",
]
