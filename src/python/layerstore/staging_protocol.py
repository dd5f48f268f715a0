"""The differ protocol (Go's ``graphdriver.Differ``), apart from :mod:`layerstore.staging`
because a Protocol needs :mod:`typing` at run time; ``layerstore.staging.Differ`` is
this class too."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from layerstore.staging import DifferContext, DifferOutput

__all__ = ["Differ"]


@runtime_checkable
class Differ(Protocol):
    """Fills a staging directory (Go's ``graphdriver.Differ``)."""

    def apply_diff(self, dest: str, options: DifferContext) -> DifferOutput:
        """Make the layer's files in ``dest`` (an existing directory) and describe them."""
        ...
