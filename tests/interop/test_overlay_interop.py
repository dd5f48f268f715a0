"""Our overlay driver against the real Go `containers-storage` CLI (Debian 1.43) sharing
one overlay store: the same on-disk layout, layers of either side mounted by the other,
mount counts shared through mountpoints.json, and deletes by either leaving no mount,
no layer directory and no short link behind."""

from __future__ import annotations

import io
import json
import os
import re
import stat
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from layerstore import LayerStore
from layerstore.drivers.overlay import OPAQUE_XATTR, OverlayDriver, mount_points_under

CLI = "/usr/bin/containers-storage"


class Go:
    """The Go CLI on the overlay store at ``G``/``R``."""

    def __init__(self, graph: Path, run: Path) -> None:
        self.graph, self.run = graph, run

    def __call__(self, *args: str, stdin: bytes | None = None) -> str:
        """Runs a verb; returns its stdout."""
        return self.run_verb(*args, stdin=stdin).stdout.decode()

    def run_verb(
        self, *args: str, stdin: bytes | None = None
    ) -> subprocess.CompletedProcess[bytes]:
        argv = [CLI, "--storage-driver", "overlay", "-g", str(self.graph), "-R", str(self.run)]
        done = subprocess.run([*argv, *args], input=stdin, capture_output=True, timeout=60)
        assert done.returncode == 0, done.stdout + done.stderr
        return done

    def import_layer(self, tarball: bytes, parent: str | None = None) -> str:
        return self("import-layer", *([parent] if parent else []), stdin=tarball).strip()

    def mounts(self) -> list[dict[str, object]]:
        data: list[dict[str, object]] = json.loads(
            (self.run / "overlay-layers" / "mountpoints.json").read_text()
        )
        return data


@pytest.fixture
def go(root: Path) -> Go:
    return Go(root / "g", root / "r")


@pytest.fixture
def ours(root: Path) -> Iterator[LayerStore]:
    s = LayerStore(root / "g", root / "r", driver="overlay")
    try:
        yield s
    finally:
        s.close()


def tarball(entries: list[tuple[str, str, bytes | str]]) -> bytes:
    """(name, kind, data): kind "f" file, "d" dir, "l" symlink, "x" setuid file."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, kind, data in entries:
            info = tarfile.TarInfo(name)
            info.mtime = 1_700_000_000
            if kind == "d":
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            elif kind == "l":
                info.type, info.linkname = tarfile.SYMTYPE, str(data)
                tar.addfile(info)
            else:
                body = data.encode() if isinstance(data, str) else data
                info.size, info.mode = len(body), 0o4755 if kind == "x" else 0o644
                info.uid, info.gid = (1, 2) if kind == "x" else (0, 0)
                tar.addfile(info, io.BytesIO(body))
    return buf.getvalue()


def merged_view(path: str | Path) -> dict[str, tuple[int, int, int, str]]:
    """Every path of a merged tree: mode, uid, gid, and content or link target."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(path):
        for name in sorted(dirnames) + sorted(filenames):
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            if stat.S_ISREG(st.st_mode):
                what = Path(p).read_text()
            elif stat.S_ISLNK(st.st_mode):
                what = "-> " + os.readlink(p)
            else:
                what = ""
            out[os.path.relpath(p, path)] = (st.st_mode, st.st_uid, st.st_gid, what)
    return out


def overlay_mounts(under: Path) -> list[str]:
    return [p for p in mount_points_under(str(under)) if p.endswith("/merged")]


BASE = [
    ("dir", "d", ""),
    ("dir/old", "f", "old"),
    ("dir2", "d", ""),
    ("dir2/lower", "f", "lower"),
    ("gone", "f", "deleted above"),
    ("kept", "f", "kept"),
    ("su", "x", "setuid"),
    ("link", "l", "kept"),
]
MIDDLE = [
    (".wh.gone", "f", ""),
    ("dir", "d", ""),
    ("dir/.wh..wh..opq", "f", ""),
    ("dir/new", "f", "new"),
]
TOP = [("top", "f", "top")]
EXPECTED = {"dir", "dir/new", "dir2", "dir2/lower", "kept", "su", "link", "top"}


# ---------------------------------------------------------------------------------------


