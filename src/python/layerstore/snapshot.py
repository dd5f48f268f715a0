"""The immutable :class:`Layer` snapshot handed to users, and how the store builds one.

Kept apart from :mod:`layerstore.layer` (the records and their codec) because a Layer
needs :mod:`datetime` and :mod:`enum`, which the commonest CLI calls (listing layers)
never touch: :meth:`LayerRecord.snapshot <layerstore.layer.LayerRecord.snapshot>`
imports this module on first use. ``layerstore.layer.Layer`` is this class too.
"""

from __future__ import annotations

from datetime import UTC, datetime
from types import MappingProxyType

from layerstore.archive import Compression
from layerstore.idtools import IDMap
from layerstore.layer import INCOMPLETE_FLAG, format_created, is_mapping, normalize_record

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from dataclasses import dataclass
    from typing import Any, Final
else:  # the same records without importing dataclasses (slow to import)
    from layerstore._dataclass import dataclass

__all__ = ["COMPRESSIONS", "EMPTY_FLAGS", "Layer", "freeze", "new_layer"]


def freeze(value: Any) -> Any:
    if isinstance(value, dict):
        return MappingProxyType({k: freeze(v) for k, v in value.items()})
    if isinstance(value, list):
        return tuple(freeze(v) for v in value)
    return value


def _thaw(value: Any) -> Any:
    if is_mapping(value):
        return {k: _thaw(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [_thaw(v) for v in value]
    return value


EMPTY_FLAGS: Final[Mapping[str, Any]] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Layer:
    """An immutable snapshot of one layer, as the store saw it when it was handed out.

    Absent optional values are ``None`` (ids, digests, the mount point) or empty (text,
    tuples); sizes are 0 when not recorded, and ``uncompressed_size`` may be -1.
    ``created`` is UTC (microseconds); ``created_ns`` keeps Go's nanoseconds since the
    epoch. ``flags`` is a read-only mapping (nested objects read-only as well).
    """

    id: str
    names: tuple[str, ...] = ()
    parent: str | None = None
    metadata: str = ""
    mount_label: str = ""
    created: datetime = datetime(1, 1, 1, tzinfo=UTC)
    created_ns: int = -62135596800 * 1_000_000_000
    compressed_digest: str | None = None
    compressed_size: int = 0
    uncompressed_digest: str | None = None
    toc_digest: str | None = None
    uncompressed_size: int = 0
    compression: Compression = Compression.NONE
    uid_set: tuple[int, ...] = ()
    gid_set: tuple[int, ...] = ()
    flags: Mapping[str, Any] = EMPTY_FLAGS  # read-only, so one shared default is safe
    uid_map: tuple[IDMap, ...] = ()
    gid_map: tuple[IDMap, ...] = ()
    big_data_names: tuple[str, ...] = ()
    mount_point: str | None = None
    mount_count: int = 0
    read_only: bool = False

    @property
    def incomplete(self) -> bool:
        """Whether the layer carries Go's ``incomplete`` flag (a JSON ``true``)."""
        return self.flags.get(INCOMPLETE_FLAG) is True

    def to_json(self) -> dict[str, Any]:
        """The layers.json object Go would write for this layer (key order kept)."""
        obj: dict[str, Any] = {
            "id": self.id,
            "names": list(self.names),
            "parent": self.parent or "",
            "metadata": self.metadata,
            "mountlabel": self.mount_label,
            "created": format_created(self.created_ns),
            "compressed-diff-digest": self.compressed_digest or "",
            "compressed-size": self.compressed_size,
            "diff-digest": self.uncompressed_digest or "",
            "toc-digest": self.toc_digest or "",
            "diff-size": self.uncompressed_size,
            "compression": int(self.compression),
            "uidset": list(self.uid_set),
            "gidset": list(self.gid_set),
            "flags": _thaw(self.flags),
            "uidmap": [m.to_json() for m in self.uid_map],
            "gidmap": [m.to_json() for m in self.gid_map],
            "big-data-names": list(self.big_data_names),
        }
        return normalize_record(obj)


COMPRESSIONS: Final = {c.value: c for c in Compression}


def _make_layer_factory() -> Callable[..., Layer]:
    """``new_layer(*values)``: a Layer built without the frozen dataclass ``__init__``
    (which costs ~4 us): the slot descriptors are called directly, unrolled."""
    names = Layer.__match_args__
    env: dict[str, Any] = {"_new": object.__new__, "Layer": Layer}
    for i, name in enumerate(names):
        env[f"_s{i}"] = getattr(Layer, name).__set__
    args = ", ".join(f"v{i}" for i in range(len(names)))
    body = "".join(f"    _s{i}(layer, v{i})\n" for i in range(len(names)))
    exec(f"def _new_layer({args}):\n    layer = _new(Layer)\n{body}    return layer\n", env)
    factory: Callable[..., Layer] = env["_new_layer"]
    return factory


new_layer: Final = _make_layer_factory()
