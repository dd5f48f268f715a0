"""Our LockFile against the real Go `containers-storage` CLI (Debian v1.43) on a vfs store:
the two exclude each other through fcntl, and each sees the other's last-writer token."""

from __future__ import annotations

import io
import json
import os
import subprocess
import tarfile
import threading
import time
from pathlib import Path

import pytest

from layerstore.lockfile import TOKEN_SIZE, LockFile, decode_token

pytestmark = pytest.mark.interop

CLI = "/usr/bin/containers-storage"
HOLD = 0.5  # seconds we keep a lock while the other side waits


class Store:
    def __init__(self, root: Path) -> None:
        self.graph = root / "graph"
        self.run = root / "run"
        self.layers_lock = self.graph / "vfs-layers" / "layers.lock"
        self.layers_json = self.graph / "vfs-layers" / "layers.json"
        self.mounts_lock = self.run / "vfs-layers" / "mountpoints.lock"

    def argv(self, *args: str) -> list[str]:
        return [CLI, "--storage-driver", "vfs", "-g", str(self.graph), "-R", str(self.run), *args]

    def cli(self, *args: str) -> str:
        done = subprocess.run(self.argv(*args), capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stderr
        return done.stdout

    def records(self) -> list[dict[str, object]]:
        data: list[dict[str, object]] = json.loads(self.layers_json.read_text())
        return data


def proc_locks(path: Path) -> list[tuple[bool, str, int]]:
    """POSIX locks on ``path`` from /proc/locks: (waiting?, READ|WRITE, pid) each."""
    inode = path.stat().st_ino
    out = []
    with open("/proc/locks") as f:
        for line in f:
            fields = line.split()
            waiting = fields[1] == "->"
            if waiting:
                fields.pop(1)
            # "N: [->] POSIX  ADVISORY  WRITE <pid> <maj>:<min>:<inode> 0 EOF"
            if fields[1] == "POSIX" and int(fields[5].rsplit(":", 1)[1]) == inode:
                out.append((waiting, fields[3], int(fields[4])))
    return out


def wait_for_lock_entry(path: Path, entry: tuple[bool, str, int], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while entry not in proc_locks(path):
        assert time.monotonic() < deadline, f"{entry} never in {proc_locks(path)}"
        time.sleep(0.005)


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store(tmp_path)
    s.cli("layers")  # Go initialises the store: every lock file exists, empty
    assert s.layers_lock.stat().st_size == 0
    return s


def small_tarball() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        data = os.urandom(100_000)
        info = tarfile.TarInfo("file")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@pytest.mark.parametrize("kind", ["write", "read"])
def test_go_waits_for_our_lock(store: Store, kind: str) -> None:
    lock = LockFile.get(str(store.layers_lock))
    lock.lock() if kind == "write" else lock.rlock()
    start = time.monotonic()
    go = subprocess.Popen(store.argv("layers"), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        # The kernel shows us holding, and Go (even for a read-only command: the RW
        # layer store locks for writing while it loads) queued behind us.
        wait_for_lock_entry(store.layers_lock, (True, "WRITE", go.pid))
        assert (False, kind.upper(), os.getpid()) in proc_locks(store.layers_lock)
        time.sleep(HOLD)
        assert go.poll() is None, "Go did not wait for our lock"
    finally:
        lock.unlock()
    _, err = go.communicate(timeout=30)
    took = time.monotonic() - start
    assert go.returncode == 0, err
    assert took >= HOLD
    assert proc_locks(store.layers_lock) == []


@pytest.mark.parametrize("kind", ["write", "read"])
def test_we_wait_for_a_go_import(store: Store, kind: str) -> None:
    tarball = small_tarball()
    go = subprocess.Popen(
        store.argv("import-layer"),  # reads the layer tarball from stdin, holding the lock
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert go.stdin is not None
    go.stdin.write(tarball[:512])
    go.stdin.flush()
    # Go saves the record flagged incomplete before it reads the diff: then it holds the
    # lock and waits for the rest of our pipe.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if store.layers_json.exists() and "incomplete" in store.layers_json.read_text():
            break
        time.sleep(0.01)
    else:
        pytest.fail("Go never recorded the incomplete layer")

    lock = LockFile.get(str(store.layers_lock))
    got_at: list[float] = []
    seen: list[list[dict[str, object]]] = []

    def take() -> None:
        lock.lock() if kind == "write" else lock.rlock()
        got_at.append(time.monotonic())
        seen.append(store.records())
        lock.unlock()

    # Go holds the write lock on layers.lock now.
    assert (False, "WRITE", go.pid) in proc_locks(store.layers_lock)
    taker = threading.Thread(target=take)
    taker.start()
    wait_for_lock_entry(store.layers_lock, (True, kind.upper(), os.getpid()))
    time.sleep(HOLD)
    assert got_at == [], "we took the lock while Go was importing"
    released_at = time.monotonic()  # from now on Go can finish
    out, err = go.communicate(tarball[512:], timeout=30)
    assert go.returncode == 0, err
    taker.join(10)
    assert got_at and got_at[0] >= released_at
    # What we saw under the lock is Go's finished work, never the half-made layer.
    (record,) = seen[0]
    assert record["id"] == out.decode().strip()
    assert "incomplete" not in json.dumps(record)
    assert record["diff-size"] == len(tarball)


def test_tokens_cross_both_ways(store: Store) -> None:
    lock = LockFile.get(str(store.layers_lock))
    with lock.reading():
        empty = lock.last_write()
    assert empty == b""

    store.cli("layers")  # a read-only command records no write
    with lock.reading():
        assert lock.modified_since(empty) == (b"", False)

    before = time.time_ns()
    go = subprocess.Popen(store.argv("create-layer"), stdout=subprocess.PIPE, text=True)
    layer_id = go.communicate(timeout=30)[0].strip()
    after = time.time_ns()
    assert go.returncode == 0
    with lock.reading():
        go_token, modified = lock.modified_since(empty)
    assert modified
    assert len(go_token) == TOKEN_SIZE
    nanos, _counter, pid = decode_token(go_token)
    assert pid == go.pid
    assert before <= nanos <= after
    assert store.layers_lock.stat().st_size == TOKEN_SIZE
    assert store.mounts_lock.stat().st_size == TOKEN_SIZE  # every save writes both tokens

    # Our token: same layout, our pid; Go keeps working on top of it and replaces it.
    with lock.writing():
        ours = lock.record_write()
        assert lock.modified_since(go_token) == (ours, True)
    assert decode_token(ours)[2] == os.getpid()
    assert store.layers_lock.read_bytes() == ours
    assert store.cli("layers").split()[0] == layer_id
    go = subprocess.Popen(store.argv("create-layer"), stdout=subprocess.PIPE, text=True)
    go.communicate(timeout=30)
    with lock.reading():
        again, modified = lock.modified_since(ours)
    assert modified
    assert decode_token(again)[2] == go.pid
    assert store.layers_lock.stat().st_size == TOKEN_SIZE
