"""Task streams (benchmarks), registered by name (or by a prefix: ``hf:``). Importing the package imports
every module in it but base, so each registers itself: no list to edit."""

import importlib
import pkgutil

from cldash.streams.base import (
    STREAM_PREFIXES,
    STREAMS,
    Split,
    Stream,
    Task,
    get_stream,
    register_stream,
    register_stream_prefix,
)

for _info in pkgutil.iter_modules(__path__):
    if _info.name != "base":
        importlib.import_module(f"{__name__}.{_info.name}")

__all__ = ["STREAMS", "STREAM_PREFIXES", "Split", "Stream", "Task", "get_stream", "register_stream",
           "register_stream_prefix"]
