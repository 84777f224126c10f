"""pytest-benchmark benchmarks of sys_unused / sys_used / sys_map on 64 KiB ranges, and of
the simulated backend's bookkeeping (a terabyte reservation, placement past many regions).

Each timed call gets its own fresh range, prepared by ``benchmark.pedantic``'s setup
(untimed): a dirty Ready range for ``sys_unused``, a range that was dirtied and then
released for ``sys_used``, a Reserved range for ``sys_map``. With pytest's default
``--benchmark-disable`` (pyproject.toml) each benchmark runs its operation once, as a
plain test that also checks the result; ``pytest benchmarks --benchmark-enable`` times
them. ``benchmarks/sysmem_vs_c.py`` compares the same operations with C.
"""

from __future__ import annotations

import gc
import sys

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs Linux")

SIZE = 64 << 10
ROUNDS, WARMUP = 40, 2
POOL = ROUNDS + WARMUP  # ranges per benchmark: one per timed (or warm-up) call


class Pool:
    """POOL ranges of SIZE bytes back to back in one region, handed out one per call."""

    def __init__(self, sm, state: str) -> None:
        self.sm = sm
        self.stat = sm.stat("other_sys")
        self.length = SIZE * POOL
        self.base = sm.sys_reserve(None, self.length)
        assert self.base is not None
        self.mapped = state != "reserved"
        if self.mapped:
            sm.sys_map(self.base, self.length, self.stat)
            sm.sys_used(self.base, self.length, self.length)
        self.next = 0
        self.handed: list[int] = []

    def take(self) -> int:
        v = self.base + self.next * SIZE
        self.next += 1
        self.handed.append(v)
        return v

    def dirty(self, v: int) -> None:
        view = self.sm.view(v, SIZE)
        view[:: self.sm.page_size] = 0xA5
        del view

    def release(self) -> None:
        """Give the whole region back (whatever state the benchmark left its ranges in)."""
        sm = self.sm
        gc.collect()
        if sm.ledger is not None:
            prepared = sum(
                r.size for r in sm.runs()
                if r.state.name == "PREPARED" and self.base <= r.start < self.base + self.length
            )
        else:
            prepared = getattr(self, "prepared_bytes", 0)
        if not self.mapped:
            # sys_map'd ranges are Prepared; the rest are still Reserved: map them too.
            for i in range(self.next, POOL):
                sm.sys_map(self.base + i * SIZE, SIZE, self.stat)
            prepared = self.length
        sm.sys_used(self.base, self.length, prepared)
        sm.sys_free(self.base, self.length, self.stat)


@pytest.fixture(params=[True, False], ids=["ledger_on", "ledger_off"])
def ledger(request):
    return request.param


def make_sm(ledger: bool, godebug: str = ""):
    import sysmem

    return sysmem.SysMem("linux", ledger=ledger, godebug=godebug)


def _finish(sm, pool: Pool) -> None:
    if sm.ledger is not None:
        sm.check()
    pool.release()
    if sm.ledger is not None:
        sm.check()
    assert sm.mapped_ready == 0
    assert sm.stat("other_sys").load() == 0


def test_sys_unused_64k(benchmark, ledger):
    sm = make_sm(ledger)
    pool = Pool(sm, "ready")

    def setup():
        v = pool.take()
        pool.dirty(v)
        return (v, SIZE), {}

    benchmark.pedantic(sm.sys_unused, setup=setup, rounds=ROUNDS, warmup_rounds=WARMUP)
    n = len(pool.handed)
    assert n >= 1
    pool.prepared_bytes = n * SIZE
    assert sm.mapped_ready == pool.length - n * SIZE
    # MADV_DONTNEED dropped the pages: they read back as zeros once used again.
    v = pool.handed[0]
    sm.sys_used(v, SIZE, SIZE)
    view = sm.view(v, SIZE)
    assert not view.any()
    del view
    sm.sys_unused(v, SIZE)
    _finish(sm, pool)


@pytest.mark.parametrize("godebug", ["", "harddecommit=1"], ids=["default", "harddecommit"])
def test_sys_used_64k(benchmark, ledger, godebug):
    sm = make_sm(ledger, godebug)
    pool = Pool(sm, "ready")

    def setup():
        v = pool.take()
        pool.dirty(v)
        sm.sys_unused(v, SIZE)
        return (v, SIZE, SIZE), {}

    benchmark.pedantic(sm.sys_used, setup=setup, rounds=ROUNDS, warmup_rounds=WARMUP)
    n = len(pool.handed)
    assert n >= 1
    pool.prepared_bytes = 0
    assert sm.mapped_ready == pool.length
    view = sm.view(pool.handed[-1], SIZE)  # Ready again: accessible (and zeroed)
    assert not view.any()
    del view
    _finish(sm, pool)


def test_sys_map_64k(benchmark, ledger):
    sm = make_sm(ledger)
    pool = Pool(sm, "reserved")
    stat = pool.stat

    def setup():
        return (pool.take(), SIZE, stat), {}

    benchmark.pedantic(sm.sys_map, setup=setup, rounds=ROUNDS, warmup_rounds=WARMUP)
    n = len(pool.handed)
    assert n >= 1
    assert stat.load() == n * SIZE
    assert sm.mapped_ready == 0
    _finish(sm, pool)


# -- the simulated backend ------------------------------------------------------------------
def _simulated(personality: str):
    from sysmem._simulated import SimulatedBackend
    from sysmem.settings import DebugSettings

    return SimulatedBackend(DebugSettings(), personality)


def test_simulated_terabyte_reservation(benchmark):
    """Reserve, map and release a terabyte, then inspect pages in its middle: nothing
    costs per byte (the simulation keeps runs of pages, and stores nothing untouched)."""

    def run(b):
        p = b.reserve(None, 1 << 40, "heap")
        b.map(p, 1 << 40, "heap")
        b.unused(p, 1 << 40)
        return b.inspect(p + (1 << 39), 16 * 4096)

    pages = benchmark.pedantic(run, setup=lambda: ((_simulated("linux"),), {}),
                               rounds=ROUNDS, warmup_rounds=WARMUP)
    assert pages.mapped.all() and pages.accessible.all() and not pages.resident.any()


def test_simulated_windows_placement_of_4096_regions(benchmark):
    """4096 small Windows allocations, as for the arena metadata of a 256 GiB heap: each
    is placed bottom-up, past all the older ones (quadratic with a linear gap search)."""

    def run(b):
        return [b.alloc(5 * 4096, "meta") for _ in range(4096)]

    got = benchmark.pedantic(run, setup=lambda: ((_simulated("windows"),), {}),
                             rounds=5, warmup_rounds=0)
    assert got == [0x10000 * (k + 1) for k in range(4096)]
