"""Deterministic benchmark inputs, built once in a cache directory outside the repo.

Run ``python benchmarks/datasets.py`` (as root) to build everything; every step is
idempotent (a finished file is never rebuilt) and atomic (built under a ``.partial``
name, then renamed), so an interrupted run resumes cleanly.

Cache directory: ``$LAYERSTORE_BENCH_CACHE``, default ``/var/cache/layerstore-bench``.

Inputs (``quick`` variants are smaller, for smoke runs):

* ``rootfs/``: a Debian bookworm root filesystem made by
  ``debootstrap --variant=minbase bookworm rootfs http://deb.debian.org/debian``
  (about 195 MiB, 6.8k entries; apt's downloaded .debs are kept, as debootstrap leaves
  them). Packed with GNU tar into ``rootfs.tar`` (``--sort=name --format=posix
  --numeric-owner``, real mtimes, no atime/ctime records), ``rootfs.tar.gz``
  (``gzip -6 -n``) and ``rootfs.tar.zst`` (``zstd -3``).
* ``small-50000.tar.gz``: 50,000 files of 0-4 KiB (seeded random sizes and bytes) in
  500 directories.
* ``big-4x256M.tar.gz``: 4 files of 256 MiB, each half seeded random bytes and half
  seeded random text.
* ``store-1000`` / ``store-10000``: vfs stores (``graph/``, ``run/``) with that many
  layers, written directly in the Go CLI's format and checked against it: the Go CLI
  must list them all, and its own rewrite of ``layers.json`` must be byte-identical to
  ours.

Every tarball has a sidecar ``<name>.json`` with the sizes and SHA-256 digests of the
compressed and uncompressed streams (what a store records as the layer's digests).
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import io
import json
import os
import random
import shutil
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_CACHE = "/var/cache/layerstore-bench"
DEBIAN_MIRROR = "http://deb.debian.org/debian"
GO_CLI = "containers-storage"
MIB = 1 << 20
FIXED_MTIME = 1_700_000_000  # 2023-11-14, for the synthetic sets


def cache_dir() -> Path:
    return Path(os.environ.get("LAYERSTORE_BENCH_CACHE", DEFAULT_CACHE))


@dataclass(frozen=True)
class TarInput:
    """A layer tarball and the facts a store records about it."""

    name: str
    path: Path
    size: int  # bytes of the file as given to the store
    digest: str  # sha256 of the file as given ("compressed-diff-digest")
    tar_size: int  # bytes of the uncompressed tar ("diff-size")
    tar_digest: str  # sha256 of the uncompressed tar ("diff-digest")
    entries: int


@dataclass(frozen=True)
class StoreInput:
    """A ready-made vfs store; copy it before changing it."""

    name: str
    graph: Path
    run: Path
    layers: int


# ---- helpers ------------------------------------------------------------------------


def log(msg: str) -> None:
    print(f"[datasets] {msg}", file=sys.stderr, flush=True)


def _sha256_file(path: Path) -> tuple[str, int]:
    h = hashlib.sha256()
    n = 0
    with path.open("rb") as f:
        while chunk := f.read(4 * MIB):
            h.update(chunk)
            n += len(chunk)
    return "sha256:" + h.hexdigest(), n


def _decompressed_sha256(path: Path) -> tuple[str, int]:
    """sha256 and size of the tar inside ``path`` (decompressed with the system tools)."""
    tool = {".gz": ["gzip", "-dc"], ".zst": ["zstd", "-dcq"]}.get(path.suffix)
    if tool is None:
        return _sha256_file(path)
    h = hashlib.sha256()
    n = 0
    with subprocess.Popen([*tool, str(path)], stdout=subprocess.PIPE) as proc:
        assert proc.stdout is not None
        while chunk := proc.stdout.read(4 * MIB):
            h.update(chunk)
            n += len(chunk)
    if proc.returncode != 0:
        raise RuntimeError(f"{path}: decompression with {tool[0]} failed")
    return "sha256:" + h.hexdigest(), n


def _count_entries(tar_path: Path) -> int:
    out = subprocess.run(["tar", "-tf", str(tar_path)], check=True, capture_output=True).stdout
    return out.count(b"\n")


def _run(argv: list[str], **kwargs: object) -> None:
    subprocess.run(argv, check=True, **kwargs)  # type: ignore[call-overload]


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".json")


def _describe(path: Path, entries: int) -> TarInput:
    """Load the sidecar of ``path``, computing it the first time."""
    side = _sidecar(path)
    if side.exists():
        d = json.loads(side.read_text())
        return TarInput(name=path.name, path=path, **d)
    digest, size = _sha256_file(path)
    tar_digest, tar_size = _decompressed_sha256(path)
    d = {
        "size": size,
        "digest": digest,
        "tar_size": tar_size,
        "tar_digest": tar_digest,
        "entries": entries,
    }
    tmp = side.with_name(side.name + ".partial")
    tmp.write_text(json.dumps(d, indent=1) + "\n")
    tmp.rename(side)
    return TarInput(name=path.name, path=path, **d)


def _compress(tar: Path, out: Path, how: str) -> None:
    """Write ``out`` from ``tar`` with ``gzip -6 -n`` or ``zstd -3`` (atomic)."""
    if out.exists():
        return
    log(f"compressing {tar.name} -> {out.name}")
    tmp = out.with_name(out.name + ".partial")
    argv = ["gzip", "-6", "-n", "-c"] if how == "gzip" else ["zstd", "-3", "-q", "-c"]
    with tar.open("rb") as src, tmp.open("wb") as dst:
        _run([*argv], stdin=src, stdout=dst)
    tmp.rename(out)


# ---- Debian root filesystem ---------------------------------------------------------


def ensure_rootfs_dir(cache: Path) -> Path:
    root = cache / "rootfs"
    if root.is_dir():
        return root
    if os.geteuid() != 0:
        raise SystemExit("datasets: debootstrap needs root")
    partial = cache / "rootfs.partial"
    if partial.exists():
        shutil.rmtree(partial)
    log("debootstrap --variant=minbase bookworm (about 30 s with a good mirror)")
    _run(["debootstrap", "--variant=minbase", "bookworm", str(partial), DEBIAN_MIRROR])
    partial.rename(root)
    return root


def ensure_rootfs(cache: Path) -> dict[str, TarInput]:
    """The rootfs as ``tar``, ``tar.gz`` and ``tar.zst`` (keys of the result)."""
    root = ensure_rootfs_dir(cache)
    tar = cache / "rootfs.tar"
    if not tar.exists():
        log("packing rootfs.tar")
        tmp = cache / "rootfs.tar.partial"
        _run(
            [
                "tar",
                "--sort=name",
                "--format=posix",
                "--pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime",
                "--numeric-owner",
                "-C",
                str(root),
                "-cf",
                str(tmp),
                ".",
            ]
        )
        tmp.rename(tar)
    _compress(tar, cache / "rootfs.tar.gz", "gzip")
    _compress(tar, cache / "rootfs.tar.zst", "zstd")
    side = _sidecar(tar)
    entries = json.loads(side.read_text())["entries"] if side.exists() else _count_entries(tar)
    return {
        "tar": _describe(tar, entries),
        "tar.gz": _describe(cache / "rootfs.tar.gz", entries),
        "tar.zst": _describe(cache / "rootfs.tar.zst", entries),
    }


# ---- synthetic sets -----------------------------------------------------------------


def _tarinfo(name: str, size: int = 0, *, directory: bool = False) -> tarfile.TarInfo:
    ti = tarfile.TarInfo(name)
    ti.size = size
    ti.mtime = FIXED_MTIME
    ti.uid = ti.gid = 0
    ti.uname = ti.gname = "root"
    if directory:
        ti.type = tarfile.DIRTYPE
        ti.mode = 0o755
    else:
        ti.mode = 0o644
    return ti


def _write_tar_gz(out: Path, fill: object) -> None:
    """Write ``out`` (atomic): an uncompressed tar made by ``fill(tarfile)``, then gzip -6."""
    tmp_tar = out.with_name(out.name + ".tar.partial")
    with tarfile.open(tmp_tar, "w", format=tarfile.USTAR_FORMAT) as tf:
        fill(tf)  # type: ignore[operator]
    tmp_gz = out.with_name(out.name + ".partial")
    with tmp_tar.open("rb") as src, tmp_gz.open("wb") as dst:
        _run(["gzip", "-6", "-n", "-c"], stdin=src, stdout=dst)
    tmp_tar.unlink()
    tmp_gz.rename(out)


def ensure_small_files(cache: Path, count: int = 50_000, per_dir: int = 100) -> TarInput:
    """``count`` files of 0-4 KiB with seeded random sizes and contents, gzip -6."""
    out = cache / f"small-{count}.tar.gz"
    if not out.exists():
        log(f"building {out.name}")
        rng = random.Random(20261127)

        def fill(tf: tarfile.TarFile) -> None:
            for d in range(0, count, per_dir):
                dname = f"d{d // per_dir:04d}"
                tf.addfile(_tarinfo(dname, directory=True))
                for i in range(d, min(d + per_dir, count)):
                    size = rng.randint(0, 4096)
                    data = rng.randbytes(size)
                    tf.addfile(_tarinfo(f"{dname}/f{i:06d}", size), io.BytesIO(data))

        _write_tar_gz(out, fill)
    n_dirs = (count + per_dir - 1) // per_dir
    return _describe(out, count + n_dirs)


_TEXT = """layer store diff tarball digest image container overlay mount lock json record
parent child whiteout opaque directory file link symlink device fifo owner group mode
time extended attribute checksum stream gzip zstd compress inflate deflate buffer queue
thread pipeline extract apply commit rename sync metadata index"""
_WORDS = _TEXT.split()


def _text_block(rng: random.Random, size: int) -> bytes:
    """``size`` bytes of seeded random English-like text lines."""
    parts: list[str] = []
    n = 0
    while n < size:
        line = " ".join(rng.choices(_WORDS, k=rng.randint(4, 14))) + ".\n"
        parts.append(line)
        n += len(line)
    return "".join(parts).encode()[:size]


class _BigFileReader(io.RawIOBase):
    """The bytes of one big file, made on demand 1 MiB at a time: random, then text."""

    def __init__(self, seed: int, size: int) -> None:
        self._rng = random.Random(seed)
        self._size = size
        self._left = size
        self._buf = b""
        self._pos = 0

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        if self._pos == len(self._buf) and self._left:
            done = self._size - self._left
            n = min(MIB, self._left)
            if done < self._size // 2:
                self._buf = self._rng.randbytes(n)
            else:
                self._buf = _text_block(self._rng, n)
            self._pos = 0
            self._left -= n
        k = min(len(b), len(self._buf) - self._pos)
        b[:k] = self._buf[self._pos : self._pos + k]
        self._pos += k
        return k


def ensure_big_files(cache: Path, count: int = 4, size_mib: int = 256) -> TarInput:
    """``count`` files of ``size_mib`` MiB: first half seeded random bytes, then text."""
    out = cache / f"big-{count}x{size_mib}M.tar.gz"
    if not out.exists():
        log(f"building {out.name} (gzip -6 of {count * size_mib} MiB takes a while)")

        def fill(tf: tarfile.TarFile) -> None:
            tf.addfile(_tarinfo("big", directory=True))
            for i in range(count):
                size = size_mib * MIB
                tf.addfile(_tarinfo(f"big/file{i}.bin", size), _BigFileReader(1000 + i, size))

        _write_tar_gz(out, fill)
    return _describe(out, count + 1)


# ---- stores with many layers --------------------------------------------------------

_EMPTY_TAR = b"\0" * 1024  # an empty layer: the two zero blocks that end a tar


def _go(graph: Path, run: Path, *args: str, stdin: bytes | None = None) -> str:
    res = subprocess.run(
        [GO_CLI, "-g", str(graph), "-R", str(run), "-s", "vfs", *args],
        input=stdin,
        capture_output=True,
        check=False,
    )
    if res.returncode != 0:
        raise RuntimeError(f"{GO_CLI} {' '.join(args)}: {res.stderr.decode(errors='replace')}")
    return res.stdout.decode()


def _created(i: int) -> str:
    """Go's RFC 3339 with nanoseconds, trailing zeros trimmed."""
    base = dt.datetime(2026, 1, 1, tzinfo=dt.UTC) + dt.timedelta(seconds=i)
    nanos = (i * 123_456_789) % 1_000_000_000
    frac = f"{nanos:09d}".rstrip("0")
    return base.strftime("%Y-%m-%dT%H:%M:%S") + (f".{frac}" if frac else "") + "Z"


