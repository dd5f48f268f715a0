"""The overlay driver on the real kernel overlayfs: Go's layout, real mounts of layer
chains (whiteouts and opaque dirs honoured), options, removal and repairs."""

from __future__ import annotations

import json
import os
import re
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from layerstore import IDMap, LayerStore, MountOptions, errors
from layerstore.drivers import make_driver
from layerstore.drivers.overlay import (
    OPAQUE_XATTR,
    OverlayDriver,
    mount_points_under,
    parse_mount_data,
)

LINK_RE = re.compile(r"[A-Z2-7]{26}")


def mount_table() -> list[tuple[str, str, str]]:
    """(mount point, fs type, mount options + super options) of every mount."""
    rows = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        fields = left.split()
        fstype, _source, super_opts = right.split(" ", 2)
        rows.append((fields[4], fstype, fields[5] + "," + super_opts))
    return rows


def mount_options_of(point: str) -> list[str]:
    found = [opts for p, fstype, opts in mount_table() if p == point and fstype == "overlay"]
    assert len(found) == 1, f"{point} is not one overlay mount: {found}"
    return found[0].split(",")


@pytest.fixture
def store(root: Path) -> Iterator[LayerStore]:
    s = LayerStore(root / "g", root / "r", driver="overlay")
    try:
        yield s
    finally:
        s.close()


def drv(store: LayerStore) -> OverlayDriver:
    d = store.driver
    assert isinstance(d, OverlayDriver)
    return d


def mode(p: Path | str) -> int:
    return stat.S_IMODE(os.lstat(p).st_mode)


def diff(store: LayerStore, layer_id: str) -> Path:
    return Path(drv(store).apply_root(layer_id))


# ---------------------------------------------------------------------------------------
# layout


def test_layout_of_a_three_layer_chain(store: LayerStore, root: Path) -> None:
    home = root / "g" / "overlay"
    base, _ = store.create()
    mid, _ = store.create(parent=base.id)
    top, _ = store.create(parent=mid.id)
    assert (home / ".has-mount-program").read_bytes() == b"false"
    assert mode(home / ".has-mount-program") == 0o600
    assert mode(home / "l") == 0o755
    links = {}
    for layer in (base, mid, top):
        d = home / layer.id
        assert mode(d) == 0o700
        assert mode(d / "diff") == 0o555
        assert mode(d / "work") == mode(d / "merged") == 0o700
        link = (d / "link").read_bytes().decode()
        assert LINK_RE.fullmatch(link), link  # 26 chars, no newline
        assert mode(d / "link") == 0o644
        assert os.readlink(home / "l" / link) == f"../{layer.id}/diff"
        links[layer.id] = link
    assert sorted(os.listdir(home / base.id)) == ["diff", "empty", "link", "merged", "work"]
    assert mode(home / base.id / "empty") == 0o700
    assert sorted(os.listdir(home / top.id)) == ["diff", "link", "lower", "merged", "work"]
    assert (home / mid.id / "lower").read_bytes() == f"l/{links[base.id]}".encode()
    assert (home / top.id / "lower").read_bytes() == (
        f"l/{links[mid.id]}:l/{links[base.id]}".encode()
    )
    assert mode(home / top.id / "lower") == 0o644
    assert sorted(os.listdir(home / "l")) == sorted(links.values())
    d = drv(store)
    assert d.diff_roots(top.id) == [str(home / i / "diff") for i in (top.id, mid.id, base.id)]
    assert d.layer_dir(top.id) == str(home / top.id)
    assert d.whiteout_format == "overlay"


