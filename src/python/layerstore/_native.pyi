# Stubs of the private C++ module; keep in step with src/native/bindings.cpp.

from typing import Any

from typing_extensions import Buffer

class TruncIndex:
    def __init__(self, ids: list[str] = ...) -> None: ...
    def add(self, id: str) -> None: ...
    def delete(self, id: str) -> None: ...
    def get(self, prefix: str) -> str: ...
    def __contains__(self, id: str) -> bool: ...
    def __len__(self) -> int: ...
    def ids(self) -> list[str]: ...

# ---- apply (the layer apply pipeline) ----------------------------------------------
def apply_layer(
    source: int | Buffer,
    dest: str,
    *,
    tarsplit_fd: int,
    uid_map: list[tuple[int, int, int]] = ...,
    gid_map: list[tuple[int, int, int]] = ...,
    whiteout_format: str = "vfs",
    trusted_compressed_digest: str | None = None,
    ignore_chown_errors: bool = False,
    sync: bool = True,
    hash_thread: bool = True,
    block_size: int = 1048576,
    write_behind: bool = True,
) -> dict[str, Any]: ...

# ---- format: digests, compression, tar-split (digest/ compress/ tar/ tarsplit/) ------
def sha256(buffer: Buffer) -> str: ...
def crc64(buffer: Buffer) -> int: ...
def detect_compression(buffer: Buffer) -> int: ...
def compress_fd(
    in_fd: int, out_fd: int, compression: int, level: int = -1, threads: int = 0
) -> int: ...
def decompress_fd(in_fd: int, out_fd: int, compression: int = -1) -> int: ...
def assemble(
    tarsplit_path: str,
    roots: list[str],
    out_fd: int,
    compression: int,
    level: int = -1,
    threads: int = 0,
) -> int: ...
def tarsplit_disassemble(in_fd: int, out_gz_fd: int) -> None: ...

# ---- changes: change lists, diff sizes, the naive diff (changes/) -------------------
# mode "naive": new_root against old_root (None: an empty tree), sorted by path.
# mode "overlay": new_root is a layer's diff/, lower_roots its lower diffs (uppermost
# first), Go's walk order; old_root is not used. Kinds: 0 Modify, 1 Add, 2 Delete.
# parent_*_map default to the layer's maps. export_changes with no old_root (naive) writes
# the whole tree in walk order, as Go does for a base layer.
def changes(
    new_root: str,
    old_root: str | None,
    *,
    lower_roots: list[str] | None = None,
    mode: str = "naive",
    uid_map: list[tuple[int, int, int]] = ...,
    gid_map: list[tuple[int, int, int]] = ...,
    parent_uid_map: list[tuple[int, int, int]] | None = None,
    parent_gid_map: list[tuple[int, int, int]] | None = None,
) -> list[tuple[str, int]]: ...
def diff_size(
    new_root: str,
    old_root: str | None,
    *,
    lower_roots: list[str] | None = None,
    mode: str = "naive",
    uid_map: list[tuple[int, int, int]] = ...,
    gid_map: list[tuple[int, int, int]] = ...,
    parent_uid_map: list[tuple[int, int, int]] | None = None,
    parent_gid_map: list[tuple[int, int, int]] | None = None,
) -> int: ...
def export_changes(
    new_root: str,
    old_root: str | None,
    out_fd: int,
    *,
    mode: str = "naive",
    lower_roots: list[str] | None = None,
    uid_map: list[tuple[int, int, int]] = ...,
    gid_map: list[tuple[int, int, int]] = ...,
    parent_uid_map: list[tuple[int, int, int]] | None = None,
    parent_gid_map: list[tuple[int, int, int]] | None = None,
    compression: int = 0,
    level: int = -1,
    threads: int = -1,
) -> int: ...
