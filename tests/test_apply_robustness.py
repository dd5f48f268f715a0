"""The apply pipeline against a hostile environment rather than a hostile tarball.

- the input file is truncated by another process while the import reads it: a clean
  InvalidArchive (never SIGBUS, which would kill the host process) and no layer left;
- a pipe whose writer sends a corrupt header and then stays open and silent: the call
  fails within a second instead of waiting for the writer;
- an import under umask 077 (in a subprocess): every entry gets exactly the tar's mode,
  setuid/setgid/sticky included; parents the tar does not list follow Go.
"""

from __future__ import annotations

import io
import os
import stat
import subprocess
import sys
import tarfile
import threading
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from layerstore import LayerStore, errors


@pytest.fixture(params=["vfs", "overlay"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[LayerStore]:
    with LayerStore(tmp_path / "g", tmp_path / "r", driver=str(request.param)) as s:
        yield s


def names_under(root: str | Path) -> set[str]:
    return {n for _, dirs, files in os.walk(root) for n in dirs + files}


# ---------------------------------------------------------------------------------------
# truncated while read


def many_files_tar(path: Path, count: int, size: int) -> None:
    data = os.urandom(size)
    with tarfile.open(path, "w", format=tarfile.GNU_FORMAT) as t:
        for i in range(count):
            info = tarfile.TarInfo(f"d{i % 64}/file{i:06d}")
            info.size = size
            t.addfile(info, io.BytesIO(data))


def is_open_here(path: Path) -> bool:
    """Whether this process has an fd open on path."""
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}") == str(path):
                return True
        except OSError:
            continue
    return False


def test_input_truncated_during_import_is_an_error_and_leaves_no_layer(
    store: LayerStore, tmp_path: Path
) -> None:
    tar = tmp_path / "big.tar"
    many_files_tar(tar, 40000, 2000)
    triggered: list[bool] = []

    def extracting() -> bool:  # some file of the tar is in the store (a staging dir)
        return any(f.startswith("file0") for _, _, fs in os.walk(store.graph_root) for f in fs)

    def truncate_while_importing() -> None:
        deadline = time.monotonic() + 60
        while not (is_open_here(tar) and extracting()):
            if time.monotonic() > deadline:
                return
            time.sleep(0.002)
        triggered.append(True)
        subprocess.run(["truncate", "-s", "8192", str(tar)], check=True)

    watcher = threading.Thread(target=truncate_while_importing)
    watcher.start()
    try:
        with pytest.raises((errors.InvalidArchive, OSError)) as info:
            store.create(diff=tar)
    finally:
        watcher.join()
    assert triggered, "the import was never seen extracting"
    # Had the import ended before the truncation, it would have succeeded.
    assert "truncated" in str(info.value) or "EOF" in str(info.value)
    assert store.layers() == []
    assert not any(n.startswith("file0") for n in names_under(store.graph_root))


# ---------------------------------------------------------------------------------------
# a silent pipe


def corrupt_header() -> bytes:
    return b"not a tar header".ljust(512, b"\x07")


@pytest.mark.parametrize("compressed", [False, True], ids=["tar", "gzip"])
def test_bad_header_on_a_silent_open_pipe_fails_within_a_second(
    store: LayerStore, compressed: bool
) -> None:
    payload = corrupt_header()
    if compressed:  # a gzip stream flushed so far, not finished
        z = zlib.compressobj(wbits=31)
        payload = z.compress(payload) + z.flush(zlib.Z_SYNC_FLUSH)
    r, w = os.pipe()
    try:
        os.write(w, payload)  # and w stays open, silent, until the end of the test
        with open(r, "rb", buffering=0, closefd=False) as src:
            start = time.monotonic()
            with pytest.raises(errors.InvalidArchive, match="invalid tar header"):
                store.create(diff=src)
            elapsed = time.monotonic() - start
    finally:
        os.close(r)
        os.close(w)
    assert elapsed < 1.0
    assert store.layers() == []


# ---------------------------------------------------------------------------------------
# umask 077

MODES: list[tuple[str, bytes, int]] = [
    ("setuid", tarfile.REGTYPE, 0o4755),
    ("setgid", tarfile.REGTYPE, 0o2711),
    ("both", tarfile.REGTYPE, 0o6777),
    ("sticky-file", tarfile.REGTYPE, 0o1644),
    ("plain", tarfile.REGTYPE, 0o644),
    ("private", tarfile.REGTYPE, 0o400),
    ("big-setuid", tarfile.REGTYPE, 0o4750),  # over the write-behind size: inline path
    ("tmp", tarfile.DIRTYPE, 0o1777),
    ("shared", tarfile.DIRTYPE, 0o2775),
    ("shared/inner", tarfile.DIRTYPE, 0o755),  # in a setgid parent, without setgid
    ("shared/file", tarfile.REGTYPE, 0o664),
    ("fifo", tarfile.FIFOTYPE, 0o4666),
    ("null", tarfile.CHRTYPE, 0o666),
    ("owned-by-7", tarfile.REGTYPE, 0o6755),  # chowned to 7:7, after which chmod runs
    ("link", tarfile.LNKTYPE, 0o6755),  # a hard link to owned-by-7
    ("implicit/child", tarfile.REGTYPE, 0o640),  # its parent is not in the tar
]


def umask_tar() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for name, kind, mode in MODES:
            info = tarfile.TarInfo(name)
            info.type, info.mode = kind, mode
            data = b"x" * (3 << 20) if name.startswith("big") else b"data"
            if kind == tarfile.CHRTYPE:
                info.devmajor, info.devminor = 1, 3
            if name == "owned-by-7":
                info.uid = info.gid = 7
            if kind == tarfile.LNKTYPE:
                info.linkname = "owned-by-7"
            if kind == tarfile.REGTYPE:
                info.size = len(data)
                t.addfile(info, io.BytesIO(data))
            else:
                t.addfile(info)
    return buf.getvalue()


IMPORT_UNDER_UMASK = """
import os, sys
from layerstore import LayerStore
os.umask(0o077)
graph, run, driver, tar = sys.argv[1:]
with LayerStore(graph, run, driver=driver) as store:
    layer, _ = store.create(diff=tar)
    print(store.driver.apply_root(layer.id))
"""


@pytest.mark.parametrize("driver", ["vfs", "overlay"])
def test_modes_under_umask_077_are_the_tar_modes(tmp_path: Path, driver: str) -> None:
    tar = tmp_path / "modes.tar"
    tar.write_bytes(umask_tar())
    argv = [sys.executable, "-c", IMPORT_UNDER_UMASK, str(tmp_path / "g"), str(tmp_path / "r")]
    out = subprocess.run(
        [*argv, driver, str(tar)],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    )
    root = Path(out.stdout.strip().splitlines()[-1])
    got = {name: stat.S_IMODE(os.lstat(root / name).st_mode) for name, _, _ in MODES}
    want = {name: mode for name, _, mode in MODES}
    # A hard link is the inode of its target: the link's own header mode lands on it last.
    want["owned-by-7"] = want["link"]
    assert {k: oct(v) for k, v in got.items()} == {k: oct(v) for k, v in want.items()}
    # Parents the tar does not list: vfs applies with umask 0 (exactly 0755); overlay
    # creates them 0777 under the process umask, as Go does.
    implicit = stat.S_IMODE(os.lstat(root / "implicit").st_mode)
    assert oct(implicit) == oct(0o755 if driver == "vfs" else 0o700)
    assert os.lstat(root / "owned-by-7").st_uid == 0  # the link's header owner, set last
