"""Many writers on one store at once: Go processes, our processes and our threads all
create layers; the lock protocol must lose none of them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from layerstore import LayerStore

if TYPE_CHECKING:
    from conftest import Runner, StoreDirs

PER_WRITER = 25

# One of our writer processes: waits for the start file, then creates PER_WRITER layers
# through the Python API, one lock cycle each.
OUR_WRITER = """
import os, sys, time
from layerstore import LayerStore
graph, run, tag, start, count = sys.argv[1:6]
while not os.path.exists(start):
    time.sleep(0.002)
store = LayerStore(graph, run, driver="vfs")
for i in range(int(count)):
    store.create(names=[f"{tag}-{i}"])
store.close()
"""

GO_WRITER = """
while [ ! -e "$4" ]; do sleep 0.002; done
for i in $(seq 0 $(($5 - 1))); do
  /usr/bin/containers-storage --storage-driver vfs -g "$1" -R "$2" create-layer -n "$3-$i" \
    >/dev/null || exit 1
done
"""


def expected_names(tags: list[str]) -> set[str]:
    return {f"{tag}-{i}" for tag in tags for i in range(PER_WRITER)}


def check_store(store_dirs: StoreDirs, go_cli: Runner, ls_cli: Runner, tags: list[str]) -> None:
    total = PER_WRITER * len(tags)
    go_ids = go_cli(store_dirs.graph, store_dirs.run, "layers", "-t").stdout.count("─")
    assert go_ids == total
    for run in (go_cli, ls_cli):
        listed = json.loads(run(store_dirs.graph, store_dirs.run, "layers", "--json").stdout)
        assert len(listed) == total
        assert len({layer["id"] for layer in listed}) == total
        assert {n for layer in listed for n in layer["names"]} == expected_names(tags)
        assert not any(layer.get("flags") for layer in listed)  # nothing left incomplete
    assert len(store_dirs.records()) == total
    assert len(os.listdir(store_dirs.layer_dir("x").parent)) == total


def test_two_go_and_two_of_our_processes_create_100_layers(
    store_dirs: StoreDirs, go_cli: Runner, ls_cli: Runner, tmp_path: Path
) -> None:
    go_cli(store_dirs.graph, store_dirs.run, "layers")  # the store exists before the race
    start = tmp_path / "start"
    common = [str(store_dirs.graph), str(store_dirs.run)]
    procs = [
        subprocess.Popen(["bash", "-c", GO_WRITER, "go", *common, tag, str(start), "25"])
        for tag in ("go1", "go2")
    ] + [
        subprocess.Popen([sys.executable, "-c", OUR_WRITER, *common, tag, str(start), "25"])
        for tag in ("py1", "py2")
    ]
    start.touch()
    for p in procs:
        assert p.wait(timeout=120) == 0
    check_store(store_dirs, go_cli, ls_cli, ["go1", "go2", "py1", "py2"])


def test_threads_of_one_process_and_a_go_process_create_100_layers(
    store_dirs: StoreDirs, go_cli: Runner, ls_cli: Runner, tmp_path: Path
) -> None:
    shared = LayerStore(store_dirs.graph, store_dirs.run, driver="vfs")
    start = tmp_path / "start"
    go = subprocess.Popen(
        [
            "bash",
            "-c",
            GO_WRITER,
            "go",
            str(store_dirs.graph),
            str(store_dirs.run),
            "go",
            str(start),
            "25",
        ]
    )
    failures: list[BaseException] = []
    gate = threading.Event()

    def writer(tag: str, own_store: bool) -> None:
        gate.wait()
        try:
            store = (
                LayerStore(store_dirs.graph, store_dirs.run, driver="vfs") if own_store else shared
            )
            for i in range(PER_WRITER):
                store.create(names=[f"{tag}-{i}"])
        except BaseException as e:  # reported by the main thread
            failures.append(e)

    threads = [
        threading.Thread(target=writer, args=("shared1", False)),
        threading.Thread(target=writer, args=("shared2", False)),
        threading.Thread(target=writer, args=("own", True)),
    ]
    for t in threads:
        t.start()
    start.touch()
    gate.set()
    for t in threads:
        t.join(timeout=120)
    assert go.wait(timeout=120) == 0
    assert failures == []
    assert len(shared.layers()) == 4 * PER_WRITER  # reloaded: sees the others' layers
    shared.close()
    check_store(store_dirs, go_cli, ls_cli, ["shared1", "shared2", "own", "go"])
