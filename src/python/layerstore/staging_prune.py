"""What the layer store's load needs of staging directories: telling the abandoned ones
(their lock can be taken) from the live ones, and removing them (:func:`prune_staging`).

Kept apart from :mod:`layerstore.staging` (differs, new staging directories) because a
writer's load prunes whenever a staging directory exists — during every import — and
that module's imports (logging, tempfile, dataclasses, typing) would cost each short
CLI call more than its own work.
"""

from __future__ import annotations

import _thread
import errno
import fcntl
import os
import time

from layerstore.drivers.base import remove_tree

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing
if TYPE_CHECKING:
    from collections.abc import Iterable
    from typing import Final

__all__ = ["STAGING_DIR", "STAGING_LOCK", "prune_staging", "remove_root_if_empty"]

STAGING_DIR: Final = "staging"
STAGING_LOCK: Final = "staging.lock"

# open-file-description locks: they conflict with every other fd, in this process too,
# and with the classic fcntl record locks Go's staging lock file uses.
_F_OFD_SETLK: Final = getattr(fcntl, "F_OFD_SETLK", 37)
_FLOCK: Final = "hhxxxxqqixxxx"  # struct flock on 64-bit Linux

# staging directories this process is filling (a prune in this process skips them);
# layerstore.staging adds and removes them
_live: set[str] = set()
_live_mutex = _thread.allocate_lock()


def remove_root_if_empty(root: str) -> None:
    """Remove the staging root once nothing is staged in it, so that a store we imported
    into (or failed to) has no directory Go's would not have. A concurrent creator that
    loses its root this way makes it again (:class:`StagingDir`)."""
    try:
        os.rmdir(root)
    except OSError:  # not empty (another import is staging), or already gone
        return


def prune_staging(roots: Iterable[str]) -> list[str]:
    """Remove abandoned staging directories under each root (those whose lock can be
    taken and that no thread of this process is filling); returns what was removed."""
    removed: list[str] = []
    for root in roots:
        try:
            names = os.listdir(root)
        except (FileNotFoundError, NotADirectoryError):
            continue
        for name in names:
            path = os.path.join(root, name)
            with _live_mutex:
                if path in _live:
                    continue
            if _try_lock_for_removal(path):
                import logging  # only when there is something to report

                logging.getLogger("layerstore.staging").info(
                    "removing abandoned staging directory %s", path
                )
                removed.append(path)
        if removed:
            remove_root_if_empty(root)
    return removed


def _try_lock_for_removal(path: str) -> bool:
    lock_path = os.path.join(path, STAGING_LOCK)
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW)
    except FileNotFoundError:
        return _remove_unfinished(path)
    except OSError:
        return False
    try:
        try:
            _ofd_lock(fd)
        except OSError as e:
            if e.errno in (errno.EAGAIN, errno.EACCES):
                return False
            raise
        remove_tree(path)
        return True
    finally:
        os.close(fd)


def _remove_unfinished(path: str) -> bool:
    """A staging directory without its lock file: its maker (``StagingDir``) died before
    locking it or is at it now, or it is not ours. Empty or holding only the unlocked
    fresh lock file, it is removed (a live maker then starts again elsewhere); with
    anything else in it, only once it is a minute old."""
    fresh = os.path.join(path, "." + STAGING_LOCK)
    try:
        names = os.listdir(path)
    except OSError:
        return False
    if not names:
        try:
            os.rmdir(path)  # fails if the maker has just created its file
        except OSError:
            return False
        return True
    if names == ["." + STAGING_LOCK]:
        try:
            fd = os.open(fresh, os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW)
        except OSError:
            return False
        try:
            try:
                _ofd_lock(fd)
            except OSError:
                return False  # its maker holds it: alive, about to rename it
            # Held here, so a maker that has not locked it yet will fail to and go.
            try:
                os.unlink(fresh)
                os.rmdir(path)
            except OSError:
                return False
            return True
        finally:
            os.close(fd)
    if os.path.isdir(path) and _older_than(path, 60.0):
        remove_tree(path)
        return True
    return False


def _older_than(path: str, seconds: float) -> bool:
    try:
        return time.time() - os.stat(path).st_mtime > seconds
    except OSError:
        return False


def _ofd_lock(fd: int) -> None:
    """Take a write lock on the whole file, without waiting (EAGAIN when held)."""
    import struct

    fcntl.fcntl(fd, _F_OFD_SETLK, struct.pack(_FLOCK, fcntl.F_WRLCK, os.SEEK_SET, 0, 0, 0))
