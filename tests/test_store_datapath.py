"""The data path at the store level: ``create(diff=)``, ``apply_diff``, ``diff``,
``diff_size`` and ``changes`` on real tarballs, both drivers.

- the record after an import: digests, sizes, compression, uid/gid sets, digest lookups;
- trusted ``original_digest`` / ``original_size`` / ``uncompressed_digest`` (sha256 only);
- an empty (0-byte) diff;
- a bad tarball raises InvalidArchive and leaves the store exactly as it was;
- a file changed after the import makes ``diff`` fail instead of lying;
- ``diff`` from a layer other than the parent, and from an unknown one;
- output compression: the recorded one, overrides, bzip2/xz refused;
- every input kind: bytes, bytearray, memoryview, paths, open files, pipes, BytesIO.
"""

from __future__ import annotations

import bz2
import contextlib
import gzip
import hashlib
import io
import json
import lzma
import os
import stat
import subprocess
import tarfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from layerstore import Compression, LayerStore, errors
from layerstore.drivers.overlay import mount_points_under

EMPTY_SHA256 = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
DRIVERS = ["vfs", "overlay"]

# ---------------------------------------------------------------------------------------
# helpers


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def make_tar(entries: list[tuple[str, str, bytes, int]]) -> bytes:
    """(name, kind, data, uid): kind "f" file, "d" dir, "l" symlink to data, "w" whiteout."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for n, (name, kind, data, uid) in enumerate(entries):
            info = tarfile.TarInfo(name)
            info.uid, info.gid = uid, uid + 1
            info.mtime = 1_700_000_000 + n
            if kind == "d":
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                t.addfile(info)
            elif kind == "l":
                info.type, info.linkname = tarfile.SYMTYPE, data.decode()
                t.addfile(info)
            else:
                info.size, info.mode = len(data), 0o644
                t.addfile(info, io.BytesIO(data))
    return buf.getvalue()


BASE = make_tar(
    [
        ("etc", "d", b"", 0),
        ("etc/hostname", "f", b"box\n", 0),
        ("etc/passwd", "f", b"root:x:0:0::/root:/bin/sh\n" * 40, 0),
        ("home", "d", b"", 0),
        ("home/u", "d", b"", 1000),
        ("home/u/notes", "f", bytes(range(256)) * 9, 1000),
        ("home/u/gone", "f", b"soon deleted", 1000),
        ("srv", "d", b"", 33),
        ("srv/old", "f", b"old", 33),
        ("link", "l", b"etc/hostname", 0),
    ]
)
MIDDLE = make_tar(
    [
        ("etc", "d", b"", 0),
        ("etc/hostname", "f", b"changed\n", 0),
        ("home", "d", b"", 0),
        ("home/u", "d", b"", 1000),
        ("home/u/.wh.gone", "f", b"", 0),
        ("srv", "d", b"", 33),
        ("srv/.wh..wh..opq", "f", b"", 0),
        ("srv/new", "f", b"new", 33),
        ("var", "d", b"", 0),
        ("var/log", "f", b"log line\n", 4),
    ]
)
TOP = make_tar(
    [
        ("etc", "d", b"", 0),
        ("etc/motd", "f", b"hello\n", 0),
        (".wh.link", "f", b"", 0),
    ]
)


OTHER = make_tar([("opt", "d", b"", 0), ("opt/tool", "f", b"#!/bin/sh\n", 7)])


def file_bytes(data: bytes) -> int:
    """The sum of the regular files' sizes in a tarball (vfs apply's return value)."""
    with tarfile.open(fileobj=io.BytesIO(data)) as t:
        return sum(m.size for m in t if m.isfile())


def compress(data: bytes, how: str) -> bytes:
    if how == "gzip":
        return gzip.compress(data, mtime=0)
    if how == "bzip2":
        return bz2.compress(data)
    if how == "xz":
        return lzma.compress(data)
    if how == "zstd":
        return run_bytes(["zstd", "-q", "-c"], data)
    return data


def run_bytes(argv: list[str], data: bytes) -> bytes:
    return subprocess.run(argv, input=data, capture_output=True, check=True).stdout


def read_diff(store: LayerStore, layer: str, **kwargs: Any) -> bytes:
    with store.diff(layer, **kwargs) as stream:
        return stream.read()


def records(store: LayerStore) -> dict[str, dict[str, Any]]:
    path = Path(store.graph_root) / f"{store.driver.name}-layers" / "layers.json"
    return {r["id"]: r for r in json.loads(path.read_text() or "[]")}


def store_state(*roots: str | Path | None) -> dict[str, tuple[Any, ...]]:
    """Every path under the roots: type, mode, owners, and the contents of regular files
    (lock files by name only: their last-writer token changes on every save). The
    drivers' empty ``staging`` directory, made on first use and kept, is left out."""
    out: dict[str, tuple[Any, ...]] = {}
    for root in roots:
        assert root is not None
        for dirpath, dirnames, filenames in os.walk(root):
            for name in dirnames + filenames:
                p = os.path.join(dirpath, name)
                if name == "staging" and os.path.isdir(p) and not os.listdir(p):
                    continue
                st = os.lstat(p)
                body: Any = None
                if stat.S_ISREG(st.st_mode) and not name.endswith(".lock"):
                    body = Path(p).read_bytes()
                elif stat.S_ISLNK(st.st_mode):
                    body = os.readlink(p)
                out[p] = (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), st.st_uid, body)
    return out


