"""``python -m layerstore``: the same as the ``layerstore`` command."""

from layerstore.cli import run

run()
