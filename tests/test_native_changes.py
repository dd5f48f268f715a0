"""Change lists, diff sizes and regenerated layer tarballs against the Go CLI.

Layers are made by the real ``containers-storage`` CLI (vfs and overlay), filled and
edited by hand, then ``changes``, ``diffsize`` and ``diff -u`` of the Go CLI are compared
with the native functions on the same directories. Layers made with ``create-layer`` have
no tar-split file, so the Go CLI regenerates their tarballs: the naive diff on vfs, the
diff/ walk with whiteout conversion on overlay.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import socket
import subprocess
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from layerstore import _native

pytestmark = pytest.mark.interop

KINDS = {0: "Modify", 1: "Add", 2: "Delete"}


@dataclass
class GoStore:
    graph: Path
    run: Path
    driver: str

    def cli(self, *args: str) -> bytes:
        cmd = ["containers-storage", "--storage-driver", self.driver, "-g", str(self.graph)]
        cmd += ["-R", str(self.run), *args]
        return subprocess.run(cmd, check=True, capture_output=True).stdout

    def create(self, parent: str | None = None, *opts: str) -> str:
        args = ["create-layer", *opts] + ([parent] if parent else [])
        return self.cli(*args).decode().strip()

    def changes(self, layer: str, ref: str | None = None) -> list[tuple[str, int]]:
        out = json.loads(self.cli("changes", "--json", layer, *([ref] if ref else [])))
        return sorted((c["Path"], c["Kind"]) for c in out or [])

    def diff(self, layer: str, ref: str | None = None) -> bytes:
        return self.cli("diff", "-u", layer, *([ref] if ref else []))


def make_store(tmp_path: Path, driver: str) -> Iterator[GoStore]:
    store = GoStore(tmp_path / "graph", tmp_path / "run", driver)
    yield store
    # The Go overlay driver bind-mounts its home on itself; no layer is mounted here (vfs
    # mounts are bookkeeping, the overlay tests read diff/), so that is all to undo.
    # (os.path.ismount cannot see a bind mount within one filesystem: ask umount.)
    home = store.graph / driver
    if home.is_dir():
        subprocess.run(["umount", "-l", str(home)], capture_output=True)


@pytest.fixture
def vfs(tmp_path: Path) -> Iterator[GoStore]:
    yield from make_store(tmp_path, "vfs")


@pytest.fixture
def overlay(tmp_path: Path) -> Iterator[GoStore]:
    yield from make_store(tmp_path, "overlay")


def export(
    new_root: Path,
    old_root: Path | None,
    out: Path,
    *,
    mode: str = "naive",
    lowers: list[Path] | None = None,
    idmap: list[tuple[int, int, int]] | None = None,
    compression: int = 0,
) -> bytes:
    """Our regenerated tarball, as the bytes written to a file."""
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        n = _native.export_changes(
            str(new_root),
            str(old_root) if old_root else None,
            fd,
            mode=mode,
            lower_roots=[str(p) for p in lowers] if lowers else None,
            uid_map=idmap or [],
            gid_map=idmap or [],
            compression=compression,
        )
    finally:
        os.close(fd)
    data = out.read_bytes()
    assert n == len(data)
    return data


def entries(tar: bytes) -> list[tuple[object, ...]]:
    """Everything a user sees of each entry, with its content."""
    out: list[tuple[object, ...]] = []
    with tarfile.open(fileobj=io.BytesIO(tar), mode="r:") as tf:
        for m in tf.getmembers():
            data = tf.extractfile(m).read() if m.isreg() else b""  # type: ignore[union-attr]
            mtime = None if os.path.basename(m.name).startswith(".wh.") and m.mode == 0 else m.mtime
            out.append(
                (
                    m.name,
                    m.type,
                    m.mode,
                    m.uid,
                    m.gid,
                    m.uname,
                    m.gname,
                    m.linkname,
                    m.size,
                    m.devmajor,
                    m.devminor,
                    mtime,
                    sorted(m.pax_headers.items()),
                    data,
                )
            )
    return out


def mask_whiteout_times(tar: bytes) -> bytes:
    """Zero the mtime and checksum of deletion whiteouts, stamped with the current time."""
    buf = bytearray(tar)
    off = 0
    while off + 512 <= len(buf):
        blk = bytes(buf[off : off + 512])
        if blk == bytes(512):
            break
        size = int(blk[124:136].rstrip(b"\0 ") or b"0", 8)
        name = blk[:100].rstrip(b"\0")
        if blk[156:157] == b"0" and blk[100:108] == b"0000000\0" and b".wh." in name:
            buf[off + 136 : off + 148] = bytes(12)
            buf[off + 148 : off + 156] = bytes(8)
        step = size if blk[156:157] in (b"0", b"x", b"\0") else 0
        off += 512 + (step + 511) // 512 * 512
    return bytes(buf)


def as_go_json(changes: list[tuple[str, int]]) -> list[tuple[str, int]]:
    """Go's JSON encoder turns bytes that are not UTF-8 into U+FFFD."""
    fixed = [
        (p.encode("utf-8", "surrogateescape").decode("utf-8", "replace"), k) for p, k in changes
    ]
    return sorted(fixed)


