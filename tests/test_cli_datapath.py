"""The data-path verbs of the ``layerstore`` command (``import-layer``, ``applydiff``,
``diff``, ``diffsize``, ``changes``), its ``check`` verb and the progress line, run as
real processes on real stores. Comparisons with the Go CLI are in
tests/interop/test_cli_datapath_interop.py."""

from __future__ import annotations

import bz2
import errno
import gzip
import hashlib
import io
import json
import lzma
import os
import re
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from layerstore.cli import go_quote
from layerstore.progress import format_bytes, format_line

if TYPE_CHECKING:
    from conftest import Runner, StoreDirs

ID_RE = re.compile(r"^[0-9a-f]{64}$")
Run = Callable[..., "subprocess.CompletedProcess[str]"]
COMPRESSIONS = ("none", "gzip", "bzip2", "xz", "zstd")


def ls_argv(graph: Path, run: Path, *args: str) -> list[str]:
    """Our CLI on the vfs store ``graph``/``run``, for runs the fixtures cannot do (a
    terminal on stderr, a reader that goes away)."""
    where = ["--storage-driver", "vfs", "-g", str(graph), "-R", str(run)]
    return [sys.executable, "-m", "layerstore", *where, *args]


def compress(data: bytes, kind: str) -> bytes:
    """``data`` compressed as ``kind`` (one of COMPRESSIONS) with the usual tools."""
    if kind == "none":
        return data
    if kind == "gzip":
        return gzip.compress(data)
    if kind == "bzip2":
        return bz2.compress(data)
    if kind == "xz":
        return lzma.compress(data)
    return subprocess.run(["zstd", "-q", "-c"], input=data, capture_output=True, check=True).stdout


def zstd_decompress(data: bytes) -> bytes:
    return subprocess.run(
        ["zstd", "-q", "-d", "-c"], input=data, capture_output=True, check=True
    ).stdout


def build_tar(entries: list[tuple[str, str, bytes]]) -> bytes:
    """A PAX tarball of ``(kind, name, data)`` with kind ``f`` (file), ``d`` (dir)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for kind, name, data in entries:
            info = tarfile.TarInfo(name)
            info.mtime = 1_700_000_000
            if kind == "d":
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            else:
                info.size, info.mode, info.uid = len(data), 0o644, 7
                tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


BASE_FILES = {"etc/hostname": b"box\n", "etc/motd": b"hello " * 1000, "bin/sh": os.urandom(200_000)}
BASE = build_tar(
    [
        ("d", "etc", b""),
        ("f", "etc/hostname", BASE_FILES["etc/hostname"]),
        ("f", "etc/motd", BASE_FILES["etc/motd"]),
        ("d", "bin", b""),
        ("f", "bin/sh", BASE_FILES["bin/sh"]),
    ]
)


@pytest.fixture
def ls(store_dirs: StoreDirs, ls_cli: Runner) -> Run:
    def run(*args: str, **kw: object) -> subprocess.CompletedProcess[str]:
        return ls_cli(store_dirs.graph, store_dirs.run, *args, **kw)

    return run


def run_bytes(store_dirs: StoreDirs, *args: str, stdin: bytes = b"") -> bytes:
    """Our CLI's stdout as bytes (for diff); a failure fails the test."""
    done = subprocess.run(
        ls_argv(store_dirs.graph, store_dirs.run, *args), input=stdin, capture_output=True
    )
    assert done.returncode == 0, done.stderr.decode()
    return done.stdout


def import_file(ls: Run, path: Path, *args: str) -> str:
    out = ls("import-layer", "-f", str(path), *args).stdout
    layer_id = out.splitlines()[0]
    assert ID_RE.match(layer_id), out
    return layer_id


# ---------------------------------------------------------------------------------------
# import-layer / applydiff / diff


