"""Every metadata operation of LayerStore, its errors, and "unchanged after a failure"."""

from __future__ import annotations

import base64
import json
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from layerstore import IDMap, LayerStore, MountOptions, errors
from layerstore.store import big_data_file_name


@pytest.fixture
def roots(tmp_path: Path) -> tuple[Path, Path]:
    return tmp_path / "G", tmp_path / "R"


@pytest.fixture
def store(roots: tuple[Path, Path]) -> Iterator[LayerStore]:
    with LayerStore(*roots) as s:
        yield s


def layers_json(g: Path) -> bytes:
    return (g / "vfs-layers/layers.json").read_bytes()


def snapshot_files(g: Path, r: Path) -> dict[str, bytes | None]:
    """Content of every store file except the lock tokens (which a writer may bump)."""
    out: dict[str, bytes | None] = {}
    for root in (g, r):
        for dirpath, dirnames, filenames in os.walk(root):
            for name in dirnames:
                out[os.path.join(dirpath, name)] = None
            for name in filenames:
                if name.endswith(".lock"):
                    continue
                p = os.path.join(dirpath, name)
                with open(p, "rb") as f:
                    out[p] = f.read()
    return out


def test_create_get_lookup_by_id_name_prefix(store: LayerStore, roots: tuple[Path, Path]) -> None:
    base, size = store.create(names=["base", "alias", "base"])
    assert size == -1
    assert re.fullmatch(r"[0-9a-f]{64}", base.id) and not base.id[:12].isdigit()
    assert base.names == ("base", "alias")
    assert base.parent is None and not base.read_only and not base.incomplete
    child, _ = store.create(parent="alias", names=["child"])
    assert child.parent == base.id
    for key in (base.id, "base", "alias", base.id[:10]):
        assert store.get(key).id == base.id
        assert store.exists(key)
    assert not store.exists("nope")
    with pytest.raises(errors.LayerUnknown) as info:
        store.get("nope")
    assert isinstance(info.value, KeyError) and '"nope"' in str(info.value)
    assert [x.id for x in store.layers()] == [base.id, child.id] == store.ids()
    assert store.status() == []
    assert store.layer_dir(child.id) == str(roots[0] / "vfs/dir" / child.id)


def test_prefix_rules(store: LayerStore) -> None:
    a, _ = store.create(id="aaaa1111")
    store.create(id="aaaa2222")
    c, _ = store.create(id="bbbb", names=["aaaa1"])
    store.create(id="has space")
    assert not store.exists("aaaa")  # ambiguous
    assert store.get("aaaa2").id == "aaaa2222"
    assert store.get("aaaa1").id == c.id  # a name hides a prefix
    assert store.get("aaaa11").id == a.id
    assert store.get("has space").id == "has space"
    assert not store.exists("has")


def test_duplicate_id_and_name_leave_store_unchanged(
    store: LayerStore, roots: tuple[Path, Path]
) -> None:
    store.create(id="aaaa", names=["n1"])
    before = snapshot_files(*roots)
    with pytest.raises(errors.DuplicateID) as e1:
        store.create(id="aaaa")
    assert "that ID is already in use" in str(e1.value) and isinstance(e1.value, FileExistsError)
    with pytest.raises(errors.DuplicateName) as e2:
        store.create(names=["new", "n1"])
    assert "that name is already in use" in str(e2.value)
    with pytest.raises(errors.LayerUnknown, match="parent"):
        store.create(parent="missing")
    for bad in ("", ".", "..", "a/b", "x\0"):
        with pytest.raises(errors.InvalidLayerID):
            store.create(id=bad)
    with pytest.raises(errors.InvalidBigDataName):
        store.create(big_data={"": b"x"})
    with pytest.raises(TypeError):
        store.create(names="single-string")
    with pytest.raises(errors.NotSupported, match="storage-opt"):
        store.create(options={"size": "10G"})
    assert snapshot_files(*roots) == before
    assert [x.id for x in store.layers()] == ["aaaa"]


