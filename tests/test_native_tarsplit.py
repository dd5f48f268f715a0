"""tar-split in the native core against the real Go `tar-split` CLI.

Our disassembly must give the CLI's NDJSON byte for byte (the CLI here is an old tar-split
that adds one trailing empty segment; c/storage >= 1.49 leaves it out, and so do we), our
assembly of the CLI's file must give the input tar back byte for byte, and the other way
round; a changed file is an error, never a different tarball.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from layerstore import _native
from layerstore.errors import ChecksumMismatch, InvalidArchive

NONE, GZIP, ZSTD = 0, 2, 4
TRAILING_EMPTY_SEGMENT = b'{"type":2,"payload":"","position":%d}\n'


def go_disassemble(tar: Path, out: Path) -> bytes:
    subprocess.run(
        ["tar-split", "disasm", "--output", str(out), str(tar), "--no-stdout"],
        check=True,
        capture_output=True,
    )
    return gzip.decompress(out.read_bytes())


def go_assemble(tarsplit: Path, root: Path, out: Path) -> None:
    subprocess.run(
        ["tar-split", "asm", "--input", str(tarsplit), "--path", str(root), "--output", str(out)],
        check=True,
        capture_output=True,
    )


def our_disassemble(tar: Path, out: Path) -> bytes:
    with tar.open("rb") as src, out.open("wb") as dst:
        _native.tarsplit_disassemble(src.fileno(), dst.fileno())
    return gzip.decompress(out.read_bytes())


def our_assemble(
    tarsplit: Path, roots: list[Path], compression: int = NONE, threads: int = 0
) -> bytes:
    r, w = os.pipe()
    chunks: list[bytes] = []
    import threading

    def drain() -> None:
        while data := os.read(r, 1 << 20):
            chunks.append(data)

    reader = threading.Thread(target=drain)
    reader.start()
    try:
        written = _native.assemble(
            str(tarsplit), [str(p) for p in roots], w, compression, threads=threads
        )
    finally:
        os.close(w)
        reader.join()
        os.close(r)
    out = b"".join(chunks)
    assert written == len(out)
    return out


def without_old_trailer(ndjson: bytes) -> bytes:
    lines = ndjson.splitlines(keepends=True)
    assert lines[-1] == TRAILING_EMPTY_SEGMENT % (len(lines) - 1)
    return b"".join(lines[:-1])


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    (root / "sub" / ("L" * 120)).mkdir(parents=True)
    (root / "a.txt").write_bytes(b"hello\n")
    (root / "sub" / "big.bin").write_bytes(os.urandom(3_000_000))
    (root / "sub" / ("L" * 120) / ("n" * 110)).write_bytes(b"long name")
    (root / "empty").write_bytes(b"")
    (root / "a<b>&c").write_bytes(b"html")
    os.mkfifo(root / "fifo")
    os.symlink("a.txt", root / "link")
    os.link(root / "a.txt", root / "sub" / "hard")
    (root / os.fsdecode(b"file-\xe4")).write_bytes(b"latin1")
    return root


@pytest.mark.parametrize("fmt", ["gnu", "posix", "ustar"])
def test_disassembly_matches_go_and_assembly_is_byte_identical(
    tree: Path, tmp_path: Path, fmt: str
) -> None:
    tar = tmp_path / "layer.tar"
    exclude = ["--exclude=" + "L" * 120] if fmt == "ustar" else []
    subprocess.run(
        ["tar", f"--format={fmt}", *exclude, "-cf", str(tar), "-C", str(tree), "."], check=True
    )
    theirs = go_disassemble(tar, tmp_path / "theirs.gz")
    ours = our_disassemble(tar, tmp_path / "ours.gz")
    assert ours == without_old_trailer(theirs)
    assert b'"name_raw":"Li9maWxlLeQ="' in ours  # "./file-\xe4" is not UTF-8
    assert b'"name":"./a\\u003cb\\u003e\\u0026c"' in ours

    original = tar.read_bytes()
    assert our_assemble(tmp_path / "theirs.gz", [tree]) == original
    assert our_assemble(tmp_path / "ours.gz", [tree]) == original
    assert our_assemble(tmp_path / "ours.gz", [tree], threads=3) == original  # readers ahead
    go_assemble(tmp_path / "ours.gz", tree, tmp_path / "go-out.tar")
    assert (tmp_path / "go-out.tar").read_bytes() == original


def test_compressed_output(tree: Path, tmp_path: Path) -> None:
    tar = tmp_path / "layer.tar"
    subprocess.run(["tar", "-cf", str(tar), "-C", str(tree), "."], check=True)
    our_disassemble(tar, tmp_path / "ts.gz")
    gz = our_assemble(tmp_path / "ts.gz", [tree], GZIP)
    assert gz[:3] == b"\x1f\x8b\x08"
    assert gzip.decompress(gz) == tar.read_bytes()
    subprocess.run(["gzip", "-t"], input=gz, check=True)  # one valid gzip stream
    zst = our_assemble(tmp_path / "ts.gz", [tree], ZSTD)
    unzst = subprocess.run(["zstd", "-d", "-c"], input=zst, check=True, capture_output=True)
    assert unzst.stdout == tar.read_bytes()
    with pytest.raises(InvalidArchive, match=r"unsupported compression format tar\.xz"):
        our_assemble(tmp_path / "ts.gz", [tree], 3)
    with pytest.raises(ValueError, match="unknown compression 7"):
        our_assemble(tmp_path / "ts.gz", [tree], 7)


def test_changed_or_missing_file_is_an_error(tree: Path, tmp_path: Path) -> None:
    tar = tmp_path / "layer.tar"
    subprocess.run(["tar", "-cf", str(tar), "-C", str(tree), "."], check=True)
    go_disassemble(tar, tmp_path / "theirs.gz")
    big = tree / "sub" / "big.bin"
    data = bytearray(big.read_bytes())
    data[1_000_000] ^= 1
    big.write_bytes(bytes(data))
    with pytest.raises(ChecksumMismatch) as err:
        our_assemble(tmp_path / "theirs.gz", [tree])
    assert str(err.value) == 'file integrity checksum failed for "./sub/big.bin"'
    assert isinstance(err.value, InvalidArchive)
    # The Go CLI refuses the same tree.
    failed = subprocess.run(
        [
            "tar-split",
            "asm",
            "--input",
            str(tmp_path / "theirs.gz"),
            "--path",
            str(tree),
            "--output",
            str(tmp_path / "go.tar"),
        ],
        capture_output=True,
    )
    assert failed.returncode != 0
    assert b"file integrity checksum failed" in failed.stderr
    big.unlink()
    with pytest.raises(FileNotFoundError) as missing:
        our_assemble(tmp_path / "theirs.gz", [tree])
    assert missing.value.filename == str(tree / "sub" / "big.bin")
    with pytest.raises(FileNotFoundError) as no_ts:
        our_assemble(tmp_path / "nothing.gz", [tree])
    assert no_ts.value.filename == str(tmp_path / "nothing.gz")


def test_overlay_roots_and_old_flavour(tree: Path, tmp_path: Path) -> None:
    tar = tmp_path / "layer.tar"
    subprocess.run(["tar", "-cf", str(tar), "-C", str(tree), "."], check=True)
    ndjson = go_disassemble(tar, tmp_path / "theirs.gz")  # old flavour: trailing empty segment
    upper = tmp_path / "upper"
    (upper / "sub").mkdir(parents=True)
    shutil.move(tree / "sub" / "big.bin", upper / "sub" / "big.bin")
    assert our_assemble(tmp_path / "theirs.gz", [upper, tree]) == tar.read_bytes()
    # A multi-member gzip (any gzip is accepted on read).
    half = ndjson.index(b"\n", len(ndjson) // 2) + 1
    multi = tmp_path / "multi.gz"
    multi.write_bytes(gzip.compress(ndjson[:half]) + gzip.compress(ndjson[half:]))
    assert our_assemble(multi, [upper, tree]) == tar.read_bytes()
    dup = tmp_path / "dup.gz"
    dup.write_bytes(gzip.compress(b'{"type":1,"name":"a"}\n{"type":1,"name":"./a"}\n'))
    with pytest.raises(InvalidArchive, match="duplicates of file paths not supported"):
        our_assemble(dup, [tree])


def test_junk_input_is_invalid_archive(tmp_path: Path) -> None:
    junk = tmp_path / "junk.tar"
    junk.write_bytes(b"this is not a tar archive" * 100)
    with pytest.raises(InvalidArchive, match="archive/tar: invalid tar header"):
        our_disassemble(junk, tmp_path / "x.gz")
    junk.write_bytes(b"x" * 100)
    with pytest.raises(InvalidArchive, match="unexpected EOF"):
        our_disassemble(junk, tmp_path / "x.gz")


# ---- property test: generated tarballs of every entry type, GNU / PAX / USTAR ---------

NAME_PART = st.text(
    alphabet=st.sampled_from('abcXYZ09_-.<>&é中 \b\t\n\x7f\u2028"\\') | st.just("\udce4"),
    min_size=1,
    max_size=12,
).filter(lambda s: s not in (".", ".."))
ENTRY = st.tuples(
    st.sampled_from(
        [
            tarfile.REGTYPE,
            tarfile.DIRTYPE,
            tarfile.SYMTYPE,
            tarfile.LNKTYPE,
            tarfile.FIFOTYPE,
            tarfile.CHRTYPE,
            tarfile.BLKTYPE,
        ]
    ),
    st.lists(NAME_PART, min_size=1, max_size=3),
    st.binary(max_size=3000),
    st.integers(min_value=0, max_value=2**21 - 1),
    st.integers(min_value=0, max_value=2**32 * 1000).map(lambda ms: ms / 1000),  # no 1e-05
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    entries=st.lists(ENTRY, max_size=12),
    fmt=st.sampled_from([tarfile.GNU_FORMAT, tarfile.PAX_FORMAT, tarfile.USTAR_FORMAT]),
    pax_headers=st.dictionaries(st.sampled_from(["comment", "foo"]), st.text(max_size=5)),
    long_names=st.booleans(),
    junk=st.binary(max_size=600),
)
def test_property_round_trip(
    tmp_path_factory: pytest.TempPathFactory,
    entries: list[tuple[bytes, list[str], bytes, int, float]],
    fmt: int,
    pax_headers: dict[str, str],
    long_names: bool,
    junk: bytes,
) -> None:
    work = tmp_path_factory.mktemp("prop")
    root = work / "root"
    root.mkdir()
    buf = io.BytesIO()
    seen: set[str] = set()
    regular: list[str] = []
    with tarfile.open(
        fileobj=buf,
        mode="w",
        format=fmt,
        encoding="utf-8",
        errors="surrogateescape",
        pax_headers=pax_headers if fmt == tarfile.PAX_FORMAT else None,
    ) as tf:
        for i, (kind, parts, data, uid, mtime) in enumerate(entries):
            name = "/".join(parts) + f"-{i}"
            if long_names:
                name = "x" * 90 + "/" + name + "y" * 20
            if fmt == tarfile.USTAR_FORMAT and (
                len(name.encode("utf-8", "surrogateescape")) > 99 or any(ord(c) > 127 for c in name)
            ):
                name = f"short-{i}"
            if name in seen:
                continue
            seen.add(name)
            info = tarfile.TarInfo(name)
            info.type = kind
            info.uid = uid
            info.mtime = mtime if fmt == tarfile.PAX_FORMAT else int(mtime)
            info.mode = 0o644
            if kind in (tarfile.SYMTYPE, tarfile.LNKTYPE):
                info.linkname = regular[0] if regular else "target"
            if kind in (tarfile.CHRTYPE, tarfile.BLKTYPE):
                info.devmajor, info.devminor = 1, 3
            if kind == tarfile.REGTYPE:
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
                if data:
                    path = root / name
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.write_bytes(data)
                regular.append(name)
            else:
                tf.addfile(info)
    tar = work / "t.tar"
    original = buf.getvalue() + junk
    tar.write_bytes(original)

    ours = our_disassemble(tar, work / "ours.gz")
    theirs = go_disassemble(tar, work / "theirs.gz")
    assert ours == without_old_trailer(theirs)
    for line in ours.splitlines():
        json.loads(line)
    assert our_assemble(work / "ours.gz", [root]) == original
    assert our_assemble(work / "theirs.gz", [root]) == original
    shutil.rmtree(work)


def test_rejects_what_go_rejects(tmp_path: Path) -> None:
    # A PAX time in exponent notation: Go's parsePAXTime refuses it, and so do we.
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        info = tarfile.TarInfo("f")
        info.mtime = 2.0259753035420457e-51
        tf.addfile(info)
    tar = tmp_path / "t.tar"
    tar.write_bytes(buf.getvalue())
    with pytest.raises(InvalidArchive, match=r"^archive/tar: invalid tar header$"):
        our_disassemble(tar, tmp_path / "ours.gz")
    with pytest.raises(subprocess.CalledProcessError):
        go_disassemble(tar, tmp_path / "theirs.gz")
