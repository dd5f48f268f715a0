"""The layer store: records, indexes, the lock protocol and every metadata operation.

On disk it is containers/storage's layer store (SPEC.md §1-§3, §9), shared live with the
Go code:

* ``G/<D>-layers/layers.json`` (stable), ``volatile-layers.json`` (in ``R/<D>-layers``
  for transient stores, never fsynced) and, with an image root ``I``,
  ``I/<D>-layers/layers.json``; ``R/<D>-layers/mountpoints.json`` for mount counts.
* Locks (fcntl, one fd per path per process, see :mod:`layerstore.lockfile`):
  ``layers.lock`` (plus ``I/<D>-layers/layers.lock``) and then, nested inside it,
  ``R/<D>-layers/mountpoints.lock``.

Locking protocol. Each public call takes the layers lock it needs: shared for reads,
exclusive for writes; ``reading()`` / ``writing()`` hold it across several calls and are
reentrant (a write inside ``reading()`` is a RuntimeError: there is no upgrade, Go would
deadlock). On taking it, the store reloads when the layers token, the mtime of any
layers JSON file, or (read-write stores) the mountpoints token changed. A reader that
finds something only a writer may repair (incomplete layers, a name on two layers)
releases its lock, takes the exclusive lock, repairs and saves, and retries (3 times).
Saving records a new token in the lock file(s) *before* writing the JSON atomically,
remembers the new mtimes, then does the same for mountpoints.json.

Threads: one store object serialises its users with a mutex held for the whole call or
batch; separate store objects on the same directory exclude each other through the
shared in-process lock of :class:`~layerstore.lockfile.LockFile`.
"""

from __future__ import annotations

import _thread
import _weakref
import errno
import gc
import os
from itertools import compress, repeat

from layerstore import errors
from layerstore.atomic import AtomicWriter, atomic_write
from layerstore.drivers import MountOptions, canonical_name, make_driver
from layerstore.drivers.base import exchange_paths, remove_tree
from layerstore.layer import (
    INCOMPLETE_FLAG,
    LayerRecord,
    SourceText,
    _go_generic,
    decode_layers,
    decode_mounts,
    encode_layers,
    encode_mounts,
    now_created,
    vouch,
)
from layerstore.lockfile import NOTE_MAX, NOTE_OFFSET, LockFile

# Import cost: a short CLI call should load little more than this module; typing,
# dataclasses, json, threading, weakref, the data path and the native module are not
# imported at load time (names used only in annotations are imported for type checking).
TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing
if TYPE_CHECKING:
    import logging
    from collections.abc import Callable, Iterable, Mapping, Sequence
    from dataclasses import dataclass
    from types import TracebackType
    from typing import IO, Any, BinaryIO, Final

    from layerstore import _native
    from layerstore.archive import Change, Compression
    from layerstore.datapath import DiffSource
    from layerstore.drivers import Driver
    from layerstore.idtools import IDMap
    from layerstore.snapshot import Layer
    from layerstore.staging import ApplyDiffWithDifferOpts, Differ, DifferContext, DifferOutput

    BigDataSource = bytes | bytearray | memoryview | IO[bytes]
else:  # the same records without importing dataclasses (slow to import)
    from layerstore._dataclass import dataclass

__all__ = ["LayerStore", "big_data_file_name"]

logging_hooks: list[Callable[[], None]] = []
"""Called once, when this module first logs (the CLI sets up its log format then)."""


class _LazyLogger:
    """``logging.getLogger(__name__)``, made on first use: importing logging costs a short
    CLI call more than its work, and the common paths never log."""

    __slots__ = ()

    def __getattr__(self, name: str) -> Any:
        global log
        import logging

        log = logging.getLogger(__name__)
        for hook in logging_hooks:
            hook()
        logging_hooks.clear()
        return getattr(log, name)


log: logging.Logger = _LazyLogger()  # type: ignore[assignment]

STABLE: Final = 1
VOLATILE: Final = 2
IMAGE_STORE: Final = 4
_LOCATIONS: Final = (STABLE, VOLATILE, IMAGE_STORE)
_MAX_RELOAD_TRIES: Final = 3
_COPY_CHUNK: Final = 1 << 20


def _q(text: str) -> str:
    """Go's ``%q`` closely enough for messages."""
    import json  # only messages need it

    return json.dumps(text, ensure_ascii=False)


def big_data_file_name(key: str) -> str:
    """Go's ``makeBigDataBaseName`` (SPEC.md §1.3), quirk included: the scan stops at
    the first rune that is multi-byte or not ``[.0-9a-z]``; only when something follows
    it is the name ``"=" + base64(key)``."""
    for i, ch in enumerate(key):
        if ch == "." or "0" <= ch <= "9" or "a" <= ch <= "z":
            continue
        if i + 1 < len(key):
            import base64

            raw = key.encode("utf-8", "surrogateescape")
            return "=" + base64.b64encode(raw).decode("ascii")
        break
    return key


def _dedupe(names: Iterable[str]) -> list[str]:
    seen: set[str] = set()
    out = []
    for n in names:
        if n not in seen:
            seen.add(n)
            out.append(n)
    return out


def _names_arg(names: Iterable[str], what: str) -> list[str]:
    if isinstance(names, str | bytes):
        raise TypeError(f"{what}: names must be a list of strings, not a single string")
    out = list(names)
    for n in out:
        if not isinstance(n, str):
            raise TypeError(f"{what}: name {n!r} is not a string")
    return _dedupe(out)


def _check_id(layer_id: str) -> None:
    if not isinstance(layer_id, str):
        raise TypeError(f"layer ID {layer_id!r} is not a string")
    if layer_id in ("", ".", "..") or "/" in layer_id or "\0" in layer_id:
        raise errors.InvalidLayerID(f"layer ID {_q(layer_id)}")


def _random_id(in_use: Mapping[str, object]) -> str:
    """Go's ``stringid.GenerateRandomID``, redrawn while it collides (SPEC.md §7.2)."""
    while True:
        candidate = os.urandom(32).hex()
        if candidate[:12].isdigit():
            continue  # an all-decimal short id parses as a number; Go redraws
        if candidate not in in_use:
            return candidate


_DIGEST_SIZES: Final = {"sha256": 64, "sha384": 96, "sha512": 128}


def validate_digest(digest: str, context: str) -> None:
    """go-digest's ``Digest.Validate``; InvalidDigest with its message."""
    import re

    i = digest.find(":") if isinstance(digest, str) else -1
    if i <= 0 or i + 1 == len(digest):
        raise errors.InvalidDigest(context)
    algorithm, encoded = digest[:i], digest[i + 1 :]
    size = _DIGEST_SIZES.get(algorithm)
    if size is None:
        if not re.fullmatch(r"[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]+", digest):
            raise errors.InvalidDigest(context)
        raise errors.InvalidDigest(context, message="unsupported digest algorithm")
    if len(encoded) != size:
        raise errors.InvalidDigest(context, message="invalid checksum digest length")
    if not re.fullmatch(r"[a-f0-9]+", encoded):
        raise errors.InvalidDigest(context)


def _unescape_mountinfo(field: str) -> str:
    if "\\" not in field:
        return field
    out = bytearray()
    raw = field.encode("utf-8", "surrogateescape")
    i = 0
    while i < len(raw):
        if raw[i] == 0x5C and i + 3 < len(raw) and raw[i + 1 : i + 4].isdigit():
            out.append(int(raw[i + 1 : i + 4], 8))
            i += 4
        else:
            out.append(raw[i])
            i += 1
    return out.decode("utf-8", "surrogateescape")


def is_mount_point(path: str) -> bool:
    """Whether ``path`` is a mount point of this process's mount namespace."""
    if not path:
        return False
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
            for line in f:
                fields = line.split(" ", 5)
                if len(fields) > 4 and _unescape_mountinfo(fields[4]) == path:
                    return True
    except OSError:
        return False
    return False


# Open stores, for the fork handler: id -> weak reference (the weakref module itself is
# not worth importing for this).
_open_stores: dict[int, _weakref.ReferenceType[LayerStore]] = {}


def _register_store(store: LayerStore) -> None:
    key = id(store)
    _open_stores[key] = _weakref.ref(store, lambda _ref: _open_stores.pop(key, None))


def _reset_stores_after_fork() -> None:
    for ref in list(_open_stores.values()):
        store = ref()
        if store is not None:
            store._after_fork_in_child()


os.register_at_fork(after_in_child=_reset_stores_after_fork)


class _Batch:
    """What :meth:`LayerStore.reading` / :meth:`LayerStore.writing` return: the layers
    lock held (``mode`` "r" or "w") from entering the block to leaving it; ``as`` gives
    the store (contextlib.contextmanager's job, without importing contextlib and
    cheaper than a generator)."""

    __slots__ = ("_mode", "_store")

    def __init__(self, store: LayerStore, mode: str) -> None:
        self._store = store
        self._mode = mode

    def __enter__(self) -> LayerStore:
        store = self._store
        if self._mode == "w":
            store._enter_writing()
        else:
            store._enter("r")
        return store

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._store._exit()


