"""`mbm-keras tune`: the `search:` section of a run config explored with KerasTuner (`tune`, `parse_search`)."""

from mbm_keras.tuning.space import SearchSpace, parse_search
from mbm_keras.tuning.tuner import ALGORITHMS, tune

__all__ = ["ALGORITHMS", "SearchSpace", "parse_search", "tune"]
