"""The metadata side against the Go CLI: ``layers`` and ``create-layer`` on a
10,000-layer vfs store, whole processes, interleaved; plus in-process load / get /
reload-check times.

The store (cached in ``$LAYERSTORE_BENCH_CACHE/meta``, default
``/var/cache/layerstore-bench/meta``) holds what the Go CLI's ``create-layer`` writes:
chains of 10 layers (``parent``), every tenth layer named, Go ``created`` times with
nanoseconds, an empty ``vfs/dir/<id>`` per layer. Two layers are made by the real Go CLI
first and the generator must reproduce their record bytes exactly; the rest is written
directly (``layers.json`` + directories). The Go CLI must then list all 10,000, and its
own rewrite of ``layers.json`` (create-layer + delete-layer) must be byte-identical.

Timing: the store is copied to a fresh tmpfs once per workload. ``layers`` runs on that
copy (it writes nothing). Every ``create-layer`` runs on its own fresh copy of the
10,000-layer store made before the timer starts, so both sides always add the 10,001st
layer to identical stores (no growth, no order effect). One warm-up per side, then
``--pairs`` pairs, the order swapped every other pair (ours, Go | Go, ours | ...). Ratio =
Go time / our time per pair; median and min-max printed.

Our side is the venv's console script (``.venv/bin/layerstore``: its shebang is the
venv's python, a symlink to the real interpreter, no pyenv shim), run with the caller's
environment minus ``PYTHONDONTWRITEBYTECODE`` (an installed package has its bytecode
compiled; that variable would make every run recompile). ``--ours`` overrides the
command (e.g. ``--ours "/work/main/.venv/bin/python -I -m layerstore"``);
``--go-vs-go`` puts Go on both sides (ratios must be ~1).

Usage (root; mounts tmpfs): ``python benchmarks/bench_metadata.py [--pairs N]
[--only layers|create-layer|inprocess] [--go-vs-go] [--ours CMD]``
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

GO_CLI = "/usr/bin/containers-storage"
N_LAYERS = 10_000
REPO = Path(__file__).resolve().parent.parent


def cache_root() -> Path:
    base = Path(os.environ.get("LAYERSTORE_BENCH_CACHE", "/var/cache/layerstore-bench"))
    return base / "meta"


def log(msg: str) -> None:
    print(f"[bench_metadata] {msg}", file=sys.stderr, flush=True)


def listed_ids(graph: Path, run: Path) -> list[str]:
    """Layer ids as the Go CLI's ``layers`` lists them."""
    return [line for line in go(graph, run, "layers").splitlines() if not line.startswith("\t")]


def go(graph: Path, run: Path, *args: str) -> str:
    out = subprocess.run(
        [GO_CLI, "-g", str(graph), "-R", str(run), "-s", "vfs", *args],
        check=True,
        capture_output=True,
        text=True,
    )
    return out.stdout


# ---- the store ----------------------------------------------------------------------


def created_text(i: int) -> str:
    """Go's RFC3339Nano for layer ``i`` (trailing zeros of the fraction dropped)."""
    secs = 1_767_225_600 + i * 7  # 2026-01-01T00:00:00Z + 7 s per layer
    ns = (i * 123_456_789) % 1_000_000_000
    t = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs))
    if ns:
        t += "." + f"{ns:09d}".rstrip("0")
    return t + "Z"


def record_text(ident: str, names: list[str], parent: str, created: str) -> str:
    """The bytes Go's encoder writes for a record made by ``create-layer``."""
    out = '{"id":' + json.dumps(ident)
    if names:
        out += ',"names":' + json.dumps(names, separators=(",", ":"))
    if parent:
        out += ',"parent":' + json.dumps(parent)
    return out + ',"created":' + json.dumps(created) + "}"


def check_template_against_go(work: Path) -> None:
    """Two layers made by the Go CLI (one plain, one named with a parent): the
    template must reproduce Go's bytes exactly."""
    graph, run = work / "graph", work / "run"
    first = go(graph, run, "create-layer").split()[0]
    second = go(graph, run, "create-layer", "-n", "bench-name", first).split()[0]
    data = (graph / "vfs-layers" / "layers.json").read_text()
    recs = json.loads(data)
    ours = (
        "["
        + ",".join(
            record_text(r["id"], r.get("names", []), r.get("parent", ""), r["created"])
            for r in recs
        )
        + "]"
    )
    if ours != data or [r["id"] for r in recs] != [first, second]:
        raise SystemExit(f"record template differs from the Go CLI:\n go: {data}\nour: {ours}")
    mode = (graph / "vfs" / "dir" / first).stat().st_mode & 0o7777
    if mode != 0o555:
        raise SystemExit(f"the Go CLI made vfs/dir/<id> with mode {mode:o}, expected 555")


