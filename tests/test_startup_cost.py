"""A short CLI call costs little: what the common verbs import, and the fast paths that
stand in for slow modules (dataclasses, json) behave exactly like them.

Start-up is most of a ``layers`` call on a small store: each of typing, dataclasses, json
(with re and enum), datetime or logging costs 2-6 ms, as much as the verb's own work.
"""

from __future__ import annotations

import copy
import dataclasses
import io
import json
import math
import os
import pickle
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from layerstore import Change, ChangeKind, IDMap, Layer, LayerStore, MountOptions
from layerstore.layer import _json_dumps, _json_loads, go_dumps
from layerstore.staging import StagingDir

# Never needed by `layers` / `create-layer` on a vfs store (nor re/json/enum/datetime
# by `layers`): each is a few milliseconds of every call.
_HEAVY = {
    "typing",
    "dataclasses",
    "inspect",
    "logging",
    "threading",
    "tempfile",
    "layerstore._native",
    "layerstore.staging",
    "layerstore.drivers.overlay",
    "layerstore.datapath",
}

_MODULES_AFTER = r"""
import sys
before = set(sys.modules)
from layerstore.cli import main
code = main(sys.argv[1:])
sys.stdout.flush()
print("\n".join(sorted(set(sys.modules) - before)), file=sys.stderr)
sys.exit(code)
"""


def modules_used(tmp_path: Path, *args: str, driver: str = "vfs") -> set[str]:
    """Modules our CLI imports for ``args`` (beyond what the interpreter had loaded)."""
    graph, run = tmp_path / "graph", tmp_path / "run"
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            _MODULES_AFTER,
            "-s",
            driver,
            "-g",
            str(graph),
            "-R",
            str(run),
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return set(done.stderr.split())


@pytest.mark.parametrize("driver", ["vfs", "overlay"])
def test_listing_layers_imports_no_heavy_module(tmp_path: Path, driver: str) -> None:
    with LayerStore(tmp_path / "graph", tmp_path / "run", driver=driver) as store:
        store.create(names=["base"])
    used = modules_used(tmp_path, "layers", driver=driver)
    assert f"layerstore.drivers.{driver}" in used
    assert not used & (_HEAVY - {f"layerstore.drivers.{driver}"})
    assert not used & {"re", "json", "enum", "datetime", "shutil", "ctypes.util", "secrets"}


def test_creating_a_layer_imports_no_heavy_module(tmp_path: Path) -> None:
    with LayerStore(tmp_path / "graph", tmp_path / "run") as store:
        store.create(names=["base"])
    used = modules_used(tmp_path, "create-layer", "base")
    assert "layerstore.snapshot" in used
    assert not used & (_HEAVY | {"re", "json"})


def test_importing_a_layer_from_a_file_imports_no_heavy_module(tmp_path: Path) -> None:
    """import-layer needs the data path and staging, not typing, threading or shutil."""
    tar = tmp_path / "layer.tar"
    with tarfile.open(tar, "w") as t:
        info = tarfile.TarInfo("f")
        info.size = 4
        t.addfile(info, io.BytesIO(b"data"))
    used = modules_used(tmp_path, "import-layer", "-f", str(tar))
    assert {"layerstore._native", "layerstore.datapath", "layerstore.staging"} <= used
    assert not used & {"typing", "dataclasses", "threading", "shutil", "tempfile", "logging"}
    with LayerStore(tmp_path / "graph", tmp_path / "run") as store:
        assert [layer.uncompressed_size for layer in store.layers()] == [tar.stat().st_size]
        assert not os.path.exists(store.driver.staging_root())


def test_a_live_staging_directory_is_kept_without_importing_staging(tmp_path: Path) -> None:
    """While an import fills a staging directory, another process's store open sees it
    (and leaves it: it is locked) without loading the staging machinery."""
    with LayerStore(tmp_path / "graph", tmp_path / "run") as store:
        live = StagingDir(store.driver.staging_root())
    try:
        used = modules_used(tmp_path, "create-layer")
        assert "layerstore.staging_prune" in used
        assert "layerstore.staging" not in used
        assert os.path.isdir(live.path)
    finally:
        live.remove()


