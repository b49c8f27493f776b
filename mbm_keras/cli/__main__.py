"""`python -m mbm_keras.cli`: the `mbm-keras` console script."""

import sys

from mbm_keras.cli import run

sys.exit(run())
