"""Where the time of ``diff -c`` on the rootfs goes, part by part, against Go's.

``diff -c`` rebuilds the layer's tarball from tar-split and gzips it. Its parts, each
measured alone on one thread (CPU time, median of ``--runs``), on a fresh tmpfs:

- deflate: our gzip sink compressing rootfs.tar (the same bytes ``diff`` rebuilds) from
  the tmpfs to /dev/null, less the CPU of reading that file: ISA-L level 1, the
  already-compressed-chunk test and CRC-32;
- read: the tar-split assemble of the imported layer, uncompressed, to /dev/null: opening
  and reading every layer file, CRC-64, the headers from tar-split;
- write: writing as many bytes as the gzip output to a file on the tmpfs;
- start: a whole ``layerstore diff -c`` of an empty layer (interpreter, CLI, store lock
  and load, native module).

Two cores can at best share deflate + read + write evenly after the start, so
``floor = start + (deflate + read + write) / 2``. The script then times whole
``diff -c`` processes, ours and Go's interleaved, and prints the floor beside Go / 4
(the issue's target) and how many CPUs ours keeps busy after its start.

Usage: ``python benchmarks/diff_floor.py [--runs N]`` (as root: it mounts a tmpfs).
"""

from __future__ import annotations

import argparse
import io
import os
import resource
import statistics
import sys
import tarfile
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import compare
import datasets
from layerstore import _native

GZIP = 2  # layerstore.archive.Compression.GZIP
NONE = 0


def cpu_seconds(fn: Callable[[], object]) -> float:
    """CPU time (user + system, all threads of this process) that fn() takes."""
    before = resource.getrusage(resource.RUSAGE_SELF)
    fn()
    after = resource.getrusage(resource.RUSAGE_SELF)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def median_cpu(fn: Callable[[], object], runs: int) -> float:
    fn()  # warm-up: page cache, allocator
    return statistics.median(cpu_seconds(fn) for _ in range(runs))


def import_layer(impl: compare.Impl, graph: Path, run: Path, tarball: Path, cwd: Path) -> str:
    out = cwd / "id"
    s, _ = compare.run_child(
        impl.cli(graph, run, "import-layer"), cwd=cwd, stdin=tarball, stdout=out
    )
    if s.error:
        raise SystemExit(f"{impl.label}: import of {tarball} failed: {s.error}")
    layers = compare.read_layers(graph)
    return str(layers[-1]["id"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--runs", type=int, default=9)
    args = ap.parse_args()
    inputs = datasets.ensure_rootfs(datasets.cache_dir())
    ours, go = compare.our_impl(), compare.go_impl()
    devnull = os.open(os.devnull, os.O_WRONLY)
    with compare.fresh_tmpfs() as mnt:
        tar = mnt / "rootfs.tar"
        tar.write_bytes(inputs["tar"].path.read_bytes())
        empty = mnt / "empty.tar"
        with tarfile.open(empty, "w") as t:
            t.addfile(tarfile.TarInfo("empty"), io.BytesIO(b""))
        graph, run, go_graph, go_run = mnt / "g", mnt / "r", mnt / "gg", mnt / "gr"
        layer = import_layer(ours, graph, run, inputs["tar.gz"].path, mnt)
        empty_layer = import_layer(ours, graph, run, empty, mnt)
        go_layer = import_layer(go, go_graph, go_run, inputs["tar.gz"].path, mnt)
        tarsplit = str(graph / "vfs-layers" / f"{layer}.tar-split.gz")
        roots = [str(graph / "vfs" / "dir" / layer)]

        def compress_tar() -> None:
            fd = os.open(tar, os.O_RDONLY)
            try:
                _native.compress_fd(fd, devnull, GZIP, -1, 1)
            finally:
                os.close(fd)

        buf = bytearray(1 << 20)

        def read_tar() -> None:
            fd = os.open(tar, os.O_RDONLY)
            try:
                while os.readv(fd, [buf]):
                    pass
            finally:
                os.close(fd)

        out = mnt / "out"

        def gzip_size() -> int:
            fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
            try:
                return _native.assemble(tarsplit, roots, fd, GZIP)
            finally:
                os.close(fd)

        size = gzip_size()
        chunk = os.urandom(1 << 20)

        def write() -> None:
            fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
            try:
                left = size
                while left > 0:
                    left -= os.write(fd, memoryview(chunk)[: min(left, len(chunk))])
            finally:
                os.close(fd)

        parts = {
            "deflate": median_cpu(compress_tar, args.runs) - median_cpu(read_tar, args.runs),
            "read": median_cpu(
                lambda: _native.assemble(tarsplit, roots, devnull, NONE, -1, 1), args.runs
            ),
            "write": median_cpu(write, args.runs),
        }
        out.unlink()

        def whole(impl: compare.Impl, g: Path, r: Path, lid: str) -> compare.Sample:
            s, _ = compare.run_child(
                impl.cli(g, r, "diff", "-c", lid), cwd=mnt, stdout=mnt / "diff.out"
            )
            if s.error:
                raise SystemExit(f"{impl.label}: diff -c failed: {s.error}")
            return s

        whole(ours, graph, run, empty_layer)
        start = [whole(ours, graph, run, empty_layer) for _ in range(args.runs)]
        ours_runs: list[compare.Sample] = []
        go_runs: list[compare.Sample] = []
        whole(ours, graph, run, layer)
        whole(go, go_graph, go_run, go_layer)
        for i in range(args.runs):
            pair = [(ours_runs, ours, graph, run, layer), (go_runs, go, go_graph, go_run, go_layer)]
            for runs, impl, g, r, lid in pair if i % 2 == 0 else pair[::-1]:
                runs.append(whole(impl, g, r, lid))
    os.close(devnull)

    start_s = statistics.median(s.seconds for s in start)
    ours_s = statistics.median(s.seconds for s in ours_runs)
    ours_cpu = statistics.median(s.cpu_seconds for s in ours_runs)
    go_s = statistics.median(s.seconds for s in go_runs)
    work = sum(parts.values())
    floor = start_s + work / 2
    target = go_s / 4
    print(f"diff -c of rootfs.tar.gz's layer ({size / 1e6:.1f} MB of gzip), medians of {args.runs}")
    print("| part | CPU s |")
    print("|---|---|")
    for name, secs in parts.items():
        print(f"| {name} | {secs:.3f} |")
    print(f"| start (whole process, empty layer; wall) | {start_s:.3f} |")
    print(f"| floor = start + (deflate + read + write) / 2 | {floor:.3f} |")
    print(f"| ours, whole diff -c: wall (CPU) | {ours_s:.3f} ({ours_cpu:.3f}) |")
    print(f"| Go, whole diff -c: wall | {go_s:.3f} |")
    print(f"| 4x target = Go / 4 | {target:.3f} |")
    print(
        f"ratio Go/ours {go_s / ours_s:.2f}x; at the floor {go_s / floor:.2f}x; "
        f"ours keeps {(ours_cpu - start_s) / (ours_s - start_s):.2f} CPUs busy after its start; "
        f"4x needs {work / (target - start_s):.2f} CPUs busy on these parts alone"
    )


if __name__ == "__main__":
    main()
