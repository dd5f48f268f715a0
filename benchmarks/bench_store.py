"""In-process metadata benchmarks on the 10,000-layer store, beside the targets of issue 5:
``get(id)`` on a loaded store <= 10 us, the reload check when nothing changed <= 30 us,
loading the store <= 60 ms.

Run: ``.venv/bin/python -m pytest benchmarks/bench_store.py`` (the store comes from
``benchmarks/datasets.py``, built on first use).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import datasets
from layerstore import LayerStore

Report = Callable[[str, int, str, float | None], None]


@pytest.fixture(scope="module")
def store_copy(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, int]:
    src = datasets.ensure_store(datasets.cache_dir(), 10_000)
    graph, run = datasets.copy_store(src, tmp_path_factory.mktemp("store"))
    return graph, run, src.layers


def test_load(benchmark: Any, store_copy: tuple[Path, Path, int], report: Report) -> None:
    graph, run, n = store_copy

    def load() -> int:
        with LayerStore(graph, run, driver="vfs") as store:
            return len(store.layers())

    assert benchmark.pedantic(load, rounds=10, warmup_rounds=1) == n
    report(f"open the store + layers() ({n} layers)", 0, "target", 60e-3)


def test_get_locked(benchmark: Any, store_copy: tuple[Path, Path, int], report: Report) -> None:
    graph, run, n = store_copy
    with LayerStore(graph, run, driver="vfs") as store:
        lid = store.layers()[n // 2].id
        with store.reading():
            assert benchmark(store.get, lid).id == lid
    report(f"get(id) inside reading() ({n} layers)", 0, "target", 10e-6)


def test_get_with_reload_check(
    benchmark: Any, store_copy: tuple[Path, Path, int], report: Report
) -> None:
    """Each call takes the lock and checks whether another process wrote."""
    graph, run, n = store_copy
    with LayerStore(graph, run, driver="vfs") as store:
        lid = store.layers()[n // 2].id
        assert benchmark(store.get, lid).id == lid
    report(f"get(id): lock + reload check + lookup ({n} layers)", 0, "target", 30e-6)