def build_store(dest: Path, n: int) -> None:
    graph, run = dest / "graph", dest / "run"
    go(graph, run, "layers")  # Go lays out the directories and lock files
    ids = [hashlib.sha256(f"layerstore-meta-bench-{i}".encode()).hexdigest() for i in range(n)]
    texts = []
    dirs = graph / "vfs" / "dir"
    dirs.mkdir(parents=True, exist_ok=True)
    for i, ident in enumerate(ids):
        parent = ids[i - 1] if i % 10 else ""
        names = [f"bench-layer-{i}"] if i % 10 == 0 else []
        texts.append(record_text(ident, names, parent, created_text(i)))
        d = dirs / ident
        d.mkdir()
        d.chmod(0o555)
    layers_json = graph / "vfs-layers" / "layers.json"
    layers_json.write_text("[" + ",".join(texts) + "]")
    layers_json.chmod(0o600)
    listed = listed_ids(graph, run)
    if listed != ids:
        raise SystemExit(f"the Go CLI lists {len(listed)} layers, expected {n} in order")
    before = layers_json.read_bytes()
    extra = go(graph, run, "create-layer").split()[0]
    go(graph, run, "delete-layer", extra)
    if layers_json.read_bytes() != before:
        raise SystemExit("the Go CLI's rewrite of layers.json differs from the generated file")


def ensure_store(n: int = N_LAYERS) -> Path:
    final = cache_root() / f"store-{n}"
    if (final / ".complete").exists():
        return final
    log(f"building {final}")
    cache_root().mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache_root()) as tmp:
        check_template_against_go(Path(tmp) / "probe")
        part = Path(tmp) / "store"
        build_store(part, n)
        (part / ".complete").write_text("ok\n")
        if final.exists():
            shutil.rmtree(final)
        part.rename(final)
    return final


@contextmanager
def tmpfs() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="ls-meta-"))
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1g", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=True)
        path.rmdir()


def copy_store(src: Path, dest: Path) -> tuple[Path, Path]:
    subprocess.run(["cp", "-a", str(src), str(dest)], check=True)
    return dest / "graph", dest / "run"


# ---- timing -------------------------------------------------------------------------


def run_timed(argv: list[str], env: dict[str, str]) -> float:
    with open(os.devnull, "wb") as null:
        t0 = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=null, stderr=subprocess.PIPE, env=env)
        _, err = proc.communicate()
        t1 = time.perf_counter()
    if proc.returncode != 0:
        raise SystemExit(f"{shlex.join(argv)} failed ({proc.returncode}): {err.decode()}")
    return t1 - t0


def our_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def interleave(
    label: str,
    ours: Callable[[], float],
    theirs: Callable[[], float],
    pairs: int,
) -> None:
    ours()  # warm-up (also writes our bytecode)
    theirs()
    a: list[float] = []
    b: list[float] = []
    for i in range(pairs):
        if i % 2 == 0:
            a.append(ours())
            b.append(theirs())
        else:
            b.append(theirs())
            a.append(ours())
    ratios = sorted(g / o for o, g in zip(a, b, strict=True))
    print(
        f"{label:<28} ours {statistics.median(a) * 1000:7.1f} ms   "
        f"go {statistics.median(b) * 1000:7.1f} ms   go/ours {statistics.median(ratios):5.2f}x "
        f"(min {ratios[0]:.2f}, max {ratios[-1]:.2f}, {pairs} pairs)",
        flush=True,
    )


def bench_layers(store: Path, ours_cmd: list[str], go_cmd: list[str], pairs: int) -> None:
    with tmpfs() as mnt:
        graph, run = copy_store(store, mnt / "s")
        flags = ["-g", str(graph), "-R", str(run), "-s", "vfs", "layers"]
        env = our_env()
        mine = subprocess.run([*ours_cmd, *flags], check=True, capture_output=True, env=env)
        goes = subprocess.run([*go_cmd, *flags], check=True, capture_output=True)
        if mine.stdout != goes.stdout or mine.stdout.count(b"\n") < N_LAYERS:
            raise SystemExit("`layers` output differs between the two sides")
        interleave(
            "layers (10,000 layers)",
            lambda: run_timed([*ours_cmd, *flags], env),
            lambda: run_timed([*go_cmd, *flags], env),
            pairs,
        )