def _layer_records(n: int) -> list[dict[str, object]]:
    """``n`` empty layers in chains of 10, each chain's top layer named, as Go writes them."""
    digest = "sha256:" + hashlib.sha256(_EMPTY_TAR).hexdigest()
    ids = [hashlib.sha256(f"layerstore-bench-layer-{i}".encode()).hexdigest() for i in range(n)]
    records: list[dict[str, object]] = []
    for i, lid in enumerate(ids):
        rec: dict[str, object] = {"id": lid}
        if i % 10 == 9:
            rec["names"] = [f"bench/image-{i // 10:05d}:latest"]
        if i % 10:
            rec["parent"] = ids[i - 1]
        rec["created"] = _created(i)
        rec["compressed-diff-digest"] = digest
        rec["compressed-size"] = len(_EMPTY_TAR)
        rec["diff-digest"] = digest
        rec["diff-size"] = len(_EMPTY_TAR)
        records.append(rec)
    return records


def ensure_store(cache: Path, n: int) -> StoreInput:
    """A vfs store with ``n`` empty layers, in the Go CLI's exact on-disk format."""
    final = cache / f"store-{n}"
    if final.is_dir():
        return StoreInput(f"store-{n}", final / "graph", final / "run", n)
    log(f"building store-{n}")
    base = cache / f"store-{n}.partial"
    if base.exists():
        shutil.rmtree(base)
    graph, run = base / "graph", base / "run"
    # Let the Go CLI lay out the store (directories, lock files), and give us the
    # tar-split of an empty layer in its own format.
    probe = _go(graph, run, "import-layer", stdin=_EMPTY_TAR).split()[0]
    layers_dir = graph / "vfs-layers"
    tar_split = (layers_dir / f"{probe}.tar-split.gz").read_bytes()
    _go(graph, run, "delete-layer", probe)
    records = _layer_records(n)
    vfs_dir = graph / "vfs" / "dir"
    for rec in records:
        lid = str(rec["id"])
        (vfs_dir / lid).mkdir(mode=0o555)
        os.chmod(vfs_dir / lid, 0o555)
        split = layers_dir / f"{lid}.tar-split.gz"
        split.write_bytes(tar_split)
        os.chmod(split, 0o600)
    ours = json.dumps(records, separators=(",", ":")).encode()
    tmp = layers_dir / "layers.json.partial"
    tmp.write_bytes(ours)
    os.chmod(tmp, 0o600)
    tmp.rename(layers_dir / "layers.json")
    # Check: the Go CLI lists every layer, and rewrites layers.json byte for byte.
    listed = _go(graph, run, "layers").split("\n")
    ids_listed = {line for line in listed if line and not line.startswith("\t")}
    if ids_listed != {str(r["id"]) for r in records}:
        raise RuntimeError(f"store-{n}: the Go CLI lists {len(ids_listed)} layers, not {n}")
    extra = _go(graph, run, "create-layer").split()[0]
    _go(graph, run, "delete-layer", extra)
    if (layers_dir / "layers.json").read_bytes() != ours:
        raise RuntimeError(f"store-{n}: the Go CLI rewrote layers.json differently")
    base.rename(final)
    return StoreInput(f"store-{n}", final / "graph", final / "run", n)


