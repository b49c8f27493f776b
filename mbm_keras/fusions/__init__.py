"""Fusions: one module per fusion; importing it registers it.

To add a fusion, subclass `Fusion` in `mbm_keras/fusions/<name>.py`, decorate
it with `register_fusion(...)`, and add its import below.
"""

from mbm_keras.fusions.base import FUSIONS, Fusion, create_fusion, list_fusions, register_fusion

# Registry: one line per fusion module.
# isort: off
from mbm_keras.fusions import concat  # noqa: E402,F401
from mbm_keras.fusions import gated  # noqa: E402,F401
from mbm_keras.fusions import attention  # noqa: E402,F401
from mbm_keras.fusions import low_rank_tensor  # noqa: E402,F401
from mbm_keras.fusions import late  # noqa: E402,F401
from mbm_keras.fusions import transformer  # noqa: E402,F401
from mbm_keras.fusions import cross_attention  # noqa: E402,F401