def test_child_takes_parent_diff_mode_and_layer_dir_owner(store: LayerStore, root: Path) -> None:
    home = root / "g" / "overlay"
    maps = (IDMap(0, 100000, 65536),)
    base, _ = store.create(uid_map=maps, gid_map=(IDMap(0, 200000, 65536),))
    for p in (home / base.id, home / base.id / "diff", home / base.id / "empty"):
        st = os.stat(p)
        assert (st.st_uid, st.st_gid) == (100000, 200000), p
    os.chmod(home / base.id / "diff", 0o4777)  # setuid is dropped, the umask applies
    os.chown(home / base.id / "diff", 5, 6)  # the owner comes from the layer dir
    old_umask = os.umask(0o022)
    try:
        child, _ = store.create(parent=base.id)
    finally:
        os.umask(old_umask)
    st = os.stat(home / child.id / "diff")
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o755, 100000, 200000)
    st = os.stat(home / child.id)  # the child's own mapped root (inherited maps)
    assert (st.st_uid, st.st_gid) == (100000, 200000)


def test_list_layers_skips_what_is_not_a_layer(store: LayerStore, root: Path) -> None:
    home = root / "g" / "overlay"
    a, _ = store.create()
    for name in ("staging", "tempdirs", "compat123", "f" * 63):
        (home / name).mkdir()
    (home / ("e" * 64)).write_text("a file, not a layer")
    os.symlink(home / a.id, home / ("d" * 64))
    assert drv(store).list_layers() == [a.id]


# ---------------------------------------------------------------------------------------
# mounting


def test_mount_is_a_real_overlay_with_counts(store: LayerStore, root: Path) -> None:
    home = root / "g" / "overlay"
    base, _ = store.create()
    top, _ = store.create(parent=base.id)
    (diff(store, base.id) / "from-base").write_text("base")
    path = store.mount(top.id)
    assert path == str(home / top.id / "merged")
    opts = mount_options_of(path)
    link = (home / base.id / "link").read_text()
    assert f"lowerdir={home}/l/{link}" in opts
    assert f"upperdir={home}/{top.id}/diff" in opts
    assert f"workdir={home}/{top.id}/work" in opts
    assert (Path(path) / "from-base").read_text() == "base"
    (Path(path) / "written").write_text("through the mount")
    assert (diff(store, top.id) / "written").read_text() == "through the mount"
    assert store.mount(top.id) == path  # counted, not mounted twice
    assert [p for p, t, _ in mount_table() if p == path] == [path]
    assert store.mounted(top.id) == 2
    mounts = json.loads((root / "r" / "overlay-layers" / "mountpoints.json").read_text())
    assert mounts == [{"id": top.id, "path": path, "count": 2}]
    assert store.unmount(top.id) is True
    assert mount_points_under(path) == [path]
    assert store.unmount(top.id) is False
    assert mount_points_under(path) == []
    assert not os.path.exists(path)  # Put removes merged/, Get makes it again
    # a base layer mounts its (empty) "empty" dir below its diff
    base_path = store.mount(base.id)
    assert f"lowerdir={home}/{base.id}/empty" in mount_options_of(base_path)
    assert sorted(os.listdir(base_path)) == ["from-base"]
    store.unmount(base.id)


def test_whiteouts_and_opaque_dirs_are_honoured_by_the_kernel(
    store: LayerStore, root: Path
) -> None:
    a, _ = store.create()
    b, _ = store.create(parent=a.id)
    c, _ = store.create(parent=b.id)
    da, db, dc = (diff(store, x.id) for x in (a, b, c))
    (da / "gone").write_text("deleted in b")
    (da / "kept").write_text("kept")
    (da / "dir").mkdir()
    (da / "dir" / "old").write_text("hidden by the opaque dir")
    (da / "dir2").mkdir()
    (da / "dir2" / "lower-file").write_text("still visible")
    os.mknod(db / "gone", stat.S_IFCHR | 0, os.makedev(0, 0))  # overlay whiteout
    (db / "dir").mkdir()
    os.setxattr(db / "dir", OPAQUE_XATTR, b"y")
    (db / "dir" / "new").write_text("from b")
    (dc / "top").write_text("from c")
    merged = Path(store.mount(c.id))
    assert sorted(os.listdir(merged)) == ["dir", "dir2", "kept", "top"]
    assert sorted(os.listdir(merged / "dir")) == ["new"]
    assert (merged / "dir" / "new").read_text() == "from b"
    assert sorted(os.listdir(merged / "dir2")) == ["lower-file"]
    assert not (merged / "gone").exists()
    # deleting through the mount writes a whiteout into the top diff
    (merged / "kept").unlink()
    st = os.lstat(dc / "kept")
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == 0
    store.unmount(c.id)
    assert mount_points_under(str(root)) == [str(root / "g" / "overlay")]


