"""layerstore: the containers/storage layer store, fast, from Python.

The public surface is exactly the names in ``__all__``; ``layerstore._native`` is
private. Names are imported on first use, so ``layerstore.cli`` and the small modules
start without loading the whole store.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from layerstore import errors
    from layerstore.archive import Change, ChangeKind, Compression
    from layerstore.drivers.base import MountOptions
    from layerstore.idtools import IDMap
    from layerstore.layer import Layer
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
    "Layer": "layerstore.layer",
    "LayerStore": "layerstore.store",
    "MountOptions": "layerstore.drivers.base",
}


def __getattr__(name: str) -> Any:
    if name == "errors":
        return importlib.import_module("layerstore.errors")
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'layerstore' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
