"""Modalities: one module per kind of input; importing it registers it.

To add a modality, write `mbm_keras/modalities/<name>.py` with a `Modality`
subclass decorated by `register_modality` (see base.py for what it owns), add its
import below, and register its encoders in `mbm_keras/encoders/`.
"""

from mbm_keras.modalities.base import (
    CellError,
    Modality,
    get_modality,
    list_modalities,
    register_modality,
)

# Registry: one line per modality module.
# isort: off
from mbm_keras.modalities import image  # noqa: E402,F401
from mbm_keras.modalities import text  # noqa: E402,F401
from mbm_keras.modalities import audio  # noqa: E402,F401
from mbm_keras.modalities import tabular  # noqa: E402,F401
from mbm_keras.modalities import timeseries  # noqa: E402,F401

__all__ = ["CellError", "Modality", "get_modality", "list_modalities", "register_modality"]
