"""Hostile tarballs against the native apply pipeline.

Each tarball is applied to a layer directory inside a temporary graph root that also
holds a victim directory and file. Whatever the tarball says, nothing outside the layer
directory may change (a full snapshot of the surroundings is compared), and bad input
gets a clear InvalidArchive.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import stat
import subprocess
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from layerstore import _native
from layerstore.errors import InvalidArchive

Build = Callable[[Path], bytes]  # gets the absolute victim dir, returns the input bytes


def tar_of(*entries: tuple[str, bytes, dict[str, Any]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for name, kind, fields in entries:
            info = tarfile.TarInfo(name)
            info.type = kind
            data = fields.pop("data", b"")
            for k, v in fields.items():
                setattr(info, k, v)
            info.size = len(data) if kind == tarfile.REGTYPE else 0
            t.addfile(info, io.BytesIO(data) if data else None)
    return buf.getvalue()


def f(name: str, data: bytes = b"pwned\n", **kw: Any) -> tuple[str, bytes, dict[str, Any]]:
    return (name, tarfile.REGTYPE, {"data": data, "mode": 0o6777, **kw})


def sym(name: str, target: str) -> tuple[str, bytes, dict[str, Any]]:
    return (name, tarfile.SYMTYPE, {"linkname": target})


def hard(name: str, target: str) -> tuple[str, bytes, dict[str, Any]]:
    return (name, tarfile.LNKTYPE, {"linkname": target, "mode": 0o6777, "uid": 4242})


def d(name: str, **kw: Any) -> tuple[str, bytes, dict[str, Any]]:
    return (name, tarfile.DIRTYPE, {"mode": 0o777, **kw})


def raw_header(name: str, size: int, kind: bytes = tarfile.REGTYPE) -> bytes:
    info = tarfile.TarInfo(name)
    info.size, info.type = size, kind
    return info.tobuf(format=tarfile.GNU_FORMAT)


def zstd(data: bytes) -> bytes:
    return subprocess.run(["zstd", "-c", "-q"], input=data, capture_output=True, check=True).stdout


def corrupt(data: bytes) -> bytes:
    mid = len(data) // 2
    return data[:mid] + bytes(b ^ 0x5A for b in data[mid : mid + 64]) + data[mid + 64 :]


BIG = os.urandom(256 << 10)

# name -> (builder, must_fail); the rest must apply cleanly (clamped into the layer).
# The builders may aim at the victim by absolute path.
CORPUS: dict[str, tuple[Build, bool]] = {
    "dotdot": (lambda v: tar_of(f("../victim/file"), f("../../../../../../etc/evil")), False),
    "dotdot-inside": (lambda v: tar_of(d("a"), f("a/../../victim/file")), False),
    "absolute": (lambda v: tar_of(f(str(v / "file")), f("/etc/passwd-evil")), False),
    "symlink-parent-absolute": (lambda v: tar_of(sym("s", str(v)), f("s/file")), True),
    "symlink-parent-root": (lambda v: tar_of(sym("s", "/"), f("s/victim/file")), False),
    "symlink-parent-relative": (
        lambda v: tar_of(sym("s", "../../../../../../../" + str(v)), f("s/file")),
        True,
    ),
    "symlink-parent-dotdot-chain": (
        lambda v: tar_of(d("x"), sym("x/up", "../.."), f("x/up/victim/file")),
        False,
    ),
    "symlink-then-file": (lambda v: tar_of(sym("link", str(v / "file")), f("./link")), True),
    "symlink-then-dir-metadata": (lambda v: tar_of(sym("dd", str(v)), d("dd/")), True),
    "symlink-then-hardlink-through": (
        lambda v: tar_of(sym("s", str(v)), hard("h", "s/file")),
        True,
    ),
    "hardlink-out-dotdot": (lambda v: tar_of(hard("h", "../victim/file")), True),
    "hardlink-out-absolute": (lambda v: tar_of(hard("h", str(v / "file"))), True),
    "hardlink-to-symlink-out-then-write": (
        lambda v: tar_of(sym("s", str(v / "file")), hard("h", "s"), f("h/x")),
        True,
    ),
    "symlink-to-victim-then-xattr-file": (
        lambda v: tar_of(
            sym("s", str(v / "file")),
            hard("t", "s"),
            ("t2", tarfile.LNKTYPE, {"linkname": "s", "pax_headers": {"SCHILY.xattr.user.x": "1"}}),
        ),
        True,
    ),
    "whiteout-out": (lambda v: tar_of(f("../victim/.wh.file", b""), f(".wh..", b"")), True),
    "whiteout-through-symlink": (lambda v: tar_of(sym("s", str(v)), f("s/.wh.file", b"")), True),
    "opaque-through-symlink": (
        lambda v: tar_of(sym("s", str(v)), f("s/.wh..wh..opq", b"")),
        True,
    ),
    "truncated": (lambda v: tar_of(f("big", BIG))[: 512 + 1000], True),
    "truncated-header": (lambda v: tar_of(f("a"))[:300], True),
    "huge-declared-size": (lambda v: raw_header("huge", 1 << 40) + b"x" * 4096, True),
    "negative-looking-size": (
        lambda v: (
            raw_header("neg", 0)[:124] + b"\xff" * 12 + raw_header("neg", 0)[136:] + b"\0" * 1024
        ),
        True,
    ),
    "corrupt-gzip": (lambda v: corrupt(gzip.compress(tar_of(f("big", BIG)))), True),
    "truncated-gzip": (lambda v: gzip.compress(tar_of(f("big", BIG)))[:-40], True),
    "corrupt-zstd": (lambda v: corrupt(zstd(tar_of(f("big", BIG)))), True),
    "truncated-zstd": (lambda v: zstd(tar_of(f("big", BIG)))[:-100], True),
    "duplicate-paths": (lambda v: tar_of(f("dup"), f("./dup")), True),
    "duplicate-dir-paths": (lambda v: tar_of(d("dd"), d("dd/")), True),
    "unknown-type-contiguous": (lambda v: tar_of(("weird", tarfile.CONTTYPE, {})), True),
    "unknown-type-letter": (lambda v: tar_of(("weird", b"Z", {})), True),
    "junk": (lambda v: os.urandom(20000), True),
    "empty-file": (lambda v: b"", False),
    "device-over-victim-name": (
        lambda v: tar_of(("../victim/file", tarfile.CHRTYPE, {"devmajor": 1, "devminor": 3})),
        False,
    ),
    "fifo-through-symlink": (
        lambda v: tar_of(sym("s", str(v)), ("s/fifo", tarfile.FIFOTYPE, {})),
        True,
    ),
}


def snapshot(top: Path, skip: Path) -> dict[str, tuple[Any, ...]]:
    out: dict[str, tuple[Any, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(top):
        here = Path(dirpath)
        if here == skip:
            dirnames[:] = []
            continue
        for name in [".", *dirnames, *filenames]:
            p = here / name
            if p == skip:
                continue
            st = p.lstat()
            content: Any = None
            if stat.S_ISREG(st.st_mode):
                content = hashlib.sha256(p.read_bytes()).hexdigest()
            elif stat.S_ISLNK(st.st_mode):
                content = os.readlink(p)
            xattrs = (
                ()
                if stat.S_ISLNK(st.st_mode)
                else tuple(sorted(os.listxattr(p, follow_symlinks=False)))
            )
            out[str(p)] = (
                st.st_mode,
                st.st_uid,
                st.st_gid,
                st.st_mtime_ns,
                st.st_ctime_ns,
                st.st_nlink,
                st.st_ino,
                content,
                xattrs,
            )
    return out


@pytest.fixture
def graph_root(tmp_path: Path) -> tuple[Path, Path]:
    graph = tmp_path / "graph"
    layer = graph / "vfs" / "dir" / "layer"
    layer.mkdir(parents=True)
    victim = graph / "victim"
    victim.mkdir()
    (victim / "file").write_bytes(b"precious\n")
    os.chmod(victim / "file", 0o644)
    (victim / "sub").mkdir()
    (victim / "sub" / "deep").write_bytes(b"deep\n")
    (graph / "victim-file").write_bytes(b"also precious\n")
    return graph, layer


@pytest.mark.parametrize("whiteout_format", ["vfs", "overlay"])
@pytest.mark.parametrize("case", sorted(CORPUS))
def test_nothing_outside_the_layer_changes(
    graph_root: tuple[Path, Path], case: str, whiteout_format: str
) -> None:
    graph, layer = graph_root
    build, must_fail = CORPUS[case]
    data = build(graph / "victim")
    # the layer's surroundings: the graph root, and /etc where absolute names point
    before = snapshot(graph, layer)
    etc_before = sorted(os.listdir("/etc"))
    ts = graph.parent / "layer.tar-split.gz"  # outside the watched graph root
    fd = os.open(ts, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        if must_fail:
            with pytest.raises(InvalidArchive) as err:
                _native.apply_layer(
                    data, str(layer), tarsplit_fd=fd, whiteout_format=whiteout_format, sync=False
                )
            assert str(err.value)  # a message, not an empty error
        else:
            # clamped into the layer, as Go's chroot does: no error
            _native.apply_layer(
                data, str(layer), tarsplit_fd=fd, whiteout_format=whiteout_format, sync=False
            )
    finally:
        os.close(fd)
    ts.unlink()
    after = snapshot(graph, layer)
    assert after == before
    assert sorted(os.listdir("/etc")) == etc_before
    assert (graph / "victim" / "file").read_bytes() == b"precious\n"


def test_escapes_are_clamped_into_the_layer(graph_root: tuple[Path, Path]) -> None:
    graph, layer = graph_root
    data = tar_of(f("../evil"), f("a/../../evil2"), f("/abs/file"), sym("s", "/"), f("s/via-root"))
    fd = os.open(graph.parent / "ts", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        _native.apply_layer(data, str(layer), tarsplit_fd=fd, sync=False)
    finally:
        os.close(fd)
    assert (layer / "evil").read_bytes() == b"pwned\n"
    assert (layer / "evil2").is_file()
    assert (layer / "abs" / "file").is_file()
    assert (layer / "via-root").is_file()
    assert not (graph / "vfs" / "dir" / "evil").exists()


def test_messages_name_the_fault(graph_root: tuple[Path, Path]) -> None:
    graph, layer = graph_root
    cases = {
        "duplicates of file paths not supported": tar_of(f("dup"), f("./dup")),
        "unexpected EOF": CORPUS["truncated"][0](graph),
        "unhandled tar header type 90": tar_of(("weird", b"Z", {})),
        "invalid hardlink": tar_of(hard("h", "../victim/file")),
    }
    for expected, data in cases.items():
        fd = os.open(graph.parent / "ts", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            with pytest.raises(InvalidArchive, match=expected):
                _native.apply_layer(data, str(layer), tarsplit_fd=fd, sync=False)
        finally:
            os.close(fd)
