"""UID/GID mappings, as containers/storage's pkg/idtools (SPEC.md §6.6)."""

from __future__ import annotations

from layerstore.errors import InvalidIDMapping

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing
if TYPE_CHECKING:
    from collections.abc import Sequence
    from dataclasses import dataclass
else:  # the same records without importing dataclasses (slow to import)
    from layerstore._dataclass import dataclass


@dataclass(frozen=True, slots=True)
class IDMap:
    """Container range ``[container_id, container_id+size)`` maps to ``[host_id, ...)``."""

    container_id: int
    host_id: int
    size: int

    def to_json(self) -> dict[str, int]:
        return {"container_id": self.container_id, "host_id": self.host_id, "size": self.size}

    @classmethod
    def from_json(cls, obj: object) -> IDMap:
        if not isinstance(obj, dict):
            raise InvalidIDMapping(f"ID map entry {obj!r} is not an object")
        try:
            return cls(int(obj["container_id"]), int(obj["host_id"]), int(obj["size"]))
        except (KeyError, TypeError, ValueError) as e:
            raise InvalidIDMapping(f"ID map entry {obj!r}: {e}") from None


def parse_id_maps(text: str) -> tuple[IDMap, ...]:
    """Parse the CLI syntax ``container:host:size[,container:host:size...]``."""
    maps = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        fields = part.split(":")
        if len(fields) != 3:
            raise InvalidIDMapping(f"ID map {part!r}: want container:host:size")
        try:
            c, h, s = (int(f) for f in fields)
        except ValueError:
            raise InvalidIDMapping(f"ID map {part!r}: not numbers") from None
        if c < 0 or h < 0 or s <= 0:
            raise InvalidIDMapping(f"ID map {part!r}: negative id or empty range")
        maps.append(IDMap(c, h, s))
    return tuple(maps)


def to_host(container_id: int, maps: Sequence[IDMap]) -> int:
    """Map a container id to the host; an empty map is the identity (Go's nil map)."""
    if not maps:
        return container_id
    for m in maps:
        if m.container_id <= container_id < m.container_id + m.size:
            return m.host_id + (container_id - m.container_id)
    raise InvalidIDMapping(f"container ID {container_id} cannot be mapped to a host ID")


def to_container(host_id: int, maps: Sequence[IDMap]) -> int:
    """Map a host id back into the container; an empty map is the identity."""
    if not maps:
        return host_id
    for m in maps:
        if m.host_id <= host_id < m.host_id + m.size:
            return m.container_id + (host_id - m.host_id)
    raise InvalidIDMapping(f"host ID {host_id} cannot be mapped to a container ID")


def mapped_root(uid_map: Sequence[IDMap], gid_map: Sequence[IDMap]) -> tuple[int, int]:
    """The host uid/gid that container root maps to (owner of a new layer's root)."""
    return to_host(0, uid_map), to_host(0, gid_map)
