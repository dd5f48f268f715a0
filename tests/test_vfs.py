"""The vfs driver: Go's layout, and a child layer as a faithful copy of its parent."""

from __future__ import annotations

import os
import stat
import struct
import time
from pathlib import Path

import pytest

from layerstore import IDMap, LayerStore, MountOptions, errors
from layerstore.drivers import canonical_name, driver_class, make_driver
from layerstore.drivers.vfs import VfsDriver


def tree(root: Path) -> dict[str, tuple[object, ...]]:
    """Everything a copy must keep, per path: type, mode, owner, times, size, content or
    link target or device, xattrs, and which paths share an inode."""
    out: dict[str, tuple[object, ...]] = {}
    inodes: dict[tuple[int, int], str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in ["", *sorted(dirnames), *sorted(filenames)]:
            if name == "" and dirpath != str(root):
                continue
            p = os.path.join(dirpath, name) if name else dirpath
            rel = os.path.relpath(p, root)
            st = os.lstat(p)
            kind = stat.S_IFMT(st.st_mode)
            if stat.S_ISREG(kind):
                extra: object = Path(p).read_bytes()
            elif stat.S_ISLNK(kind):
                extra = os.readlink(p)
            elif stat.S_ISCHR(kind) or stat.S_ISBLK(kind):
                extra = st.st_rdev
            else:
                extra = None
            xattrs = sorted(
                (n, os.getxattr(p, n, follow_symlinks=False))
                for n in os.listxattr(p, follow_symlinks=False)
            )
            link_group = None
            if not stat.S_ISDIR(kind) and st.st_nlink > 1:
                link_group = inodes.setdefault((st.st_dev, st.st_ino), rel)
            times = (st.st_mtime_ns,) if stat.S_ISLNK(kind) else (st.st_atime_ns, st.st_mtime_ns)
            out[rel] = (st.st_mode, st.st_uid, st.st_gid, times, st.st_size, extra, xattrs,
                        link_group)  # fmt: skip
    return out


def populate(root: Path) -> None:
    (root / "etc").mkdir()
    (root / "etc/passwd").write_text("root:x:0:0::/root:/bin/sh\n")
    os.chmod(root / "etc", 0o750)
    (root / "bin").mkdir()
    (root / "bin/su").write_bytes(b"\x7fELF" + bytes(range(256)) * 100)
    os.chown(root / "bin/su", 0, 0)
    os.chmod(root / "bin/su", 0o4755)
    os.link(root / "bin/su", root / "bin/su-hardlink")
    (root / "big").write_bytes(os.urandom(3 << 20))
    (root / "empty").write_bytes(b"")
    os.chown(root / "empty", 1234, 5678)
    os.chmod(root / "empty", 0o600)
    os.symlink("/etc/passwd", root / "abs-link")
    os.symlink("../nowhere", root / "etc/dangling")
    os.lchown(root / "abs-link", 42, 43)
    os.mknod(root / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    os.mknod(root / "loop9", stat.S_IFBLK | 0o660, os.makedev(7, 9))
    os.mkfifo(root / "fifo", 0o644)
    os.mknod(root / "sock", stat.S_IFSOCK | 0o755)
    os.setxattr(root / "etc/passwd", "user.foo", b"bar")
    os.setxattr(root / "etc", "trusted.overlay.opaque", b"y")
    os.setxattr(
        root / "bin/su", "security.capability", struct.pack("<5I", 0x02000001, 1 << 10, 0, 0, 0)
    )
    (root / "deep/a/b/c").mkdir(parents=True)
    (root / "deep/a/b/c/file").write_text("deep")
    os.chmod(root / "deep/a", 0o500)  # unwritable dir: contents copied before its mode
    # atimes in the near future: relatime then leaves them alone while the test reads
    soon = time.time_ns() + 3600 * 10**9
    for i, p in enumerate(sorted(root.rglob("*"))):
        os.utime(p, ns=(soon + i, 1_500_000_000_987_654_321 + i),
                 follow_symlinks=False)  # fmt: skip
    os.utime(root, ns=(soon, 1_400_000_000_000_000_002))


@pytest.fixture
def store(tmp_path: Path) -> LayerStore:
    return LayerStore(tmp_path / "G", tmp_path / "R")


def test_layout_and_base_layer(store: LayerStore, tmp_path: Path) -> None:
    g = tmp_path / "G"
    layer, _ = store.create()
    path = g / "vfs/dir" / layer.id
    st = os.stat(path)
    assert stat.S_IMODE(st.st_mode) == 0o555 and (st.st_uid, st.st_gid) == (0, 0)
    assert stat.S_IMODE(os.stat(g / "vfs").st_mode) == 0o700
    assert stat.S_IMODE(os.stat(g / "vfs/dir").st_mode) == 0o700
    mapped, _ = store.create(uid_map=[IDMap(0, 100000, 1000)], gid_map=[IDMap(0, 200000, 1000)])
    st = os.stat(g / "vfs/dir" / mapped.id)
    assert (st.st_uid, st.st_gid) == (100000, 200000)
    assert store.mount(layer.id) == str(path)


def test_child_is_a_faithful_copy(store: LayerStore, tmp_path: Path) -> None:
    g = tmp_path / "G"
    parent, _ = store.create()
    root = g / "vfs/dir" / parent.id
    populate(root)
    want = tree(root)
    child, _ = store.create(parent=parent.id)
    got = tree(g / "vfs/dir" / child.id)
    assert got == want
    assert "bin/su-hardlink" in got and got["bin/su-hardlink"][7] == "bin/su"
    grandchild, _ = store.create(parent=child.id)
    assert tree(g / "vfs/dir" / grandchild.id) == want
    # Copies are independent of the parent.
    (g / "vfs/dir" / child.id / "empty").write_text("changed")
    assert (root / "empty").read_text() == ""
    store.delete(grandchild.id)
    store.delete(child.id)
    store.delete(parent.id)
    assert os.listdir(g / "vfs/dir") == []


def test_child_with_other_id_maps_is_reowned(store: LayerStore, tmp_path: Path) -> None:
    g = tmp_path / "G"
    m1 = [IDMap(0, 100000, 1000)]
    m2 = [IDMap(0, 300000, 1000)]
    parent, _ = store.create(uid_map=m1, gid_map=m1)
    root = g / "vfs/dir" / parent.id
    (root / "f").write_text("x")
    os.chown(root / "f", 100005, 100007)
    child, _ = store.create(parent=parent.id, uid_map=m2, gid_map=m2)
    st = os.stat(g / "vfs/dir" / child.id / "f")
    assert (st.st_uid, st.st_gid) == (300005, 300007)
    st = os.stat(g / "vfs/dir" / child.id)
    assert (st.st_uid, st.st_gid) == (300000, 300000)
    assert os.stat(root / "f").st_uid == 100005


def test_mount_options(tmp_path: Path) -> None:
    drv = VfsDriver(str(tmp_path / "vfs"))
    drv.create("a", None)
    assert drv.get("a", MountOptions(options=("ro",))) == str(tmp_path / "vfs/dir/a")
    for opts in (("nosuid",), ("ro", "ro")):
        with pytest.raises(errors.NotSupported, match="vfs driver does not support mount options"):
            drv.get("a", MountOptions(options=opts))
    with pytest.raises(errors.LayerUnknown):
        drv.get("missing", MountOptions())
    assert drv.exists("a") and not drv.exists("missing")
    assert drv.list_layers() == ["a"]
    drv.put("a")
    drv.remove("a")
    drv.remove("a")  # already gone: fine
    assert drv.list_layers() == []


def test_driver_options(tmp_path: Path) -> None:
    home = str(tmp_path / "vfs")
    extra = tmp_path / "extra"
    (extra / "vfs/dir/ro-layer").mkdir(parents=True)
    drv = VfsDriver(home, [f"vfs.imagestore={extra}", "vfs.ignore_chown_errors=true"])
    assert drv.ignore_chown_errors
    assert drv.layer_dir("ro-layer") == str(extra / "vfs/dir/ro-layer")  # found in the extra
    assert drv.exists("ro-layer") and drv.list_layers() == []
    with pytest.raises(errors.NotSupported, match=r"vfs driver does not support foo\.bar options"):
        VfsDriver(home, ["foo.bar=1"])
    with pytest.raises(errors.NotSupported, match="mount options"):
        VfsDriver(home, ["vfs.mountopt=nodev"])
    with pytest.raises(errors.InvalidOption):
        VfsDriver(home, ["vfs.ignore_chown_errors=maybe"])
    with pytest.raises(errors.InvalidOption):
        VfsDriver(home, ["novalue"])
    with pytest.raises(errors.NotSupported):
        LayerStore(tmp_path / "G", tmp_path / "R", driver_options=["size=1G"])


def test_registry() -> None:
    assert driver_class("vfs") is VfsDriver
    assert canonical_name("overlay2") == "overlay"
    with pytest.raises(errors.NotSupported, match="driver not supported"):
        driver_class("btrfs")
    drv = make_driver("vfs", "/nonexistent/vfs", read_only=True)
    assert drv.name == "vfs" and not os.path.exists("/nonexistent")