def layout(home: Path, ids: list[str]) -> list[tuple[str, int, int, int, str]]:
    """The driver home with layer ids and short links replaced by their chain position."""
    links = [(home / i / "link").read_text() for i in ids]
    names = {i: f"<L{n}>" for n, i in enumerate(ids)}
    names.update({k: f"<K{n}>" for n, k in enumerate(links)})
    pattern = re.compile("|".join(map(re.escape, names)))

    def norm(text: str) -> str:
        return pattern.sub(lambda m: names[m.group(0)], text)

    out = []
    for dirpath, dirnames, filenames in os.walk(home):
        for name in dirnames + filenames:
            p = Path(dirpath, name)
            st = os.lstat(p)
            if stat.S_ISLNK(st.st_mode):
                body = "-> " + os.readlink(p)
            elif stat.S_ISREG(st.st_mode):
                body = p.read_text()
            else:
                body = ""
            rel = norm(str(p.relative_to(home)))
            out.append((rel, st.st_mode, st.st_uid, st.st_gid, norm(body)))
    return sorted(out)


def test_layout_is_the_same_as_go(root: Path) -> None:
    go = Go(root / "go-g", root / "go-r")
    a = go("create-layer").strip()
    b = go("create-layer", a).strip()
    c = go("create-layer", b).strip()
    with LayerStore(root / "our-g", root / "our-r", driver="overlay") as s:
        x, _ = s.create()
        y, _ = s.create(parent=x.id)
        z, _ = s.create(parent=y.id)
    theirs = layout(root / "go-g" / "overlay", [a, b, c])
    mine = layout(root / "our-g" / "overlay", [x.id, y.id, z.id])
    assert mine == theirs, "\n".join(map(str, mine))
    assert len(mine) == 23  # 3 layers' dirs and files, l/ and its links, the flag file
    assert ("<L2>/lower", 0o100644, 0, 0, "l/<K1>:l/<K0>") in mine
    assert ("l/<K0>", 0o120777, 0, 0, "-> ../<L0>/diff") in mine


def test_go_chain_is_mounted_by_us(go: Go, ours: LayerStore, root: Path) -> None:
    base = go.import_layer(tarball(BASE))
    middle = go.import_layer(tarball(MIDDLE), base)
    top = go.import_layer(tarball(TOP), middle)
    path = ours.mount(top)
    view = merged_view(path)
    assert set(view) == EXPECTED  # the whiteout and the opaque dir are honoured
    assert view["su"] == (0o104755, 1, 2, "setuid")
    assert view["dir/new"][3] == "new" and view["link"][3] == "-> kept"
    # Go's mount of the same layer only counts
    assert go("mount", top).strip() == path
    assert go.mounts() == [{"id": top, "path": path, "count": 2}]
    assert ours.mounted(top) == 2
    assert go("unmount", top) == ""  # 2 -> 1: still mounted
    assert overlay_mounts(root) == [path]
    assert ours.unmount(top) is False
    assert overlay_mounts(root) == []
    assert go.mounts() == []
    assert go("mounted", top) == ""
    # the other way round: Go mounts, we unmount it for real
    assert go("mount", middle).strip() == (mpath := f"{root}/g/overlay/{middle}/merged")
    assert ours.mounted(middle) == 1
    assert set(merged_view(mpath)) == EXPECTED - {"top"}
    assert ours.unmount(middle) is False
    assert overlay_mounts(root) == []
    assert go("mounted", middle) == ""


def test_our_chain_is_mounted_by_go(go: Go, ours: LayerStore, root: Path) -> None:
    d = ours.driver
    assert isinstance(d, OverlayDriver)
    a, _ = ours.create()
    b, _ = ours.create(parent=a.id)
    c, _ = ours.create(parent=b.id)
    da, db = Path(d.apply_root(a.id)), Path(d.apply_root(b.id))
    (da / "gone").write_text("x")
    (da / "dir").mkdir()
    (da / "dir" / "old").write_text("old")
    os.mknod(db / "gone", stat.S_IFCHR, os.makedev(0, 0))
    (db / "dir").mkdir()
    os.setxattr(db / "dir", OPAQUE_XATTR, b"y")
    (db / "dir" / "new").write_text("new")
    path = ours.mount(c.id)
    Path(path, "written-by-us").write_text("ours")
    # Go mounts our child: the same mount, counted, showing what we wrote through ours
    assert go("mount", c.id).strip() == path
    assert go.mounts() == [{"id": c.id, "path": path, "count": 2}]
    assert set(merged_view(path)) == {"dir", "dir/new", "written-by-us"}
    assert go("unmount", c.id) == ""
    assert ours.unmount(c.id) is False
    assert overlay_mounts(root) == []
    # Go mounts it fresh and sees the same tree; Go's unmount is a real unmount
    gpath = go("mount", c.id).strip()
    assert gpath == path and overlay_mounts(root) == [path]
    assert merged_view(gpath)["written-by-us"][3] == "ours"
    assert "gone" not in merged_view(gpath)
    go("unmount", c.id)
    assert overlay_mounts(root) == []
    # a Go layer on top of ours, and one of ours on top of that: mixed chains mount
    g4 = go.import_layer(tarball([("go-file", "f", "go")]), c.id)
    e, _ = ours.create(parent=g4)
    epath = ours.mount(e.id)
    assert set(merged_view(epath)) == {"dir", "dir/new", "written-by-us", "go-file"}
    assert go("mount", e.id).strip() == epath
    assert go("unmount", e.id) == ""
    assert ours.unmount(e.id) is False
    assert overlay_mounts(root) == []


