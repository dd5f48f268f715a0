"""Ours against the Go ``containers-storage`` CLI, side by side, in one interleaved run.

For each workload: one warm-up run per side, then ``--pairs`` pairs run strictly
interleaved (ours, Go | Go, ours | ours, Go ...: the order swaps every other pair so a drift in
the machine's speed cancels out). Every timed call is a whole process
(``layerstore ...`` vs ``containers-storage ...``, same verb and flags), started with
its stdin/stdout already opened on a fresh tmpfs that was mounted before the timer
started and is unmounted after it stopped. Peak RSS is the child's ``ru_maxrss`` from
GNU ``time`` (``%M``; it includes the children the command waited for, such as Go's
re-exec'd ``storage-applyLayer``). Not ``wait4`` from here: Linux carries this Python
process's own peak into every child it spawns.

Each run is checked, outside the timer: an import must record the input's digests, a
diff must reproduce the input tar bit for bit, ``layers`` must list every layer,
``create-layer`` must add one. A side that fails is reported as FAILED with its error,
never with a number, and the script then exits non-zero.

Printed per workload: median seconds of each side, MB/s of uncompressed tar bytes, peak
RSS, and the ratio Go/ours (median of the per-pair ratios, with their min-max).
``--go-vs-go`` puts the Go CLI in both slots: its ratios must come out 0.96-1.03, or the
harness is biased.

Usage: ``python benchmarks/compare.py [--quick] [--go-vs-go] [--pairs N]
[--only NAME ...] [--results FILE]`` (as root: it mounts tmpfs).
"""

from __future__ import annotations

import argparse
import compileall
import contextlib
import datetime as dt
import hashlib
import importlib.util
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import datasets

GO_CLI = "/usr/bin/containers-storage"
MIB = 1 << 20
MB = 1_000_000
REPO = Path(__file__).resolve().parent.parent


# ---- the two sides ------------------------------------------------------------------


@dataclass(frozen=True)
class Impl:
    """One side of the comparison: a command line that takes Go's global flags."""

    label: str
    argv: tuple[str, ...]

    def cli(self, graph: Path, run: Path, *args: str) -> list[str]:
        return [*self.argv, "-g", str(graph), "-R", str(run), "-s", "vfs", *args]


def our_impl() -> Impl:
    """The venv's ``layerstore`` script, run by the venv's python (a symlink to the real
    interpreter, not a pyenv shim)."""
    script = Path(sys.executable).parent / "layerstore"
    if not script.exists():
        raise SetupError(f"our CLI is not installed: {script} does not exist")
    # An installed wheel has its bytecode compiled; this tree runs with
    # PYTHONDONTWRITEBYTECODE=1, which would make every timed run compile the package.
    spec = importlib.util.find_spec("layerstore")
    if spec is None or spec.origin is None:
        raise SetupError("the layerstore package is not importable")
    compileall.compile_dir(Path(spec.origin).parent, quiet=1)
    return Impl("ours", (sys.executable, str(script)))


def go_impl(label: str = "Go") -> Impl:
    return Impl(label, (GO_CLI,))


class SetupError(Exception):
    """A side can't run a workload at all (missing CLI, failed preparation)."""


# ---- running one child --------------------------------------------------------------


@dataclass
class Sample:
    seconds: float
    maxrss_kib: int
    cpu_seconds: float = 0.0  # user + system of the child and what it waited for
    error: str | None = None
    out_size: int = 0
    serial_seconds: float = 0.0  # TwoImports: the same two imports one after the other


