"""The vfs driver: every layer is a plain directory ``G/vfs/dir/<id>`` (SPEC.md §1.4).

A base layer starts as an empty directory, mode 0555, owned by the layer's mapped root.
A child starts as a full copy of its parent: owners, modes, times (ns), xattrs, hard
links, symlinks, device nodes, FIFOs and sockets, with file data cloned (FICLONE) or
copied in the kernel (copy_file_range) where the filesystem allows. Nothing is ever
mounted: ``get`` returns the directory.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat

from layerstore.drivers.base import MountOptions, remove_tree
from layerstore.errors import InvalidOption, LayerUnknown, NotSupported
from layerstore.idtools import mapped_root

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence
    from typing import Final

    from layerstore.idtools import IDMap

__all__ = ["VfsDriver", "copy_tree", "parse_bool"]

_FICLONE: Final = 0x40049409
_COPY_CHUNK: Final = 1 << 30
_UNSUPPORTED: Final = frozenset(
    (errno.EXDEV, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EINVAL, errno.ENOSYS, errno.ENOTTY)
)


def parse_bool(text: str) -> bool:
    """Go's ``strconv.ParseBool``."""
    if text in ("1", "t", "T", "TRUE", "true", "True"):
        return True
    if text in ("0", "f", "F", "FALSE", "false", "False"):
        return False
    raise InvalidOption(f'strconv.ParseBool: parsing "{text}"', message="invalid syntax")


