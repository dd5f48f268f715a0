"""LockFile: the behaviours of Go's pkg/lockfile tests (SPEC.md §3, §10.3), with real
threads and real processes."""

from __future__ import annotations

import itertools
import os
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from layerstore.lockfile import TOKEN_SIZE, LockFile, decode_token

WORKER = Path(__file__).parent / "helpers" / "lock_worker.py"


def worker(*args: str | Path, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(WORKER), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def start_workers(argvs: list[list[str]]) -> list[subprocess.Popen[str]]:
    return [
        subprocess.Popen(
            [sys.executable, str(WORKER), *argv],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for argv in argvs
    ]


def wait_all(procs: list[subprocess.Popen[str]]) -> list[int]:
    codes = []
    for p in procs:
        _, err = p.communicate("", timeout=20)
        assert p.returncode == 0, err
        codes.append(p.returncode)
    return codes


def open_fds_to(path: Path) -> int:
    n = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}") == str(path):
                n += 1
        except OSError:
            pass
    return n


def in_thread(fn: Callable[[], object]) -> object:
    """Run fn on another thread and return its result (or raise its exception)."""
    box: list[object] = []
    errs: list[BaseException] = []

    def run() -> None:
        try:
            box.append(fn())
        except BaseException as e:
            errs.append(e)

    t = threading.Thread(target=run)
    t.start()
    t.join(10)
    assert not t.is_alive(), "thread hung"
    if errs:
        raise errs[0]
    return box[0]


def blocked_on(path: Path, pid: int, timeout: float = 10) -> bool:
    """Wait until /proc/locks shows process ``pid`` blocked on a POSIX lock of ``path``."""
    inode = path.stat().st_ino
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with open("/proc/locks") as f:
            for line in f:
                fields = line.split()
                # "N: -> POSIX  ADVISORY  WRITE <pid> <maj>:<min>:<inode> 0 EOF"
                if (
                    fields[1] == "->"
                    and fields[2] == "POSIX"
                    and int(fields[5]) == pid
                    and int(fields[6].rsplit(":", 1)[1]) == inode
                ):
                    return True
        time.sleep(0.005)
    return False


def try_and_release(lock: LockFile, write: bool) -> bool:
    got = lock.try_lock() if write else lock.try_rlock()
    if got:
        lock.unlock()
    return got


def intervals(log: Path) -> list[tuple[str, int, int]]:
    """(kind, enter ns, exit ns) per hold, from a worker's log."""
    opened: dict[str, tuple[str, int]] = {}
    out = []
    for line in log.read_text().splitlines():
        tag, pid, kind, ns = line.split()
        if tag == "E":
            assert pid not in opened
            opened[pid] = (kind, int(ns))
        else:
            k, start = opened.pop(pid)
            out.append((k, start, int(ns)))
    assert not opened
    return out


# ---------------------------------------------------------------------------------------
# registry and construction


def test_one_object_per_absolute_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    a = LockFile.get("x.lock")
    b = LockFile.get(str(tmp_path / "sub" / ".." / "x.lock"))
    assert a is b
    assert a.path == str(tmp_path / "x.lock")
    assert not a.read_only


def test_mode_mismatch_is_refused(tmp_path: Path) -> None:
    rw = tmp_path / "rw.lock"
    ro = tmp_path / "ro.lock"
    LockFile.get(str(rw))
    ro.touch()
    LockFile.get(str(ro), read_only=True)
    with pytest.raises(ValueError, match=f'lock "{rw}" is not a read-only lock'):
        LockFile.get(str(rw), read_only=True)
    with pytest.raises(ValueError, match=f'lock "{ro}" is not a read-write lock'):
        LockFile.get(str(ro))


def test_construction_creates_file_and_directory_and_holds_nothing(tmp_path: Path) -> None:
    path = tmp_path / "missing" / "deeper" / "layers.lock"
    lock = LockFile.get(str(path))
    st = path.stat()
    assert stat.S_IMODE(st.st_mode) == 0o644 & ~_umask()
    assert st.st_size == 0
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert open_fds_to(path) == 0
    assert not lock.held() and not lock.held_for_writing()
    # And another process can take it at once.
    assert worker("trylock", path, "write").returncode == 0


def _umask() -> int:
    old = os.umask(0)
    os.umask(old)
    return old


def test_unopenable_lock_file_is_an_error_naming_the_path(tmp_path: Path) -> None:
    a_dir = tmp_path / "is-a-dir.lock"
    a_dir.mkdir()
    with pytest.raises(IsADirectoryError) as e:
        LockFile.get(str(a_dir))
    assert e.value.filename == str(a_dir)

    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(NotADirectoryError) as e2:
        LockFile.get(str(a_file / "layers.lock"))
    assert e2.value.filename == str(a_file / "layers.lock")
    # A failed construction is not registered: the path still fails, it is not a
    # half-made lock.
    with pytest.raises(IsADirectoryError):
        LockFile.get(str(a_dir))


def test_read_only_lock_file_must_exist_or_be_creatable(tmp_path: Path) -> None:
    path = tmp_path / "ro" / "layers.lock"
    lock = LockFile.get(str(path), read_only=True)  # O_CREAT|O_RDONLY creates it too
    assert path.exists()
    assert lock.read_only


# ---------------------------------------------------------------------------------------
# single-thread semantics


def test_new_lock_is_not_held(tmp_path: Path) -> None:
    lock = LockFile.get(str(tmp_path / "l.lock"))
    assert not lock.held()
    assert not lock.held_for_writing()
    with pytest.raises(RuntimeError):
        lock.assert_locked()
    with pytest.raises(RuntimeError):
        lock.assert_locked_for_writing()
    with pytest.raises(RuntimeError):
        lock.last_write()
    with pytest.raises(RuntimeError):
        lock.record_write()
    with pytest.raises(RuntimeError, match="calling Unlock on unlocked lock"):
        lock.unlock()


def test_read_lock_is_not_a_write_lock(tmp_path: Path) -> None:
    lock = LockFile.get(str(tmp_path / "l.lock"))
    with lock.reading():
        assert lock.held()
        assert not lock.held_for_writing()
        with pytest.raises(RuntimeError):
            lock.assert_locked_for_writing()
        with pytest.raises(RuntimeError):
            lock.record_write()
        assert lock.last_write() == b""
    assert not lock.held()


def test_asking_for_write_while_holding_read_raises_instead_of_deadlocking(
    tmp_path: Path,
) -> None:
    lock = LockFile.get(str(tmp_path / "l.lock"))
    lock.rlock()
    with pytest.raises(RuntimeError, match="no upgrade"):
        lock.lock()
    with pytest.raises(RuntimeError, match="no upgrade"):
        lock.try_lock()
    assert lock.held() and not lock.held_for_writing()
    lock.rlock()  # nested reads are fine
    lock.unlock()
    lock.unlock()
    assert not lock.held()


def test_read_only_lock(tmp_path: Path) -> None:
    path = tmp_path / "l.lock"
    path.write_bytes(b"t" * 64)
    lock = LockFile.get(str(path), read_only=True)
    with lock.reading():
        assert lock.last_write() == b"t" * 64
    with pytest.raises(RuntimeError, match="can't take write lock on read-only lock file"):
        lock.lock()
    with pytest.raises(RuntimeError, match="can't take write lock on read-only lock file"):
        lock.try_lock()
    assert not lock.held()
    # Its shared lock is a real fcntl read lock: another process cannot write-lock.
    with lock.reading():
        assert worker("trylock", path, "write").returncode == 1
        assert worker("trylock", path, "read").returncode == 0


def test_write_lock_is_reentrant_and_the_last_unlock_closes_the_fd(tmp_path: Path) -> None:
    path = tmp_path / "l.lock"
    lock = LockFile.get(str(path))
    lock.lock()
    lock.lock()
    lock.rlock()
    assert lock.try_lock() and lock.try_rlock()
    assert lock.held_for_writing()
    assert open_fds_to(path) == 1
    for _ in range(4):
        lock.unlock()
        assert lock.held_for_writing()
    assert open_fds_to(path) == 1
    assert worker("trylock", path, "read").returncode == 1  # still locked for others
    lock.unlock()
    assert not lock.held()
    assert open_fds_to(path) == 0
    assert worker("trylock", path, "write").returncode == 0
    with pytest.raises(RuntimeError, match="calling Unlock on unlocked lock"):
        lock.unlock()


def test_tokens(tmp_path: Path) -> None:
    path = tmp_path / "l.lock"
    lock = LockFile.get(str(path))
    with lock.writing():
        empty = lock.last_write()
        assert empty == b""  # a fresh lock file is the valid "never written" state
        assert lock.modified_since(empty) == (b"", False)
        before = time.time_ns()
        first = lock.record_write()
        after = time.time_ns()
        assert len(first) == TOKEN_SIZE
        nanos, counter1, pid = decode_token(first)
        assert before <= nanos <= after
        assert pid == os.getpid()
        assert lock.last_write() == first
        assert lock.modified_since(empty) == (first, True)
        assert lock.modified_since(first) == (first, False)
        second = lock.record_write()
        assert decode_token(second)[1] > counter1
        assert second[20:] != first[20:]  # 44 fresh random bytes
        assert lock.modified_since(first) == (second, True)
    assert path.stat().st_size == TOKEN_SIZE
    with lock.reading():
        assert lock.last_write() == second


def test_record_write_never_truncates(tmp_path: Path) -> None:
    path = tmp_path / "l.lock"
    path.write_bytes(bytes(range(100)))
    lock = LockFile.get(str(path))
    with lock.writing():
        token = lock.record_write()
        assert lock.last_write() == token
    data = path.read_bytes()
    assert len(data) == 100
    assert data[:64] == token
    assert data[64:] == bytes(range(64, 100))


def test_short_lock_file_is_read_as_is(tmp_path: Path) -> None:
    path = tmp_path / "l.lock"
    path.write_bytes(b"abc")
    lock = LockFile.get(str(path), read_only=True)
    with lock.reading():
        assert lock.last_write() == b"abc"
        assert lock.modified_since(b"abc") == (b"abc", False)


# ---------------------------------------------------------------------------------------
# threads


def test_try_lock_excludes_other_threads(tmp_path: Path) -> None:
    lock = LockFile.get(str(tmp_path / "l.lock"))
    assert lock.try_lock()
    assert in_thread(lambda: try_and_release(lock, write=False)) is False
    assert in_thread(lambda: try_and_release(lock, write=True)) is False
    lock.unlock()
    assert in_thread(lambda: try_and_release(lock, write=True)) is True


def test_try_rlock_is_shared_and_keeps_writers_out(tmp_path: Path) -> None:
    lock = LockFile.get(str(tmp_path / "l.lock"))
    assert lock.try_rlock()
    assert in_thread(lambda: try_and_release(lock, write=False)) is True
    assert in_thread(lambda: try_and_release(lock, write=True)) is False
    lock.unlock()
    assert in_thread(lambda: try_and_release(lock, write=True)) is True


def test_concurrent_writers_one_at_a_time(tmp_path: Path) -> None:
    lock = LockFile.get(str(tmp_path / "l.lock"))
    inside = 0
    peak = 0
    guard = threading.Lock()

    def writer() -> None:
        nonlocal inside, peak
        for _ in range(20):
            with lock.writing():
                with guard:
                    inside += 1
                    peak = max(peak, inside)
                time.sleep(0.0005)
                with guard:
                    inside -= 1

    threads = [threading.Thread(target=writer) for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert peak == 1


def test_concurrent_readers_share(tmp_path: Path) -> None:
    path = tmp_path / "l.lock"
    lock = LockFile.get(str(path))
    barrier = threading.Barrier(4, timeout=5)
    fds: list[int] = []

    def reader() -> None:
        with lock.reading():
            barrier.wait()  # breaks (timeout) unless all 4 hold the read lock at once
            fds.append(open_fds_to(path))
            barrier.wait()

    threads = [threading.Thread(target=reader) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert fds == [1, 1, 1, 1]  # one fd, one fcntl read lock, shared by all readers
    assert open_fds_to(path) == 0


def test_writer_excludes_readers(tmp_path: Path) -> None:
    lock = LockFile.get(str(tmp_path / "l.lock"))
    readers = writers = 0
    bad: list[tuple[int, int]] = []
    guard = threading.Lock()

    def check() -> None:
        if writers > 1 or (writers and readers):
            bad.append((writers, readers))

    def writer() -> None:
        nonlocal writers
        for _ in range(15):
            with lock.writing():
                with guard:
                    writers += 1
                    check()
                time.sleep(0.0005)
                with guard:
                    writers -= 1

    def reader() -> None:
        nonlocal readers
        for _ in range(15):
            with lock.reading():
                with guard:
                    readers += 1
                    check()
                time.sleep(0.0005)
                with guard:
                    readers -= 1

    threads = [threading.Thread(target=f) for f in (writer, writer, reader, reader, reader)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert bad == []


def test_waiting_writer_keeps_new_readers_out(tmp_path: Path) -> None:
    lock = LockFile.get(str(tmp_path / "l.lock"))
    lock.rlock()
    got_write = threading.Event()

    def writer() -> None:
        with lock.writing():
            got_write.set()

    t = threading.Thread(target=writer)
    t.start()
    deadline = time.monotonic() + 5
    while lock._waiting_writers == 0 and time.monotonic() < deadline:
        time.sleep(0.001)
    assert in_thread(lambda: try_and_release(lock, write=False)) is False
    assert not got_write.is_set()
    lock.unlock()
    t.join(5)
    assert got_write.is_set()


def test_the_fd_stays_open_while_any_thread_holds(tmp_path: Path) -> None:
    path = tmp_path / "l.lock"
    lock = LockFile.get(str(path))
    step = [threading.Event() for _ in range(3)]

    def other() -> None:
        with lock.reading():
            step[0].set()
            step[1].wait(10)
        step[2].set()

    t = threading.Thread(target=other)
    t.start()
    step[0].wait(10)
    lock.rlock()
    lock.unlock()  # this thread lets go, the other still holds
    assert open_fds_to(path) == 1
    assert worker("trylock", path, "write").returncode == 1
    step[1].set()
    step[2].wait(10)
    t.join(5)
    assert open_fds_to(path) == 0
    assert worker("trylock", path, "write").returncode == 0


# ---------------------------------------------------------------------------------------
# processes


def test_processes_write_locks_never_overlap(tmp_path: Path) -> None:
    path, log = tmp_path / "l.lock", tmp_path / "log"
    wait_all(start_workers([["intervals", str(path), "write", "8", "0.005", str(log)]] * 3))
    spans = sorted(intervals(log), key=lambda s: s[1])
    assert len(spans) == 24
    for a, b in itertools.pairwise(spans):
        assert a[2] <= b[1], f"write holds overlap: {a} {b}"


def test_processes_read_locks_overlap(tmp_path: Path) -> None:
    path, log = tmp_path / "l.lock", tmp_path / "log"
    # Each worker holds its read lock until all 3 hold theirs at once (exit 3 otherwise).
    procs = start_workers([["overlap", str(path), str(log), "3", "10"]] * 3)
    wait_all(procs)


def test_processes_mixed_locks_exclude(tmp_path: Path) -> None:
    path, log = tmp_path / "l.lock", tmp_path / "log"
    argv = [
        ["intervals", str(path), "write", "6", "0.004", str(log)],
        ["intervals", str(path), "write", "6", "0.004", str(log)],
        ["intervals", str(path), "read", "6", "0.004", str(log)],
        ["intervals", str(path), "read", "6", "0.004", str(log)],
    ]
    wait_all(start_workers(argv))
    spans = intervals(log)
    assert len(spans) == 24
    for w in (s for s in spans if s[0] == "write"):
        for o in spans:
            if o is not w:
                assert o[2] <= w[1] or w[2] <= o[1], f"{w} overlaps {o}"


def test_a_process_waits_for_our_write_lock(tmp_path: Path) -> None:
    path = tmp_path / "l.lock"
    lock = LockFile.get(str(path))
    lock.lock()
    p = start_workers([["hold", str(path), "read"]])[0]
    assert blocked_on(path, p.pid), "the other process did not wait in F_SETLKW"
    time.sleep(0.1)
    assert p.poll() is None
    assert p.stdout is not None
    lock.unlock()
    assert p.stdout.readline() == "locked\n"
    # Now it holds the read lock: we can share it but not write.
    assert lock.try_rlock()
    lock.unlock()
    assert not lock.try_lock()
    p.communicate("", timeout=10)
    assert lock.try_lock()
    lock.unlock()


def test_modified_since_across_processes(tmp_path: Path) -> None:
    path = tmp_path / "l.lock"
    lock = LockFile.get(str(path))
    with lock.writing():
        ours = lock.record_write()
    assert worker("lockonly", path).returncode == 0
    with lock.reading():
        assert lock.modified_since(ours) == (ours, False)
    child = worker("record", path)
    assert child.returncode == 0, child.stderr
    theirs = bytes.fromhex(child.stdout.strip())
    with lock.reading():
        assert lock.modified_since(ours) == (theirs, True)
    assert decode_token(theirs)[2] != os.getpid()


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_forked_child_holds_nothing(tmp_path: Path) -> None:
    path = tmp_path / "l.lock"
    lock = LockFile.get(str(path))
    lock.lock()
    pid = os.fork()
    if pid == 0:  # child: fcntl locks are not inherited, and its LockFile says so
        code = 0 if (not lock.held() and not lock.try_lock()) else 1
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert lock.held_for_writing()  # the child's close of its fd copy released nothing
    assert worker("trylock", path, "read").returncode == 1
    lock.unlock()
