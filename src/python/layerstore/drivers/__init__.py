"""Graph drivers, by name. Adding a driver = one module plus one line in ``_DRIVERS``."""

from __future__ import annotations

import sys

from layerstore.drivers.base import MountOptions
from layerstore.errors import NotSupported

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any, Final

    from layerstore.drivers.protocol import Driver

__all__ = ["Driver", "MountOptions", "canonical_name", "driver_class", "make_driver"]

# name -> "module:Class"; imported on first use so the CLI does not pay for unused ones.
_DRIVERS: Final[dict[str, str]] = {
    "vfs": "layerstore.drivers.vfs:VfsDriver",
    "overlay": "layerstore.drivers.overlay:OverlayDriver",
}
# Names that select another driver; the store directories use the target's name.
_ALIASES: Final[dict[str, str]] = {
    "overlay2": "overlay",
}


def canonical_name(name: str) -> str:
    """The driver's own name (``overlay2`` -> ``overlay``)."""
    return _ALIASES.get(name, name)


def driver_class(name: str) -> type[Driver]:
    """The class implementing driver ``name``; NotSupported when there is none."""
    target = _DRIVERS.get(canonical_name(name))
    if target is None:
        raise NotSupported(f"driver {name!r}", message="driver not supported")
    module_name, _, class_name = target.partition(":")
    __import__(module_name)  # importlib.import_module without importing importlib
    cls: type[Driver] = getattr(sys.modules[module_name], class_name)
    return cls


def make_driver(
    name: str,
    home: str,
    options: Sequence[str] = (),
    *,
    image_root: str | None = None,
    read_only: bool = False,
) -> Driver:
    """A driver instance with home ``home`` (``G/<name>``) and ``--storage-opt`` options."""
    cls = driver_class(name)
    return cls(home, options, image_root=image_root, read_only=read_only)  # type: ignore[call-arg]


def __getattr__(name: str) -> Any:
    if name == "Driver":  # imported on first use: the protocol needs typing
        from layerstore.drivers.protocol import Driver

        return Driver
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
