"""Extraction outside the store lock, shown with real processes.

An import extracts into a private staging directory holding no store lock, and takes
the exclusive lock only to commit (record, rename, tar-split, save). So while one
process imports a big layer, other processes list and create layers at once, and two
imports run side by side. A SIGKILLed import leaves only a staging directory, which
the next writer removes.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from layerstore import LayerStore

PY = sys.executable


@pytest.fixture(autouse=True)
def _no_mounts_left(tmp_path: Path, unmount_all: Callable[[Path], None]) -> Iterator[None]:
    """The Go CLI leaves G/overlay bind-mounted on itself (as podman does)."""
    yield
    unmount_all(tmp_path)


MIB = 1 << 20

# A child process that imports the tarball read from stdin (or a path) and reports
# "start" when it begins and "done <seconds> <id>" when the layer is committed.
IMPORTER = r"""
import sys, time
from layerstore import LayerStore
graph, run, driver, source = sys.argv[1:5]
store = LayerStore(graph, run, driver=driver)
print("start", time.monotonic(), flush=True)
t0 = time.monotonic()
layer, _ = store.create(diff=sys.stdin.buffer if source == "-" else source)
print("done", time.monotonic() - t0, layer.id, time.monotonic(), flush=True)
"""

# A child process that, once started, times layers() and create() on its own store
# object while another process imports; prints the latencies in ms as JSON.
PROBE = r"""
import json, sys, time
from layerstore import LayerStore
graph, run, driver, rounds = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
store = LayerStore(graph, run, driver=driver)
out = {"layers": [], "create": []}
for _ in range(rounds):
    t = time.monotonic(); store.layers(); out["layers"].append((time.monotonic() - t) * 1e3)
    t = time.monotonic(); store.create(); out["create"].append((time.monotonic() - t) * 1e3)
print(json.dumps(out), flush=True)
"""


def _tar_header(name: str, size: int) -> bytes:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mode = 0o644
    return info.tobuf(tarfile.PAX_FORMAT)


def write_big_tar(path: Path, files: int, each_mib: int) -> None:
    block = os.urandom(MIB)
    with open(path, "wb") as out:
        for i in range(files):
            out.write(_tar_header(f"big{i}", each_mib * MIB))
            for _ in range(each_mib):
                out.write(block)
        out.write(b"\0" * 10240)


def feed_slowly(pipe: subprocess.Popen[bytes], total_mib: int, seconds: float) -> None:
    """Stream a tarball of ``total_mib`` MiB into ``pipe``'s stdin over ``seconds``."""
    assert pipe.stdin is not None
    block = os.urandom(MIB)
    start = time.monotonic()
    with contextlib.suppress(BrokenPipeError):  # the importer was killed
        try:
            pipe.stdin.write(_tar_header("slow", total_mib * MIB))
            for i in range(total_mib):
                pipe.stdin.write(block)
                delay = start + seconds * (i + 1) / total_mib - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            pipe.stdin.write(b"\0" * 10240)
        finally:
            pipe.stdin.close()


class Importer:
    """An importing child process, started and past its "start" line."""

    def __init__(self, graph: Path, run: Path, driver: str, source: str) -> None:
        self.proc = start_importer(graph, run, driver, source)
        self.pid = self.proc.pid

    def finish(self) -> list[str]:
        """Wait for the child; its "done" line split (done, seconds, id, end time)."""
        assert self.proc.stdout is not None
        with self.proc.stdout:
            out = self.proc.stdout.read().decode()
        self.proc.wait(timeout=300)
        assert self.proc.returncode == 0, out
        return out.split()


def start_importer(graph: Path, run: Path, driver: str, source: str) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [PY, "-c", IMPORTER, str(graph), str(run), driver, source],
        stdin=subprocess.PIPE if source == "-" else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().decode()
    assert line.startswith("start"), line
    return proc


