"""Shared fixtures: fresh store directories and runners for the Go CLI and for ours.

Both runners start real processes and return ``subprocess.CompletedProcess[str]``:

    go_cli(graph, run, *args, input=None, check=True)   # /usr/bin/containers-storage
    ls_cli(graph, run, *args, input=None, check=True)   # python -m layerstore
    ls_batch(graph, run, [(args, stdin_text), ...])     # many runs, one process
    tar_maker([(name, uid, gid, data), ...]) -> bytes   # a PAX tarball

With ``check=True`` a non-zero exit fails the test, showing the command and stderr.
``store_dirs`` gives a fresh :class:`StoreDirs` (graph and run roots under tmp_path)
with helpers to read layers.json and mountpoints.json.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
import tarfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest

from layerstore.drivers.overlay import mount_points_under, sys_unmount

GO_CLI = "/usr/bin/containers-storage"
DRIVER = "vfs"
CLI_TIMEOUT = 60

Runner = Callable[..., "subprocess.CompletedProcess[str]"]


class StoreDirs:
    """A store's graph root ``graph`` and run root ``run`` (vfs layout)."""

    def __init__(self, root: Path) -> None:
        self.graph = root / "graph"
        self.run = root / "run"

    @property
    def layers_json(self) -> Path:
        return self.graph / f"{DRIVER}-layers" / "layers.json"

    @property
    def mountpoints_json(self) -> Path:
        return self.run / f"{DRIVER}-layers" / "mountpoints.json"

    def records(self) -> list[dict[str, Any]]:
        """layers.json decoded ([] when missing or empty)."""
        try:
            text = self.layers_json.read_text()
        except FileNotFoundError:
            return []
        return json.loads(text) if text else []

    def mounts(self) -> list[dict[str, Any]]:
        """mountpoints.json decoded ([] when missing or empty)."""
        try:
            text = self.mountpoints_json.read_text()
        except FileNotFoundError:
            return []
        return json.loads(text) if text else []

    def layer_dir(self, layer_id: str) -> Path:
        return self.graph / DRIVER / "dir" / layer_id


