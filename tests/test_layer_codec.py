"""layers.json codec: Go's exact bytes, both from SPEC examples and from the Go CLI."""

from __future__ import annotations

import json
import os
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from layerstore import Compression, IDMap, Layer, LayerStore, errors
from layerstore.layer import (
    LayerRecord,
    decode_layers,
    encode_layers,
    encode_record,
    format_created,
    parse_created,
)

H1 = "a82f63" + "0" * 54 + "3e9c"
D1 = "sha256:6539" + "1" * 56 + "e6b4"
SPEC_EXAMPLE = (
    f'[{{"id":"{H1}","names":["mylayer","alias2"],"created":"2026-11-27T16:39:35.570170836Z",'
    f'"compressed-diff-digest":"{D1}","compressed-size":20480,"diff-digest":"{D1}",'
    '"diff-size":20480,"uidset":[0],"gidset":[0]}]'
).encode()
SPEC_MAPPED = (
    f'[{{"id":"{H1}","created":"2026-11-27T16:39:35.5Z","uidset":[0,5,999],"gidset":[0,7,999],'
    '"uidmap":[{"container_id":0,"host_id":100000,"size":1000}],'
    '"gidmap":[{"container_id":0,"host_id":200000,"size":1000}]}]'
).encode()


def reencode(data: bytes) -> bytes:
    """Encode every record from scratch (no re-use of the source text)."""
    objs, _ = decode_layers(data, "layers.json")
    return ("[" + ",".join(encode_record(o) for o in objs) + "]").encode()


def roundtrip_through_records(data: bytes) -> bytes:
    objs, source = decode_layers(data, "layers.json")
    recs = [LayerRecord(o, 1, source, i) for i, o in enumerate(objs)]
    return encode_layers(recs, "layers.json")


def go_cli(graph: Path, run: Path, *args: str) -> str:
    proc = subprocess.run(
        ["containers-storage", "--storage-driver", "vfs", "-g", str(graph), "-R", str(run), *args],
        capture_output=True,
        check=True,
    )
    return proc.stdout.decode("utf-8", "surrogateescape")


@pytest.mark.parametrize("data", [SPEC_EXAMPLE, SPEC_MAPPED, b"[]"])
def test_spec_examples_reencode_byte_identically(data: bytes) -> None:
    assert reencode(data) == data
    assert roundtrip_through_records(data) == data


def test_records_the_go_cli_wrote_reencode_byte_identically(tmp_path: Path) -> None:
    g, r = tmp_path / "G", tmp_path / "R"
    go_cli(g, r, "create-layer", "-n", "base", "-n", "alias")
    base = json.loads((g / "vfs-layers/layers.json").read_bytes())[0]["id"]
    go_cli(
        g, r, "create-layer", "--uidmap", "0:100000:1000", "--gidmap", "0:200000:1000",
        "-l", "system_u:object_r:container_file_t:s0", base,
    )  # fmt: skip
    go_cli(g, r, "set-metadata", "-m", 'a<b>&c\n\t"q" \\ \b\f\x01\x7f\u2028é', base)
    src = tmp_path / "item"
    src.write_bytes(b"data")
    go_cli(g, r, "set-layer-data", "-f", str(src), base, "Key-Upper.json")
    go_cli(g, r, "set-layer-data", "-f", str(src), base, "plain")
    go_cli(g, r, "layers")  # a reader: rewrites nothing
    data = (g / "vfs-layers/layers.json").read_bytes()
    assert data.count(b'"id"') == 2
    assert b"\\u003c" in data and b"\\u0008" in data and b"\\u2028" in data
    assert reencode(data) == data
    assert roundtrip_through_records(data) == data
    # Our store reads them and, saving after a change elsewhere, keeps their bytes.
    with LayerStore(g, r) as store:
        layer = store.get("base")
        assert layer.metadata.startswith("a<b>&c")
        assert layer.big_data_names == ("Key-Upper.json", "plain")
        child = next(x for x in store.layers() if x.parent == base)
        assert child.uid_map == (IDMap(0, 100000, 1000),)
        assert child.mount_label == "system_u:object_r:container_file_t:s0"
        extra, _ = store.create()
        store.delete(extra.id)
    assert (g / "vfs-layers/layers.json").read_bytes() == data