def test_read_only_mount_has_no_upper_dir(store: LayerStore, root: Path) -> None:
    home = root / "g" / "overlay"
    base, _ = store.create()
    top, _ = store.create(parent=base.id)
    (diff(store, top.id) / "f").write_text("x")
    path = store.mount(top.id, MountOptions(options=("ro",)))
    opts = mount_options_of(path)
    assert "ro" in opts
    link = (home / base.id / "link").read_text()
    assert f"lowerdir={home}/{top.id}/diff:{home}/l/{link}" in opts
    assert not any(o.startswith(("upperdir=", "workdir=")) for o in opts)
    with pytest.raises(OSError) as info:
        (Path(path) / "new").write_text("no")
    assert info.value.errno == 30  # EROFS
    assert (Path(path) / "f").read_text() == "x"
    store.unmount(top.id)
    base_ro = store.mount(base.id, ["ro"])
    assert f"lowerdir={home}/{base.id}/diff:{home}/{base.id}/empty" in mount_options_of(base_ro)
    store.unmount(base.id)


def test_mount_options_and_driver_mountopt(root: Path) -> None:
    s = LayerStore(
        root / "g", root / "r", driver="overlay", driver_options=["overlay.mountopt=nodev"]
    )
    try:
        a, _ = s.create()
        opts = mount_options_of(s.mount(a.id))
        assert "nodev" in opts and "noexec" not in opts
        s.unmount(a.id)
        opts = mount_options_of(s.mount(a.id, ["noexec", "nosuid"]))  # replaces mountopt
        assert "noexec" in opts and "nosuid" in opts and "nodev" not in opts
        s.unmount(a.id)
        with pytest.raises(errors.InvalidOption, match="bind"):
            s.mount(a.id, ["bind"])
        assert s.mounted(a.id) == 0
    finally:
        s.close()
    assert parse_mount_data(["ro", "nodev", "", "defaults", "index=off"]) == (0x5, "index=off")
    assert parse_mount_data(["ro", "rw", "exec"]) == (0, "")


def test_mount_label_reaches_the_kernel(store: LayerStore, root: Path) -> None:
    """The label becomes ``context="..."``; this kernel has no SELinux and refuses it, as
    it refuses Go's mount. Nothing stays mounted and the next mount works."""
    a, _ = store.create()
    label = "system_u:object_r:container_file_t:s0"
    with pytest.raises(OSError, match=re.escape(f'context="{label}"')):
        store.mount(a.id, MountOptions(mount_label=label))
    assert store.mounted(a.id) == 0
    assert mount_points_under(str(root / "g" / "overlay" / a.id)) == []
    path = store.mount(a.id)
    assert mount_points_under(path) == [path]
    store.unmount(a.id)


def test_deep_chain_mounts_with_paths_relative_to_home(root: Path) -> None:
    """Past a page of mount data the lowers are given as ``l/<link>`` relative to the
    home, as Go does; the process's working directory never changes."""
    deep = root / ("x" * 200) / "g"
    s = LayerStore(deep, root / "r", driver="overlay")
    try:
        parent = None
        ids = []
        for i in range(24):
            layer, _ = s.create(parent=parent)
            (diff(s, layer.id) / f"file{i}").write_text(str(i))
            parent = layer.id
            ids.append(layer.id)
        cwd = os.getcwd()
        path = s.mount(ids[-1])
        assert os.getcwd() == cwd
        opts = mount_options_of(path)
        lowerdir = next(o for o in opts if o.startswith("lowerdir="))
        assert lowerdir.startswith("lowerdir=l/") and lowerdir.count(":l/") == 22
        assert f"upperdir={ids[-1]}/diff" in opts
        assert sorted(os.listdir(path)) == sorted(f"file{i}" for i in range(24))
        assert Path(path, "file0").read_text() == "0"
        s.unmount(ids[-1])
        assert mount_points_under(path) == []
    finally:
        s.close()


