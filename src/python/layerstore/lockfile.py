"""The containers/storage lock protocol (SPEC.md §3): fcntl record locks + last-writer token.

A :class:`LockFile` is two locks stacked:

* an in-process reader/writer lock that makes threads safe. A thread that holds the
  write lock may take ``lock()`` or ``rlock()`` again (counted); a thread that holds a
  read lock may take ``rlock()`` again, but asking it for the write lock raises
  :class:`RuntimeError` (Go would deadlock). Waiting writers keep new readers out, as
  Go's ``sync.RWMutex`` does.
* a POSIX ``fcntl`` whole-file record lock shared with other processes (Go, ours). The
  lock file is opened and the record lock taken when the first thread of this process
  starts holding; the fd is closed — which is what drops a POSIX lock — when the last
  thread stops. All readers of a process share one ``F_RDLCK``.

POSIX record locks belong to the process and vanish when *any* fd of the file is closed,
so there must be exactly one :class:`LockFile` per absolute path per process
(:meth:`LockFile.get`), and nothing else may open and close a lock file while it is held.

The file content is the "last writer" token: 64 bytes written by :meth:`record_write`
(``u64`` UnixNano, ``u64`` per-process counter, ``u32`` pid, all little-endian, then 44
random bytes). Readers compare the bytes only; an empty file is the "never written" state.
"""

from __future__ import annotations

import _thread
import errno
import fcntl
import itertools
import os
import time

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing
if TYPE_CHECKING:
    import threading
    from collections.abc import Callable
    from types import TracebackType
    from typing import ClassVar, Final, Literal

__all__ = ["NOTE_MAX", "NOTE_OFFSET", "TOKEN_SIZE", "LockFile", "decode_token"]

TOKEN_SIZE: Final = 64
"""Size of a last-writer token (Go's ``lastWriterIDSize``)."""

_RANDOM_BYTES: Final = 44
NOTE_OFFSET: Final = 20
"""Where a writer's note (:meth:`LockFile.record_write`) starts in a token."""
NOTE_MAX: Final = 16
"""The longest note; the rest of the 44 "random" bytes stay random."""
_RETRY_SECONDS: Final = 0.010
_TRANSIENT: Final = frozenset(
    {errno.EINTR, errno.EDEADLK, errno.ENOLCK, errno.EAGAIN, errno.EACCES, errno.EIO}
)

# Go's lastWriterIDCounter: bumped for every token and for every LockFile created.
_counter = itertools.count(1)
_counter_lock = _thread.allocate_lock()


def _next_counter() -> int:
    with _counter_lock:
        return next(_counter)


def _new_token(note: bytes = b"") -> bytes:
    # struct "<QQI" (the struct module is not worth importing for it)
    return (
        (time.time_ns() & 0xFFFFFFFFFFFFFFFF).to_bytes(8, "little")
        + (_next_counter() & 0xFFFFFFFFFFFFFFFF).to_bytes(8, "little")
        + (os.getpid() & 0xFFFFFFFF).to_bytes(4, "little")
        + note
        + os.urandom(_RANDOM_BYTES - len(note))
    )


def decode_token(token: bytes) -> tuple[int, int, int]:
    """Split a 64-byte token into ``(unix_nanos, counter, pid)``; ValueError otherwise."""
    if len(token) != TOKEN_SIZE:
        raise ValueError(f"lock token has {len(token)} bytes, want {TOKEN_SIZE}")
    nanos = int.from_bytes(token[0:8], "little")
    counter = int.from_bytes(token[8:16], "little")
    pid = int.from_bytes(token[16:20], "little")
    return nanos, counter, pid


def _quote(path: str) -> str:
    """Go's ``%q`` closely enough for messages."""
    import json  # only error messages need it

    return json.dumps(path, ensure_ascii=False)


def _open_lock_file(path: str, read_only: bool) -> int:
    """Go's ``openLock``: O_CREAT|O_CLOEXEC, 0644; make the parent (0700) when it is gone."""
    flags = os.O_CREAT | os.O_CLOEXEC | (os.O_RDONLY if read_only else os.O_RDWR)
    try:
        return os.open(path, flags, 0o644)
    except FileNotFoundError:
        pass
    parent = os.path.dirname(path)
    try:
        os.makedirs(parent, mode=0o700, exist_ok=True)
    except OSError as e:
        raise OSError(
            e.errno, f"creating lock file directory {_quote(parent)}: {e.strerror}", path
        ) from e
    return os.open(path, flags, 0o644)


