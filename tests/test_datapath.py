"""The plumbing that feeds native calls: every kind of input reaches the native side
whole and in order, and errors of a background writer reach the reader."""

from __future__ import annotations

import io
import os
import select
import threading

import pytest

from layerstore.datapath import native_source
from layerstore.diffstream import DiffStream

PAYLOAD = bytes(range(256)) * 5000  # 1.28 MB: more than one pipe buffer and pump chunk


def _drain(src: int | memoryview) -> bytes:
    if isinstance(src, memoryview):
        return bytes(src)
    out = bytearray()
    while chunk := os.read(src, 1 << 16):
        out += chunk
    return bytes(out)


def test_bytes_are_passed_without_copy() -> None:
    data = bytearray(PAYLOAD)
    with native_source(data) as src:
        assert isinstance(src, memoryview)
        assert src.obj is data


def test_path_is_opened_and_closed(tmp_path: os.PathLike[str]) -> None:
    p = os.path.join(os.fspath(tmp_path), "layer.tar")
    with open(p, "wb") as f:
        f.write(PAYLOAD)
    with native_source(p) as src:
        assert isinstance(src, int)
        fd = src
        assert _drain(src) == PAYLOAD
    with pytest.raises(OSError):
        os.fstat(fd)


def test_buffered_file_object_is_read_from_its_logical_offset(tmp_path: os.PathLike[str]) -> None:
    p = os.path.join(os.fspath(tmp_path), "layer.tar")
    with open(p, "wb") as f:
        f.write(PAYLOAD)
    with open(p, "rb") as f:
        assert f.read(10) == PAYLOAD[:10]  # BufferedReader has read ahead far more than 10
        with native_source(f) as src:
            assert _drain(src) == PAYLOAD[10:]
        assert f.read() == b""


def test_object_without_fd_is_pumped_through_a_pipe() -> None:
    with native_source(io.BytesIO(PAYLOAD)) as src:
        assert isinstance(src, int)
        assert _drain(src) == PAYLOAD


def test_pipe_with_read_ahead_data_loses_nothing() -> None:
    rfd, wfd = os.pipe()

    def feed() -> None:
        with open(wfd, "wb") as w:
            w.write(PAYLOAD)

    t = threading.Thread(target=feed)
    t.start()
    with open(rfd, "rb") as r:
        head = r.read(3)  # the BufferedReader now holds bytes taken from the pipe
        with native_source(r) as src:
            rest = _drain(src)
    t.join()
    assert head + rest == PAYLOAD


def test_pump_errors_are_raised() -> None:
    class Broken(io.RawIOBase):
        def readable(self) -> bool:
            return True

        def readinto(self, b: memoryview) -> int:  # type: ignore[override]
            raise OSError(5, "disk on fire")

    with pytest.raises(OSError, match="disk on fire"), native_source(Broken()) as src:
        _drain(src)


def test_not_a_source_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="diff must be"), native_source(42):  # type: ignore[arg-type]
        pass


def test_diff_stream_delivers_all_bytes_and_the_result() -> None:
    def produce(wfd: int) -> int:
        view = memoryview(PAYLOAD)
        while view:
            view = view[os.write(wfd, view) :]
        return len(PAYLOAD)

    with DiffStream(produce) as s:
        assert s.read() == PAYLOAD
    assert s.result == len(PAYLOAD)


def test_diff_stream_raises_the_writer_error_after_the_data() -> None:
    def produce(wfd: int) -> None:
        os.write(wfd, b"partial")
        raise ValueError('file integrity checksum failed for "etc/passwd"')

    s = DiffStream(produce)
    assert s.read(7) == b"partial"
    with pytest.raises(ValueError, match="checksum failed"):
        s.read()
    s.close()


def test_diff_stream_closed_early_stops_the_writer() -> None:
    def produce(wfd: int) -> None:
        while True:
            os.write(wfd, PAYLOAD)

    s = DiffStream(produce)
    assert len(s.read(100)) == 100
    s.close()  # must not hang, and EPIPE of the abandoned writer is not an error
    assert s.closed


def test_buffered_pipe_passes_on_data_while_the_writer_is_quiet() -> None:
    rfd, wfd = os.pipe()
    try:
        os.write(wfd, b"header")  # then the writer goes quiet, pipe still open
        with open(rfd, "rb") as r, native_source(r) as src:
            assert isinstance(src, int)
            ready, _, _ = select.select([src], [], [], 2.0)
            assert ready, "data already sent was held back waiting for a full chunk"
            assert os.read(src, 100) == b"header"
            os.close(wfd)
            wfd = -1
    finally:
        if wfd >= 0:
            os.close(wfd)
