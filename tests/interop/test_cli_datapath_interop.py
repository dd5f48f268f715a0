"""Our CLI's data-path verbs next to the Go CLI's, on one shared vfs store.

- ``import-layer`` of the same blob (every compression) by Go and by us records the same
  digests, sizes, compression and uid/gid sets;
- ``diff -u`` is byte-identical both ways (ours of Go's import, Go's of ours), and
  ``diff -c`` decompresses to the same tarball;
- ``changes``/``changes --json``/``diffsize`` of a small chain print what Go prints
  (Go lists changes in Go map order, which varies from run to run: compared as sets);
- junk input fails on both sides with Go's words and leaves no layer;
- ``check`` passes on a store Go made and finds the file Go's ``diff`` trips over.
"""

from __future__ import annotations

import bz2
import gzip
import io
import json
import lzma
import os
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from conftest import StoreDirs

GO_CLI = "/usr/bin/containers-storage"
COMPRESSIONS = ("none", "gzip", "bzip2", "xz", "zstd")
DATA_KEYS = (
    "compressed-diff-digest",
    "compressed-size",
    "diff-digest",
    "diff-size",
    "compression",
    "uidset",
    "gidset",
)


def compress(data: bytes, kind: str) -> bytes:
    if kind == "none":
        return data
    if kind == "gzip":
        return gzip.compress(data)
    if kind == "bzip2":
        return bz2.compress(data)
    if kind == "xz":
        return lzma.compress(data)
    return subprocess.run(["zstd", "-q", "-c"], input=data, capture_output=True, check=True).stdout


def build_tar(entries: list[tuple[str, str, bytes]]) -> bytes:
    """A PAX tarball of ``(kind, name, data)``: ``d`` dir, ``f`` file (uid 5, gid 9)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for kind, name, data in entries:
            info = tarfile.TarInfo(name)
            info.mtime = 1_700_000_000
            if kind == "d":
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            else:
                info.size, info.mode, info.uid, info.gid = len(data), 0o640, 5, 9
                tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


BASE = build_tar(
    [
        ("d", "etc", b""),
        ("f", "etc/hostname", b"box\n"),
        ("f", "etc/motd", b"hello\n" * 500),
        ("d", "usr", b""),
        ("d", "usr/lib", b""),
        ("f", "usr/lib/libx.so", os.urandom(300_000)),
        ("f", "usr/lib/liby.so", b"y" * 10),
    ]
)
MIDDLE = build_tar(
    [
        ("d", "etc", b""),
        ("f", "etc/hostname", b"changed\n"),
        ("f", "etc/.wh.motd", b""),
        ("d", "usr/lib", b""),
        ("f", "usr/lib/.wh..wh..opq", b""),
        ("f", "usr/lib/libz.so", b"z" * 1000),
        ("f", "tab\there", b"t"),
    ]
)
TOP = build_tar([("d", "srv", b""), ("f", "srv/data", b"d" * 4096)])


class Both:
    """Go's CLI and ours on one store; ``run`` returns (rc, stdout bytes, stderr text)."""

    def __init__(self, dirs: StoreDirs) -> None:
        self.dirs = dirs

    def run(self, who: str, *args: str, stdin: bytes = b"") -> tuple[int, bytes, str]:
        program = [GO_CLI] if who == "go" else [sys.executable, "-m", "layerstore"]
        where = ["--storage-driver", "vfs", "-g", str(self.dirs.graph), "-R", str(self.dirs.run)]
        argv = [*program, *where, *args]
        done = subprocess.run(argv, input=stdin, capture_output=True, timeout=120)
        return done.returncode, done.stdout, done.stderr.decode("utf-8", "replace")

    def ok(self, who: str, *args: str, stdin: bytes = b"") -> bytes:
        rc, out, err = self.run(who, *args, stdin=stdin)
        assert rc == 0, (who, args, err)
        return out

    def import_layer(self, who: str, blob: bytes, *args: str) -> str:
        return self.ok(who, "import-layer", *args, stdin=blob).decode().splitlines()[0]

    def record(self, layer: str) -> dict[str, Any]:
        found: dict[str, Any] = {r["id"]: r for r in self.dirs.records()}[layer]
        return found


@pytest.fixture
def both(store_dirs: StoreDirs) -> Both:
    return Both(store_dirs)


@pytest.mark.parametrize("kind", COMPRESSIONS)
def test_import_and_diff_agree_with_go_both_ways(both: Both, kind: str, tmp_path: Path) -> None:
    blob = compress(BASE, kind)
    path = tmp_path / f"base.{kind}"
    path.write_bytes(blob)
    theirs = both.ok("go", "import-layer", "-f", str(path), "-n", "go").decode().split()[0]
    ours = both.ok("ours", "import-layer", "-f", str(path), "-n", "ours").decode().split()[0]
    go_rec, our_rec = both.record(theirs), both.record(ours)
    assert {k: go_rec.get(k) for k in DATA_KEYS} == {k: our_rec.get(k) for k in DATA_KEYS}
    assert our_rec["names"] == ["ours"] and go_rec["names"] == ["go"]

    # Byte-identical tarballs, each side reading the other's layer.
    assert both.ok("ours", "diff", "-u", theirs) == both.ok("go", "diff", "-u", theirs) == BASE
    assert both.ok("go", "diff", "-u", ours) == both.ok("ours", "diff", "-u", ours) == BASE
    for who in ("go", "ours"):
        for layer in (theirs, ours):
            assert gzip.decompress(both.ok(who, "diff", "-c", layer)) == BASE, (who, layer)

    # Go's layer list shows ours, with its names.
    assert f"{ours}\n\tname: ours\n" in both.ok("go", "layers").decode()