class LayerStore:
    """A containers/storage layer store, read-write (the constructor) or read-only
    (:meth:`read_only`). Every id argument is a full id, a name, or an unambiguous id
    prefix. See the module docstring for the locking protocol.
    """

    # ----------------------------------------------------------------------------------
    # construction

    def __init__(
        self,
        graph_root: str | os.PathLike[str],
        run_root: str | os.PathLike[str],
        driver: str = "vfs",
        driver_options: Sequence[str] = (),
        image_root: str | os.PathLike[str] | None = None,
        transient: bool = False,
    ) -> None:
        """Open (creating when needed) the read-write store ``graph_root``/``run_root``.

        Locking: takes the exclusive layers lock while loading; incomplete layers left
        by a crashed writer are deleted and duplicate names repaired (and saved) then.
        """
        graph = os.path.abspath(os.fspath(graph_root))
        run = os.path.abspath(os.fspath(run_root))
        name = canonical_name(driver)
        for d in (graph, run):
            os.makedirs(d, mode=0o700, exist_ok=True)
        image = os.path.abspath(os.fspath(image_root)) if image_root is not None else None
        drv = make_driver(driver, os.path.join(graph, name), driver_options, image_root=image)
        layerdir = os.path.join(graph, f"{name}-layers")
        rundir = os.path.join(run, f"{name}-layers")
        os.makedirs(layerdir, mode=0o700, exist_ok=True)
        os.makedirs(rundir, mode=0o700, exist_ok=True)
        image_layerdir = os.path.join(image, f"{name}-layers") if image else None
        if image_layerdir:
            os.makedirs(image_layerdir, mode=0o700, exist_ok=True)
        volatile_dir = rundir if transient else layerdir
        self._setup(
            read_write=True,
            graph_root=graph,
            run_root=run,
            driver=drv,
            layerdir=layerdir,
            rundir=rundir,
            json_paths=(
                os.path.join(layerdir, "layers.json"),
                os.path.join(volatile_dir, "volatile-layers.json"),
                os.path.join(image_layerdir, "layers.json") if image_layerdir else None,
            ),
            locks=[
                LockFile.get(os.path.join(layerdir, "layers.lock")),
                *(
                    [LockFile.get(os.path.join(image_layerdir, "layers.lock"))]
                    if image_layerdir
                    else []
                ),
            ],
            mounts_lock=LockFile.get(os.path.join(rundir, "mountpoints.lock")),
            transient=transient,
            image_root=image,
        )
        with self.writing():
            pass

    @classmethod
    def read_only(cls, graph_root: str | os.PathLike[str], driver: str = "vfs") -> LayerStore:
        """Open the store under ``graph_root`` read-only (an additional image store).

        Nothing is created or written; ``layers.lock`` is only ever read-locked. Every
        write raises StoreIsReadOnly. Incomplete layers are listed, not deleted; a name
        on two layers is a DuplicateLayerNames error.
        """
        graph = os.path.abspath(os.fspath(graph_root))
        name = canonical_name(driver)
        drv = make_driver(driver, os.path.join(graph, name), (), read_only=True)
        layerdir = os.path.join(graph, f"{name}-layers")
        self = cls.__new__(cls)
        self._setup(
            read_write=False,
            graph_root=graph,
            run_root=None,
            driver=drv,
            layerdir=layerdir,
            rundir=None,
            json_paths=(
                os.path.join(layerdir, "layers.json"),
                os.path.join(layerdir, "volatile-layers.json"),
                None,
            ),
            locks=[_read_only_lock(os.path.join(layerdir, "layers.lock"))],
            mounts_lock=None,
            transient=False,
            image_root=None,
        )
        with self.reading():
            pass
        return self

    def _setup(
        self,
        *,
        read_write: bool,
        graph_root: str,
        run_root: str | None,
        driver: Driver,
        layerdir: str,
        rundir: str | None,
        json_paths: tuple[str | None, str | None, str | None],
        locks: list[LockFile],
        mounts_lock: LockFile | None,
        transient: bool,
        image_root: str | None,
    ) -> None:
        self._rw = read_write
        self.graph_root = graph_root
        self.run_root = run_root
        self.driver = driver
        self.driver_name = driver.name
        self.layerdir = layerdir
        self.rundir = rundir
        self.transient = transient
        self.image_root = image_root
        self._json_paths = json_paths
        self._locks = locks
        self._lock = locks[0]
        self._mounts_lock = mounts_lock
        self._mounts_path = os.path.join(rundir, "mountpoints.json") if rundir else ""
        # in-memory state
        self._records: list[LayerRecord] = []
        self._byid: dict[str, LayerRecord] = {}
        self._byname: dict[str, LayerRecord] = {}
        self._bymount: dict[str, LayerRecord] = {}
        self._index: _native.TruncIndex | None = None
        self._digests: tuple[dict[str, list[LayerRecord]], ...] | None = None
        self._last_write = b""
        self._mounts_last_write: bytes | None = None
        self._mounts_key: tuple[int, int, int, int] | None = None
        self._mtimes: list[int | None] = [None, None, None]
        self._loaded = False
        # in-process serialisation
        self._mutex = _thread.RLock()
        self._depth = 0
        self._mode = ""
        self._closed = False
        _register_store(self)

    def _after_fork_in_child(self) -> None:
        # The child holds no fcntl locks (LockFile resets itself too), and a mutex
        # copied while another thread held it would never be released.
        self._mutex = _thread.RLock()
        self._depth = 0
        self._mode = ""
        self._loaded = False

    def __repr__(self) -> str:
        kind = "read-write" if self._rw else "read-only"
        return f"<LayerStore {self.graph_root!r} {self.driver_name} {kind}>"

    @property
    def is_read_write(self) -> bool:
        return self._rw

    @property
    def mounts_path(self) -> str:
        """``R/<D>-layers/mountpoints.json`` ("" for read-only stores)."""
        return self._mounts_path

    # ----------------------------------------------------------------------------------
    # lock protocol

    def reading(self) -> _Batch:
        """Hold the shared layers lock (fresh data) for the block; reentrant."""
        return _Batch(self, "r")

    def writing(self) -> _Batch:
        """Hold the exclusive layers lock (fresh data) for the block; reentrant.

        StoreIsReadOnly on a read-only store; RuntimeError inside ``reading()``.
        """
        return _Batch(self, "w")

    def _enter_writing(self) -> None:
        """:meth:`_enter` for writing, StoreIsReadOnly on a read-only store."""
        if not self._rw:
            raise errors.StoreIsReadOnly(
                f"not allowed to modify the layer store at {_q(self.layerdir)}"
            )
        self._enter("w")

    def _enter(self, mode: str) -> None:
        """Start a call or batch: the store mutex, then (outermost) the layers lock."""
        if self._closed:
            raise errors.StoreClosed(repr(self))
        self._mutex.acquire()
        try:
            if self._depth:
                if mode == "w" and self._mode == "r":
                    raise RuntimeError(
                        "a write to the layer store inside reading(): use writing() for the "
                        "whole batch (the shared lock cannot be upgraded)"
                    )
                self._depth += 1
                return
            if mode == "w":
                self._start_writing()
            else:
                self._start_reading()
            self._mode = mode
            self._depth = 1
        except BaseException:
            self._mutex.release()
            raise

    def _exit(self) -> None:
        """End a call or batch; the outermost releases the layers lock and the mutex."""
        self._depth -= 1
        if self._depth == 0:
            try:
                self._unlock_layers()
            finally:
                self._mode = ""
                self._mutex.release()
        else:
            self._mutex.release()

    def _lock_layers(self, mode: str) -> None:
        taken: list[LockFile] = []
        try:
            for lock in self._locks:
                if mode == "w":
                    lock.lock()
                else:
                    lock.rlock()
                taken.append(lock)
        except BaseException:
            for lock in reversed(taken):
                lock.unlock()
            raise

    def _unlock_layers(self) -> None:
        for lock in reversed(self._locks):
            lock.unlock()

    def _start_writing(self) -> None:
        """Take the exclusive layers lock(s) and make the state fresh."""
        self._lock_layers("w")
        try:
            self._mode = "w"
            if self._layers_modified():
                self._load(for_writing=True)
            elif self._rw:
                self._reload_mounts_if_changed(lock=True)
        except BaseException:
            self._mode = ""
            self._unlock_layers()
            raise

    def _start_reading(self) -> None:
        """Take the shared layers lock and make the state fresh (upgrading to repair)."""
        self._lock_layers("r")
        try:
            self._mode = "r"
            if not self._layers_modified():
                # Readers look at mountpoints.json's identity first (a stat, no lock);
                # the token is compared under the lock only when that changed.
                if self._rw and self._mounts_file_key() != self._mounts_key:
                    self._reload_mounts_if_changed(lock=True)
                return
            if self._load(for_writing=False):
                return
            # Something only a writer may repair: upgrade (release, write-lock, reload
            # and save, then read-lock again), at most a few times.
            for _ in range(_MAX_RELOAD_TRIES):
                self._unlock_layers()
                self._mode = ""
                self._lock_layers("w")
                try:
                    self._mode = "w"
                    if self._layers_modified():
                        self._load(for_writing=True)
                finally:
                    self._mode = ""
                    self._unlock_layers()
                self._lock_layers("r")
                self._mode = "r"
                if not self._layers_modified() or self._load(for_writing=False):
                    return
            raise errors.CorruptStore(
                f"layer store at {_q(self.layerdir)}",
                message="an incomplete layer exists and can't be cleaned up",
            )
        except BaseException:
            if self._mode:
                self._unlock_layers()
            self._mode = ""
            raise

    def _layers_modified(self) -> bool:
        """Whether the layers token or any layers JSON mtime changed since our load.

        Locking: requires the layers lock (shared or exclusive).
        """
        if not self._loaded:
            return True
        if self._lock.last_write() != self._last_write:
            return True
        stat = os.stat
        for path, seen in zip(self._json_paths, self._mtimes, strict=True):
            if path is None:
                continue
            if seen is None:
                # Absent at load: a cheap existence check (no exception to raise).
                if os.access(path, os.F_OK):
                    return True
                continue
            try:
                if stat(path).st_mtime_ns != seen:
                    return True
            except FileNotFoundError:
                return True
        return False

    def _require_writing(self) -> None:
        if self._mode != "w" or not self._lock.held_for_writing():
            raise RuntimeError("internal error: layer store write without the exclusive lock")

    # ----------------------------------------------------------------------------------
    # load and save

    def _load(self, *, for_writing: bool) -> bool:
        """Read every layers JSON file and rebuild the state; False when only a writer
        may go on (RW store, shared lock, incomplete layers or duplicate names).

        The cyclic garbage collector is paused meanwhile: decoding allocates a few
        objects per layer, none of them garbage, and the collections those allocations
        set off would walk every one of them again (a third of a 10,000-layer load).

        Locking: requires the layers lock; exclusive when ``for_writing``.
        """
        if not gc.isenabled():
            return self._load_files(for_writing=for_writing)
        gc.disable()
        try:
            return self._load_files(for_writing=for_writing)
        finally:
            gc.enable()

    def _load_files(self, *, for_writing: bool) -> bool:
        """:meth:`_load`'s work. Locking: as :meth:`_load`."""
        token = self._lock.last_write()
        records: list[LayerRecord] = []
        mtimes: list[int | None] = [None, None, None]
        byid: dict[str, LayerRecord] = {}
        byname: dict[str, LayerRecord] = {}
        fix_locations = 0
        incomplete: list[LayerRecord] = []
        rw = self._rw
        for index, path in enumerate(self._json_paths):
            if path is None:
                continue
            try:
                with open(path, "rb") as f:
                    mtimes[index] = os.fstat(f.fileno()).st_mtime_ns
                    data = f.read()
            except FileNotFoundError:
                continue
            except OSError as e:
                raise OSError(e.errno, f"loading {_q(path)}: {e.strerror}", path) from e
            # The token may vouch for the stable file (the one it is the lock of).
            note = token[NOTE_OFFSET : NOTE_OFFSET + NOTE_MAX] if index == 0 else b""
            objs, source = decode_layers(data, path, note)
            fix_locations |= _index_records(
                objs, source, _LOCATIONS[index], path, rw, byid, byname, records, incomplete
            )
        if fix_locations and not for_writing:
            return False
        self._records = records
        self._byid = byid
        self._byname = byname
        self._index = None
        self._digests = None
        self._bymount = {}
        self._mtimes = mtimes
        self._last_write = token
        self._loaded = True
        if rw:
            self._reload_mounts_if_changed(lock=True, force=True)
        if rw and for_writing:
            # staging dirs left by crashed imports (live ones are locked and skipped)
            try:
                roots = self.driver.staging_roots()
                if any(_listdir_or_empty(root) for root in roots):
                    from layerstore.staging_prune import prune_staging

                    prune_staging(roots)
            except OSError as e:
                log.warning("removing abandoned staging directories: %s", e)
        if fix_locations:
            failures = []
            for rec in incomplete:
                log.warning("Found incomplete layer %s, deleting it", _q(rec.obj["id"]))
                try:
                    self._delete_internal(rec)
                except OSError as e:
                    failures.append(f"deleting layer {_q(rec.obj['id'])}: {e}")
            self._save(fix_locations)
            if failures:
                raise errors.LayerStoreError("; ".join(failures))
        return True

    def _reload_mounts_if_changed(self, *, lock: bool, force: bool = False) -> None:
        """Re-read mountpoints.json when its token changed (or ``force``).

        Locking: requires the layers lock; takes the shared mountpoints lock when
        ``lock`` (else the caller holds the mountpoints lock).
        """
        mounts_lock = self._mounts_lock
        if mounts_lock is None:
            return
        if lock:
            mounts_lock.rlock()
        try:
            key = self._mounts_file_key()
            token = mounts_lock.last_write()
            if force or token != self._mounts_last_write:
                self._load_mounts()
                self._mounts_last_write = token
            self._mounts_key = key
        finally:
            if lock:
                mounts_lock.unlock()

    def _load_mounts(self) -> None:
        """Apply mountpoints.json to the records. Locking: requires the layers lock and
        the mountpoints lock."""
        path = self._mounts_path
        try:
            with open(path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            data = b""
        entries = decode_mounts(data, path)
        for rec in self._bymount.values():
            rec.mount_point, rec.mount_count = "", 0
            rec.mounts_changed()
        for rec in self._records:
            if rec.mount_point or rec.mount_count:
                rec.mount_point, rec.mount_count = "", 0
                rec.mounts_changed()
        bymount: dict[str, LayerRecord] = {}
        for ident, mount, count in entries:
            if not mount:
                continue
            found = self._lookup(ident)
            if found is not None:
                rec = found
                bymount[mount] = rec
                rec.mount_point, rec.mount_count = mount, count
                rec.mounts_changed()
        self._bymount = bymount

    def _save(self, locations: int) -> None:
        """Write the layers file of each location in ``locations`` and mountpoints.json.

        Locking: requires the exclusive layers lock; takes the exclusive mountpoints lock.
        Every file is encoded (and validated) before anything is written; tokens are
        recorded before the JSON.
        """
        if not self._rw:
            raise errors.StoreIsReadOnly(
                f"not allowed to modify the layer store at {_q(self.layerdir)}"
            )
        self._require_writing()
        assert self._mounts_lock is not None
        with self._mounts_lock.writing():
            self._reload_mounts_if_changed(lock=False)
            payloads = []
            for index, path in enumerate(self._json_paths):
                location = _LOCATIONS[index]
                if path is None or not locations & location:
                    continue
                subset = [r for r in self._records if r.location == location]
                payloads.append((index, path, encode_layers(subset, path)))
            # The token vouches for the stable file's new bytes, so the next writer
            # re-uses them as they are (layer.vouch).
            note = vouch(payloads[0][2]) if payloads and payloads[0][0] == 0 else b""
            token = b""
            for lock in self._locks:
                written = lock.record_write(note if lock is self._lock else b"")
                token = token or written
            self._last_write = token
            for index, path, data in payloads:
                os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
                sync = _LOCATIONS[index] != VOLATILE
                self._mtimes[index] = atomic_write(path, data, mode=0o600, sync=sync)
            self._save_mounts_locked()

    def _save_mounts_locked(self) -> None:
        """Write mountpoints.json. Locking: requires the exclusive mountpoints lock."""
        assert self._mounts_lock is not None
        if not self._mounts_lock.held_for_writing():
            raise RuntimeError("internal error: mountpoints.json saved without its lock")
        data = encode_mounts(
            (r.obj["id"], r.mount_point, r.mount_count)
            for r in self._records
            if r.mount_point and r.mount_count > 0
        )
        os.makedirs(os.path.dirname(self._mounts_path), mode=0o700, exist_ok=True)
        self._mounts_last_write = self._mounts_lock.record_write()
        atomic_write(self._mounts_path, data, mode=0o600)
        self._mounts_key = self._mounts_file_key()

    def _mounts_file_key(self) -> tuple[int, int, int, int] | None:
        """Identity of mountpoints.json (inode, size, mtime, ctime); None when absent."""
        try:
            st = os.stat(self._mounts_path)
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)

    # ----------------------------------------------------------------------------------
    # indexes

    def _lookup(self, key: str) -> LayerRecord | None:
        """Exact id, then name, then unique id prefix (SPEC.md §7.1).

        Locking: requires the layers lock (shared or exclusive).
        """
        rec = self._byid.get(key)
        if rec is not None:
            return rec
        rec = self._byname.get(key)
        if rec is not None:
            return rec
        if not key or not isinstance(key, str):
            return None
        index = self._index
        if index is None:
            from layerstore._native import TruncIndex  # lazily: most calls never need it

            index = self._index = TruncIndex(list(self._byid))
        try:
            return self._byid.get(index.get(key))
        except (KeyError, ValueError):
            return None

    def _require(self, key: str, context: str | None = None) -> LayerRecord:
        """The record ``key`` resolves to, else LayerUnknown. Locking: requires the layers lock."""
        if not isinstance(key, str):
            raise TypeError(f"layer id {key!r} is not a string")
        rec = self._lookup(key)
        if rec is None:
            raise errors.LayerUnknown(context if context is not None else f"layer {_q(key)}")
        return rec

    def _require_parent(self, parent: str) -> LayerRecord:
        """A parent layer: ours, else one of a read-only additional image store of the
        driver (``overlay.imagestore=``/``vfs.imagestore=``), as Go's store looks
        through its read-only layer stores. Locking: requires the layers lock (and takes
        the read-only stores' shared locks briefly)."""
        rec = self._lookup(parent) if isinstance(parent, str) else None
        if rec is not None:
            return rec
        for graph in _image_store_roots(self.driver):
            try:
                other = LayerStore.read_only(graph, driver=self.driver_name)
            except (OSError, errors.LayerStoreError) as e:
                log.debug("additional image store %s: %s", graph, e)
                continue
            try:
                with other.reading():
                    found = other._lookup(parent)
                    if found is not None:
                        return found
            finally:
                other.close()
        return self._require(parent, f"parent layer {_q(parent)}")

    def _digest_maps(self) -> tuple[dict[str, list[LayerRecord]], ...]:
        """Digest indexes, built on first use. Locking: requires the layers lock."""
        maps = self._digests
        if maps is None:
            compressed: dict[str, list[LayerRecord]] = {}
            uncompressed: dict[str, list[LayerRecord]] = {}
            toc: dict[str, list[LayerRecord]] = {}
            for rec in self._records:
                obj = rec.obj
                for key, target in (
                    ("compressed-diff-digest", compressed),
                    ("diff-digest", uncompressed),
                    ("toc-digest", toc),
                ):
                    d = obj.get(key)
                    if d:
                        target.setdefault(d, []).append(rec)
            maps = self._digests = (compressed, uncompressed, toc)
        return maps

    def _add_to_indexes(self, rec: LayerRecord) -> None:
        """Locking: requires the exclusive layers lock."""
        ident = rec.obj["id"]
        self._records.append(rec)
        self._byid[ident] = rec
        for name in rec.names:
            self._byname[name] = rec
        if self._index is not None:
            try:  # noqa: SIM105 - no contextlib import for this
                self._index.add(ident)
            except (KeyError, ValueError):
                pass
        self._digests = None

    def _drop_from_indexes(self, rec: LayerRecord) -> None:
        """Locking: requires the exclusive layers lock."""
        ident = rec.obj["id"]
        self._byid.pop(ident, None)
        for name in rec.names:
            if self._byname.get(name) is rec:
                del self._byname[name]
        if self._index is not None:
            try:  # noqa: SIM105 - no contextlib import for this
                self._index.delete(ident)
            except (KeyError, ValueError):
                pass
        if rec.mount_point and self._bymount.get(rec.mount_point) is rec:
            del self._bymount[rec.mount_point]
        self._digests = None
        try:  # noqa: SIM105 - no contextlib import for this
            self._records.remove(rec)
        except ValueError:
            pass

    # ----------------------------------------------------------------------------------
    # paths

    def _tspath(self, layer_id: str) -> str:
        return os.path.join(self.layerdir, layer_id + ".tar-split.gz")

    def _datadir(self, layer_id: str) -> str:
        return os.path.join(self.layerdir, layer_id)

    def _datapath(self, layer_id: str, key: str) -> str:
        return os.path.join(self._datadir(layer_id), big_data_file_name(key))

    def _ro_error(self, verb: str, where: str | None = None) -> errors.StoreIsReadOnly:
        return errors.StoreIsReadOnly(f"not allowed to {verb} at {_q(where or self.layerdir)}")

    def _snap(self, rec: LayerRecord) -> Layer:
        return rec.snapshot(not self._rw, self.layerdir)

    # ----------------------------------------------------------------------------------
    # reads

    def get(self, id: str) -> Layer:
        """The layer ``id`` (id, name or prefix); LayerUnknown. Locking: shared."""
        self._enter("r")  # not reading(): a generator costs more than the lookup
        try:
            rec = self._byid.get(id) if type(id) is str else None
            if rec is None:
                rec = self._require(id)
            return rec.snapshot(not self._rw, self.layerdir)
        finally:
            self._exit()

    def exists(self, id: str) -> bool:
        """Whether ``id`` resolves to a layer. Locking: shared."""
        self._enter("r")
        try:
            return isinstance(id, str) and self._lookup(id) is not None
        finally:
            self._exit()

    def layers(self) -> list[Layer]:
        """Every layer, in creation (file) order. Locking: shared."""
        with self.reading():
            ro = not self._rw
            src = self.layerdir
            return [rec.snapshot(ro, src) for rec in self._records]

    def ids(self) -> list[str]:
        """Every layer id, in creation order (cheaper than :meth:`layers`). Locking: shared."""
        with self.reading():
            return [rec.obj["id"] for rec in self._records]

    def ids_and_names(self) -> list[tuple[str, list[str]]]:
        """``(id, names)`` of every layer, in creation order: what a plain listing needs,
        without building :class:`Layer` snapshots. Locking: shared."""
        with self.reading():
            return [
                (rec.obj["id"], list(names) if (names := rec.obj.get("names")) else [])
                for rec in self._records
            ]

    def size(self, id: str) -> int:
        """``diff-size`` when the layer has a diff or TOC digest, else -1 (Go's rule).

        Locking: shared.
        """
        with self.reading():
            obj = self._require(id).obj
            if obj.get("toc-digest") or obj.get("diff-digest"):
                return int(obj.get("diff-size") or 0)
            return -1

    def metadata(self, id: str) -> str:
        """The layer's free-form metadata. Locking: shared."""
        with self.reading():
            return str(self._require(id).obj.get("metadata") or "")

    def big_data_names(self, id: str) -> list[str]:
        """Keys of the layer's big-data items, in insertion order. Locking: shared."""
        with self.reading():
            rec = self._lookup(id) if isinstance(id, str) else None
            if rec is None:
                raise errors.LayerUnknown(
                    f"locating layer with ID {_q(str(id))} to retrieve bigdata names",
                    message="image not known",
                )
            return rec.big_data_names

    def big_data(self, id: str, key: str) -> BinaryIO:
        """An open binary file of big-data item ``key`` (FileNotFoundError when there is
        no such item). The caller closes it. Locking: shared, while opening."""
        if key == "":
            raise errors.InvalidBigDataName("can't retrieve layer big data value for empty name")
        _check_big_data_key(key)
        with self.reading():
            rec = self._require(id, f"locating layer with ID {_q(id)}")
            return open(self._datapath(rec.obj["id"], key), "rb")

    def layers_by_compressed_digest(self, digest: str) -> list[Layer]:
        """Layers whose compressed digest is ``digest``; LayerUnknown when none.

        Locking: shared."""
        validate_digest(digest, f"looking for compressed layers matching digest {_q(str(digest))}")
        return self._by_digest(0, digest)

    def layers_by_uncompressed_digest(self, digest: str) -> list[Layer]:
        """Layers whose diff digest is ``digest``; LayerUnknown when none. Locking: shared."""
        validate_digest(digest, f"looking for layers matching digest {_q(str(digest))}")
        return self._by_digest(1, digest)

    def layers_by_toc_digest(self, digest: str) -> list[Layer]:
        """Layers whose TOC digest is ``digest``; LayerUnknown when none. Locking: shared."""
        validate_digest(digest, f"looking for TOC matching digest {_q(str(digest))}")
        return self._by_digest(2, digest)

    def _by_digest(self, which: int, digest: str) -> list[Layer]:
        """Locking: shared."""
        with self.reading():
            found = self._digest_maps()[which].get(digest, [])
            if not found:
                raise errors.LayerUnknown(f"layers with digest {_q(digest)}")
            return [self._snap(r) for r in found]

    def status(self) -> list[tuple[str, str]]:
        """The driver's status pairs. Locking: none."""
        return list(self.driver.status())

    def layer_dir(self, id: str) -> str:
        """The directory holding the layer's own files. Locking: shared."""
        with self.reading():
            return self.driver.layer_dir(self._require(id).obj["id"])

    def parent_owners(self, id: str) -> tuple[list[int], list[int]]:
        """Host uids/gids owning the directories above the layer's mount point that its
        ID maps cannot map (Go's ``ParentOwners``). Locking: shared."""
        with self.reading():
            rec = self._require(id)
            snap = self._snap(rec)
            if not snap.uid_map and not snap.gid_map:
                return [], []
            if not snap.parent:
                return [], []
            uid_map, gid_map = snap.uid_map, snap.gid_map
            root_uid = _to_host(0, uid_map)
            root_gid = _to_host(0, gid_map)
            if root_uid is None or root_gid is None:
                raise errors.InvalidIDMapping(f"reading root ID values for layer {_q(snap.id)}")
            where = snap.mount_point or self.driver.layer_dir(snap.id)
            uids: set[int] = set()
            gids: set[int] = set()
            d = os.path.dirname(where)
            while d not in ("", "/"):
                for st in (os.stat(d), os.lstat(d)):
                    if _to_container(st.st_uid, uid_map) is None:
                        uids.add(st.st_uid)
                    if _to_container(st.st_gid, gid_map) is None:
                        gids.add(st.st_gid)
                parent = os.path.dirname(d)
                if parent == d:
                    break
                d = parent
            return sorted(uids), sorted(gids)

    def mounted(self, id: str) -> int:
        """The recorded mount count (0 when not mounted). Locking: shared, plus the
        shared mountpoints lock."""
        if not self._rw:
            raise errors.StoreIsReadOnly(
                f"no mount information for layers at {_q(self.mounts_path)}"
            )
        with self.reading():
            assert self._mounts_lock is not None
            with self._mounts_lock.reading():
                self._reload_mounts_if_changed(lock=False)
                return self._require(id).mount_count

    # ----------------------------------------------------------------------------------
    # create

    def create(
        self,
        id: str | None = None,
        parent: str | None = None,
        names: Iterable[str] = (),
        mount_label: str = "",
        options: Mapping[str, str] | None = None,
        *,
        template: str | None = None,
        flags: Mapping[str, Any] | None = None,
        uid_map: Sequence[IDMap] = (),
        gid_map: Sequence[IDMap] = (),
        big_data: Mapping[str, BigDataSource] | None = None,
        volatile: bool = False,
        writeable: bool = False,
        diff: DiffSource | None = None,
        original_digest: str | None = None,
        original_size: int | None = None,
        uncompressed_digest: str | None = None,
        staged: DifferOutput | None = None,
    ) -> tuple[Layer, int]:
        """Create a layer; returns ``(layer, size)``: -1 without ``diff``, otherwise the
        size :meth:`apply_diff` reports. A failed apply deletes the new layer.

        With ``diff`` (and no ``template``), the tarball is extracted into a private
        staging directory *without* the store lock (other processes go on reading and
        writing the store meanwhile); the exclusive lock is taken only to commit it:
        check that the id, names and parent are still right, save the record
        ``incomplete``, rename the files into place, write the tar-split, save.

        ``staged`` is the output of :meth:`apply_diff_with_differ`: the layer is made
        from that staging directory (digests, TOC digest, sizes, uid/gid sets, metadata,
        tar-split and big data from the output); the staging directory is consumed,
        and removed when the create fails.

        ``parent``/``template`` are resolved like any id. ID maps default to the
        parent's. The record is saved with the ``incomplete`` flag first, then the big
        data and the driver's tree are made, then the flag is cleared and saved again;
        on any failure the layer is deleted. Errors: DuplicateID, DuplicateName,
        LayerUnknown (parent/template), InvalidLayerID, InvalidBigDataName.

        Locking: exclusive.
        """
        if not self._rw:
            raise self._ro_error("create new layers")
        if id is not None:
            _check_id(id)
        name_list = _names_arg(names, "creating a layer")
        if not isinstance(mount_label, str):
            raise TypeError(f"mount label {mount_label!r} is not a string")
        flag_values = _flags_arg(flags)
        items = dict(big_data or {})
        for key in items:
            if key == "":
                raise errors.InvalidBigDataName("can't set empty name for layer big data item")
            _check_big_data_key(key)
        after_create: Callable[[LayerRecord], int] | None = None
        if diff is not None and staged is not None:
            raise ValueError("create() takes a diff or a staged output, not both")

        def commit(
            staged_output: DifferOutput | None = None,
            after: Callable[[LayerRecord], int] | None = None,
        ) -> tuple[Layer, int]:
            with self.writing():
                return self._create_locked(
                    id,
                    parent,
                    name_list,
                    mount_label,
                    options,
                    template=template,
                    flags=flag_values,
                    uid_map=tuple(uid_map),
                    gid_map=tuple(gid_map),
                    big_data=items,
                    volatile=volatile,
                    writeable=writeable,
                    staged=staged_output,
                    after_create=after,
                )

        if diff is not None or staged is not None:
            from layerstore.staging import release  # not for a plain create: lazily
        if staged is not None:
            _check_staged(staged)
            try:
                return commit(staged)
            finally:
                release(staged.target)
        if diff is not None:
            digests = _TrustedDigests.of(original_digest, original_size, uncompressed_digest)
            if template is None:
                output = self._stage_diff(
                    id, parent, name_list, tuple(uid_map), tuple(gid_map), writeable, diff, digests
                )
                if output is not None:
                    try:
                        return commit(output)
                    finally:
                        release(output.target)

            def after_create(rec: LayerRecord) -> int:
                return self._apply_diff_locked(rec, diff, digests)

        return commit(after=after_create)

    def _create_locked(
        self,
        layer_id: str | None,
        parent: str | None,
        names: list[str],
        mount_label: str,
        options: Mapping[str, str] | None,
        *,
        template: str | None,
        flags: dict[str, Any],
        uid_map: tuple[IDMap, ...],
        gid_map: tuple[IDMap, ...],
        big_data: dict[str, BigDataSource],
        volatile: bool,
        writeable: bool,
        after_create: Callable[[LayerRecord], int] | None = None,
        staged: DifferOutput | None = None,
    ) -> tuple[Layer, int]:
        """Go's ``layerStore.create`` (SPEC.md §9.2).

        ``staged``: the driver's tree is made from this filled staging directory
        (one rename, after the ``incomplete`` record is saved) and the record takes the
        output's digests, sets and tar-split (Go's ``applyDiffFromStagingDirectory``).

        ``after_create`` is the data-path seam: called with the record once the
        driver's tree exists (and a template's tar-split file is copied), while the
        record still carries ``incomplete``; it may fill the layer and update the
        record (``rec.replace``), and returns the size reported to the caller. Any
        exception from it deletes the layer, as every failure here does.

        Locking: requires the exclusive layers lock.
        """
        self._require_writing()
        if layer_id is None:
            layer_id = _random_id(self._byid)
        elif layer_id in self._byid:
            raise errors.DuplicateID(f"layer ID {_q(layer_id)}")
        for name in names:
            if name in self._byname:
                raise errors.DuplicateName(f"name {_q(name)}")
        parent_rec = None
        if parent:
            parent_rec = self._require_parent(parent)
        template_rec = None
        template_ts: bytes | None = None
        if template:
            template_rec = self._require(template, f"template layer {_q(template)}")
            try:
                with open(self._tspath(template_rec.obj["id"]), "rb") as f:
                    template_ts = f.read()
            except FileNotFoundError:
                template_ts = None
        parent_snap = self._snap(parent_rec) if parent_rec else None
        if staged is not None:
            if template_rec is not None:
                raise errors.NotSupported(
                    message="creating a layer from both a template and a staging directory"
                )
            staged_for = staged.parent or None
            parent_id = parent_rec.obj["id"] if parent_rec else None
            if self.driver.whiteout_format == "vfs" and staged_for != parent_id:
                raise errors.ParentUnknown(
                    f"staging directory {_q(staged.target)} was made on parent "
                    f"{_q(staged_for or '')}, not {_q(parent_id or '')}",
                    message="layer not known",
                )

            def after_create(rec: LayerRecord) -> int:
                return self._commit_staged_locked(rec, staged)

        if not uid_map and parent_snap is not None:
            uid_map = parent_snap.uid_map
        if not gid_map and parent_snap is not None:
            gid_map = parent_snap.gid_map

        created, _ = now_created()
        obj: dict[str, Any] = {
            "id": layer_id,
            "names": names,
            "parent": parent_rec.obj["id"] if parent_rec else "",
            "mountlabel": mount_label,
            "created": created,
            "flags": {**flags, INCOMPLETE_FLAG: True},
            "uidmap": [m.to_json() for m in uid_map],
            "gidmap": [m.to_json() for m in gid_map],
        }
        if template_rec is not None:
            t = template_rec.obj
            for key in (
                "metadata",
                "compressed-diff-digest",
                "compressed-size",
                "diff-digest",
                "toc-digest",
                "diff-size",
                "compression",
                "uidset",
                "gidset",
            ):
                if t.get(key) is not None:
                    obj[key] = t[key]
        if volatile:
            location = VOLATILE
        elif not writeable and self._json_paths[2] is not None:
            location = IMAGE_STORE
        else:
            location = STABLE
        rec = LayerRecord({}, location)
        rec.replace(obj)
        self._add_to_indexes(rec)
        size = -1
        try:
            self._save(location)
            for key, data in big_data.items():
                self._set_big_data(rec, key, data)
            driver_args: dict[str, Any] = {
                "mount_label": mount_label,
                "uid_map": uid_map,
                "gid_map": gid_map,
                "storage_opt": options,
                "writeable": writeable,
            }
            old: Layer | None
            try:
                if staged is not None:
                    self.driver.create_from_staging(
                        layer_id,
                        parent_rec.obj["id"] if parent_rec else None,
                        staged.target,
                        root_dir_mode=staged.root_dir_mode,
                        **driver_args,
                    )
                    old = None
                elif template_rec is not None:
                    self.driver.create_from_template(
                        layer_id,
                        template_rec.obj["id"],
                        parent=parent_rec.obj["id"] if parent_rec else None,
                        **driver_args,
                    )
                    old = self._snap(template_rec)
                else:
                    self.driver.create(
                        layer_id, parent_rec.obj["id"] if parent_rec else None, **driver_args
                    )
                    old = parent_snap
            except errors.LayerStoreError as e:
                what = _creating(layer_id, writeable, template_rec)
                e.context = f"{what}: {e.context}" if e.context else what
                e.args = (str(e),)
                raise
            except OSError as e:
                what = _creating(layer_id, writeable, template_rec)
                raise OSError(e.errno, f"{what}: {e.strerror}", e.filename) from e
            if old is not None and (old.uid_map != uid_map or old.gid_map != gid_map):
                self.driver.update_id_map(
                    layer_id, old.uid_map, old.gid_map, uid_map, gid_map, mount_label
                )
            if template_ts:
                atomic_write(self._tspath(layer_id), template_ts, mode=0o600)
            if after_create is not None:
                size = after_create(rec)
            flags_now = dict(rec.flags)
            flags_now.pop(INCOMPLETE_FLAG, None)
            rec.replace({**rec.obj, "flags": flags_now})
            self._digests = None
            self._save(rec.location)
        except BaseException:
            try:
                self._delete_internal(rec)
                self._save(location)
            except Exception as cleanup:  # keep the original error
                log.error("cleaning up after a failed create of %s: %s", layer_id, cleanup)
            raise
        return self._snap(rec), size

    # ----------------------------------------------------------------------------------
    # names, metadata, flags

    def set_names(self, id: str, names: Iterable[str]) -> None:
        """Replace the layer's names; a name held by another layer moves here.

        Locking: exclusive."""
        self._update_names(id, names, "set")

    def add_names(self, id: str, names: Iterable[str]) -> None:
        """Add names (new ones first, as Go); a name held by another layer moves here.

        Locking: exclusive."""
        self._update_names(id, names, "add")

    def remove_names(self, id: str, names: Iterable[str]) -> None:
        """Remove the listed names from the layer. Locking: exclusive."""
        self._update_names(id, names, "remove")

    def _update_names(self, id: str, names: Iterable[str], op: str) -> None:
        """Locking: exclusive."""
        if not self._rw:
            raise self._ro_error("change layer name assignments")
        wanted = _names_arg(names, f"changing the names of layer {_q(str(id))}")
        with self.writing():
            rec = self._require(id)
            old = rec.names
            if op == "set":
                new = wanted
            elif op == "add":
                new = _dedupe(wanted + old)
            else:
                new = [n for n in old if n not in wanted]
            locations = rec.location
            for name in old:
                if self._byname.get(name) is rec:
                    del self._byname[name]
            for name in new:
                other = self._byname.get(name)
                if other is not None and other is not rec:
                    other.replace({**other.obj, "names": [n for n in other.names if n != name]})
                    locations |= other.location
                self._byname[name] = rec
            rec.replace({**rec.obj, "names": new})
            self._save(locations)

    def set_metadata(self, id: str, metadata: str) -> None:
        """Replace the layer's metadata text. Locking: exclusive."""
        if not self._rw:
            raise self._ro_error("modify layer metadata")
        if not isinstance(metadata, str):
            raise TypeError(f"metadata must be a string, not {type(metadata).__name__}")
        with self.writing():
            rec = self._require(id)
            rec.replace({**rec.obj, "metadata": metadata})
            self._save(rec.location)

    def set_flag(self, id: str, key: str, value: Any) -> None:
        """Set flag ``key`` to a JSON value. Locking: exclusive."""
        if not self._rw:
            raise self._ro_error("set flags on layers")
        value = _flags_arg({key: value})[key]
        with self.writing():
            rec = self._require(id)
            rec.replace({**rec.obj, "flags": {**rec.flags, key: value}})
            self._save(rec.location)

    def clear_flag(self, id: str, key: str) -> None:
        """Remove flag ``key`` (no error when it is not set). Locking: exclusive."""
        if not self._rw:
            raise self._ro_error("clear flags on layers")
        with self.writing():
            rec = self._require(id)
            flags = dict(rec.flags)
            flags.pop(key, None)
            rec.replace({**rec.obj, "flags": flags})
            self._save(rec.location)

    # ----------------------------------------------------------------------------------
    # big data

    def set_big_data(self, id: str, key: str, data: BigDataSource) -> None:
        """Store big-data item ``key`` (bytes or a binary file object, streamed into an
        atomic writer). Locking: exclusive."""
        if not self._rw:
            raise self._ro_error("save data items associated with layers")
        if key == "":
            raise errors.InvalidBigDataName("can't set empty name for layer big data item")
        _check_big_data_key(key)
        with self.writing():
            rec = self._require(id, f"locating layer with ID {_q(id)} to write bigdata")
            self._set_big_data(rec, key, data)

    def _set_big_data(self, rec: LayerRecord, key: str, data: BigDataSource) -> None:
        """Locking: requires the exclusive layers lock."""
        self._require_writing()
        layer_id = rec.obj["id"]
        os.makedirs(self._datadir(layer_id), mode=0o700, exist_ok=True)
        writer = AtomicWriter(self._datapath(layer_id, key), mode=0o600)
        try:
            if isinstance(data, bytes | bytearray | memoryview):
                writer.write(data)
            else:
                while True:
                    chunk = data.read(_COPY_CHUNK)
                    if not chunk:
                        break
                    writer.write(chunk)
            writer.commit()
        except OSError as e:
            writer.abort()
            raise OSError(
                e.errno, f"copying contents for {_q(key)} for layer {_q(layer_id)}: {e.strerror}"
            ) from e
        except BaseException:
            writer.abort()
            raise
        names = rec.big_data_names
        if key not in names:
            rec.replace({**rec.obj, "big-data-names": [*names, key]})
            self._save(rec.location)

    # ----------------------------------------------------------------------------------
    # mounts

    def mount(self, id: str, options: MountOptions | Sequence[str] | None = None) -> str:
        """Mount the layer (vfs: nothing to mount) and count it; returns its path.

        Locking: exclusive layers lock, then the exclusive mountpoints lock."""
        opts = _mount_options(options)
        if not self._rw:
            if "ro" not in opts.options:
                raise self._ro_error("update mount locations for layers", self.mounts_path)
            raise self._ro_error("modify layer mount point records", self.mounts_path)
        with self.writing():
            assert self._mounts_lock is not None
            with self._mounts_lock.writing():
                self._reload_mounts_if_changed(lock=False)
                rec = self._require(id)
                if rec.mount_count > 0 and is_mount_point(rec.mount_point):
                    rec.mount_count += 1
                    rec.mounts_changed()
                    self._save_mounts_locked()
                    return rec.mount_point
                if not opts.mount_label:
                    opts = MountOptions(rec.obj.get("mountlabel") or "", opts.options)
                path = self.driver.get(rec.obj["id"], opts)
                if rec.mount_point:
                    self._bymount.pop(rec.mount_point, None)
                rec.mount_point = os.path.normpath(path)
                rec.mount_count += 1
                rec.mounts_changed()
                self._bymount[rec.mount_point] = rec
                self._save_mounts_locked()
                return path

    def unmount(self, id: str, force: bool = False, conditional: bool = False) -> bool:
        """Drop one mount (all with ``force``); ``id`` may also be the mount path.
        Returns whether the layer is still mounted. LayerNotMounted when
        ``conditional`` and it is not mounted.

        Locking: exclusive layers lock, then the exclusive mountpoints lock."""
        if not self._rw:
            raise self._ro_error("update mount locations for layers", self.mounts_path)
        with self.writing():
            assert self._mounts_lock is not None
            with self._mounts_lock.writing():
                self._reload_mounts_if_changed(lock=False)
                rec = self._lookup(id) if isinstance(id, str) else None
                if rec is None and isinstance(id, str) and id:
                    rec = self._bymount.get(os.path.normpath(id))
                if rec is None:
                    raise errors.LayerUnknown(f"layer {_q(str(id))}")
                return self._unmount_locked(rec, force, conditional)

    def _unmount_locked(self, rec: LayerRecord, force: bool, conditional: bool) -> bool:
        """Locking: requires the exclusive layers and mountpoints locks."""
        if conditional and rec.mount_count == 0:
            raise errors.LayerNotMounted(f"layer {_q(rec.obj['id'])}")
        if force:
            rec.mount_count = 1
        if rec.mount_count > 1:
            rec.mount_count -= 1
            rec.mounts_changed()
            self._save_mounts_locked()
            return True
        try:  # noqa: SIM105 - no contextlib import for this
            self.driver.put(rec.obj["id"])
        except FileNotFoundError:
            pass
        if rec.mount_point:
            self._bymount.pop(rec.mount_point, None)
        rec.mount_count = 0
        rec.mount_point = ""
        rec.mounts_changed()
        self._save_mounts_locked()
        return False

    # ----------------------------------------------------------------------------------
    # delete, wipe, garbage collection

    def delete(self, id: str) -> None:
        """Delete a layer that no other layer has as parent (LayerHasChildren).

        Unmounts it, saves it flagged ``incomplete``, removes the driver's tree, the
        tar-split file and the big-data directory, then drops the record and saves.
        Locking: exclusive."""
        if not self._rw:
            raise self._ro_error("delete layers")
        with self.writing():
            rec = self._lookup(id) if isinstance(id, str) else None
            if rec is None:
                raise errors.LayerUnknown(
                    f"layer {_q(str(id))}", message="identifier is not a layer"
                )
            layer_id = rec.obj["id"]
            for other in self._records:
                if other.obj.get("parent") == layer_id:
                    raise errors.LayerHasChildren(f"used by layer {other.obj['id']}")
            self._check_not_in_use(layer_id)
            self._delete_locked(rec)

    def _check_not_in_use(self, layer_id: str) -> None:
        """Go's store-level checks: no image (top or mapped layer) and no container of
        the Go image/container stores beside ours uses the layer.

        Locking: requires the layers lock; takes images.lock, then containers.lock,
        shared, when those stores exist (lock order of Go's writeToAllStores)."""
        prefix = self.driver_name
        images_dir = os.path.join(self.graph_root, f"{prefix}-images")
        containers_lock_dir = os.path.join(
            self.run_root if self.transient and self.run_root else self.graph_root,
            f"{prefix}-containers",
        )
        containers_json = os.path.join(self.graph_root, f"{prefix}-containers", "containers.json")
        checks = (
            (images_dir, os.path.join(images_dir, "images.json"), "images.lock", "image"),
            (containers_lock_dir, containers_json, "containers.lock", "container"),
        )
        for lock_dir, path, lock_name, kind in checks:
            if not os.path.exists(path):
                continue
            with LockFile.get(os.path.join(lock_dir, lock_name)).reading():
                try:
                    import json

                    with open(path, "rb") as f:
                        entries = json.loads(f.read() or b"[]") or []
                except (OSError, ValueError) as e:
                    raise errors.CorruptStore(f"loading {_q(path)}: {e}") from None
            for entry in entries if isinstance(entries, list) else []:
                if not isinstance(entry, dict):
                    continue
                users = [entry.get("layer")]
                if kind == "image":
                    users += list(entry.get("mapped-layers") or [])
                if layer_id in users:
                    where = f"layer {layer_id} used by {kind} {entry.get('id')}"
                    if kind == "image":
                        raise errors.LayerUsedByImage(where)
                    raise errors.LayerUsedByContainer(where)

    def _delete_locked(self, rec: LayerRecord) -> None:
        """Go's ``layerStore.Delete``. Locking: requires the exclusive layers lock."""
        self._require_writing()
        if rec.mount_count > 0 or rec.mount_point or self._mounts_lock is not None:
            assert self._mounts_lock is not None
            with self._mounts_lock.writing():
                self._reload_mounts_if_changed(lock=False)
                while True:
                    try:
                        self._unmount_locked(rec, False, True)
                    except errors.LayerNotMounted:
                        break
        location = rec.location
        self._delete_internal(rec)
        self._save(location)

    def _delete_internal(self, rec: LayerRecord) -> None:
        """Flag (and save), remove the files, drop the record (not saved).

        Locking: requires the exclusive layers lock."""
        self._require_writing()
        layer_id = rec.obj["id"]
        if not rec.incomplete:
            rec.replace({**rec.obj, "flags": {**rec.flags, INCOMPLETE_FLAG: True}})
            self._save(rec.location)
        self._remove_files(layer_id)
        self._drop_from_indexes(rec)

    def _remove_files(self, layer_id: str) -> None:
        """Remove the driver's tree, tar-split file and big-data dir of ``layer_id``.

        Locking: requires the exclusive layers lock."""
        self.driver.remove(layer_id)
        try:  # noqa: SIM105 - no contextlib import for this
            os.unlink(self._tspath(layer_id))
        except FileNotFoundError:
            pass
        _remove_dir(self._datadir(layer_id))

    def wipe(self) -> None:
        """Delete every layer, newest ``created`` first, then every driver tree left.

        All records are flagged ``incomplete`` in one save first (so a crash finishes
        the job at the next load), and the emptied files are saved once at the end.
        Locking: exclusive."""
        if not self._rw:
            raise self._ro_error("delete layers")
        with self.writing():
            order = sorted(
                reversed(self._records), key=lambda r: r.created_ns(self.layerdir), reverse=True
            )
            locations = 0
            for rec in order:
                locations |= rec.location
                if not rec.incomplete:
                    rec.replace({**rec.obj, "flags": {**rec.flags, INCOMPLETE_FLAG: True}})
            if order:
                self._save(locations)
            mounted = [r for r in order if r.mount_count > 0 or r.mount_point]
            if mounted:
                assert self._mounts_lock is not None
                with self._mounts_lock.writing():
                    self._reload_mounts_if_changed(lock=False)
                    for rec in mounted:
                        while True:
                            try:
                                self._unmount_locked(rec, False, True)
                            except errors.LayerNotMounted:
                                break
            try:
                for rec in order:
                    self._remove_files(rec.obj["id"])
                    self._drop_from_indexes(rec)
            finally:
                if order:
                    self._save(locations)
            for layer_id in self.driver.list_layers():
                self.driver.remove(layer_id)

    def garbage_collect(self) -> None:
        """Remove driver trees, tar-split files and big-data dirs that no record owns.

        Locking: exclusive."""
        from layerstore.staging import prune_staging

        if not self._rw:
            raise self._ro_error("delete layers")
        with self.writing():
            for layer_id in self.driver.list_layers():
                if layer_id in self._byid:
                    continue
                self._remove_files(layer_id)
            prune_staging(self.driver.staging_roots())

    # ----------------------------------------------------------------------------------
    # the data path: apply_diff, diff, diff_size, changes (native, GIL released)

    def apply_diff(self, id: str, diff: DiffSource) -> int:
        """Apply a layer tarball (any compression) to an existing layer; returns the
        driver's size (vfs: the sum of the entries' sizes).

        ``diff`` is bytes, a path, or a binary file object (a pipe is fine); it is
        streamed once, never read whole into memory. Records the digests, sizes,
        compression and uid/gid sets, and writes ``<id>.tar-split.gz``. A bad tarball
        raises InvalidArchive and leaves the record unchanged (files already extracted
        stay, as in Go). Locking: exclusive.
        """
        from layerstore.staging import TarballDiffer, new_staging

        if not self._rw:
            raise self._ro_error("modify layer contents")
        with self.reading():
            rec = self._require(id)
            layer_id = rec.obj["id"]
            snap = self._snap(rec)
            is_additional = getattr(self.driver, "is_additional_layer", None)
            if is_additional is not None and is_additional(layer_id):
                raise errors.NotSupported(
                    f"applying a diff to layer {_q(layer_id)} of an additional layer store"
                )
            root = self.driver.apply_root(layer_id)
            base = _tree_identity(root)
            stageable = not rec.mount_count and not rec.mount_point and base is not None
            # stage on the filesystem of the layer's tree (an image store's, maybe)
            writeable = os.path.dirname(os.path.dirname(root)) == os.path.dirname(
                self.driver.staging_root(True)
            )
        if not stageable:
            with self.writing():
                return self._apply_diff_locked(self._require(id), diff, _TrustedDigests())
        # Extraction outside the lock: into a copy of the layer's tree, swapped in
        # under the lock when the layer is still the one copied.
        from layerstore.drivers.vfs import copy_tree

        staging = new_staging(
            self.driver, None, uid_map=snap.uid_map, gid_map=snap.gid_map, writeable=writeable
        )
        try:
            os.rmdir(staging.target)
            os.mkdir(staging.target, 0o700)
            copy_tree(root, staging.target)
            output = TarballDiffer(diff).apply_diff(staging.target, self._differ_context(snap))
            output.target = staging.target
            output.base_identity = base
            with self.writing():
                rec = self._require(id)
                if (
                    rec.obj["id"] != layer_id
                    or rec.mount_count
                    or rec.mount_point
                    or self.driver.apply_root(layer_id) != root
                    or _tree_identity(root) != base
                ):
                    raise errors.LayerStoreError(
                        f"applying a diff to layer {_q(layer_id)}",
                        message="the layer changed (or was mounted) while its diff was "
                        "being extracted; nothing was applied",
                    )
                exchange_paths(staging.target, root)
                return self._commit_staged_locked(rec, output, save=True)
        finally:
            staging.remove()

    def _differ_context(self, snap: Layer) -> DifferContext:
        from layerstore.staging import DifferContext

        return DifferContext(
            uid_map=tuple(snap.uid_map),
            gid_map=tuple(snap.gid_map),
            whiteout_format=self.driver.whiteout_format,
            ignore_chown_errors=self.driver.ignore_chown_errors,
        )

    def _stage_diff(
        self,
        layer_id: str | None,
        parent: str | None,
        names: list[str],
        uid_map: tuple[IDMap, ...],
        gid_map: tuple[IDMap, ...],
        writeable: bool,
        diff: DiffSource,
        digests: _TrustedDigests,
    ) -> DifferOutput | None:
        """Extract ``diff`` into a new staging directory, holding no store lock (a shared
        lock only for a moment first, to fail early on a taken id or name or an unknown
        parent). None when this create must go the locked way (ID maps that differ from
        the parent's: the tree is re-owned after it is made)."""
        from layerstore.staging import DifferContext, TarballDiffer, new_staging, release

        with self.reading():
            if layer_id is not None and layer_id in self._byid:
                raise errors.DuplicateID(f"layer ID {_q(layer_id)}")
            for name in names:
                if name in self._byname:
                    raise errors.DuplicateName(f"name {_q(name)}")
            parent_snap = None
            if parent:
                parent_snap = self._snap(self._require_parent(parent))
        if parent_snap is not None:
            if (uid_map and uid_map != parent_snap.uid_map) or (
                gid_map and gid_map != parent_snap.gid_map
            ):
                return None
            uid_map = uid_map or parent_snap.uid_map
            gid_map = gid_map or parent_snap.gid_map
        parent_id = parent_snap.id if parent_snap is not None else None
        staging = new_staging(
            self.driver, parent_id, uid_map=uid_map, gid_map=gid_map, writeable=writeable
        )
        try:
            differ = TarballDiffer(
                diff,
                compressed_digest=digests.compressed,
                compressed_size=digests.compressed_size,
                uncompressed_digest=digests.uncompressed,
            )
            context = DifferContext(
                uid_map=uid_map,
                gid_map=gid_map,
                whiteout_format=self.driver.whiteout_format,
                ignore_chown_errors=self.driver.ignore_chown_errors,
            )
            output = differ.apply_diff(staging.target, context)
            output.target = staging.target
            output.parent = parent_id
            return output
        except BaseException:
            release(staging.target)
            raise

    def _commit_staged_locked(
        self, rec: LayerRecord, out: DifferOutput, *, save: bool = False
    ) -> int:
        """Record a staged output on ``rec`` (its files are in place): tar-split file,
        digests, sizes, sets, metadata, big data. Locking: requires exclusive."""
        self._require_writing()
        layer_id = rec.obj["id"]
        tspath = self._tspath(layer_id)
        if out.tar_split_file:
            _move_synced(out.tar_split_file, tspath)
        elif out.tar_split is not None:
            import gzip

            atomic_write(tspath, gzip.compress(out.tar_split, compresslevel=1), mode=0o600)
        obj = dict(rec.obj)
        for key, value in (
            ("compressed-diff-digest", out.compressed_digest),
            ("compressed-size", out.compressed_size),
            ("diff-digest", out.uncompressed_digest),
            ("toc-digest", out.toc_digest),
            ("compression", out.compression),
        ):
            if value or (value is not None and key in ("compressed-size", "compression")):
                obj[key] = value
        obj["diff-size"] = out.size
        obj["uidset"] = list(out.uid_set)
        obj["gidset"] = list(out.gid_set)
        if out.metadata:
            obj["metadata"] = out.metadata
        rec.replace(obj)
        for key, data in out.big_data.items():
            if key == "":
                raise errors.InvalidBigDataName("can't set empty name for layer big data item")
            _check_big_data_key(key)
            self._set_big_data(rec, key, data)
        self._digests = None
        if save:
            self._save(rec.location)
        return -1 if out.driver_size is None else int(out.driver_size)

    def apply_diff_with_differ(
        self,
        to: str | None,
        options: ApplyDiffWithDifferOpts | None,
        differ: Differ,
    ) -> DifferOutput:
        """Go's ``ApplyDiffWithDiffer``: the driver makes a staging directory (on vfs, a
        copy of ``options.parent``), ``differ.apply_diff(target, context)`` fills it,
        and its output comes back with ``target`` set. Pass it to
        ``create(..., staged=output)`` to make the layer, or to
        :meth:`cleanup_staging_directory`. ``to`` is accepted for Go's signature and
        not used. No store lock is held while the differ runs (a shared one briefly to
        resolve the parent). Any failure removes the staging directory.
        """
        from layerstore.staging import (
            ApplyDiffWithDifferOpts,
            DifferContext,
            DifferOutput,
            new_staging,
            release,
        )

        del to
        if not self._rw:
            raise self._ro_error("modify layer contents")
        opts = options or ApplyDiffWithDifferOpts()
        uid_map, gid_map = tuple(opts.uid_map), tuple(opts.gid_map)
        parent_id = None
        if opts.parent:
            with self.reading():
                parent_snap = self._snap(self._require_parent(opts.parent))
            parent_id = parent_snap.id
            uid_map = uid_map or parent_snap.uid_map
            gid_map = gid_map or parent_snap.gid_map
        staging = new_staging(self.driver, parent_id, uid_map=uid_map, gid_map=gid_map)
        try:
            context = DifferContext(
                uid_map=uid_map,
                gid_map=gid_map,
                whiteout_format=self.driver.whiteout_format,
                ignore_chown_errors=self.driver.ignore_chown_errors,
            )
            output = differ.apply_diff(staging.target, context)
            if not isinstance(output, DifferOutput):
                raise TypeError(
                    f"differ {differ!r} returned {type(output).__name__}, not DifferOutput"
                )
            output.target = staging.target
            output.parent = parent_id
            return output
        except BaseException:
            release(staging.target)
            raise

    def cleanup_staging_directory(self, path: str) -> None:
        """Go's ``CleanupStagingDirectory``: remove the staging directory of an output
        of :meth:`apply_diff_with_differ` that will not be committed."""
        from layerstore.staging import release

        release(path)

    def _apply_diff_locked(
        self, rec: LayerRecord, diff: DiffSource, trusted: _TrustedDigests
    ) -> int:
        """Go's ``applyDiffWithOptions`` (SPEC.md §6.1). Locking: requires exclusive."""
        self._require_writing()
        from layerstore import _native
        from layerstore.datapath import native_source

        layer_id = rec.obj["id"]
        snap = self._snap(rec)
        with (
            AtomicWriter(self._tspath(layer_id), mode=0o600) as tarsplit,
            native_source(diff) as source,
        ):
            result = _native.apply_layer(
                source,
                self.driver.apply_root(layer_id),
                tarsplit_fd=tarsplit.fileno(),
                uid_map=[(m.container_id, m.host_id, m.size) for m in snap.uid_map],
                gid_map=[(m.container_id, m.host_id, m.size) for m in snap.gid_map],
                whiteout_format=self.driver.whiteout_format,
                trusted_compressed_digest=trusted.compressed,
                ignore_chown_errors=self.driver.ignore_chown_errors,
            )
        compressed = trusted.compressed or result["compressed_digest"]
        compressed_size = result["compressed_size"]
        if trusted.compressed is not None and trusted.compressed_size is not None:
            compressed_size = trusted.compressed_size
        uncompressed = trusted.uncompressed or result["uncompressed_digest"]
        obj = dict(rec.obj)
        obj.update(
            {
                "compressed-diff-digest": compressed,
                "compressed-size": compressed_size,
                "diff-digest": uncompressed,
                "diff-size": result["uncompressed_size"],
                "compression": result["compression"],
                "uidset": list(result["uid_set"]),
                "gidset": list(result["gid_set"]),
            }
        )
        rec.replace(obj)
        self._digests = None
        self._save(rec.location)
        size = int(result["size"])
        if self.driver.whiteout_format == "overlay":
            # Go's overlay ApplyDiff reports the disk usage of diff/ (SPEC.md §6.7).
            size = _native.diff_size(self.driver.apply_root(layer_id), None, mode="overlay")
        return size

    def diff(
        self,
        to: str,
        from_: str | None = None,
        compression: Compression | int | None = None,
    ) -> BinaryIO:
        """The layer's tarball as a stream (a context manager; close it when done).

        With ``from_`` empty or the parent and a tar-split file present, the stream is
        the original tarball byte for byte, each file checked against its CRC-64 (a
        changed file raises InvalidArchive from ``read``). Otherwise the tarball is
        regenerated from the difference of the trees (not byte-stable). ``compression``
        defaults to the layer's recorded one; gzip output is parallel with a fixed block
        size, zstd multi-threaded; bzip2 and xz are NotSupported as in Go.

        Locking: shared while the stream is set up; the bytes are produced afterwards
        on a thread, without the lock (deleting the layer meanwhile fails the stream).
        """
        from layerstore.diffstream import DiffStream

        with self.reading():
            produce, name, cleanup = self._diff_producer(to, from_, compression)
            if not callable(produce):
                return produce  # an additional layer's blob, already a stream
            try:
                return DiffStream(produce, name=name)
            except BaseException:
                cleanup()
                raise

    def write_diff(
        self,
        to: str,
        out_fd: int,
        from_: str | None = None,
        compression: Compression | int | None = None,
    ) -> int:
        """:meth:`diff`, written straight into the file descriptor ``out_fd`` (a file,
        a pipe, a socket) with no stream in between; returns the bytes written.

        Locking: shared while it is set up, none while the bytes are written."""
        with self.reading():
            produce, _, _ = self._diff_producer(to, from_, compression)
        if callable(produce):
            return int(produce(out_fd))
        written = 0
        with produce as blob:
            while chunk := blob.read(1 << 20):
                view = memoryview(chunk)
                while view:
                    view = view[os.write(out_fd, view) :]
                written += len(chunk)
        return written

    def _diff_producer(
        self, to: str, from_: str | None, compression: Compression | int | None
    ) -> tuple[Callable[[int], int] | BinaryIO, str, Callable[[], None]]:
        """What makes the layer's tarball: a function writing it into an fd (which also
        releases any mounts it needed), its name, and the clean-up to run if the
        function is never called — or, for an additional layer, its blob stream.

        Locking: requires shared."""
        from layerstore import _native
        from layerstore.archive import Compression

        to_rec, from_rec = self._diff_pair(to, from_)
        blob = self._additional_blob(to_rec, from_rec, compression)
        if blob is not None:
            return blob, "", lambda: None
        to_snap = self._snap(to_rec)
        comp = Compression(to_snap.compression if compression is None else compression)
        if comp in (Compression.BZIP2, Compression.XZ):
            raise errors.NotSupported(message=f"unsupported compression format {comp.extension}")
        to_id = to_rec.obj["id"]
        name = f"diff of {to_id}"
        tspath = self._tspath(to_id)
        direct = (from_rec.obj["id"] if from_rec else "") == (to_rec.obj.get("parent") or "")
        if direct and os.path.exists(tspath):
            roots = self.driver.diff_roots(to_id)
            return (lambda fd: _native.assemble(tspath, roots, fd, int(comp))), name, lambda: None
        kwargs = self._changes_args(to_rec, from_rec)
        new_root, old_root = kwargs.pop("new_root"), kwargs.pop("old_root")
        mounted: list[str] = kwargs.pop("mounted", [])

        def export(fd: int) -> int:
            try:
                return _native.export_changes(
                    new_root, old_root, fd, compression=int(comp), **kwargs
                )
            finally:
                self._put_mounts(mounted)

        return export, name, lambda: self._put_mounts(mounted)

    def diff_size(self, to: str, from_: str | None = None) -> int:
        """Bytes of the files added or modified in ``to`` relative to ``from_`` (the
        parent by default; a hard-linked inode once). Locking: shared."""
        from layerstore import _native

        with self.reading():
            to_rec, from_rec = self._diff_pair(to, from_)
            kwargs = self._changes_args(to_rec, from_rec)
            mounted: list[str] = kwargs.pop("mounted", [])
            try:
                return _native.diff_size(kwargs.pop("new_root"), kwargs.pop("old_root"), **kwargs)
            finally:
                self._put_mounts(mounted)

    def changes(self, to: str, from_: str | None = None) -> list[Change]:
        """What changed from ``from_`` (the parent by default) to ``to``: sorted by path,
        except overlay against the parent, which keeps Go's order (a lexical walk of
        ``diff/`` with a parent's Modify where Go places it).

        Locking: shared."""
        from layerstore import _native
        from layerstore.archive import Change, ChangeKind

        with self.reading():
            to_rec, from_rec = self._diff_pair(to, from_)
            kwargs = self._changes_args(to_rec, from_rec)
            mounted: list[str] = kwargs.pop("mounted", [])
            try:
                found = _native.changes(kwargs.pop("new_root"), kwargs.pop("old_root"), **kwargs)
            finally:
                self._put_mounts(mounted)
        return [Change(path, ChangeKind(kind)) for path, kind in found]

    def _diff_pair(self, to: str, from_: str | None) -> tuple[LayerRecord, LayerRecord | None]:
        """Go's ``findParentAndLayer``: ``from_`` empty means the parent, and an unknown
        ``from_`` silently falls back to the parent. Locking: requires shared."""
        to_rec = self._require(to)
        parent = to_rec.obj.get("parent") or ""
        from_rec = self._lookup(from_) if from_ else None
        if from_rec is None and parent:
            from_rec = self._lookup(parent) or self._read_only_parent(parent)
        return to_rec, from_rec

    def _changes_args(self, to_rec: LayerRecord, from_rec: LayerRecord | None) -> dict[str, Any]:
        """Arguments of the native change walkers for this pair. Locking: requires shared."""
        to_id = to_rec.obj["id"]
        to_snap = self._snap(to_rec)
        args: dict[str, Any] = {
            "uid_map": [(m.container_id, m.host_id, m.size) for m in to_snap.uid_map],
            "gid_map": [(m.container_id, m.host_id, m.size) for m in to_snap.gid_map],
        }
        direct = (from_rec.obj["id"] if from_rec else "") == (to_rec.obj.get("parent") or "")
        if self.driver.whiteout_format == "overlay" and direct:
            roots = self.driver.diff_roots(to_id)
            args.update(new_root=roots[0], old_root=None, mode="overlay", lower_roots=roots[1:])
            return args
        if self.driver.whiteout_format == "overlay":
            # Go's NaiveDiffDriver: compare the mounted (merged) trees. The caller
            # releases the mounts listed under "mounted" with _put_mounts.
            options = MountOptions(mount_label=to_rec.obj.get("mountlabel") or "")
            mounted: list[str] = []
            try:
                args["new_root"] = self.driver.get(to_id, options)
                mounted.append(to_id)
                args["old_root"] = None
                if from_rec is not None:
                    args["old_root"] = self.driver.get(from_rec.obj["id"], options)
                    mounted.append(from_rec.obj["id"])
            except BaseException:
                self._put_mounts(mounted)
                raise
            args["mounted"] = mounted
        else:
            args["new_root"] = self.driver.layer_dir(to_id)
            args["old_root"] = None
            if from_rec is not None:
                args["old_root"] = self.driver.layer_dir(from_rec.obj["id"])
        if from_rec is not None:
            from_snap = self._snap(from_rec)
            args["parent_uid_map"] = [
                (m.container_id, m.host_id, m.size) for m in from_snap.uid_map
            ]
            args["parent_gid_map"] = [
                (m.container_id, m.host_id, m.size) for m in from_snap.gid_map
            ]
        return args

    def _put_mounts(self, mounted: list[str]) -> None:
        """Release the driver mounts _changes_args made (newest first); a failure is
        logged, not raised, so it never hides the result or the real error."""
        for layer_id in reversed(mounted):
            try:
                self.driver.put(layer_id)
            except OSError as e:
                log.warning("unmounting layer %s after comparing it: %s", layer_id, e)

    def lookup_additional_layer(self, toc_digest: str, ref: str = "") -> Any:
        """The layer ``toc_digest`` of the driver's additional layer stores (overlay,
        ``overlay.additionallayerstore=/path[:ref]``); LayerUnknown when none has it,
        NotSupported for a driver without them."""
        validate_digest(toc_digest, f"looking up additional layer {_q(str(toc_digest))}")
        lookup = getattr(self.driver, "lookup_additional_layer", None)
        if lookup is None:
            raise errors.NotSupported(f"additional layer stores with {self.driver_name}")
        return lookup(toc_digest, ref)

    def put_additional_layer(
        self, id: str, parent: str | None, names: Iterable[str], additional_layer: Any
    ) -> Layer:
        """Go's ``PutAdditionalLayer``: a layer whose files stay in the additional layer
        store (its ``diff`` becomes the layer's own, never copied) and whose record is
        the store's ``info`` with this id, parent and names.

        The record is saved ``incomplete`` before the driver's directory is made, and
        completed after; any failure leaves no layer behind. Locking: exclusive."""
        if not self._rw:
            raise self._ro_error("create new layers")
        if getattr(self.driver, "lookup_additional_layer_by_id", None) is None:
            raise errors.NotSupported(f"additional layer stores with {self.driver_name}")
        for method in ("info", "create_as"):
            if not callable(getattr(additional_layer, method, None)):
                raise TypeError(f"{additional_layer!r} is not an additional layer (no {method}())")
        _check_id(id)
        name_list = _names_arg(names, "creating a layer")
        with additional_layer.info() as f:
            raw = f.read()
        try:
            import json

            info = json.loads(raw or b"{}")
        except ValueError as e:
            raise errors.CorruptStore(
                f"reading info of additional layer {_q(str(additional_layer))}: {e}"
            ) from None
        if not isinstance(info, dict):
            raise errors.CorruptStore(
                f"reading info of additional layer {_q(str(additional_layer))}",
                message="not a JSON object",
            )
        with self.writing():
            if id in self._byid:
                raise errors.DuplicateID(f"layer ID {_q(id)}")
            for name in name_list:
                if name in self._byname:
                    raise errors.DuplicateName(f"name {_q(name)}")
            parent_id = ""
            if parent:
                parent_id = self._require_parent(parent).obj["id"]
            created, _ = now_created()
            obj: dict[str, Any] = {k: v for k, v in info.items() if k not in _VOLATILE_KEYS}
            obj.update(
                id=id,
                names=name_list,
                parent=parent_id,
                created=created,
                flags={**(info.get("flags") or {}), INCOMPLETE_FLAG: True},
            )
            rec = LayerRecord({}, STABLE)
            rec.replace(obj)
            self._add_to_indexes(rec)
            try:
                self._save(STABLE)
                additional_layer.create_as(id, parent_id or None)
                flags = dict(rec.flags)
                flags.pop(INCOMPLETE_FLAG, None)
                rec.replace({**rec.obj, "flags": flags})
                self._digests = None
                self._save(STABLE)
            except BaseException:
                try:
                    self._delete_internal(rec)
                    self._save(STABLE)
                except Exception as cleanup:  # keep the original error
                    log.error("cleaning up after a failed additional layer %s: %s", id, cleanup)
                raise
            return self._snap(rec)

    def _read_only_parent(self, parent: str) -> LayerRecord | None:
        """A parent layer of a read-only image store (None when there is none)."""
        if not _image_store_roots(self.driver):
            return None
        try:
            return self._require_parent(parent)
        except errors.LayerUnknown:
            return None

    def _additional_blob(
        self,
        rec: LayerRecord,
        from_rec: LayerRecord | None,
        compression: Compression | int | None,
    ) -> BinaryIO | None:
        """The blob of a layer made from an additional layer store, when ``diff`` asks
        for it against its parent (Go's ``Diff``: such a layer's tarball is its blob);
        None for an ordinary layer. Locking: requires the layers lock."""
        lookup = getattr(self.driver, "lookup_additional_layer_by_id", None)
        if lookup is None:
            return None
        if (from_rec.obj["id"] if from_rec else "") != (rec.obj.get("parent") or ""):
            return None
        try:
            layer = lookup(rec.obj["id"])
        except errors.LayerUnknown:
            return None
        try:
            stored = int(rec.obj.get("compression") or 0)
            if compression is None or int(compression) == stored:
                return layer.blob()  # type: ignore[no-any-return]
            if int(compression) != 0:  # Compression.NONE
                raise errors.NotSupported(
                    f"diff of additional layer {_q(rec.obj['id'])}",
                    message="we don't support converting the data into compressed forms",
                )
            from layerstore import _native
            from layerstore.diffstream import DiffStream

            blob_path = os.path.join(layer.path, "blob")

            def produce(wfd: int) -> int:
                fd = os.open(blob_path, os.O_RDONLY | os.O_CLOEXEC)
                try:
                    return _native.decompress_fd(fd, wfd)
                finally:
                    os.close(fd)

            return DiffStream(produce, name=f"diff of {rec.obj['id']}")
        finally:
            layer.release()

    # ----------------------------------------------------------------------------------
    # lifetime

    def close(self) -> None:
        """Forget the in-memory state; later calls raise StoreClosed. Holds no lock."""
        with self._mutex:
            if self._depth:
                raise RuntimeError("close() inside reading()/writing()")
            self._closed = True
            self._records = []
            self._byid = {}
            self._byname = {}
            self._bymount = {}
            self._index = None
            self._digests = None

    def __enter__(self) -> LayerStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