def bench_create(store: Path, ours_cmd: list[str], go_cmd: list[str], pairs: int) -> None:
    env = our_env()
    with tmpfs() as mnt:
        counter = iter(range(1_000_000))

        def one(cmd: list[str]) -> Callable[[], float]:
            def run() -> float:
                dest = mnt / f"s{next(counter)}"
                graph, rundir = copy_store(store, dest)  # outside the timer
                took = run_timed(
                    [*cmd, "-g", str(graph), "-R", str(rundir), "-s", "vfs", "create-layer"], env
                )
                listed = listed_ids(graph, rundir)
                if len(listed) != N_LAYERS + 1:
                    raise SystemExit(f"create-layer left {len(listed)} layers")
                shutil.rmtree(dest)
                return took

            return run

        interleave("create-layer (10,000 layers)", one(ours_cmd), one(go_cmd), pairs)


def bench_inprocess(store: Path) -> None:
    sys.path.insert(0, str(REPO / "src" / "python"))
    from layerstore.store import LayerStore

    with tmpfs() as mnt:
        graph, run = copy_store(store, mnt / "s")
        loads = []
        for _ in range(9):
            t0 = time.perf_counter()
            s = LayerStore(graph, run, "vfs")
            loads.append(time.perf_counter() - t0)
            s.close()
        s = LayerStore(graph, run, "vfs")
        ids = s.ids()
        s.get(ids[0])
        t0 = time.perf_counter()
        for ident in ids:
            s.get(ident)
        get_cold = (time.perf_counter() - t0) / len(ids)
        gets = []  # each call takes the shared lock and does the reload check
        for _ in range(5):
            t0 = time.perf_counter()
            for ident in ids:
                s.get(ident)
            gets.append((time.perf_counter() - t0) / len(ids))
        batched = []  # inside reading(): the lookup itself, on the loaded store
        with s.reading():
            for _ in range(5):
                t0 = time.perf_counter()
                for ident in ids:
                    s.get(ident)
                batched.append((time.perf_counter() - t0) / len(ids))
        checks = []
        for _ in range(5):
            t0 = time.perf_counter()
            for _ in range(2000):
                with s.reading():
                    pass
            checks.append((time.perf_counter() - t0) / 2000)
        s.close()
    print(
        f"in-process: open+load {statistics.median(loads) * 1000:.1f} ms (target <= 60) | "
        f"get(id) in a reading() batch {statistics.median(batched) * 1e6:.2f} us "
        f"(target <= 10) | get(id) alone (lock + reload check + lookup) "
        f"{statistics.median(gets) * 1e6:.2f} us, first pass {get_cold * 1e6:.2f} us | "
        f"reload check (reading() with nothing changed) "
        f"{statistics.median(checks) * 1e6:.2f} us (target <= 30)",
        flush=True,
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pairs", type=int, default=11)
    p.add_argument("--only", action="append", choices=["layers", "create-layer", "inprocess"])
    p.add_argument("--go-vs-go", action="store_true")
    p.add_argument("--ours", default=str(Path(sys.executable).parent / "layerstore"))
    a = p.parse_args(argv)
    if os.geteuid() != 0:
        raise SystemExit("run as root (mounts tmpfs)")
    store = ensure_store()
    ours_cmd = [GO_CLI] if a.go_vs_go else shlex.split(a.ours)
    go_cmd = [GO_CLI]
    only = set(a.only or ["layers", "create-layer", "inprocess"])
    print(f"ours: {shlex.join(ours_cmd)}   go: {GO_CLI}   store: {store}", flush=True)
    if "layers" in only:
        bench_layers(store, ours_cmd, go_cmd, a.pairs)
    if "create-layer" in only:
        bench_create(store, ours_cmd, go_cmd, a.pairs)
    if "inprocess" in only and not a.go_vs_go:
        bench_inprocess(store)
    return 0


if __name__ == "__main__":
    sys.exit(main())