def test_names_set_add_remove_and_moving(store: LayerStore, roots: tuple[Path, Path]) -> None:
    _a, _ = store.create(id="aaaa", names=["x"])
    _b, _ = store.create(id="bbbb", names=["y"])
    store.add_names("aaaa", ["p", "q", "x"])
    assert store.get("aaaa").names == ("p", "q", "x")  # new names first
    store.set_names("bbbb", ["q", "z"])  # q moves from aaaa to bbbb
    assert store.get("aaaa").names == ("p", "x")
    assert store.get("q").id == "bbbb"
    store.remove_names("aaaa", ["p", "nope"])
    assert store.get("aaaa").names == ("x",)
    assert not store.exists("p")
    store.set_names("aaaa", [])
    assert store.get("aaaa").names == ()
    recs = json.loads(layers_json(roots[0]))
    assert "names" not in recs[0] and recs[1]["names"] == ["q", "z"]
    before = snapshot_files(*roots)
    with pytest.raises(errors.LayerUnknown):
        store.set_names("nope", ["w"])
    assert snapshot_files(*roots) == before


def test_metadata_and_flags(store: LayerStore, roots: tuple[Path, Path]) -> None:
    layer, _ = store.create(flags={"k": [1, {"b": 2, "a": 1}]})
    assert layer.flags["k"][1]["a"] == 1
    store.set_metadata(layer.id, "meta <data>")
    assert store.metadata(layer.id) == "meta <data>"
    store.set_flag(layer.id, "other", True)
    store.clear_flag(layer.id, "k")
    store.clear_flag(layer.id, "never-set")
    assert dict(store.get(layer.id).flags) == {"other": True}
    assert b'"flags":{"other":true}' in layers_json(roots[0])
    assert b"meta \\u003cdata\\u003e" in layers_json(roots[0])
    with pytest.raises(errors.InvalidFlagValue):
        store.set_flag(layer.id, "bad", object())
    with pytest.raises(errors.LayerUnknown):
        store.metadata("nope")
    with pytest.raises(errors.LayerUnknown):
        store.set_flag("nope", "a", 1)


def test_id_maps_at_create_and_inherited(store: LayerStore, roots: tuple[Path, Path]) -> None:
    maps = (IDMap(0, 100000, 65536),)
    base, _ = store.create(uid_map=maps, gid_map=maps)
    child, _ = store.create(parent=base.id)
    assert child.uid_map == maps and child.gid_map == maps
    st = os.stat(roots[0] / "vfs/dir" / child.id)
    assert (st.st_uid, st.st_gid) == (100000, 100000)
    assert store.parent_owners(base.id) == ([], [])
    uids, gids = store.parent_owners(child.id)
    assert uids == [0] and gids == [0]  # root owns G/vfs/dir and above; not mappable


@pytest.mark.parametrize(
    ("key", "name"),
    [
        ("abc.def9", "abc.def9"),
        ("Key-Upper.json", "=S2V5LVVwcGVyLmpzb24="),
        ("ab-c", "=YWItYw=="),
        ("a b", "=YSBi"),
        ("sha256:abc", "=c2hhMjU2OmFiYw=="),
        ("Ab", "=QWI="),
        ("abc-", "abc-"),
        ("A", "A"),
        ("é", "é"),
        ("éa", "=" + base64.b64encode("éa".encode()).decode()),
    ],
)
def test_big_data_file_names(key: str, name: str) -> None:
    assert big_data_file_name(key) == name


