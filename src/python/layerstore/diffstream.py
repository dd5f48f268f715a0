"""A readable stream over bytes a native writer produces on a thread (what
:meth:`LayerStore.diff` returns). Its own module: the class needs :mod:`typing` at run
time (``BinaryIO``), which an import has no use for."""

from __future__ import annotations

import contextlib
import errno
import io
import os
import threading
from collections.abc import Callable
from typing import Any, BinaryIO

from layerstore.datapath import _big_pipe

__all__ = ["DiffStream"]


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
