"""`layerstore` and the Go `containers-storage` CLI on one live vfs store, both ways:
what one side writes, the other lists, looks up, renames, mounts and deletes, and each
then sees exactly the other's result (CLI output, layers.json, mountpoints.json)."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from layerstore import LayerStore

if TYPE_CHECKING:
    from conftest import Runner, StoreDirs

Run = Callable[..., "subprocess.CompletedProcess[str]"]


@pytest.fixture
def go(store_dirs: StoreDirs, go_cli: Runner) -> Run:
    def run(*args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
        return go_cli(store_dirs.graph, store_dirs.run, *args, **kw)

    return run


@pytest.fixture
def ls(store_dirs: StoreDirs, ls_cli: Runner) -> Run:
    def run(*args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
        return ls_cli(store_dirs.graph, store_dirs.run, *args, **kw)

    return run


def first_line(done: subprocess.CompletedProcess[str]) -> str:
    return done.stdout.splitlines()[0]


def test_a_go_made_store_is_used_and_changed_by_our_cli(
    go: Run, ls: Run, store_dirs: StoreDirs, small_tar: Path, tmp_path: Path
) -> None:
    base = first_line(go("import-layer", "-f", str(small_tar), "-n", "base", "-n", "alias"))
    child = first_line(go("create-layer", "-n", "child", "base"))
    other = first_line(go("create-layer", "-i", "ffff0000", "-n", "other"))
    blob = tmp_path / "blob"
    blob.write_bytes(b"\x00big data\xff" * 100)
    go("set-layer-data", "-f", str(blob), "base", "Manifest-1")
    go("set-metadata", "-m", "made by go", "child")
    go("mount", child)
    go("mount", child)

    # Listing and lookups: ours prints what Go prints.
    assert ls("layers", "--json").stdout == go("layers", "--json").stdout
    assert ls("layers").stdout == go("layers").stdout
    assert ls("layers", "-t").stdout == go("layers", "-t").stdout
    for key in ("base", "alias", base, base[:7], "child", "ffff"):
        assert ls("layer", key).stdout == go("layer", key).stdout, key
        assert ls("layer", "--json", key).stdout == go("layer", "--json", key).stdout, key
    rec = json.loads(ls("layer", "--json", "base").stdout)[0]
    assert rec["uidset"] == [0, 5, 999] and rec["gidset"] == [0, 7, 999]
    assert rec["diff-digest"].startswith("sha256:") and rec["diff-size"] == 10240
    assert ls("list-layer-data", "base").stdout == "Manifest-1\n"
    out = tmp_path / "out"
    ls("get-layer-data", "-f", str(out), "alias", "Manifest-1")
    assert out.read_bytes() == blob.read_bytes()
    assert ls("metadata", "child").stdout == go("metadata", "child").stdout
    assert ls("mounted", "child").stdout == "child mounted\n"

    # Rename and mount with ours; Go sees it.
    ls("set-names", "-n", "renamed", "-n", "alias", base[:12])
    assert go("get-names", base).stdout == "renamed\nalias\n"
    assert go("exists", "base", check=False).returncode == 1
    ls("add-names", "-n", "child", "other")  # a name moves between layers
    assert go("get-names", "--json", child).stdout == "[]\n"
    assert go("get-names", "other").stdout == "other\nchild\n"
    assert ls("mount", "renamed").stdout == f"{store_dirs.layer_dir(base)}\n"
    assert store_dirs.mounts() == [
        {"id": base, "path": str(store_dirs.layer_dir(base)), "count": 1},
        {"id": child, "path": str(store_dirs.layer_dir(child)), "count": 2},
    ]  # in layer order, as Go writes it
    assert go("mounted", base).stdout == f"{base} mounted\n"
    ls("unmount", "-f", child)
    assert go("mounted", child).stdout == ""
    assert (store_dirs.layer_dir(base) / "home" / "u" / "file").read_bytes() == b"hello"

    # Delete with ours; Go lists exactly what is left, and so does layers.json.
    ls("delete-layer", child)
    go_view = json.loads(go("layers", "--json").stdout)
    assert [r["id"] for r in go_view] == [base, other]
    assert go_view == store_dirs.records()
    assert go("layers", "--json").stdout == ls("layers", "--json").stdout
    assert not store_dirs.layer_dir(child).exists()
    assert go("mounted", "renamed").stdout == "renamed mounted\n"
    go("unmount", base)
    assert store_dirs.mounts() == []


def test_a_go_made_store_through_the_python_api(
    go: Run, store_dirs: StoreDirs, small_tar: Path
) -> None:
    base = first_line(go("import-layer", "-f", str(small_tar), "-n", "base"))
    child = first_line(go("create-layer", "-n", "child", "base"))
    go("set-layer-data", "base", "k", input="value")
    go("mount", child)
    with LayerStore(store_dirs.graph, store_dirs.run, driver="vfs") as store:
        assert [layer.id for layer in store.layers()] == [base, child]
        layer = store.get(base[:5])
        assert layer.names == ("base",) and layer.uid_set == (0, 5, 999)
        assert store.get("child").parent == base
        assert store.mounted("child") == 1
        assert store.size("base") == 10240
        assert store.layers_by_uncompressed_digest(layer.uncompressed_digest or "")[0].id == base
        with store.big_data("base", "k") as f:
            assert f.read() == b"value"
        store.set_names("child", ["kid"])
        store.mount("kid")
        store.set_metadata(base, "from python")
        assert store.unmount(child) is True
    assert go("metadata", "-q", "base").stdout == "from python\n"
    assert go("layer", child).stdout == f"ID: {child}\nParent: {base}\nName: kid\n"
    assert store_dirs.mounts()[0]["count"] == 1
    with LayerStore(store_dirs.graph, store_dirs.run, driver="vfs") as store:
        store.unmount("kid")
        store.delete("kid")
    assert go("layers").stdout == f"{base}\n\tname: base\n"
    assert store_dirs.mounts() == []


def test_layers_we_create_are_used_by_go(go: Run, ls: Run, store_dirs: StoreDirs) -> None:
    base = first_line(ls("create-layer", "-n", "base", "--uidmap", "0:100000:65536"))
    child = first_line(ls("create-layer", "-n", "child", "base"))
    ls("set-layer-data", "child", "cfg", input="{}")
    ls("set-metadata", "-m", "ours", "base")
    (store_dirs.layer_dir(base) / "hello").write_text("hi")  # content seen through the child?

    assert go("layers", "--json").stdout == ls("layers", "--json").stdout
    assert go("layers", "-t").stdout == ls("layers", "-t").stdout
    for key in ("base", child, child[:9]):
        assert go("layer", key).stdout == ls("layer", key).stdout
    assert go("get-layer-data", "child", "cfg").stdout == "{}"
    assert go("metadata", "base").stdout == "base: ours\n"

    # Mounts: Go mounts (by full id: 1.43 cannot mount by name) on top of ours.
    ls("mount", "child")
    assert go("mount", child).stdout == f"{store_dirs.layer_dir(child)}\n"
    assert store_dirs.mounts()[0]["count"] == 2
    assert ls("mounted", "child").stdout == "child mounted\n"
    assert go("unmount", "-f", child).stdout == f"{child} mountpoint unmounted\n"
    assert ls("mounted", "child").stdout == ""

    # Go renames and deletes what we made; we see it.
    go("set-names", "-n", "renamed", "base")
    assert ls("get-names", base).stdout == "renamed\n"
    go("delete-layer", "child")
    assert ls("layers").stdout == f"{base}\n\tname: renamed\n"
    assert not store_dirs.layer_dir(child).exists()
    assert not (store_dirs.graph / "vfs-layers" / child).exists()
    go("delete-layer", base)
    assert ls("layers", "--json").stdout == "[]\n"
    assert store_dirs.records() == []


def test_go_and_we_agree_on_mount_counts(go: Run, ls: Run, store_dirs: StoreDirs) -> None:
    layer_id = first_line(ls("create-layer", "-n", "m"))
    path = str(store_dirs.layer_dir(layer_id))
    sides = [lambda: go("mount", layer_id), lambda: ls("mount", "m")]
    for count in range(1, 5):
        assert sides[count % 2]().stdout == path + "\n"
        assert store_dirs.mounts() == [{"id": layer_id, "path": path, "count": count}]
        assert go("mounted", layer_id).stdout == ls("mounted", layer_id).stdout
    for count in range(3, 0, -1):
        side = go if count % 2 else ls
        assert side("unmount", layer_id).stdout == ""
        assert store_dirs.mounts()[0]["count"] == count
    assert go("unmount", layer_id).stdout == f"{layer_id} mountpoint unmounted\n"
    assert store_dirs.mounts() == []
    assert ls("mounted", "m").stdout == go("mounted", layer_id).stdout == ""


# The same script of verbs against a Go store and against ours: same stdout and exit
# code at every step, once timestamps and the store paths are normalised. Full ids are
# used where Go 1.43 cannot resolve names (mount).
A = "a" * 64
B = "b" * 63 + "0"
SCRIPT: list[tuple[str, ...]] = [
    ("layers",),
    ("layers", "--json"),
    ("create-layer", "-i", A, "-n", "one", "-n", "uno"),
    ("create-layer", "--json", "-i", B, "-n", "two", "one"),
    ("create-layer", "-n", "one"),
    ("create-layer", "-i", A),
    ("layers",),
    ("layers", "-t"),
    ("layers", "--json"),
    ("layer", "one", "bbb", "nosuch"),
    ("layer", "--json", "two"),
    ("exists", "one"),
    ("exists", "--json", "one", "nosuch"),
    ("exists", "-q", "nosuch"),
    ("get-names", "one"),
    ("get-names", "--json", "two"),
    ("add-names", "-n", "extra", "-n", "two", "one"),
    ("get-names", B),
    ("add-names", "--json", "-n", "more", "one"),
    ("set-names", "-n", "renamed", B),
    ("set-names", "--json", "-n", "r2", "-n", "r3", B),
    ("get-names", "nosuch"),
    ("set-metadata", "-m", "some <meta> & data\n", "one"),
    ("metadata", "one", "r2", "nosuch"),
    ("metadata", "-q", "one"),
    ("metadata", "--json", "one", "r2"),
    ("set-metadata", "one"),
    ("list-layer-data", "one"),
    ("list-layer-data", "--json", "one"),
    ("set-layer-data", "one", "first"),
    ("set-layer-data", "one", "Second-Key"),
    ("list-layer-data", "one"),
    ("list-layer-data", "--json", "uno"),
    ("get-layer-data", "one", "Second-Key"),
    ("mount", A),
    ("mount", "--json", A),
    ("mounted", "one"),
    ("mounted", "--json", "one", "two", "nosuch"),
    ("layers", "-t"),
    ("unmount", A),
    ("unmount", "--json", A),
    ("unmount", A),
    ("unmount", "nosuch"),
    ("layer-parent-owners", "one"),
    ("layer-parent-owners", "--json", "r3"),
    ("delete-layer", "nosuch"),
    ("delete-layer", "--json", B),
    ("layers",),
    ("exists", "two", "uno", "nosuch"),
    ("delete-layer", "uno"),
    ("layers", "--json"),
    ("wipe",),
    ("layers",),
    ("layer",),
    ("bogus",),
]


def _normalise(args: tuple[str, ...], text: str, store: StoreDirs) -> str:
    if args[0] == "exists":
        text = "".join(sorted(text.splitlines(keepends=True)))  # Go prints in map order
    text = text.replace(str(store.graph), "<G>").replace(str(store.run), "<R>")
    text = text.replace("containers-storage", "layerstore")
    return re.sub(r'"created":"[^"]*"', '"created":"<T>"', text)


def test_the_same_script_prints_the_same_on_go_and_on_ours(
    tmp_path: Path,
    store_dirs: StoreDirs,
    go_cli: Runner,
    ls_batch: Callable[..., list[subprocess.CompletedProcess[str]]],
) -> None:
    dirs = type(store_dirs)
    go_store, our_store = dirs(tmp_path / "go"), dirs(tmp_path / "ours")
    steps = [
        (args, f"data of step {n}\n" if args[0] == "set-layer-data" else None)
        for n, args in enumerate(SCRIPT)
    ]
    go_results = [
        go_cli(go_store.graph, go_store.run, *args, input=data, check=False) for args, data in steps
    ]
    # Ours runs the whole script in one process (main() per step) to save start-ups;
    # every other test here starts a process per command.
    our_results = ls_batch(our_store.graph, our_store.run, steps)
    for step, (args, g, o) in enumerate(zip(SCRIPT, go_results, our_results, strict=True)):
        assert (o.returncode, _normalise(args, o.stdout, our_store)) == (
            g.returncode,
            _normalise(args, g.stdout, go_store),
        ), f"step {step}: {args}\ngo stderr: {g.stderr}\nour stderr: {o.stderr}"
        if g.returncode == 1 and g.stderr and args[0] not in ("layer", "bogus"):
            # Our error line carries Go's text (and names the culprit as well).
            go_text = g.stderr.strip().rsplit(": ", 1)[-1].split(" while ")[0]
            assert go_text.split(" checking ")[0] in o.stderr, (args, g.stderr, o.stderr)
    assert go_store.records() == our_store.records() == []
