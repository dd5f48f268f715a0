"""Atomic file writes as containers/storage's pkg/ioutils does them (SPEC.md §4).

The data goes to a temp file ``.tmp-<basename><random decimal uint32>`` in the target's
directory (``O_RDWR|O_CREAT|O_EXCL``, 0600), is written in full, ``fdatasync``-ed (unless
``sync=False``, used for volatile files), its mtime read back with ``fstat``, its mode set
with ``fchmod`` (so umask does not apply), closed and renamed over the target. Readers
see the old file or the new one, never a mix; a reader holding the old inode keeps its
data. The directory is not fsynced (neither does Go). On any error the temp file is
removed, the target is left as it was, and the OSError names the target path.

The returned mtime (ns) is the new file's mtime: the store remembers it to notice
later edits by others (SPEC.md §3.4).
"""

from __future__ import annotations

import errno
import os

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing
if TYPE_CHECKING:
    from types import TracebackType
    from typing import Final

__all__ = ["AtomicWriter", "atomic_write"]

_TEMP_PREFIX: Final = ".tmp-"
_MAX_TRIES: Final = 10000  # Go's os.CreateTemp gives up after 10000 names that exist

Bytes = bytes | bytearray | memoryview


def _wrap(e: OSError, doing: str, path: str) -> OSError:
    """The same OSError subclass, with what we were doing and the target path."""
    return OSError(e.errno, f"{doing}: {e.strerror}", path)


def _create_temp(path: str) -> tuple[int, str]:
    """Go's ``os.CreateTemp(dir(path), ".tmp-"+base(path))``: fd and temp path."""
    directory, base = os.path.split(path)
    prefix = os.path.join(directory, _TEMP_PREFIX + base)
    flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
    for _ in range(_MAX_TRIES):
        temp = prefix + str(int.from_bytes(os.urandom(4), "little"))
        try:
            return os.open(temp, flags, 0o600), temp
        except FileExistsError:
            continue
        except OSError as e:
            raise _wrap(e, "creating a temporary file", path) from e
    raise OSError(errno.EEXIST, "creating a temporary file: every name tried exists", path)


def _write_all(fd: int, data: Bytes) -> int:
    view = memoryview(data).cast("B")
    total = len(view)
    done = 0
    while done < total:
        n = os.write(fd, view[done:])
        if n <= 0:  # pragma: no cover - a regular file never writes 0 without an error
            raise OSError(errno.EIO, "short write")
        done += n
    return total


def _finish(fd: int, temp: str, path: str, mode: int, sync: bool) -> int:
    """Sync, read the mtime, chmod, close and rename. Closes fd; the caller cleans up."""
    try:
        if sync:
            os.fdatasync(fd)
        mtime_ns = os.fstat(fd).st_mtime_ns
        os.fchmod(fd, mode)
    finally:
        os.close(fd)
    os.rename(temp, path)
    return mtime_ns


def _remove_quietly(temp: str) -> None:
    try:  # noqa: SIM105 - contextlib is not imported for this
        os.unlink(temp)
    except OSError:
        pass


def atomic_write(path: str, data: Bytes, *, mode: int = 0o600, sync: bool = True) -> int:
    """Replace ``path`` with ``data`` atomically; returns the new file's mtime in ns."""
    path = os.path.abspath(path)
    fd, temp = _create_temp(path)
    try:
        try:
            _write_all(fd, data)
        except OSError:
            os.close(fd)
            raise
        return _finish(fd, temp, path, mode, sync)
    except OSError as e:
        _remove_quietly(temp)
        raise _wrap(e, f"writing {os.path.basename(temp)}", path) from e
    except BaseException:
        _remove_quietly(temp)
        raise


class AtomicWriter:
    """Streaming :func:`atomic_write`: nothing changes at ``path`` until :meth:`commit`.

    As a context manager it commits on a clean exit and aborts on an exception.
    :meth:`fileno` gives the temp file's fd for native writers (write at the current
    offset, then commit).
    """

    def __init__(self, path: str, *, mode: int = 0o600, sync: bool = True) -> None:
        self.path = os.path.abspath(path)
        self.mode = mode
        self.sync = sync
        self._fd, self._temp = _create_temp(self.path)

    @property
    def closed(self) -> bool:
        return self._fd < 0

    @property
    def temp_path(self) -> str:
        """Where the data is until commit (``.tmp-<basename><uint32>``)."""
        return self._temp

    def writable(self) -> bool:
        return True

    def fileno(self) -> int:
        self._check_open()
        return self._fd

    def write(self, data: Bytes) -> int:
        """Write all of ``data``; returns its length in bytes."""
        self._check_open()
        try:
            return _write_all(self._fd, data)
        except OSError as e:
            self.abort()
            raise _wrap(e, f"writing {os.path.basename(self._temp)}", self.path) from e

    def commit(self) -> int:
        """Make the data the content of ``path``; returns its mtime in ns."""
        self._check_open()
        fd, self._fd = self._fd, -1
        try:
            return _finish(fd, self._temp, self.path, self.mode, self.sync)
        except OSError as e:
            _remove_quietly(self._temp)
            raise _wrap(e, f"committing {os.path.basename(self._temp)}", self.path) from e
        except BaseException:
            _remove_quietly(self._temp)
            raise

    def abort(self) -> None:
        """Throw the data away; ``path`` keeps its old content. Safe to call twice."""
        if self._fd < 0:
            return
        fd, self._fd = self._fd, -1
        try:
            os.close(fd)
        finally:
            _remove_quietly(self._temp)

    def _check_open(self) -> None:
        if self._fd < 0:
            raise ValueError(f"atomic writer for {self.path!r} is already committed or aborted")

    def __enter__(self) -> AtomicWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            if not self.closed:
                self.commit()
        else:
            self.abort()

    def __del__(self) -> None:
        # Never leave a temp file behind when the writer is dropped without a decision.
        if getattr(self, "_fd", -1) >= 0:
            self.abort()
