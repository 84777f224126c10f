"""pytest-benchmark benchmarks of the heap's allocation and free paths.

Each timed call gets a fresh heap from ``benchmark.pedantic``'s setup (untimed), on real
Linux memory: ``alloc`` in a Python loop and ``alloc_many`` for 16 B, 1 KiB and 64 KiB
objects, and ``free_many`` of what ``alloc_many`` made. With pytest's default
``--benchmark-disable`` (pyproject.toml) each runs once, as a plain test that also
checks the heap; ``pytest benchmarks --benchmark-enable`` times them.
``benchmarks/heap_alloc_vs_go.py`` compares the same allocations with Go.
"""

from __future__ import annotations

import gc
import sys

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs Linux")

ROUNDS = 10
CASES = [(16, 20_000), (1024, 2_000), (65536, 200)]

_heaps: list = []


def _fresh_heap():
    from heap import Heap

    while _heaps:
        _heaps.pop().close()
    h = Heap(gogc="off")  # an allocation trace with no roots: no collector
    _heaps.append(h)
    gc.collect()
    return h


@pytest.fixture(autouse=True)
def _close_heaps():
    yield
    while _heaps:
        _heaps.pop().close()


@pytest.mark.parametrize("size,count", CASES)
def test_alloc_scalar(benchmark, size, count):
    def setup():
        return (_fresh_heap(),), {}

    def run(h):
        alloc = h.alloc
        for _ in range(count):
            alloc(size)
        return h

    benchmark.extra_info["objects"] = count
    h = benchmark.pedantic(run, setup=setup, rounds=ROUNDS, iterations=1)
    assert h.stats()["HeapObjects"] == count
    h.check()


@pytest.mark.parametrize("size,count", CASES)
def test_alloc_many(benchmark, size, count):
    def setup():
        return (_fresh_heap(),), {}

    def run(h):
        h.alloc_many(size, count)
        return h

    benchmark.extra_info["objects"] = count
    h = benchmark.pedantic(run, setup=setup, rounds=ROUNDS, iterations=1)
    assert h.stats()["HeapObjects"] == count
    h.check()


@pytest.mark.parametrize("size,count", CASES)
def test_free_many(benchmark, size, count):
    def setup():
        h = _fresh_heap()
        return (h, h.alloc_many(size, count)), {}

    def run(h, addrs):
        h.free_many(addrs)
        return h

    benchmark.extra_info["objects"] = count
    h = benchmark.pedantic(run, setup=setup, rounds=ROUNDS, iterations=1)
    assert h.stats()["HeapObjects"] == 0
    h.check()
