"""The native apply pipeline (layerstore._native.apply_layer) against real tarballs.

Tarballs are built with Python's tarfile and compressed with gzip and the zstd / xz /
bzip2 tools; the trees we extract are compared with what the Go `containers-storage`
CLI extracts from the same file (vfs driver), field by field.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import stat
import subprocess
import tarfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest

from layerstore import _native
from layerstore.errors import InvalidArchive

GO_CLI = "containers-storage"

Entry = Callable[[tarfile.TarFile], None]


def make_tar(entries: Iterable[Entry], fmt: int = tarfile.PAX_FORMAT) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as t:
        for add in entries:
            add(t)
    return buf.getvalue()


def reg(
    name: str,
    data: bytes = b"",
    *,
    mode: int = 0o644,
    uid: int = 0,
    gid: int = 0,
    mtime: float = 1_600_000_000,
    pax: dict[str, str] | None = None,
) -> Entry:
    def add(t: tarfile.TarFile) -> None:
        info = tarfile.TarInfo(name)
        info.size, info.mode, info.uid, info.gid, info.mtime = len(data), mode, uid, gid, mtime
        info.pax_headers = dict(pax or {})
        t.addfile(info, io.BytesIO(data))

    return add


def special(
    name: str,
    kind: bytes,
    *,
    linkname: str = "",
    mode: int = 0o755,
    uid: int = 0,
    gid: int = 0,
    mtime: float = 1_600_000_000,
    dev: tuple[int, int] = (0, 0),
    pax: dict[str, str] | None = None,
) -> Entry:
    def add(t: tarfile.TarFile) -> None:
        info = tarfile.TarInfo(name)
        info.type, info.linkname, info.mode = kind, linkname, mode
        info.uid, info.gid, info.mtime = uid, gid, mtime
        info.devmajor, info.devminor = dev
        info.pax_headers = dict(pax or {})
        t.addfile(info)

    return add


def apply(
    source: bytes | bytearray | memoryview | int,
    dest: Path,
    **kwargs: Any,
) -> tuple[dict[str, Any], bytes]:
    dest.mkdir(parents=True, exist_ok=True)
    ts = dest.parent / (dest.name + ".tar-split.gz")
    fd = os.open(ts, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        result = _native.apply_layer(source, str(dest), tarsplit_fd=fd, sync=False, **kwargs)
    finally:
        os.close(fd)
    return result, ts.read_bytes()


def snapshot(root: Path, *, skip_root: bool = True) -> dict[str, tuple[Any, ...]]:
    """Every path under root with type, mode, owner, mtime, size, content, target, xattrs.

    Directories made on the fly (parents missing from the tar) carry the time of the run;
    their mtime shows as "now".
    """
    recent = (time.time() - 3600) * 1e9
    out: dict[str, tuple[Any, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames]:
            p = Path(dirpath) / name
            st = p.lstat()
            content: Any = None
            if stat.S_ISREG(st.st_mode):
                content = hashlib.sha256(p.read_bytes()).hexdigest()
            elif stat.S_ISLNK(st.st_mode):
                content = os.readlink(p)
            elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
                content = (os.major(st.st_rdev), os.minor(st.st_rdev))
            xattrs = {}
            if not stat.S_ISLNK(st.st_mode):
                for k in sorted(os.listxattr(p, follow_symlinks=False)):
                    xattrs[k] = os.getxattr(p, k, follow_symlinks=False)
            rel = str(p.relative_to(root))
            out[rel] = (
                stat.S_IFMT(st.st_mode),
                stat.S_IMODE(st.st_mode),
                st.st_uid,
                st.st_gid,
                "now" if st.st_mtime_ns > recent else st.st_mtime_ns,
                st.st_nlink,
                content,
                tuple(xattrs.items()),
            )
    if not skip_root:
        st = root.lstat()
        out["."] = (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, st.st_mtime_ns)
    return out


def go_import(
    tmp: Path, data: bytes, *, parent_tars: Iterable[bytes] = (), uidmap: str = ""
) -> tuple[Path, dict[str, Any]]:
    """Import data (on top of parent_tars) with the Go CLI; returns its layer dir + record."""
    graph, run = tmp / "go-graph", tmp / "go-run"
    base = [GO_CLI, "--storage-driver", "vfs", "-g", str(graph), "-R", str(run)]
    parent: list[str] = []
    for i, ptar in enumerate([*parent_tars, data]):
        path = tmp / f"go-input-{i}"
        path.write_bytes(ptar)
        extra = ["--uidmap", uidmap, "--gidmap", uidmap] if uidmap else []
        with path.open("rb") as f:
            out = subprocess.run(
                [*base, "import-layer", *extra, *parent],
                stdin=f,
                capture_output=True,
                text=True,
                check=True,
            )
        parent = [out.stdout.strip()]
    layer_id = parent[0]
    records = json.loads((graph / "vfs-layers" / "layers.json").read_text())
    record = next(r for r in records if r["id"] == layer_id)
    return graph / "vfs" / "dir" / layer_id, record


# A layer with every entry type, owners, setuid, sub-second and access times, xattrs,
# missing parents, hard links and symlinks (absolute, relative, dangling).
EVERYTHING = [
    special("bin", tarfile.DIRTYPE, mode=0o755, mtime=1_500_000_000.25),
    reg("bin/su", b"#!/bin/sh\n" * 100, mode=0o4755, uid=0, gid=0, mtime=1_500_000_001),
    reg("bin/sg", b"x", mode=0o2711, uid=5, gid=6),
    special("tmp", tarfile.DIRTYPE, mode=0o1777, pax={"atime": "1400000000.5"}),
    reg(
        "etc/app/conf",
        b"key=value\n",
        mode=0o600,
        uid=1000,
        gid=100,
        mtime=1_234_567_890.123456,
        pax={"SCHILY.xattr.user.comment": "hello", "atime": "1700000000"},
    ),
    special("etc/app/link", tarfile.SYMTYPE, linkname="conf", mtime=1_300_000_000),
    special("etc/abs", tarfile.SYMTYPE, linkname="/etc/app/conf", uid=7, gid=8),
    special("etc/dangling", tarfile.SYMTYPE, linkname="../nowhere/at/all"),
    special("etc/hard", tarfile.LNKTYPE, linkname="etc/app/conf", mode=0o640, uid=1000, gid=100),
    special("run/fifo", tarfile.FIFOTYPE, mode=0o620, uid=3, gid=4),
    special("dev/null", tarfile.CHRTYPE, mode=0o666, dev=(1, 3)),
    special("dev/loop9", tarfile.BLKTYPE, mode=0o660, dev=(7, 9), gid=6),
    special("empty", tarfile.DIRTYPE, mode=0o700, uid=33, gid=33, mtime=1_000_000_000),
    reg("zero", b"", mode=0o444),
    reg("big", os.urandom(3 << 20) + b"tail", mode=0o644),
]


def test_every_entry_type_matches_the_go_cli(tmp_path: Path) -> None:
    data = make_tar(EVERYTHING)
    result, _ = apply(data, tmp_path / "ours")
    ours = tmp_path / "ours"
    # directories: times re-applied at the end; no atime in the tar gives the epoch
    # (checked before anything reads the tree and relatime moves the atime)
    assert (ours / "bin").stat().st_mtime_ns == 1_500_000_000_250_000_000
    assert (ours / "bin").stat().st_atime_ns == 0
    assert (ours / "tmp").stat().st_atime_ns == 1_400_000_000_500_000_000
    # files: atime = max(atime, mtime)
    assert (ours / "bin/su").stat().st_atime_ns == 1_500_000_001_000_000_000
    go_dir, record = go_import(tmp_path, data)
    assert snapshot(ours) == snapshot(go_dir)
    assert result["compressed_digest"] == record["compressed-diff-digest"]
    assert result["uncompressed_digest"] == record["diff-digest"]
    assert result["compressed_size"] == record["compressed-size"]
    assert result["uncompressed_size"] == record["diff-size"]
    assert result["uid_set"] == record["uidset"]
    assert result["gid_set"] == record["gidset"]
    # spot checks a user would look at
    su = (ours / "bin/su").lstat()
    assert stat.S_IMODE(su.st_mode) == 0o4755
    assert os.getxattr(ours / "etc/app/conf", "user.comment") == b"hello"
    assert os.readlink(ours / "etc/abs") == "/etc/app/conf"
    assert (ours / "etc/hard").stat().st_ino == (ours / "etc/app/conf").stat().st_ino


def test_root_entry_metadata_applies_to_the_layer_dir_on_vfs(tmp_path: Path) -> None:
    data = make_tar([special(".", tarfile.DIRTYPE, mode=0o711, uid=9, gid=9), reg("./a", b"1")])
    apply(data, tmp_path / "vfs")
    st = (tmp_path / "vfs").stat()
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o711, 9, 9)
    apply(data, tmp_path / "ovl", whiteout_format="overlay")
    st = (tmp_path / "ovl").stat()
    assert (stat.S_IMODE(st.st_mode), st.st_uid) != (0o711, 9)


def test_owners_are_mapped_and_the_sets_keep_tar_ids(tmp_path: Path) -> None:
    data = make_tar(
        [
            reg("a", b"1", uid=5, gid=6),
            reg("b", b"2", uid=999, gid=0),
            special(".wh.gone", tarfile.REGTYPE, uid=4242, gid=4242),
        ]
    )
    result, _ = apply(
        data, tmp_path / "l", uid_map=[(0, 100000, 1000)], gid_map=[(0, 200000, 1000)]
    )
    a, b = (tmp_path / "l/a").lstat(), (tmp_path / "l/b").lstat()
    assert (a.st_uid, a.st_gid) == (100005, 200006)
    assert (b.st_uid, b.st_gid) == (100999, 200000)
    assert result["uid_set"] == [5, 999]  # the whiteout's ids are not recorded
    assert result["gid_set"] == [0, 6]
    assert result["size"] == 2
    go_dir, record = go_import(tmp_path, data, uidmap="0:100000:1000")
    assert record["uidset"] == result["uid_set"]
    assert (go_dir / "a").lstat().st_uid == 100005


def test_unmappable_owner_is_an_invalid_archive(tmp_path: Path) -> None:
    data = make_tar([reg("a", b"1", uid=5000)])
    with pytest.raises(InvalidArchive, match="container ID 5000 cannot be mapped to a host ID"):
        apply(data, tmp_path / "l", uid_map=[(0, 100000, 1000)])


def compress(data: bytes, tool: str, tmp: Path) -> bytes:
    if tool == "gzip":
        return gzip.compress(data, compresslevel=6)
    src = tmp / "to-compress"
    src.write_bytes(data)
    return subprocess.run([tool, "-c", "-q", str(src)], capture_output=True, check=True).stdout


@pytest.mark.parametrize(
    ("tool", "number"), [("none", 0), ("bzip2", 1), ("gzip", 2), ("xz", 3), ("zstd", 4)]
)
def test_every_compression_gives_the_go_digests(tmp_path: Path, tool: str, number: int) -> None:
    tar = make_tar(EVERYTHING)
    data = tar if tool == "none" else compress(tar, tool, tmp_path)
    result, _ = apply(data, tmp_path / "ours")
    assert result["compression"] == number
    assert result["compressed_digest"] == "sha256:" + hashlib.sha256(data).hexdigest()
    assert result["compressed_size"] == len(data)
    assert result["uncompressed_digest"] == "sha256:" + hashlib.sha256(tar).hexdigest()
    assert result["uncompressed_size"] == len(tar)
    go_dir, record = go_import(tmp_path, data)
    assert record.get("compression", 0) == number
    assert result["compressed_digest"] == record["compressed-diff-digest"]
    assert result["uncompressed_digest"] == record["diff-digest"]
    assert snapshot(tmp_path / "ours") == snapshot(go_dir)


def test_tar_split_reassembles_the_input_byte_for_byte(tmp_path: Path) -> None:
    tar = make_tar(EVERYTHING)
    _, ts = apply(compress(tar, "zstd", tmp_path), tmp_path / "ours")
    (tmp_path / "ts.gz").write_bytes(ts)
    out = tmp_path / "re.tar"
    subprocess.run(
        [
            "tar-split",
            "asm",
            "--input",
            str(tmp_path / "ts.gz"),
            "--path",
            str(tmp_path / "ours"),
            "--output",
            str(out),
        ],
        check=True,
        capture_output=True,
    )
    assert out.read_bytes() == tar


def test_file_descriptor_and_pipe_sources(tmp_path: Path) -> None:
    tar = make_tar(EVERYTHING)
    gz = compress(tar, "gzip", tmp_path)
    (tmp_path / "in.tar.gz").write_bytes(gz)
    fd = os.open(tmp_path / "in.tar.gz", os.O_RDONLY)
    try:
        from_file, _ = apply(fd, tmp_path / "file")
    finally:
        os.close(fd)
    r, w = os.pipe()
    writer = subprocess.Popen(["cat", str(tmp_path / "in.tar.gz")], stdout=w)
    os.close(w)
    try:
        from_pipe, _ = apply(r, tmp_path / "pipe")
    finally:
        os.close(r)
        writer.wait()
    from_view, _ = apply(memoryview(bytearray(gz)), tmp_path / "view")
    assert from_file == from_pipe == from_view
    assert snapshot(tmp_path / "file") == snapshot(tmp_path / "pipe") == snapshot(tmp_path / "view")


def test_trusted_digest_is_recorded_without_hashing(tmp_path: Path) -> None:
    tar = make_tar([reg("a", b"1")])
    gz = gzip.compress(tar)
    trusted = "sha256:" + "ab" * 32
    result, _ = apply(gz, tmp_path / "l", trusted_compressed_digest=trusted)
    assert result["compressed_digest"] == trusted
    assert result["uncompressed_digest"] == "sha256:" + hashlib.sha256(tar).hexdigest()
    plain, _ = apply(tar, tmp_path / "m", trusted_compressed_digest=trusted)
    assert plain["uncompressed_digest"] == trusted  # Go: uncompressed input, same digest


LOWER = [
    special("dir1", tarfile.DIRTYPE),
    reg("dir1/a.txt", b"a"),
    reg("dir1/keep.txt", b"k"),
    special("dir1/sub", tarfile.DIRTYPE),
    reg("dir1/sub/old", b"old"),
    special("dir1/sub/olddir", tarfile.DIRTYPE),
    reg("dir1/sub/olddir/x", b"x"),
    special("empty", tarfile.DIRTYPE),
    reg("top", b"t"),
]
UPPER = [
    reg("dir1/.wh.a.txt"),
    special("dir1/sub", tarfile.DIRTYPE, mode=0o750),
    reg("dir1/sub/.wh..wh..opq"),
    reg("dir1/sub/new", b"new", uid=12, gid=13),
    reg(".wh.empty", uid=55),
    reg("added", b"+"),
]


def test_vfs_whiteouts_and_opaque_dirs_match_the_go_cli(tmp_path: Path) -> None:
    lower, upper = make_tar(LOWER), make_tar(UPPER)
    ours = tmp_path / "ours"
    apply(lower, ours)
    apply(upper, ours)
    go_dir, _ = go_import(tmp_path, upper, parent_tars=[lower])
    got = snapshot(ours)
    assert got == snapshot(go_dir)
    assert sorted(got) == [
        "added",
        "dir1",
        "dir1/keep.txt",
        "dir1/sub",
        "dir1/sub/new",
        "top",
    ]


def test_overlay_whiteouts_are_translated(tmp_path: Path) -> None:
    upper = make_tar([special(".", tarfile.DIRTYPE, mode=0o700), *UPPER])
    diff = tmp_path / "diff"
    result, _ = apply(
        upper,
        diff,
        whiteout_format="overlay",
        uid_map=[(0, 100000, 65536)],
        gid_map=[(0, 100000, 65536)],
    )
    a = (diff / "dir1/a.txt").lstat()
    assert stat.S_ISCHR(a.st_mode) and a.st_rdev == 0 and stat.S_IMODE(a.st_mode) == 0
    assert (a.st_uid, a.st_gid) == (100000, 100000)
    empty = (diff / "empty").lstat()
    assert stat.S_ISCHR(empty.st_mode) and empty.st_uid == 100055
    assert os.getxattr(diff / "dir1/sub", "trusted.overlay.opaque") == b"y"
    assert not (diff / "dir1/sub/.wh..wh..opq").exists()
    assert (diff / "dir1/sub/new").read_bytes() == b"new"
    assert (diff / "dir1/sub/new").lstat().st_uid == 100012
    # the auto-created parent dir1 belongs to the mapped root
    assert (diff / "dir1").lstat().st_uid == 100000
    assert stat.S_IMODE(diff.lstat().st_mode) != 0o700  # overlay skips the root entry
    assert result["uid_set"] == [0, 12]


def test_bad_arguments_are_clear(tmp_path: Path) -> None:
    tar = make_tar([reg("a", b"1")])
    with pytest.raises(ValueError, match="whiteout_format"):
        apply(tar, tmp_path / "l", whiteout_format="aufs")
    with pytest.raises(FileNotFoundError) as err:
        _native.apply_layer(tar, str(tmp_path / "missing"), tarsplit_fd=1)
    assert err.value.filename == str(tmp_path / "missing")


def test_unknown_entry_type_is_rejected_with_go_message(tmp_path: Path) -> None:
    data = make_tar([special("weird", tarfile.CONTTYPE)])
    with pytest.raises(InvalidArchive, match="unhandled tar header type 55"):
        apply(data, tmp_path / "l")


def test_aufs_hard_links_into_plnk_match_the_go_cli(tmp_path: Path) -> None:
    data = make_tar(
        [
            reg(".wh..wh.plnk/262.1234", b"aufs data\n", mode=0o640, uid=7, gid=8, mtime=5),
            special("x/link", tarfile.LNKTYPE, linkname=".wh..wh.plnk/262.1234"),
            reg("x/plain", b"p"),
        ]
    )
    apply(data, tmp_path / "ours")
    go_dir, _ = go_import(tmp_path, data)
    got = snapshot(tmp_path / "ours")
    assert got == snapshot(go_dir)
    assert (tmp_path / "ours/x/link").read_bytes() == b"aufs data\n"
    assert got["x/link"][2:4] == (7, 8)
    bad = make_tar([special("y", tarfile.LNKTYPE, linkname=".wh..wh.plnk/0.0")])
    with pytest.raises(InvalidArchive, match="invalid aufs hardlink"):
        apply(bad, tmp_path / "bad")
