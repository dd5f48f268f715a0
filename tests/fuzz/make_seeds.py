"""Seed corpora for the libFuzzer harnesses of tests/fuzz, made fresh (nothing binary is kept).

Usage: python3 tests/fuzz/make_seeds.py OUT_DIR

Writes OUT_DIR/<harness>/<seed> for every harness: small tarballs in GNU, PAX and USTAR
formats (long names, hard links, symlinks, devices, whiteouts, sparse files, "../" and
absolute names, PAX xattrs and times), made with Python's tarfile and GNU tar; their
gzip, zstd, bzip2 and xz forms; and tar-split streams made by the Go `tar-split` CLI.
Each harness reads a leading mode byte (see its comment): seeds come in a few modes.
Needs only the standard library and the tar, gzip, zstd, bzip2, xz and tar-split commands.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

# fuzz_apply's sentinel parent (a fixed path so that absolute symlinks can aim at it).
SENTINEL = "/dev/shm/layerstore-fuzz-apply"
# The files fuzz_tarsplit_assemble's directory holds.
ASSEMBLE_FILES = {"a": b"hello\n", "b": b"b" * 5000, "dir/c": b"ccc", "empty": b""}


def member(name: str, kind: bytes = tarfile.REGTYPE, **kw: object) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mtime = 1_600_000_000
    info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
    for k, v in kw.items():
        setattr(info, k, v)
    return info


def make_tar(entries: list[tuple[tarfile.TarInfo, bytes]], fmt: int) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tf:
        for info, data in entries:
            if info.type == tarfile.REGTYPE:
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
            else:
                tf.addfile(info)
    return buf.getvalue()


def python_tars() -> dict[str, bytes]:
    reg = tarfile.REGTYPE
    long_name = "d" * 60 + "/" + "e" * 70 + "/" + "f" * 120
    basic = [
        (member("dir/", tarfile.DIRTYPE), b""),
        (member("dir/file", reg), b"content\n"),
        (member("dir/empty", reg), b""),
        (member("dir/link", tarfile.SYMTYPE, linkname="file"), b""),
        (member("dir/hard", tarfile.LNKTYPE, linkname="dir/file"), b""),
        (member("fifo", tarfile.FIFOTYPE), b""),
        (member("chr", tarfile.CHRTYPE, devmajor=1, devminor=3), b""),
        (member("big", reg), bytes(range(256)) * 5),
    ]
    whiteouts = [
        (member("a/", tarfile.DIRTYPE), b""),
        (member("a/x", reg), b"x"),
        (member("a/.wh.x", reg), b""),
        (member("a/.wh..wh..opq", reg), b""),
        (member(".wh..wh.plnk/", tarfile.DIRTYPE), b""),
        (member(".wh..wh.plnk/1234", reg), b"linked"),
        (member("b", tarfile.LNKTYPE, linkname=".wh..wh.plnk/1234"), b""),
        (member(".wh.gone", reg), b""),
    ]
    escapes = [
        (member("../../evil", reg), b"evil"),
        (member("/abs/file", reg), b"abs"),
        (member("up", tarfile.SYMTYPE, linkname=".."), b""),
        (member("up/known", reg), b"pwned"),
        (member("esc", tarfile.SYMTYPE, linkname=SENTINEL), b""),
        (member("esc/known", reg), b"pwned"),
        (member("esc/new", reg), b"pwned"),
        (member("hl", tarfile.LNKTYPE, linkname="../known"), b""),
        (member("hl2", tarfile.LNKTYPE, linkname="esc/known"), b""),
        (member("../known", reg), b"pwned"),
        (member("dirlink", tarfile.SYMTYPE, linkname="/"), b""),
        (member("dirlink/", tarfile.DIRTYPE), b""),
        (member("./", tarfile.DIRTYPE), b""),
        (member("up/.wh.known", reg), b""),
    ]
    pax_info = member(
        "pax/" + "p" * 150,
        reg,
        pax_headers={
            "SCHILY.xattr.user.test": "value",
            "SCHILY.xattr.trusted.overlay.opaque": "y",
            "mtime": "1600000000.123456789",
            "atime": "-1.5",
            "uid": "70000",
            "uname": "someone",
        },
    )
    pax = [(member("pax/", tarfile.DIRTYPE), b""), (pax_info, b"pax data")]
    return {
        "basic_gnu": make_tar(basic, tarfile.GNU_FORMAT),
        "basic_pax": make_tar(basic, tarfile.PAX_FORMAT),
        "basic_ustar": make_tar(basic[:-1], tarfile.USTAR_FORMAT),
        "long_gnu": make_tar(
            [
                (member(long_name, reg), b"long"),
                (member("l", tarfile.SYMTYPE, linkname=long_name), b""),
            ],
            tarfile.GNU_FORMAT,
        ),
        "long_pax": make_tar([(member(long_name, reg), b"long")], tarfile.PAX_FORMAT),
        "whiteouts": make_tar(whiteouts, tarfile.GNU_FORMAT),
        "escapes": make_tar(escapes, tarfile.GNU_FORMAT),
        "pax_records": make_tar(pax, tarfile.PAX_FORMAT),
        "empty_archive": make_tar([], tarfile.GNU_FORMAT),
    }


def gnu_tars(tmp: Path) -> dict[str, bytes]:
    src = tmp / "src"
    src.mkdir()
    (src / "sub").mkdir()
    (src / "sub" / "f").write_bytes(b"gnu tar file\n")
    with open(src / "sparse", "wb") as f:
        f.write(b"head")
        f.seek(64 * 1024)
        f.write(b"middle")
        f.truncate(200 * 1024)
    os.symlink("sub/f", src / "sym")
    os.link(src / "sub" / "f", src / "hard")
    out = {}
    pax_option = "--pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime"
    for name, fmt in (("gnu", "gnu"), ("posix", "posix"), ("oldgnu", "oldgnu")):
        tar = tmp / f"{name}.tar"
        options = [f"--format={fmt}", "--sparse", "--sort=name", "--mtime=@1600000000"]
        if fmt == "posix":
            options.append(pax_option)
        subprocess.run(["tar", "-C", str(src), *options, "-cf", str(tar), "."], check=True)
        out[f"tar_{name}"] = tar.read_bytes()
    return out


def zstd(data: bytes) -> bytes:
    return subprocess.run(
        ["zstd", "-q", "-c"], input=data, stdout=subprocess.PIPE, check=True
    ).stdout


def tarsplit_disasm(tar: bytes, tmp: Path) -> bytes:
    out = tmp / "ts.json.gz"
    subprocess.run(
        ["tar-split", "disasm", "--no-stdout", "--output", str(out), "-"],
        input=tar,
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return out.read_bytes()


def write(dirpath: Path, name: str, data: bytes) -> None:
    dirpath.mkdir(parents=True, exist_ok=True)
    (dirpath / name).write_bytes(data)


def main() -> None:
    out = Path(sys.argv[1])
    if out.exists():
        shutil.rmtree(out)
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        tars = python_tars()
        tars.update(gnu_tars(tmp))
        small = {k: v for k, v in tars.items() if len(v) <= 64 * 1024}

        for name, tar in small.items():
            write(out / "fuzz_tar_reader", name, b"\x00" + tar)
            write(out / "fuzz_tar_reader", name + "_fixsum", b"\x01" + tar)
            write(out / "fuzz_roundtrip", name, b"\xff" + tar)
            write(out / "fuzz_roundtrip", name + "_unread", b"\x00" + tar)
            write(out / "fuzz_apply", name + "_vfs", b"\x02" + tar)
            write(out / "fuzz_apply", name + "_overlay", b"\x03" + tar)
            write(out / "fuzz_apply", name + "_fixsum", b"\x04" + tar)
        for name in ("basic_gnu", "escapes", "whiteouts"):
            write(out / "fuzz_apply", name + "_gz", b"\x02" + gzip.compress(tars[name], 1, mtime=0))
            write(out / "fuzz_apply", name + "_zst", b"\x00" + zstd(tars[name]))

        # Decompressors: mode byte = format (0 gzip, 1 zstd, 2 bzip2, 3 xz) | API bits.
        forms = {
            0: lambda d: gzip.compress(d, 6, mtime=0) + gzip.compress(b"second member", mtime=0),
            1: zstd,
            2: lambda d: bz2.compress(d) + bz2.compress(b"second stream"),
            3: lambda d: lzma.compress(d),
        }
        for name in ("basic_gnu", "tar_posix", "empty_archive"):
            for fmt, compress in forms.items():
                blob = compress(tars[name])
                for api in (0x00, 0x04, 0x08, 0x30):  # push; pull detected; pull given; push 8 B
                    write(out / "fuzz_decompress", f"{name}_{fmt}_{api}", bytes([fmt | api]) + blob)

        # tar-split streams: the Go CLI's, of tars whose files fuzz_tarsplit_assemble has.
        entries = [(member("dir/", tarfile.DIRTYPE), b"")]
        entries += [(member(n, tarfile.REGTYPE), d) for n, d in ASSEMBLE_FILES.items()]
        entries.append((member("link", tarfile.SYMTYPE, linkname="a"), b""))
        for fmt_name, fmt in (("gnu", tarfile.GNU_FORMAT), ("pax", tarfile.PAX_FORMAT)):
            ts = tarsplit_disasm(make_tar(entries, fmt), tmp)
            ndjson = gzip.decompress(ts)
            for mode in (0, 2):
                write(out / "fuzz_tarsplit_assemble", f"{fmt_name}_gz_{mode}", bytes([mode]) + ts)
                write(
                    out / "fuzz_tarsplit_assemble",
                    f"{fmt_name}_json_{mode}",
                    bytes([mode | 1]) + ndjson,
                )
        write(
            out / "fuzz_tarsplit_assemble",
            "escaped_names",
            b"\x01" + b'{"type":1,"name":"../../../etc/passwd","size":3,"payload":"AAAAAAAAAAA=",'
            b'"position":0}\n{"type":1,"name_raw":"dXAvYQ==","size":6,"position":1}\n'
            b'{"type":2,"payload":"\\u0041BCD","position":2}\n',
        )


if __name__ == "__main__":
    main()
