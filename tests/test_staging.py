"""Staged layers: a differ fills a staging directory, the store commits it as a layer.

``apply_diff_with_differ`` makes the staging directory (``G/<driver>/staging/<rand>/dir``)
and runs the differ in it without the store lock; ``create(staged=output)`` renames it
into place and records digests, TOC digest, sets, tar-split and big data;
``cleanup_staging_directory`` throws it away. Failures leave nothing behind.
"""

from __future__ import annotations

import dataclasses
import gzip
import io
import json
import os
import subprocess
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from layerstore import Compression, LayerStore, errors
from layerstore.staging import (
    ApplyDiffWithDifferOpts,
    DifferContext,
    DifferOutput,
    TarballDiffer,
)
from layerstore.staging_prune import _ofd_lock, prune_staging

GO_CLI = "/usr/bin/containers-storage"
DRIVERS = ["vfs", "overlay"]


@pytest.fixture(autouse=True)
def _no_mounts_left(tmp_path: Path, unmount_all: Callable[[Path], None]) -> Iterator[None]:
    yield
    unmount_all(tmp_path)


def make_tar(entries: list[tuple[str, bytes | None]]) -> bytes:
    """A tarball of files (bytes) and directories (None), in order."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, data in entries:
            info = tarfile.TarInfo(name)
            info.mtime = 1_700_000_000
            if data is None:
                info.type = tarfile.DIRTYPE
                info.mode = 0o755
                tf.addfile(info)
            else:
                info.size = len(data)
                info.mode = 0o644
                tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def staging_entries(store: LayerStore) -> list[str]:
    root = store.driver.staging_root()
    return sorted(os.listdir(root)) if os.path.isdir(root) else []


def open_store(tmp_path: Path, driver: str) -> LayerStore:
    return LayerStore(tmp_path / "g", tmp_path / "r", driver=driver)


@pytest.mark.parametrize("driver", DRIVERS)
def test_tarball_differ_stages_and_create_commits(tmp_path: Path, driver: str) -> None:
    store = open_store(tmp_path, driver)
    tarball = make_tar([("etc/", None), ("etc/hosts", b"127.0.0.1 localhost\n")])
    gz = gzip.compress(tarball, mtime=0)
    out = store.apply_diff_with_differ(None, None, TarballDiffer(gz))
    # the files are in the staging dir, not yet a layer
    assert out.target.startswith(store.driver.staging_root() + "/")
    assert Path(out.target, "etc", "hosts").read_bytes() == b"127.0.0.1 localhost\n"
    assert store.layers() == []
    assert out.compression == int(Compression.GZIP)
    layer, _ = store.create(names=["staged"], staged=out, flags={"k": "v"})
    assert not os.path.exists(out.target)
    assert staging_entries(store) == []
    assert list(layer.names) == ["staged"] and dict(layer.flags) == {"k": "v"}
    assert layer.uncompressed_digest == out.uncompressed_digest
    assert layer.compressed_digest == out.compressed_digest
    assert layer.uncompressed_size == len(tarball)
    assert [x.id for x in store.layers_by_uncompressed_digest(out.uncompressed_digest)] == [
        layer.id
    ]
    with store.diff(layer.id, compression=Compression.NONE) as f:
        assert f.read() == tarball  # the tar-split was committed with the layer
    mounted = store.mount(layer.id)
    assert Path(mounted, "etc", "hosts").read_bytes() == b"127.0.0.1 localhost\n"
    store.unmount(layer.id)
    # the Go CLI reads the layer and reproduces the tarball from its tar-split
    go = subprocess.run(
        [GO_CLI, "--storage-driver", driver, "-g", str(tmp_path / "g"),
         "--run", str(tmp_path / "r"), "diff", "-u", layer.id],
        capture_output=True, timeout=60,
    )  # fmt: skip
    assert go.returncode == 0, go.stderr
    assert go.stdout == tarball


class DirDiffer:
    """A differ that writes files itself and describes them (as a chunked puller
    would): a TOC digest, metadata, big data, and an uncompressed tar-split."""

    def __init__(self, fail_after_files: bool = False) -> None:
        self.fail_after_files = fail_after_files
        self.seen: DifferContext | None = None

    def apply_diff(self, dest: str, options: DifferContext) -> DifferOutput:
        self.seen = options
        os.mkdir(os.path.join(dest, "usr"), 0o755)
        with open(os.path.join(dest, "usr", "data"), "wb") as f:
            f.write(b"x" * 1000)
        if self.fail_after_files:
            raise OSError(5, "the network went away", dest)
        return DifferOutput(
            toc_digest="sha256:" + "a" * 64,
            uncompressed_digest="sha256:" + "b" * 64,
            size=3072,
            metadata="made by DirDiffer",
            uid_set=[0],
            gid_set=[0],
            tar_split=b'{"type":2,"payload":"","position":0}\n',
            big_data={"toc": json.dumps({"entries": 2}).encode()},
        )


@pytest.mark.parametrize("driver", DRIVERS)
def test_a_custom_differ_output_is_recorded(tmp_path: Path, driver: str) -> None:
    store = open_store(tmp_path, driver)
    differ = DirDiffer()
    out = store.apply_diff_with_differ(None, ApplyDiffWithDifferOpts(), differ)
    assert differ.seen is not None and differ.seen.whiteout_format == store.driver.whiteout_format
    layer, size = store.create(staged=out)
    assert size == -1
    assert layer.toc_digest == "sha256:" + "a" * 64
    assert store.layers_by_toc_digest("sha256:" + "a" * 64)[0].id == layer.id
    assert store.metadata(layer.id) == "made by DirDiffer"
    assert store.size(layer.id) == 3072
    with store.big_data(layer.id, "toc") as f:
        assert json.loads(f.read()) == {"entries": 2}
    with gzip.open(store.layerdir + f"/{layer.id}.tar-split.gz") as f:
        assert f.read() == b'{"type":2,"payload":"","position":0}\n'
    assert Path(store.driver.apply_root(layer.id), "usr", "data").stat().st_size == 1000
    assert staging_entries(store) == []


@pytest.mark.parametrize("driver", DRIVERS)
def test_a_differ_failing_midway_leaves_no_staging_dir(tmp_path: Path, driver: str) -> None:
    store = open_store(tmp_path, driver)
    with pytest.raises(OSError, match="the network went away"):
        store.apply_diff_with_differ(None, None, DirDiffer(fail_after_files=True))
    assert staging_entries(store) == []
    assert store.layers() == []
    with pytest.raises(errors.InvalidArchive):
        store.apply_diff_with_differ(None, None, TarballDiffer(b"this is not a tarball" * 100))
    assert staging_entries(store) == []


@pytest.mark.parametrize("driver", DRIVERS)
def test_a_failed_commit_leaves_no_layer_and_no_staging_dir(tmp_path: Path, driver: str) -> None:
    store = open_store(tmp_path, driver)
    store.create(names=["taken"])
    before = json.loads(Path(store.layerdir, "layers.json").read_text())
    out = store.apply_diff_with_differ(None, None, DirDiffer())
    with pytest.raises(errors.DuplicateName):
        store.create(names=["taken"], staged=out)
    assert staging_entries(store) == []
    out = store.apply_diff_with_differ(None, None, DirDiffer())
    with pytest.raises(errors.InvalidBigDataName):
        store.create(staged=dataclasses.replace(out, big_data={"..": b"x"}))
    assert staging_entries(store) == []
    assert json.loads(Path(store.layerdir, "layers.json").read_text()) == before
    assert store.driver.list_layers() == [r["id"] for r in before]
    # a consumed output cannot be committed twice
    with pytest.raises(FileNotFoundError, match="staging directory"):
        store.create(staged=out)


def store_paths(tmp_path: Path) -> dict[str, int]:
    """Every path of the store (graph and run roots) with its mode: what a user sees."""
    found: dict[str, int] = {}
    for top in (tmp_path / "g", tmp_path / "r"):
        for dirpath, dirnames, filenames in os.walk(top):
            for name in dirnames + filenames:
                path = os.path.join(dirpath, name)
                found[os.path.relpath(path, tmp_path)] = os.lstat(path).st_mode
    return found


@pytest.mark.parametrize("driver", DRIVERS)
def test_imports_leave_no_staging_directory_behind(tmp_path: Path, driver: str) -> None:
    store = open_store(tmp_path, driver)
    base, _ = store.create(names=["base"])
    before = store_paths(tmp_path)
    bad_inputs = [
        b"this is not a tarball" * 100,
        gzip.compress(b"this is not a tarball either" * 100),
        make_tar([("f", b"x" * 5000)])[:3000],  # cut short
    ]
    for bad in bad_inputs:
        with pytest.raises(errors.InvalidArchive):
            store.create(parent=base.id, diff=bad)
        assert store_paths(tmp_path) == before
    layer, _ = store.create(parent=base.id, diff=make_tar([("f", b"data")]))
    assert not os.path.exists(store.driver.staging_root())
    store.delete(layer.id)
    assert store_paths(tmp_path) == before


def test_prune_takes_directories_whose_maker_died_before_locking(tmp_path: Path) -> None:
    """A SIGKILL between making a staging directory and locking it leaves an empty one,
    or one with only the fresh (unlocked) lock file: the next prune removes both, and
    leaves a maker that holds its fresh lock, and what is not ours while it is young."""
    store = open_store(tmp_path, "vfs")
    root = Path(store.driver.staging_root())
    empty, unlocked, locked, foreign = (root / n for n in ("e", "u", "l", "f"))
    for d in (empty, unlocked, locked, foreign):
        d.mkdir(parents=True)
    (unlocked / ".staging.lock").touch()
    (locked / ".staging.lock").touch()
    (foreign / "dir").mkdir()
    fd = os.open(locked / ".staging.lock", os.O_RDWR)
    try:
        _ofd_lock(fd)  # another open file description: a live maker's
        removed = prune_staging([str(root)])
    finally:
        os.close(fd)
    assert sorted(removed) == [str(empty), str(unlocked)]
    assert sorted(os.listdir(root)) == ["f", "l"]
    # a new staging directory is made and locked as usual beside them
    out = store.apply_diff_with_differ(None, None, DirDiffer())
    store.cleanup_staging_directory(out.target)
    assert sorted(os.listdir(root)) == ["f", "l"]


def test_cleanup_staging_directory(tmp_path: Path) -> None:
    store = open_store(tmp_path, "overlay")
    out = store.apply_diff_with_differ(None, None, DirDiffer())
    assert len(staging_entries(store)) == 1
    assert os.path.exists(os.path.join(os.path.dirname(out.target), "staging.lock"))
    store.cleanup_staging_directory(out.target)
    assert staging_entries(store) == []
    store.cleanup_staging_directory(out.target)  # already gone: fine


def test_vfs_staging_starts_as_a_copy_of_the_parent(tmp_path: Path) -> None:
    store = open_store(tmp_path, "vfs")
    base, _ = store.create(diff=make_tar([("a", b"from the base")]))
    other, _ = store.create()
    differ = TarballDiffer(make_tar([("b", b"from the child")]))
    out = store.apply_diff_with_differ(None, ApplyDiffWithDifferOpts(parent=base.id), differ)
    assert Path(out.target, "a").read_bytes() == b"from the base"
    with pytest.raises(errors.LayerUnknown, match="was made on parent"):
        store.create(parent=other.id, staged=out)  # not the parent it was copied from
    assert staging_entries(store) == []
    out = store.apply_diff_with_differ(
        None, ApplyDiffWithDifferOpts(parent=base.id), TarballDiffer(make_tar([("b", b"c")]))
    )
    child, _ = store.create(parent=base.id, staged=out)
    root = Path(store.driver.layer_dir(child.id))
    assert (root / "a").read_bytes() == b"from the base" and (root / "b").read_bytes() == b"c"
    with store.diff(child.id) as f:
        assert f.read() == make_tar([("b", b"c")])


@pytest.mark.parametrize("driver", DRIVERS)
def test_apply_diff_to_an_existing_layer_goes_through_staging(tmp_path: Path, driver: str) -> None:
    store = open_store(tmp_path, driver)
    base, _ = store.create(diff=make_tar([("keep", b"1")]))
    child, _ = store.create(parent=base.id)
    tarball = make_tar([("new", b"2")])
    store.apply_diff(child.id, tarball)
    assert staging_entries(store) == []
    assert store.get(child.id).uncompressed_size == len(tarball)
    with store.diff(child.id) as f:
        assert f.read() == tarball
    merged = Path(store.mount(child.id))
    assert sorted(os.listdir(merged)) == ["keep", "new"]
    store.unmount(child.id)
