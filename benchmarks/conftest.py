"""Fixtures for the native microbenchmarks (``bench_native.py``): the corpus, the
machine's limits, and a summary table printing each of ours beside its limit.

Run: ``.venv/bin/python -m pytest benchmarks/bench_native.py`` (not part of ``make
test``, which collects ``tests/`` only).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import datasets

MB = 1_000_000


def pytest_configure(config: pytest.Config) -> None:
    """Keep the benchmarks' temporary files apart from the test suite's: pytest's
    clean-up of old numbered dirs would otherwise trip over the tests' leftover mounts."""
    if not config.option.basetemp:
        config.option.basetemp = "/tmp/layerstore-bench-pytest"


# ---- the corpus ---------------------------------------------------------------------


@dataclass(frozen=True)
class Corpus:
    """One real tarball in three forms, and what it is."""

    tar: Path
    gz: Path
    zst: Path
    description: str


@pytest.fixture(scope="session")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Corpus:
    """The Debian rootfs from the bench cache if built, else a tar of /usr/lib/python3.11."""
    cache = datasets.cache_dir()
    if all((cache / f"rootfs.tar{s}").exists() for s in ("", ".gz", ".zst")):
        return Corpus(
            cache / "rootfs.tar",
            cache / "rootfs.tar.gz",
            cache / "rootfs.tar.zst",
            f"Debian bookworm minbase rootfs ({cache})",
        )
    d = tmp_path_factory.mktemp("corpus")
    tar = d / "python3.11.tar"
    subprocess.run(
        ["tar", "--sort=name", "-C", "/usr/lib", "-cf", str(tar), "python3.11"], check=True
    )
    with tar.open("rb") as src, (d / "python3.11.tar.gz").open("wb") as dst:
        subprocess.run(["gzip", "-6", "-n", "-c"], stdin=src, stdout=dst, check=True)
    with tar.open("rb") as src, (d / "python3.11.tar.zst").open("wb") as dst:
        subprocess.run(["zstd", "-3", "-q", "-c"], stdin=src, stdout=dst, check=True)
    return Corpus(
        tar, d / "python3.11.tar.gz", d / "python3.11.tar.zst", "tar of /usr/lib/python3.11"
    )


# ---- the machine's limits -----------------------------------------------------------


def best_of(n: int, fn: Callable[[], object]) -> float:
    """Fastest of ``n`` wall-clock timings of ``fn`` (seconds)."""
    best = float("inf")
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def command_rate(argv: list[str], stdin: Path, nbytes: int, runs: int = 3) -> float:
    """Bytes per second of ``argv < stdin > /dev/null`` (best of ``runs``)."""

    def once() -> None:
        with stdin.open("rb") as fin:
            subprocess.run(argv, stdin=fin, stdout=subprocess.DEVNULL, check=True)

    return nbytes / best_of(runs, once)


def openssl_sha256_rate() -> float:
    """``openssl speed -evp sha256`` on 16 KiB blocks, bytes per second."""
    out = subprocess.run(
        ["openssl", "speed", "-evp", "sha256", "-bytes", "16384", "-seconds", "2"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    m = re.search(r"^sha256\s+([\d.]+)k\s*$", out, re.MULTILINE)
    if m is None:
        raise RuntimeError(f"can't read openssl speed output: {out!r}")
    return float(m.group(1)) * 1000


def isal_crc64_rate(buf: bytes) -> float:
    """ISA-L's ``crc64_iso_refl`` (what tar-split's CRC-64 costs at best), bytes/s."""
    name = ctypes.util.find_library("isal")
    if name is None:
        raise RuntimeError("libisal not found (apt-get install libisal-dev)")
    lib = ctypes.CDLL(name)
    fn = lib.crc64_iso_refl
    fn.restype = ctypes.c_uint64
    fn.argtypes = [ctypes.c_uint64, ctypes.c_char_p, ctypes.c_uint64]
    return len(buf) / best_of(5, lambda: fn(0, buf, len(buf)))


@dataclass
class Row:
    name: str
    nbytes: int
    limit_name: str
    limit_rate: float | None
    stats: Any = None  # pytest-benchmark's stats object, read at the end


ROWS: list[Row] = []


@pytest.fixture
def report(benchmark: Any) -> Iterator[Callable[[str, int, str, float | None], None]]:
    """``report(name, bytes per round, limit name, limit bytes/s)`` after benchmarking."""
    rows: list[Row] = []

    def record(name: str, nbytes: int, limit_name: str, limit_rate: float | None) -> None:
        rows.append(Row(name, nbytes, limit_name, limit_rate))

    yield record
    for r in rows:
        r.stats = getattr(benchmark, "stats", None)
        ROWS.append(r)


def _median(stats: Any) -> float | None:
    inner = getattr(stats, "stats", None)
    return getattr(inner, "median", None)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not ROWS:
        return
    tr = terminalreporter
    tr.section("ours beside the machine's limit or the target (median of the rounds)")
    tr.write_line(f"{'benchmark':54} {'ours':>12} {'limit':>12}  ours/limit  limit")
    for r in ROWS:
        med = _median(r.stats)
        if med is None:
            tr.write_line(f"{r.name:54} {'(no timing)':>12}")
            continue
        if r.nbytes:
            ours = r.nbytes / med
            lim = f"{r.limit_rate / MB:9.0f} MB/s" if r.limit_rate else f"{'—':>12}"
            frac = f"{ours / r.limit_rate:10.2f}" if r.limit_rate else f"{'':10}"
            tr.write_line(f"{r.name:54} {ours / MB:7.0f} MB/s {lim}  {frac}  {r.limit_name}")
        else:
            lim = f"{r.limit_rate * 1e6:9.2f} µs" if r.limit_rate else f"{'—':>12}"
            frac = f"{med / r.limit_rate:10.2f}" if r.limit_rate else f"{'':10}"
            tr.write_line(f"{r.name:54} {med * 1e6:9.2f} µs {lim}  {frac}  {r.limit_name}")


@pytest.fixture(scope="session")
def limits(corpus: Corpus) -> dict[str, tuple[str, float]]:
    """Each limit as (description, bytes per second), measured once per session."""
    tar_size = corpus.tar.stat().st_size
    out: dict[str, tuple[str, float]] = {
        "sha256": ("openssl speed -evp sha256 (16 KiB blocks)", openssl_sha256_rate()),
        "read": ("cat tar > /dev/null", command_rate(["cat"], corpus.tar, tar_size)),
        "gzip-inflate": ("gzip -dc (zlib)", command_rate(["gzip", "-dc"], corpus.gz, tar_size)),
        "zstd-inflate": ("zstd -dc", command_rate(["zstd", "-dcq"], corpus.zst, tar_size)),
    }
    if shutil.which("igzip"):
        out["gzip-inflate"] = (
            "igzip -dc (ISA-L)",
            command_rate(["igzip", "-dc"], corpus.gz, tar_size),
        )
        out["deflate"] = (
            f"igzip -1 -T {os.cpu_count()} (ISA-L)",
            command_rate(["igzip", "-1", "-c", "-T", str(os.cpu_count())], corpus.tar, tar_size),
        )
    else:
        out["deflate"] = ("pigz -1", command_rate(["pigz", "-1", "-c"], corpus.tar, tar_size))
    return out