# ---------------------------------------------------------------------------------------
# helpers


def _creating(layer_id: str, writeable: bool, template: LayerRecord | None) -> str:
    """Go's wrapping of driver errors at create."""
    if template is not None:
        return f"creating copy of template layer {_q(template.obj['id'])} with ID {_q(layer_id)}"
    kind = "read-write" if writeable else "read-only"
    return f"creating {kind} layer with ID {_q(layer_id)}"


_VOLATILE_KEYS: Final = frozenset(("id", "names", "parent", "created", "flags", "mountlabel"))


def _image_store_roots(driver: Driver) -> list[str]:
    """Graph roots of the driver's additional (read-only) image stores."""
    roots = getattr(driver, "image_stores", None) or getattr(driver, "additional_homes", None)
    return [str(r) for r in roots or ()]


def _check_staged(staged: DifferOutput) -> None:
    from layerstore.staging import DifferOutput

    if not isinstance(staged, DifferOutput):
        raise TypeError(f"staged must be a DifferOutput, not {type(staged).__name__}")
    if not staged.target or not os.path.isdir(staged.target):
        raise FileNotFoundError(
            errno.ENOENT, "the staging directory of the differ output is gone", staged.target
        )


def _tree_identity(path: str) -> tuple[int, int, int] | None:
    """(inode, mtime, ctime) of a directory: what a swap checks is unchanged."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_ctime_ns)


def _move_synced(src: str, dst: str) -> None:
    """Rename ``src`` (fsynced first) over ``dst``; copy when they are on two filesystems."""
    fd = os.open(src, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.makedirs(os.path.dirname(dst), mode=0o700, exist_ok=True)
    try:
        os.chmod(src, 0o600)
        os.replace(src, dst)
    except OSError as e:
        if e.errno != errno.EXDEV:
            raise
        with open(src, "rb") as f:
            atomic_write(dst, f.read(), mode=0o600)


def _index_records(
    objs: list[Any],
    source: SourceText | None,
    location: int,
    path: str,
    rw: bool,
    byid: dict[str, LayerRecord],
    byname: dict[str, LayerRecord],
    records: list[LayerRecord],
    incomplete: list[LayerRecord],
) -> int:
    """Make the records of one layers file (decoded ``objs``) and index them: append to
    ``records``, add to ``byid``/``byname`` (a name on two layers stays with the later;
    ``rw`` only), note ``incomplete`` ones (``rw`` only). Returns the locations that
    need saving (repairs). CorruptStore / DuplicateLayerNames as the first bad record.

    Most files are plain (objects with distinct string ids, new to ``byid``): those are
    checked, made and indexed a column at a time, at C speed (map, zip, compress);
    anything else goes record by record."""
    n = len(objs)
    plain = n > 0 and set(map(type, objs)) == {dict}
    ids: list[Any] = list(map(dict.get, objs, repeat("id"))) if plain else []
    if (
        plain
        and set(map(type, ids)) == {str}
        and len(set(ids)) == n
        and byid.keys().isdisjoint(ids)
    ):
        made = list(map(LayerRecord, objs, repeat(location), repeat(source), range(n)))
        byid.update(zip(ids, made, strict=True))
        records.extend(made)
        fix_locations = 0
        names_of = list(map(dict.get, objs, repeat("names")))
        for rec, names in compress(zip(made, names_of, strict=True), names_of):
            fix_locations |= _index_names(rec, names, path, rw, byname)
        if rw:
            flags_of = list(map(dict.get, objs, repeat("flags")))
            for rec, flags in compress(zip(made, flags_of, strict=True), flags_of):
                if type(flags) is dict and flags.get(INCOMPLETE_FLAG) is True:
                    incomplete.append(rec)
                    fix_locations |= location
        return fix_locations
    return _index_records_one_by_one(
        objs, source, location, path, rw, byid, byname, records, incomplete
    )


def _index_names(
    rec: LayerRecord, names: Any, path: str, rw: bool, byname: dict[str, LayerRecord]
) -> int:
    """Index the (non-empty) ``names`` of ``rec``; the locations repaired."""
    fix_locations = 0
    if type(names) is not list:
        raise errors.CorruptStore(
            f"loading {_q(path)}", message=f"layer {rec.obj['id']!r}: names is not a list"
        )
    for name in names:
        if type(name) is not str:
            raise errors.CorruptStore(
                f"loading {_q(path)}", message=f"layer {rec.obj['id']!r}: bad name {name!r}"
            )
        other = byname.get(name)
        if other is not None and other is not rec:
            if not rw:
                raise errors.DuplicateLayerNames(f"name {_q(name)}")
            other.replace({**other.obj, "names": [n for n in other.names if n != name]})
            fix_locations |= other.location
        byname[name] = rec
    return fix_locations


def _index_records_one_by_one(
    objs: list[Any],
    source: SourceText | None,
    location: int,
    path: str,
    rw: bool,
    byid: dict[str, LayerRecord],
    byname: dict[str, LayerRecord],
    records: list[LayerRecord],
    incomplete: list[LayerRecord],
) -> int:
    """:func:`_index_records` for any file (odd ids, duplicates, non-objects)."""
    fix_locations = 0
    for k, obj in enumerate(objs):
        if type(obj) is not dict:
            raise errors.CorruptStore(
                f"loading {_q(path)}", message=f"layer record {k} is not an object"
            )
        ident = obj.get("id")
        if type(ident) is not str:
            if ident is not None:
                raise errors.CorruptStore(
                    f"loading {_q(path)}", message=f"layer record {k}: id is not a string"
                )
            ident = obj["id"] = ""
        if ident in byid:
            continue
        rec = LayerRecord(obj, location, source, k)
        byid[ident] = rec
        records.append(rec)
        names = obj.get("names")
        if names:
            fix_locations |= _index_names(rec, names, path, rw, byname)
        if rw:
            flags = obj.get("flags")
            if flags and type(flags) is dict and flags.get(INCOMPLETE_FLAG) is True:
                incomplete.append(rec)
                fix_locations |= location
    return fix_locations


def _listdir_or_empty(path: str) -> list[str]:
    try:
        return os.listdir(path)
    except (FileNotFoundError, NotADirectoryError):
        return []


def _check_big_data_key(key: str) -> None:
    if not isinstance(key, str):
        raise TypeError(f"big data key {key!r} is not a string")
    if key in (".", ".."):
        raise errors.InvalidBigDataName(f"big data key {_q(key)}")


def _flags_arg(flags: Mapping[str, Any] | None) -> dict[str, Any]:
    if not flags:
        return {}
    out = {}
    for key, value in flags.items():
        if not isinstance(key, str):
            raise errors.InvalidFlagValue(f"flag {key!r}", message="flag names must be strings")
        try:
            out[key] = _go_generic(value, f"flag {_q(key)}")
        except (TypeError, ValueError) as e:
            raise errors.InvalidFlagValue(f"flag {_q(key)}: {e}") from None
    return out


def _read_only_lock(path: str) -> LockFile:
    """The lock of a read-only store: read-only, unless this process already has the
    path as a read-write lock (one LockFile per path), which is then only read-locked."""
    try:
        return LockFile.get(path, read_only=True)
    except ValueError:
        return LockFile.get(path)


def _mount_options(options: MountOptions | Sequence[str] | None) -> MountOptions:
    if options is None:
        return MountOptions()
    if isinstance(options, MountOptions):
        return options
    if isinstance(options, str):
        raise TypeError("mount options must be a list of strings, not a single string")
    return MountOptions(options=tuple(options))


def _to_host(value: int, maps: Sequence[IDMap]) -> int | None:
    if not maps:
        return value
    for m in maps:
        if m.container_id <= value < m.container_id + m.size:
            return m.host_id + value - m.container_id
    return None


def _to_container(value: int, maps: Sequence[IDMap]) -> int | None:
    if not maps:
        return value
    for m in maps:
        if m.host_id <= value < m.host_id + m.size:
            return m.container_id + value - m.host_id
    return None


def _remove_dir(path: str) -> None:
    try:
        remove_tree(path)
    except OSError as e:
        if e.errno != errno.ENOENT:
            raise


@dataclass(frozen=True, slots=True)
class _TrustedDigests:
    """Caller-supplied digests Go trusts instead of computing (only sha256 ones)."""

    compressed: str | None = None
    compressed_size: int | None = None
    uncompressed: str | None = None

    @classmethod
    def of(
        cls, original: str | None, original_size: int | None, uncompressed: str | None
    ) -> _TrustedDigests:
        for digest, what in ((original, "original digest"), (uncompressed, "uncompressed digest")):
            if digest:
                validate_digest(digest, f"layer {what}")
        return cls(
            original if original and original.startswith("sha256:") else None,
            original_size,
            uncompressed if uncompressed and uncompressed.startswith("sha256:") else None,
        )
