"""A writer killed with SIGKILL in the middle of creating a layer leaves it recorded
``incomplete``; the next writer (ours or Go's) deletes it and keeps everything else.

The kill is deterministic: the victim is paused on a pipe that is never finished — our
``create`` streaming a big-data item from it (the record is saved, flagged, before the
item is read), or Go's ``import-layer`` reading its layer tarball from it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pytest

from layerstore import LayerStore

if TYPE_CHECKING:
    from conftest import Runner, StoreDirs

# Our victim: create a layer whose big-data value streams from a pipe (fd in argv[3]).
OUR_VICTIM = """
import os, sys
from layerstore import LayerStore
store = LayerStore(sys.argv[1], sys.argv[2], driver="vfs")
with os.fdopen(int(sys.argv[3]), "rb") as pipe:
    store.create(names=["victim"], big_data={"blob": pipe})
"""


def wait_for(what: Callable[[], bool], proc: subprocess.Popen[Any], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not what():
        assert proc.poll() is None, f"the victim exited early with {proc.returncode}"
        assert time.monotonic() < deadline, "the victim never reached the pause"
        time.sleep(0.005)


def incomplete_victim(store_dirs: StoreDirs) -> dict[str, Any] | None:
    for rec in store_dirs.records():
        if rec.get("names") == ["victim"] and rec.get("flags", {}).get("incomplete") is True:
            return rec
    return None


@pytest.fixture
def keepers(store_dirs: StoreDirs, go_cli: Runner, ls_cli: Runner) -> list[str]:
    """Layers that must survive: one made by Go (with data and a mount), one by us."""
    g, r = store_dirs.graph, store_dirs.run
    a = go_cli(g, r, "create-layer", "-n", "go-keeper").stdout.split()[0]
    go_cli(g, r, "set-layer-data", "go-keeper", "k", input="kept")
    go_cli(g, r, "mount", a)
    b = ls_cli(g, r, "create-layer", "-n", "our-keeper", "go-keeper").stdout.split()[0]
    return [a, b]


def kill_our_create(store_dirs: StoreDirs) -> str:
    """Start our create, pause it on the pipe, SIGKILL it; return the victim's id."""
    read_end, write_end = os.pipe()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            OUR_VICTIM,
            str(store_dirs.graph),
            str(store_dirs.run),
            str(read_end),
        ],
        pass_fds=(read_end,),
    )
    os.close(read_end)
    try:
        os.write(write_end, b"x" * 65536)  # part of the value; the rest never comes
        wait_for(lambda: incomplete_victim(store_dirs) is not None, proc)
        rec = incomplete_victim(store_dirs)
        assert rec is not None
        datadir = store_dirs.graph / "vfs-layers" / rec["id"]
        wait_for(lambda: datadir.is_dir() and any(datadir.iterdir()), proc)
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        os.close(write_end)
        if proc.poll() is None:
            proc.kill()
    return str(rec["id"])


def check_cleaned(store_dirs: StoreDirs, victim: str, keepers: list[str]) -> None:
    ids = [rec["id"] for rec in store_dirs.records()]
    assert victim not in ids
    assert ids[:2] == keepers
    assert not (store_dirs.graph / "vfs-layers" / victim).exists()
    assert not store_dirs.layer_dir(victim).exists()
    assert all(store_dirs.layer_dir(k).is_dir() for k in keepers)
    assert store_dirs.mounts()[0]["id"] == keepers[0]
    assert (store_dirs.graph / "vfs-layers" / keepers[0] / "k").read_text() == "kept"


def test_our_killed_create_is_removed_by_our_next_writer(
    store_dirs: StoreDirs, keepers: list[str], ls_cli: Runner, go_cli: Runner
) -> None:
    victim = kill_our_create(store_dirs)
    # The record and its half-written item are on disk, flagged incomplete.
    assert incomplete_victim(store_dirs) is not None
    assert (store_dirs.graph / "vfs-layers" / victim).is_dir()
    # The kill released the lock: the next writer runs at once, and cleans up.
    out = ls_cli(store_dirs.graph, store_dirs.run, "create-layer", "-n", "after").stdout
    check_cleaned(store_dirs, victim, keepers)
    assert [r["id"] for r in store_dirs.records()][2] == out.split()[0]
    assert go_cli(store_dirs.graph, store_dirs.run, "exists", "victim", check=False).returncode
    assert go_cli(store_dirs.graph, store_dirs.run, "get-layer-data", "go-keeper", "k").stdout == (
        "kept"
    )


def test_our_killed_create_is_removed_by_go(
    store_dirs: StoreDirs, keepers: list[str], go_cli: Runner
) -> None:
    victim = kill_our_create(store_dirs)
    go_cli(store_dirs.graph, store_dirs.run, "layers")  # Go's load deletes incomplete layers
    check_cleaned(store_dirs, victim, keepers)


def test_a_killed_go_import_is_removed_by_us(
    store_dirs: StoreDirs, keepers: list[str], tar_maker: Callable[..., bytes]
) -> None:
    tarball = tar_maker([("big", 0, 0, b"\0" * 4_000_000)])
    proc = subprocess.Popen(
        [
            "/usr/bin/containers-storage",
            "--storage-driver",
            "vfs",
            "-g",
            str(store_dirs.graph),
            "-R",
            str(store_dirs.run),
            "import-layer",
            "-n",
            "victim",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        start_new_session=True,  # its re-exec'd applier child dies with it
    )
    assert proc.stdin is not None
    try:
        proc.stdin.write(tarball[: len(tarball) // 2])  # the rest never comes
        proc.stdin.flush()
        wait_for(lambda: incomplete_victim(store_dirs) is not None, proc)
        rec = incomplete_victim(store_dirs)
        assert rec is not None
        wait_for(lambda: (store_dirs.layer_dir(rec["id"]) / "big").exists(), proc)
        os.killpg(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        proc.stdin.close()
        if proc.poll() is None:
            proc.kill()
    victim = str(rec["id"])
    assert store_dirs.layer_dir(victim).is_dir()
    with LayerStore(store_dirs.graph, store_dirs.run, driver="vfs") as store:
        assert [layer.id for layer in store.layers()] == keepers  # ours removed it
    check_cleaned(store_dirs, victim, keepers)
