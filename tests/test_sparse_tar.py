"""Sparse tar entries made by GNU tar, imported like the Go CLI imports them.

Go's archive/tar expands sparse entries (PAX GNU sparse 0.0, 0.1, 1.0 and the old GNU
'S' type) into their real size, holes as zeros; containers-storage records tar-split file
entries with the real size and the CRC of the expanded bytes, and extracts full files.
We must give the same tar-split, layers.json record, files and ``diff`` as the Go CLI
for the same tarball, refuse old GNU 'S' entries as Go's extractor does, and refuse
corrupt or truncated sparse maps (as Go does) leaving the store empty.
"""

from __future__ import annotations

import gzip
import io
import json
import subprocess
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from layerstore import LayerStore, _native, errors

CLI = "/usr/bin/containers-storage"
DATA_KEYS = (
    "compressed-diff-digest",
    "compressed-size",
    "diff-digest",
    "diff-size",
    "compression",
    "uidset",
    "gidset",
)
TRAILING_EMPTY_SEGMENT = b'{"type":2,"payload":"","position":%d}'
# name -> (real size, [(offset, data)]): leading hole, trailing hole, all hole, both ends.
SHAPES: dict[str, tuple[int, list[tuple[int, bytes]]]] = {
    "lead": (700_004, [(700_000, b"tail")]),
    "trail": (300_000, [(0, b"head")]),
    "holes": (1_000_000, []),
    "ends": (2_000_002, [(0, b"AB"), (2_000_000, b"CD")]),
}


def expanded(name: str) -> bytes:
    size, extents = SHAPES[name]
    out = bytearray(size)
    for offset, data in extents:
        out[offset : offset + len(data)] = data
    return bytes(out)


def gnu_tar(tmp: Path, *options: str) -> bytes:
    """GNU tar's sparse tarball of the SHAPES files, with ``options`` for the format."""
    src = tmp / "src"
    src.mkdir(exist_ok=True)
    for name, (size, extents) in SHAPES.items():
        with open(src / name, "wb") as f:
            f.truncate(size)
            for offset, data in extents:
                f.seek(offset)
                f.write(data)
    out = tmp / "sparse.tar"
    subprocess.run(
        ["tar", "--sparse", *options, "-cf", str(out), "-C", str(src), *SHAPES],
        check=True,
    )
    return out.read_bytes()