def test_deletes_by_either_leave_nothing(go: Go, ours: LayerStore, root: Path) -> None:
    home = root / "g" / "overlay"
    a, _ = ours.create()
    b, _ = ours.create(parent=a.id)
    g = go.import_layer(tarball([("f", "f", "x")]), a.id)
    # ours, mounted by Go, deleted by us
    go("mount", b.id)
    link = (home / b.id / "link").read_text()
    ours.delete(b.id)
    assert overlay_mounts(root) == []
    assert not (home / b.id).exists() and not (home / "l" / link).exists()
    assert b.id not in go("layers")
    # Go's, mounted by us, deleted by Go
    path = ours.mount(g)
    assert set(merged_view(path)) == {"f"}
    link = (home / g / "link").read_text()
    go("delete-layer", g)
    assert overlay_mounts(root) == []
    assert not (home / g).exists() and not (home / "l" / link).exists()
    assert [x.id for x in ours.layers()] == [a.id]
    assert go.mounts() == []
    assert os.listdir(home / "l") == [(home / a.id / "link").read_text()]


def test_deep_go_chain_mounted_by_us(root: Path) -> None:
    """Past a page of mount data both sides mount with paths relative to the home."""
    deep = root / ("y" * 200)
    go = Go(deep / "g", deep / "r")
    parent = None
    for i in range(20):
        parent = go.import_layer(tarball([(f"f{i}", "f", str(i))]), parent)
    assert parent is not None
    with LayerStore(deep / "g", deep / "r", driver="overlay") as s:
        path = s.mount(parent)
        assert set(merged_view(path)) == {f"f{i}" for i in range(20)}
        line = next(x for x in Path("/proc/self/mountinfo").read_text().splitlines()
                    if x.split()[4] == path)  # fmt: skip
        assert "lowerdir=l/" in line and f"upperdir={parent}/diff" in line
        assert go("mount", parent).strip() == path
        go("unmount", parent)
        s.unmount(parent)
        assert overlay_mounts(root) == []


def test_status_pairs_are_gos(go: Go, ours: LayerStore) -> None:
    printed = go.run_verb("status").stderr.decode()  # 1.43 prints the status on stderr
    pairs = [tuple(line.split(": ", 1)) for line in printed.splitlines()]
    theirs = [p for p in pairs if p[0] not in ("Root", "Run Root", "Driver Name", "Driver Options")]
    assert ours.status() == theirs
    assert [k for k, _ in theirs] == [
        "Backing Filesystem",
        "Supports d_type",
        "Native Overlay Diff",
        "Using metacopy",
    ]


def test_read_only_store_lists_go_layers_and_mounts_nothing(go: Go, root: Path) -> None:
    a = go("create-layer").strip()
    b = go("create-layer", a).strip()
    go("shutdown")  # Go's driver cleanup: the home is no longer bind-mounted
    assert mount_points_under(str(root)) == []
    ro = LayerStore.read_only(root / "g", driver="overlay")
    try:
        assert [x.id for x in ro.layers()] == [a, b]
        assert ro.driver.list_layers() == sorted([a, b])
        assert isinstance(ro.driver, OverlayDriver)
        assert ro.driver.diff_roots(b) == [f"{root}/g/overlay/{i}/diff" for i in (b, a)]
    finally:
        ro.close()
    assert mount_points_under(str(root)) == []