def run_child(
    argv: list[str], *, cwd: Path, stdin: Path | None = None, stdout: Path | None = None
) -> tuple[Sample, bytes]:
    """Run ``argv`` as one timed process; the timer covers spawn to reap only."""
    err_path = cwd / ".stderr"
    rss_path = cwd / ".maxrss"
    if os.access(TIME_BIN, os.X_OK):
        # wait4's ru_maxrss of a child of this (big) Python process is never below this
        # process's own peak (Linux carries the pre-exec peak over); GNU time forks
        # the command from its own tiny image and reports the command's peak alone.
        argv = [TIME_BIN, "-f", "%M", "-o", str(rss_path), "--", *argv]
    with (
        open(stdin or os.devnull, "rb") as fin,
        open(stdout or os.devnull, "wb") as fout,
        open(err_path, "wb") as ferr,
    ):
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            argv, stdin=fin, stdout=fout, stderr=ferr, cwd=cwd, start_new_session=True
        )
        timer = threading.Timer(RUN_TIMEOUT, _kill_group, (proc.pid,))
        timer.start()
        _, status, ru = os.wait4(proc.pid, 0)
        t1 = time.perf_counter()
        timer.cancel()
        proc.returncode = os.waitstatus_to_exitcode(status)
    if t1 - t0 >= RUN_TIMEOUT:
        return Sample(t1 - t0, ru.ru_maxrss, error=f"hung: killed after {RUN_TIMEOUT:.0f} s"), b""
    err = err_path.read_bytes()
    err_path.unlink()
    maxrss = ru.ru_maxrss
    if argv[0] == TIME_BIN:
        lines = rss_path.read_text().split()
        rss_path.unlink()
        maxrss = int(lines[-1])
    sample = Sample(t1 - t0, maxrss, ru.ru_utime + ru.ru_stime)
    if proc.returncode != 0:
        text = err.decode(errors="replace").strip().splitlines()
        if not text and stdout is not None:
            text = stdout.read_bytes()[-4096:].decode(errors="replace").strip().splitlines()
        sample.error = f"exit {proc.returncode}: {text[-1] if text else '(no stderr)'}"
    return sample, err


TIME_BIN = "/usr/bin/time"  # GNU time (Debian package "time"), for the peak RSS
RUN_TIMEOUT = 300.0  # seconds; a run that takes longer is killed and reported as hung


