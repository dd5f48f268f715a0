"""layerstore: the containers/storage layer store, fast, from Python.

The public surface is exactly the names in ``__all__``; ``layerstore._native`` is
private.
"""

from __future__ import annotations

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