def go(graph: Path, *args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    argv = [CLI, "--storage-driver", "vfs", "-g", str(graph), "-R", str(graph.parent / "run")]
    return subprocess.run([*argv, *args], input=stdin, capture_output=True, timeout=120)


def records(graph: Path) -> dict[str, dict[str, Any]]:
    text = (graph / "vfs-layers" / "layers.json").read_text()
    return {r["id"]: r for r in json.loads(text)} if text else {}


def tarsplit_lines(graph: Path, layer: str) -> list[bytes]:
    data = gzip.decompress((graph / "vfs-layers" / f"{layer}.tar-split.gz").read_bytes())
    lines = data.splitlines()
    # Debian's c/storage 1.43 ends with an empty segment; newer ones and we do not.
    if lines and lines[-1] == TRAILING_EMPTY_SEGMENT % (len(lines) - 1):
        lines.pop()
    return lines


def read_diff(store: LayerStore, layer: str) -> bytes:
    with store.diff(layer) as stream:
        return stream.read()


@pytest.mark.parametrize("version", ["0.0", "0.1", "1.0"])
def test_a_pax_sparse_tarball_is_imported_as_go_imports_it(tmp_path: Path, version: str) -> None:
    data = gnu_tar(tmp_path, f"--sparse-version={version}", "--format=posix")
    go_graph = tmp_path / "go" / "graph"
    done = go(go_graph, "import-layer", stdin=data)
    assert done.returncode == 0, done.stderr
    theirs = done.stdout.decode().strip()
    store = LayerStore(tmp_path / "ours" / "graph", tmp_path / "ours" / "run", driver="vfs")
    mine, _ = store.create(diff=data)

    ours_record = records(tmp_path / "ours" / "graph")[mine.id]
    go_record = records(go_graph)[theirs]
    for key in DATA_KEYS:
        assert ours_record.get(key) == go_record.get(key), key
    assert ours_record["diff-size"] == len(data)

    lines = tarsplit_lines(tmp_path / "ours" / "graph", mine.id)
    assert lines == tarsplit_lines(go_graph, theirs)
    files = {e["name"]: e["size"] for e in map(json.loads, lines) if e["type"] == 1}
    assert files == {name: size for name, (size, _) in SHAPES.items()}

    for name in SHAPES:
        mine_file = tmp_path / "ours" / "graph" / "vfs" / "dir" / mine.id / name
        go_file = go_graph / "vfs" / "dir" / theirs / name
        assert mine_file.read_bytes() == expanded(name) == go_file.read_bytes(), name

    # Not the input: the sparse headers are replayed around the expanded bytes, as in Go.
    diff = read_diff(store, mine.id)
    assert diff == go(go_graph, "diff", "-u", theirs).stdout
    assert diff != data


def test_an_old_gnu_sparse_entry_is_expanded_then_refused_like_go(tmp_path: Path) -> None:
    data = gnu_tar(tmp_path, "--format=gnu")
    # tar-split alone (no extraction) expands the 'S' entries exactly as Go's tar-split.
    (tmp_path / "sparse-gnu.tar").write_bytes(data)
    go_ts = tmp_path / "go.tar-split.gz"
    subprocess.run(
        ["tar-split", "disasm", "--output", str(go_ts), str(tmp_path / "sparse-gnu.tar")],
        check=True,
        capture_output=True,
    )
    ours_ts = tmp_path / "ours.tar-split.gz"
    with open(tmp_path / "sparse-gnu.tar", "rb") as src, ours_ts.open("wb") as dst:
        _native.tarsplit_disassemble(src.fileno(), dst.fileno())
    go_lines = gzip.decompress(go_ts.read_bytes()).splitlines()
    assert go_lines[-1] == TRAILING_EMPTY_SEGMENT % (len(go_lines) - 1)
    assert gzip.decompress(ours_ts.read_bytes()).splitlines() == go_lines[:-1]

    # Importing it fails on both sides: the extractor does not take type 'S' (83).
    go_graph = tmp_path / "go" / "graph"
    done = go(go_graph, "import-layer", stdin=data)
    assert done.returncode != 0 and b"unhandled tar header type 83" in done.stderr
    store = LayerStore(tmp_path / "ours" / "graph", tmp_path / "ours" / "run", driver="vfs")
    with pytest.raises(errors.InvalidArchive, match="unhandled tar header type 83"):
        store.create(diff=data)
    assert store.layers() == []


def _pax_sparse(records: dict[str, str], stored: bytes) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        info = tarfile.TarInfo("f")
        info.size, info.mtime, info.pax_headers = len(stored), 1_700_000_000, records
        t.addfile(info, io.BytesIO(stored))
    return buf.getvalue()


def _v01(size: str, blocks: str, sparse_map: str) -> dict[str, str]:
    return {"GNU.sparse.size": size, "GNU.sparse.numblocks": blocks, "GNU.sparse.map": sparse_map}


V10 = {"GNU.sparse.major": "1", "GNU.sparse.minor": "0", "GNU.sparse.realsize": "6"}


def _truncated_1x0_map(tmp: Path) -> bytes:
    data = gnu_tar(tmp, "--sparse-version=1.0", "--format=posix")
    return data[: 3 * 512 + 100]  # PAX header, its records, the header, then 100 map bytes


BAD_MAPS: dict[str, tuple[Callable[[Path], bytes], str]] = {
    "extent past the real size": (
        lambda tmp: _pax_sparse(_v01("10", "1", "9,2"), b"ab"),
        "invalid tar header",
    ),
    "extents out of order": (
        lambda tmp: _pax_sparse(_v01("10", "2", "4,2,1,2"), b"abcd"),
        "invalid tar header",
    ),
    "numblocks does not match the map": (
        lambda tmp: _pax_sparse(_v01("10", "2", "1,2"), b"ab"),
        "invalid tar header",
    ),
    "map needs more data than stored": (
        lambda tmp: _pax_sparse(_v01("10", "1", "1,5"), b"ab"),
        "sparse file references non-existent data",
    ),
    "stored data outside the map": (
        lambda tmp: _pax_sparse(_v01("10", "1", "1,2"), b"abcdef"),
        "sparse file contains unreferenced data",
    ),
    "1.0 map entry not a number": (
        lambda tmp: _pax_sparse(V10, b"1\n3\nx\n".ljust(512, b"\0") + b"zz"),
        "invalid tar header",
    ),
    "1.0 map truncated": (_truncated_1x0_map, "unexpected EOF"),
}


@pytest.mark.parametrize("case", list(BAD_MAPS))
def test_a_corrupt_or_truncated_sparse_map_is_refused_like_go(tmp_path: Path, case: str) -> None:
    make, message = BAD_MAPS[case]
    data = make(tmp_path)
    go_graph = tmp_path / "go" / "graph"
    assert go(go_graph, "import-layer", stdin=data).returncode != 0
    store = LayerStore(tmp_path / "ours" / "graph", tmp_path / "ours" / "run", driver="vfs")
    with pytest.raises(errors.InvalidArchive, match=message):
        store.create(diff=data)
    assert store.layers() == []
    assert not list((tmp_path / "ours" / "graph" / "vfs" / "dir").glob("*"))
