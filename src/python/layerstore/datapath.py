"""Plumbing between Python inputs/outputs and the native data path.

The native calls take a file descriptor or a buffer and run with the GIL released.
This module turns what users hand us (a path, bytes, a binary file object, a pipe) into
one of those without reading the data into memory, and turns a native writer into a
readable stream (`DiffStream`) by running it on a thread that writes into a pipe.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import io
import os
import threading
from collections.abc import Callable, Iterator
from typing import IO, Any, BinaryIO

DiffSource = bytes | bytearray | memoryview | str | os.PathLike[str] | IO[bytes]

_PUMP_CHUNK = 1 << 20


_PIPE_SIZE = 1 << 20


def _big_pipe() -> tuple[int, int]:
    """A pipe with a 1 MiB buffer (the default 64 KiB makes the two ends take turns
    every 64 KiB, which costs more than the work on a fast stream)."""
    rfd, wfd = os.pipe2(os.O_CLOEXEC)
    with contextlib.suppress(OSError):  # above pipe-max-size for an unprivileged user
        fcntl.fcntl(wfd, fcntl.F_SETPIPE_SZ, _PIPE_SIZE)
    return rfd, wfd


def _pump(src: IO[bytes], wfd: int, errors: list[BaseException]) -> None:
    """Copy a Python file object into a pipe, in large chunks (GIL held only per chunk).

    ``read1`` where the object has it: it returns what is available instead of waiting
    for a whole chunk, so a quiet producer never holds back data already sent (and a
    failure downstream is seen at once)."""
    read = getattr(src, "read1", None) or src.read
    try:
        with open(wfd, "wb", buffering=0, closefd=True) as out:
            while True:
                chunk = read(_PUMP_CHUNK)
                if not chunk:
                    break
                out.write(chunk)
    except BrokenPipeError:
        pass  # the reader stopped early (it failed); its error is the one to report
    except BaseException as e:  # re-raised by the caller after the native side returns
        errors.append(e)


@contextlib.contextmanager
def native_source(diff: DiffSource) -> Iterator[int | memoryview]:
    """Yield an fd or a buffer the native apply can read, for any supported input.

    - bytes-like: the buffer itself (no copy);
    - a path: an fd opened read-only;
    - a file object on a real fd with nothing buffered ahead: that fd, positioned at
      the object's logical offset; afterwards the object is left at its end;
    - any other readable binary object: a pipe fed by a pump thread.
    """
    if isinstance(diff, bytes | bytearray | memoryview):
        yield memoryview(diff)
        return
    if isinstance(diff, str | os.PathLike):
        fd = os.open(os.fspath(diff), os.O_RDONLY | os.O_CLOEXEC)
        try:
            yield fd
        finally:
            os.close(fd)
        return
    if not callable(getattr(diff, "read", None)):
        raise TypeError(
            f"diff must be bytes, a path or a binary file object, not {type(diff).__name__}"
        )
    direct = _direct_fd(diff)
    if direct is not None:
        yield direct
        with contextlib.suppress(OSError, ValueError):
            diff.seek(0, os.SEEK_END)
        return
    rfd, wfd = _big_pipe()
    errors: list[BaseException] = []
    pump = threading.Thread(target=_pump, args=(diff, wfd, errors), daemon=True)
    pump.start()
    try:
        yield rfd
    finally:
        os.close(rfd)  # unblocks the pump if the native side stopped early
        pump.join()
    if errors:
        raise errors[0]


def _direct_fd(f: IO[bytes]) -> int | None:
    """The fd to read `f` from directly, or None when that would lose or skip data."""
    try:
        fd = f.fileno()
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        return None
    try:
        seekable = f.seekable()
    except (OSError, ValueError):
        seekable = False
    if seekable:
        os.lseek(fd, f.tell(), os.SEEK_SET)  # tell() accounts for read-ahead buffers
        return fd
    # A pipe or socket: only an unbuffered object is known to have taken nothing from
    # the fd (a buffered reader's peek would itself read, and block, on a quiet pipe).
    return fd if isinstance(f, io.FileIO) else None


class DiffStream(io.RawIOBase, BinaryIO):
    """A readable stream of bytes produced by a native writer running on a thread.

    `produce(wfd)` writes everything into `wfd` and returns; an exception it raises is
    re-raised from `read()` once the pipe is drained, and from `close()`.
    """

    def __init__(self, produce: Callable[[int], Any], name: str = "<diff>") -> None:
        super().__init__()
        self._rfd, wfd = _big_pipe()
        self._name = name
        self._error: BaseException | None = None
        self._finished = False
        self.result: Any = None

        def run() -> None:
            try:
                self.result = produce(wfd)
            except BaseException as e:
                self._error = e
            finally:
                with contextlib.suppress(OSError):
                    os.close(wfd)

        self._thread = threading.Thread(target=run, name=f"layerstore {name}", daemon=True)
        self._thread.start()

    @property
    def name(self) -> str:
        return self._name

    def readable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self._rfd

    def readinto(self, b: Any) -> int:
        n = os.readv(self._rfd, [b])
        if n == 0:
            self._finish()
        return n

    def _finish(self) -> None:
        if not self._finished:
            self._thread.join()
            self._finished = True
        if self._error is not None:
            err, self._error = self._error, None
            raise err

    def close(self) -> None:
        if self.closed:
            return
        try:
            os.close(self._rfd)  # a writer still running gets EPIPE and stops
            self._thread.join()
            self._finished = True
            err, self._error = self._error, None
            # Closing early makes the writer fail with EPIPE: that is not an error.
            if err is not None and getattr(err, "errno", None) != errno.EPIPE:
                raise err
        finally:
            super().close()