def test_big_data(store: LayerStore, roots: tuple[Path, Path], tmp_path: Path) -> None:
    layer, _ = store.create(big_data={"first": b"1"})
    src = tmp_path / "src"
    src.write_bytes(b"x" * 3_000_000)
    with open(src, "rb") as f:
        store.set_big_data(layer.id, "Key-Upper.json", f)
    store.set_big_data(layer.id, "first", b"again")
    assert store.big_data_names(layer.id) == ["first", "Key-Upper.json"]
    with store.big_data(layer.id, "Key-Upper.json") as f:
        assert f.read() == b"x" * 3_000_000
    with store.big_data(layer.id, "first") as f:
        assert f.read() == b"again"
    d = roots[0] / "vfs-layers" / layer.id
    assert sorted(os.listdir(d)) == ["=S2V5LVVwcGVyLmpzb24=", "first"]
    assert oct(os.stat(d / "first").st_mode & 0o777) == "0o600"
    before = snapshot_files(*roots)
    with pytest.raises(FileNotFoundError):
        store.big_data(layer.id, "missing")
    for bad in ("", ".", ".."):
        with pytest.raises(errors.InvalidBigDataName):
            store.set_big_data(layer.id, bad, b"x")
    with pytest.raises(errors.LayerUnknown, match="to write bigdata"):
        store.set_big_data("nope", "k", b"x")
    with pytest.raises(errors.LayerUnknown, match="image not known"):
        store.big_data_names("nope")
    assert snapshot_files(*roots) == before


def test_size_and_digest_lookups(roots: tuple[Path, Path]) -> None:
    g, r = roots
    LayerStore(g, r).close()
    d1, d2, d3 = ("sha256:" + c * 64 for c in "123")
    (g / "vfs-layers/layers.json").write_text(
        json.dumps(
            [
                {"id": "aaaa", "created": "2026-01-01T00:00:00Z"},
                {
                    "id": "bbbb",
                    "created": "2026-01-01T00:00:00Z",
                    "diff-digest": d1,
                    "diff-size": 0,
                    "compressed-diff-digest": d2,
                },
                {
                    "id": "cccc",
                    "created": "2026-01-01T00:00:00Z",
                    "toc-digest": d3,
                    "diff-size": -1,
                    "diff-digest": d1,
                },
            ]
        )
    )
    with LayerStore(g, r) as store:
        assert store.size("aaaa") == -1
        assert store.size("bbbb") == 0
        assert store.size("cccc") == -1
        assert [x.id for x in store.layers_by_uncompressed_digest(d1)] == ["bbbb", "cccc"]
        assert [x.id for x in store.layers_by_compressed_digest(d2)] == ["bbbb"]
        assert [x.id for x in store.layers_by_toc_digest(d3)] == ["cccc"]
        with pytest.raises(errors.LayerUnknown):
            store.layers_by_compressed_digest(d1)
        with pytest.raises(errors.InvalidDigest, match="invalid checksum digest format"):
            store.layers_by_compressed_digest("")
        with pytest.raises(errors.InvalidDigest, match="invalid checksum digest length"):
            store.layers_by_uncompressed_digest("sha256:abc")
        with pytest.raises(errors.InvalidDigest, match="unsupported digest algorithm"):
            store.layers_by_toc_digest("md5:abc")
        with pytest.raises(errors.LayerUnknown):
            store.size("nope")


def test_mount_unmount_counts(store: LayerStore, roots: tuple[Path, Path]) -> None:
    g, r = roots
    _layer, _ = store.create(id="aaaa1111", names=["n"])
    path = store.mount("n")
    assert path == str(g / "vfs/dir/aaaa1111")
    assert store.mount("aaaa1111", MountOptions(options=("ro",))) == path
    assert store.mounted("n") == 2
    mp = json.loads((r / "vfs-layers/mountpoints.json").read_bytes())
    assert mp == [{"id": "aaaa1111", "path": path, "count": 2}]
    assert store.get("n").mount_point == path and store.get("n").mount_count == 2
    assert store.unmount(path) is True  # by mount path
    assert store.mounted("n") == 1
    assert store.unmount("n") is False
    assert (r / "vfs-layers/mountpoints.json").read_bytes() == b"[]"
    with pytest.raises(errors.LayerNotMounted):
        store.unmount("n", conditional=True)
    assert store.unmount("n") is False  # Go prints "unmounted" even then
    store.mount("n")
    store.mount("n")
    assert store.unmount("n", force=True) is False
    assert store.mounted("n") == 0
    before = snapshot_files(*roots)
    with pytest.raises(errors.NotSupported, match="vfs driver does not support mount options"):
        store.mount("n", ["nosuid"])
    for call in (store.mount, store.unmount, store.mounted):
        with pytest.raises(errors.LayerUnknown):
            call("nope")  # type: ignore[operator]
    assert snapshot_files(*roots) == before


