"""Additional layer stores and read-only image stores on overlay.

An additional layer store (``overlay.additionallayerstore=/path[:ref]``) is a read-only
directory of lazily pulled layers, ``<store>/[base64(ref)/]<digest>/{diff,info,blob}``.
``put_additional_layer`` makes a layer whose ``diff`` *is* the store's (a symlink, never
a copy): it mounts, serves as a lower, and its ``diff`` streams the stored blob.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import os
import subprocess
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from layerstore import Compression, LayerStore, errors

GO_CLI = "/usr/bin/containers-storage"


@pytest.fixture(autouse=True)
def _no_mounts_left(tmp_path: Path, unmount_all: Callable[[Path], None]) -> Iterator[None]:
    yield
    unmount_all(tmp_path)


def make_tar(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 1_700_000_000
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def make_additional_layer(
    store_dir: Path, files: dict[str, bytes], ref: str | None = None
) -> tuple[str, Path, bytes]:
    """A layer as a lazy-pulling store exposes it; returns (TOC digest, dir, blob)."""
    tarball = make_tar(files)
    blob = gzip.compress(tarball, mtime=0)
    toc = sha(b"toc of " + blob)
    base = store_dir / base64.b64encode(ref.encode()).decode() if ref is not None else store_dir
    layer = base / toc
    (layer / "diff").mkdir(parents=True)
    for name, data in files.items():
        (layer / "diff" / name).write_bytes(data)
    info = {
        "compressed-diff-digest": sha(blob),
        "compressed-size": len(blob),
        "diff-digest": sha(tarball),
        "diff-size": len(tarball),
        "toc-digest": toc,
        "compression": int(Compression.GZIP),
        "uidset": [0],
        "gidset": [0],
        "id": "ignored",
        "names": ["ignored"],
    }
    (layer / "info").write_text(json.dumps(info))
    (layer / "blob").write_bytes(blob)
    return toc, layer, blob


def test_a_lazily_pulled_layer_is_used_in_place(tmp_path: Path) -> None:
    als = tmp_path / "als"
    als.mkdir()
    toc, layer_dir, blob = make_additional_layer(als, {"hello": b"from the store\n"})
    store = LayerStore(
        tmp_path / "g",
        tmp_path / "r",
        driver="overlay",
        driver_options=[f"overlay.additionallayerstore={als}"],
    )
    with pytest.raises(errors.LayerUnknown, match="not found"):
        store.lookup_additional_layer(sha(b"nothing"))
    al = store.lookup_additional_layer(toc)
    layer = store.put_additional_layer("a" * 64, None, ["lazy"], al)
    al.release()
    assert list(layer.names) == ["lazy"] and not layer.parent and layer.id == "a" * 64
    assert layer.toc_digest == toc and layer.compressed_digest == sha(blob)
    assert store.layers_by_toc_digest(toc)[0].id == layer.id
    assert not store.get(layer.id).incomplete
    diff = Path(store.driver.layer_dir(layer.id)) / "diff"
    assert diff.is_symlink() and os.readlink(diff) == str(layer_dir / "diff")  # no copy
    # it mounts (read-only) and serves as a lower of a child
    merged = Path(store.mount(layer.id))
    assert (merged / "hello").read_bytes() == b"from the store\n"
    store.unmount(layer.id)
    child, _ = store.create(parent=layer.id, diff=make_tar({"child": b"c"}))
    merged = Path(store.mount(child.id))
    assert sorted(os.listdir(merged)) == ["child", "hello"]
    store.unmount(child.id)
    # diff streams the stored blob as it is, or decompressed on request
    with store.diff(layer.id) as f:
        assert f.read() == blob
    with store.diff(layer.id, compression=Compression.NONE) as f:
        assert f.read() == gzip.decompress(blob)
    with pytest.raises(errors.NotSupported, match="converting"):
        store.diff(layer.id, compression=Compression.ZSTD)
    with pytest.raises(errors.NotSupported, match="additional layer store"):
        store.apply_diff(layer.id, make_tar({"x": b"x"}))
    # the Go CLI (without the option) lists it and its child
    go = subprocess.run(
        [GO_CLI, "--storage-driver", "overlay", "-g", str(tmp_path / "g"),
         "--run", str(tmp_path / "r"), "layers"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert go.returncode == 0, go.stderr
    assert layer.id in go.stdout and child.id in go.stdout
    # deleting the layers leaves the additional layer store untouched
    store.delete(child.id)
    store.delete(layer.id)
    assert (layer_dir / "diff" / "hello").read_bytes() == b"from the store\n"
    assert store.driver.list_layers() == []


def test_a_store_with_references(tmp_path: Path) -> None:
    als = tmp_path / "als"
    als.mkdir()
    ref = "docker.io/library/busybox:latest"
    toc, _, _ = make_additional_layer(als, {"f": b"1"}, ref=ref)
    store = LayerStore(
        tmp_path / "g",
        tmp_path / "r",
        driver="overlay",
        driver_options=[f"overlay.additionallayerstore={als}:ref"],
    )
    with pytest.raises(errors.LayerUnknown):
        store.lookup_additional_layer(toc, "other/image:tag")
    layer = store.put_additional_layer("b" * 64, None, [], store.lookup_additional_layer(toc, ref))
    assert store.get(layer.id).toc_digest == toc


def test_a_failed_put_leaves_nothing_behind(tmp_path: Path) -> None:
    als = tmp_path / "als"
    als.mkdir()
    toc, layer_dir, _ = make_additional_layer(als, {"f": b"1"})
    store = LayerStore(
        tmp_path / "g",
        tmp_path / "r",
        driver="overlay",
        driver_options=[f"overlay.additionallayerstore={als}"],
    )
    store.create(names=["taken"])
    before = store.ids()
    al = store.lookup_additional_layer(toc)
    with pytest.raises(errors.DuplicateName):
        store.put_additional_layer("c" * 64, None, ["taken"], al)
    with pytest.raises(errors.LayerUnknown):
        store.put_additional_layer("c" * 64, "no-such-parent", [], al)
    (layer_dir / "info").write_text("{not json")
    with pytest.raises(errors.CorruptStore):
        store.put_additional_layer("c" * 64, None, [], al)
    (layer_dir / "info").write_text("{}")
    os.rename(layer_dir / "diff", layer_dir / "gone")  # the store lost it: mount fails later,
    layer = store.put_additional_layer("c" * 64, None, [], al)  # but the put itself is fine
    store.delete(layer.id)
    assert store.ids() == before
    assert sorted(store.driver.list_layers()) == sorted(before)


def test_options_of_additional_layer_stores(tmp_path: Path) -> None:
    home = tmp_path / "g"
    for option, message in (
        ("overlay.additionallayerstore=relative", "not absolute"),
        (f"overlay.additionallayerstore={tmp_path}/missing", "can't stat"),
        (f"overlay.additionallayerstore={tmp_path}:ref:ref", "option twice"),
        (f"overlay.additionallayerstore={tmp_path}:foo", "unknown option"),
    ):
        with pytest.raises(errors.InvalidOption, match=message):
            LayerStore(home, tmp_path / "r", driver="overlay", driver_options=[option])
    with pytest.raises(errors.NotSupported):
        LayerStore(tmp_path / "v", tmp_path / "rv").lookup_additional_layer(sha(b"x"))


def test_read_only_overlay_store_layers_are_parents(tmp_path: Path) -> None:
    shared_graph = tmp_path / "shared"
    shared = LayerStore(shared_graph, tmp_path / "shared-run", driver="overlay")
    base, _ = shared.create(names=["base"], diff=make_tar({"base-file": b"b"}))
    shared.close()
    ro = LayerStore.read_only(shared_graph, driver="overlay")
    assert [x.id for x in ro.layers()] == [base.id]
    with ro.diff(base.id) as f:
        assert f.read() == make_tar({"base-file": b"b"})
    with pytest.raises(errors.StoreIsReadOnly):
        ro.create()
    store = LayerStore(
        tmp_path / "g",
        tmp_path / "r",
        driver="overlay",
        driver_options=[f"overlay.imagestore={shared_graph}"],
    )
    child, _ = store.create(parent=base.id, diff=make_tar({"child-file": b"c"}))
    assert child.parent == base.id
    merged = Path(store.mount(child.id))
    assert sorted(os.listdir(merged)) == ["base-file", "child-file"]
    store.unmount(child.id)
    with store.diff(child.id) as f:
        assert f.read() == make_tar({"child-file": b"c"})
    assert [c.path for c in store.changes(child.id)] == ["/child-file"]
