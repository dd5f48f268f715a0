"""A progress line for long imports and diffs, drawn only on a terminal.

The CLI decides whether to draw (only when standard error is a terminal, never with
``--json``); when it does not, none of this is created and the data path runs exactly
as without it. When it does, the bytes are counted without touching them one by one:

- an input is wrapped in a :class:`CountingReader`, which the store reads in large
  chunks (1 MiB) through its pump thread — one integer addition per chunk (the native
  reader maps a regular file, so its offset cannot be watched instead);
- an output copy loop calls :meth:`Progress.add` once per chunk it moved.

A drawing thread wakes a few times a second and rewrites one line on the terminal:
bytes so far, the total and a percentage and an ETA when the total is known, and the
rate. The final line stays (with a newline) when the work succeeded and is erased when
it failed, so the error message that follows stands alone.
"""

from __future__ import annotations

import contextlib
import io
import os
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import IO, Any, BinaryIO

__all__ = ["CountingReader", "Progress", "format_bytes", "format_line"]

_INTERVAL = 0.2  # seconds between redraws
_WINDOW = 3.0  # seconds of history behind the displayed rate


def format_bytes(n: float) -> str:
    """``1536`` → ``1.5 KiB``; binary units, one decimal above bytes."""
    if n < 1024:
        return f"{int(n)} B"
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        n /= 1024
        if n < 1024 or unit == "TiB":
            break
    return f"{n:.1f} {unit}"


def _format_duration(seconds: float) -> str:
    s = max(0, round(seconds))
    h, rest = divmod(s, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def format_line(
    label: str, done: int, total: int | None, rate: float, elapsed: float, final: bool
) -> str:
    """One progress line, e.g.
    ``import-layer  12.0 MiB / 48.0 MiB  25.0%  96.0 MiB/s  ETA 0:01``."""
    parts = [label, format_bytes(done)]
    if total is not None and total > 0:
        parts[-1] += f" / {format_bytes(total)}"
        parts.append(f"{min(100.0, 100.0 * done / total):5.1f}%")
    parts.append(f"{format_bytes(rate)}/s")
    if final:
        parts.append(f"in {_format_duration(elapsed)}")
    elif total is not None and total > 0 and rate > 0 and done < total:
        parts.append(f"ETA {_format_duration((total - done) / rate)}")
    return "  ".join(parts)


class Progress:
    """Counts bytes and draws a progress line on ``stream`` (a terminal) from a thread.

    The count comes from :meth:`add` (called once per chunk) or, with ``poll``, from a
    function the drawing thread calls (e.g. an fd offset). Use as a context manager:
    entering draws the first line, leaving draws the final one (success) or erases the
    line (an exception is on its way). ``keep=False`` erases it on success too (for a
    series of short steps that should not leave a line each).
    """

    def __init__(
        self,
        label: str,
        stream: IO[str],
        total: int | None = None,
        *,
        poll: Callable[[], int] | None = None,
        interval: float = _INTERVAL,
        keep: bool = True,
    ) -> None:
        self.label = label
        self._keep = keep
        self.total = total
        self.done = 0
        self._stream = stream
        self._poll = poll
        self._interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._started = 0.0
        self._history: list[tuple[float, int]] = []
        self._width = 0

    def add(self, n: int) -> None:
        """Count ``n`` more bytes (call once per chunk, not per byte)."""
        self.done += n

    def _count(self) -> int:
        if self._poll is not None:
            # The fd may be closed under us at the end: keep the last count then.
            with contextlib.suppress(OSError, ValueError):
                self.done = self._poll()
        return self.done

    def _rate(self, now: float, done: int) -> float:
        """Bytes per second over the last few seconds (the whole run at the start)."""
        self._history.append((now, done))
        while len(self._history) > 2 and now - self._history[1][0] >= _WINDOW:
            self._history.pop(0)
        then, before = self._history[0]
        if now - then <= 0:
            return 0.0
        return (done - before) / (now - then)

    def _columns(self) -> int:
        try:
            return os.get_terminal_size(self._stream.fileno()).columns
        except (OSError, ValueError, AttributeError, io.UnsupportedOperation):
            return 80

    def _draw(self, line: str, end: str = "") -> None:
        width = self._columns() - 1
        line = line[:width] if width > 0 else line
        # "\r" and erase-to-end-of-line keep it to one line however long the last was.
        self._stream.write(f"\r{line}\x1b[K{end}")
        self._stream.flush()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            now = time.monotonic()
            done = self._count()
            rate = self._rate(now, done)
            self._draw(format_line(self.label, done, self.total, rate, now - self._started, False))

    def start(self) -> None:
        self._started = time.monotonic()
        self._history = [(self._started, 0)]
        self._draw(format_line(self.label, 0, self.total, 0.0, 0.0, False))
        self._thread = threading.Thread(target=self._run, name="layerstore progress", daemon=True)
        self._thread.start()

    def finish(self, ok: bool) -> None:
        """Stop drawing; leave the final line (``ok``, unless made with ``keep=False``)
        or erase it."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if not ok or not self._keep:
            self._stream.write("\r\x1b[K")
            self._stream.flush()
            return
        elapsed = time.monotonic() - self._started
        done = self._count()
        rate = done / elapsed if elapsed > 0 else 0.0
        self._draw(format_line(self.label, done, self.total, rate, elapsed, True), end="\n")

    def __enter__(self) -> Progress:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.finish(exc_type is None)


class CountingReader(io.RawIOBase, BinaryIO):
    """A readable binary stream over ``source`` that adds every chunk read to
    ``progress``. It has no ``fileno``, so the store reads it through its pump (in
    1 MiB chunks) instead of reading the fd behind our back."""

    def __init__(self, source: IO[bytes], progress: Progress) -> None:
        super().__init__()
        self._source = source
        self._progress = progress

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        readinto = getattr(self._source, "readinto", None)
        if readinto is not None:
            n = int(readinto(buffer) or 0)
        else:
            data = self._source.read(len(buffer))
            n = len(data)
            buffer[:n] = data
        self._progress.add(n)
        return n

    def read(self, size: int = -1) -> bytes:
        data = self._source.read(size)
        self._progress.add(len(data))
        return data