def _run(
    argv: list[str], input: str | bytes | None, check: bool, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    if isinstance(input, bytes):
        raw = subprocess.run(argv, input=input, capture_output=True, timeout=CLI_TIMEOUT, env=env)
        done = subprocess.CompletedProcess(
            argv,
            raw.returncode,
            raw.stdout.decode("utf-8", "surrogateescape"),
            raw.stderr.decode("utf-8", "surrogateescape"),
        )
    else:
        done = subprocess.run(
            argv, input=input, capture_output=True, text=True, timeout=CLI_TIMEOUT, env=env
        )
    if check and done.returncode != 0:
        pytest.fail(
            f"{' '.join(argv)} exited {done.returncode}\nstdout: {done.stdout}\n"
            f"stderr: {done.stderr}"
        )
    return done


def go_argv(graph: Path | str, run: Path | str, *args: str) -> list[str]:
    return [GO_CLI, "--storage-driver", DRIVER, "-g", str(graph), "-R", str(run), *args]


def ls_argv(graph: Path | str, run: Path | str, *args: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "layerstore",
        "--storage-driver",
        DRIVER,
        "-g",
        str(graph),
        "-R",
        str(run),
        *args,
    ]


def run_go(
    graph: Path | str,
    run: Path | str,
    *args: str,
    input: str | bytes | None = None,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run the Go CLI on the vfs store ``graph``/``run``."""
    return _run(go_argv(graph, run, *args), input, check)


def run_ours(
    graph: Path | str,
    run: Path | str,
    *args: str,
    input: str | bytes | None = None,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run our CLI (``python -m layerstore``) on the vfs store ``graph``/``run``."""
    env = {k: v for k, v in os.environ.items() if k not in ("STORAGE_DRIVER", "STORAGE_OPTS")}
    return _run(ls_argv(graph, run, *args), input, check, env)


# Runs several command lines of our CLI in one process (main() per step, with its own
# stdin/stdout/stderr), for long scripts where interpreter start-up would dominate.
_BATCH = r"""
import io, json, sys
from layerstore.cli import main
results = []
for argv, data in json.load(sys.stdin):
    out, err = io.BytesIO(), io.BytesIO()
    streams = [io.TextIOWrapper(b, encoding="utf-8", errors="surrogateescape",
                                write_through=True) for b in (out, err)]
    sys.stdout, sys.stderr = streams
    sys.stdin = io.TextIOWrapper(io.BytesIO((data or "").encode()), encoding="utf-8")
    try:
        code = main(argv)
    except SystemExit as e:
        code = e.code
    finally:
        for s in streams:
            s.flush()
        sys.stdout, sys.stderr, sys.stdin = sys.__stdout__, sys.__stderr__, sys.__stdin__
    results.append([code, out.getvalue().decode("utf-8", "surrogateescape"),
                    err.getvalue().decode("utf-8", "surrogateescape")])
json.dump(results, sys.stdout)
"""


def run_ours_batch(
    graph: Path | str, run: Path | str, steps: Iterable[tuple[tuple[str, ...], str | None]]
) -> list[subprocess.CompletedProcess[str]]:
    """Run each ``(args, stdin_text)`` of ``steps`` through our CLI's ``main()``, in
    order, in one child process; one CompletedProcess per step."""
    argvs = [(ls_argv(graph, run, *args)[3:], data) for args, data in steps]
    done = subprocess.run(
        [sys.executable, "-c", _BATCH],
        input=json.dumps(argvs),
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT * 4,
        check=False,
    )
    if done.returncode != 0:
        pytest.fail(f"batch runner failed: {done.stderr}")
    return [
        subprocess.CompletedProcess(argv, code, out, err)
        for (argv, _data), (code, out, err) in zip(argvs, json.loads(done.stdout), strict=True)
    ]


def make_tar(entries: Iterable[tuple[str, int, int, bytes]]) -> bytes:
    """An uncompressed PAX tarball of regular files ``(name, uid, gid, data)``."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, uid, gid, data in entries:
            info = tarfile.TarInfo(name)
            info.uid, info.gid, info.size, info.mode = uid, gid, len(data), 0o644
            info.mtime = 1_700_000_000
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@pytest.fixture
def store_dirs(tmp_path: Path) -> StoreDirs:
    """Fresh (not yet created) graph and run roots for one store."""
    return StoreDirs(tmp_path / "store")


@pytest.fixture
def go_cli() -> Runner:
    """``go_cli(graph, run, *args, input=None, check=True)``: run the Go CLI."""
    return run_go


@pytest.fixture
def ls_cli() -> Runner:
    """``ls_cli(graph, run, *args, input=None, check=True)``: run our CLI."""
    return run_ours


@pytest.fixture
def ls_batch() -> Callable[..., list[subprocess.CompletedProcess[str]]]:
    """``ls_batch(graph, run, [(args, stdin_text), ...])``: many runs of our CLI in one
    process (see :func:`run_ours_batch`)."""
    return run_ours_batch


@pytest.fixture
def tar_maker() -> Callable[[Iterable[tuple[str, int, int, bytes]]], bytes]:
    """``tar_maker([(name, uid, gid, data), ...]) -> bytes`` (see :func:`make_tar`)."""
    return make_tar


@pytest.fixture
def small_tar(tmp_path: Path) -> Path:
    """A 3-file tarball with uids {0, 5, 999} and gids {0, 7, 999}."""
    path = tmp_path / "small.tar"
    path.write_bytes(
        make_tar(
            [
                ("etc/hostname", 0, 0, b"box\n"),
                ("home/u/file", 5, 7, b"hello"),
                ("opt/x", 999, 999, b""),
            ]
        )
    )
    return path


# ---------------------------------------------------------------------------------------
# mounts: overlay tests mount for real; nothing may stay mounted after a test


def unmount_everything_under(root: Path) -> None:
    """Unmount every mount under ``root``; fail if some stay."""
    for _ in range(20):
        points = mount_points_under(str(root))
        if not points:
            return
        for p in points:
            with contextlib.suppress(OSError):
                sys_unmount(p)
    raise AssertionError(f"mounts left under {root}: {mount_points_under(str(root))}")


@pytest.fixture(scope="session")
def unmount_all() -> Callable[[Path], None]:
    """:func:`unmount_everything_under`, for fixtures of a wider scope than ``root``."""
    return unmount_everything_under


@pytest.fixture
def root(tmp_path: Path) -> Iterator[Path]:
    """The test's directory, with every mount under it undone afterwards."""
    try:
        yield tmp_path
    finally:
        unmount_everything_under(tmp_path)
