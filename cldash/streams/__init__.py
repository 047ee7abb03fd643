"""Task streams (benchmarks), registered by name. Importing the package registers them all."""

import importlib
import pkgutil

from cldash.streams.base import STREAMS, Split, Stream, Task, get_stream, register_stream

for _info in pkgutil.iter_modules(__path__):
    if _info.name != "base":
        importlib.import_module(f"{__name__}.{_info.name}")

__all__ = ["STREAMS", "Split", "Stream", "Task", "get_stream", "register_stream"]