def test_import_layer_prints_the_id_and_names_and_records_the_digests(
    ls: Run, store_dirs: StoreDirs, tmp_path: Path
) -> None:
    path = tmp_path / "base.tar.gz"
    path.write_bytes(gzip.compress(BASE))
    done = ls("import-layer", "-f", str(path), "-n", "base", "-n", "alias")
    layer_id, *names = done.stdout.splitlines()
    assert ID_RE.match(layer_id) and names == ["\tbase", "\talias"]
    assert done.stderr == ""  # no progress line in a pipe
    (rec,) = store_dirs.records()
    assert rec["diff-digest"] == "sha256:" + hashlib.sha256(BASE).hexdigest()
    assert rec["diff-size"] == len(BASE)
    assert (
        rec["compressed-diff-digest"] == "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()
    )
    assert rec["compressed-size"] == path.stat().st_size
    assert rec["compression"] == 2 and rec["uidset"] == [0, 7] and rec["gidset"] == [0]
    assert (store_dirs.layer_dir(layer_id) / "bin" / "sh").read_bytes() == BASE_FILES["bin/sh"]

    # From standard input (a pipe), on top of the first, with --json.
    child = json.loads(ls("import-layer", "--json", "-i", "c0ffee", "base", input=BASE).stdout)
    assert child["id"] == "c0ffee" and child["parent"] == layer_id
    assert child["diff-digest"] == rec["diff-digest"]
    assert [r["id"] for r in store_dirs.records()] == [layer_id, "c0ffee"]


def test_diff_reproduces_the_imported_tarball_in_every_output_form(
    ls: Run, store_dirs: StoreDirs, tmp_path: Path
) -> None:
    path = tmp_path / "base.tar.gz"
    path.write_bytes(gzip.compress(BASE))
    layer = import_file(ls, path)
    assert run_bytes(store_dirs, "diff", "-u", layer) == BASE
    default = run_bytes(store_dirs, "diff", layer)  # the recorded compression: gzip
    assert default[:2] == b"\x1f\x8b" and gzip.decompress(default) == BASE
    assert gzip.decompress(run_bytes(store_dirs, "diff", "-c", layer)) == BASE
    assert zstd_decompress(run_bytes(store_dirs, "diff", "--zstd", layer)) == BASE
    # -c wins over -u, as in Go.
    assert gzip.decompress(run_bytes(store_dirs, "diff", "-u", "-c", layer)) == BASE

    out = tmp_path / "out.tar"
    assert ls("diff", "-u", "-f", str(out), layer).stdout == ""
    assert out.read_bytes() == BASE
    # Appending to a file (no splice possible) still gives the same bytes.
    with open(out, "ab") as f:
        subprocess.run(
            ls_argv(store_dirs.graph, store_dirs.run, "diff", "-u", layer), stdout=f, check=True
        )
    assert out.read_bytes() == BASE + BASE

    for flag, ext in (("-b", "tar.bz2"), ("--bz2", "tar.bz2"), ("-x", "tar.xz")):
        done = ls("diff", flag, layer, check=False)
        assert done.returncode == 1 and done.stdout == ""
        assert f"unsupported compression format {ext}" in done.stderr


def test_diff_of_an_unknown_layer_fails_and_leaves_an_empty_output_file_as_go(
    ls: Run, tmp_path: Path
) -> None:
    out = tmp_path / "out.tar"
    done = ls("diff", "-f", str(out), "nosuch", check=False)
    assert done.returncode == 1
    assert "layer not known" in done.stderr and "nosuch" in done.stderr
    assert out.read_bytes() == b""
    done = ls("diff", "-f", str(tmp_path / "no" / "dir"), "nosuch", check=False)
    assert done.returncode == 1
    assert f"open {tmp_path / 'no' / 'dir'}: no such file or directory" in done.stderr


