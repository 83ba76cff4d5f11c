"""The built-in head kinds: the one module that imports the head implementations.

Each implementation module only declares its specs (``SPECS``); this table gathers them, and
:mod:`pipeline.heads.registry` loads it on first use. Adding a family of heads is one line
here. Neither module imports TensorFlow at import time.
"""

from __future__ import annotations

from pipeline.heads import keras_heads, sklearn_heads
from pipeline.heads.spec import HeadSpec

#: Every built-in kind, in listing order (Keras first, as ``pipeline heads`` shows them).
BUILTIN_HEADS: tuple[HeadSpec, ...] = (*keras_heads.SPECS, *sklearn_heads.SPECS)
