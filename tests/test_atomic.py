"""Atomic writes (SPEC.md §4, §10.5): content, exact mode, temp naming, no half files."""

from __future__ import annotations

import errno
import os
import re
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from layerstore.atomic import AtomicWriter, atomic_write


def leftovers(directory: Path) -> list[str]:
    return sorted(n for n in os.listdir(directory) if n.startswith(".tmp-"))


def test_write_content_exact_mode_and_mtime(tmp_path: Path) -> None:
    target = tmp_path / "layers.json"
    mtime = atomic_write(str(target), b"[]", mode=0o640)
    st = target.stat()
    assert target.read_bytes() == b"[]"
    assert stat.S_IMODE(st.st_mode) == 0o640  # explicit chmod: umask does not apply
    assert st.st_mtime_ns == mtime
    assert leftovers(tmp_path) == []
    # A mode wider than the umask allows is kept too.
    atomic_write(str(target), b"x", mode=0o666)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666


def test_default_mode_is_0600_and_no_sync_works(tmp_path: Path) -> None:
    target = tmp_path / "volatile-layers.json"
    atomic_write(str(target), memoryview(b"abc"), sync=False)
    assert target.read_bytes() == b"abc"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600


def test_replaces_with_a_new_inode(tmp_path: Path) -> None:
    target = tmp_path / "f"
    atomic_write(str(target), b"old")
    with open(target, "rb") as reader:
        atomic_write(str(target), b"new contents")
        assert reader.read() == b"old"  # a reader holding the old inode keeps its data
    assert target.read_bytes() == b"new contents"


def test_large_and_empty_data(tmp_path: Path) -> None:
    target = tmp_path / "big"
    data = os.urandom(8 << 20)
    atomic_write(str(target), bytearray(data))
    assert target.read_bytes() == data
    atomic_write(str(target), b"")
    assert target.read_bytes() == b""


def test_relative_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    atomic_write("rel", b"1")
    assert (tmp_path / "rel").read_bytes() == b"1"


def test_failed_rename_leaves_target_and_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "adir"
    target.mkdir()
    (target / "keep").write_text("k")
    with pytest.raises(IsADirectoryError) as e:
        atomic_write(str(target), b"data")
    assert e.value.filename == str(target)
    assert (target / "keep").read_text() == "k"
    assert leftovers(tmp_path) == []


def test_missing_directory_names_the_path(tmp_path: Path) -> None:
    target = tmp_path / "nope" / "layers.json"
    with pytest.raises(FileNotFoundError) as e:
        atomic_write(str(target), b"x")
    assert e.value.filename == str(target)
    with pytest.raises(FileNotFoundError):
        AtomicWriter(str(target))


@pytest.fixture
def tiny_fs(tmp_path: Path) -> Iterator[Path]:
    """A real 64 KiB tmpfs, to make writes fail with ENOSPC."""
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def test_disk_full_keeps_old_content_and_removes_temp(tiny_fs: Path) -> None:
    target = tiny_fs / "layers.json"
    atomic_write(str(target), b"old")
    with pytest.raises(OSError) as e:
        atomic_write(str(target), b"x" * (1 << 20))
    assert e.value.errno == errno.ENOSPC
    assert e.value.filename == str(target)
    assert target.read_bytes() == b"old"
    assert leftovers(tiny_fs) == []

    writer = AtomicWriter(str(target))
    with pytest.raises(OSError) as e2:
        writer.write(b"y" * (1 << 20))
    assert e2.value.filename == str(target)
    assert writer.closed
    assert target.read_bytes() == b"old"
    assert leftovers(tiny_fs) == []


def test_temp_file_name_and_place(tmp_path: Path) -> None:
    target = tmp_path / "layers.json"
    with AtomicWriter(str(target), mode=0o644) as w:
        w.write(b"partial")
        names = leftovers(tmp_path)
        assert len(names) == 1
        m = re.fullmatch(r"\.tmp-layers\.json(\d+)", names[0])
        assert m is not None, names
        assert int(m.group(1)) < 2**32
        assert w.temp_path == str(tmp_path / names[0])
        assert stat.S_IMODE(os.stat(w.temp_path).st_mode) == 0o600
        assert not target.exists()  # invisible before commit
    assert target.read_bytes() == b"partial"
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize(
    ("commit", "expected"),
    [(False, b"old"), (True, b"new")],
)
def test_writer_commit_or_abort(tmp_path: Path, commit: bool, expected: bytes) -> None:
    target = tmp_path / "bigdata"
    target.write_bytes(b"old")
    w = AtomicWriter(str(target))
    w.write(b"ne")
    os.write(w.fileno(), b"w")  # a native writer on the fd appends at the same offset
    if commit:
        mtime = w.commit()
        assert target.stat().st_mtime_ns == mtime
    else:
        w.abort()
        w.abort()  # twice is fine
    assert target.read_bytes() == expected
    assert leftovers(tmp_path) == []
    with pytest.raises(ValueError, match="already committed or aborted"):
        w.write(b"more")
    with pytest.raises(ValueError):
        w.commit()


def test_writer_context_manager_aborts_on_exception(tmp_path: Path) -> None:
    target = tmp_path / "bigdata"
    target.write_bytes(b"old")
    with pytest.raises(KeyError), AtomicWriter(str(target)) as w:
        w.write(b"new")
        raise KeyError("boom")
    assert target.read_bytes() == b"old"
    assert leftovers(tmp_path) == []


def test_writer_dropped_without_commit_leaves_nothing(tmp_path: Path) -> None:
    target = tmp_path / "bigdata"
    w = AtomicWriter(str(target))
    w.write(b"x")
    del w
    assert not target.exists()
    assert leftovers(tmp_path) == []


def test_each_temp_name_is_fresh(tmp_path: Path) -> None:
    target = tmp_path / "f"
    writers = [AtomicWriter(str(target)) for _ in range(20)]
    assert len({w.temp_path for w in writers}) == 20
    for i, w in enumerate(writers):
        w.write(str(i).encode())
        w.commit()
    assert target.read_bytes() == b"19"
    assert leftovers(tmp_path) == []
