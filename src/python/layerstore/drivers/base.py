"""What every driver shares: :class:`MountOptions` and the tree helpers.

The graph-driver protocol itself (:class:`Driver`, containers/storage's ``Driver``) is
in :mod:`layerstore.drivers.protocol` — it needs :mod:`typing` at run time, which a
short CLI call should not pay for — and is reachable here as ``Driver`` too.
"""

from __future__ import annotations

import errno
import os
import stat
import sys

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing
if TYPE_CHECKING:
    from collections.abc import Callable
    from dataclasses import dataclass
    from typing import Any

    from layerstore.drivers.protocol import Driver
else:  # the same records without importing dataclasses (slow to import)
    from layerstore._dataclass import dataclass

__all__ = ["Driver", "MountOptions", "exchange_paths", "make_temp_dir", "remove_tree"]


def __getattr__(name: str) -> Any:
    if name == "Driver":  # imported on first use: the protocol needs typing
        from layerstore.drivers.protocol import Driver

        return Driver
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@dataclass(frozen=True, slots=True)
class MountOptions:
    """What a mount asks of the driver: the SELinux label and mount options."""

    mount_label: str = ""
    options: tuple[str, ...] = ()


_RENAME_EXCHANGE = 2


def exchange_paths(a: str, b: str) -> None:
    """Swap two existing paths atomically (renameat2 RENAME_EXCHANGE)."""
    import ctypes
    import ctypes.util

    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    at_fdcwd = -100
    if (
        libc.renameat2(
            ctypes.c_int(at_fdcwd),
            os.fsencode(a),
            ctypes.c_int(at_fdcwd),
            os.fsencode(b),
            ctypes.c_uint(_RENAME_EXCHANGE),
        )
        != 0
    ):
        err = ctypes.get_errno()
        raise OSError(err, f"exchanging {a!r} and {b!r}: {os.strerror(err)}", b)


def make_temp_dir(directory: str, prefix: str) -> str:
    """``tempfile.mkdtemp(prefix=prefix, dir=directory)`` (mode 0700, a fresh random
    name) without importing tempfile."""
    for _ in range(100):
        path = os.path.join(directory, prefix + os.urandom(6).hex())
        try:
            os.mkdir(path, 0o700)
            return path
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no unused temporary directory name", directory)


def remove_tree(path: str) -> None:
    """Go's ``os.RemoveAll``: ``path`` is gone afterwards (no error when it already
    was), whatever the permissions of the directories inside."""

    def fix_and_retry(func: Callable[..., Any], p: str, exc: BaseException) -> None:
        if isinstance(exc, FileNotFoundError):
            return
        import contextlib  # lazily, as shutil below: only deletions need it

        with contextlib.suppress(OSError):
            os.chmod(os.path.dirname(p), 0o700)
        with contextlib.suppress(OSError):
            if os.path.isdir(p) and not os.path.islink(p):
                os.chmod(p, 0o700)
        func(p)

    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(st.st_mode):
        os.unlink(path)
        return
    # The common case, a staging directory after its commit (a lock file, nothing else):
    # no subdirectories, so no shutil (and the bz2/lzma modules it imports) either.
    try:
        with os.scandir(path) as it:
            entries = [(e.path, e.is_dir(follow_symlinks=False)) for e in it]
        if not any(is_dir for _, is_dir in entries):
            for p, _ in entries:
                os.unlink(p)
            os.rmdir(path)
            return
    except OSError:
        pass  # permissions, a race: the general way below deals with it
    import shutil  # lazily: only deletions need it

    if sys.version_info >= (3, 12):
        shutil.rmtree(path, onexc=fix_and_retry)
    else:
        shutil.rmtree(path, onerror=lambda f, p, info: fix_and_retry(f, p, info[1]))
