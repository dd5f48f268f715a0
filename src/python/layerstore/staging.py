"""Staging directories and differs: a layer's files are made without the store lock.

A staging directory is ``<driver home>/staging/<random>/`` (Go's overlay layout), holding

* ``dir/``          the layer's files as they are being made (the differ's target);
* ``staging.lock``  an open-file-description write lock held while it is in use, so
                    another process (ours, or Go's overlay ``Cleanup``) that can take the
                    lock knows the directory is abandoned and may remove it;
* ``tar-split.gz``  the layer's tar-split, when a :class:`TarballDiffer` made it.

The layer store commits a filled staging directory under its exclusive lock with a
rename (:meth:`layerstore.LayerStore.create` with ``staged=``); a crash leaves only the
staging directory, which the next writer's load removes (:func:`prune_staging`).

A *differ* is any object with ``apply_diff(dest, options) -> DifferOutput`` that fills
``dest`` (Go's ``graphdriver.Differ``); :class:`TarballDiffer` is the one shipped here.
"""

from __future__ import annotations

import errno
import os

from layerstore.drivers.base import make_temp_dir, remove_tree
from layerstore.staging_prune import (
    STAGING_DIR,
    STAGING_LOCK,
    _live,
    _live_mutex,
    _ofd_lock,
    prune_staging,
    remove_root_if_empty,
)

# Import cost: ``import-layer`` goes through here, so typing, dataclasses, tempfile and
# contextlib are not imported (the Differ protocol, which needs typing, is in
# layerstore.staging_protocol and reachable here as ``Differ``).
TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing
if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping
    from dataclasses import dataclass, field
    from typing import Any, Final

    from layerstore.datapath import DiffSource
    from layerstore.idtools import IDMap
    from layerstore.staging_protocol import Differ
else:  # the same records without importing dataclasses (slow to import)
    from layerstore._dataclass import dataclass, field

__all__ = [
    "ApplyDiffWithDifferOpts",
    "Differ",
    "DifferContext",
    "DifferOutput",
    "StagingDir",
    "TarballDiffer",
    "new_staging",
    "prune_staging",
    "release",
]

TARGET: Final = "dir"
TAR_SPLIT: Final = "tar-split.gz"


@dataclass(frozen=True, slots=True)
class ApplyDiffWithDifferOpts:
    """Go's ``ApplyDiffWithDifferOpts``: ID mappings for the new files and flags to set
    on the layer. ``parent`` (an extension) is the layer the new one will sit on: a
    driver whose layers hold their whole tree (vfs) starts the staging directory as a
    copy of it, and the layer must then be created on that same parent."""

    uid_map: tuple[IDMap, ...] = ()
    gid_map: tuple[IDMap, ...] = ()
    flags: Mapping[str, Any] | None = None
    parent: str | None = None


@dataclass(slots=True)
class DifferOutput:
    """What a differ made (Go's ``DriverWithDifferOutput``).

    ``target`` is the staging directory the files are in (set by the driver);
    ``tar_split`` the layer's tar-split as uncompressed JSON lines (as Go), or
    ``tar_split_file`` a gzip-compressed tar-split file already written beside it.
    ``size`` is the uncompressed tarball size (``diff-size``).
    """

    uid_set: list[int] = field(default_factory=list)
    gid_set: list[int] = field(default_factory=list)
    compressed_digest: str = ""
    uncompressed_digest: str = ""
    toc_digest: str = ""
    size: int = 0
    metadata: str = ""
    tar_split: bytes | None = None
    big_data: dict[str, bytes] = field(default_factory=dict)
    target: str = ""
    root_dir_mode: int | None = None
    compressed_size: int | None = None
    compression: int | None = None
    tar_split_file: str | None = None
    driver_size: int | None = None
    """What ``create(diff=)`` reports as the layer's size (vfs: the entries' sizes;
    overlay: the disk usage of ``diff/``); None when the differ did not say."""
    parent: str | None = None
    """The parent the staging directory was prepared for (copied from, on vfs)."""
    base_identity: tuple[int, int, int] | None = None
    """For a restaged existing layer: the identity of the tree it started from."""


@dataclass(frozen=True, slots=True)
class DifferContext:
    """What the driver tells a differ (Go's ``archive.TarOptions`` subset)."""

    uid_map: tuple[IDMap, ...] = ()
    gid_map: tuple[IDMap, ...] = ()
    whiteout_format: str = "vfs"
    ignore_chown_errors: bool = False


