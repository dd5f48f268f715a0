"""Subprocess entry point for the lock tests: takes a LockFile the way a second process would.

Usage: python lock_worker.py COMMAND LOCK_PATH [args...]

  intervals PATH read|write N HOLD LOG  take the lock N times, hold it HOLD s each time,
                                        append "E|X <pid> <kind> <monotonic ns>" to LOG
  overlap PATH LOG PEERS TIMEOUT        take the read lock, append "E <pid>" to LOG and wait
                                        (holding) until PEERS lines are there; exit 3 on timeout
  record PATH                           lock, record_write, print the token as hex
  lockonly PATH                         lock, unlock
  trylock PATH read|write               try once; exit 0 if it got the lock, 1 if busy
  hold PATH read|write                  take the lock, print "locked", hold until stdin closes
"""

from __future__ import annotations

import os
import sys
import time

from layerstore.lockfile import LockFile


def _log(fd: int, line: str) -> None:
    os.write(fd, (line + "\n").encode())  # O_APPEND: one write = one whole line


def _take(lock: LockFile, kind: str) -> None:
    if kind == "write":
        lock.lock()
    elif kind == "read":
        lock.rlock()
    else:
        raise SystemExit(f"unknown lock kind {kind!r}")


def main(argv: list[str]) -> int:
    command, path, *rest = argv
    lock = LockFile.get(path)
    pid = os.getpid()
    if command == "intervals":
        kind, count, hold, log = rest[0], int(rest[1]), float(rest[2]), rest[3]
        fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        for _ in range(count):
            _take(lock, kind)
            _log(fd, f"E {pid} {kind} {time.monotonic_ns()}")
            time.sleep(hold)
            _log(fd, f"X {pid} {kind} {time.monotonic_ns()}")
            lock.unlock()
        return 0
    if command == "overlap":
        log, peers, timeout = rest[0], int(rest[1]), float(rest[2])
        fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        lock.rlock()
        _log(fd, f"E {pid}")
        deadline = time.monotonic() + timeout
        while True:
            with open(log) as f:
                if sum(1 for line in f if line.startswith("E ")) >= peers:
                    break
            if time.monotonic() > deadline:
                return 3
            time.sleep(0.005)
        lock.unlock()
        return 0
    if command == "record":
        with lock.writing():
            print(lock.record_write().hex(), flush=True)
        return 0
    if command == "lockonly":
        with lock.writing():
            pass
        return 0
    if command == "trylock":
        got = lock.try_lock() if rest[0] == "write" else lock.try_rlock()
        if got:
            lock.unlock()
        return 0 if got else 1
    if command == "hold":
        _take(lock, rest[0])
        print("locked", flush=True)
        sys.stdin.read()
        lock.unlock()
        return 0
    raise SystemExit(f"unknown command {command!r}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