# ---------------------------------------------------------------------------------------
# the records are dataclasses as far as anyone can tell


def test_records_behave_as_frozen_dataclasses() -> None:
    m = IDMap(0, 100000, 65536)
    assert m == IDMap(container_id=0, host_id=100000, size=65536) != IDMap(0, 1, 1)
    assert hash(m) == hash(IDMap(0, 100000, 65536))
    assert repr(m) == "IDMap(container_id=0, host_id=100000, size=65536)"
    with pytest.raises(dataclasses.FrozenInstanceError, match="cannot assign to field 'size'"):
        m.size = 1  # type: ignore[misc]
    with pytest.raises(AttributeError):
        m.other = 1  # type: ignore[attr-defined]
    assert pickle.loads(pickle.dumps(m)) == m == copy.deepcopy(m)
    assert dataclasses.is_dataclass(m)
    assert [f.name for f in dataclasses.fields(IDMap)] == ["container_id", "host_id", "size"]
    assert dataclasses.replace(m, size=5) == IDMap(0, 100000, 5)
    assert dataclasses.asdict(MountOptions(options=("ro",))) == {
        "mount_label": "",
        "options": ("ro",),
    }
    match Change("/etc", ChangeKind.ADD):
        case Change(path, kind):
            assert (path, kind) == ("/etc", ChangeKind.ADD)
    with pytest.raises(TypeError):
        IDMap(0, 1)  # type: ignore[call-arg]


def test_layer_snapshots_keep_dataclass_behaviour(tmp_path: Path) -> None:
    with LayerStore(tmp_path / "graph", tmp_path / "run") as store:
        layer, _ = store.create(names=["a"])
        assert store.get("a") == layer
    renamed = dataclasses.replace(layer, names=("b",))
    assert renamed.names == ("b",) and renamed.id == layer.id and renamed != layer
    assert "names" in [f.name for f in dataclasses.fields(Layer)]
    assert Layer("x").flags == {} and Layer("x").created.year == 1
    assert repr(Layer("x")).startswith("Layer(id='x', names=(), parent=None,")
    with pytest.raises(dataclasses.FrozenInstanceError):
        layer.names = ()  # type: ignore[misc]


# ---------------------------------------------------------------------------------------
# the C scanner / encoder of json, called directly, are json.loads / json.dumps

_json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(_json_values, st.sampled_from(["", " ", "\n\t "]))
def test_json_fast_paths_match_the_json_module(value: object, space: str) -> None:
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    assert _json_dumps(value) == text
    assert _json_loads(space + text + space) == json.loads(space + text + space)
    assert _json_loads((space + text).encode()) == json.loads((space + text).encode())


_BAD_OR_ODD = [
    "",
    "[1] x",
    "\ufeff[]",
    "[1,]",
    '{"a":1',
    '"\x01"',
    "nul",
    b"\xff[]",
    b"\xef\xbb\xbf[2]",
]


@pytest.mark.parametrize("text", _BAD_OR_ODD)
def test_json_fast_load_fails_or_succeeds_as_json_loads(text: str | bytes) -> None:
    try:
        expected: object = json.loads(text)
    except ValueError as e:
        with pytest.raises(type(e)) as got:
            _json_loads(text)
        assert str(got.value) == str(e)
    else:
        assert _json_loads(text) == expected


def test_json_fast_dump_fails_as_json_dumps() -> None:
    with pytest.raises(TypeError, match="Object of type set is not JSON serializable"):
        go_dumps({"a": {1}})
    with pytest.raises(TypeError, match="keys must be str"):
        go_dumps({(1, 2): 1})
    assert _json_dumps([math.inf]) == "[Infinity]"