def __getattr__(name: str) -> Any:
    if name == "Differ":  # imported on first use: the protocol needs typing
        from layerstore.staging_protocol import Differ

        return Differ
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class StagingDir:
    """A locked staging directory ``<root>/<random>/`` with its target ``dir/``."""

    def __init__(self, root: str) -> None:
        # The lock file appears already locked (made and locked under another name, then
        # renamed), so a prune never takes a live directory's lock. A prune may remove
        # the directory before that (empty, or holding only the unlocked fresh file:
        # staging_prune._remove_unfinished); this then starts again with a new one.
        self._fd: int | None = None
        for _ in range(100):
            os.makedirs(root, mode=0o700, exist_ok=True)
            try:
                path = make_temp_dir(root, "tmp")
            except FileNotFoundError:  # the (empty) root was removed meanwhile
                continue
            fresh = os.path.join(path, "." + STAGING_LOCK)
            try:
                fd = os.open(fresh, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            except FileNotFoundError:  # a prune removed the empty directory
                continue
            try:
                _ofd_lock(fd)
                os.rename(fresh, os.path.join(path, STAGING_LOCK))
            except OSError as e:
                os.close(fd)
                if isinstance(e, FileNotFoundError) or e.errno in (errno.EAGAIN, errno.EACCES):
                    continue  # a prune holds the fresh file, or removed the directory
                remove_tree(path)
                raise
            except BaseException:
                os.close(fd)
                remove_tree(path)
                raise
            self.path, self._fd = path, fd
            break
        else:
            raise OSError(errno.EBUSY, "no staging directory could be made", root)
        self.target = os.path.join(self.path, TARGET)
        with _live_mutex:
            _live.add(self.path)

    @property
    def tar_split_path(self) -> str:
        return os.path.join(self.path, TAR_SPLIT)

    def remove(self) -> None:
        """Delete the staging directory and drop its lock (no error when gone)."""
        with _live_mutex:
            _live.discard(self.path)
        try:
            remove_tree(self.path)
            remove_root_if_empty(os.path.dirname(self.path))
        finally:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    def __repr__(self) -> str:
        return f"<StagingDir {self.path!r}>"


_by_target: dict[str, StagingDir] = {}


def new_staging(
    driver: Any,
    parent: str | None,
    *,
    uid_map: Iterable[IDMap] = (),
    gid_map: Iterable[IDMap] = (),
    writeable: bool = False,
) -> StagingDir:
    """A locked staging directory of ``driver`` whose target starts as the driver makes
    a new layer's tree on ``parent`` (vfs: a copy of it). No store lock is needed."""
    staging = StagingDir(driver.staging_root(writeable))
    try:
        driver.prepare_staging(
            staging.target, parent, uid_map=tuple(uid_map), gid_map=tuple(gid_map)
        )
    except BaseException:
        staging.remove()
        raise
    with _live_mutex:
        _by_target[os.path.normpath(staging.target)] = staging
    return staging


def release(target: str) -> None:
    """Remove the staging directory of ``target`` (Go's ``CleanupStagingDirectory``):
    the whole ``<random>/`` parent, lock included; no error when it is gone."""
    with _live_mutex:
        staging = _by_target.pop(os.path.normpath(target), None)
    if staging is not None:
        staging.remove()
        return
    parent = os.path.dirname(os.path.normpath(target))
    if os.path.basename(os.path.dirname(parent)) != STAGING_DIR:
        raise ValueError(f"{target!r} is not a staging directory")
    remove_tree(parent)
    remove_root_if_empty(os.path.dirname(parent))


# ---------------------------------------------------------------------------------------
# the differ shipped with the package


class TarballDiffer:
    """Fills a staging directory from a plain layer tarball (any compression) through
    the native extractor, the same one :meth:`LayerStore.apply_diff` uses.

    ``source`` is bytes, a path or a binary file object (read once, streamed).
    ``compressed_digest``/``compressed_size``/``uncompressed_digest`` are trusted
    instead of computed when given (sha256 only, as Go). The output carries the
    tar-split as a gzip file beside the staging target (``tar_split_file``), or as
    uncompressed bytes (``tar_split``) when ``tar_split_bytes`` is set.
    """

    def __init__(
        self,
        source: DiffSource,
        *,
        compressed_digest: str | None = None,
        compressed_size: int | None = None,
        uncompressed_digest: str | None = None,
        tar_split_bytes: bool = False,
    ) -> None:
        self.source = source
        self.compressed_digest = compressed_digest
        self.compressed_size = compressed_size
        self.uncompressed_digest = uncompressed_digest
        self.tar_split_bytes = tar_split_bytes

    def apply_diff(self, dest: str, options: DifferContext) -> DifferOutput:
        from layerstore import _native
        from layerstore.datapath import native_source

        ts_path = os.path.join(os.path.dirname(dest), TAR_SPLIT)
        mode_before = os.lstat(dest).st_mode & 0o7777
        fd = os.open(ts_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            with native_source(self.source) as source:
                result = _native.apply_layer(
                    source,
                    dest,
                    tarsplit_fd=fd,
                    uid_map=[(m.container_id, m.host_id, m.size) for m in options.uid_map],
                    gid_map=[(m.container_id, m.host_id, m.size) for m in options.gid_map],
                    whiteout_format=options.whiteout_format,
                    trusted_compressed_digest=self.compressed_digest,
                    ignore_chown_errors=options.ignore_chown_errors,
                )
        finally:
            os.close(fd)
        if not os.path.isdir(dest):
            raise FileNotFoundError(
                errno.ENOENT,
                "the staging directory was removed while the layer was being extracted "
                "(a Go `containers-storage shutdown` removes every overlay staging dir)",
                dest,
            )
        compressed_size = int(result["compressed_size"])
        if self.compressed_digest is not None and self.compressed_size is not None:
            compressed_size = self.compressed_size
        size = int(result["size"])
        if options.whiteout_format == "overlay":
            size = _native.diff_size(dest, None, mode="overlay")
        mode_after = os.lstat(dest).st_mode & 0o7777
        out = DifferOutput(
            uid_set=list(result["uid_set"]),
            gid_set=list(result["gid_set"]),
            compressed_digest=self.compressed_digest or str(result["compressed_digest"]),
            uncompressed_digest=self.uncompressed_digest or str(result["uncompressed_digest"]),
            size=int(result["uncompressed_size"]),
            compressed_size=compressed_size,
            compression=int(result["compression"]),
            driver_size=size,
            root_dir_mode=mode_after if mode_after != mode_before else None,
        )
        if self.tar_split_bytes:
            import gzip

            with gzip.open(ts_path, "rb") as f:
                out.tar_split = f.read()
            import contextlib  # only with tar_split_bytes (not the CLI's import path)

            with contextlib.suppress(FileNotFoundError):
                os.unlink(ts_path)
        else:
            out.tar_split_file = ts_path
        return out
