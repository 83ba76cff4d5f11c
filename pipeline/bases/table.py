"""The built-in bases: the one module that imports the base families.

Each family module only declares its specs (``SPECS``); this table gathers them, and
:mod:`pipeline.bases.registry` loads it on first use. Adding a family is one line here.
"""

from __future__ import annotations

from pipeline.bases import efficientnet_lite, keras_apps
from pipeline.bases.spec import BaseSpec

#: Every built-in base, in listing order.
BUILTIN_BASES: tuple[BaseSpec, ...] = (*keras_apps.SPECS, *efficientnet_lite.SPECS)