def test_go_escapes_and_invalid_utf8(tmp_path: Path) -> None:
    obj = {
        "id": "x",
        "metadata": "a<b>&\b\f\x01\x7f\u2028\u2029é\\b\udcff",
        "created": "2026-11-27T16:39:35.100Z",
    }
    text = encode_record(obj)
    assert text == (
        '{"id":"x","metadata":"a\\u003cb\\u003e\\u0026\\u0008\\u000c\\u0001\x7f'
        '\\u2028\\u2029é\\\\b\udcff","created":"2026-11-27T16:39:35.1Z"}'
    )
    # A lone surrogate (invalid UTF-8 that came in through surrogateescape) is written
    # as Go writes invalid UTF-8: the escape \ufffd.
    recs = [LayerRecord(obj, 1)]
    assert encode_layers(recs, "f").endswith(b'\\\\b\\ufffd","created":"2026-11-27T16:39:35.1Z"}]')


def test_omitempty_rules_and_key_order() -> None:
    obj = {
        "big-data-names": [],
        "diff-size": -1,
        "compressed-size": 0,
        "compression": 0,
        "names": [],
        "flags": {},
        "uidmap": [],
        "metadata": "",
        "parent": "",
        "id": "",
    }
    # created is never omitted (zero time), id is always written, -1 is written.
    assert encode_record(obj) == '{"id":"","created":"0001-01-01T00:00:00Z","diff-size":-1}'
    full = {
        "big-data-names": ["k"],
        "gidmap": [{"size": 1, "host_id": 2, "container_id": 0}],
        "uidmap": [{"container_id": 0, "host_id": 1, "size": 1}],
        "flags": {"b": 1, "a": {"z": 1, "y": [1.0, 2.5]}},
        "gidset": [0],
        "uidset": [0],
        "compression": 2,
        "diff-size": 5,
        "toc-digest": "sha256:t",
        "diff-digest": "sha256:d",
        "compressed-size": 7,
        "compressed-diff-digest": "sha256:c",
        "created": "2026-01-02T03:04:05.000000010Z",
        "mountlabel": "l",
        "metadata": "m",
        "parent": "p",
        "names": ["n"],
        "id": "i",
    }
    assert encode_record(full) == (
        '{"id":"i","names":["n"],"parent":"p","metadata":"m","mountlabel":"l",'
        '"created":"2026-01-02T03:04:05.00000001Z","compressed-diff-digest":"sha256:c",'
        '"compressed-size":7,"diff-digest":"sha256:d","toc-digest":"sha256:t","diff-size":5,'
        '"compression":2,"uidset":[0],"gidset":[0],"flags":{"a":{"y":[1,2.5],"z":1},"b":1},'
        '"uidmap":[{"container_id":0,"host_id":1,"size":1}],'
        '"gidmap":[{"container_id":0,"host_id":2,"size":1}],"big-data-names":["k"]}'
    )


def test_unknown_keys_survive_our_save(tmp_path: Path) -> None:
    g, r = tmp_path / "G", tmp_path / "R"
    LayerStore(g, r).close()
    path = g / "vfs-layers/layers.json"
    path.write_bytes(
        b'[{"id":"aaaa1111","created":"2026-11-27T16:39:35Z","future-field":{"z":[1,"x"]},'
        b'"other":"keep"},{"id":"bbbb2222","created":"2026-11-27T16:39:36Z"}]'
    )
    with LayerStore(g, r) as store:
        store.set_metadata("aaaa1111", "changed")
        store.set_names("bbbb2222", ["b"])
    assert path.read_bytes() == (
        b'[{"id":"aaaa1111","metadata":"changed","created":"2026-11-27T16:39:35Z",'
        b'"future-field":{"z":[1,"x"]},"other":"keep"},'
        b'{"id":"bbbb2222","names":["b"],"created":"2026-11-27T16:39:36Z"}]'
    )