def _kill_group(pgid: int) -> None:
    """Kill the process group of one child this script started (it hung)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)


@contextmanager
def fresh_tmpfs() -> Iterator[Path]:
    """A new, empty tmpfs, mounted for the block and unmounted after it."""
    mnt = Path(tempfile.mkdtemp(prefix="layerstore-bench-"))
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=16g,mode=0755", "tmpfs", str(mnt)], check=True
    )
    try:
        yield mnt
    finally:
        if subprocess.run(["umount", str(mnt)], check=False).returncode != 0:
            subprocess.run(["umount", "-l", str(mnt)], check=False)
        with contextlib.suppress(OSError):
            mnt.rmdir()


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(4 * MIB):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def gunzip_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with subprocess.Popen(["gzip", "-dc", str(path)], stdout=subprocess.PIPE) as p:
        assert p.stdout is not None
        while chunk := p.stdout.read(4 * MIB):
            h.update(chunk)
    if p.returncode != 0:
        return "(not valid gzip)"
    return "sha256:" + h.hexdigest()


def read_layers(graph: Path) -> list[dict[str, object]]:
    data = (graph / "vfs-layers" / "layers.json").read_bytes()
    layers: list[dict[str, object]] = json.loads(data) if data else []
    return layers


# ---- workloads ----------------------------------------------------------------------


class Workload:
    """Prepare once per side (untimed), then ``once`` = one timed, checked run."""

    name = ""
    nbytes = 0  # uncompressed tar bytes moved per run, for MB/s

    def prepare(self, impl: Impl) -> object:
        return None

    def once(self, impl: Impl, state: object) -> Sample:
        raise NotImplementedError

    def release(self, state: object) -> None:
        pass

    def extra(self, ours: list[Sample], go: list[Sample]) -> str:
        return ""


class Import(Workload):
    """``import-layer < input`` into a fresh store on a fresh tmpfs."""

    def __init__(self, name: str, tar: datasets.TarInput) -> None:
        self.name = name
        self.tar = tar
        self.nbytes = tar.tar_size

    def once(self, impl: Impl, state: object) -> Sample:
        with fresh_tmpfs() as mnt:
            graph, run = mnt / "graph", mnt / "run"
            out = mnt / "stdout"
            s, _ = run_child(
                impl.cli(graph, run, "import-layer"), cwd=mnt, stdin=self.tar.path, stdout=out
            )
            if s.error:
                return s
            layers = read_layers(graph)
            if len(layers) != 1:
                s.error = f"{len(layers)} layers recorded, expected 1"
            elif layers[0].get("diff-digest") != self.tar.tar_digest:
                s.error = f"diff-digest {layers[0].get('diff-digest')} != {self.tar.tar_digest}"
            elif layers[0].get("compressed-diff-digest") != self.tar.digest:
                s.error = "compressed-diff-digest does not match the input"
            elif layers[0].get("diff-size") != self.tar.tar_size:
                s.error = f"diff-size {layers[0].get('diff-size')} != {self.tar.tar_size}"
            return s


@dataclass
class MountedStore:
    mnt: Path
    graph: Path
    run: Path
    layer: str = ""
    cm: object = None
    checked: bool = False
    outputs: list[bytes] = field(default_factory=list)


def _enter_tmpfs() -> tuple[Path, object]:
    cm = fresh_tmpfs()
    mnt = cm.__enter__()
    return mnt, cm


def _leave_tmpfs(cm: object) -> None:
    cm.__exit__(None, None, None)  # type: ignore[attr-defined]


class Diff(Workload):
    """``diff -u`` / ``diff -c`` of the rootfs layer that the same side imported."""

    def __init__(
        self, name: str, tar: datasets.TarInput, source: datasets.TarInput, gzip: bool
    ) -> None:
        self.name = name
        self.tar = tar
        self.source = source
        self.gzip = gzip
        self.nbytes = tar.tar_size

    def prepare(self, impl: Impl) -> object:
        mnt, cm = _enter_tmpfs()
        st = MountedStore(mnt, mnt / "graph", mnt / "run", cm=cm)
        out = mnt / "id"
        s, _ = run_child(
            impl.cli(st.graph, st.run, "import-layer"),
            cwd=mnt,
            stdin=self.source.path,
            stdout=out,
        )
        if s.error:
            _leave_tmpfs(cm)
            raise SetupError(f"import of {self.source.name} failed: {s.error}")
        layers = read_layers(st.graph)
        if len(layers) != 1 or layers[0].get("diff-digest") != self.tar.tar_digest:
            _leave_tmpfs(cm)
            raise SetupError(f"import of {self.source.name} recorded the wrong layer")
        st.layer = str(layers[0]["id"])
        return st

    def once(self, impl: Impl, state: object) -> Sample:
        assert isinstance(state, MountedStore)
        out = state.mnt / "diff.out"
        flag = "-c" if self.gzip else "-u"
        s, _ = run_child(
            impl.cli(state.graph, state.run, "diff", flag, state.layer),
            cwd=state.mnt,
            stdout=out,
        )
        if not s.error:
            s.out_size = out.stat().st_size
            if not self.gzip:
                got = sha256_file(out)
                if got != self.tar.tar_digest:
                    s.error = f"output is not the input tar: {got}"
            elif not state.checked:
                got = gunzip_sha256(out)
                if got != self.tar.tar_digest:
                    s.error = f"gunzipped output is not the input tar: {got}"
                state.checked = True
        out.unlink(missing_ok=True)
        return s

    def release(self, state: object) -> None:
        assert isinstance(state, MountedStore)
        _leave_tmpfs(state.cm)

    def extra(self, ours: list[Sample], go: list[Sample]) -> str:
        if not self.gzip or not ours or not go:
            return ""
        return f"output size ours/Go {ours[-1].out_size / go[-1].out_size:.3f}"


class Layers(Workload):
    """``layers`` on a copy of the many-layer store (read only)."""

    def __init__(self, name: str, store: datasets.StoreInput) -> None:
        self.name = name
        self.store = store
        self.first_output: dict[str, bytes] = {}

    def prepare(self, impl: Impl) -> object:
        mnt, cm = _enter_tmpfs()
        graph, run = datasets.copy_store(self.store, mnt)
        return MountedStore(mnt, graph, run, cm=cm)

    def once(self, impl: Impl, state: object) -> Sample:
        assert isinstance(state, MountedStore)
        out = state.mnt / "layers.out"
        s, _ = run_child(impl.cli(state.graph, state.run, "layers"), cwd=state.mnt, stdout=out)
        if not s.error:
            text = out.read_bytes()
            ids = [ln for ln in text.split(b"\n") if ln and not ln.startswith(b"\t")]
            if len(ids) != self.store.layers:
                s.error = f"listed {len(ids)} layers, expected {self.store.layers}"
            self.first_output.setdefault(impl.label, text)
        out.unlink(missing_ok=True)
        return s

    def release(self, state: object) -> None:
        assert isinstance(state, MountedStore)
        _leave_tmpfs(state.cm)

    def extra(self, ours: list[Sample], go: list[Sample]) -> str:
        outs = list(self.first_output.values())
        if len(outs) == 2 and outs[0] != outs[1]:
            return "OUTPUT DIFFERS from the Go CLI's"
        return ""


class CreateLayer(Workload):
    """``create-layer`` on a fresh tmpfs copy of the many-layer store."""

    def __init__(self, name: str, store: datasets.StoreInput) -> None:
        self.name = name
        self.store = store

    def once(self, impl: Impl, state: object) -> Sample:
        with fresh_tmpfs() as mnt:
            graph, run = datasets.copy_store(self.store, mnt)
            out = mnt / "id"
            s, _ = run_child(impl.cli(graph, run, "create-layer"), cwd=mnt, stdout=out)
            if s.error:
                return s
            new_id = out.read_text().split()[0] if out.read_text().split() else ""
            layers = read_layers(graph)
            if len(layers) != self.store.layers + 1 or layers[-1].get("id") != new_id:
                s.error = f"store has {len(layers)} layers, the last not {new_id!r}"
            elif not (graph / "vfs" / "dir" / new_id).is_dir():
                s.error = f"no vfs directory for {new_id}"
            return s


class DuringImport(Workload):
    """Latency of ``layers`` / ``create-layer`` from another process while an import of
    the big layer runs in the same store (Go makes them wait for the whole import)."""

    def __init__(self, name: str, verb: str, big: datasets.TarInput, delay: float) -> None:
        self.name = name
        self.verb = verb
        self.big = big
        self.delay = delay

    def once(self, impl: Impl, state: object) -> Sample:
        with fresh_tmpfs() as mnt:
            graph, run = mnt / "graph", mnt / "run"
            with (
                self.big.path.open("rb") as fin,
                (mnt / "import.out").open("wb") as fout,
                (mnt / "import.err").open("wb") as ferr,
            ):
                bg = subprocess.Popen(
                    impl.cli(graph, run, "import-layer"), stdin=fin, stdout=fout, stderr=ferr
                )
            try:
                time.sleep(self.delay)
                if bg.poll() is not None:
                    return Sample(0, 0, error=f"the import ended within {self.delay} s")
                s, _ = run_child(impl.cli(graph, run, self.verb), cwd=mnt, stdout=mnt / "verb.out")
            finally:
                try:
                    rc = bg.wait(RUN_TIMEOUT)
                except subprocess.TimeoutExpired:
                    bg.kill()
                    rc = bg.wait()
            if not s.error and rc != 0:
                s.error = f"the import failed: exit {rc}"
            return s

    def extra(self, ours: list[Sample], go: list[Sample]) -> str:
        return f"started {self.delay} s into the import (target: ours within 0.05 s)"


class TwoImports(Workload):
    """Two imports of the same input into one store: started together, then (same run,
    fresh tmpfs) one after the other. Timed: the concurrent pair; the serial time is kept
    beside it. Go serialises them on the layers lock; ours extracts outside the lock, so
    the pair started together must finish no later than the serial one."""

    def __init__(self, name: str, tar: datasets.TarInput) -> None:
        self.name = name
        self.tar = tar
        self.nbytes = 2 * tar.tar_size

    def _check(self, graph: Path) -> str | None:
        layers = read_layers(graph)
        if len(layers) != 2:
            return f"{len(layers)} layers recorded, expected 2"
        for layer in layers:
            if layer.get("diff-digest") != self.tar.tar_digest:
                return f"diff-digest {layer.get('diff-digest')} != {self.tar.tar_digest}"
        return None

    def _together(self, impl: Impl) -> Sample:
        with fresh_tmpfs() as mnt:
            graph, run = mnt / "graph", mnt / "run"
            procs = []
            t0 = time.perf_counter()
            for k in range(2):
                with (
                    self.tar.path.open("rb") as fin,
                    (mnt / f"out{k}").open("wb") as fout,
                    (mnt / f"err{k}").open("wb") as ferr,
                ):
                    argv = impl.cli(graph, run, "import-layer")
                    if os.access(TIME_BIN, os.X_OK):  # the peak RSS of the command alone
                        argv = [TIME_BIN, "-f", "%M", "-o", str(mnt / f"rss{k}"), "--", *argv]
                    procs.append(subprocess.Popen(argv, stdin=fin, stdout=fout, stderr=ferr))
            cpu, rss, errors = 0.0, 0, []
            for k, p in enumerate(procs):
                _, status, ru = os.wait4(p.pid, 0)
                cpu += ru.ru_utime + ru.ru_stime
                rss_file = mnt / f"rss{k}"
                peak = int(rss_file.read_text().split()[-1]) if rss_file.exists() else 0
                rss = max(rss, peak or ru.ru_maxrss)
                if os.waitstatus_to_exitcode(status) != 0:
                    lines = (mnt / f"err{k}").read_text(errors="replace").strip().splitlines()
                    errors.append(f"import {k}: {lines[-1] if lines else 'failed'}")
            t1 = time.perf_counter()
            for p in procs:
                p.returncode = 0  # reaped above
            s = Sample(t1 - t0, rss, cpu, error="; ".join(errors) or None)
            if not s.error:
                s.error = self._check(graph)
            return s

    def _serial(self, impl: Impl) -> Sample:
        with fresh_tmpfs() as mnt:
            graph, run = mnt / "graph", mnt / "run"
            total = Sample(0.0, 0)
            for _ in range(2):
                s, _ = run_child(impl.cli(graph, run, "import-layer"), cwd=mnt, stdin=self.tar.path)
                if s.error:
                    return s
                total.seconds += s.seconds
                total.cpu_seconds += s.cpu_seconds
                total.maxrss_kib = max(total.maxrss_kib, s.maxrss_kib)
            total.error = self._check(graph)
            return total

    def once(self, impl: Impl, state: object) -> Sample:
        serial = self._serial(impl)
        if serial.error:
            return serial
        s = self._together(impl)
        s.serial_seconds = serial.seconds
        return s

    def extra(self, ours: list[Sample], go: list[Sample]) -> str:
        def share(samples: list[Sample]) -> str:
            if not samples:
                return "—"
            return f"{statistics.median(s.seconds / s.serial_seconds for s in samples):.2f}"

        return (
            f"together / one after the other: ours {share(ours)}, Go {share(go)} "
            "(target: ours <= 1.00)"
        )


def workloads(ds: datasets.Datasets) -> list[Workload]:
    gz, tar = ds.rootfs["tar.gz"], ds.rootfs["tar"]
    many = ds.stores[max(ds.stores)]
    chosen: list[Workload] = [
        Import("import rootfs.tar.gz", gz),
        Import("import rootfs.tar", tar),
        Import("import rootfs.tar.zst", ds.rootfs["tar.zst"]),
        Import(f"import {ds.small.name}", ds.small),
        Import(f"import {ds.big.name}", ds.big),
        TwoImports("2 imports of rootfs.tar.gz at once", gz),
        Diff("diff rootfs -u", tar, gz, gzip=False),
        Diff("diff rootfs -c (gzip)", tar, gz, gzip=True),
        Layers(f"layers ({many.layers} layers)", many),
        CreateLayer(f"create-layer ({many.layers} layers)", many),
    ]
    if ds.big.tar_size >= 1 << 30:  # long enough to start something while it runs
        chosen += [
            DuringImport(f"layers during import of {ds.big.name}", "layers", ds.big, 0.5),
            DuringImport(
                f"create-layer during import of {ds.big.name}", "create-layer", ds.big, 0.5
            ),
        ]
    return chosen


# ---- the interleaved run ------------------------------------------------------------


def _cpu_times() -> tuple[int, int]:
    """(idle, total) jiffies of all CPUs, from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return fields[3] + fields[4], sum(fields[:8])