@pytest.mark.parametrize("flags", [(), ("--uidmap", "0:100000:1000", "--gidmap", "0:200000:1000")])
def test_import_layer_json_record_matches_go(both: Both, flags: tuple[str, ...]) -> None:
    theirs = json.loads(both.ok("go", "import-layer", "--json", *flags, stdin=BASE))
    ours = json.loads(both.ok("ours", "import-layer", "--json", *flags, stdin=BASE))
    assert list(theirs) == list(ours)
    for key in (*DATA_KEYS, "uidmap", "gidmap"):
        assert theirs.get(key) == ours.get(key), key
    # The record on disk says what --json said.
    assert both.record(ours["id"])["diff-digest"] == ours["diff-digest"]


def test_applydiff_matches_go_applydiff(both: Both) -> None:
    blob = gzip.compress(MIDDLE)
    theirs = both.ok("go", "create-layer").decode().strip()
    ours = both.ok("ours", "create-layer").decode().strip()
    both.ok("go", "applydiff", theirs, stdin=blob)
    both.ok("ours", "applydiff", ours, stdin=blob)
    go_rec, our_rec = both.record(theirs), both.record(ours)
    assert {k: go_rec.get(k) for k in DATA_KEYS} == {k: our_rec.get(k) for k in DATA_KEYS}
    assert both.ok("go", "diff", "-u", ours) == both.ok("ours", "diff", "-u", theirs) == MIDDLE


def test_changes_and_diffsize_of_a_chain_print_what_go_prints(both: Both) -> None:
    for first in ("go", "ours"):
        base = both.import_layer(first, BASE)
        middle = both.import_layer(first, MIDDLE, base)
        top = both.import_layer(first, TOP, middle)
        for layer, against in ((base, ()), (middle, ()), (top, ()), (top, (base,))):
            args = (layer, *against)
            go_text = both.ok("go", "changes", *args).decode().splitlines()
            our_text = both.ok("ours", "changes", *args).decode().splitlines()
            assert sorted(our_text) == sorted(go_text), (first, args)
            assert len(our_text) > 0
            go_json = json.loads(both.ok("go", "changes", "--json", *args))
            our_json = json.loads(both.ok("ours", "changes", "--json", *args))
            key = json.dumps
            assert sorted(map(key, our_json)) == sorted(map(key, go_json)), (first, args)
            assert both.ok("ours", "diffsize", *args) == both.ok("go", "diffsize", *args)
        assert 'Add "/tab\\there"' in both.ok("ours", "changes", middle).decode()
        assert 'Delete "/etc/motd"' in both.ok("ours", "changes", middle).decode()
        # Every layer of the chain comes back byte for byte through either CLI.
        for layer, tar in ((base, BASE), (middle, MIDDLE), (top, TOP)):
            assert both.ok("go", "diff", "-u", layer) == both.ok("ours", "diff", "-u", layer)
            assert both.ok("ours", "diff", "-u", layer) == tar


@pytest.mark.parametrize("kind", COMPRESSIONS)
def test_junk_fails_on_both_sides_and_leaves_no_layer(both: Both, kind: str) -> None:
    for body in (os.urandom(3000), os.urandom(16)):
        junk = compress(body, kind)
        for who in ("go", "ours"):
            rc, out, err = both.run(who, "import-layer", stdin=junk)
            assert rc == 1 and out == b"", (who, err)
            assert "invalid tar header" in err or "unexpected EOF" in err, (who, err)
            if len(body) == 16:
                assert "unexpected EOF" in err, (who, err)
    assert both.ok("go", "layers") == b""
    assert both.ok("ours", "layers", "--json") == b"[]\n"
    assert list((both.dirs.graph / "vfs" / "dir").iterdir()) == []


def test_check_passes_on_a_go_store_and_finds_what_go_diff_trips_over(
    both: Both, store_dirs: StoreDirs
) -> None:
    base = both.import_layer("go", gzip.compress(BASE))
    both.import_layer("go", MIDDLE, base)
    empty = both.ok("go", "create-layer").decode().strip()
    assert both.run("ours", "check") == (0, b"", "")

    (store_dirs.layer_dir(base) / "usr" / "lib" / "liby.so").write_bytes(b"Y" * 10)
    rc, _out, err = both.run("go", "diff", "-u", base)
    assert rc == 1 and 'file integrity checksum failed for "usr/lib/liby.so"' in err
    rc, out, err = both.run("ours", "check")
    assert rc == 1 and err == "1 layer errors\n"
    assert out.decode().splitlines() == [
        f"layer {base}:",
        ' file integrity checksum failed for "usr/lib/liby.so"',
    ]
    assert json.loads(both.ok("ours", "check", "--json", empty)) == {"Layers": {}}