def test_chains_past_a_page_of_relative_paths_mount_too(root: Path) -> None:
    """200 lowers do not fit in a page even as ``l/<link>`` (Go's mount fails there):
    the new mount API takes them one at a time."""
    d = make_driver("overlay", str(root / "g" / "overlay"))
    parent = None
    for i in range(200):
        layer = f"{i:064x}"
        d.create(layer, parent)
        Path(d.layer_dir(layer), "diff", f"f{i}").write_text(str(i))
        parent = layer
    assert parent is not None
    path = d.get(parent, MountOptions(options=("nodev",)))
    opts = mount_options_of(path)
    assert "nodev" in opts
    assert sum(o.startswith("lowerdir+=l/") for o in opts) == 199
    assert f"upperdir={parent}/diff" in opts
    assert len(os.listdir(path)) == 200 and Path(path, "f0").read_text() == "0"
    Path(path, "new").write_text("x")
    assert sorted(os.listdir(Path(d.layer_dir(parent), "diff"))) == ["f199", "new"]
    d.put(parent)
    path = d.get(parent, MountOptions(options=("ro",)))
    with pytest.raises(OSError, match="Read-only"):
        Path(path, "new2").write_text("x")
    d.put(parent)
    assert mount_points_under(path) == []


def test_missing_short_links_are_recreated(store: LayerStore, root: Path) -> None:
    home = root / "g" / "overlay"
    base, _ = store.create()
    top, _ = store.create(parent=base.id)
    (diff(store, base.id) / "f").write_text("x")
    link = (home / base.id / "link").read_text()
    os.unlink(home / "l" / link)
    path = store.mount(top.id)
    assert os.readlink(home / "l" / link) == f"../{base.id}/diff"
    assert (Path(path) / "f").read_text() == "x"
    store.unmount(top.id)


# ---------------------------------------------------------------------------------------
# removal and failures


def test_delete_of_a_mounted_layer_leaves_nothing(store: LayerStore, root: Path) -> None:
    home = root / "g" / "overlay"
    base, _ = store.create()
    top, _ = store.create(parent=base.id)
    path = store.mount(top.id)
    link = (home / top.id / "link").read_text()
    store.delete(top.id)
    assert mount_points_under(path) == []
    assert not (home / top.id).exists()
    assert not os.path.lexists(home / "l" / link)
    d = drv(store)
    d.get(base.id, MountOptions())
    d.remove(base.id)  # the driver alone also unmounts first
    assert mount_points_under(str(home)) == [str(home)]
    assert os.listdir(home / "l") == []
    assert d.list_layers() == []


def test_failed_creates_leave_nothing(store: LayerStore, root: Path) -> None:
    home = root / "g" / "overlay"
    d = drv(store)
    with pytest.raises(errors.LayerUnknown):
        d.create("a" * 64, "b" * 64)
    with pytest.raises(errors.NotSupported, match="pquota"):
        d.create("a" * 64, None, storage_opt={"size": "10G"}, writeable=True)
    with pytest.raises(errors.InvalidOption, match="only supported for ReadWrite"):
        d.create("a" * 64, None, storage_opt={"size": "10G"})
    assert sorted(os.listdir(home)) == [".has-mount-program", "l"]
    assert os.listdir(home / "l") == []
    with pytest.raises(errors.LayerUnknown):
        d.get("c" * 64, MountOptions())
    with pytest.raises(FileNotFoundError):
        d.put("c" * 64)


# ---------------------------------------------------------------------------------------
# options, home mount, status


