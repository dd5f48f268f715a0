"""Exception hierarchy; messages follow the Go errors of containers/storage.

Every error carries the Go sentinel's text and, like Go's ``%w`` wrapping, an optional
context in front of it: ``LayerUnknown('locating layer with ID "x"')`` reads
``locating layer with ID "x": layer not known``. Each class is also an instance of the
nearest builtin, so ``except KeyError`` catches an unknown layer.
"""

from __future__ import annotations


class LayerStoreError(Exception):
    """Base class of every error layerstore raises on purpose."""

    message = "layer store error"

    def __init__(self, context: str = "", *, message: str | None = None) -> None:
        self.context = context
        if message is not None:
            self.message = message
        super().__init__(str(self))

    def __str__(self) -> str:
        return f"{self.context}: {self.message}" if self.context else self.message


class LayerUnknown(LayerStoreError, KeyError):
    message = "layer not known"


class ParentUnknown(LayerUnknown):
    message = "parent of layer not known"


class DuplicateID(LayerStoreError, FileExistsError):
    message = "that ID is already in use"


class DuplicateName(LayerStoreError, FileExistsError):
    message = "that name is already in use"


class DuplicateLayerNames(LayerStoreError, ValueError):
    message = "read-only layer store assigns the same name to multiple layers"


class LayerHasChildren(LayerStoreError, PermissionError):
    message = "layer has children"


class LayerNotMounted(LayerStoreError, ValueError):
    message = "layer is not mounted"


class StoreIsReadOnly(LayerStoreError, PermissionError):
    message = "called a write method on a read-only store"


class InvalidBigDataName(LayerStoreError, ValueError):
    message = "not a valid name for a big data item"


class NotSupported(LayerStoreError, NotImplementedError):
    message = "not supported"


class IncompleteLayer(LayerStoreError, ValueError):
    message = "layer is incomplete"


class InvalidArchive(LayerStoreError, ValueError):
    message = "invalid layer archive"


class UnsafePath(LayerStoreError, ValueError):
    message = "path escapes the layer"


class InvalidIDMapping(LayerStoreError, ValueError):
    message = "invalid mappings specified"


class CorruptStore(LayerStoreError, ValueError):
    """A store file (layers.json, mountpoints.json, a lock file) cannot be read."""

    message = "corrupt store file"


__all__ = [
    "CorruptStore",
    "DuplicateID",
    "DuplicateLayerNames",
    "DuplicateName",
    "IncompleteLayer",
    "InvalidArchive",
    "InvalidBigDataName",
    "InvalidIDMapping",
    "LayerHasChildren",
    "LayerNotMounted",
    "LayerStoreError",
    "LayerUnknown",
    "NotSupported",
    "ParentUnknown",
    "StoreIsReadOnly",
    "UnsafePath",
]


class InvalidOption(LayerStoreError, ValueError):
    """A driver or store option that cannot be parsed."""

    message = "invalid option"


class InvalidLayerID(LayerStoreError, ValueError):
    """An id that cannot name a layer directory (empty, ``.``, ``..``, ``/`` or NUL)."""

    message = "invalid layer ID"


class InvalidDigest(LayerStoreError, ValueError):
    """A digest string go-digest rejects; the message is go-digest's."""

    message = "invalid checksum digest format"


class InvalidFlagValue(LayerStoreError, TypeError):
    message = "flag value is not a JSON value"


class StoreClosed(LayerStoreError, ValueError):
    message = "layer store is closed"


__all__ += [
    "InvalidDigest",
    "InvalidFlagValue",
    "InvalidLayerID",
    "InvalidOption",
    "StoreClosed",
]


class ChecksumMismatch(InvalidArchive):
    """A layer file no longer matches the CRC-64 its tar-split entry recorded (diff)."""

    message = "file integrity checksum failed"


__all__ += ["ChecksumMismatch"]


class LayerUsedByImage(LayerStoreError, PermissionError):
    message = "layer is in use by an image"


class LayerUsedByContainer(LayerStoreError, PermissionError):
    message = "layer is in use by a container"


__all__ += ["LayerUsedByContainer", "LayerUsedByImage"]