def wait_quiet(max_busy: float, timeout: float, window: float = 0.3) -> bool:
    """Wait until the machine's CPUs are at most ``max_busy`` busy over ``window`` seconds
    (other helpers' builds share this machine); False if ``timeout`` passed first."""
    deadline = time.monotonic() + timeout
    while True:
        idle0, total0 = _cpu_times()
        time.sleep(window)
        idle1, total1 = _cpu_times()
        busy = 1 - (idle1 - idle0) / max(1, total1 - total0)
        if busy <= max_busy:
            return True
        if time.monotonic() > deadline:
            return False


@dataclass
class Result:
    name: str
    nbytes: int
    a: Impl
    b: Impl
    a_samples: list[Sample] = field(default_factory=list)
    b_samples: list[Sample] = field(default_factory=list)
    a_error: str | None = None
    b_error: str | None = None
    extra: str = ""
    noisy_pairs: int = 0  # pairs started although the machine never became quiet

    def cpu_ratios(self) -> list[float]:
        pairs = zip(self.a_samples, self.b_samples, strict=False)
        return [b.cpu_seconds / a.cpu_seconds for a, b in pairs if a.cpu_seconds > 0]

    def ratios(self) -> list[float]:
        return [b.seconds / a.seconds for a, b in zip(self.a_samples, self.b_samples, strict=False)]