def tree(root: str | Path) -> dict[str, tuple[Any, ...]]:
    """A layer's visible tree: type, mode, owners, mtime (s) and payload per path."""
    out: dict[str, tuple[Any, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            body: Any = None
            if stat.S_ISREG(st.st_mode):
                body = Path(p).read_bytes()
            elif stat.S_ISLNK(st.st_mode):
                body = os.readlink(p)
            out[os.path.relpath(p, root)] = (
                stat.S_IFMT(st.st_mode),
                stat.S_IMODE(st.st_mode),
                st.st_uid,
                st.st_gid,
                int(st.st_mtime),
                body,
            )
    return out


@pytest.fixture(params=DRIVERS)
def store(request: pytest.FixtureRequest, root: Path) -> Iterator[LayerStore]:
    with LayerStore(root / "store" / "g", root / "store" / "r", driver=request.param) as s:
        yield s


@pytest.fixture
def vfs_store(root: Path) -> Iterator[LayerStore]:
    with LayerStore(root / "store" / "g", root / "store" / "r", driver="vfs") as s:
        yield s


# ---------------------------------------------------------------------------------------
# the record


@pytest.mark.parametrize("how", ["none", "gzip", "bzip2", "xz", "zstd"])
def test_apply_diff_records_digests_sizes_compression_and_owners(
    store: LayerStore, how: str
) -> None:
    blob = compress(BASE, how)
    layer, _ = store.create(names=["base"])
    assert store.size(layer.id) == -1
    with pytest.raises(errors.LayerUnknown):
        store.layers_by_uncompressed_digest(sha256(BASE))
    size = store.apply_diff("base", blob)
    if store.driver.whiteout_format == "vfs":
        assert size == file_bytes(BASE)
    got = store.get(layer.id)
    assert got.compressed_digest == sha256(blob)
    assert got.compressed_size == len(blob)
    assert got.uncompressed_digest == sha256(BASE)
    assert got.uncompressed_size == len(BASE) == store.size(layer.id)
    assert got.compression == {"none": 0, "bzip2": 1, "gzip": 2, "xz": 3, "zstd": 4}[how]
    assert got.uid_set == (0, 33, 1000) and got.gid_set == (1, 34, 1001)
    assert [x.id for x in store.layers_by_compressed_digest(sha256(blob))] == [layer.id]
    assert [x.id for x in store.layers_by_uncompressed_digest(sha256(BASE))] == [layer.id]
    raw = records(store)[layer.id]
    assert ("compression" in raw) == (how != "none")  # omitempty, as Go writes it
    assert not raw.get("flags"), "the incomplete flag is gone"
    assert (
        Path(store.graph_root) / f"{store.driver.name}-layers" / f"{layer.id}.tar-split.gz"
    ).is_file()


def test_a_second_apply_diff_replaces_the_digests_and_the_lookups(store: LayerStore) -> None:
    layer, _ = store.create()
    store.apply_diff(layer.id, BASE)
    store.apply_diff(layer.id, compress(OTHER, "gzip"))
    got = store.get(layer.id)
    assert (got.uncompressed_digest, got.compression) == (sha256(OTHER), Compression.GZIP)
    assert (got.uid_set, got.gid_set) == ((0, 7), (1, 8))
    with pytest.raises(errors.LayerUnknown):
        store.layers_by_uncompressed_digest(sha256(BASE))
    assert [x.id for x in store.layers_by_uncompressed_digest(sha256(OTHER))] == [layer.id]
    assert read_diff(store, layer.id, compression=Compression.NONE) == OTHER
    # the files of both are there (as in Go: a diff adds to the layer)
    root = Path(store.driver.apply_root(layer.id))
    assert (root / "opt/tool").is_file() and (root / "etc/hostname").is_file()


def test_trusted_sha256_digests_and_size_are_recorded_as_given(store: LayerStore) -> None:
    blob = compress(BASE, "gzip")
    fake_c, fake_u = "sha256:" + "a" * 64, "sha256:" + "b" * 64
    layer, _ = store.create(
        diff=blob, original_digest=fake_c, original_size=12345, uncompressed_digest=fake_u
    )
    assert (layer.compressed_digest, layer.compressed_size) == (fake_c, 12345)
    assert layer.uncompressed_digest == fake_u
    assert layer.uncompressed_size == len(BASE)  # always counted
    assert [x.id for x in store.layers_by_compressed_digest(fake_c)] == [layer.id]
    assert [x.id for x in store.layers_by_uncompressed_digest(fake_u)] == [layer.id]
    # the data is still the data: diff gives the real tarball back
    assert read_diff(store, layer.id, compression=Compression.NONE) == BASE


def test_digests_of_other_algorithms_are_recomputed(store: LayerStore) -> None:
    blob = compress(BASE, "zstd")
    layer, _ = store.create(
        diff=blob,
        original_digest="sha512:" + "c" * 128,
        original_size=7,
        uncompressed_digest="sha512:" + "d" * 128,
    )
    assert layer.compressed_digest == sha256(blob)
    assert layer.compressed_size == len(blob)  # no trusted sha256 digest: counted
    assert layer.uncompressed_digest == sha256(BASE)


def test_original_size_alone_is_not_trusted(store: LayerStore) -> None:
    layer, _ = store.create(diff=BASE, original_size=1)
    assert (layer.compressed_digest, layer.compressed_size) == (sha256(BASE), len(BASE))


def test_a_malformed_trusted_digest_is_refused_before_anything_happens(
    store: LayerStore,
) -> None:
    before = store_state(store.graph_root)
    with pytest.raises(errors.InvalidDigest):
        store.create(diff=BASE, original_digest="sha256:nothex")
    with pytest.raises(errors.InvalidDigest):
        store.create(diff=BASE, uncompressed_digest="sha256:" + "e" * 63)
    assert store.layers() == []
    assert store_state(store.graph_root) == before


def test_an_empty_diff_gives_the_empty_digest_and_no_sizes(store: LayerStore) -> None:
    layer, size = store.create(diff=b"")
    assert size == 0
    raw = records(store)[layer.id]
    assert raw["compressed-diff-digest"] == raw["diff-digest"] == EMPTY_SHA256
    for key in ("compressed-size", "diff-size", "compression", "uidset", "gidset"):
        assert key not in raw, key
    assert read_diff(store, layer.id) == b""
    assert os.listdir(store.driver.apply_root(layer.id)) == []


# ---------------------------------------------------------------------------------------
# bad tarballs change nothing


def _bad_inputs() -> dict[str, bytes]:
    gz = compress(BASE, "gzip")
    zst = compress(BASE, "zstd")
    return {
        "junk": bytes(range(256)) * 20,
        "tiny-junk": b"xyz",
        "truncated-tar": BASE[:2500],
        "bad-header-checksum": BASE[:148] + b"0000001\0" + BASE[156:],
        "truncated-gzip": gz[: len(gz) // 2],
        "gzip-bad-crc": gz[:-8] + bytes(4) + gz[-4:],
        "truncated-zstd": zst[: len(zst) // 2],
        "bzip2-junk": b"BZh9" + bytes(range(256)) * 4,
        "xz-junk": b"\xfd7zXZ\x00" + bytes(range(256)) * 4,
    }


BAD = _bad_inputs()


@pytest.mark.parametrize("name", list(BAD))
def test_a_bad_tarball_on_create_leaves_the_store_as_it_was(store: LayerStore, name: str) -> None:
    base, _ = store.create(diff=BASE, names=["base"])
    before = store_state(store.graph_root, store.run_root)
    with pytest.raises(errors.InvalidArchive):
        store.create(parent="base", names=["child"], diff=BAD[name])
    assert [x.id for x in store.layers()] == [base.id]
    assert not store.exists("child")
    assert store_state(store.graph_root, store.run_root) == before
    # and the store still works
    child, _ = store.create(parent="base", names=["child"], diff=MIDDLE)
    assert read_diff(store, child.id) == MIDDLE


@pytest.mark.parametrize("name", ["junk", "truncated-tar", "gzip-bad-crc", "truncated-zstd"])
def test_a_bad_tarball_on_apply_diff_leaves_the_record_and_tar_split(
    store: LayerStore, name: str
) -> None:
    layer, _ = store.create(diff=compress(BASE, "gzip"))
    layers_dir = Path(store.graph_root) / f"{store.driver.name}-layers"
    json_before = (layers_dir / "layers.json").read_bytes()
    ts_before = (layers_dir / f"{layer.id}.tar-split.gz").read_bytes()
    snap = store.get(layer.id)
    with pytest.raises(errors.InvalidArchive):
        store.apply_diff(layer.id, BAD[name])
    assert (layers_dir / "layers.json").read_bytes() == json_before
    assert (layers_dir / f"{layer.id}.tar-split.gz").read_bytes() == ts_before
    assert store.get(layer.id) == snap
    assert [p for p in os.listdir(layers_dir) if p not in ("layers.json", "layers.lock")] == [
        f"{layer.id}.tar-split.gz"
    ], "no temporary file left behind"


def test_a_failed_create_from_a_pipe_leaves_nothing(store: LayerStore) -> None:
    before = store_state(store.graph_root, store.run_root)
    with subprocess.Popen(
        ["head", "-c", "3000"], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    ) as proc:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(BASE)
        proc.stdin.close()
        with pytest.raises(errors.InvalidArchive):
            store.create(diff=proc.stdout)
    assert store.layers() == []
    assert store_state(store.graph_root, store.run_root) == before


# ---------------------------------------------------------------------------------------
# diff reads what was recorded, or fails


def test_a_changed_file_makes_diff_fail_not_lie(store: LayerStore) -> None:
    layer, _ = store.create(diff=BASE)
    notes = Path(store.driver.apply_root(layer.id)) / "home/u/notes"
    notes.write_bytes(b"X" + notes.read_bytes()[1:])  # same size, other bytes
    with pytest.raises(errors.ChecksumMismatch, match="home/u/notes"), store.diff(layer.id) as s:
        s.read()
    notes.write_bytes(b"short")
    with pytest.raises(errors.InvalidArchive, match="home/u/notes"), store.diff(layer.id) as s:
        s.read()


def test_a_missing_file_makes_diff_fail(store: LayerStore) -> None:
    layer, _ = store.create(diff=BASE)
    (Path(store.driver.apply_root(layer.id)) / "etc/passwd").unlink()
    with pytest.raises(OSError, match="etc/passwd"), store.diff(layer.id) as s:
        s.read()


def test_diff_reads_in_small_pieces_and_may_stop_early(store: LayerStore) -> None:
    layer, _ = store.create(diff=compress(BASE, "gzip"))
    with store.diff(layer.id, compression=Compression.NONE) as s:
        pieces = iter(lambda: s.read(100), b"")
        assert b"".join(pieces) == BASE
    with store.diff(layer.id, compression=Compression.NONE) as s:
        assert s.read(512) == BASE[:512]  # closing early is not an error


def test_diff_from_an_unknown_layer_falls_back_to_the_parent(store: LayerStore) -> None:
    base, _ = store.create(diff=BASE)
    child, _ = store.create(parent=base.id, diff=MIDDLE)
    assert read_diff(store, child.id, from_="no-such-layer") == MIDDLE
    assert store.changes(child.id, from_="no-such-layer") == store.changes(child.id)
    assert store.diff_size(child.id, from_="no-such-layer") == store.diff_size(child.id)
    assert read_diff(store, base.id, from_="no-such-layer") == BASE


def test_diff_from_a_non_parent_layer_is_the_difference_of_the_trees(
    store: LayerStore,
) -> None:
    base, _ = store.create(diff=BASE)
    middle, _ = store.create(parent=base.id, diff=MIDDLE)
    top, _ = store.create(parent=middle.id, diff=TOP)
    data = read_diff(store, top.id, from_=base.id)
    with tarfile.open(fileobj=io.BytesIO(data)) as t:
        names = {m.name.rstrip("/") for m in t}
    listed = store.changes(top.id, from_=base.id)
    changed = {c.path.lstrip("/") for c in listed}
    deleted = {c.path.lstrip("/") for c in listed if c.kind == 2}
    assert "home/u/.wh.gone" in names and "srv/.wh.old" in names and ".wh.link" in names
    assert names == (changed - deleted) | {
        os.path.join(os.path.dirname(p), ".wh." + os.path.basename(p)) for p in deleted
    }
    assert store.diff_size(top.id, from_=base.id) == file_bytes(data)
    # comparing mounts nothing that stays mounted (overlay compares merged views)
    assert [p for p in mount_points_under(store.graph_root) if p.endswith("merged")] == []
    assert store.mounted(top.id) == store.mounted(base.id) == 0
    # applied on top of the base, it gives the top layer's tree
    again, _ = store.create(parent=base.id, diff=data)
    try:
        assert tree(store.mount(again.id)) == tree(store.mount(top.id))
    finally:
        store.unmount(again.id)
        store.unmount(top.id)


# ---------------------------------------------------------------------------------------
# output compression


def test_diff_defaults_to_the_recorded_compression(store: LayerStore) -> None:
    gz, _ = store.create(diff=compress(BASE, "gzip"))
    out = read_diff(store, gz.id)
    assert out[:3] == b"\x1f\x8b\x08"
    d = zlib.decompressobj(wbits=31)
    assert d.decompress(out) == BASE and d.eof and d.unused_data == b"", "one gzip stream"
    zs, _ = store.create(diff=compress(BASE, "zstd"))
    out = read_diff(store, zs.id)
    assert out[:4] == b"\x28\xb5\x2f\xfd" and run_bytes(["zstd", "-d", "-c"], out) == BASE
    plain, _ = store.create(diff=BASE)
    assert read_diff(store, plain.id) == BASE


def test_diff_compression_overrides(store: LayerStore) -> None:
    gz, _ = store.create(diff=compress(BASE, "gzip"))
    plain, _ = store.create(diff=BASE)
    assert read_diff(store, gz.id, compression=Compression.NONE) == BASE
    assert read_diff(store, gz.id, compression=0) == BASE
    out = read_diff(store, plain.id, compression=Compression.ZSTD)
    assert out[:4] == b"\x28\xb5\x2f\xfd" and run_bytes(["zstd", "-d", "-c"], out) == BASE
    out = read_diff(store, plain.id, compression=Compression.GZIP)
    assert gzip.decompress(out) == BASE
    big = make_tar([(f"f{n}", "f", os.urandom(300_000), 0) for n in range(8)])
    layer, _ = store.create(diff=big)
    out = read_diff(store, layer.id, compression=Compression.GZIP)
    d = zlib.decompressobj(wbits=31)
    assert d.decompress(out) == big and d.eof and d.unused_data == b"", "one gzip stream"
    assert subprocess.run(["gzip", "-t"], input=out).returncode == 0


@pytest.mark.parametrize(("how", "ext"), [("bzip2", "tar.bz2"), ("xz", "tar.xz")])
def test_bzip2_and_xz_output_is_not_supported(store: LayerStore, how: str, ext: str) -> None:
    plain, _ = store.create(diff=BASE)
    with pytest.raises(errors.NotSupported, match=f"unsupported compression format {ext}"):
        store.diff(plain.id, compression=Compression[how.upper()])
    layer, _ = store.create(diff=compress(BASE, how))
    with pytest.raises(errors.NotSupported, match=f"unsupported compression format {ext}"):
        store.diff(layer.id)
    assert read_diff(store, layer.id, compression=Compression.NONE) == BASE


# ---------------------------------------------------------------------------------------
# inputs


def _inputs(tmp: Path, blob: bytes, stack: contextlib.ExitStack) -> dict[str, Callable[[], Any]]:
    """Makers of each kind of input; whatever they open is closed by ``stack``."""
    path = tmp / "layer.tar.gz"
    path.write_bytes(blob)
    prefixed = tmp / "prefixed"
    prefixed.write_bytes(b"PREFIX" + blob)

    def opened(*args: Any, **kwargs: Any) -> Any:
        return stack.enter_context(open(*args, **kwargs))

    def file_after_prefix() -> Any:
        f = opened(prefixed, "rb")
        assert f.read(6) == b"PREFIX"  # and read-ahead fills the buffer past it
        return f

    def process(argv: list[str], stdin_data: bytes | None = None) -> Any:
        proc = stack.enter_context(
            subprocess.Popen(
                argv, stdin=subprocess.PIPE if stdin_data else None, stdout=subprocess.PIPE
            )
        )
        if stdin_data is not None:
            assert proc.stdin is not None
            proc.stdin.write(stdin_data)
            proc.stdin.close()
        return proc.stdout

    return {
        "bytes": lambda: blob,
        "bytearray": lambda: bytearray(blob),
        "memoryview": lambda: memoryview(blob),
        "str-path": lambda: str(path),
        "pathlib-path": lambda: path,
        "open-file": lambda: opened(path, "rb"),
        "unbuffered-file": lambda: opened(path, "rb", buffering=0),
        "file-after-prefix": file_after_prefix,
        "pipe": lambda: process(["cat", str(path)]),
        "bytesio": lambda: io.BytesIO(blob),
        # a compressor's output, read as it is made (gzip's bytes, not Python's)
        "gzip-pipe": lambda: process(["gzip", "-c", "-n"], BASE),
    }


@pytest.mark.parametrize(
    "kind",
    [
        "bytes",
        "bytearray",
        "memoryview",
        "str-path",
        "pathlib-path",
        "open-file",
        "unbuffered-file",
        "file-after-prefix",
        "pipe",
        "bytesio",
        "gzip-pipe",
    ],
)
def test_every_input_kind_gives_the_same_layer(
    vfs_store: LayerStore, tmp_path: Path, kind: str
) -> None:
    blob = gzip.compress(BASE, mtime=0)
    with contextlib.ExitStack() as stack:
        make = _inputs(tmp_path, blob, stack)[kind]
        layer, _ = vfs_store.create(diff=make())
        other, _ = vfs_store.create()
        vfs_store.apply_diff(other.id, make())
    for got in (layer, vfs_store.get(other.id)):
        assert got.uncompressed_digest == sha256(BASE)
        assert got.compression == Compression.GZIP
        if kind != "gzip-pipe":  # gzip's own bytes differ from Python's
            assert (got.compressed_digest, got.compressed_size) == (sha256(blob), len(blob))
    assert read_diff(vfs_store, layer.id, compression=Compression.NONE) == BASE


def test_a_file_object_is_left_at_its_end(vfs_store: LayerStore, tmp_path: Path) -> None:
    path = tmp_path / "layer.tar"
    path.write_bytes(BASE)
    with open(path, "rb") as f:
        vfs_store.create(diff=f)
        assert f.tell() == len(BASE)
    buf = io.BytesIO(BASE)
    vfs_store.create(diff=buf)
    assert buf.read() == b""


def test_not_a_tarball_source_is_a_type_error(vfs_store: LayerStore) -> None:
    with pytest.raises(TypeError, match="diff must be bytes, a path or a binary file object"):
        vfs_store.create(diff=12345)  # type: ignore[arg-type]
    assert vfs_store.layers() == []


# ---------------------------------------------------------------------------------------
# changes and diff_size of a chain (Go's listings are checked in tests/interop)


def test_changes_and_diff_size_of_a_chain(store: LayerStore) -> None:
    base, _ = store.create(diff=BASE)
    middle, _ = store.create(parent=base.id, diff=MIDDLE)
    top, _ = store.create(parent=middle.id, diff=TOP)
    found = {(c.path, c.kind.letter) for c in store.changes(middle.id)}
    assert {("/etc/hostname", "C"), ("/home/u/gone", "D"), ("/var/log", "A")} <= found
    assert ("/srv/new", "A") in found
    assert {("/etc/motd", "A"), ("/link", "D")} <= {
        (c.path, c.kind.letter) for c in store.changes(top.id)
    }
    assert store.diff_size(top.id) == len(b"hello\n")
    assert store.diff_size(middle.id) == len(b"changed\n") + len(b"new") + len(b"log line\n")
    for layer, data in ((base, BASE), (middle, MIDDLE), (top, TOP)):
        assert read_diff(store, layer.id) == data
