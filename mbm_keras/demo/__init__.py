"""The built-in demo: a small image + text + audio dataset written as real
files, a fusion model trained on it beside single-modality models, and an
export that is reloaded and checked."""

from mbm_keras.demo.data import DEMO_SPEC, write_demo_dataset
from mbm_keras.demo.run import default_data_dir, run_demo

__all__ = ["DEMO_SPEC", "default_data_dir", "run_demo", "write_demo_dataset"]