def test_options(root: Path) -> None:
    home = str(root / "g" / "overlay")
    with pytest.raises(errors.InvalidOption, match=r"Unknown option overlay\.foo"):
        make_driver("overlay", home, ["overlay.foo=1"])
    with pytest.raises(errors.InvalidOption, match="unable to parse"):
        make_driver("overlay", home, ["overlay.mountopt"])
    with pytest.raises(errors.NotSupported, match="'force_mask' is supported only"):
        make_driver("overlay", home, ["overlay.force_mask=0700"])
    with pytest.raises(errors.NotSupported, match="mount programs"):
        make_driver("overlay", home, ["overlay.mount_program=/bin/true"])
    with pytest.raises(errors.InvalidOption, match="can't stat program"):
        make_driver("overlay", home, ["overlay.mount_program=/no/such/program"])
    with pytest.raises(errors.NotSupported, match="project quotas"):
        make_driver("overlay", home, ["overlay.size=10G"])
    with pytest.raises(errors.InvalidOption, match="not absolute"):
        make_driver("overlay", home, ["overlay.imagestore=relative/path"])
    with pytest.raises(errors.InvalidOption, match="contains unknown option 'bogus'"):
        make_driver("overlay", home, [f"overlay.additionallayerstore={root}:bogus"])
    with pytest.raises(errors.InvalidOption, match="ParseBool"):
        make_driver("overlay", home, ["overlay.skip_mount_home=maybe"])
    assert not os.path.exists(home)  # every rejection came before any change
    accepted = [
        "overlay2.mountopt=nodev",
        ".override_kernel_check=1",
        "overlay.mount_program=",
        "overlay.size=0",
        "Overlay.Ignore_Chown_Errors=true",
        "overlay.skip_mount_home=true",
    ]
    d = make_driver("overlay2", home, accepted)
    assert isinstance(d, OverlayDriver)
    assert d.mount_options == "nodev" and d.ignore_chown_errors and d.skip_mount_home


def test_home_is_a_private_bind_mount_until_cleanup(root: Path) -> None:
    home = str(root / "g" / "overlay")
    d = make_driver("overlay", home)
    assert isinstance(d, OverlayDriver)
    assert mount_points_under(home) == []  # nothing is mounted until a layer is
    d.create("a" * 64, None)
    merged = d.get("a" * 64, MountOptions())
    assert mount_points_under(home) == [merged, home]
    line = next(x for x in Path("/proc/self/mountinfo").read_text().splitlines()
                if x.split()[4] == home)  # fmt: skip
    assert "shared:" not in line and "master:" not in line  # private
    d2 = make_driver("overlay", home)
    d2.create("b" * 64, None)
    d2.get("b" * 64, MountOptions())  # already a mount point: no second bind mount
    assert len(mount_points_under(home)) == 3
    d2.put("b" * 64)
    assert d.cleanup() is False  # a layer is mounted below it
    d.put("a" * 64)
    assert d.cleanup() is True
    assert mount_points_under(home) == []


def test_skip_mount_home_and_mounts_it_would_hide(root: Path) -> None:
    home = str(root / "g" / "overlay")
    skipping = make_driver("overlay", home, ["overlay.skip_mount_home=true"])
    skipping.create("a" * 64, None)
    Path(skipping.layer_dir("a" * 64), "diff", "f").write_text("x")
    merged = skipping.get("a" * 64, MountOptions())
    assert mount_points_under(home) == [merged]  # no bind mount of the home
    # a driver that would bind-mount the home does not hide the live mount below it
    d = make_driver("overlay", home)
    d.create("b" * 64, None)
    other = d.get("b" * 64, MountOptions())
    assert sorted(mount_points_under(home)) == sorted([merged, other])
    assert os.listdir(merged) == ["f"]
    d.put("b" * 64)
    skipping.put("a" * 64)
    assert mount_points_under(home) == []


