"""The lock protocol, reloads, crash recovery and concurrency, with real processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from layerstore import LayerStore, errors

PY = sys.executable


def go_cli(graph: Path, run: Path, *args: str, timeout: float = 60) -> str:
    proc = subprocess.run(
        ["containers-storage", "--storage-driver", "vfs", "-g", str(graph), "-R", str(run), *args],
        capture_output=True,
        check=True,
        timeout=timeout,
        text=True,
    )
    return proc.stdout


def go_layer_ids(graph: Path, run: Path) -> list[str]:
    out = go_cli(graph, run, "layers", "--json")
    return [x["id"] for x in json.loads(out or "[]")]


def run_python(code: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [PY, "-c", textwrap.dedent(code), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_writes_bump_tokens_and_reads_do_not(tmp_path: Path) -> None:
    g, r = tmp_path / "G", tmp_path / "R"
    store = LayerStore(g, r)
    layers_lock = g / "vfs-layers/layers.lock"
    mounts_lock = r / "vfs-layers/mountpoints.lock"
    tokens = []
    for _ in range(3):
        store.create()
        tokens.append((layers_lock.read_bytes(), mounts_lock.read_bytes()))
    assert all(len(a) == 64 and len(b) == 64 for a, b in tokens)
    assert len({a for a, _ in tokens}) == 3 and len({b for _, b in tokens}) == 3
    pid = int.from_bytes(tokens[-1][0][16:20], "little")
    assert pid == os.getpid()
    before = (layers_lock.read_bytes(), mounts_lock.read_bytes(), os.listdir(g / "vfs-layers"))
    store.layers()
    store.get(store.ids()[0])
    LayerStore.read_only(g).layers()
    assert (layers_lock.read_bytes(), mounts_lock.read_bytes(), os.listdir(g / "vfs-layers")) == (
        before
    )
    layer_id = store.ids()[0]
    store.mount(layer_id)
    assert layers_lock.read_bytes() == before[0]  # a mount writes only mount data
    assert mounts_lock.read_bytes() != before[1]


def test_reload_when_another_writer_changed_the_store(tmp_path: Path) -> None:
    g, r = tmp_path / "G", tmp_path / "R"
    a = LayerStore(g, r)
    b = LayerStore(g, r)
    layer, _ = a.create(names=["from-a"])
    assert b.get("from-a").id == layer.id  # token changed
    a.mount(layer.id)
    assert b.get(layer.id).mount_count == 1  # mountpoints changed
    # A hand edit keeps the token; the mtime tells.
    path = g / "vfs-layers/layers.json"
    data = json.loads(path.read_bytes())
    data[0]["names"] = ["edited"]
    time.sleep(0.01)
    path.write_text(json.dumps(data))
    assert b.get("edited").id == layer.id
    # The Go CLI writing: we see it, and it sees ours.
    go_cli(g, r, "create-layer", "-n", "from-go")
    assert b.exists("from-go")
    assert set(go_layer_ids(g, r)) == {layer.id, b.get("from-go").id}


def test_go_cli_waits_for_our_write_lock(tmp_path: Path) -> None:
    g, r = tmp_path / "G", tmp_path / "R"
    store = LayerStore(g, r)
    with store.writing():
        layer, _ = store.create(names=["inside"])
        proc = subprocess.Popen(
            ["containers-storage", "-s", "vfs", "-g", str(g), "-R", str(r), "layers"],
            stdout=subprocess.PIPE,
            text=True,
        )
        time.sleep(1.0)
        assert proc.poll() is None  # blocked on layers.lock
        store.set_metadata("inside", "done")
    out, _ = proc.communicate(timeout=30)
    assert layer.id in out


def test_we_wait_for_another_process_write_lock(tmp_path: Path) -> None:
    g, r = tmp_path / "G", tmp_path / "R"
    store = LayerStore(g, r)
    holder = run_python(
        """
        import fcntl, os, sys, time
        fd = os.open(sys.argv[1], os.O_RDWR)
        fcntl.lockf(fd, fcntl.LOCK_EX)
        print("locked", flush=True)
        time.sleep(1.5)
        """,
        str(g / "vfs-layers/layers.lock"),
    )
    assert holder.stdout is not None
    assert holder.stdout.readline().strip() == "locked"
    start = time.monotonic()
    store.create()
    waited = time.monotonic() - start
    holder.communicate(timeout=30)
    assert waited > 0.8


def test_incomplete_layer_removed_by_next_writer(tmp_path: Path) -> None:
    """A real process killed (SIGKILL) in the middle of create leaves an incomplete
    record; the next writer deletes it with its files and keeps the rest."""
    g, r = tmp_path / "G", tmp_path / "R"
    with LayerStore(g, r) as store:
        keep, _ = store.create(names=["keep"])
    child = subprocess.Popen(
        [
            PY,
            "-c",
            textwrap.dedent(
                """
                import sys
                from layerstore import LayerStore
                s = LayerStore(sys.argv[1], sys.argv[2])
                # big data streamed from stdin, which never ends: create blocks there
                s.create(names=["doomed"], big_data={"item": sys.stdin.buffer})
                """
            ),
            str(g),
            str(r),
        ],
        stdin=subprocess.PIPE,
    )
    assert child.stdin is not None
    child.stdin.write(b"partial data")
    child.stdin.flush()
    path = g / "vfs-layers/layers.json"
    deadline = time.monotonic() + 30
    while b'"incomplete":true' not in path.read_bytes():
        assert time.monotonic() < deadline
        time.sleep(0.02)
    doomed = json.loads(path.read_bytes())[1]["id"]
    while not (g / "vfs-layers" / doomed).exists():
        assert time.monotonic() < deadline
        time.sleep(0.02)
    child.send_signal(signal.SIGKILL)
    child.wait()
    child.stdin.close()
    assert doomed in path.read_text()
    with LayerStore(g, r) as store:
        assert store.ids() == [keep.id]
    assert doomed not in path.read_text()
    assert not (g / "vfs-layers" / doomed).exists()
    assert not (g / "vfs/dir" / doomed).exists()
    assert go_layer_ids(g, r) == [keep.id]


def test_reader_upgrades_to_remove_incomplete_layers(tmp_path: Path) -> None:
    g, r = tmp_path / "G", tmp_path / "R"
    store = LayerStore(g, r)
    keep, _ = store.create()
    bad, _ = store.create(big_data={"k": b"v"})
    path = g / "vfs-layers/layers.json"
    data = json.loads(path.read_bytes())
    data[1]["flags"] = {"incomplete": True}
    time.sleep(0.01)
    path.write_text(json.dumps(data))  # the hand edit of the bats cleanup-layer test
    assert [x.id for x in store.layers()] == [keep.id]  # a read, upgraded to a write
    assert not (g / "vfs-layers" / bad.id).exists()
    assert json.loads(path.read_bytes()) == [json.loads(path.read_bytes())[0]]
    # The Go CLI's own incomplete cleanup sees nothing left to do, and agrees.
    assert go_layer_ids(g, r) == [keep.id]


def test_go_cleans_up_our_incomplete_layer(tmp_path: Path) -> None:
    g, r = tmp_path / "G", tmp_path / "R"
    store = LayerStore(g, r)
    store.create(id="keep0001")
    store.create(id="gone0001", flags={"incomplete": True})  # as a crash would leave it
    raw = (g / "vfs-layers/layers.json").read_bytes()
    assert b'"id":"gone0001"' in raw and b'"incomplete":true' not in raw  # create clears
    store.set_flag("gone0001", "incomplete", True)
    assert go_layer_ids(g, r) == ["keep0001"]
    assert not (g / "vfs/dir/gone0001").exists()


@pytest.mark.parametrize("shared", [True, False], ids=["one-store", "store-per-thread"])
def test_two_threads_create_25_each(tmp_path: Path, shared: bool) -> None:
    g, r = tmp_path / "G", tmp_path / "R"
    first = LayerStore(g, r)
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            s = first if shared else LayerStore(g, r)
            for i in range(25):
                s.create(names=[f"t{n}-{i}"])
                s.get(f"t{n}-{i}")
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(first.layers()) == 50
    assert len(LayerStore(g, r).layers()) == 50
    assert len(go_layer_ids(g, r)) == 50


def test_two_processes_create_25_each(tmp_path: Path) -> None:
    g, r = tmp_path / "G", tmp_path / "R"
    LayerStore(g, r).close()
    code = """
        import sys
        from layerstore import LayerStore
        s = LayerStore(sys.argv[1], sys.argv[2])
        for i in range(25):
            s.create(names=[f"{sys.argv[3]}-{i}"])
        print(len(s.layers()))
        """
    procs = [run_python(code, str(g), str(r), f"p{n}") for n in range(2)]
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        assert 25 <= int(out) <= 50
    with LayerStore(g, r) as store:
        names = {n for layer in store.layers() for n in layer.names}
    assert names == {f"p{n}-{i}" for n in range(2) for i in range(25)}
    assert len(go_layer_ids(g, r)) == 50


def test_delete_refuses_layers_of_go_images_and_containers(tmp_path: Path) -> None:
    g, r = tmp_path / "G", tmp_path / "R"
    store = LayerStore(g, r)
    top, _ = store.create(names=["top"])
    lone, _ = store.create(names=["lone"])
    free, _ = store.create()
    go_cli(g, r, "create-image", "-n", "img", top.id)
    go_cli(g, r, "create-image", "-n", "img2", lone.id)
    go_cli(g, r, "create-container", "-n", "ctr", "img")
    container_layer = next(x for x in store.layers() if x.parent == top.id)
    with pytest.raises(errors.LayerUsedByImage) as e1:
        store.delete("lone")
    assert str(e1.value).startswith(f"layer {lone.id} used by image ")
    assert str(e1.value).endswith(": layer is in use by an image")
    with pytest.raises(errors.LayerUsedByContainer, match="layer is in use by a container"):
        store.delete(container_layer.id)
    with pytest.raises(errors.LayerHasChildren):
        store.delete("top")
    store.delete(free.id)
    go_cli(g, r, "delete-container", "ctr")  # deletes the container's layer too
    assert not store.exists(container_layer.id)
    assert set(go_layer_ids(g, r)) == {top.id, lone.id}


def test_two_go_and_two_of_ours_create_25_each(tmp_path: Path) -> None:
    g, r = tmp_path / "G", tmp_path / "R"
    LayerStore(g, r).close()
    ours = """
        import sys
        from layerstore import LayerStore
        s = LayerStore(sys.argv[1], sys.argv[2])
        for i in range(25):
            s.create(names=[f"{sys.argv[3]}-{i}"])
        """
    go = (
        'for i in $(seq 0 24); do containers-storage -s vfs -g "$1" -R "$2" '
        'create-layer -n "$3-$i" >/dev/null || exit 1; done'
    )
    procs = [run_python(ours, str(g), str(r), f"py{n}") for n in range(2)]
    procs += [
        subprocess.Popen(
            ["sh", "-c", go, "sh", str(g), str(r), f"go{n}"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in range(2)
    ]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    expected = {f"{who}{n}-{i}" for who in ("py", "go") for n in range(2) for i in range(25)}
    with LayerStore(g, r) as store:
        assert {n for layer in store.layers() for n in layer.names} == expected
    assert len(go_layer_ids(g, r)) == 100


def test_forked_child_uses_the_inherited_store(tmp_path: Path) -> None:
    g, r = tmp_path / "G", tmp_path / "R"
    store = LayerStore(g, r)
    store.create(names=["before"])
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through its exit status
        code = 1
        try:
            store.create(names=["from-child"])
            code = 0 if store.exists("before") else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert store.get("from-child").names == ("from-child",)