def test_delete(store: LayerStore, roots: tuple[Path, Path]) -> None:
    g, r = roots
    base, _ = store.create(names=["base"], big_data={"k": b"v"})
    child, _ = store.create(parent=base.id)
    (g / "vfs-layers" / f"{base.id}.tar-split.gz").write_bytes(b"ts")
    before = snapshot_files(*roots)
    with pytest.raises(errors.LayerHasChildren) as info:
        store.delete("base")
    assert str(info.value) == f"used by layer {child.id}: layer has children"
    with pytest.raises(errors.LayerUnknown, match="identifier is not a layer"):
        store.delete("nope")
    assert snapshot_files(*roots) == before
    store.mount(child.id)
    store.delete(child.id)
    store.delete("base")
    assert store.layers() == []
    assert os.listdir(g / "vfs/dir") == []
    assert sorted(os.listdir(g / "vfs-layers")) == ["layers.json", "layers.lock"]
    assert layers_json(g) == b"[]"
    assert (r / "vfs-layers/mountpoints.json").read_bytes() == b"[]"


def test_wipe_and_garbage_collect(store: LayerStore, roots: tuple[Path, Path]) -> None:
    g, _ = roots
    base, _ = store.create()
    child, _ = store.create(parent=base.id, big_data={"k": b"v"})
    store.mount(child.id)
    os.mkdir(g / "vfs/dir/stray")
    (g / "vfs-layers/stray.tar-split.gz").write_bytes(b"x")
    store.garbage_collect()
    assert sorted(os.listdir(g / "vfs/dir")) == sorted([base.id, child.id])
    assert not (g / "vfs-layers/stray.tar-split.gz").exists()
    os.mkdir(g / "vfs/dir/stray2")
    store.wipe()
    assert store.layers() == []
    assert os.listdir(g / "vfs/dir") == []
    assert layers_json(g) == b"[]"
    store.wipe()  # empty store: fine


def test_template_layer(store: LayerStore, roots: tuple[Path, Path]) -> None:
    g, r = roots
    LayerStore(g, r).close()
    store.create(id="tmpl")
    # Give the template digests and a tar-split file, as an imported layer has.
    rec = json.loads(layers_json(g))
    rec[0].update(
        {"metadata": "m", "diff-digest": "sha256:" + "a" * 64, "diff-size": 3, "uidset": [0]}
    )
    (g / "vfs-layers/layers.json").write_text(json.dumps(rec, separators=(",", ":")))
    (g / "vfs-layers/tmpl.tar-split.gz").write_bytes(b"tar-split bytes")
    (g / "vfs/dir/tmpl/file").write_bytes(b"content")
    copy, _ = store.create(template="tmpl", names=["copy"])
    assert copy.metadata == "m" and copy.uncompressed_size == 3 and copy.uid_set == (0,)
    assert store.size("copy") == 3
    assert (g / f"vfs-layers/{copy.id}.tar-split.gz").read_bytes() == b"tar-split bytes"
    assert (g / f"vfs/dir/{copy.id}/file").read_bytes() == b"content"
    assert [x.id for x in store.layers_by_uncompressed_digest("sha256:" + "a" * 64)] == [
        "tmpl",
        copy.id,
    ]
    with pytest.raises(errors.LayerUnknown, match="template"):
        store.create(template="nope")


