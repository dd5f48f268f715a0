"""layerstore: the containers/storage layer store, fast, from Python.

The public surface is exactly the names in ``__all__``; ``layerstore._native`` is
private. Names are imported on first use, so ``layerstore.cli`` and the small modules
start without loading the whole store.
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (slow to import)
if TYPE_CHECKING:
    from typing import Any

    from layerstore import errors
    from layerstore.archive import Change, ChangeKind, Compression
    from layerstore.drivers.base import MountOptions
    from layerstore.idtools import IDMap
    from layerstore.snapshot import Layer
    from layerstore.store import LayerStore

__all__ = [
    "Change",
    "ChangeKind",
    "Compression",
    "IDMap",
    "Layer",
    "LayerStore",
    "MountOptions",
    "errors",
]
__version__ = "0.1.0"

_WHERE = {
    "Change": "layerstore.archive",
    "ChangeKind": "layerstore.archive",
    "Compression": "layerstore.archive",
    "IDMap": "layerstore.idtools",
    "Layer": "layerstore.snapshot",
    "LayerStore": "layerstore.store",
    "MountOptions": "layerstore.drivers.base",
}


def _module(name: str) -> Any:
    # __import__ + sys.modules: importlib.import_module without importing importlib.
    __import__(name)
    return sys.modules[name]


def __getattr__(name: str) -> Any:
    if name == "errors":
        return _module("layerstore.errors")
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'layerstore' has no attribute {name!r}")
    value = getattr(_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