@dataclass(frozen=True)
class Quiet:
    """Before each pair, wait up to ``timeout`` s for CPU use <= ``max_busy`` (0: never)."""

    max_busy: float = 0.15
    timeout: float = 10.0


def measure(
    w: Workload, a: Impl, b: Impl, pairs: int, progress: Callable[[str], None], quiet: Quiet
) -> Result:
    """One warm-up run per side, then ``pairs`` interleaved pairs (a is "ours")."""
    res = Result(w.name, w.nbytes, a, b)
    states: dict[str, object] = {}
    for impl, attr in ((a, "a_error"), (b, "b_error")):
        try:
            states[impl.label] = w.prepare(impl)
        except Exception as e:  # reported in the table, never hidden
            setattr(res, attr, f"preparation failed: {type(e).__name__}: {e}")
    sides = ((a, res.a_samples, "a_error"), (b, res.b_samples, "b_error"))
    try:
        for i in range(pairs + 1):  # run 0 is the warm-up
            # A B | B A | A B ...: each pair is two adjacent runs, and swapping the order
            # every other pair cancels a steady drift of the machine's speed.
            if quiet.max_busy > 0 and not wait_quiet(quiet.max_busy, quiet.timeout):
                res.noisy_pairs += 1
            for impl, samples, attr in sides if i % 2 == 0 else sides[::-1]:
                if getattr(res, attr):
                    continue
                try:
                    s = w.once(impl, states[impl.label])
                except Exception as e:  # a crash of the harness or a missing CLI: report it
                    s = Sample(0.0, 0, error=f"{type(e).__name__}: {e}")
                if s.error:
                    setattr(res, attr, s.error)
                    samples.clear()
                    continue
                if i > 0:
                    samples.append(s)
            progress(".")
    finally:
        for label, st in states.items():
            if st is not None:
                w.release(st)
            del label
    res.extra = w.extra(res.a_samples, res.b_samples)
    if res.noisy_pairs:
        busy = f"{res.noisy_pairs} of {pairs + 1} rounds began on a busy machine"
        res.extra = f"{res.extra}; {busy}" if res.extra else busy
    return res