def test_volatile_and_transient_locations(tmp_path: Path) -> None:
    g, r = tmp_path / "G", tmp_path / "R"
    with LayerStore(g, r) as store:
        store.create(id="stable")
        store.create(id="vol", volatile=True)
        assert [x.id for x in store.layers()] == ["stable", "vol"]
    assert json.loads(layers_json(g))[0]["id"] == "stable"
    assert json.loads((g / "vfs-layers/volatile-layers.json").read_bytes())[0]["id"] == "vol"
    with LayerStore(g, r) as again:
        assert again.exists("vol")
        again.delete("vol")
    assert (g / "vfs-layers/volatile-layers.json").read_bytes() == b"[]"
    g2, r2 = tmp_path / "G2", tmp_path / "R2"
    with LayerStore(g2, r2, transient=True) as store:
        store.create(id="t", volatile=True)
    assert json.loads((r2 / "vfs-layers/volatile-layers.json").read_bytes())[0]["id"] == "t"
    assert not (g2 / "vfs-layers/volatile-layers.json").exists()


def test_read_only_store(roots: tuple[Path, Path]) -> None:
    g, r = roots
    with LayerStore(g, r) as rw:
        layer, _ = rw.create(names=["n"])
    before = snapshot_files(g, r)
    lock_before = (g / "vfs-layers/layers.lock").read_bytes()
    ro = LayerStore.read_only(g)
    got = ro.get("n")
    assert got.read_only and got.id == layer.id
    ld = f'"{g}/vfs-layers"'
    calls: list[tuple[str, Callable[[], object]]] = [
        ("create new layers", lambda: ro.create()),
        ("delete layers", lambda: ro.delete("n")),
        ("change layer name assignments", lambda: ro.add_names("n", ["x"])),
        ("modify layer metadata", lambda: ro.set_metadata("n", "m")),
        ("set flags on layers", lambda: ro.set_flag("n", "a", 1)),
        ("clear flags on layers", lambda: ro.clear_flag("n", "a")),
        ("save data items associated with layers", lambda: ro.set_big_data("n", "k", b"")),
        ("delete layers", lambda: ro.wipe()),
        ("delete layers", lambda: ro.garbage_collect()),
        ("modify the layer store", lambda: ro.writing().__enter__()),
    ]
    for verb, call in calls:
        message = f"not allowed to {verb} at {ld}"
        with pytest.raises(errors.StoreIsReadOnly) as info:
            call()
        assert str(info.value) == f"{message}: called a write method on a read-only store"
        assert isinstance(info.value, PermissionError)
    with pytest.raises(errors.StoreIsReadOnly, match="not allowed to update mount locations"):
        ro.mount("n")
    with pytest.raises(errors.StoreIsReadOnly, match="not allowed to modify layer mount point"):
        ro.mount("n", ["ro"])
    with pytest.raises(errors.StoreIsReadOnly, match="no mount information"):
        ro.mounted("n")
    assert snapshot_files(g, r) == before
    assert (g / "vfs-layers/layers.lock").read_bytes() == lock_before
    ro.close()


def test_read_only_store_keeps_incomplete_and_rejects_duplicate_names(
    roots: tuple[Path, Path],
) -> None:
    g, r = roots
    LayerStore(g, r).close()
    path = g / "vfs-layers/layers.json"
    path.write_bytes(
        b'[{"id":"aaaa","created":"2026-01-01T00:00:00Z","flags":{"incomplete":true}}]'
    )
    assert LayerStore.read_only(g).get("aaaa").incomplete
    path.write_bytes(
        b'[{"id":"aaaa","names":["n"],"created":"2026-01-01T00:00:00Z"},'
        b'{"id":"bbbb","names":["n"],"created":"2026-01-01T00:00:00Z"}]'
    )
    with pytest.raises(errors.DuplicateLayerNames):
        LayerStore.read_only(g)