def test_non_canonical_input_is_rewritten_as_go_would(tmp_path: Path) -> None:
    g, r = tmp_path / "G", tmp_path / "R"
    LayerStore(g, r).close()
    path = g / "vfs-layers/layers.json"
    path.write_bytes(
        b'[\n  {"created": "2026-11-27T18:39:35.500+02:00", "names": [], "id": "aaaa1111",'
        b' "flags": {"b": 1e2, "a": true}}\n]\n'
    )
    with LayerStore(g, r) as store:
        layer = store.get("aaaa1111")
        assert layer.created == datetime(2026, 11, 27, 16, 39, 35, 500000, tzinfo=UTC)
        assert dict(layer.flags) == {"a": True, "b": 100.0}
        store.create(id="cccc3333")
    assert path.read_bytes().startswith(
        b'[{"id":"aaaa1111","created":"2026-11-27T18:39:35.5+02:00","flags":{"a":true,"b":100}},'
        b'{"id":"cccc3333","created":"'
    )


def test_created_formatting() -> None:
    ns, dt = parse_created("2026-11-27T16:40:22.14335919Z")
    assert format_created(ns) == "2026-11-27T16:40:22.14335919Z"
    assert dt == datetime(2026, 11, 27, 16, 40, 22, 143359, tzinfo=UTC)
    assert format_created(parse_created("0001-01-01T00:00:00Z")[0]) == "0001-01-01T00:00:00Z"
    assert format_created(0) == "1970-01-01T00:00:00Z"
    assert parse_created("2026-11-27T17:40:22+01:00")[0] == parse_created("2026-11-27T16:40:22Z")[0]
    with pytest.raises(ValueError, match="RFC3339"):
        parse_created("yesterday")


@pytest.mark.parametrize(
    "content",
    [b"{not json", b'{"id":"x"}', b"[1,2]", b'[{"id":5}]', b'[{"id":"x","names":"a"}]'],
)
def test_corrupt_layers_json_names_the_file_and_writes_nothing(
    tmp_path: Path, content: bytes
) -> None:
    g, r = tmp_path / "G", tmp_path / "R"
    LayerStore(g, r).close()
    path = g / "vfs-layers/layers.json"
    path.write_bytes(content)
    lock = g / "vfs-layers/layers.lock"
    before = (lock.read_bytes(), sorted(os.listdir(g / "vfs-layers")))
    with pytest.raises(errors.CorruptStore) as info:
        LayerStore(g, r)
    assert str(path) in str(info.value)
    assert isinstance(info.value, ValueError)
    assert path.read_bytes() == content
    assert (lock.read_bytes(), sorted(os.listdir(g / "vfs-layers"))) == before


def test_empty_or_missing_file_means_no_layers(tmp_path: Path) -> None:
    g, r = tmp_path / "G", tmp_path / "R"
    LayerStore(g, r).close()
    (g / "vfs-layers/layers.json").write_bytes(b"")
    with LayerStore(g, r) as store:
        assert store.layers() == []


def test_layer_snapshot_fields() -> None:
    obj = json.loads(SPEC_MAPPED)[0]
    obj["compression"] = 4
    obj["diff-size"] = -1
    obj["flags"] = {"nested": {"l": [1, 2]}}
    snap = LayerRecord(obj, 1).snapshot(False)
    assert isinstance(snap, Layer)
    assert snap.compression is Compression.ZSTD and snap.compression.extension == "tar.zst"
    assert snap.uncompressed_size == -1
    assert snap.uid_set == (0, 5, 999)
    assert snap.created_ns % 1_000_000_000 == 500_000_000
    assert snap.flags["nested"]["l"] == (1, 2)
    with pytest.raises(TypeError):
        snap.flags["nested"]["x"] = 1  # type: ignore[index]
    with pytest.raises(AttributeError):
        snap.id = "other"  # type: ignore[misc]
    assert snap.to_json()["uidmap"] == [{"container_id": 0, "host_id": 100000, "size": 1000}]