class _Held:
    """What :meth:`LockFile.writing` / :meth:`LockFile.reading` return: the lock taken
    on entering the block and released on leaving it (contextlib.contextmanager's job,
    without importing contextlib and cheaper than a generator)."""

    __slots__ = ("_release", "_take")

    def __init__(self, take: Callable[[], None], release: Callable[[], None]) -> None:
        self._take = take
        self._release = release

    def __enter__(self) -> None:
        self._take()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._release()


class _ThreadHold:
    """What one thread holds: its mode (the first acquisition decides) and its depth."""

    __slots__ = ("depth", "mode")

    def __init__(self, mode: Literal["r", "w"]) -> None:
        self.mode: Literal["r", "w"] = mode
        self.depth = 1


class LockFile:
    """One lock file path of this process; get it with :meth:`get`, never construct it."""

    _registry: ClassVar[dict[str, LockFile]] = {}
    _registry_lock: ClassVar[_thread.LockType] = _thread.allocate_lock()
    _private: ClassVar[object] = object()

    path: str
    read_only: bool

    def __init__(self, path: str, read_only: bool, _key: object) -> None:
        if _key is not LockFile._private:
            raise TypeError("use LockFile.get(path) to get a lock file")
        self.path = path
        self.read_only = read_only
        self._init_state()
        # Construction opens (creating the file, and its directory) and closes again.
        try:
            fd = _open_lock_file(path, read_only)
        except OSError as e:
            if e.filename is None:
                raise OSError(e.errno, e.strerror, path) from e
            raise
        os.close(fd)
        _next_counter()

    def _init_state(self) -> None:
        # In-process reader/writer lock. The fast paths take ``_mutex`` directly and
        # touch the condition only when some thread waits (``_sleepers``).
        self._mutex = _thread.allocate_lock()
        self._cond: threading.Condition | None = None  # made by the first _sleep
        self._sleepers = 0
        self._holds: dict[int, _ThreadHold] = {}
        self._writer: int | None = None
        self._readers = 0
        self._waiting_writers = 0
        # Process-level state: the fd and the number of threads holding; serialised by
        # _state, which is held across the blocking fcntl like Go's stateMutex.
        self._state = _thread.allocate_lock()
        self._fd = -1
        self._holders = 0

    # ----------------------------------------------------------------------------------
    # registry

    @classmethod
    def get(cls, path: str, *, read_only: bool = False) -> LockFile:
        """The lock of ``path`` (made absolute) for this process, created on first use.

        Raises ValueError when the path is already registered with the other mode, and
        OSError naming the path when the lock file cannot be opened or created.
        """
        abspath = os.path.abspath(path)
        with cls._registry_lock:
            existing = cls._registry.get(abspath)
            if existing is not None:
                if read_only and not existing.read_only:
                    raise ValueError(f"lock {_quote(abspath)} is not a read-only lock")
                if not read_only and existing.read_only:
                    raise ValueError(f"lock {_quote(abspath)} is not a read-write lock")
                return existing
            lock = cls(abspath, read_only, cls._private)
            cls._registry[abspath] = lock
            return lock

    @classmethod
    def _after_fork_in_child(cls) -> None:
        # fcntl locks are not inherited; a child starts holding nothing. Other threads'
        # mutexes may have been copied while held, so every lock gets fresh state.
        global _counter_lock
        _counter_lock = _thread.allocate_lock()
        cls._registry_lock = _thread.allocate_lock()
        for lock in cls._registry.values():
            fd = lock._fd
            lock._init_state()
            if fd >= 0:
                # Closing releases nothing here: the child owns no record locks.
                try:  # noqa: SIM105 - contextlib is not imported for this
                    os.close(fd)
                except OSError:
                    pass

    def __repr__(self) -> str:
        kind = "read-only" if self.read_only else "read-write"
        return f"<LockFile {self.path!r} {kind}>"

    # ----------------------------------------------------------------------------------
    # locking

    def lock(self) -> None:
        """Take the exclusive lock (blocking); reentrant for the thread holding it."""
        if self.read_only:
            raise RuntimeError(f"can't take write lock on read-only lock file {_quote(self.path)}")
        self._acquire("w", blocking=True)

    def rlock(self) -> None:
        """Take the shared lock (blocking); inside a write lock it is a counted no-op."""
        self._acquire("r", blocking=True)

    def try_lock(self) -> bool:
        """Take the exclusive lock if that needs no waiting; False when it is busy."""
        if self.read_only:
            raise RuntimeError(f"can't take write lock on read-only lock file {_quote(self.path)}")
        return self._acquire("w", blocking=False)

    def try_rlock(self) -> bool:
        """Take the shared lock if that needs no waiting; False when it is busy."""
        return self._acquire("r", blocking=False)

    def unlock(self) -> None:
        """Release one level taken by the calling thread; the last one closes the fd."""
        me = _thread.get_ident()
        with self._mutex:
            hold = self._holds.get(me)
            if hold is None:
                raise RuntimeError("calling Unlock on unlocked lock")
            hold.depth -= 1
            if hold.depth > 0:
                return
            del self._holds[me]
        try:
            self._release_process()
        finally:
            self._release_thread(hold.mode)

    def held_for_writing(self) -> bool:
        """Whether the calling thread holds the exclusive lock."""
        hold = self._holds.get(_thread.get_ident())
        return hold is not None and hold.mode == "w"

    def held(self) -> bool:
        """Whether the calling thread holds the lock, shared or exclusive."""
        return _thread.get_ident() in self._holds

    def assert_locked(self) -> None:
        """RuntimeError unless the calling thread holds the lock (Go's AssertLocked)."""
        if not self.held():
            raise RuntimeError(f"internal error: lock {_quote(self.path)} is not held")

    def assert_locked_for_writing(self) -> None:
        """RuntimeError unless the calling thread holds the lock exclusively."""
        if not self.held_for_writing():
            raise RuntimeError(f"internal error: lock {_quote(self.path)} is not held for writing")

    def writing(self) -> _Held:
        """``with lock.writing():`` holds the exclusive lock for the block."""
        return _Held(self.lock, self.unlock)

    def reading(self) -> _Held:
        """``with lock.reading():`` holds the shared lock for the block."""
        return _Held(self.rlock, self.unlock)

    # ----------------------------------------------------------------------------------
    # last-writer token

    def record_write(self, note: bytes = b"") -> bytes:
        """Write a new token at offset 0 (never truncating) and return it; needs lock().

        ``note`` (at most :data:`NOTE_MAX` bytes) takes the place of the first random
        bytes, at :data:`NOTE_OFFSET`: Go only ever compares tokens, so a writer may
        leave the next reader a message there (the layer store vouches for the layers
        file it is about to write, see ``layer.vouch``)."""
        if len(note) > NOTE_MAX:
            raise ValueError(f"a lock token note has at most {NOTE_MAX} bytes")
        self.assert_locked_for_writing()
        token = _new_token(note)
        try:
            n = os.pwrite(self._fd, token, 0)
        except OSError as e:
            raise OSError(e.errno, f"recording a write: {e.strerror}", self.path) from e
        if n != len(token):
            raise OSError(errno.ENOSPC, "short write of the lock token", self.path)
        return token

    def last_write(self) -> bytes:
        """The current token: up to 64 bytes at offset 0 (b"" = never written); needs a lock."""
        self.assert_locked()
        try:
            return os.pread(self._fd, TOKEN_SIZE, 0)
        except OSError as e:
            raise OSError(e.errno, f"reading the lock token: {e.strerror}", self.path) from e

    def modified_since(self, prev: bytes) -> tuple[bytes, bool]:
        """``(current token, current != prev)``; needs a lock."""
        current = self.last_write()
        return current, current != prev

    # ----------------------------------------------------------------------------------
    # internals

    def _acquire(self, mode: Literal["r", "w"], *, blocking: bool) -> bool:
        got = self._acquire_thread(mode, blocking)
        if got != "new":
            return got == "nested"
        try:
            if self._acquire_process(mode, blocking):
                return True
        except BaseException:
            self._drop_thread_hold(mode)
            raise
        self._drop_thread_hold(mode)
        return False

    def _acquire_thread(
        self, mode: Literal["r", "w"], blocking: bool
    ) -> Literal["new", "nested", "busy"]:
        """Take the in-process lock: "new" for a thread's first level, "nested" for a
        counted inner level (no process-level work), "busy" when not blocking and taken.
        """
        me = _thread.get_ident()
        with self._mutex:
            hold = self._holds.get(me)
            if hold is not None:
                if mode == "w" and hold.mode == "r":
                    raise RuntimeError(
                        f"lock {_quote(self.path)}: this thread holds a read lock and asked "
                        "for the write lock (there is no upgrade)"
                    )
                hold.depth += 1
                return "nested"
            if mode == "w":
                if not blocking and (self._writer is not None or self._readers):
                    return "busy"
                self._waiting_writers += 1
                acquired = False
                try:
                    while self._writer is not None or self._readers:
                        self._sleep()
                    acquired = True
                finally:
                    self._waiting_writers -= 1
                    if not acquired:
                        self._wake_all()  # interrupted: let held-back readers go on
                self._writer = me
            else:
                if not blocking and (self._writer is not None or self._waiting_writers):
                    return "busy"
                while self._writer is not None or self._waiting_writers:
                    self._sleep()
                self._readers += 1
            self._holds[me] = _ThreadHold(mode)
            return "new"

    def _sleep(self) -> None:
        """Wait for a release; requires ``_mutex``."""
        cond = self._cond
        if cond is None:
            import threading  # only when threads of this process contend

            cond = self._cond = threading.Condition(self._mutex)
        self._sleepers += 1
        try:
            cond.wait()
        finally:
            self._sleepers -= 1

    def _wake_all(self) -> None:
        """Wake every sleeping thread; requires ``_mutex``."""
        if self._sleepers and self._cond is not None:
            self._cond.notify_all()

    def _drop_thread_hold(self, mode: Literal["r", "w"]) -> None:
        with self._mutex:
            self._holds.pop(_thread.get_ident(), None)
        self._release_thread(mode)

    def _release_thread(self, mode: Literal["r", "w"]) -> None:
        with self._mutex:
            if mode == "w":
                self._writer = None
            else:
                self._readers -= 1
            self._wake_all()

    def _acquire_process(self, mode: Literal["r", "w"], blocking: bool) -> bool:
        with self._state:
            if self._holders > 0:
                # Another thread of ours holds the fcntl lock; only readers share it.
                self._holders += 1
                return True
            fd = _open_lock_file(self.path, self.read_only)
            try:
                locked = self._fcntl_lock(fd, mode, blocking)
            except BaseException:
                os.close(fd)
                raise
            if not locked:
                os.close(fd)
                return False
            self._fd = fd
            self._holders = 1
            return True

    def _fcntl_lock(self, fd: int, mode: Literal["r", "w"], blocking: bool) -> bool:
        op = fcntl.LOCK_EX if mode == "w" else fcntl.LOCK_SH
        # lockf = fcntl(F_SETLK[W]) with l_whence=SEEK_SET, l_start=0, l_len=0: the whole
        # file, exactly the record lock Go takes.
        if not blocking:
            try:
                fcntl.lockf(fd, op | fcntl.LOCK_NB)
            except OSError as e:
                if e.errno in (errno.EAGAIN, errno.EACCES):
                    return False
                raise OSError(e.errno, f"locking: {e.strerror}", self.path) from e
            return True
        while True:  # Go retries every 10 ms (EDEADLK when two processes wait on each other)
            try:
                fcntl.lockf(fd, op)
                return True
            except OSError as e:
                if e.errno not in _TRANSIENT:
                    # Go would retry forever here too; an error that cannot go away
                    # (EBADF, EINVAL, ...) is better reported than spun on.
                    raise OSError(e.errno, f"locking: {e.strerror}", self.path) from e
                time.sleep(_RETRY_SECONDS)

    def _release_process(self) -> None:
        with self._state:
            if self._holders <= 0:
                raise RuntimeError(f"lock {_quote(self.path)}: negative holder count")
            self._holders -= 1
            if self._holders == 0:
                fd, self._fd = self._fd, -1
                os.close(fd)  # closing the fd is the unlock


os.register_at_fork(after_in_child=LockFile._after_fork_in_child)