class VfsDriver:
    """containers/storage's vfs graph driver."""

    name = "vfs"
    whiteout_format = "vfs"

    def __init__(
        self,
        home: str,
        options: Sequence[str] = (),
        *,
        image_root: str | None = None,
        read_only: bool = False,
    ) -> None:
        self.home = os.path.abspath(home)
        self.image_root = os.path.abspath(image_root) if image_root else None
        self.additional_homes: list[str] = []
        self.ignore_chown_errors = False
        for option in options:
            key, sep, value = option.partition("=")
            if not sep:
                raise InvalidOption(
                    f"unable to parse key/value option: {option}", message="invalid option"
                )
            key = key.strip().lower()
            value = value.strip()
            if key in (".imagestore", "vfs.imagestore"):
                self.additional_homes.extend(h for h in value.split(",") if h)
            elif key == "vfs.mountopt":
                raise NotSupported(message="vfs driver does not support mount options")
            elif key in (".ignore_chown_errors", "vfs.ignore_chown_errors"):
                self.ignore_chown_errors = parse_bool(value)
            else:
                raise NotSupported(message=f"vfs driver does not support {key} options")
        if not read_only:
            os.makedirs(self.home, mode=0o700, exist_ok=True)
            try:  # noqa: SIM105 - contextlib is not imported for this
                os.mkdir(os.path.join(self.home, "dir"), 0o700)
            except FileExistsError:
                pass

    def __repr__(self) -> str:
        return f"<VfsDriver {self.home!r}>"

    # -- paths -------------------------------------------------------------------------

    def _own_dir(self, id: str, writeable: bool = True) -> str:
        base = os.path.basename(id)
        if not writeable and self.image_root:
            return os.path.join(self.image_root, self.name, "dir", base)
        return os.path.join(self.home, "dir", base)

    def _dir(self, id: str) -> str:
        """Go's ``dir2``: our home first, then the image store and additional homes."""
        own = self._own_dir(id)
        if os.path.lexists(own):
            return own
        candidates = list(self.additional_homes)
        if self.image_root:
            candidates.append(self.image_root)
        for home in candidates:
            candidate = os.path.join(home, self.name, "dir", os.path.basename(id))
            if os.path.isdir(candidate):
                return candidate
        return own

    def layer_dir(self, id: str) -> str:
        return self._dir(id)

    def apply_root(self, id: str) -> str:
        return self._dir(id)

    def diff_roots(self, id: str) -> list[str]:
        return [self._dir(id)]

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
        if storage_opt:
            raise NotSupported(message="--storage-opt is not supported for vfs")
        path = self._own_dir(id, writeable)
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        self.prepare_staging(path, parent, uid_map=uid_map, gid_map=gid_map)

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
        """vfs copies the template's tree, which already holds its parent's content."""
        self.create(
            id,
            template,
            mount_label=mount_label,
            uid_map=uid_map,
            gid_map=gid_map,
            storage_opt=storage_opt,
            writeable=writeable,
        )

    # -- staging (a layer's files made without the store lock) ------------------------

    def staging_root(self, writeable: bool = False) -> str:
        """``<home>/staging`` beside ``dir/`` (on the image store for read-only layers
        when there is one): the same filesystem as the layer's final directory, and a
        place Go's vfs driver never lists."""
        return os.path.join(
            os.path.dirname(os.path.dirname(self._own_dir("x", writeable))), "staging"
        )

    def staging_roots(self) -> list[str]:
        return sorted({self.staging_root(True), self.staging_root(False)})

    def prepare_staging(
        self,
        target: str,
        parent: str | None,
        *,
        uid_map: Sequence[IDMap] = (),
        gid_map: Sequence[IDMap] = (),
    ) -> None:
        """Make ``target`` as a new layer's tree (what :meth:`create` makes): empty
        (0555, the mapped root's) or a full copy of ``parent``. On failure ``target`` is
        not left behind (unless it was there before: FileExistsError)."""
        uid, gid = mapped_root(uid_map, gid_map)
        parent_dir = None
        if parent:
            parent_dir = self.get(parent, MountOptions())
            st = os.stat(parent_dir)
            uid, gid = st.st_uid, st.st_gid
        # A copy fills the directory first; copy_tree gives it the parent's mode last.
        os.mkdir(target, 0o700)
        try:
            self._chown(target, uid, gid)
            if parent_dir is not None:
                copy_tree(parent_dir, target, chown=self._chown)
            else:
                os.chmod(target, 0o555)
        except BaseException:
            remove_tree(target)
            raise

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
        """The layer's tree is the staged one (prepared for ``parent``): one rename."""
        if storage_opt:
            raise NotSupported(message="--storage-opt is not supported for vfs")
        path = self._own_dir(id, writeable)
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        if root_dir_mode is not None:
            os.chmod(staged, root_dir_mode)
        os.rename(staged, path)

    def remove(self, id: str) -> None:
        for path in {self._own_dir(id, True), self._own_dir(id, False)}:
            remove_tree(path)

    def exists(self, id: str) -> bool:
        return os.path.isdir(self._dir(id))

    def get(self, id: str, options: MountOptions) -> str:
        opts = options.options
        if len(opts) > 1 or (len(opts) == 1 and opts[0] != "ro"):
            raise NotSupported(message="vfs driver does not support mount options")
        path = self._dir(id)
        try:
            st = os.stat(path)
        except FileNotFoundError:
            raise LayerUnknown(f"vfs layer directory {path!r}", message="unknown layer") from None
        if not stat.S_ISDIR(st.st_mode):
            raise NotADirectoryError(errno.ENOTDIR, f"{path}: not a directory", path)
        return os.path.normpath(path)

    def put(self, id: str) -> None:
        """Nothing was mounted."""

    def list_layers(self) -> list[str]:
        root = os.path.join(self.home, "dir")
        try:
            with os.scandir(root) as it:
                return sorted(e.name for e in it if e.is_dir(follow_symlinks=False))
        except FileNotFoundError:
            return []

    def status(self) -> list[tuple[str, str]]:
        return []

    def update_id_map(
        self,
        id: str,
        old_uid_map: Sequence[IDMap],
        old_gid_map: Sequence[IDMap],
        new_uid_map: Sequence[IDMap],
        new_gid_map: Sequence[IDMap],
        mount_label: str = "",
    ) -> None:
        """Go's naive ``UpdateLayerIDMap``: ``ChownPathByMaps`` over the whole tree."""
        root = self.get(id, MountOptions(mount_label))
        remap = _IDRemapper(old_uid_map, old_gid_map, new_uid_map, new_gid_map)
        stack = [root]
        remap.apply(root, self._chown)
        while stack:
            d = stack.pop()
            with os.scandir(d) as it:
                for entry in it:
                    remap.apply(entry.path, self._chown)
                    if entry.is_dir(follow_symlinks=False):
                        stack.append(entry.path)

    def _chown(self, path: str, uid: int, gid: int) -> None:
        try:
            os.lchown(path, uid, gid)
        except OSError as e:
            if not self.ignore_chown_errors:
                raise OSError(e.errno, f"chown to {uid}:{gid}: {e.strerror}", path) from e