_text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12)
_records = st.fixed_dictionaries(
    {"id": st.text(alphabet="0123456789abcdef", min_size=1, max_size=64)},
    optional={
        "names": st.lists(_text, max_size=3),
        "parent": _text,
        "metadata": _text,
        "mountlabel": _text,
        "created": st.integers(-(10**18), 10**19).map(format_created),
        "compressed-size": st.integers(-1, 2**40),
        "diff-size": st.integers(-1, 2**40),
        "compression": st.integers(0, 4),
        "uidset": st.lists(st.integers(0, 2**32 - 1), max_size=3),
        "flags": st.dictionaries(_text, st.one_of(st.booleans(), _text, st.integers(-9, 9))),
        "big-data-names": st.lists(_text, max_size=3),
    },
)


@settings(max_examples=200, deadline=None)
@given(st.lists(_records, max_size=4))
def test_encode_decode_roundtrip_property(objs: list[dict[str, object]]) -> None:
    data = encode_layers([LayerRecord(dict(o), 1) for o in objs], "f")
    assert b"<" not in data and b">" not in data and b"&" not in data
    assert reencode(data) == data  # what we write is a fixed point of our encoder
    assert roundtrip_through_records(data) == data  # and of the source re-use path
    decoded, _ = decode_layers(data, "f")
    for obj, back in zip(objs, decoded, strict=True):
        for key, value in obj.items():
            if value not in ("", 0, [], {}) or key == "id":
                assert back[key] == value


def test_bad_field_type_is_corrupt_store_and_nothing_written(tmp_path: Path) -> None:
    g, r = tmp_path / "G", tmp_path / "R"
    LayerStore(g, r).close()
    path = g / "vfs-layers/layers.json"
    content = b'[{"id":"aaaa","created":"2026-01-01T00:00:00Z","compressed-size":"12"}]'
    path.write_bytes(content)
    with LayerStore(g, r) as store:
        with pytest.raises(errors.CorruptStore, match="compressed-size"):
            store.set_metadata("aaaa", "x")
        with pytest.raises(errors.CorruptStore, match="aaaa"):
            store.create(id="bbbb")
        with pytest.raises(errors.CorruptStore):
            store.layers()
    assert path.read_bytes() == content


def test_corrupt_mountpoints_json_names_the_file(tmp_path: Path) -> None:
    g, r = tmp_path / "G", tmp_path / "R"
    LayerStore(g, r).close()
    path = r / "vfs-layers/mountpoints.json"
    path.write_bytes(b'[{"id":"x","path":5}]')
    with pytest.raises(errors.CorruptStore) as info:
        LayerStore(g, r)
    assert str(path) in str(info.value)
    assert path.read_bytes() == b'[{"id":"x","path":5}]'


def test_compact_but_non_canonical_records_are_normalised(tmp_path: Path) -> None:
    g, r = tmp_path / "G", tmp_path / "R"
    LayerStore(g, r).close()
    path = g / "vfs-layers/layers.json"
    path.write_bytes(
        b'[{"id":"aaaa","created":"2026-01-01T00:00:00.500+00:00"},'
        b'{"id":"bbbb","names":[],"created":"2026-01-01T00:00:00Z"},'
        b'{"created":"2026-01-01T00:00:00Z","id":"cccc"},'
        b'{"id":"dddd","created":"2026-01-01T00:00:00Z","flags":{"b":1,"a":2}}]'
    )
    with LayerStore(g, r) as store:
        store.create(id="eeee")
    assert path.read_bytes().startswith(
        b'[{"id":"aaaa","created":"2026-01-01T00:00:00.5Z"},'
        b'{"id":"bbbb","created":"2026-01-01T00:00:00Z"},'
        b'{"id":"cccc","created":"2026-01-01T00:00:00Z"},'
        b'{"id":"dddd","created":"2026-01-01T00:00:00Z","flags":{"a":2,"b":1}},'
        b'{"id":"eeee","created":"'
    )
