"""Plumbing between Python inputs/outputs and the native data path.

The native calls take a file descriptor or a buffer and run with the GIL released.
This module turns what users hand us (a path, bytes, a binary file object, a pipe) into
one of those without reading the data into memory. (The other way, a native writer
turned into a readable stream, is :mod:`layerstore.diffstream`.)
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import os

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (an import's path)
if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import IO, TypeAlias

    DiffSource: TypeAlias = bytes | bytearray | memoryview | str | os.PathLike[str] | IO[bytes]

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
    import threading  # only a file object without a usable fd needs the pump

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
