"""Tests in this directory run the real Go ``containers-storage`` CLI: they carry the
``interop`` marker, and they fail (never skip) when the CLI is missing."""

from __future__ import annotations

import os

import pytest

GO_CLI = "/usr/bin/containers-storage"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = os.path.dirname(__file__)
    for item in items:
        if str(item.path).startswith(here + os.sep):
            item.add_marker(pytest.mark.interop)


@pytest.fixture(autouse=True)
def _go_cli_installed() -> None:
    assert os.access(GO_CLI, os.X_OK), f"{GO_CLI} is missing: run `make system-deps`"
