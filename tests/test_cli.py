"""The ``layerstore`` command, run as a real process: every verb's output, exit codes
and errors, in the formats of tests/interop/GO_CLI_FORMATS.md."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from conftest import Runner, StoreDirs

ID_RE = re.compile(r"^[0-9a-f]{64}$")
Run = Callable[..., "subprocess.CompletedProcess[str]"]


@pytest.fixture
def ls(store_dirs: StoreDirs, ls_cli: Runner) -> Run:
    """Our CLI bound to a fresh store."""

    def run(*args: str, **kw: object) -> subprocess.CompletedProcess[str]:
        return ls_cli(store_dirs.graph, store_dirs.run, *args, **kw)

    return run


def new_layer(ls: Run, *args: str) -> str:
    out = ls("create-layer", *args).stdout
    layer_id = out.splitlines()[0]
    assert ID_RE.match(layer_id) or "-i" in args, out
    return layer_id


def test_empty_store_lists_nothing(ls: Run) -> None:
    assert ls("layers").stdout == ""
    assert ls("layers", "--json").stdout == "[]\n"


def test_create_layer_prints_the_id_then_each_name(ls: Run, store_dirs: StoreDirs) -> None:
    done = ls("create-layer", "-n", "foo", "-n", "bar")
    layer_id, *rest = done.stdout.splitlines()
    assert ID_RE.match(layer_id)
    assert rest == ["\tfoo", "\tbar"]
    assert store_dirs.layer_dir(layer_id).is_dir()

    rec = json.loads(ls("create-layer", "--json", "-n", "j", "-i", "abc123").stdout)
    assert list(rec) == ["id", "names", "created"]
    assert rec["id"] == "abc123" and rec["names"] == ["j"]

    child = new_layer(ls, "foo")
    assert ls("layers").stdout == (
        f"{layer_id}\n\tname: foo\n\tname: bar\nabc123\n\tname: j\n{child}\n"
    )
    records = store_dirs.records()
    assert [r["id"] for r in records] == [layer_id, "abc123", child]
    assert records[2]["parent"] == layer_id
    assert json.loads(ls("layers", "--json").stdout) == records


def test_create_layer_errors_name_the_culprit_and_change_nothing(
    ls: Run, store_dirs: StoreDirs
) -> None:
    ls("create-layer", "-n", "foo", "-i", "aaaa1111")
    before = store_dirs.layers_json.read_bytes()
    cases = [
        (("-n", "foo"), ["that name is already in use", "foo"]),
        (("-i", "aaaa1111"), ["that ID is already in use", "aaaa1111"]),
        (("nosuch",), ["layer not known", "nosuch"]),
        (("--uidmap", "garbage"), ["initializing ID mappings", "garbage"]),
    ]
    for args, words in cases:
        done = ls("create-layer", *args, check=False)
        assert done.returncode == 1, args
        assert done.stdout == ""
        assert len(done.stderr.splitlines()) == 1, done.stderr
        for word in words:
            assert word in done.stderr
    assert store_dirs.layers_json.read_bytes() == before


def test_create_layer_with_id_maps_label_and_parent(ls: Run, store_dirs: StoreDirs) -> None:
    base = new_layer(ls, "--uidmap", "0:100000:1000", "--gidmap", "0:200000:1000", "-n", "mapped")
    child = new_layer(ls, "-l", "system_u:object_r:foo_t:s0", "-n", "kid", "mapped")
    assert ls("layer", "kid").stdout == (
        f"ID: {child}\n"
        "UID mapping: (container=0, host=100000, size=1000)\n"
        "GID mapping: (container=0, host=200000, size=1000)\n"
        f"Parent: {base}\n"
        "Name: kid\n"
    )
    rec = store_dirs.records()[1]
    assert rec["mountlabel"] == "system_u:object_r:foo_t:s0"
    assert rec["uidmap"] == [{"container_id": 0, "host_id": 100000, "size": 1000}]
    st = store_dirs.layer_dir(base).stat()
    assert (st.st_uid, st.st_gid) == (100000, 200000)


def test_layer_looks_up_by_id_name_and_prefix_and_skips_unknown(ls: Run) -> None:
    a = new_layer(ls, "-i", "aaaa1111", "-n", "first")
    b = new_layer(ls, "-n", "second")
    done = ls("layer", "first", b[:10], "nosuch", a, check=False)
    assert done.returncode == 1
    assert done.stdout == (
        f"ID: aaaa1111\nName: first\nID: {b}\nName: second\nID: aaaa1111\nName: first\n"
    )
    assert done.stderr == ""
    docs = json.loads(ls("layer", "--json", "second").stdout)
    assert [d["id"] for d in docs] == [b]
    done = ls("layer", "--json", "nosuch", check=False)
    assert (done.returncode, done.stdout) == (1, "[]\n")


def test_exists_reports_each_argument(ls: Run) -> None:
    new_layer(ls, "-n", "foo")
    assert ls("exists", "foo").stdout == "foo: true\n"
    done = ls("exists", "foo", "nosuch", check=False)
    assert (done.returncode, done.stdout) == (1, "foo: true\nnosuch: false\n")
    done = ls("exists", "--json", "nosuch", "foo", check=False)
    assert (done.returncode, done.stdout) == (1, '{"foo":true,"nosuch":false}\n')
    assert ls("exists", "-q", "foo").stdout == ""
    assert ls("exists", "-l", "foo").returncode == 0
    # Only layers live in this store: an image or container is never found.
    assert ls("exists", "-i", "foo", check=False).returncode == 1


def test_mount_counts_and_unmount(ls: Run, store_dirs: StoreDirs) -> None:
    layer_id = new_layer(ls, "-n", "m")
    path = str(store_dirs.layer_dir(layer_id))
    assert ls("mount", "m").stdout == path + "\n"
    assert ls("mount", layer_id[:8]).stdout == path + "\n"
    assert store_dirs.mounts() == [{"id": layer_id, "path": path, "count": 2}]
    assert ls("mounted", "m").stdout == "m mounted\n"
    assert ls("mounted", "--json", "m").stdout == 'm mounted\n[{"id":"m","error":""}]\n'
    assert "mount: " + path in ls("layers", "-t").stdout

    assert ls("unmount", "m").stdout == ""  # still mounted once
    assert store_dirs.mounts()[0]["count"] == 1
    assert ls("unmount", path).stdout == f"{path} mountpoint unmounted\n"  # by mount path
    assert store_dirs.mounts() == []
    assert ls("mounted", "m").stdout == ""
    assert ls("unmount", "m").stdout == "m mountpoint unmounted\n"  # already unmounted

    ls("mount", "m")
    ls("mount", "m")
    assert ls("unmount", "--force", "m").stdout == "m mountpoint unmounted\n"
    assert store_dirs.mounts() == []

    done = ls("mount", "-o", "nosuid", "m", check=False)
    assert (done.returncode, done.stdout) == (1, "\n")
    assert done.stderr == "vfs driver does not support mount options while mounting m\n"
    done = ls("mount", "--json", "m", "nosuch", check=False)
    assert done.returncode == 1
    assert json.loads(done.stdout) == [
        {"id": "m", "mountpoint": path, "error": ""},
        {"id": "nosuch", "mountpoint": "", "error": "layer not known"},
    ]
    done = ls("unmount", "nosuch", check=False)
    assert (done.returncode, done.stderr) == (1, "layer not known while unmounting nosuch\n")
    done = ls("mounted", "nosuch", check=False)
    assert (done.returncode, done.stderr) == (
        1,
        "layer not known checking if nosuch is mounted\n",
    )


def test_names_verbs(ls: Run, store_dirs: StoreDirs) -> None:
    a = new_layer(ls, "-n", "foo", "-n", "bar")
    b = new_layer(ls, "-n", "taken")
    assert ls("get-names", "foo").stdout == "foo\nbar\n"
    assert ls("get-names", "--json", b).stdout == '["taken"]\n'
    assert ls("add-names", "-n", "n1", "-n", "taken", "foo").stdout == ""
    assert ls("get-names", a).stdout == "foo\nbar\nn1\ntaken\n"  # old names first
    assert ls("get-names", "--json", b).stdout == "[]\n"  # the name moved
    assert ls("get-names", b).stdout == ""
    assert ls("set-names", "--json", "-n", "only", a).stdout == '["only"]\n'
    assert store_dirs.records()[0]["names"] == ["only"]
    assert ls("set-names", a).stdout == ""
    assert "names" not in store_dirs.records()[0]
    for verb in ("get-names", "add-names", "set-names"):
        done = ls(verb, "nosuch", check=False)
        assert done.returncode == 1
        assert "layer not known" in done.stderr and "nosuch" in done.stderr


def test_metadata_verbs(ls: Run, tmp_path: Path, store_dirs: StoreDirs) -> None:
    new_layer(ls, "-n", "a")
    new_layer(ls, "-n", "b")
    assert ls("metadata", "a").stdout == "a: \n"
    ls("set-metadata", "-m", "hello world", "a")
    src = tmp_path / "meta"
    src.write_text("line1\nline2\n\n")
    ls("set-metadata", "-f", str(src), "b")
    assert store_dirs.records()[1]["metadata"] == "line1\nline2\n\n"
    assert ls("metadata", "a", "b").stdout == "a: hello world\nb: line1\nline2\n\n"
    assert ls("metadata", "-q", "a").stdout == "hello world\n"
    done = ls("metadata", "a", "nosuch", check=False)
    assert (done.returncode, done.stdout) == (1, "a: hello world\nnosuch: \n")
    done = ls("metadata", "--json", "nosuch", "a", check=False)
    assert (done.returncode, done.stdout) == (1, '{"a":"hello world"}\n')

    before = store_dirs.layers_json.read_bytes()
    for args, text in [
        (("a",), "no new metadata provided\n"),
        (("-m", "", "a"), "no new metadata provided\n"),
        (("-f", "/nonexistent", "a"), "open /nonexistent: no such file or directory\n"),
    ]:
        done = ls("set-metadata", *args, check=False)
        assert (done.returncode, done.stderr) == (1, text)
    done = ls("set-metadata", "-m", "x", "nosuch", check=False)
    assert done.returncode == 1 and "nosuch" in done.stderr
    assert store_dirs.layers_json.read_bytes() == before


def test_layer_data_verbs(ls: Run, tmp_path: Path, store_dirs: StoreDirs) -> None:
    layer_id = new_layer(ls, "-n", "d")
    assert ls("list-layer-data", "d").stdout == ""
    assert ls("list-layer-data", "--json", "d").stdout == "null\n"
    blob = bytes(range(256)) * 3
    src = tmp_path / "blob"
    src.write_bytes(blob)
    ls("set-layer-data", "-f", str(src), "d", "key1")
    ls("set-layer-data", "d", "Key-Two", input=b"from stdin\x00")
    assert ls("list-layer-data", "d").stdout == "key1\nKey-Two\n"
    assert ls("list-layer-data", "--json", "d").stdout == '["key1","Key-Two"]\n'
    datadir = store_dirs.graph / "vfs-layers" / layer_id
    assert sorted(os.listdir(datadir)) == ["=S2V5LVR3bw==", "key1"]

    raw = subprocess.run(
        [
            sys.executable,
            "-m",
            "layerstore",
            "-g",
            str(store_dirs.graph),
            "-R",
            str(store_dirs.run),
            "get-layer-data",
            "d",
            "key1",
        ],
        capture_output=True,
        check=True,
    )
    assert raw.stdout == blob
    out = tmp_path / "out"
    ls("get-layer-data", "-f", str(out), layer_id[:6], "Key-Two")
    assert out.read_bytes() == b"from stdin\x00"

    done = ls("get-layer-data", "d", "nokey", check=False)
    assert (done.returncode, done.stderr) == (
        1,
        f'locating item named "nokey" for layer with ID "{layer_id}": file does not exist\n',
    )
    done = ls("set-layer-data", "-f", str(src), "d", "", check=False)
    assert done.returncode == 1
    assert "not a valid name for a big data item" in done.stderr
    for args in (("get-layer-data", "nosuch", "k"), ("set-layer-data", "-f", str(src), "x", "k")):
        done = ls(*args, check=False)
        assert done.returncode == 1 and "layer not known" in done.stderr


def test_delete_layer(ls: Run, store_dirs: StoreDirs) -> None:
    parent = new_layer(ls, "-n", "p")
    child = new_layer(ls, "-n", "c", "p")
    ls("set-layer-data", "c", "k", input="v")
    done = ls("delete-layer", "p", check=False)
    assert done.returncode == 1
    assert "p: " in done.stderr and "layer has children" in done.stderr
    done = ls("delete-layer", "nosuch", check=False)
    assert (done.returncode, done.stderr) == (1, "nosuch: identifier is not a layer\n")
    done = ls("delete-layer", "--json", "c", "nosuch", check=False)
    assert (done.returncode, done.stdout) == (1, '{"c":"","nosuch":"identifier is not a layer"}\n')
    assert not store_dirs.layer_dir(child).exists()
    assert not (store_dirs.graph / "vfs-layers" / child).exists()
    assert ls("delete-layer", parent[:12]).stdout == ""
    assert store_dirs.records() == []


def test_wipe_and_shutdown(ls: Run, store_dirs: StoreDirs) -> None:
    a = new_layer(ls, "-n", "a")
    new_layer(ls, "-n", "b", "a")
    ls("mount", "a")
    done = ls("shutdown", check=False)
    assert done.returncode == 1
    assert "a layer is mounted" in done.stderr and a in done.stderr
    assert ls("shutdown", "--json", check=False).stdout == "{}\n"
    assert ls("shutdown", "-f").stdout == ""  # returns, unlike Go 1.43's
    assert store_dirs.mounts() == []
    assert ls("shutdown", "--json").stdout == '""\n'
    assert ls("wipe").stdout == ""
    assert store_dirs.records() == []
    assert os.listdir(store_dirs.graph / "vfs" / "dir") == []
    assert ls("wipe", "--json").stdout == '""\n'


def test_status_goes_to_stderr_and_version(ls: Run, store_dirs: StoreDirs) -> None:
    done = ls("status")
    assert done.stdout == ""
    assert done.stderr == (
        f"Root: {store_dirs.graph}\nRun Root: {store_dirs.run}\n"
        "Driver Name: vfs\nDriver Options: []\n"
    )
    assert json.loads(ls("status", "--json").stdout) == [
        ["Root", str(store_dirs.graph)],
        ["Run Root", str(store_dirs.run)],
        ["Driver Name", "vfs"],
        ["Driver Options", "[]"],
    ]
    from layerstore import __version__

    assert ls("version").stdout == f"Version: {__version__}\n"
    assert ls("version", "--json").stdout == f'[["Version","{__version__}"]]\n'


def test_layer_parent_owners(ls: Run) -> None:
    a = new_layer(ls, "-n", "a")
    assert ls("layer-parent-owners", "a").stdout == f"ID: {a}\n"
    done = ls("layer-parent-owners", "--json", "a", "nosuch", check=False)
    assert done.returncode == 1
    assert done.stdout == f'{{"ID":"{a}","UIDs":null,"GIDs":null}}\n'


def test_usage_errors(ls: Run) -> None:
    done = ls("bogus", check=False)
    assert (done.returncode, done.stdout) == (1, "bogus: unrecognized command.\n")
    done = ls("layer", check=False)
    assert done.returncode == 1
    assert done.stdout.startswith("layer: more arguments required.\nUsage: layerstore layer ")
    assert "--json, -j" in done.stderr
    done = ls("list-layer-data", "a", "b", check=False)
    assert done.returncode == 1
    assert done.stdout.startswith("list-layer-data: too many arguments ([a b]).\n")
    # Flags end at the first argument, as in Go's mflag.
    done = ls("create-layer", "parent", "-n", "x", check=False)
    assert done.returncode == 1 and "too many arguments ([parent -n x])" in done.stdout
    done = ls("layers", "--bogus", check=False)
    assert (done.returncode, done.stderr) == (
        125,
        "flag provided but not defined: --bogus\nSee 'layerstore layers --help'.\n",
    )
    done = ls("create-layer", "-n", check=False)
    assert (done.returncode, done.stderr.splitlines()[0]) == (125, "flag needs an argument: -n")
    done = ls("layers", "--help", check=False)
    assert done.returncode == 125 and done.stdout.startswith("Usage: layerstore layers")
    top = subprocess.run(
        [sys.executable, "-m", "layerstore", "--help"], capture_output=True, text=True
    )
    assert top.returncode == 0
    assert "create-layer" in top.stdout and "XDG_DATA_HOME" in top.stdout
    bare = subprocess.run([sys.executable, "-m", "layerstore"], capture_output=True, text=True)
    assert bare.returncode == 1 and bare.stdout.startswith("Usage: layerstore command")


def test_a_corrupt_layers_json_is_named_and_left_alone(ls: Run, store_dirs: StoreDirs) -> None:
    new_layer(ls, "-n", "x")
    store_dirs.layers_json.write_text('[{"id":')
    done = ls("layers", check=False)
    assert done.returncode == 1
    assert done.stdout.startswith("error initializing: ")
    assert str(store_dirs.layers_json) in done.stdout
    assert store_dirs.layers_json.read_text() == '[{"id":'


def test_global_flags_after_the_verb_and_equals_syntax(tmp_path: Path) -> None:
    g, r = tmp_path / "g", tmp_path / "r"
    py = [sys.executable, "-m", "layerstore"]
    subprocess.run([*py, "create-layer", f"--graph={g}", "-R", str(r), "--name=eq"], check=True)
    done = subprocess.run(
        [*py, "-g", str(g), "layers", "--run", str(r), "-s", "vfs"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.endswith("\tname: eq\n")


def test_defaults_follow_xdg_and_environment(tmp_path: Path) -> None:
    env = dict(os.environ)
    env.pop("STORAGE_OPTS", None)
    env.pop("STORAGE_DRIVER", None)
    env["XDG_DATA_HOME"] = str(tmp_path / "data")
    env["XDG_RUNTIME_DIR"] = str(tmp_path / "runtime")
    py = [sys.executable, "-m", "layerstore"]
    subprocess.run([*py, "create-layer", "-n", "x"], env=env, check=True, capture_output=True)
    graph = tmp_path / "data" / "layerstore"
    records = json.loads((graph / "vfs-layers" / "layers.json").read_text())
    assert records[0]["names"] == ["x"]
    assert (tmp_path / "runtime" / "layerstore" / "vfs-layers" / "mountpoints.lock").exists()

    done = subprocess.run(
        [*py, "layers"], env={**env, "STORAGE_DRIVER": "nosuch"}, capture_output=True, text=True
    )
    assert done.returncode == 1
    assert done.stdout.startswith("error initializing: ") and "nosuch" in done.stdout
    assert "driver not supported" in done.stdout
    done = subprocess.run(
        [*py, "layers"], env={**env, "STORAGE_OPTS": "vfs.bogus=1"}, capture_output=True, text=True
    )
    assert done.returncode == 1 and "vfs.bogus" in done.stdout


def test_debug_flag_logs_the_roots(ls: Run, store_dirs: StoreDirs) -> None:
    done = ls("-D", "layers")
    assert f'level=DEBUG msg="Root: {store_dirs.graph}"' in done.stderr
    assert done.stdout == ""


def test_console_script_is_the_same_command(store_dirs: StoreDirs) -> None:
    script = Path(sys.executable).parent / "layerstore"
    args = ["-g", str(store_dirs.graph), "-R", str(store_dirs.run), "create-layer", "-n", "s"]
    done = subprocess.run([str(script), *args], capture_output=True, text=True, check=True)
    assert done.stdout.splitlines()[1] == "\ts"
