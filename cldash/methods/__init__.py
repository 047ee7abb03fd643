"""Adapter methods, one module each, all behind one registry (see base.py).

Importing this package imports every module in it (but the shared ones: base, layer and the
PEFT exporter), so a new method registers itself by existing: no list to edit.
"""

import importlib
import pkgutil

from cldash.methods.base import (
    POLICIES,
    REGISTRY,
    Method,
    StepContext,
    TaskContext,
    get_method,
    marked_label,
    paper_presets,
    register,
)

for _info in pkgutil.iter_modules(__path__):
    if _info.name not in ("base", "layer", "peft_format"):
        importlib.import_module(f"{__name__}.{_info.name}")

__all__ = ["POLICIES", "REGISTRY", "Method", "StepContext", "TaskContext", "get_method", "marked_label",
           "paper_presets", "register"]