# ---------------------------------------------------------------------------------------
# id remapping (pkg/chrootarchive ChownPathByMaps)


def _overflow_id(kind: str) -> int:
    try:
        with open(f"/proc/sys/kernel/overflow{kind}") as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return 65534


def _lookup(value: int, maps: Sequence[IDMap], to_host: bool) -> int | None:
    if not maps:
        return value
    for m in maps:
        src, dst = (m.container_id, m.host_id) if to_host else (m.host_id, m.container_id)
        if src <= value < src + m.size:
            return dst + (value - src)
    return None


class _IDRemapper:
    def __init__(
        self,
        old_uid: Sequence[IDMap],
        old_gid: Sequence[IDMap],
        new_uid: Sequence[IDMap],
        new_gid: Sequence[IDMap],
    ) -> None:
        self.old_uid, self.old_gid = tuple(old_uid), tuple(old_gid)
        self.new_uid, self.new_gid = tuple(new_uid), tuple(new_gid)
        self.overflow_uid = _overflow_id("uid")
        self.overflow_gid = _overflow_id("gid")

    def apply(self, path: str, chown: Callable[[str, int, int], None]) -> None:
        st = os.lstat(path)
        uid, gid = st.st_uid, st.st_gid
        cuid = _lookup(uid, self.old_uid, to_host=False)
        cgid = _lookup(gid, self.old_gid, to_host=False)
        if cuid is None or cgid is None:
            if uid != 0 or gid != 0:
                raise OSError(
                    errno.EINVAL,
                    f"mapping host ID pair {uid}:{gid} to container: "
                    "cannot be mapped to a container ID",
                    path,
                )
            cuid, cgid = uid, gid
        huid = _lookup(cuid, self.new_uid, to_host=True)
        hgid = _lookup(cgid, self.new_gid, to_host=True)
        new_uid = self.overflow_uid if huid is None else huid
        new_gid = self.overflow_gid if hgid is None else hgid
        if (new_uid, new_gid) == (uid, gid):
            return
        is_link = stat.S_ISLNK(st.st_mode)
        cap = None
        if not is_link:
            try:  # noqa: SIM105 - contextlib is not imported for this
                cap = os.getxattr(path, "security.capability", follow_symlinks=False)
            except OSError:
                pass
        chown(path, new_uid, new_gid)
        if not is_link:
            os.chmod(path, stat.S_IMODE(st.st_mode))  # chown clears setuid/setgid
            if cap is not None:
                os.setxattr(path, "security.capability", cap, follow_symlinks=False)


# ---------------------------------------------------------------------------------------
# the tree copy (drivers/copy DirCopy with content and xattrs)


