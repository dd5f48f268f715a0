"""The graph-driver protocol every driver implements (containers/storage's ``Driver``).

A driver owns the layers' filesystem trees under its home ``G/<name>``; the layer store
owns the records. The store calls only what is listed here, so a new driver is one new
module registered in :mod:`layerstore.drivers`, with no edits elsewhere.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol, runtime_checkable

from layerstore.drivers.base import MountOptions
from layerstore.idtools import IDMap

__all__ = ["Driver"]


@runtime_checkable
class Driver(Protocol):
    """A graph driver. Ids are full layer ids; paths are absolute.

    Locking: the layer store calls every method with its layers lock held (shared for
    ``exists``/``layer_dir``/``status``/``list_layers``, exclusive otherwise).
    """

    name: str
    """The driver's own name, which also prefixes the store directories (``vfs``)."""
    home: str
    """``G/<name>``."""
    whiteout_format: str
    """How whiteouts are stored in a layer's tree: ``"vfs"`` (applied: the paths are
    removed, the tree is the full root filesystem) or ``"overlay"`` (kept as 0/0 char
    devices and ``trusted.overlay.opaque`` xattrs in the layer's own ``diff`` dir)."""
    ignore_chown_errors: bool
    """Whether extraction goes on when lchown fails (the driver option)."""

    def create(
        self,
        id: str,
        parent: str | None,
        *,
        mount_label: str = "",
        uid_map: Sequence[IDMap] = (),
        gid_map: Sequence[IDMap] = (),
        storage_opt: Mapping[str, str] | None = None,
        writeable: bool = False,
    ) -> None:
        """Make the layer's tree: empty, or starting as its parent's content."""
        ...

    def create_from_template(
        self,
        id: str,
        template: str,
        *,
        parent: str | None,
        mount_label: str = "",
        uid_map: Sequence[IDMap] = (),
        gid_map: Sequence[IDMap] = (),
        storage_opt: Mapping[str, str] | None = None,
        writeable: bool = False,
    ) -> None:
        """Make the layer's tree as a copy of ``template``'s (whose parent is ``parent``)."""
        ...

    def staging_root(self, writeable: bool = False) -> str:
        """Where staging directories for a new layer go: on the same filesystem as the
        layer's final tree, somewhere the Go driver does not take for a layer."""
        ...

    def staging_roots(self) -> list[str]:
        """Every staging root (for pruning abandoned staging directories)."""
        ...

    def prepare_staging(
        self,
        target: str,
        parent: str | None,
        *,
        uid_map: Sequence[IDMap] = (),
        gid_map: Sequence[IDMap] = (),
    ) -> None:
        """Make the directory ``target`` as a new layer's :meth:`apply_root` starts on
        ``parent`` (vfs: a copy of the parent's tree). Called without the store lock."""
        ...

    def create_from_staging(
        self,
        id: str,
        parent: str | None,
        staged: str,
        *,
        mount_label: str = "",
        uid_map: Sequence[IDMap] = (),
        gid_map: Sequence[IDMap] = (),
        storage_opt: Mapping[str, str] | None = None,
        writeable: bool = False,
        root_dir_mode: int | None = None,
    ) -> None:
        """:meth:`create`, with the filled ``staged`` dir renamed in as the layer's
        :meth:`apply_root`."""
        ...

    def remove(self, id: str) -> None:
        """Delete the layer's tree; no error when it is already gone."""
        ...

    def exists(self, id: str) -> bool:
        """Whether the layer's tree exists."""
        ...

    def get(self, id: str, options: MountOptions) -> str:
        """Make the layer's root filesystem available (mount it) and return its path."""
        ...

    def put(self, id: str) -> None:
        """Release what :meth:`get` did (unmount)."""
        ...

    def layer_dir(self, id: str) -> str:
        """The directory that holds the layer's own files (the diff target)."""
        ...

    def apply_root(self, id: str) -> str:
        """The directory a layer diff is extracted into (vfs: the layer's root tree;
        overlay: its ``diff`` dir)."""
        ...

    def diff_roots(self, id: str) -> list[str]:
        """Where the layer's files are read from when its tarball is reassembled from
        tar-split, uppermost first (vfs: the layer's tree; overlay: its ``diff`` dir,
        then the ``diff`` dirs of its lowers)."""
        ...

    def list_layers(self) -> list[str]:
        """Ids of every layer tree the driver has, recorded or not."""
        ...

    def status(self) -> list[tuple[str, str]]:
        """Driver status pairs, as Go's ``Status()``."""
        ...

    def update_id_map(
        self,
        id: str,
        old_uid_map: Sequence[IDMap],
        old_gid_map: Sequence[IDMap],
        new_uid_map: Sequence[IDMap],
        new_gid_map: Sequence[IDMap],
        mount_label: str = "",
    ) -> None:
        """Re-own the layer's files from the old ID mappings to the new ones."""
        ...
