"""Digests and compression of the native core, checked against Python's and the system
tools' implementations: what we write they read, what they write we read, errors in Go's
words."""

from __future__ import annotations

import bz2
import contextlib
import gzip
import hashlib
import lzma
import os
import subprocess
import threading
from pathlib import Path

import pytest

from layerstore import _native
from layerstore.errors import InvalidArchive

NONE, BZIP2, GZIP, XZ, ZSTD = range(5)


def sample(n: int) -> bytes:
    words = b"layer store tar split overlay \n".split(b" ")
    rnd = os.urandom(n // 8)
    out = bytearray()
    i = 0
    while len(out) < n:
        out += words[rnd[i % len(rnd)] % len(words)] + b" "
        if i % 50 == 0:
            out += rnd[i % len(rnd) : i % len(rnd) + 40]
        i += 1
    return bytes(out[:n])


DATA = sample(2_000_000)


def run_fd(fn: object, data: bytes, *args: int) -> tuple[int, bytes]:
    """Feeds data through a pipe into fn(in_fd, out_fd, *args) and collects its output."""
    in_r, in_w = os.pipe()
    out_r, out_w = os.pipe()
    chunks: list[bytes] = []

    def feed() -> None:
        with os.fdopen(in_w, "wb") as f, contextlib.suppress(BrokenPipeError):
            f.write(data)  # the native side stops reading early on bad input

    def drain() -> None:
        while chunk := os.read(out_r, 1 << 20):
            chunks.append(chunk)

    threads = [threading.Thread(target=feed), threading.Thread(target=drain)]
    for t in threads:
        t.start()
    try:
        n = fn(in_r, out_w, *args)  # type: ignore[operator]
    finally:
        os.close(in_r)
        os.close(out_w)
        for t in threads:
            t.join()
        os.close(out_r)
    out = b"".join(chunks)
    assert n == len(out)
    return n, out


def compress(data: bytes, compression: int, level: int = -1, threads: int = 0) -> bytes:
    return run_fd(_native.compress_fd, data, compression, level, threads)[1]


def decompress(data: bytes, compression: int = -1) -> bytes:
    return run_fd(_native.decompress_fd, data, compression)[1]


def test_digests_match_hashlib_and_go_vectors() -> None:
    for data in (b"", b"abc", DATA):
        assert _native.sha256(data) == hashlib.sha256(data).hexdigest()
    assert _native.sha256(memoryview(DATA)[10:20]) == hashlib.sha256(DATA[10:20]).hexdigest()
    # SPEC §5.3: Go's crc64.Checksum(data, crc64.MakeTable(crc64.ISO))
    assert _native.crc64(b"foo") == 0x3C3C303000000000
    assert _native.crc64(b"hello\n") == 0x614C3EEEE2D81000
    assert _native.crc64(b"imma hurr til I derp") == 0x0274A4B1ABEC6B4E
    assert _native.crc64(b"") == 0


def test_detect_compression() -> None:
    assert _native.detect_compression(gzip.compress(b"x")) == GZIP
    assert _native.detect_compression(bz2.compress(b"x")) == BZIP2
    assert _native.detect_compression(lzma.compress(b"x")) == XZ
    assert _native.detect_compression(b"\x28\xb5\x2f\xfd\x00") == ZSTD
    assert _native.detect_compression(b"\x50\x2a\x4d\x18") == NONE  # zstd skippable frame
    assert _native.detect_compression(b"\x1f\x8b") == NONE
    assert _native.detect_compression(b"") == NONE


@pytest.mark.parametrize("level", [-1, 1, 6, 9])
def test_parallel_gzip_is_one_stream_independent_of_threads(level: int) -> None:
    one = compress(DATA, GZIP, level, 1)
    assert compress(DATA, GZIP, level, 2) == one
    assert compress(DATA, GZIP, level, 5) == one
    assert gzip.decompress(one) == DATA
    assert (
        subprocess.run(["gzip", "-dc"], input=one, capture_output=True, check=True).stdout == DATA
    )
    assert compress(b"", GZIP) and gzip.decompress(compress(b"", GZIP)) == b""


def test_zstd_output_and_unsupported_formats() -> None:
    z = compress(DATA, ZSTD, -1, 2)
    unz = subprocess.run(["zstd", "-dc"], input=z, capture_output=True, check=True).stdout
    assert unz == DATA
    assert compress(DATA, NONE) == DATA
    with pytest.raises(InvalidArchive, match=r"^unsupported compression format tar\.bz2$"):
        compress(DATA, BZIP2)
    with pytest.raises(InvalidArchive, match=r"^unsupported compression format tar\.xz$"):
        compress(DATA, XZ)


def test_decompress_what_others_write(tmp_path: Path) -> None:
    zst = subprocess.run(["zstd", "-c"], input=DATA, capture_output=True, check=True).stdout
    for blob in (gzip.compress(DATA), bz2.compress(DATA), lzma.compress(DATA), zst, DATA):
        assert decompress(blob) == DATA
    multi = gzip.compress(DATA[:1000]) + gzip.compress(DATA[1000:])
    assert decompress(multi) == DATA
    assert decompress(b"") == b""


@pytest.mark.parametrize(
    ("blob", "message"),
    [
        (gzip.compress(DATA)[:5000], "unexpected EOF"),
        (gzip.compress(DATA) + b"garbage!!!", "gzip: invalid header"),
        (bz2.compress(DATA)[:5000], "unexpected EOF"),
        (lzma.compress(DATA)[:5000], "unexpected EOF"),
    ],
)
def test_corrupt_input_is_invalid_archive(blob: bytes, message: str) -> None:
    with pytest.raises(InvalidArchive) as err:
        decompress(blob)
    assert str(err.value) == message


def test_corrupt_zstd() -> None:
    zst = subprocess.run(["zstd", "-c"], input=DATA, capture_output=True, check=True).stdout
    with pytest.raises(InvalidArchive, match=r"^unexpected EOF$"):
        decompress(zst[:-20])
    broken = zst[:10] + bytes(200) + zst[210:]
    with pytest.raises(InvalidArchive, match=r"^zstd: "):
        decompress(broken)