class _DataCopier:
    """Copies file data with the fastest method the filesystem accepts."""

    def __init__(self) -> None:
        self.clone = True
        self.file_range = True

    def copy(self, src: str, dst: str, size: int) -> None:
        sfd = os.open(src, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        try:
            dfd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            try:
                self._copy_fds(sfd, dfd, size)
            finally:
                os.close(dfd)
        finally:
            os.close(sfd)

    def _copy_fds(self, sfd: int, dfd: int, size: int) -> None:
        if size == 0:
            return
        if self.clone:
            try:
                fcntl.ioctl(dfd, _FICLONE, sfd)
                return
            except OSError as e:
                if e.errno not in _UNSUPPORTED:
                    raise
                self.clone = False
        if self.file_range:
            try:
                while os.copy_file_range(sfd, dfd, _COPY_CHUNK) > 0:
                    pass
                return
            except OSError as e:
                if e.errno not in _UNSUPPORTED:
                    raise
                self.file_range = False
                os.lseek(sfd, 0, os.SEEK_SET)
                os.lseek(dfd, 0, os.SEEK_SET)
                os.ftruncate(dfd, 0)
        while True:
            chunk = os.read(sfd, 1 << 20)
            if not chunk:
                return
            view = memoryview(chunk)
            while view:
                view = view[os.write(dfd, view) :]


def _copy_xattrs(src: str, dst: str, is_link: bool) -> None:
    try:
        names = os.listxattr(src, follow_symlinks=False)
    except OSError as e:
        if e.errno in (errno.ENOTSUP, errno.EOPNOTSUPP):
            return
        raise
    for name in names:
        value = os.getxattr(src, name, follow_symlinks=False)
        try:
            os.setxattr(dst, name, value, follow_symlinks=False)
        except OSError as e:
            if e.errno in (errno.ENOTSUP, errno.EOPNOTSUPP) or (is_link and e.errno == errno.EPERM):
                continue
            raise OSError(e.errno, f"copying xattr {name}: {e.strerror}", dst) from e


def copy_tree(
    src: str,
    dst: str,
    *,
    chown: Callable[[str, int, int], None] | None = None,
) -> None:
    """Copy the tree ``src`` into the existing directory ``dst`` with all metadata.

    ``dst`` itself takes the owner, mode, xattrs and times of ``src``. Hard links among
    regular files stay hard links; directory modes and times are set last.
    """
    do_chown = chown or (lambda p, u, g: os.lchown(p, u, g))
    copier = _DataCopier()
    hardlinks: dict[tuple[int, int], str] = {}
    dirs: list[tuple[str, os.stat_result]] = []

    root_st = os.lstat(src)
    do_chown(dst, root_st.st_uid, root_st.st_gid)
    _copy_xattrs(src, dst, False)
    dirs.append((dst, root_st))

    stack = [(src, dst)]
    while stack:
        sdir, ddir = stack.pop()
        with os.scandir(sdir) as it:
            entries = sorted(it, key=lambda e: e.name)
        for entry in entries:
            sp = entry.path
            dp = os.path.join(ddir, entry.name)
            st = entry.stat(follow_symlinks=False)
            mode = st.st_mode
            fmt = stat.S_IFMT(mode)
            if fmt == stat.S_IFDIR:
                os.mkdir(dp, 0o700)
                stack.append((sp, dp))
            elif fmt == stat.S_IFREG:
                key = (st.st_dev, st.st_ino)
                linked = hardlinks.get(key) if st.st_nlink > 1 else None
                if linked is not None:
                    os.link(linked, dp)
                    continue  # metadata is the inode's, already copied
                copier.copy(sp, dp, st.st_size)
                if st.st_nlink > 1:
                    hardlinks[key] = dp
            elif fmt == stat.S_IFLNK:
                os.symlink(os.readlink(sp), dp)
            elif fmt in (stat.S_IFCHR, stat.S_IFBLK):
                os.mknod(dp, fmt | stat.S_IMODE(mode), st.st_rdev)
            elif fmt in (stat.S_IFIFO, stat.S_IFSOCK):
                os.mknod(dp, fmt | stat.S_IMODE(mode))
            else:  # pragma: no cover - no other file types exist on Linux
                continue
            is_link = fmt == stat.S_IFLNK
            do_chown(dp, st.st_uid, st.st_gid)
            _copy_xattrs(sp, dp, is_link)
            if fmt == stat.S_IFDIR:
                dirs.append((dp, st))
                continue
            if not is_link:
                os.chmod(dp, stat.S_IMODE(mode))
            os.utime(dp, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)
    for path, st in reversed(dirs):
        os.chmod(path, stat.S_IMODE(st.st_mode))
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