def test_diff_to_a_reader_that_goes_away_exits_quietly(
    ls: Run, store_dirs: StoreDirs, tmp_path: Path
) -> None:
    big = build_tar([("f", f"f{i}", os.urandom(1 << 20)) for i in range(8)])
    (tmp_path / "big.tar").write_bytes(big)
    layer = import_file(ls, tmp_path / "big.tar")
    proc = subprocess.Popen(
        ls_argv(store_dirs.graph, store_dirs.run, "diff", "-u", layer),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    assert proc.stdout.read(1000) == big[:1000]
    proc.stdout.close()
    _out, err = proc.communicate(timeout=30)
    assert proc.returncode == 1
    assert b"Traceback" not in err


def test_applydiff_fills_an_empty_layer_from_a_file_or_stdin(
    ls: Run, store_dirs: StoreDirs, tmp_path: Path
) -> None:
    layer = ls("create-layer").stdout.strip()
    path = tmp_path / "base.tar.xz"
    path.write_bytes(lzma.compress(BASE))
    done = ls("applydiff", "-f", str(path), layer)
    assert done.stdout == "" and done.stderr == ""
    (rec,) = store_dirs.records()
    assert rec["compression"] == 3 and rec["diff-size"] == len(BASE)
    assert run_bytes(store_dirs, "diff", "-u", layer) == BASE

    other = ls("create-layer").stdout.strip()
    ls("apply-diff", other, input=BASE)  # Go's alias, stdin
    assert run_bytes(store_dirs, "diff", "-u", other) == BASE

    done = ls("applydiff", layer, "extra", check=False)
    assert done.returncode == 1
    assert done.stdout.startswith("applydiff: too many arguments")
    done = ls("applydiff", "-f", str(tmp_path / "missing"), layer, check=False)
    assert done.returncode == 1
    assert f"open {tmp_path / 'missing'}: no such file or directory" in done.stderr


@pytest.mark.parametrize("kind", COMPRESSIONS)
def test_junk_input_fails_like_go_and_leaves_no_layer(
    ls: Run, store_dirs: StoreDirs, kind: str
) -> None:
    junk = compress(os.urandom(3000), kind)
    done = ls("import-layer", input=junk, check=False)
    assert done.returncode == 1 and done.stdout == ""
    assert "invalid tar header" in done.stderr or "unexpected EOF" in done.stderr, done.stderr
    tiny = compress(os.urandom(16), kind)
    done = ls("import-layer", input=tiny, check=False)
    assert done.returncode == 1 and "unexpected EOF" in done.stderr, done.stderr
    assert store_dirs.records() == []
    assert list((store_dirs.graph / "vfs" / "dir").iterdir()) == []
    assert list((store_dirs.graph / "vfs-layers").glob("*.tar-split.gz")) == []


def test_applydiff_of_junk_leaves_the_record_as_it_was(ls: Run, store_dirs: StoreDirs) -> None:
    layer = ls("create-layer").stdout.strip()
    before = store_dirs.records()
    done = ls("applydiff", layer, input=gzip.compress(os.urandom(3000)), check=False)
    assert done.returncode == 1 and "invalid tar header" in done.stderr
    assert store_dirs.records() == before


# ---------------------------------------------------------------------------------------
# changes / diffsize


def test_changes_and_diffsize_of_a_chain(ls: Run, store_dirs: StoreDirs, tmp_path: Path) -> None:
    (tmp_path / "base.tar").write_bytes(BASE)
    base = import_file(ls, tmp_path / "base.tar")
    top_tar = build_tar(
        [
            ("d", "etc", b""),
            ("f", "etc/hostname", b"other\n"),
            ("f", "etc/.wh.motd", b""),
            ("f", 'new "one"\tx', b"12345"),
        ]
    )
    top = ls("import-layer", base, input=top_tar).stdout.strip()
    assert ls("changes", top).stdout.splitlines() == [
        'Modify "/etc"',
        'Modify "/etc/hostname"',
        'Delete "/etc/motd"',
        'Add "/new \\"one\\"\\tx"',
    ]
    assert json.loads(ls("changes", "--json", top).stdout) == [
        {"Path": "/etc", "Kind": 0},
        {"Path": "/etc/hostname", "Kind": 0},
        {"Path": "/etc/motd", "Kind": 2},
        {"Path": '/new "one"\tx', "Kind": 1},
    ]
    assert ls("diffsize", top).stdout == "11\n"  # etc/hostname and the new file; not dirs
    assert ls("diff-size", base).stdout == f"{sum(map(len, BASE_FILES.values()))}\n"
    assert ls("changes", "-j", ls("create-layer", top).stdout.strip()).stdout == "null\n"
    done = ls("changes", "nosuch", check=False)
    assert done.returncode == 1 and "layer not known" in done.stderr
    done = ls("diffsize", check=False)
    assert done.returncode == 1 and done.stdout.startswith("diffsize: more arguments required.")


def test_go_quote_matches_strconv_quote() -> None:
    assert go_quote("/a b") == '"/a b"'
    assert go_quote('/q"\\') == '"/q\\"\\\\"'
    assert go_quote("/t\t\n\x07\x7f") == '"/t\\t\\n\\a\\x7f"'
    assert go_quote("/né€") == '"/né€"'
    assert go_quote("/\u200b\U000e0001") == '"/\\u200b\\U000e0001"'
    assert go_quote(b"/bad\xff".decode("utf-8", "surrogateescape")) == '"/bad\\xff"'


# ---------------------------------------------------------------------------------------
# check


def test_check_passes_on_a_clean_store_and_names_every_damaged_file(
    ls: Run, store_dirs: StoreDirs, tmp_path: Path
) -> None:
    (tmp_path / "base.tar").write_bytes(BASE)
    base = import_file(ls, tmp_path / "base.tar")
    empty = ls("create-layer", base).stdout.strip()
    assert ls("check").stdout == ""
    assert json.loads(ls("check", "--json").stdout) == {"Layers": {}}

    root = store_dirs.layer_dir(base)
    (root / "etc" / "hostname").write_bytes(b"BOX\n")  # same size, other bytes
    (root / "bin" / "sh").unlink()
    done = ls("check", check=False)
    assert done.returncode == 1
    assert done.stdout.splitlines() == [
        f"layer {base}:",
        ' file integrity checksum failed for "etc/hostname"',
        ' file "bin/sh" is missing',
    ]
    assert done.stderr == "1 layer errors\n"
    report = json.loads(ls("check", "--json", base, empty, check=False).stdout)
    assert report == {
        "Layers": {
            base: [
                'file integrity checksum failed for "etc/hostname"',
                'file "bin/sh" is missing',
            ]
        }
    }
    # The child never had a diff applied: nothing recorded to check it against.
    assert ls("check", empty).returncode == 0
    # --quick only looks for the files it would read.
    assert ls("check", "-q").returncode == 0


def test_check_compares_the_recorded_diff_digest_and_size(
    ls: Run, store_dirs: StoreDirs, tmp_path: Path
) -> None:
    (tmp_path / "base.tar").write_bytes(BASE)
    base = import_file(ls, tmp_path / "base.tar")
    records = store_dirs.records()
    records[0]["diff-digest"] = "sha256:" + "0" * 64
    records[0]["diff-size"] = 5
    store_dirs.layers_json.write_text(json.dumps(records))
    done = ls("check", base, check=False)
    assert done.returncode == 1
    assert done.stdout.splitlines()[1:] == [
        f" reassembled size {len(BASE)} differs from the recorded diff-size 5",
        f" reassembled digest sha256:{hashlib.sha256(BASE).hexdigest()} differs from the "
        f"recorded diff-digest sha256:{'0' * 64}",
    ]

    tarsplit = store_dirs.graph / "vfs-layers" / f"{base}.tar-split.gz"
    tarsplit.write_bytes(gzip.compress(b"not json\n"))
    done = ls("check", base, check=False)
    assert done.returncode == 1 and "cannot be read" in done.stdout, done.stdout
    assert "Traceback" not in done.stderr
    tarsplit.unlink()
    done = ls("check", "-q", check=False)
    assert done.returncode == 1
    assert "tar-split file" in done.stdout and "is missing" in done.stdout
    done = ls("check", "nosuch", check=False)
    assert done.returncode == 1 and "layer not known" in done.stderr
    shutil.rmtree(store_dirs.layer_dir(base))
    done = ls("check", base, check=False)
    assert done.returncode == 1
    assert f" layer directory {store_dirs.layer_dir(base)} is missing" in done.stdout


# ---------------------------------------------------------------------------------------
# progress


def run_with_pty_stderr(
    argv: list[str], stdin: int | None = None, data: bytes | None = None
) -> tuple[int, bytes, str]:
    """Run ``argv`` with stderr on a pseudo-terminal; return (rc, stdout, terminal text)."""
    master, slave = os.openpty()
    try:
        proc = subprocess.Popen(
            argv,
            stdin=stdin if data is None else subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=slave,
        )
    finally:
        os.close(slave)
    out, _err = proc.communicate(data, timeout=60)
    rc = proc.returncode
    seen = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError as e:  # EIO: the terminal's other side is closed
            assert e.errno == errno.EIO
            break
        if not chunk:
            break
        seen += chunk
    os.close(master)
    return rc, out, seen.decode("utf-8", "replace")


RATE_RE = re.compile(r"\d+(\.\d)? (B|KiB|MiB|GiB)/s")


def test_progress_is_drawn_on_a_terminal_and_never_in_a_pipe(
    ls: Run, store_dirs: StoreDirs, tmp_path: Path
) -> None:
    path = tmp_path / "base.tar"
    path.write_bytes(BASE)
    argv = ls_argv(store_dirs.graph, store_dirs.run, "import-layer", "-f", str(path))
    rc, out, tty = run_with_pty_stderr(argv)
    assert rc == 0 and ID_RE.match(out.decode().strip())
    assert "import-layer" in tty and "100.0%" in tty and RATE_RE.search(tty), tty
    layer = out.decode().strip()

    # A pipe on stdin: bytes and rate, no total to take a percentage of.
    rc, out, tty = run_with_pty_stderr(
        ls_argv(store_dirs.graph, store_dirs.run, "import-layer"), data=BASE
    )
    assert rc == 0 and RATE_RE.search(tty) and "%" not in tty, tty

    # diff: the uncompressed size is known.
    rc, out, tty = run_with_pty_stderr(
        ls_argv(store_dirs.graph, store_dirs.run, "diff", "-u", layer)
    )
    assert rc == 0 and out == BASE
    assert "diff" in tty and "100.0%" in tty and RATE_RE.search(tty), tty

    # --json: nothing but the JSON.
    rc, out, tty = run_with_pty_stderr(
        ls_argv(store_dirs.graph, store_dirs.run, "import-layer", "--json", "-f", str(path))
    )
    assert rc == 0 and json.loads(out)["diff-size"] == len(BASE) and tty == ""

    # A failure erases the line: the error stands alone.
    rc, out, tty = run_with_pty_stderr(
        ls_argv(store_dirs.graph, store_dirs.run, "import-layer"), data=b"x" * 100
    )
    last = tty.split("\x1b[K")[-1].strip()
    assert rc == 1 and "unexpected EOF" in last and "/s" not in last, tty

    # In a pipe: no progress output at all.
    for args in (("import-layer", "-f", str(path)), ("diff", "-u", layer), ("check",)):
        piped = subprocess.run(
            ls_argv(store_dirs.graph, store_dirs.run, *args), capture_output=True, timeout=60
        )
        assert piped.returncode == 0 and piped.stderr == b"", args


def test_progress_line_shows_bytes_percentage_rate_and_eta() -> None:
    assert [format_bytes(n) for n in (0, 1023, 1536, 5 << 20, 3 << 30)] == [
        "0 B",
        "1023 B",
        "1.5 KiB",
        "5.0 MiB",
        "3.0 GiB",
    ]
    mib = 1 << 20
    assert format_line("import-layer", 12 * mib, 48 * mib, 4 * mib, 3.0, False) == (
        "import-layer  12.0 MiB / 48.0 MiB   25.0%  4.0 MiB/s  ETA 0:09"
    )
    assert format_line("diff", 7 * mib, None, 2 * mib, 3.5, False) == "diff  7.0 MiB  2.0 MiB/s"
    assert format_line("diff", 48 * mib, 48 * mib, 16 * mib, 3.0, True) == (
        "diff  48.0 MiB / 48.0 MiB  100.0%  16.0 MiB/s  in 0:03"
    )
    assert format_line("x", 0, 3600 * mib, mib, 0.0, False).endswith("ETA 1:00:00")
