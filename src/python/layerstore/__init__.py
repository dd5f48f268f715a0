"""layerstore: the containers/storage layer store, fast, from Python.

The public surface is exactly the names in ``__all__``; ``layerstore._native`` is
private.
"""

from __future__ import annotations

from layerstore import errors

__all__ = ["errors"]
__version__ = "0.1.0"
