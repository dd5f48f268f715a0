"""The overlay driver: layers stacked with the kernel's overlayfs (SPEC.md §1.5).

On disk, as the Go driver (checked against ``containers-storage`` 1.43)::

    G/overlay/                  0700, a private bind mount of itself (see below)
    G/overlay/.has-mount-program  "false" (0600)
    G/overlay/l/                0755; <26-char base32 id> -> ../<layer id>/diff
    G/overlay/<id>/             0700, owned by the layer's mapped root
        diff/    the layer's own files (the overlay upper dir). 0555 for a base layer;
                 a child takes its parent's diff mode (& 0777, through the umask) and the
                 owner of its parent's layer directory
        link     the short id, no newline (0644 through the umask)
        lower    children only: "l/<parent link>:" + the parent's lower (0666 & ~umask)
        work/ merged/   0700; merged/ is removed again by every final unmount
        empty/   base layers only: the lower dir of a base layer's mount

``get`` mounts ``overlay`` on ``<id>/merged`` with ``lowerdir=`` the ``l/`` links of the
chain (uppermost first; ``<id>/empty`` for a base layer), ``upperdir=<id>/diff`` and
``workdir=<id>/work``, absolute paths while the mount data fits in a page; longer chains
are mounted with paths relative to ``G/overlay`` (from a thread with its own working
directory, so the process's never changes), as Go does. Chains too long even for that
(Go fails there, past ~140 lowers) go through the new mount API, one ``lowerdir+`` per
lower (Linux 6.8+). A read-only mount (option ``ro``, or a layer of an additional image
store) has ``lowerdir=<id>/diff:<lowers>`` only. ``put`` detaches the mount
(``MNT_DETACH``) and removes ``merged/``, as Go does.

Like Go, the driver makes ``G/overlay`` a private bind mount of itself (unless
``overlay.skip_mount_home=true``): layer mounts then never propagate to other mount
namespaces, and a Go process starting later finds the home already mounted instead of
bind-mounting it over our live layer mounts (which would hide them). Go does it when the
driver starts; we do it before the first layer mount, so a store that only reads leaves
no mount behind. It stays, as Go's does, until :meth:`OverlayDriver.cleanup`.
"""

from __future__ import annotations

import _thread
import contextlib
import ctypes
import errno
import os
import stat

from layerstore.drivers.base import MountOptions, make_temp_dir, remove_tree
from layerstore.drivers.vfs import _IDRemapper, parse_bool
from layerstore.errors import InvalidOption, LayerUnknown, NotSupported
from layerstore.idtools import mapped_root
from layerstore.lazy_re import lazy_re

# Import cost: opening an overlay store is a short CLI call's work, so what only some
# calls need (logging, re, threading, base64, secrets, shutil, tempfile, typing,
# ctypes.util) is imported where it is used.
TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing
if TYPE_CHECKING:
    import logging
    from collections.abc import Mapping, Sequence
    from typing import IO, Any, Final

    from layerstore.idtools import IDMap

__all__ = ["OverlayDriver", "mount_points_under"]


class _LazyLogger:
    """``logging.getLogger(__name__)``, made on first use; the store's logger is made
    first, so the CLI's log format is in place (``store.logging_hooks``)."""

    __slots__ = ()

    def __getattr__(self, name: str) -> Any:
        global log
        import logging

        from layerstore import store

        store.log.name  # noqa: B018 - makes the store's logger, running its hooks
        log = logging.getLogger(__name__)
        return getattr(log, name)


log: logging.Logger = _LazyLogger()  # type: ignore[assignment]


LINK_DIR: Final = "l"
LOWER_FILE: Final = "lower"
STAGING_DIR: Final = "staging"
ADDITIONAL_LAYER_FILE: Final = "additionallayer"
MAX_DEPTH: Final = 500
ID_LENGTH: Final = 26
DEFAULT_PERMS: Final = 0o555
MOUNT_PROGRAM_FLAG: Final = ".has-mount-program"
OPAQUE_XATTR: Final = "trusted.overlay.opaque"
WHITEOUT_PREFIX: Final = ".wh."

OVERLAY_MAGIC: Final = 0x794C7630
# graphdriver.FsNames: the backing filesystems the Go driver knows by name.
_FS_NAMES: Final[dict[int, str]] = {
    0x61756673: "aufs",
    0x9123683E: "btrfs",
    0x28CD3D45: "cramfs",
    0xF15F: "ecryptfs",
    0xEF53: "extfs",
    0xF2F52010: "f2fs",
    0x47504653: "gpfs",
    0x72B6: "jffs2",
    0x3153464A: "jfs",
    0x6969: "nfs",
    0x858458F6: "ramfs",
    0x52654973: "reiserfs",
    0x517B: "smb",
    0x73717368: "squashfs",
    0x01021994: "tmpfs",
    0xA501FCF5: "vxfs",
    0x58465342: "xfs",
    0x2FC12FC1: "zfs",
    OVERLAY_MAGIC: "overlayfs",
    0x65735546: "fuse",
    0xFF534D42: "cifs",
    0x5346414F: "afs",
    0x00C36400: "ceph",
}
# Backing filesystems an overlay upper dir cannot live on without a mount program.
_NEEDS_MOUNT_PROGRAM: Final = frozenset((0x61756673, OVERLAY_MAGIC, 0xF15F))

# mount(2) flags (pkg/mount/flags.go): name -> (clear, flag).
_MS_RDONLY: Final = 0x1
_MS_REC: Final = 0x4000
_MOUNT_FLAGS: Final[dict[str, tuple[bool, int]]] = {
    "ro": (False, _MS_RDONLY),
    "rw": (True, _MS_RDONLY),
    "suid": (True, 0x2),
    "nosuid": (False, 0x2),
    "dev": (True, 0x4),
    "nodev": (False, 0x4),
    "exec": (True, 0x8),
    "noexec": (False, 0x8),
    "sync": (False, 0x10),
    "async": (True, 0x10),
    "dirsync": (False, 0x80),
    "mand": (False, 0x40),
    "nomand": (True, 0x40),
    "atime": (True, 0x400),
    "noatime": (False, 0x400),
    "diratime": (True, 0x800),
    "nodiratime": (False, 0x800),
    "relatime": (False, 0x200000),
    "norelatime": (True, 0x200000),
    "strictatime": (False, 0x1000000),
    "nostrictatime": (True, 0x1000000),
}
# Options that would turn the overlay mount into something else (Go passes them on and
# the kernel fails obscurely; we refuse them by name).
_FOREIGN_MOUNT_OPTIONS: Final = frozenset(
    (
        "bind",
        "rbind",
        "remount",
        "private",
        "rprivate",
        "shared",
        "rshared",
        "slave",
        "rslave",
        "unbindable",
        "runbindable",
    )
)
_MNT_DETACH: Final = 0x2
# The new mount API (same syscall numbers on every architecture since Linux 5.2).
_SYS_MOVE_MOUNT: Final = 429
_SYS_FSOPEN: Final = 430
_SYS_FSCONFIG: Final = 431
_SYS_FSMOUNT: Final = 432
_FSOPEN_CLOEXEC: Final = 0x1
_FSCONFIG_SET_FLAG: Final = 0
_FSCONFIG_SET_STRING: Final = 1
_FSCONFIG_CMD_CREATE: Final = 6
_FSMOUNT_CLOEXEC: Final = 0x1
_MOVE_MOUNT_F_EMPTY_PATH: Final = 0x4
_AT_FDCWD: Final = -100
_MOUNT_ATTRS: Final[dict[str, int]] = {
    "ro": 0x1,
    "nosuid": 0x2,
    "nodev": 0x4,
    "noexec": 0x8,
    "noatime": 0x10,
    "strictatime": 0x20,
    "nodiratime": 0x80,
}
_CLONE_FS: Final = 0x200
_MS_BIND: Final = 0x1000
_MS_PRIVATE: Final = 1 << 18

