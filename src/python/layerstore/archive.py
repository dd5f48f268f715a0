"""Archive vocabulary shared by the store and the data path (SPEC.md §6.2, §9.6).

`Compression` mirrors containers/storage's ``archive.Compression`` (the integer stored as
``compression`` in layers.json); `Change`/`ChangeKind` mirror ``archive.Change``.
"""

from __future__ import annotations

from enum import IntEnum

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing
if TYPE_CHECKING:
    from dataclasses import dataclass
else:  # the same records without importing dataclasses (slow to import)
    from layerstore._dataclass import dataclass

__all__ = ["Change", "ChangeKind", "Compression"]


class Compression(IntEnum):
    """Compression of a layer blob; the value is what layers.json stores."""

    NONE = 0
    BZIP2 = 1
    GZIP = 2
    XZ = 3
    ZSTD = 4

    @property
    def extension(self) -> str:
        """Go's ``Compression.Extension()``: ``tar``, ``tar.bz2``, ``tar.gz``, ..."""
        return _EXTENSIONS[self]


_EXTENSIONS = {
    Compression.NONE: "tar",
    Compression.BZIP2: "tar.bz2",
    Compression.GZIP: "tar.gz",
    Compression.XZ: "tar.xz",
    Compression.ZSTD: "tar.zst",
}


class ChangeKind(IntEnum):
    """Kind of a filesystem change between two layers."""

    MODIFY = 0
    ADD = 1
    DELETE = 2

    @property
    def letter(self) -> str:
        return "CAD"[self]


@dataclass(frozen=True, slots=True)
class Change:
    """One changed path (absolute within the layer) and how it changed."""

    path: str
    kind: ChangeKind

    def __str__(self) -> str:
        return f"{self.kind.letter} {self.path}"