def put(path: Path, data: bytes | str, mtime: float | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    if mtime is not None:
        os.utime(path, (mtime, mtime))


def fill_parent(root: Path) -> None:
    for d in ("etc/sub", "deldir/inner", "keep", "opt"):
        (root / d).mkdir(parents=True, exist_ok=True)
    put(root / "etc/passwd", "root:x:0:0::/root:/bin/sh\n")
    put(root / "etc/sub/f", "x\n")
    put(root / "deldir/inner/g", "g\n")
    put(root / "keep/k", "k\n")
    put(root / "unchanged", "same\n")
    put(root / "hl1", "hard\n")
    put(root / "xat", "samelen!")
    os.setxattr(root / "keep/k", "user.foo", b"bar")
    os.symlink("/etc/passwd", root / "sym")


def edit_child(root: Path, uid: int = 0) -> None:
    """Every kind of change the naive diff has to express."""
    shutil.rmtree(root / "deldir")
    (root / "unchanged").rename(root / "renamed")
    with open(root / "etc/sub/f", "a") as f:
        f.write("more\n")
    os.link(root / "hl1", root / "hl2")
    put(root / "newfile", "new\n")
    os.link(root / "newfile", root / "etc/newlink")
    os.chown(root / "newfile", uid + 1000, uid + 1000)
    os.setxattr(
        root / "newfile",
        "security.capability",
        bytes.fromhex("0100000220000000000000000000000000000000"),
    )
    os.setxattr(root / "keep/k", "user.foo", b"baz")
    os.setxattr(root / "xat", "user.overlay.x", b"1")
    os.mkfifo(root / "fifo", 0o640)
    os.mknod(root / "null", 0o666 | 0o020000, os.makedev(1, 3))
    for d in ("a/b", "a-c"):
        (root / d).mkdir(parents=True)
    put(root / "a/b/q", "q")
    put(root / "a-c/q", "qq")
    put(root / "setuid", "#!/bin/sh\n")
    os.chmod(root / "setuid", 0o4755)
    long_dir = root / ("d" * 120)
    long_dir.mkdir()
    put(long_dir / "file", "long\n")
    put(root / "opt" / ("x" * 130), "longname\n")
    os.symlink("t" * 150, root / "longlink")
    put(root / "naïve", "unicode\n")
    put(root / os.fsdecode(b"raw\xff"), "latin1\n")
    put(root / "bigid", "big\n")
    os.chown(root / "bigid", uid + 3000000, uid + 3000001)
    put(root / "empty", "")
    put(root / "time", "t", mtime=1234567890.9)
    os.symlink("target", root / "opt/rel")
    dir_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:  # through /proc: the layer path is longer than a socket address may be
        with socket.socket(socket.AF_UNIX) as s:
            s.bind(f"/proc/self/fd/{dir_fd}/sock")
    finally:
        os.close(dir_fd)
    if uid:
        for p in [root, *root.rglob("*")]:
            if p.stat(follow_symlinks=False).st_uid == 0:
                os.chown(p, uid, uid, follow_symlinks=False)


@pytest.fixture
def vfs_pair(vfs: GoStore) -> tuple[GoStore, str, str, Path, Path]:
    parent = vfs.create()
    parent_dir = Path(vfs.cli("mount", parent).decode().strip())
    fill_parent(parent_dir)
    child = vfs.create(parent)
    child_dir = Path(vfs.cli("mount", child).decode().strip())
    edit_child(child_dir)
    return vfs, parent, child, parent_dir, child_dir


def test_changes_match_go_on_vfs(vfs_pair: tuple[GoStore, str, str, Path, Path]) -> None:
    store, parent, child, parent_dir, child_dir = vfs_pair
    ours = _native.changes(str(child_dir), str(parent_dir))
    assert ours == sorted(ours)
    assert as_go_json(ours) == store.changes(child)
    kinds = dict(ours)
    assert kinds["/deldir"] == 2 and "/deldir/inner" not in kinds
    assert kinds["/etc"] == 0 and kinds["/etc/sub"] == 0 and kinds["/etc/sub/f"] == 0
    assert kinds["/keep/k"] == 0 and kinds["/xat"] == 0  # user.* xattrs only
    assert "/sym" not in kinds and "/hl1" not in kinds
    # The base layer: everything is an Add.
    base = _native.changes(str(parent_dir), None)
    assert as_go_json(base) == store.changes(parent)
    assert {k for _, k in base} == {1}


def test_changes_and_diff_against_a_reference_layer(
    vfs_pair: tuple[GoStore, str, str, Path, Path], tmp_path: Path
) -> None:
    store, parent, child, parent_dir, child_dir = vfs_pair
    # The other way round: the parent compared with its child (not its parent).
    ours = _native.changes(str(parent_dir), str(child_dir))
    assert as_go_json(ours) == store.changes(parent, child)
    go = store.diff(parent, child)
    tar = export(parent_dir, child_dir, tmp_path / "ours.tar")
    assert mask_whiteout_times(tar) == mask_whiteout_times(go)
    names = [e[0] for e in entries(tar)]
    assert ".wh.newfile" in names and "deldir" in names


def test_diff_size_matches_go_on_vfs(vfs_pair: tuple[GoStore, str, str, Path, Path]) -> None:
    store, parent, child, parent_dir, child_dir = vfs_pair
    size = _native.diff_size(str(child_dir), str(parent_dir))
    assert size == int(store.cli("diffsize", child))
    assert _native.diff_size(str(parent_dir), None) == int(store.cli("diffsize", parent))
    assert _native.diff_size(str(parent_dir), str(parent_dir)) == 0


def test_naive_diff_matches_go_byte_for_byte(
    vfs_pair: tuple[GoStore, str, str, Path, Path], tmp_path: Path
) -> None:
    store, _, child, parent_dir, child_dir = vfs_pair
    go = store.diff(child)
    ours = export(child_dir, parent_dir, tmp_path / "ours.tar")
    assert entries(ours) == entries(go)
    names = [e[0] for e in entries(ours)]
    assert ".wh.deldir" in names and ".wh.unchanged" in names and "sock" not in names
    assert names.index("a-c") < names.index("a/b")  # sorted by path, not walked
    # Only the deletion whiteouts' timestamps (the current time) may differ.
    assert mask_whiteout_times(ours) == mask_whiteout_times(go)


def test_base_layer_diff_matches_go_byte_for_byte(vfs: GoStore, tmp_path: Path) -> None:
    layer = vfs.create()
    root = Path(vfs.cli("mount", layer).decode().strip())
    fill_parent(root)
    edit_child(root)
    ours = export(root, None, tmp_path / "ours.tar")
    assert ours == vfs.diff(layer)


def test_mapped_layer_diff_maps_ids_back(tmp_path: Path, vfs: GoStore) -> None:
    maps = ("--uidmap", "0:100000:65536", "--gidmap", "0:100000:65536")
    parent = vfs.create(None, *maps)
    parent_dir = Path(vfs.cli("mount", parent).decode().strip())
    fill_parent(parent_dir)
    for p in [parent_dir, *parent_dir.rglob("*")]:
        os.chown(p, 100000, 100000, follow_symlinks=False)
    child = vfs.create(parent, *maps)
    child_dir = Path(vfs.cli("mount", child).decode().strip())
    edit_child(child_dir, uid=100000)
    os.chown(child_dir / "etc/passwd", 0, 0)  # outside the map: Go skips the entry
    idmap = [(0, 100000, 65536)]
    ours_changes = _native.changes(str(child_dir), str(parent_dir), uid_map=idmap, gid_map=idmap)
    assert as_go_json(ours_changes) == vfs.changes(child)
    go = vfs.diff(child)
    ours = export(child_dir, parent_dir, tmp_path / "ours.tar", idmap=idmap)
    assert entries(ours) == entries(go)
    assert mask_whiteout_times(ours) == mask_whiteout_times(go)
    by_name = {e[0]: e for e in entries(ours)}
    assert by_name["etc/newlink"][3:5] == (1000, 1000)
    assert "etc/passwd" not in by_name


@pytest.mark.parametrize(
    ("compression", "decompress"), [(2, ["gzip", "-dc"]), (4, ["zstd", "-dc"])]
)
def test_compressed_export_decompresses_to_the_tar(
    vfs_pair: tuple[GoStore, str, str, Path, Path],
    tmp_path: Path,
    compression: int,
    decompress: list[str],
) -> None:
    _, _, _, _, child_dir = vfs_pair
    plain = export(child_dir, None, tmp_path / "plain.tar")
    packed = export(child_dir, None, tmp_path / "packed", compression=compression)
    assert len(packed) < len(plain)
    out = subprocess.run(decompress, input=packed, check=True, capture_output=True).stdout
    assert out == plain


def test_bad_arguments_are_refused(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError) as e:
        _native.changes(str(tmp_path / "missing"), None)
    assert e.value.filename.endswith("missing")
    with pytest.raises(ValueError, match="mode"):
        _native.changes(str(tmp_path), None, mode="zfs")
    with pytest.raises(ValueError, match=r"tar\.bz2"):
        _native.export_changes(str(tmp_path), None, 1, compression=1)
    with pytest.raises(ValueError, match="ID map"):
        _native.changes(str(tmp_path), None, uid_map=[(0, 0, 0)])


# ---- overlay ------------------------------------------------------------------------


@pytest.fixture
def overlay_chain(overlay: GoStore) -> tuple[GoStore, str, Path, list[Path]]:
    """A 3-layer overlay chain; the top one's diff/ edited by hand as overlayfs would."""

    def diff(layer: str) -> Path:
        return overlay.graph / "overlay" / layer / "diff"

    base = overlay.create()
    d = diff(base)
    put(d / "gone", "1")
    put(d / "dir/sub/f", "2")
    put(d / "opq/old/x", "3")
    put(d / "keep/file", "4")
    put(d / "wiped/inner", "5")
    mid = overlay.create(base)
    d = diff(mid)
    os.mknod(d / "wiped", 0o020000, os.makedev(0, 0))  # wiped in the middle layer
    top = overlay.create(mid)
    d = diff(top)
    os.mknod(d / "gone", 0o020000, os.makedev(0, 0))
    (d / "opq").mkdir()
    os.setxattr(d / "opq", "trusted.overlay.opaque", b"y")
    put(d / "opq/new", "new")
    put(d / "opq/old/x", "33")  # present below the opaque dir too
    put(d / "dir/sub/f", "22")
    os.link(d / "dir/sub/f", d / "dir/hard")
    put(d / "added/deep/file", "add")
    (d / "wiped").mkdir()  # re-created over a whiteout below: opaque, but no .wh..wh..opq
    os.setxattr(d / "wiped", "trusted.overlay.opaque", b"y")
    put(d / "wiped/again", "again")
    # A directory copied up without change is not reported.
    (d / "keep").mkdir()
    st = os.stat(diff(base) / "keep")
    os.chmod(d / "keep", st.st_mode & 0o7777)
    put(d / "keep/file", "44")
    os.utime(d / "keep", ns=(st.st_atime_ns, st.st_mtime_ns))
    return overlay, top, d, [diff(mid), diff(base)]


def test_overlay_changes_match_go(overlay_chain: tuple[GoStore, str, Path, list[Path]]) -> None:
    store, top, d, lowers = overlay_chain
    ours = _native.changes(str(d), None, mode="overlay", lower_roots=[str(p) for p in lowers])
    go = store.changes(top)
    assert as_go_json(ours) == go
    kinds = dict(ours)
    assert kinds["/gone"] == 2 and kinds["/opq"] == 2 and kinds["/opq/new"] == 1
    assert "/keep" not in kinds and kinds["/keep/file"] == 0
    assert kinds["/wiped"] == 1  # its lower copy was whited out: an Add, not a Delete
    size = _native.diff_size(str(d), None, mode="overlay", lower_roots=[str(p) for p in lowers])
    assert size == int(store.cli("diffsize", top)) == 2 + 3 + 2 + 3 + 5 + 2


def test_overlay_diff_matches_go_byte_for_byte(
    overlay_chain: tuple[GoStore, str, Path, list[Path]], tmp_path: Path
) -> None:
    store, top, d, lowers = overlay_chain
    ours = export(d, None, tmp_path / "ours.tar", mode="overlay", lowers=lowers)
    go = store.diff(top)
    assert ours == go
    names = [e[0] for e in entries(ours)]
    assert ".wh.gone" in names and "opq/.wh..wh..opq" in names
    assert "wiped/.wh..wh..opq" not in names