_HEX64: Final = lazy_re(r"[0-9a-fA-F]{64}")
_RAM_SIZE: Final = lazy_re(r"^(\d+(?:\.\d+)*) ?([kKmMgGtTpP])?[iI]?[bB]?$")
_MOUNTINFO_ESCAPE: Final = lazy_re(r"\\([0-7]{3})")

# ---------------------------------------------------------------------------------------
# system calls the os module lacks


def _load_libc() -> ctypes.CDLL:
    try:  # glibc's name: no need to ask ctypes.util (which runs ldconfig, slowly)
        return ctypes.CDLL("libc.so.6", use_errno=True)
    except OSError:
        from ctypes.util import find_library

        return ctypes.CDLL(find_library("c") or "libc.so.6", use_errno=True)


_libc = _load_libc()
_libc.mount.argtypes = [
    ctypes.c_char_p,
    ctypes.c_char_p,
    ctypes.c_char_p,
    ctypes.c_ulong,
    ctypes.c_char_p,
]
_libc.mount.restype = ctypes.c_int
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
_libc.umount2.restype = ctypes.c_int
_libc.unshare.argtypes = [ctypes.c_int]
_libc.syscall.restype = ctypes.c_long
_libc.unshare.restype = ctypes.c_int
_libc.statfs.argtypes = [ctypes.c_char_p, ctypes.c_void_p]
_libc.statfs.restype = ctypes.c_int


def _raise_errno(what: str, path: str) -> None:
    err = ctypes.get_errno()
    raise OSError(err, f"{what}: {os.strerror(err)}", path)


def sys_mount(source: str, target: str, fstype: str, flags: int, data: str) -> None:
    """mount(2)."""
    if (
        _libc.mount(
            os.fsencode(source),
            os.fsencode(target),
            os.fsencode(fstype) if fstype else None,
            flags,
            os.fsencode(data) if data else None,
        )
        != 0
    ):
        _raise_errno("mount", target)


def sys_unmount(target: str, flags: int = _MNT_DETACH) -> None:
    """umount2(2)."""
    if _libc.umount2(os.fsencode(target), flags) != 0:
        _raise_errno("unmount", target)


def fs_magic(path: str) -> int:
    """The ``f_type`` statfs(2) reports for the filesystem holding ``path``."""
    buf = (ctypes.c_long * 32)()  # struct statfs is 120 bytes on 64-bit Linux
    if _libc.statfs(os.fsencode(path), buf) != 0:
        _raise_errno("statfs", path)
    return int(buf[0]) & 0xFFFFFFFF


def _fs_context_mount(target: str, params: list[tuple[str, str | None]], attrs: int) -> None:
    """An overlay mount through fsopen/fsconfig/fsmount/move_mount; ``params`` are
    ``(key, string value or None for a flag)`` in order."""
    fs_fd = _syscall(_SYS_FSOPEN, b"overlay", _FSOPEN_CLOEXEC)
    if fs_fd < 0:
        _raise_errno("fsopen(overlay)", target)
    try:
        for key, value in params:
            kind = _FSCONFIG_SET_FLAG if value is None else _FSCONFIG_SET_STRING
            raw = None if value is None else os.fsencode(value)
            if _syscall(_SYS_FSCONFIG, fs_fd, kind, key.encode(), raw, 0) < 0:
                _raise_errno(f"fsconfig({key}={value})", target)
        if _syscall(_SYS_FSCONFIG, fs_fd, _FSCONFIG_CMD_CREATE, None, None, 0) < 0:
            _raise_errno("fsconfig(create)", target)
        mnt_fd = _syscall(_SYS_FSMOUNT, fs_fd, _FSMOUNT_CLOEXEC, attrs)
        if mnt_fd < 0:
            _raise_errno("fsmount", target)
        try:
            empty = _MOVE_MOUNT_F_EMPTY_PATH
            if _syscall(_SYS_MOVE_MOUNT, mnt_fd, b"", _AT_FDCWD, os.fsencode(target), empty) < 0:
                _raise_errno("move_mount", target)
        finally:
            os.close(mnt_fd)
    finally:
        os.close(fs_fd)


def _syscall(number: int, *args: int | bytes | None) -> int:
    converted = [ctypes.c_long(a) if isinstance(a, int) else ctypes.c_char_p(a) for a in args]
    return int(_libc.syscall(ctypes.c_long(number), *converted))


def _mount_in_dir(
    cwd: str,
    source: str,
    target: str,
    fstype: str,
    flags: int,
    data: str,
    fs_context: tuple[list[tuple[str, str | None]], int] | None = None,
) -> None:
    """mount(2) (or, given ``fs_context``, the new mount API) with relative paths
    resolved from ``cwd``: done from a thread that first unshares its filesystem context
    (CLONE_FS), so its chdir moves no other thread."""
    failure: list[BaseException] = []

    def run() -> None:
        try:
            if _libc.unshare(_CLONE_FS) != 0:
                _raise_errno("unshare(CLONE_FS)", cwd)
            os.chdir(cwd)
            if fs_context is not None:
                _fs_context_mount(target, *fs_context)
            else:
                sys_mount(source, target, fstype, flags, data)
        except BaseException as e:  # handed to the caller's thread
            failure.append(e)

    import threading

    worker = threading.Thread(target=run, name="layerstore-overlay-mount")
    worker.start()
    worker.join()
    if failure:
        raise failure[0]


def _unescape_mountinfo(field: str) -> str:
    if "\\" not in field:
        return field
    return _MOUNTINFO_ESCAPE().sub(lambda m: chr(int(m.group(1), 8)), field)


def _mountinfo_points() -> list[str]:
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
        return [_unescape_mountinfo(line.split(" ", 5)[4]) for line in f if line.count(" ") >= 5]


def mount_points_under(path: str) -> list[str]:
    """Mount points at or below ``path`` in this mount namespace, deepest first."""
    root = os.path.normpath(path)
    prefix = root.rstrip("/") + "/"
    found = {p for p in _mountinfo_points() if p == root or p.startswith(prefix)}
    return sorted(found, key=lambda p: (-p.count("/"), p))


def _is_mount_point(path: str) -> bool:
    return os.path.normpath(path) in _mountinfo_points()


def _is_overlay_mounted(path: str) -> bool:
    """Go's FsChecker: ``path`` is the root of an overlay filesystem."""
    try:
        return fs_magic(path) == OVERLAY_MAGIC and _is_mount_point(path)
    except OSError:
        return False


def _unmount_all_under(path: str) -> None:
    """Go's ``mount.RecursiveUnmount``: detach every mount at or below ``path``."""
    for _ in range(8):  # a detach can uncover a mount that was hidden below another
        points = mount_points_under(path)
        if not points:
            return
        for point in points:
            try:
                sys_unmount(point, _MNT_DETACH)
            except OSError as e:
                if e.errno not in (errno.EINVAL, errno.ENOENT):
                    raise


# ---------------------------------------------------------------------------------------
# small parsers


