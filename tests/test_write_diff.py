"""LayerStore.write_diff: the same bytes as diff(), written straight into an fd."""

from __future__ import annotations

import gzip
import io
import os
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from layerstore import Compression, LayerStore, errors


def _tar(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 1_700_000_000
            t.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[LayerStore]:
    with LayerStore(tmp_path / "g", tmp_path / "r") as s:
        yield s


def test_write_diff_to_a_file_is_the_original_tarball(store: LayerStore, tmp_path: Path) -> None:
    data = _tar({"etc/hosts": b"127.0.0.1 localhost\n", "big": os.urandom(3 << 20)})
    layer, _ = store.create(diff=gzip.compress(data))
    out = tmp_path / "out.tar"
    with open(out, "wb") as f:
        n = store.write_diff(layer.id, f.fileno(), compression=Compression.NONE)
    assert n == len(data)
    assert out.read_bytes() == data
    with open(out, "wb") as f:  # default: the layer's own compression (gzip)
        store.write_diff(layer.id, f.fileno())
    assert gzip.decompress(out.read_bytes()) == data


def test_write_diff_into_a_pipe_and_of_a_child(store: LayerStore) -> None:
    base, _ = store.create(diff=_tar({"a": b"1", "b": b"2"}))
    child, _ = store.create(parent=base.id)
    os.unlink(os.path.join(store.mount(child.id), "a"))
    rfd, wfd = os.pipe()
    got = bytearray()

    def drain() -> None:
        while chunk := os.read(rfd, 1 << 16):
            got.extend(chunk)

    reader = threading.Thread(target=drain)
    reader.start()
    try:
        store.write_diff(child.id, wfd)
    finally:
        os.close(wfd)
        reader.join()
        os.close(rfd)
    with tarfile.open(fileobj=io.BytesIO(bytes(got))) as t:
        assert [m.name for m in t.getmembers()] == [".wh.a"]
    with store.diff(child.id) as s:
        assert len(s.read()) == len(got)


def test_write_diff_errors_name_the_layer(store: LayerStore, tmp_path: Path) -> None:
    with pytest.raises(errors.LayerUnknown), open(tmp_path / "x", "wb") as f:
        store.write_diff("no-such-layer", f.fileno())
    layer, _ = store.create(diff=_tar({"f": b"x"}))
    with pytest.raises(errors.NotSupported, match=r"tar\.xz"), open(tmp_path / "x", "wb") as f:
        store.write_diff(layer.id, f.fileno(), compression=Compression.XZ)