# ---- reporting ----------------------------------------------------------------------


def _side(samples: list[Sample], error: str | None, nbytes: int) -> tuple[str, str, str]:
    if error:
        return (f"FAILED: {error}", "—", "—")
    med = statistics.median(s.seconds for s in samples)
    rate = f"{nbytes / med / MB:.0f}" if nbytes else "—"
    rss = f"{max(s.maxrss_kib for s in samples) / 1024:.0f}"
    return (f"{med:.3f}", rate, rss)


def table(results: list[Result]) -> str:
    a, b = results[0].a.label, results[0].b.label
    head = (
        f"| workload | {a} s | {b} s | {a} MB/s | {b} MB/s | {a} peak RSS MiB "
        f"| {b} peak RSS MiB | ratio {b}/{a} (min-max) | CPU-time ratio | notes |"
    )
    lines = [head, "|" + "---|" * 10]
    for r in results:
        sa, sb = _side(r.a_samples, r.a_error, r.nbytes), _side(r.b_samples, r.b_error, r.nbytes)
        rs = r.ratios() if not (r.a_error or r.b_error) else []
        ratio = f"**{statistics.median(rs):.2f}x** ({min(rs):.2f}-{max(rs):.2f})" if rs else "—"
        cr = r.cpu_ratios() if rs else []
        cpu = f"{statistics.median(cr):.2f}x" if cr else "—"
        lines.append(
            f"| {r.name} | {sa[0]} | {sb[0]} | {sa[1]} | {sb[1]} | {sa[2]} | {sb[2]} "
            f"| {ratio} | {cpu} | {r.extra} |"
        )
    return "\n".join(lines)