def ls_cli(graph: Path, run: Path, driver: str, *args: str) -> tuple[float, str]:
    t = time.monotonic()
    done = subprocess.run(
        [PY, "-m", "layerstore", "-g", str(graph), "-R", str(run), "-s", driver, *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return (time.monotonic() - t) * 1e3, done.stdout


def staging_dirs(graph: Path, driver: str) -> list[str]:
    root = graph / driver / "staging"
    return sorted(os.listdir(root)) if root.exists() else []


@pytest.mark.parametrize("driver", ["vfs", "overlay"])
def test_other_processes_are_answered_while_an_import_runs(tmp_path: Path, driver: str) -> None:
    graph, run = tmp_path / "g", tmp_path / "r"
    LayerStore(graph, run, driver=driver).close()
    importer = start_importer(graph, run, driver, "-")
    feeder = threading.Thread(target=feed_slowly, args=(importer, 400, 4.0))
    feeder.start()
    try:
        time.sleep(0.5)  # the import is well under way: bytes are flowing
        assert staging_dirs(graph, driver), "the import stages its files"
        # whole processes (our CLI): they answer while the import still runs
        layers_ms, _ = ls_cli(graph, run, driver, "layers")
        create_ms, created = ls_cli(graph, run, driver, "create-layer")
        # the Go CLI is not held up either (it waits for the layers lock, not taken)
        t = time.monotonic()
        go = subprocess.run(
            ["containers-storage", "--storage-driver", driver, "-g", str(graph),
             "--run", str(run), "layers"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        go_ms = (time.monotonic() - t) * 1e3
        assert go.returncode == 0, go.stderr
        assert created.strip() in go.stdout
        # an already-running process (Python API): per-call latency
        probe = subprocess.run(
            [PY, "-c", PROBE, str(graph), str(run), driver, "5"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert probe.returncode == 0, probe.stderr
        still_running = importer.poll() is None
        latencies = json.loads(probe.stdout)
    finally:
        feeder.join()
        assert importer.stdout is not None
        with importer.stdout:
            out = importer.stdout.read()
        importer.wait(timeout=120)
    assert importer.returncode == 0
    done = out.decode().split()
    print(
        f"\n[{driver}] import of 400 MiB took {float(done[1]):.2f} s; meanwhile: "
        f"CLI layers {layers_ms:.0f} ms, CLI create-layer {create_ms:.0f} ms (whole "
        f"processes), Go CLI layers {go_ms:.0f} ms; "
        f"in-process layers() max {max(latencies['layers']):.1f} ms, "
        f"create() max {max(latencies['create']):.1f} ms"
    )
    assert still_running, "the other calls had to wait for the import"
    assert max(latencies["layers"]) < 50
    assert max(latencies["create"]) < 50 * 4  # a create fsyncs layers.json twice
    store = LayerStore(graph, run, driver=driver)
    ids = store.ids()
    assert done[2] in ids and created.strip() in ids
    assert len(ids) == 2 + 5
    assert store.get(done[2]).uncompressed_size >= 400 * MIB
    assert staging_dirs(graph, driver) == []


def _two_imports(
    graph: Path, run: Path, tarball: Path, concurrent: bool
) -> tuple[float, list[tuple[float, float]]]:
    """Wall time of two imports of ``tarball`` and each one's (start, end) of create()."""
    t = time.monotonic()
    if concurrent:
        procs = [Importer(graph, run, "vfs", str(tarball)) for _ in range(2)]
        outs = [p.finish() for p in procs]
    else:
        outs = [Importer(graph, run, "vfs", str(tarball)).finish() for _ in range(2)]
    spans = [(float(out[3]) - float(out[1]), float(out[3])) for out in outs]
    return time.monotonic() - t, spans


def test_two_concurrent_imports_overlap(tmp_path: Path) -> None:
    tarball = tmp_path / "big.tar"
    write_big_tar(tarball, 6, 64)  # 384 MiB
    times = {}
    for mode in ("sequential", "concurrent"):
        graph, run = tmp_path / mode / "g", tmp_path / mode / "r"
        LayerStore(graph, run).close()
        times[mode], spans = _two_imports(graph, run, tarball, mode == "concurrent")
        if mode == "concurrent":
            (s1, e1), (s2, e2) = spans
            # both extracted at the same time: each started before the other ended
            assert s1 < e2 and s2 < e1, spans
        store = LayerStore(graph, run)
        assert len(store.ids()) == 2
        assert len({layer.uncompressed_digest for layer in store.layers()}) == 1
    print(
        f"\ntwo imports of 384 MiB: one after another {times['sequential']:.2f} s, "
        f"side by side {times['concurrent']:.2f} s "
        f"(ratio {times['sequential'] / times['concurrent']:.2f})"
    )


@pytest.mark.parametrize("driver", ["vfs", "overlay"])
def test_sigkill_mid_import_leaves_only_a_staging_dir_the_next_writer_removes(
    tmp_path: Path, driver: str
) -> None:
    graph, run = tmp_path / "g", tmp_path / "r"
    base, _ = LayerStore(graph, run, driver=driver).create(names=["base"])
    importer = start_importer(graph, run, driver, "-")
    feeder = threading.Thread(target=feed_slowly, args=(importer, 200, 4.0))
    feeder.start()
    time.sleep(0.7)
    os.kill(importer.pid, signal.SIGKILL)
    importer.wait()
    feeder.join()
    assert importer.stdout is not None
    importer.stdout.close()
    left = staging_dirs(graph, driver)
    assert len(left) == 1
    staged = graph / driver / "staging" / left[0] / "dir" / "slow"
    assert staged.exists(), "the killed import had written into its staging dir"
    # the Go CLI sees only the base layer and is not disturbed by the staging dir
    go = subprocess.run(
        ["containers-storage", "--storage-driver", driver, "-g", str(graph),
         "--run", str(run), "layers"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert go.returncode == 0, go.stderr
    assert go.stdout.split()[:1] == [base.id] and len(go.stdout.split()) == 3
    # a reader leaves it; the next writer's load removes it
    ro = LayerStore(graph, run, driver=driver)
    assert [layer.id for layer in ro.layers()] == [base.id]
    assert staging_dirs(graph, driver) == []


def test_a_live_staging_dir_survives_another_writers_load(tmp_path: Path) -> None:
    graph, run = tmp_path / "g", tmp_path / "r"
    LayerStore(graph, run).close()
    importer = start_importer(graph, run, "vfs", "-")
    feeder = threading.Thread(target=feed_slowly, args=(importer, 100, 2.0))
    feeder.start()
    try:
        time.sleep(0.4)
        before = staging_dirs(graph, "vfs")
        other = LayerStore(graph, run)
        other.create()  # a writer loads (and prunes) while the import runs
        other.garbage_collect()
        assert staging_dirs(graph, "vfs") == before != []
    finally:
        feeder.join()
        assert importer.stdout is not None
        with importer.stdout:
            importer.stdout.read()
        importer.wait(timeout=60)
    assert importer.returncode == 0
    assert len(LayerStore(graph, run).ids()) == 2


LOOPER = r"""
import sys
from layerstore import LayerStore
graph, run, driver, source = sys.argv[1:5]
store = LayerStore(graph, run, driver=driver)
parent = None
print("start", flush=True)
while True:
    layer, _ = store.create(parent=parent, diff=source)
    parent = layer.id
"""


@pytest.mark.parametrize("driver", ["vfs", "overlay"])
def test_sigkill_at_any_point_of_an_import_loop_leaves_a_consistent_store(
    tmp_path: Path, driver: str
) -> None:
    graph, run = tmp_path / "g", tmp_path / "r"
    tarball = tmp_path / "layer.tar"
    write_big_tar(tarball, 2, 4)  # 8 MiB: a few imports per tenth of a second
    for delay in (0.15, 0.2, 0.25, 0.3, 0.35, 0.4):
        proc = subprocess.Popen(
            [PY, "-c", LOOPER, str(graph), str(run), driver, str(tarball)],
            stdout=subprocess.PIPE,
        )
        assert proc.stdout is not None
        with proc.stdout:
            assert proc.stdout.readline().startswith(b"start")
            time.sleep(delay)
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        # the next writer repairs: incomplete layers and abandoned staging dirs go
        store = LayerStore(graph, run, driver=driver)
        ids = store.ids()
        assert staging_dirs(graph, driver) == []
        assert sorted(store.driver.list_layers()) == sorted(ids)
        for layer in store.layers():
            assert not layer.incomplete
            assert layer.uncompressed_size > 8 * MIB
            assert os.path.exists(os.path.join(store.layerdir, layer.id + ".tar-split.gz"))
            if layer.parent:
                assert layer.parent in ids
        store.close()
    go = subprocess.run(
        ["containers-storage", "--storage-driver", driver, "-g", str(graph),
         "--run", str(run), "layers"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert go.returncode == 0, go.stderr
    print(f"\n[{driver}] {len(ids)} layers committed across 6 SIGKILLed import loops")


def test_a_go_shutdown_during_an_overlay_import_fails_it_cleanly(tmp_path: Path) -> None:
    """Go 1.43's ``shutdown`` removes G/overlay/staging whatever is in it: the import
    then fails with a clear error and leaves no layer and no staging dir."""
    graph, run = tmp_path / "g", tmp_path / "r"
    LayerStore(graph, run, driver="overlay").close()
    importer = start_importer(graph, run, "overlay", "-")
    feeder = threading.Thread(target=feed_slowly, args=(importer, 100, 2.0))
    feeder.start()
    try:
        time.sleep(0.5)
        assert staging_dirs(graph, "overlay")
        go = subprocess.run(
            ["containers-storage", "--storage-driver", "overlay", "-g", str(graph),
             "--run", str(run), "shutdown"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert go.returncode == 0, go.stderr
    finally:
        feeder.join()
        assert importer.stdout is not None
        with importer.stdout:
            importer.stdout.read()
        importer.wait(timeout=60)
    assert importer.returncode == 1
    store = LayerStore(graph, run, driver="overlay")
    assert store.ids() == [] and store.driver.list_layers() == []
    assert staging_dirs(graph, "overlay") == []