def test_layers_of_an_additional_image_store(root: Path) -> None:
    """``overlay.imagestore``: a lower store's layers mount read-only, and our layers
    stack on them through the lower store's ``l/`` links."""
    lower_graph = root / "lower"
    lower = make_driver("overlay", str(lower_graph / "overlay"))
    lower.create("a" * 64, None)
    Path(lower.layer_dir("a" * 64), "diff", "from-lower").write_text("x")
    d = make_driver("overlay", str(root / "g" / "overlay"), [f"overlay.imagestore={lower_graph}"])
    assert isinstance(d, OverlayDriver)
    assert d.exists("a" * 64) and d.list_layers() == []
    assert d.layer_dir("a" * 64) == str(lower_graph / "overlay" / ("a" * 64))
    path = d.get("a" * 64, MountOptions())
    opts = mount_options_of(path)
    assert "ro" in opts and not any(o.startswith("upperdir=") for o in opts)
    d.put("a" * 64)
    d.create("b" * 64, "a" * 64)
    link = Path(lower.layer_dir("a" * 64), "link").read_text()
    assert Path(d.layer_dir("b" * 64), "lower").read_text() == f"l/{link}"
    assert d.diff_roots("b" * 64)[1] == str(lower_graph / "overlay" / ("a" * 64) / "diff")
    path = d.get("b" * 64, MountOptions())
    assert f"lowerdir={lower_graph}/overlay/l/{link}" in mount_options_of(path)
    assert os.listdir(path) == ["from-lower"]
    d.put("b" * 64)


def test_status_pairs(store: LayerStore) -> None:
    status = dict(store.status())
    assert list(status) == [
        "Backing Filesystem",
        "Supports d_type",
        "Native Overlay Diff",
        "Using metacopy",
    ]
    assert status["Backing Filesystem"] in ("extfs", "tmpfs", "xfs", "btrfs")
    assert status["Supports d_type"] == "true"
    assert status["Using metacopy"] == "false"


def test_read_only_driver_touches_nothing(root: Path) -> None:
    home = root / "g" / "overlay"
    d = make_driver("overlay", str(home), read_only=True)
    assert not home.exists()
    assert d.list_layers() == []
    with pytest.raises(errors.NotSupported, match="read-only"):
        d.create("a" * 64, None)


def test_update_id_map_rotates_the_diff(store: LayerStore, root: Path) -> None:
    d = drv(store)
    home = root / "g" / "overlay"
    d.create("a" * 64, None)
    (home / ("a" * 64) / "diff" / "f").write_text("x")
    new = (IDMap(0, 1000, 65536),)
    d.update_id_map("a" * 64, (), (), new, new)
    assert sorted(os.listdir(home / ("a" * 64) / "diff1")) == ["f"]
    assert os.listdir(home / ("a" * 64) / "diff") == []
    path = d.get("a" * 64, MountOptions())
    try:
        st = os.stat(Path(path) / "f")
        assert (st.st_uid, st.st_gid) == (1000, 1000)
        assert Path(path, "f").read_text() == "x"
    finally:
        d.put("a" * 64)


def test_a_store_used_with_a_mount_program_is_refused(root: Path) -> None:
    home = root / "g" / "overlay"
    (home / ("a" * 64) / "diff").mkdir(parents=True)
    (home / ("a" * 64) / "diff" / ".wh.deleted").write_text("")  # fuse-overlayfs style
    with pytest.raises(errors.NotSupported, match="mount program"):
        make_driver("overlay", str(home))
    assert (home / ".has-mount-program").read_text() == "true"


def test_create_over_a_leftover_directory_replaces_it(store: LayerStore, root: Path) -> None:
    home = root / "g" / "overlay"
    d = drv(store)
    d.create("a" * 64, None)
    old_link = (home / ("a" * 64) / "link").read_text()
    (home / ("a" * 64) / "diff" / "stale").write_text("x")
    d.create("a" * 64, None)
    assert os.listdir(home / ("a" * 64) / "diff") == []
    assert os.listdir(home / "l") == [(home / ("a" * 64) / "link").read_text()]
    assert not os.path.lexists(home / "l" / old_link)