def environment(args: argparse.Namespace) -> str:
    def out(cmd: list[str]) -> str:
        r = subprocess.run(cmd, capture_output=True, text=True, check=False)
        return r.stdout.strip()

    cpu = next(
        (
            ln.split(":", 1)[1].strip()
            for ln in Path("/proc/cpuinfo").read_text().splitlines()
            if ln.startswith("model name")
        ),
        "?",
    )
    go_ver = out(["dpkg-query", "-W", "-f", "${Version}", "containers-storage"])
    rev = out(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"])
    dirty = (
        " (with uncommitted changes)"
        if out(["git", "-C", str(REPO), "status", "--porcelain"])
        else ""
    )
    argv = " ".join(["benchmarks/compare.py", *sys.argv[1:]])
    return "\n".join(
        [
            f"- date: {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC; command: `{argv}`",
            f"- machine: {os.cpu_count()} x {cpu}, {platform.release()}; every timed run on a "
            "fresh tmpfs",
            f"- Go: containers-storage {go_ver} (Debian); ours: layerstore {rev}{dirty}",
            f"- {args.pairs} interleaved pairs per workload after one warm-up run per side; "
            "times are whole-process medians; MB/s counts uncompressed tar bytes; ratio = "
            "median of the per-pair ratios (wall time); CPU-time ratio = the same for user + "
            "system time of the child process tree",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    global RUN_TIMEOUT
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="smaller sets, 2 pairs (smoke run)")
    ap.add_argument("--go-vs-go", action="store_true", help="Go in both slots (fairness check)")
    ap.add_argument("--pairs", type=int, default=None, help="timed pairs (default 7; quick 2)")
    ap.add_argument("--only", nargs="*", default=None, help="workloads whose name has this")
    ap.add_argument(
        "--max-busy",
        type=float,
        default=0.15,
        help="before each pair wait until the CPUs are at most this busy (0: don't wait)",
    )
    ap.add_argument("--quiet-timeout", type=float, default=10.0, help="seconds to wait")
    ap.add_argument(
        "--timeout", type=float, default=RUN_TIMEOUT, help="kill a run after this many s"
    )
    ap.add_argument("--results", type=Path, default=None, help="write a markdown table here")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("compare.py: run as root (it mounts a tmpfs per run)", file=sys.stderr)
        return 2
    args.pairs = args.pairs or (2 if args.quick else 7)
    RUN_TIMEOUT = args.timeout
    ds = datasets.ensure_all(quick=args.quick)

    b = go_impl("Go")
    a: Impl
    try:
        a = go_impl("Go(A)") if args.go_vs_go else our_impl()
        if args.go_vs_go:
            b = go_impl("Go(B)")
    except SetupError as e:
        a = Impl("ours", ("/nonexistent/layerstore",))
        print(f"compare.py: {e}", file=sys.stderr)

    chosen = [w for w in workloads(ds) if not args.only or any(o in w.name for o in args.only)]
    results: list[Result] = []
    for w in chosen:
        print(f"{w.name:36} ", end="", flush=True)
        quiet = Quiet(args.max_busy, args.quiet_timeout)
        r = measure(w, a, b, args.pairs, lambda s: print(s, end="", flush=True), quiet)
        results.append(r)
        rs = r.ratios() if not (r.a_error or r.b_error) else []
        print(
            f" {a.label} {_side(r.a_samples, r.a_error, r.nbytes)[0]}  "
            f"{b.label} {_side(r.b_samples, r.b_error, r.nbytes)[0]}"
            + (f"  ratio {statistics.median(rs):.2f}" if rs else ""),
            flush=True,
        )
    text = table(results)
    env = environment(args)
    print()
    print(text)
    print()
    print(env)
    if args.results:
        title = "Go vs Go (fairness check)" if args.go_vs_go else "layerstore vs Go"
        args.results.write_text(f"# Benchmark: {title}\n\n{env}\n\n{text}\n")
        print(f"\nwritten: {args.results}")
    failed = [r.name for r in results if r.a_error or r.b_error]
    if failed:
        print(f"\nFAILED workloads: {', '.join(failed)}", file=sys.stderr)
        return 1
    if args.go_vs_go:
        bad = [r.name for r in results if not 0.96 <= statistics.median(r.ratios()) <= 1.03]
        if bad:
            print(
                f"\nharness looks biased (Go/Go outside 0.96-1.03): {', '.join(bad)}",
                file=sys.stderr,
            )
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
