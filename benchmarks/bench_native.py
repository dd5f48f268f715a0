"""Microbenchmarks of the native pieces (``layerstore._native``), each beside the limit
of this machine for the same work (OpenSSL SHA-256, ISA-L CRC-64 and inflate, zstd,
``cat`` to /dev/null).

Run: ``.venv/bin/python -m pytest benchmarks/bench_native.py`` (add
``--benchmark-only`` or ``-k sha256`` as usual). The summary at the end prints MB/s of
ours, of the limit, and their ratio. Corpus: the Debian rootfs from the bench cache
(``benchmarks/datasets.py``) when built, else a tar of ``/usr/lib/python3.11``.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from conftest import Corpus, isal_crc64_rate
from layerstore import _native

Report = Callable[[str, int, str, float | None], None]
MIB = 1 << 20
GZIP, ZSTD = 2, 4  # layers.json's compression values


def _fd_to_devnull(fn: Callable[[int, int], object], src: Path) -> Callable[[], object]:
    def run() -> object:
        with src.open("rb") as fin, open(os.devnull, "wb") as fout:
            return fn(fin.fileno(), fout.fileno())

    return run


@pytest.fixture(scope="module")
def block(corpus: Corpus) -> bytes:
    """64 MiB of the corpus tar (real file bytes, headers and padding)."""
    with corpus.tar.open("rb") as f:
        data = f.read(64 * MIB)
    return data * (64 * MIB // len(data)) if len(data) < 64 * MIB else data


def test_sha256(
    benchmark: Any, block: bytes, limits: dict[str, tuple[str, float]], report: Report
) -> None:
    got = benchmark.pedantic(_native.sha256, args=(block,), rounds=5, warmup_rounds=1)
    assert got == hashlib.sha256(block).hexdigest()
    report("sha256, 64 MiB buffer", len(block), *limits["sha256"])


def test_crc64(benchmark: Any, block: bytes, report: Report) -> None:
    benchmark.pedantic(_native.crc64, args=(block,), rounds=5, warmup_rounds=1)
    assert _native.crc64(b"123456789") == 0xB90956C775A41001  # Go's crc64.ISO check value
    report(
        "crc64 (ISO), 64 MiB buffer",
        len(block),
        "ISA-L crc64_iso_refl in memory",
        isal_crc64_rate(block),
    )


def test_inflate_gzip(
    benchmark: Any, corpus: Corpus, limits: dict[str, tuple[str, float]], report: Report
) -> None:
    run = _fd_to_devnull(lambda i, o: _native.decompress_fd(i, o, GZIP), corpus.gz)
    n = benchmark.pedantic(run, rounds=5, warmup_rounds=1)
    assert n == corpus.tar.stat().st_size
    report(f"inflate gzip ({corpus.gz.name})", n, *limits["gzip-inflate"])


def test_inflate_zstd(
    benchmark: Any, corpus: Corpus, limits: dict[str, tuple[str, float]], report: Report
) -> None:
    run = _fd_to_devnull(lambda i, o: _native.decompress_fd(i, o, ZSTD), corpus.zst)
    n = benchmark.pedantic(run, rounds=5, warmup_rounds=1)
    assert n == corpus.tar.stat().st_size
    report(f"decompress zstd ({corpus.zst.name})", n, *limits["zstd-inflate"])


def test_deflate_gzip(
    benchmark: Any, corpus: Corpus, limits: dict[str, tuple[str, float]], report: Report
) -> None:
    run = _fd_to_devnull(lambda i, o: _native.compress_fd(i, o, GZIP), corpus.tar)
    out = benchmark.pedantic(run, rounds=3, warmup_rounds=1)
    size = corpus.tar.stat().st_size
    assert 0 < out < size
    report(f"deflate gzip default level ({corpus.tar.name})", size, *limits["deflate"])


def test_tarsplit_disassemble(
    benchmark: Any, corpus: Corpus, limits: dict[str, tuple[str, float]], report: Report
) -> None:
    """Tar parse + tar-split pack + its gzip, from the tar to /dev/null."""
    run = _fd_to_devnull(_native.tarsplit_disassemble, corpus.tar)
    benchmark.pedantic(run, rounds=5, warmup_rounds=1)
    report(
        f"tar parse + tar-split pack ({corpus.tar.name})",
        corpus.tar.stat().st_size,
        *limits["read"],
    )


@pytest.fixture(scope="module")
def extracted(corpus: Corpus, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The corpus extracted with GNU tar, and our tar-split of it."""
    d = tmp_path_factory.mktemp("extracted")
    root = d / "root"
    root.mkdir()
    subprocess.run(["tar", "--numeric-owner", "-xpf", str(corpus.tar), "-C", str(root)], check=True)
    split = d / "layer.tar-split.gz"
    with corpus.tar.open("rb") as fin, split.open("wb") as fout:
        _native.tarsplit_disassemble(fin.fileno(), fout.fileno())
    return root, split


def test_tarsplit_assemble(
    benchmark: Any,
    corpus: Corpus,
    extracted: tuple[Path, Path],
    limits: dict[str, tuple[str, float]],
    report: Report,
) -> None:
    """tar-split unpack + file reads + CRC-64 checks: the uncompressed diff."""
    root, split = extracted

    def run() -> int:
        with open(os.devnull, "wb") as fout:
            n: int = _native.assemble(str(split), [str(root)], fout.fileno(), 0)
            return n

    n = benchmark.pedantic(run, rounds=5, warmup_rounds=1)
    assert n == corpus.tar.stat().st_size
    report(f"tar-split assemble ({corpus.tar.name})", n, *limits["read"])


def test_truncindex_get(benchmark: Any, report: Report) -> None:
    ids = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(10_000)]
    index = _native.TruncIndex(ids)
    prefix = ids[5_000][:12]
    assert benchmark(index.get, prefix) == ids[5_000]
    report("truncindex get (10,000 ids, 12-char prefix)", 0, "", None)
