"""Heads: one module per head; importing it registers it."""

from mbm_keras.heads.base import HEADS, Head, get_head, list_heads, register_head

# Registry: one line per head module.
# isort: off
from mbm_keras.heads import softmax  # noqa: E402,F401
from mbm_keras.heads import sigmoid  # noqa: E402,F401
from mbm_keras.heads import linear  # noqa: E402,F401
