"""``make demo``: import a real layer with the Python API, list it, reproduce it bit-exactly.

The layer:

* the Debian bookworm root filesystem tarball (``rootfs.tar.gz``, 88 MiB, 6.8k entries)
  from the benchmark cache (``$LAYERSTORE_BENCH_CACHE``, default
  ``/var/cache/layerstore-bench``) if ``benchmarks/datasets.py`` already built it;
  ``--rootfs`` builds it first if needed (debootstrap, about a minute);
* otherwise a tarball made on the spot with ``tar -czf`` from real files of this
  machine: Python 3.11's standard library as Debian installs it, ``/usr/lib/python3.11``
  (package ``libpython3.11-stdlib``; ``__pycache__`` left out), or the first of
  ``/usr/share/perl``, ``/usr/share/doc`` that exists. It is kept in
  ``<workdir>/input/`` and reused.

Then, in a fresh store under ``<workdir>/store``: ``LayerStore.create(diff=...)``, list
the layers, ``diff`` the layer uncompressed and check that the SHA-256 of those bytes
equals the layer's recorded uncompressed digest and the SHA-256 of the decompressed
input. The Go ``containers-storage`` CLI, if installed, must list the layer and
reproduce the same bytes from our store. Exits 1 if anything is off.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import datasets

MIB = 1 << 20
FALLBACK_TREES = ("/usr/lib/python3.11", "/usr/share/perl", "/usr/share/doc")
GO_CLI = "/usr/bin/containers-storage"


class DemoFailed(Exception):
    pass


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(4 * MIB):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def gunzip_sha256(path: Path) -> tuple[str, int]:
    h = hashlib.sha256()
    n = 0
    with subprocess.Popen(["gzip", "-dc", str(path)], stdout=subprocess.PIPE) as p:
        assert p.stdout is not None
        while chunk := p.stdout.read(4 * MIB):
            h.update(chunk)
            n += len(chunk)
    if p.returncode != 0:
        raise DemoFailed(f"{path}: not a valid gzip file")
    return "sha256:" + h.hexdigest(), n


def choose_input(workdir: Path, rootfs: bool) -> tuple[Path, str, str, int, str]:
    """(path, compressed digest, uncompressed digest, uncompressed size, description)."""
    cache = datasets.cache_dir()
    gz = cache / "rootfs.tar.gz"
    if rootfs or (gz.exists() and (cache / "rootfs.tar.gz.json").exists()):
        t = datasets.ensure_rootfs(cache)["tar.gz"]
        desc = f"Debian bookworm minbase rootfs ({t.entries} entries), from {cache}"
        return t.path, t.digest, t.tar_digest, t.tar_size, desc
    tree = next((Path(p) for p in FALLBACK_TREES if Path(p).is_dir()), None)
    if tree is None:
        raise DemoFailed(f"none of {', '.join(FALLBACK_TREES)} exists; use --rootfs")
    out = workdir / "input" / (tree.as_posix().strip("/").replace("/", "_") + ".tar.gz")
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        partial = out.with_name(out.name + ".partial")
        subprocess.run(
            [
                "tar",
                "--sort=name",
                "--numeric-owner",
                "--exclude=__pycache__",
                "-C",
                str(tree.parent),
                "-czf",
                str(partial),
                tree.name,
            ],
            check=True,
        )
        partial.rename(out)
        print(f"made {out} from {tree} in {time.perf_counter() - t0:.2f} s")
    tar_digest, tar_size = gunzip_sha256(out)
    desc = f"tar -czf of {tree} (real files of this machine)"
    return out, sha256_of(out), tar_digest, tar_size, desc


def check(ok: bool, what: str, failures: list[str]) -> None:
    print(f"  [{'ok' if ok else 'FAIL'}] {what}")
    if not ok:
        failures.append(what)


def run(workdir: Path, rootfs: bool) -> list[str]:
    try:
        from layerstore import Compression, LayerStore
    except ImportError as e:
        raise DemoFailed(f"the layerstore API is not available: {e}") from e

    workdir.mkdir(parents=True, exist_ok=True)
    path, digest, tar_digest, tar_size, desc = choose_input(workdir, rootfs)
    size = path.stat().st_size
    print(f"layer: {path} ({size / MIB:.1f} MiB, {tar_size / MIB:.1f} MiB uncompressed)")
    print(f"       {desc}")

    store_dir = workdir / "store"
    if store_dir.exists():
        shutil.rmtree(store_dir)
    graph, run_root = store_dir / "graph", store_dir / "run"
    failures: list[str] = []
    with LayerStore(str(graph), str(run_root), driver="vfs") as store:
        t0 = time.perf_counter()
        layer, applied = store.create(diff=str(path))
        t_import = time.perf_counter() - t0
        print(
            f"\nimported in {t_import:.3f} s ({tar_size / t_import / 1e6:.0f} MB/s of tar)"
            f" -> layer {layer.id}, {applied} bytes applied"
        )

        print(f"\nlayers in {graph}:")
        for lay in store.layers():
            print(lay.id)
            for name in lay.names:
                print(f"\tname: {name}")

        h = hashlib.sha256()
        n = 0
        t0 = time.perf_counter()
        with store.diff(layer.id, compression=Compression.NONE) as stream:
            while chunk := stream.read(4 * MIB):
                h.update(chunk)
                n += len(chunk)
        t_diff = time.perf_counter() - t0
        got = "sha256:" + h.hexdigest()
        print(
            f"\ndiff (uncompressed) in {t_diff:.3f} s ({n / t_diff / 1e6:.0f} MB/s), "
            f"{n} bytes, {got}"
        )

        print("\nchecks:")
        check(got == tar_digest, "sha256 of the diff == sha256 of the decompressed input", failures)
        check(
            got == layer.uncompressed_digest,
            "sha256 of the diff == the layer's recorded uncompressed digest",
            failures,
        )
        check(
            n == tar_size == layer.uncompressed_size,
            "diff size == input tar size == recorded uncompressed size",
            failures,
        )
        check(
            layer.compressed_digest == digest,
            "recorded compressed digest == sha256 of the input file",
            failures,
        )
        check(layer.compressed_size == size, "recorded compressed size == input size", failures)
        check(layer.compression == Compression.GZIP, "recorded compression == gzip", failures)

    if Path(GO_CLI).exists():
        go = [GO_CLI, "-g", str(graph), "-R", str(run_root), "-s", "vfs"]
        listed = subprocess.run([*go, "layers"], capture_output=True, text=True, check=False)
        check(
            listed.returncode == 0 and layer.id in listed.stdout.split(),
            "the Go containers-storage CLI lists the layer in our store",
            failures,
        )
        with subprocess.Popen([*go, "diff", "-u", layer.id], stdout=subprocess.PIPE) as p:
            assert p.stdout is not None
            gh = hashlib.sha256()
            while chunk := p.stdout.read(4 * MIB):
                gh.update(chunk)
        check(
            p.returncode == 0 and "sha256:" + gh.hexdigest() == tar_digest,
            "the Go CLI's diff of our layer is the same bytes",
            failures,
        )
    return failures


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workdir", type=Path, default=Path(".demo"))
    ap.add_argument(
        "--rootfs",
        action="store_true",
        help="use (and if needed build) the Debian rootfs from the bench cache",
    )
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    try:
        failures = run(args.workdir, args.rootfs)
    except DemoFailed as e:
        print(f"demo: FAILED: {e}", file=sys.stderr)
        return 1
    print(f"\ndemo finished in {time.perf_counter() - t0:.1f} s")
    if failures:
        print(f"demo: FAILED: {len(failures)} check(s): {'; '.join(failures)}", file=sys.stderr)
        return 1
    print("demo: all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