def copy_store(store: StoreInput, dest: Path) -> tuple[Path, Path]:
    """Copy ``store`` under ``dest`` (``dest/graph``, ``dest/run``); returns the two roots."""
    graph, run = dest / "graph", dest / "run"
    _run(["cp", "-a", str(store.graph), str(graph)])
    _run(["cp", "-a", str(store.run), str(run)])
    return graph, run


# ---- everything ---------------------------------------------------------------------


@dataclass(frozen=True)
class Datasets:
    rootfs: dict[str, TarInput]
    small: TarInput
    big: TarInput
    stores: dict[int, StoreInput]


def ensure_all(cache: Path | None = None, *, quick: bool = False) -> Datasets:
    cache = cache or cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    rootfs = ensure_rootfs(cache)
    if quick:
        small = ensure_small_files(cache, 5_000)
        big = ensure_big_files(cache, 4, 16)
        stores = {n: ensure_store(cache, n) for n in (1_000,)}
    else:
        small = ensure_small_files(cache)
        big = ensure_big_files(cache)
        stores = {n: ensure_store(cache, n) for n in (1_000, 10_000)}
    return Datasets(rootfs=rootfs, small=small, big=big, stores=stores)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cache", type=Path, default=None, help="cache directory")
    ap.add_argument("--quick", action="store_true", help="only the small sets")
    args = ap.parse_args(argv)
    ds = ensure_all(args.cache, quick=args.quick)
    for t in [*ds.rootfs.values(), ds.small, ds.big]:
        print(
            f"{t.name:24} {t.size / MIB:9.1f} MiB  tar {t.tar_size / MIB:8.1f} MiB  "
            f"{t.entries:6d} entries  {t.tar_digest[:19]}…"
        )
    for s in ds.stores.values():
        print(f"{s.name:24} {s.layers} layers  {s.graph}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