def _ram_in_bytes(text: str) -> int:
    """go-units ``RAMInBytes``: ``"10g"``, ``"512 MiB"``, ``"1000"`` (binary units)."""
    m = _RAM_SIZE().match(text)
    if not m:
        raise InvalidOption(f"invalid size: {text!r}", message="invalid option")
    size = float(m.group(1))
    unit = (m.group(2) or "").lower()
    return int(size * (1024 ** (" kmgtp".index(unit) if unit else 0)))


def parse_mount_data(options: Sequence[str]) -> tuple[int, str]:
    """Go's ``mount.ParseOptions``: flag options become mount(2) flags, the rest stays
    filesystem data (empty entries dropped)."""
    flags = 0
    data: list[str] = []
    for option in options:
        if not option or option == "defaults":
            continue
        if option in _FOREIGN_MOUNT_OPTIONS:
            raise InvalidOption(
                f"mount option {option!r}", message="not valid for an overlay layer mount"
            )
        known = _MOUNT_FLAGS.get(option)
        if known is None:
            data.append(option)
        elif known[0]:
            flags &= ~known[1]
        else:
            flags |= known[1]
    return flags, ",".join(data)


def _generate_link_id() -> str:
    """Go's ``generateID(26)``: random bytes, base32 (A-Z2-7), cut to 26 characters."""
    import base64
    import secrets

    return base64.b32encode(secrets.token_bytes((ID_LENGTH * 5 + 7) // 8)).decode()[:ID_LENGTH]


def _read_text(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as f:
            return f.read()
    except FileNotFoundError:
        return None


def _write_text(path: str, text: str, mode: int) -> None:
    """Go's ``os.WriteFile``: create with ``mode`` (through the umask) or truncate."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    try:
        os.write(fd, os.fsencode(text))
    finally:
        os.close(fd)


def _mkdir_as(path: str, mode: int, uid: int, gid: int) -> None:
    """Go's ``idtools.MkdirAs``: mkdir (through the umask; an existing dir is fine), chown."""
    with contextlib.suppress(FileExistsError):
        os.mkdir(path, mode)
    st = os.lstat(path)
    if (st.st_uid, st.st_gid) != (uid, gid):
        os.lchown(path, uid, gid)


class _Dirent(ctypes.Structure):
    """glibc's ``struct dirent`` on 64-bit Linux."""

    _fields_ = (
        ("d_ino", ctypes.c_uint64),
        ("d_off", ctypes.c_int64),
        ("d_reclen", ctypes.c_ushort),
        ("d_type", ctypes.c_ubyte),
        ("d_name", ctypes.c_char * 256),
    )


_libc.opendir.argtypes = [ctypes.c_char_p]
_libc.opendir.restype = ctypes.c_void_p
_libc.readdir.argtypes = [ctypes.c_void_p]
_libc.readdir.restype = ctypes.POINTER(_Dirent)
_libc.closedir.argtypes = [ctypes.c_void_p]
_libc.closedir.restype = ctypes.c_int
_DT_UNKNOWN: Final = 0


def _supports_d_type(directory: str) -> bool:
    """Go's ``fsutils.SupportsDType``: readdir in a fresh dir under ``directory`` fills
    ``d_type`` (XFS formatted with ftype=0 does not, and overlay needs it)."""
    probe = make_temp_dir(directory, "d_type-")
    try:
        open(os.path.join(probe, "f"), "wb").close()
        handle = _libc.opendir(os.fsencode(probe))
        if not handle:
            _raise_errno("opendir", probe)
        try:
            while True:
                ctypes.set_errno(0)
                entry = _libc.readdir(handle)
                if not entry:
                    if ctypes.get_errno():
                        _raise_errno("readdir", probe)
                    return False
                if entry.contents.d_name == b"f":
                    return bool(entry.contents.d_type != _DT_UNKNOWN)
        finally:
            _libc.closedir(handle)
    finally:
        try:  # what it holds is known: no need for remove_tree (and shutil, re, ...)
            os.unlink(os.path.join(probe, "f"))
            os.rmdir(probe)
        except OSError:
            remove_tree(probe)


def _kernel_param(name: str) -> str:
    try:
        with open(f"/sys/module/overlay/parameters/{name}") as f:
            return f.read().strip()
    except OSError:
        return ""


# ---------------------------------------------------------------------------------------
# the driver


class _RefCounter:
    """Go's ``graphdriver.RefCounter`` with an overlay ``FsChecker``: in-process mount
    counts per merged dir, seeded from the real mount table on first use."""

    def __init__(self) -> None:
        self._lock = _thread.allocate_lock()
        self._counts: dict[str, int] = {}

    def _seed(self, path: str) -> int:
        count = self._counts.get(path)
        mounted = _is_overlay_mounted(path)
        if count is None or (count > 0 and not mounted):
            count = 1 if mounted else 0  # first sight, or someone else unmounted it
        return count

    def increment(self, path: str) -> int:
        with self._lock:
            count = self._seed(path) + 1
            self._counts[path] = count
            return count

    def decrement(self, path: str) -> int:
        with self._lock:
            count = max(self._seed(path) - 1, 0)
            self._counts[path] = count
            return count

    def forget(self, prefix: str) -> None:
        with self._lock:
            for path in [p for p in self._counts if p.startswith(prefix)]:
                del self._counts[path]


class OverlayDriver:
    """containers/storage's overlay graph driver, on the kernel's overlayfs."""

    name = "overlay"
    whiteout_format = "overlay"
    """How :meth:`apply_root` trees hold deletions: 0/0 character devices and the
    ``trusted.overlay.opaque`` xattr (vfs: ``vfs``, the deletions are applied)."""

    def __init__(
        self,
        home: str,
        options: Sequence[str] = (),
        *,
        image_root: str | None = None,
        read_only: bool = False,
    ) -> None:
        self.home = os.path.abspath(home)
        self.read_only = read_only
        self.image_stores: list[str] = []
        self.layer_stores: list[tuple[str, bool]] = []
        """Additional layer stores: ``(path, with image reference)``."""
        self.mount_options = ""
        self.skip_mount_home = False
        self.ignore_chown_errors = False
        self._parse_options(options)
        if image_root:
            raise NotSupported(
                f"overlay image store {image_root!r}",
                message="a separate image store is not supported with the overlay driver",
            )
        self._refs = _RefCounter()
        self._home_private = False
        magic = fs_magic(self.home if os.path.exists(self.home) else _existing(self.home))
        self.backing_fs = _FS_NAMES.get(magic, "")
        if not self.backing_fs:
            raise NotSupported(
                f"filesystem type {magic:#x} reported for {os.path.dirname(self.home)} "
                "is not supported with 'overlay'",
                message="backing file system is unsupported for this graph driver",
            )
        if magic in _NEEDS_MOUNT_PROGRAM:
            raise NotSupported(
                f"'overlay' is not supported over {self.backing_fs}, a mount_program is required",
                message="backing file system is unsupported for this graph driver",
            )
        self.supports_d_type = True
        if read_only:
            return
        os.makedirs(self.home, mode=0o700, exist_ok=True)
        _mkdir_all_as(os.path.join(self.home, LINK_DIR), 0o755, 0, 0)
        self._check_mount_program_flag()
        self.supports_d_type = _supports_d_type(self.home)
        if not self.supports_d_type:
            raise NotSupported(
                f"overlay: the backing {self.backing_fs} filesystem is formatted without "
                "d_type support, which leads to incorrect behavior. Reformat the filesystem "
                "with ftype=1 to enable d_type support. Running without d_type is not supported.",
                message="driver not supported",
            )

    def __repr__(self) -> str:
        return f"<OverlayDriver {self.home!r}>"

    # -- start-up ----------------------------------------------------------------------

    def _parse_options(self, options: Sequence[str]) -> None:
        """Go's ``parseOptions``; keys may carry ``overlay.``, ``overlay2.`` or ``.``."""
        for option in options:
            key, sep, value = option.partition("=")
            if not sep:
                raise InvalidOption(
                    f"unable to parse key/value option: {option}", message="invalid option"
                )
            key = key.strip()
            value = value.strip()
            trimmed = key.lower()
            for prefix in ("overlay.", "overlay2.", "."):
                trimmed = trimmed.removeprefix(prefix)
            if trimmed == "override_kernel_check":
                continue
            if trimmed == "mountopt":
                self.mount_options = value
            elif trimmed in ("size", "inodes"):
                amount = _ram_in_bytes(value) if trimmed == "size" else _parse_uint(value)
                if amount > 0:
                    raise NotSupported(
                        f"storage option overlay.{trimmed}",
                        message="project quotas (overlay.size, overlay.inodes) are not "
                        "supported by layerstore",
                    )
            elif trimmed in ("imagestore", "additionalimagestore"):
                for store in filter(None, value.split(",")):
                    self.image_stores.append(_checked_dir(store, "image path", "imageStore"))
            elif trimmed == "additionallayerstore":
                for entry in filter(None, value.split(",")):
                    self.layer_stores.append(_parse_layer_store(entry))
            elif trimmed == "mount_program":
                if value:
                    if not os.path.exists(value):
                        raise InvalidOption(
                            f"overlay: can't stat program {value!r}",
                            message="no such file or directory",
                        )
                    raise NotSupported(
                        f"overlay.mount_program={value}",
                        message="mount programs (fuse-overlayfs) are not supported: layerstore "
                        "mounts with the kernel's overlay filesystem",
                    )
            elif trimmed == "skip_mount_home":
                self.skip_mount_home = parse_bool(value)
            elif trimmed == "ignore_chown_errors":
                self.ignore_chown_errors = parse_bool(value)
            elif trimmed == "force_mask":
                if value not in ("shared", "private"):
                    try:
                        int(value, 8)
                    except ValueError:
                        raise InvalidOption(
                            f'strconv.ParseInt: parsing "{value}"', message="invalid syntax"
                        ) from None
                raise NotSupported(
                    "'force_mask' is supported only with 'mount_program'",
                    message="driver not supported",
                )
            else:
                raise InvalidOption(f"overlay: Unknown option {key}", message="invalid option")

    def _check_mount_program_flag(self) -> None:
        """Go's ``SupportsNativeOverlay``: ``.has-mount-program`` says whether the store
        was set up for a mount program; written (``false``) when missing."""
        flag_path = os.path.join(self.home, MOUNT_PROGRAM_FLAG)
        contents = (_read_text(flag_path) or "").strip()
        if contents == "true":
            import shutil

            if shutil.which("fuse-overlayfs"):
                raise NotSupported(
                    f"overlay store {self.home!r} is configured for a mount program "
                    "(fuse-overlayfs)",
                    message="driver not supported",
                )
            return  # Go, finding no mount program, also falls back to the kernel
        if contents == "false":
            return
        needs_program = _scan_for_mount_program_indicators(self.home)
        _write_text(flag_path, "true" if needs_program else "false", 0o600)
        if needs_program:
            raise NotSupported(
                f"overlay store {self.home!r} holds files written through a mount program",
                message="driver not supported",
            )

    def _make_home_private(self) -> None:
        """Go's ``mount.MakePrivate(home)``: bind-mount the home on itself unless it is
        a mount point already, then make it private. Skipped when layers are mounted
        below a home that is not a mount point (a store shared with
        ``skip_mount_home=true`` users): a bind mount would hide those mounts."""
        if self.skip_mount_home:
            return
        if not _is_mount_point(self.home):
            if [p for p in mount_points_under(self.home) if p != self.home]:
                log.debug("not bind-mounting %s: layers are mounted below it", self.home)
                return
            sys_mount(self.home, self.home, "none", _MS_BIND, "")
            self._home_private = False
        if not self._home_private:
            sys_mount("", self.home, "none", _MS_PRIVATE, "")
            self._home_private = True

    def cleanup(self) -> bool:
        """Go's ``Cleanup`` (store shutdown): remove ``staging/`` and detach the home's
        bind mount. The home stays mounted while any layer below it is mounted (Go's
        store refuses to shut down then). Returns whether the home was unmounted."""
        if self.read_only:
            return False
        from layerstore.staging import prune_staging

        prune_staging(self.staging_roots())
        if self.skip_mount_home:
            return False
        if [p for p in mount_points_under(self.home) if p != self.home]:
            return False
        try:
            sys_unmount(self.home, _MNT_DETACH)
        except OSError as e:
            if e.errno not in (errno.EINVAL, errno.ENOENT):
                raise
            return False
        finally:
            self._home_private = False
        return True

    # -- paths -------------------------------------------------------------------------

    def _dir2(self, id: str) -> tuple[str, bool]:
        """Go's ``dir2``: ``(path, in an additional image store)``."""
        own = os.path.join(self.home, id)
        if not os.path.exists(own):
            for store in self.image_stores:
                candidate = os.path.join(store, self.name, id)
                if os.path.exists(candidate):
                    return candidate, True
        return own, False

    def _dir(self, id: str) -> str:
        return self._dir2(id)[0]

    def layer_dir(self, id: str) -> str:
        """Go's ``Dir``: ``G/overlay/<id>`` (the layer's files are in its ``diff/``)."""
        return self._dir(id)

    def apply_root(self, id: str) -> str:
        """Where a diff is extracted: the layer's ``diff/`` (Go's ``getDiffPath``: for a
        layer of an additional layer store, the store's ``diff`` it links to)."""
        return _redirect_additional(os.path.join(self._dir(id), "diff"))

    def diff_roots(self, id: str) -> list[str]:
        """The layer's ``diff/`` then its lowers' ``diff/`` dirs, uppermost first: the file
        sources for tar-split assembly and for changes (Go's ``DiffGetter``)."""
        return [self.apply_root(id), *(_redirect_additional(d) for d in self._lower_dirs(id))]

    # -- staging (a layer's files made without the store lock) ------------------------

    def staging_root(self, writeable: bool = False) -> str:
        """``G/overlay/staging``, as Go (whose ``Cleanup`` prunes unlocked ones)."""
        del writeable
        return os.path.join(self.home, STAGING_DIR)

    def staging_roots(self) -> list[str]:
        return [self.staging_root()]

    def prepare_staging(
        self,
        target: str,
        parent: str | None,
        *,
        uid_map: Sequence[IDMap] = (),
        gid_map: Sequence[IDMap] = (),
    ) -> None:
        """Make ``target`` as :meth:`create` makes ``diff/``: the parent's diff mode and
        the owner of the parent's layer dir, else 0555 and the mapped root."""
        if self.read_only:
            raise NotSupported(f"staging {target!r}", message="the driver is read-only")
        uid, gid, perms = self._new_diff_attrs(parent, uid_map, gid_map)
        os.mkdir(target, 0o700)
        self._mkdir_owned(target, perms, uid, gid)
        os.chmod(target, perms)

    def create_from_staging(
        self,
        id: str,
        parent: str | None,
        staged: str,
        *,
        mount_label: str = "",
        uid_map: Sequence[IDMap] = (),
        gid_map: Sequence[IDMap] = (),
        storage_opt: Mapping[str, str] | None = None,
        writeable: bool = False,
        root_dir_mode: int | None = None,
    ) -> None:
        """:meth:`create`, then the staged dir replaces the empty ``diff/`` with one
        rename (Go's ``ApplyDiffFromStagingDirectory``; without a root dir mode from the
        differ, the staged dir takes the parent's ``diff`` mode)."""
        self.create(
            id,
            parent,
            mount_label=mount_label,
            uid_map=uid_map,
            gid_map=gid_map,
            storage_opt=storage_opt,
            writeable=writeable,
        )
        try:
            diff = os.path.join(self._dir(id), "diff")
            if root_dir_mode is not None:
                os.chmod(staged, root_dir_mode)
            elif parent:
                os.chmod(staged, stat.S_IMODE(os.stat(self.apply_root(parent)).st_mode))
            os.rmdir(diff)
            os.rename(staged, diff)
        except BaseException:
            self.remove(id)
            raise

    # -- additional layer stores (lazily pulled layers, used in place) -----------------

    def lookup_additional_layer(self, toc_digest: str, ref: str = "") -> AdditionalLayer:
        """Go's ``LookupAdditionalLayer``: the layer ``<store>/[base64(ref)/]<digest>/``
        with ``diff``, ``info`` and ``blob`` in the first additional layer store that has
        it; LayerUnknown when none does. Tells the store it is used (the ``use`` file)."""
        import base64

        ref_elem = base64.b64encode(ref.encode()).decode()
        for path, with_ref in self.layer_stores:
            target = (
                os.path.join(path, ref_elem, toc_digest)
                if with_ref
                else os.path.join(path, toc_digest)
            )
            if all(os.path.exists(os.path.join(target, n)) for n in ("diff", "info", "blob")):
                _notify_use(target)
                return AdditionalLayer(target, self)
        raise LayerUnknown(
            f"additional layer ({toc_digest!r}, {ref!r}) not found", message="layer not known"
        )

    def lookup_additional_layer_by_id(self, id: str) -> AdditionalLayer:
        """Go's ``LookupAdditionalLayerByID``: the additional layer a layer was created
        from (its ``additionallayer`` file); LayerUnknown for an ordinary layer."""
        path = _read_text(os.path.join(self._dir(id), ADDITIONAL_LAYER_FILE))
        if path is None:
            raise LayerUnknown(f"layer {id!r} is not from an additional layer store")
        _notify_use(path)
        return AdditionalLayer(path, self)

    def is_additional_layer(self, id: str) -> bool:
        return os.path.exists(os.path.join(self._dir(id), ADDITIONAL_LAYER_FILE))

    def _lower_dirs(self, id: str) -> list[str]:
        """Go's ``getLowerDirs``: the lowers' ``diff`` dirs, resolved through ``l/``."""
        lowers = _read_text(os.path.join(self._dir(id), LOWER_FILE))
        if lowers is None:
            return []
        result: list[str] = []
        for short in lowers.split(":"):
            if not short:
                continue
            link = self._dir(short)
            try:
                target = os.readlink(link)
            except FileNotFoundError:
                log.warning("Can't read link %r because it does not exist; recreating", link)
                self.recreate_symlinks()
                target = os.readlink(link)
            # "../<id>/diff" relative to l/: that layer's diff, here or in an image store
            result.append(self._dir(os.path.normpath(os.path.join(LINK_DIR, target))))
        return result

    # -- lifecycle ---------------------------------------------------------------------

    def create(
        self,
        id: str,
        parent: str | None,
        *,
        mount_label: str = "",
        uid_map: Sequence[IDMap] = (),
        gid_map: Sequence[IDMap] = (),
        storage_opt: Mapping[str, str] | None = None,
        writeable: bool = False,
    ) -> None:
        """Go's ``Create``/``CreateReadWrite``: the layer dir, an empty ``diff/``, the
        short link, ``work/``, ``merged/``, and ``empty/`` or the ``lower`` file."""
        if storage_opt:
            if writeable:
                raise NotSupported(
                    "--storage-opt is supported only for overlay over xfs with 'pquota' "
                    "mount option",
                    message="driver not supported",
                )
            for key in storage_opt:
                if key.lower() in ("size", "inodes"):
                    raise InvalidOption(
                        f"--storage-opt {key.lower()} is only supported for ReadWrite Layers",
                        message="invalid option",
                    )
                raise InvalidOption(f"unknown option {key}", message="invalid option")
        if self.read_only:
            raise NotSupported(f"creating layer {id!r}", message="the driver is read-only")
        layer = os.path.join(self.home, id)
        _mkdir_all_as(os.path.join(self.home, LINK_DIR), 0o755, 0, 0)
        dir_uid, dir_gid = mapped_root(uid_map, gid_map)
        root_uid, root_gid, perms = self._new_diff_attrs(parent, uid_map, gid_map)
        if os.path.lexists(layer):
            log.warning(
                "Trying to create a layer %r while directory %r already exists; removing it first",
                id,
                layer,
            )
            self.remove(id)
        _mkdir_as(layer, 0o700, dir_uid, dir_gid)
        link_path = ""
        try:
            self._mkdir_owned(os.path.join(layer, "diff"), perms, root_uid, root_gid)
            link_id = _generate_link_id()
            link_path = os.path.join(self.home, LINK_DIR, link_id)
            os.symlink(os.path.join("..", id, "diff"), link_path)
            _write_text(os.path.join(layer, "link"), link_id, 0o644)
            self._mkdir_owned(os.path.join(layer, "work"), 0o700, root_uid, root_gid)
            self._mkdir_owned(os.path.join(layer, "merged"), 0o700, root_uid, root_gid)
            if parent is None:
                self._mkdir_owned(os.path.join(layer, "empty"), 0o700, root_uid, root_gid)
                return
            lower = self._lower_of_child(parent)
            if lower:
                _write_text(os.path.join(layer, LOWER_FILE), lower, 0o666)
        except BaseException:
            if link_path:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(link_path)
            remove_tree(layer)
            raise

    def _new_diff_attrs(
        self, parent: str | None, uid_map: Sequence[IDMap], gid_map: Sequence[IDMap]
    ) -> tuple[int, int, int]:
        """Owner and mode of a new layer's ``diff/`` (Go's ``create``): the owner of the
        parent's layer directory and the mode of its ``diff/``, else the mapped root and
        0555. LayerUnknown when the parent's directory is gone."""
        uid, gid = mapped_root(uid_map, gid_map)
        if not parent:
            return uid, gid, DEFAULT_PERMS
        parent_dir = self._dir(parent)
        try:
            st = os.stat(parent_dir)
        except FileNotFoundError:
            raise LayerUnknown(
                f"overlay parent layer directory {parent_dir!r}", message="layer not known"
            ) from None
        perms = stat.S_IMODE(os.stat(os.path.join(parent_dir, "diff")).st_mode) & 0o777
        return st.st_uid, st.st_gid, perms

    def _mkdir_owned(self, path: str, mode: int, uid: int, gid: int) -> None:
        try:
            _mkdir_as(path, mode, uid, gid)
        except PermissionError:
            if not self.ignore_chown_errors or not os.path.isdir(path):
                raise

    def _lower_of_child(self, parent: str) -> str:
        """Go's ``getLower``: ``l/<parent link>`` then the parent's own lowers."""
        parent_dir = self._dir(parent)
        os.lstat(parent_dir)
        link = _read_text(os.path.join(parent_dir, "link"))
        if link is None:
            log.warning(
                "Can't read parent link %r because it does not exist; recreating the links",
                os.path.join(parent_dir, "link"),
            )
            self.recreate_symlinks()
            link = _read_text(os.path.join(parent_dir, "link"))
            if link is None:
                raise FileNotFoundError(
                    errno.ENOENT, "parent layer has no link file", os.path.join(parent_dir, "link")
                )
        lowers = [f"{LINK_DIR}/{link}"]
        parent_lower = _read_text(os.path.join(parent_dir, LOWER_FILE))
        if parent_lower is not None:
            lowers.extend(parent_lower.split(":"))
        if len(lowers) > MAX_DEPTH:
            raise InvalidOption(
                f"layer {parent!r} already has {len(lowers) - 1} lowers",
                message="max depth exceeded",
            )
        return ":".join(lowers)

    def create_from_template(
        self,
        id: str,
        template: str,
        *,
        parent: str | None,
        mount_label: str = "",
        uid_map: Sequence[IDMap] = (),
        gid_map: Sequence[IDMap] = (),
        storage_opt: Mapping[str, str] | None = None,
        writeable: bool = False,
    ) -> None:
        """Go's ``CreateFromTemplate``: a new layer on top of the template, so it starts
        with the template's whole content and an empty ``diff/``."""
        self.create(
            id,
            template,
            mount_label=mount_label,
            uid_map=uid_map,
            gid_map=gid_map,
            storage_opt=storage_opt,
            writeable=writeable,
        )

    def remove(self, id: str) -> None:
        """Go's ``Remove``: the ``l/`` link first, then the layer dir, unmounting
        anything still mounted inside it."""
        if self.read_only:
            raise NotSupported(f"removing layer {id!r}", message="the driver is read-only")
        layer = os.path.join(self.home, id)
        link = _read_text(os.path.join(layer, "link"))
        if link:
            link_path = os.path.join(self.home, LINK_DIR, link)
            try:
                remove_tree(link_path)
            except OSError as e:
                log.debug("Failed to remove link %r: %s", link_path, e)
        self._refs.forget(layer + "/")
        additional = _read_text(os.path.join(layer, ADDITIONAL_LAYER_FILE))
        if additional:
            _notify_release(additional)
        if not os.path.lexists(layer):
            return
        _unmount_all_under(layer)
        remove_tree(layer)

    def exists(self, id: str) -> bool:
        return os.path.exists(self._dir(id))

    def list_layers(self) -> list[str]:
        """The layer dirs of the home (64 hex digits; not ``l``, ``staging``, ...)."""
        try:
            with os.scandir(self.home) as it:
                return sorted(
                    e.name
                    for e in it
                    if _HEX64().fullmatch(e.name) and e.is_dir(follow_symlinks=False)
                )
        except FileNotFoundError:
            return []

    # -- mounting ----------------------------------------------------------------------

    def get(self, id: str, options: MountOptions) -> str:
        """Mount the layer on ``<dir>/merged`` and return that path (Go's ``Get``)."""
        layer, in_image_store = self._dir2(id)
        if not os.path.isdir(layer):
            raise LayerUnknown(f"overlay layer directory {layer!r}", message="layer not known")
        read_write = not in_image_store and not os.path.islink(os.path.join(layer, "diff"))
        opts = [o for o in options.options if o] or [o for o in self.mount_options.split(",") if o]
        if not self.using_metacopy:
            opts = [o for o in opts if o != "metacopy=on"]
        if "ro" in opts:
            read_write = False
        flags, extra = parse_mount_data(opts)  # validates before anything changes
        lower_text = _read_text(os.path.join(layer, LOWER_FILE)) or ""
        shorts = [s for s in lower_text.split(":") if s]
        if len(shorts) > MAX_DEPTH:
            raise InvalidOption(
                f"layer {id!r} has {len(shorts)} lowers", message="max depth exceeded"
            )

        abs_lowers: list[str] = []
        perms: int | None = None
        n = 1
        while os.path.isdir(os.path.join(layer, f"diff{n}")):  # left by update_id_map
            if perms is None:
                perms = stat.S_IMODE(os.stat(os.path.join(layer, f"diff{n}")).st_mode)
            abs_lowers.append(os.path.join(layer, f"diff{n}"))
            n += 1
        rel_lowers: list[str] = [os.path.relpath(p, self.home) for p in abs_lowers]
        for short in shorts:
            lower, lower_st = self._resolve_lower(short)
            if perms is None:
                perms = stat.S_IMODE(lower_st.st_mode)
            rel = short if lower == os.path.join(self.home, short) else lower
            abs_lowers.append(lower)
            rel_lowers.append(rel)
            n = 1
            while os.path.isdir(f"{lower}/../diff{n}"):  # dumbJoin: ".." after the link
                abs_lowers.append(f"{lower}/../diff{n}")
                rel_lowers.append(f"{rel}/../diff{n}")
                n += 1
        if not abs_lowers:
            abs_lowers.append(os.path.join(layer, "empty"))
            rel_lowers.append(os.path.relpath(abs_lowers[0], self.home))

        diff_dir = os.path.join(layer, "diff")
        if not os.path.isdir(diff_dir):
            os.makedirs(diff_dir, DEFAULT_PERMS if perms is None else perms, exist_ok=True)
        merged = os.path.join(layer, "merged")
        with contextlib.suppress(FileExistsError):
            os.mkdir(merged, 0o700)
        if self._refs.increment(merged) > 1:
            return merged
        try:
            self._make_home_private()
        except BaseException:
            self._refs.decrement(merged)
            raise
        try:
            with contextlib.suppress(FileNotFoundError):
                remove_tree(os.path.join(layer, "work", "work", "incompat", "volatile"))
            data = self._mount_data(
                read_write,
                abs_lowers,
                diff_dir,
                os.path.join(layer, "work"),
                extra,
                options.mount_label,
            )
            page = os.sysconf("SC_PAGESIZE")
            if len(data) < page:
                self._mount(merged, flags, data)
            else:
                rel_upper = os.path.relpath(diff_dir, self.home)
                rel_work = os.path.relpath(os.path.join(layer, "work"), self.home)
                rel_data = self._mount_data(
                    read_write, rel_lowers, rel_upper, rel_work, extra, options.mount_label
                )
                rel_merged = os.path.relpath(merged, self.home)
                if len(rel_data) < page:
                    self._mount(rel_merged, flags, rel_data, relative=True)
                else:  # too long even so: one fsconfig(2) call per lower
                    if not read_write:
                        rel_lowers, rel_upper, rel_work = [rel_upper, *rel_lowers], "", ""
                    self._mount_by_fs_context(
                        rel_merged, rel_lowers, rel_upper, rel_work, opts, options.mount_label
                    )
        except BaseException:
            if self._refs.decrement(merged) <= 0:
                with contextlib.suppress(OSError):
                    sys_unmount(merged, 0)
            raise
        return merged

    @staticmethod
    def _mount_data(
        read_write: bool, lowers: list[str], diff: str, work: str, extra: str, label: str
    ) -> str:
        if read_write:
            data = f"lowerdir={':'.join(lowers)},upperdir={diff},workdir={work}"
        else:
            data = f"lowerdir={diff}:{':'.join(lowers)}"
        if extra:
            data += "," + extra
        if label:
            data += f',context="{label}"'  # go-selinux FormatMountLabel
        return data

    def _mount(self, target: str, flags: int, data: str, relative: bool = False) -> None:
        try:
            if relative:
                _mount_in_dir(self.home, "overlay", target, "overlay", flags, data)
            else:
                sys_mount("overlay", target, "overlay", flags, data)
        except OSError as e:
            raise OSError(
                e.errno,
                f"creating overlay mount to {target}, mount_data={data!r}: {e.strerror}",
                os.path.join(self.home, target),
            ) from e

    def _mount_by_fs_context(
        self,
        target: str,
        lowers: list[str],
        upper: str,
        work: str,
        opts: list[str],
        label: str,
    ) -> None:
        """The new mount API (Linux 6.8+ for ``lowerdir+``), paths relative to the home:
        no page limit on the number of lowers, unlike mount(2) (and Go)."""
        params: list[tuple[str, str | None]] = [("source", "overlay")]
        params += [("lowerdir+", lower) for lower in lowers]
        if upper:
            params += [("upperdir", upper), ("workdir", work)]
        attrs = 0
        for option in opts:
            if option in _MOUNT_ATTRS:
                attrs |= _MOUNT_ATTRS[option]
            elif option in ("sync", "dirsync", "mand"):
                params.append((option, None))  # superblock flags, by name
            elif option not in _MOUNT_FLAGS:  # the rest are defaults ("rw", "dev", ...)
                key, sep, value = option.partition("=")
                params.append((key, value if sep else None))
        if label:
            params.append(("context", label))
        try:
            _mount_in_dir(self.home, "", target, "", 0, "", fs_context=(params, attrs))
        except OSError as e:
            raise OSError(
                e.errno,
                f"creating overlay mount to {target} with {len(lowers)} lowers: {e.strerror}",
                os.path.join(self.home, target),
            ) from e

    def _resolve_lower(self, short: str) -> tuple[str, os.stat_result]:
        """A ``lower`` entry (``l/<link>``) as a path: in our home, else in an additional
        image store; missing links are recreated once, as Go does."""
        own = os.path.join(self.home, short)
        try:
            return own, os.stat(own)
        except FileNotFoundError:
            pass
        for store in self.image_stores:
            candidate = os.path.join(store, self.name, short)
            with contextlib.suppress(FileNotFoundError):
                return candidate, os.stat(candidate)
        log.warning("Can't stat lower layer %r because it does not exist; recreating", own)
        self.recreate_symlinks()
        try:
            return own, os.stat(own)
        except FileNotFoundError:
            raise LayerUnknown(
                f"can't stat lower layer {own!r}", message="layer not known"
            ) from None

    def put(self, id: str) -> None:
        """Go's ``Put``: drop one in-process reference; at zero, detach the mount and
        remove ``merged/``. Not mounted (ENOENT/EINVAL) is fine."""
        layer = self._dir(id)
        os.stat(layer)  # FileNotFoundError when the layer is gone
        merged = os.path.join(layer, "merged")
        if self._refs.decrement(merged) > 0:
            return
        mapped = os.path.join(self.home, id, "mapped")
        if os.path.isdir(mapped):
            _unmount_all_under(mapped)
        try:
            sys_unmount(merged, _MNT_DETACH)
        except OSError as e:
            if e.errno not in (errno.EINVAL, errno.ENOENT):
                raise
        try:
            os.rmdir(merged)
        except OSError as e:
            log.debug("Failed to remove mountpoint %s overlay: %s - %s", id, merged, e)

    # -- information -------------------------------------------------------------------

    @property
    def using_metacopy(self) -> bool:
        """Whether copy-ups are metadata-only (module default or ``metacopy=on``)."""
        opts = self.mount_options.split(",")
        if "metacopy=off" in opts:
            return False
        return "metacopy=on" in opts or _kernel_param("metacopy") in ("Y", "on")

    @property
    def native_diff(self) -> bool:
        """Whether ``diff/`` alone describes the layer: no metacopy, no redirect_dir."""
        opts = self.mount_options.split(",")
        redirect = next(
            (o.partition("=")[2] for o in opts if o.startswith("redirect_dir=")),
            _kernel_param("redirect_dir"),
        )
        return not self.using_metacopy and redirect in ("", "N", "off", "nofollow", "follow")

    def status(self) -> list[tuple[str, str]]:
        """Go's ``Status()`` pairs."""
        return [
            ("Backing Filesystem", self.backing_fs),
            ("Supports d_type", _go_bool(self.supports_d_type)),
            ("Native Overlay Diff", _go_bool(self.native_diff)),
            ("Using metacopy", _go_bool(self.using_metacopy)),
        ]

    def metadata(self, id: str) -> dict[str, str]:
        """Go's ``Metadata``: WorkDir, MergedDir, UpperDir and (children) LowerDir."""
        layer = self._dir(id)
        os.stat(layer)
        meta = {
            "WorkDir": os.path.join(layer, "work"),
            "MergedDir": os.path.join(layer, "merged"),
            "UpperDir": os.path.join(layer, "diff"),
        }
        lowers = self._lower_dirs(id)
        if lowers:
            meta["LowerDir"] = ":".join(lowers)
        return meta

    # -- repairs -----------------------------------------------------------------------

    def recreate_symlinks(self) -> None:
        """Go's ``recreateSymlinks``: make ``l/`` and the layers' ``link`` files agree
        again (after a crash lost some of them)."""
        link_dir = os.path.join(self.home, LINK_DIR)
        _mkdir_all_as(link_dir, 0o755, 0, 0)
        with os.scandir(self.home) as it:
            layers = [
                e.name
                for e in it
                if e.name not in (LINK_DIR, STAGING_DIR, "tempdirs")
                and e.is_dir(follow_symlinks=False)
            ]
        errors: list[str] = []
        for _ in range(10):
            errors = []
            progress = False
            for layer in layers:
                data = _read_text(os.path.join(self.home, layer, "link"))
                if data is None:
                    errors.append(f"reading name of symlink for {layer!r}")
                    continue
                link_path = os.path.join(link_dir, data.strip("\n"))
                if not os.path.lexists(link_path):
                    os.symlink(os.path.join("..", layer, "diff"), link_path)
                    progress = True
            with os.scandir(link_dir) as it:
                links = [e.name for e in it]
            for name in links:
                target = os.readlink(os.path.join(link_dir, name))
                parts = target.split("/")
                if len(parts) != 3 or parts[0] != ".." or parts[2] != "diff":
                    errors.append(f"link target of {name!r} looks weird: {target!r}")
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(os.path.join(link_dir, name))
                        progress = True
                    continue
                link_file = os.path.join(self.home, parts[1], "link")
                if _read_text(link_file) != name and os.path.isdir(os.path.dirname(link_file)):
                    _write_text(link_file, name, 0o644)
                    progress = True
            if not progress:
                break
        if errors:
            log.warning("recreating overlay links: %s", "; ".join(errors))

    def update_id_map(
        self,
        id: str,
        old_uid_map: Sequence[IDMap],
        old_gid_map: Sequence[IDMap],
        new_uid_map: Sequence[IDMap],
        new_gid_map: Sequence[IDMap],
        mount_label: str = "",
    ) -> None:
        """Go's ``UpdateLayerIDMap``: chown through a mount (copying up what changes),
        then rotate ``diff`` to ``diff1``... and start a new empty ``diff``."""
        layer = self._dir(id)
        diff = os.path.join(layer, "diff")
        root_uid, root_gid = mapped_root(new_uid_map, new_gid_map)
        merged = self.get(id, MountOptions(mount_label, tuple(self.mount_options.split(","))))
        try:
            remap = _IDRemapper(old_uid_map, old_gid_map, new_uid_map, new_gid_map)
            remap.apply(merged, _lchown)
            stack = [merged]
            while stack:
                d = stack.pop()
                with os.scandir(d) as it:
                    for entry in it:
                        remap.apply(entry.path, _lchown)
                        if entry.is_dir(follow_symlinks=False):
                            stack.append(entry.path)
        finally:
            self.put(id)
        perms = stat.S_IMODE(os.stat(diff).st_mode)
        count = 0
        while os.path.exists(diff if count == 0 else f"{diff}{count}"):
            count += 1
        for i in range(count, 0, -1):
            os.rename(diff if i == 1 else f"{diff}{i - 1}", f"{diff}{i}")
        work = os.path.join(layer, "work")
        remove_tree(work)
        _mkdir_as(work, DEFAULT_PERMS, root_uid, root_gid)
        _mkdir_as(diff, perms, root_uid, root_gid)


# ---------------------------------------------------------------------------------------
# helpers of the driver


def _go_bool(value: bool) -> str:
    return "true" if value else "false"


def _lchown(path: str, uid: int, gid: int) -> None:
    os.lchown(path, uid, gid)


def _parse_uint(text: str) -> int:
    if not text.isdigit():
        raise InvalidOption(f'strconv.ParseUint: parsing "{text}"', message="invalid syntax")
    return int(text)


def _checked_dir(path: str, what: str, stat_name: str) -> str:
    """An additional store path: absolute and an existing directory (Go's checks)."""
    clean = os.path.normpath(path)
    if not os.path.isabs(clean):
        raise InvalidOption(
            f"overlay: {what} {clean!r} is not absolute.  Can not be relative",
            message="invalid option",
        )
    try:
        st = os.stat(clean)
    except OSError as e:
        raise InvalidOption(
            f"overlay: can't stat {stat_name} dir {clean}: {e.strerror}", message="invalid option"
        ) from None
    if not stat.S_ISDIR(st.st_mode):
        raise InvalidOption(
            f"overlay: {what} {clean!r} must be a directory", message="invalid option"
        )
    return clean


def _existing(path: str) -> str:
    """The nearest existing ancestor of ``path`` (for statfs before the home exists)."""
    while not os.path.exists(path):
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    return path


def _mkdir_all_as(path: str, mode: int, uid: int, gid: int) -> None:
    """Go's ``idtools.MkdirAllAs``: create missing dirs (through the umask), chown them."""
    if os.path.isdir(path):
        return
    parent = os.path.dirname(path)
    if parent != path:
        _mkdir_all_as(parent, mode, uid, gid)
    _mkdir_as(path, mode, uid, gid)


def _scan_for_mount_program_indicators(home: str) -> bool:
    """Go's ``scanForMountProgramIndicators``: ``.wh.`` files or fuse-overlayfs xattrs."""
    for root, dirs, files in os.walk(home):
        for name in (*dirs, *files):
            if name.startswith(WHITEOUT_PREFIX):
                return True
        try:
            names = os.listxattr(root, follow_symlinks=False)
        except OSError as e:
            if e.errno in (errno.ENOTSUP, errno.EOPNOTSUPP):
                continue
            raise
        if any(n.startswith(("user.fuseoverlayfs.", "user.containers.")) for n in names):
            return True
    return False


# ---------------------------------------------------------------------------------------
# additional layer stores


class AdditionalLayer:
    """A layer of an additional layer store (Go's ``graphdriver.AdditionalLayer``):
    ``<path>/diff`` its files, ``<path>/info`` its record as JSON, ``<path>/blob`` its
    tarball as pulled."""

    def __init__(self, path: str, driver: OverlayDriver) -> None:
        self.path = path
        self._driver = driver
        self._released = False

    def __repr__(self) -> str:
        return f"<AdditionalLayer {self.path!r}>"

    def info(self) -> IO[bytes]:
        """The ``info`` file, open (the caller closes it)."""
        return open(os.path.join(self.path, "info"), "rb")

    def blob(self) -> IO[bytes]:
        """The ``blob`` file, open (the caller closes it)."""
        return open(os.path.join(self.path, "blob"), "rb")

    def create_as(self, id: str, parent: str | None) -> None:
        """Go's ``CreateAs``: an ordinary layer dir whose ``diff`` is a symlink to the
        store's ``diff`` (used in place, never copied), marked ``additionallayer``."""
        d = self._driver
        d.create(id, parent)
        try:
            layer = d._dir(id)
            diff = os.path.join(layer, "diff")
            remove_tree(diff)
            _write_text(os.path.join(layer, ADDITIONAL_LAYER_FILE), self.path, 0o644)
            _notify_use(self.path)
            os.symlink(os.path.join(self.path, "diff"), diff)
        except BaseException:
            d.remove(id)
            raise

    def release(self) -> None:
        """Tell the store this handle is no longer used (once)."""
        if not self._released:
            self._released = True
            _notify_release(self.path)


def _parse_layer_store(entry: str) -> tuple[str, bool]:
    """``/path[:ref]`` of ``overlay.additionallayerstore`` (Go's syntax and checks)."""
    elems = entry.split(":")
    path = os.path.normpath(elems[0])
    if not os.path.isabs(path):
        raise InvalidOption(
            f"overlay: additionallayerstore path {path!r} is not absolute.  Can not be relative",
            message="invalid option",
        )
    try:
        st = os.stat(path)
    except OSError as e:
        raise InvalidOption(
            f"overlay: can't stat additionallayerstore dir: {e.strerror}",
            message="invalid option",
        ) from None
    if not stat.S_ISDIR(st.st_mode):
        raise InvalidOption(
            f"overlay: additionallayerstore path {path!r} must be a directory",
            message="invalid option",
        )
    with_ref = False
    for option in elems[1:]:
        if option != "ref":
            raise InvalidOption(
                f"overlay: additionallayerstore config {path!r} contains unknown option {option!r}",
                message="invalid option",
            )
        if with_ref:
            raise InvalidOption(
                f"overlay: additionallayerstore config of {path!r} contains {option!r} "
                "option twice",
                message="invalid option",
            )
        with_ref = True
    return path, with_ref


def _notify_use(path: str) -> None:
    """Go's ``notifyUseAdditionalLayer``: create and remove ``<layer>/use`` (a store
    that counts users answers ENOENT; a plain directory just sees a file come and go)."""
    use = os.path.join(path, "use")
    try:
        fd = os.open(use, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    except FileNotFoundError:
        return
    except OSError as e:
        log.debug("additional layer store %s: use notification failed: %s", path, e)
        return
    os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(use)


def _notify_release(path: str) -> None:
    """Go's ``notifyReleaseAdditionalLayer``: rmdir the layer dir (a store that counts
    users answers ENOENT; a plain non-empty directory stays)."""
    try:
        os.rmdir(path)
    except OSError as e:
        if e.errno != errno.ENOENT:
            log.debug("additional layer store %s: release notification: %s", path, e)


def _redirect_additional(diff: str) -> str:
    """Go's ``redirectDiffIfAdditionalLayer``: a ``diff`` that is a symlink (to an
    additional layer store) stands for its absolute target."""
    try:
        target = os.readlink(diff)
    except OSError:
        return diff
    if not os.path.isabs(target):
        raise OSError(errno.EINVAL, f"linkpath must be absolute (got: {target!r})", diff)
    return target
