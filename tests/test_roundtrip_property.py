"""Property: any tarball → ``create(diff=)`` → ``diff`` gives the same bytes back, and the
extracted tree is what the tarball says.

Hypothesis generates tarballs (GNU, PAX and USTAR, built by Python's tarfile, then
left uncompressed or compressed with gzip, bzip2, xz or the ``zstd`` tool) with every
entry type: directories, regular files (empty, one block, more than one block),
symlinks (relative, absolute, dangling), hard links, fifos, character and block
devices; long names and link targets (> 100 bytes), non-UTF-8 names, xattrs
(``SCHILY.xattr.user.*``), sub-second mtimes, setuid/setgid/sticky modes, and uids/gids
beyond 2097151 (PAX records, GNU base-256). Each is imported into a vfs and an overlay
store; then:

- ``diff`` (uncompressed) is byte-identical to the tarball, and ``diff`` with the
  layer's own compression decompresses to it;
- the record has the digests and sizes of the blob and the tarball, the compression,
  and the uid/gid sets of the headers;
- the tree holds exactly the tarball's paths, each with its type, mode, owners, mtime
  (seconds), link target / contents / device numbers and xattrs; hard links share an
  inode (whose metadata is the last header's for it, as Go extracts them).

Profiles: ``quick`` (default, ~50 examples per driver) and ``long`` (by hand:
``HYPOTHESIS_PROFILE=long .venv/bin/python -m pytest tests/test_roundtrip_property.py``).
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import io
import lzma
import os
import random
import stat
import subprocess
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from layerstore import Compression, LayerStore

settings.register_profile(
    "quick",
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "long",
    max_examples=2000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
PROFILE = settings.get_profile(
    "long" if os.environ.get("HYPOTHESIS_PROFILE") == "long" else "quick"
)

FORMATS = {"gnu": tarfile.GNU_FORMAT, "pax": tarfile.PAX_FORMAT, "ustar": tarfile.USTAR_FORMAT}
USTAR_MAX_ID = 8**7 - 1  # 2097151: the largest id a 7-digit octal field holds

# ---------------------------------------------------------------------------------------
# the model of a tarball


@dataclass
class Entry:
    path: str  # str with surrogate escapes for non-UTF-8 bytes
    kind: bytes  # tarfile type
    mode: int
    uid: int
    gid: int
    mtime: float
    data: bytes = b""
    linkname: str = ""
    dev: tuple[int, int] = (0, 0)
    xattrs: dict[str, bytes] = field(default_factory=dict)


@dataclass
class Layer:
    fmt: str
    compression: str
    entries: list[Entry]


KINDS = [
    tarfile.DIRTYPE,
    tarfile.REGTYPE,
    tarfile.REGTYPE,
    tarfile.SYMTYPE,
    tarfile.LNKTYPE,
    tarfile.FIFOTYPE,
    tarfile.CHRTYPE,
    tarfile.BLKTYPE,
]

_SHORT_CHARS = st.sampled_from([*"abcxyz019_-.+ ~", "\u00e9", "\u65e5", "\udce9", "\udcff"])


def component(fmt: str) -> st.SearchStrategy[str]:
    short = st.text(_SHORT_CHARS, min_size=1, max_size=12)
    if fmt == "ustar":
        names = short
    else:
        names = st.one_of(
            short, short, short, st.text(st.sampled_from("ab"), min_size=101, max_size=200)
        )
    return names.filter(
        lambda n: n not in (".", "..") and not n.startswith(".wh.") and len(os.fsencode(n)) < 256
    )


def ids(fmt: str) -> st.SearchStrategy[int]:
    common = st.sampled_from([0, 1, 5, 999, 65534])
    if fmt == "ustar":
        return st.one_of(common, st.integers(0, USTAR_MAX_ID))
    return st.one_of(common, st.integers(0, 2**31 - 1), st.integers(USTAR_MAX_ID + 1, 2**31 - 1))


def mtimes(fmt: str) -> st.SearchStrategy[float]:
    seconds = st.one_of(st.integers(1, 2**33 - 1), st.sampled_from([1_700_000_000, 1]))
    if fmt != "pax":
        return seconds.map(float)
    fraction = st.integers(0, 999_999)
    return st.one_of(
        seconds.map(float),
        st.tuples(st.integers(1, 2**32), fraction).map(lambda t: t[0] + t[1] / 1e6),
    )


def contents() -> st.SearchStrategy[bytes]:
    sized = st.tuples(st.integers(0, 2**32), st.sampled_from([511, 512, 513, 1024, 70_000]))
    return st.one_of(
        st.just(b""),
        st.binary(max_size=600),
        sized.map(lambda t: random.Random(t[0]).randbytes(t[1])),
    )


@st.composite
def layers(draw: st.DrawFn) -> Layer:
    fmt = draw(st.sampled_from(list(FORMATS)))
    compression = draw(st.sampled_from(["none", "none", "gzip", "bzip2", "xz", "zstd"]))
    dirs = [""]
    files: list[Entry] = []
    used: set[str] = set()
    entries: list[Entry] = []
    for _ in range(draw(st.integers(0, 14))):
        kind = draw(st.sampled_from(KINDS))
        if kind == tarfile.LNKTYPE and not files:
            kind = tarfile.REGTYPE
        parent = draw(st.sampled_from(dirs))
        name = draw(component(fmt))
        path = f"{parent}/{name}" if parent else name
        if path in used or (fmt == "ustar" and not _fits_ustar(path)):
            continue
        used.add(path)
        entry = Entry(
            path,
            kind,
            draw(st.integers(0, 0o7777)),
            draw(ids(fmt)),
            draw(ids(fmt)),
            draw(mtimes(fmt)),
        )
        if kind == tarfile.REGTYPE:
            entry.data = draw(contents())
            files.append(entry)
        elif kind == tarfile.DIRTYPE:
            dirs.append(path)
        elif kind == tarfile.SYMTYPE:
            target = draw(
                st.one_of(
                    st.sampled_from(sorted(used)),
                    st.sampled_from(["/etc/passwd", "../../../escape", "dangling", "."]),
                    st.text(st.sampled_from("tu/"), min_size=101, max_size=300),
                )
            )
            if fmt == "ustar" and len(os.fsencode(target)) > 100:
                target = "dangling"
            entry.linkname = target
        elif kind == tarfile.LNKTYPE:
            entry.linkname = draw(st.sampled_from(files)).path
            if fmt == "ustar" and len(os.fsencode(entry.linkname)) > 100:
                used.discard(path)
                continue
        elif kind in (tarfile.CHRTYPE, tarfile.BLKTYPE):
            entry.dev = (draw(st.integers(0, 4095)), draw(st.integers(0, 2**20 - 1)))
        if fmt == "pax" and kind in (tarfile.REGTYPE, tarfile.DIRTYPE):
            entry.xattrs = draw(
                st.dictionaries(
                    st.text(st.sampled_from("abcdef._"), min_size=1, max_size=10).map(
                        lambda k: "user." + k
                    ),
                    st.binary(max_size=40),
                    max_size=3,
                )
            )
        entries.append(entry)
    return Layer(fmt, compression, entries)


def _fits_ustar(path: str) -> bool:
    raw = os.fsencode(path)
    if len(raw) <= 100:
        return True
    # tarfile splits at a '/' into a prefix (<= 155) and a name (<= 100)
    cut = raw.rfind(b"/", 0, 156)
    return cut > 0 and len(raw) - cut - 1 <= 100


def build_tar(layer: Layer) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(
        fileobj=buf, mode="w", format=FORMATS[layer.fmt], encoding="utf-8", errors="surrogateescape"
    ) as t:
        for e in layer.entries:
            info = tarfile.TarInfo(e.path)
            info.type, info.mode, info.uid, info.gid = e.kind, e.mode, e.uid, e.gid
            info.mtime = e.mtime if e.mtime != int(e.mtime) else int(e.mtime)
            info.linkname = e.linkname
            info.devmajor, info.devminor = e.dev
            if e.xattrs:
                info.pax_headers = {
                    f"SCHILY.xattr.{k}": v.decode("utf-8", "surrogateescape")
                    for k, v in e.xattrs.items()
                }
            if e.kind == tarfile.REGTYPE:
                info.size = len(e.data)
                t.addfile(info, io.BytesIO(e.data))
            else:
                t.addfile(info)
    return buf.getvalue()


def compress(data: bytes, how: str) -> bytes:
    if how == "gzip":
        return gzip.compress(data, compresslevel=1, mtime=0)
    if how == "bzip2":
        return bz2.compress(data, 1)
    if how == "xz":
        return lzma.compress(data, preset=0)
    if how == "zstd":
        return subprocess.run(
            ["zstd", "-q", "-c", "-1"], input=data, capture_output=True, check=True
        ).stdout
    return data


def decompress(data: bytes, how: str) -> bytes:
    if how == "gzip":
        return gzip.decompress(data)
    if how == "zstd":
        return subprocess.run(
            ["zstd", "-d", "-q", "-c"], input=data, capture_output=True, check=True
        ).stdout
    return data


RECORDED = {"none": Compression.NONE, "gzip": Compression.GZIP, "bzip2": Compression.BZIP2}
RECORDED |= {"xz": Compression.XZ, "zstd": Compression.ZSTD}


# ---------------------------------------------------------------------------------------
# what the tree must look like


def expected_tree(entries: list[Entry]) -> dict[bytes, dict[str, Any]]:
    """Path → expected properties. A hard link's header applies to the shared inode (Go
    chowns, chmods and sets times through the link), so the last header wins. An xattr
    with an empty value is not set (Go's tar reader drops empty PAX records; checked
    with the Go CLI)."""
    out: dict[bytes, dict[str, Any]] = {}
    inode_of: dict[bytes, bytes] = {}  # path -> first path of its inode
    for e in entries:
        p = os.fsencode(e.path)
        props: dict[str, Any] = {
            "mode": e.mode,
            "uid": e.uid,
            "gid": e.gid,
            "mtime": int(e.mtime),
            "xattrs": {k: v for k, v in e.xattrs.items() if v},
        }
        if e.kind == tarfile.LNKTYPE:
            first = inode_of[os.fsencode(e.linkname)]
            shared = out[first]
            shared.update(props, xattrs={**shared["xattrs"], **props["xattrs"]})
            inode_of[p] = first
            out[p] = shared  # the same dict: one inode
            continue
        inode_of[p] = p
        props["type"] = {
            tarfile.DIRTYPE: stat.S_IFDIR,
            tarfile.REGTYPE: stat.S_IFREG,
            tarfile.SYMTYPE: stat.S_IFLNK,
            tarfile.FIFOTYPE: stat.S_IFIFO,
            tarfile.CHRTYPE: stat.S_IFCHR,
            tarfile.BLKTYPE: stat.S_IFBLK,
        }[e.kind]
        props["data"] = e.data
        props["link"] = os.fsencode(e.linkname)
        props["dev"] = e.dev
        props["first"] = p
        out[p] = props
    return out


def check_tree(root: Path, entries: list[Entry]) -> None:
    expected = expected_tree(entries)
    base = os.fsencode(root)
    found: set[bytes] = set()
    inodes: dict[int, bytes] = {}
    for dirpath, dirnames, filenames in os.walk(base):
        for name in dirnames + filenames:
            found.add(os.path.relpath(os.path.join(dirpath, name), base))
    assert found == set(expected), "the tree holds exactly the tarball's paths"
    for rel, want in expected.items():
        p = os.path.join(base, rel)
        st = os.lstat(p)
        what = f"{rel!r}"
        assert stat.S_IFMT(st.st_mode) == want["type"], what
        if want["type"] != stat.S_IFLNK:
            assert stat.S_IMODE(st.st_mode) == want["mode"], what
        assert (st.st_uid, st.st_gid) == (want["uid"], want["gid"]), what
        assert st.st_mtime_ns // 1_000_000_000 == want["mtime"], what
        # one inode per first path: hard links share it, nothing else does
        assert inodes.setdefault(st.st_ino, want["first"]) == want["first"], what
        if want["type"] == stat.S_IFREG:
            with open(p, "rb") as f:
                assert f.read() == want["data"], what
        elif want["type"] == stat.S_IFLNK:
            assert os.readlink(p) == want["link"], what
        elif want["type"] in (stat.S_IFCHR, stat.S_IFBLK):
            assert (os.major(st.st_rdev), os.minor(st.st_rdev)) == want["dev"], what
        if want["type"] in (stat.S_IFREG, stat.S_IFDIR):
            names = [n for n in os.listxattr(p) if n.startswith("user.")]
            got = {n: os.getxattr(p, n) for n in names}
            assert got == want["xattrs"], what


# ---------------------------------------------------------------------------------------
# stores (one per driver for the whole module; each example adds and deletes a layer)


@pytest.fixture(scope="module", params=["vfs", "overlay"])
def store(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    unmount_all: Callable[[Path], None],
) -> Iterator[LayerStore]:
    root = tmp_path_factory.mktemp(f"roundtrip-{request.param}")
    try:
        with LayerStore(root / "g", root / "r", driver=request.param) as s:
            yield s
    finally:
        unmount_all(root)


@settings(PROFILE)
@given(layer=layers())
def test_tarball_apply_diff_round_trip(store: LayerStore, layer: Layer) -> None:
    try:
        data = build_tar(layer)
    except ValueError:  # a name or link tarfile cannot put in this format
        assume(False)
        raise
    blob = compress(data, layer.compression)
    created, size = store.create(diff=blob)
    try:
        with store.diff(created.id, compression=Compression.NONE) as s:
            assert s.read() == data
        if layer.compression in ("none", "gzip", "zstd"):
            with store.diff(created.id) as s:
                assert decompress(s.read(), layer.compression) == data
        rec = store.get(created.id)
        assert rec.compressed_digest == "sha256:" + hashlib.sha256(blob).hexdigest()
        assert rec.uncompressed_digest == "sha256:" + hashlib.sha256(data).hexdigest()
        assert (rec.compressed_size, rec.uncompressed_size) == (len(blob), len(data))
        assert rec.compression == RECORDED[layer.compression]
        assert rec.uid_set == tuple(sorted({e.uid for e in layer.entries}))
        assert rec.gid_set == tuple(sorted({e.gid for e in layer.entries}))
        if store.driver.whiteout_format == "vfs":
            assert size == sum(len(e.data) for e in layer.entries)
        check_tree(Path(store.driver.apply_root(created.id)), layer.entries)
    finally:
        store.delete(created.id)