def test_duplicate_names_repaired_at_load(roots: tuple[Path, Path]) -> None:
    g, r = roots
    LayerStore(g, r).close()
    path = g / "vfs-layers/layers.json"
    path.write_bytes(
        b'[{"id":"aaaa","names":["n","m"],"created":"2026-01-01T00:00:00Z"},'
        b'{"id":"bbbb","names":["n"],"created":"2026-01-01T00:00:00Z"}]'
    )
    with LayerStore(g, r) as store:
        assert store.get("n").id == "bbbb"
        assert store.get("aaaa").names == ("m",)
    assert path.read_bytes() == (
        b'[{"id":"aaaa","names":["m"],"created":"2026-01-01T00:00:00Z"},'
        b'{"id":"bbbb","names":["n"],"created":"2026-01-01T00:00:00Z"}]'
    )


def test_batches_close_and_misc(store: LayerStore) -> None:
    with store.writing():
        store.create(id="a1")
        with store.writing(), store.reading():
            store.set_metadata("a1", "x")
        assert store.metadata("a1") == "x"
    with store.reading():
        assert store.exists("a1")
        with pytest.raises(RuntimeError, match="reading"):
            store.set_metadata("a1", "y")
    assert store.metadata("a1") == "x"
    layer = store.get("a1")
    with pytest.raises(AttributeError):
        layer.metadata = "changed"  # type: ignore[misc]
    with pytest.raises(errors.NotSupported):
        store.put_additional_layer("x", None, [], object())
    store.close()
    with pytest.raises(errors.StoreClosed):
        store.get("a1")


def test_image_root_split_store(tmp_path: Path) -> None:
    g, r, i = tmp_path / "G", tmp_path / "R", tmp_path / "I"
    with LayerStore(g, r, image_root=i) as store:
        image_layer, _ = store.create(names=["img"])  # not writeable: the image store
        container_layer, _ = store.create(parent="img", writeable=True)
        assert os.path.isdir(i / "vfs/dir" / image_layer.id)
        assert os.path.isdir(g / "vfs/dir" / container_layer.id)
        tokens = [(p / "vfs-layers/layers.lock").read_bytes() for p in (g, i)]
        store.set_metadata("img", "m")
        assert all(
            (p / "vfs-layers/layers.lock").read_bytes() != t
            for p, t in zip((g, i), tokens, strict=True)
        )
    assert [x["id"] for x in json.loads((i / "vfs-layers/layers.json").read_bytes())] == [
        image_layer.id
    ]
    assert [x["id"] for x in json.loads(layers_json(g))] == [container_layer.id]
    with LayerStore(g, r, image_root=i) as again:
        assert again.get(container_layer.id).parent == image_layer.id
        again.delete(container_layer.id)
        again.delete("img")
        assert again.layers() == []
    assert os.listdir(i / "vfs/dir") == [] and os.listdir(g / "vfs/dir") == []


class _FailingReader:
    def read(self, n: int = -1) -> bytes:
        raise OSError(5, "Input/output error")


def test_failed_create_midway_leaves_store_unchanged(
    store: LayerStore, roots: tuple[Path, Path]
) -> None:
    g, _ = roots
    parent, _ = store.create(names=["p"])
    store.mount("p")
    before = snapshot_files(*roots)
    with pytest.raises(OSError, match="copying contents"):
        store.create(names=["new"], big_data={"ok": b"1", "bad": _FailingReader()})  # type: ignore[dict-item]
    assert snapshot_files(*roots) == before
    os.rename(g / "vfs/dir" / parent.id, g / "vfs/dir/moved")
    before = snapshot_files(*roots)
    with pytest.raises(errors.LayerUnknown, match=r"creating read-only layer with ID"):
        store.create(parent="p", names=["new"])
    assert snapshot_files(*roots) == before
    assert store.ids() == [parent.id] and not store.exists("new")
