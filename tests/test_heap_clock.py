"""The heap's clock (heap/clock.py) and the page free times it stamps (MHeap.freed_at):
what time-based release policies read. Runs on every backend kind, as test_heap_mheap.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
from test_heap_mheap import KINDS, SC_LARGE, SC_NOSCAN, SC_SMALL, checked, new_sm  # noqa: F401

from heap import Clock, Heap, RealClock, VirtualClock
from heap.constants import PAGE_SIZE, PALLOC_CHUNK_BYTES
from heap.mheap import MHeap
from sysmem import SysMem
from sysmem.errors import HeapOutOfMemoryError

MiB = 1 << 20
CHUNK_PAGES = PALLOC_CHUNK_BYTES // PAGE_SIZE


@pytest.fixture(params=KINDS)
def kind(request):
    return request.param


# --- clocks -----------------------------------------------------------------------------
def test_virtual_clock_moves_only_when_told():
    c = VirtualClock(5)
    assert c.now() == 5 and c.now() == 5
    assert c.advance(10) == 15 and c.now() == 15
    assert c.advance(0) == 15
    assert c.advance_to(100) == 100 and c.now() == 100
    assert c.advance(np.int64(1)) == 101  # numpy integers are integers
    assert repr(c) == "VirtualClock(now=101 ns)"


@pytest.mark.parametrize(
    "call, exc, words",
    [
        (lambda c: c.advance(-1), ValueError, "ns must be in"),
        (lambda c: c.advance_to(99), ValueError, "time never goes back"),
        (lambda c: c.advance(1.5), TypeError, "not float"),
        (lambda c: c.advance(True), TypeError, "not bool"),
        (lambda c: c.advance_to("1"), TypeError, "not str"),
        (lambda c: VirtualClock(-3), ValueError, r"start_ns must be in \[0, 2\*\*63\)"),
        (lambda c: c.advance(2**63), ValueError, "ns must be in"),
        (lambda c: c.advance(2**63 - 100), ValueError, "would pass 2\\*\\*63 - 1 ns"),
    ],
)
def test_virtual_clock_refuses_bad_steps(call, exc, words):
    c = VirtualClock(100)
    with pytest.raises(exc, match=words):
        call(c)
    assert c.now() == 100


def test_real_clock_is_monotonic_and_in_nanoseconds():
    c = RealClock()
    a = c.now()
    time.sleep(0.002)
    b = c.now()
    assert isinstance(a, int) and b - a >= 2_000_000


def test_clock_is_abstract_and_checked():
    with pytest.raises(TypeError):
        Clock()  # type: ignore[abstract]
    with pytest.raises(TypeError, match="clock must be a heap.clock.Clock"):
        Heap(backend="simulated", clock=time.monotonic_ns)


def test_heap_default_clock_is_virtual_and_shared_with_its_mheap():
    with Heap(backend="simulated", gogc="off") as h:
        assert isinstance(h.clock, VirtualClock) and h.clock is h.mheap.clock
        assert h.clock.now() == 0
    c = VirtualClock(7)
    with Heap(backend="simulated", gogc="off", clock=c) as h:
        assert h.clock is c and h.mheap.clock is c


# --- free times ---------------------------------------------------------------------------
def test_growth_and_span_frees_stamp_pages(kind, new_sm):
    clock = VirtualClock(1_000)
    h = MHeap(new_sm(kind), clock=clock)
    big = h.alloc_span(40, SC_LARGE)  # grows one chunk at t=1000, from the page allocator
    base = big.base
    t = h.freed_at(base, CHUNK_PAGES)
    assert (t[:40] == -1).all() and (t[40:] == 1_000).all()
    clock.advance(500)
    small = h.alloc_span(3, SC_NOSCAN)  # from the page cache, after the big span
    assert small.base == base + 40 * PAGE_SIZE
    h.free_span(big)
    t = h.freed_at(base, CHUNK_PAGES)
    assert (t[:40] == 1_500).all() and (t[40:43] == -1).all() and (t[43:] == 1_000).all()
    clock.advance(250)
    h.free_span(small)
    assert (h.freed_at(small.base, 3) == 1_750).all()
    # A new span over freed pages hides their time; freeing it stamps them again.
    again = h.alloc_span(40, SC_LARGE)
    assert again.base == base and (h.freed_at(base, 40) == -1).all()
    clock.advance(1)
    h.free_span(again)
    assert (h.freed_at(base, 40) == 1_751).all()
    checked(h)


def test_page_cache_pages_are_free_and_keep_their_time(new_sm):
    clock = VirtualClock(10)
    h = MHeap(new_sm("sim-linux"), clock=clock)
    a = h.alloc_span(1, SC_SMALL)  # grows at t=10: page 0
    clock.advance(10)
    b = h.alloc_span(4, SC_NOSCAN)  # pages 1-4; the page cache takes pages 5-63
    assert b.base == a.base + PAGE_SIZE and h.page_cache_pages()[0] == 59
    assert (h.freed_at(b.end, 59) == 10).all()
    clock.advance(10)
    h.free_span(b)  # t=30, to the page allocator
    h.flush_page_cache()
    assert (h.freed_at(b.end, 59) == 10).all()  # flushing frees nothing anew
    clock.advance(10)
    c = h.alloc_span(1, SC_NOSCAN)  # a refill: page 1 for c, pages 2-63 cached
    assert c.base == b.base and h.page_cache_pages()[0] == 62
    t = h.freed_at(a.base, 64)
    assert t[0] == t[1] == -1 and (t[2:5] == 30).all() and (t[5:] == 10).all()
    checked(h)


def test_scavenging_keeps_free_times(new_sm):
    clock = VirtualClock()
    h = MHeap(new_sm("sim-linux"), clock=clock)
    s = h.alloc_span(64, SC_LARGE)
    clock.advance(42)
    h.free_span(s)
    assert h.scavenge_all() > 0
    assert (h.freed_at(s.base, 64) == 42).all()
    checked(h)


def test_failed_commit_keeps_the_old_free_times(new_sm):
    clock = VirtualClock(3)
    sm = new_sm("sim-windows")  # where sys_used commits and can fail
    h = MHeap(sm, clock=clock)
    first = h.alloc_span(1, SC_SMALL)
    clock.advance(4)  # t=7
    sm.backend.fail_next("used", 1)
    with pytest.raises(HeapOutOfMemoryError):
        h.alloc_span(32, SC_NOSCAN)
    assert (h.freed_at(first.base + PAGE_SIZE, CHUNK_PAGES - 1) == 3).all()
    checked(h)


def test_free_times_across_arenas(kind, new_sm):
    sm = new_sm(kind)
    clock = VirtualClock(1)
    h = MHeap(sm, arena_bytes=4 * MiB, arena_metadata=kind != "sim-sbrk", clock=clock)
    s0 = h.alloc_span(1, SC_SMALL)
    big = h.alloc_span(512, SC_LARGE)  # crosses into the second arena
    assert h.arenas.arena_of(big.base) is not h.arenas.arena_of(big.end - 1)
    clock.advance(9)
    h.free_span(big)
    t = h.freed_at(s0.base, 1 + 512 + 2)
    assert t[0] == -1 and (t[1:513] == 10).all() and (t[513:] == 1).all()
    checked(h)


def test_padding_and_unmapped_pages_have_no_free_time(new_sm):
    h = MHeap(new_sm("sim-linux"), randomize_base=True, seed=7, clock=VirtualClock(2))
    s = h.alloc_span(1, SC_SMALL)
    chunk = s.base & -PALLOC_CHUNK_BYTES
    pad = h.padding_pages
    assert pad > 0
    t = h.freed_at(chunk, pad + 2)
    assert (t[:pad] == -1).all() and t[pad] == -1 and t[pad + 1] == 2
    # Below the heap (reserved, never mapped) and outside any arena.
    assert (h.freed_at(chunk - 4 * PAGE_SIZE, 4) == -1).all()
    assert (h.freed_at(1 << 46, 3) == -1).all()
    checked(h)


@pytest.mark.parametrize(
    "addr, npages, words",
    [(PAGE_SIZE + 1, 1, "not a page boundary"), (-PAGE_SIZE, 1, "not a page boundary"),
     (0, -1, "not a range"), ((1 << 64) - PAGE_SIZE, 2, "not a range")],
)
def test_freed_at_checks_its_range(addr, npages, words):
    h = MHeap(SysMem("simulated"))
    try:
        with pytest.raises(ValueError, match=words):
            h.freed_at(addr, npages)
    finally:
        h.sm.close()


def test_check_notices_a_missing_or_future_free_time(new_sm):
    clock = VirtualClock(5)
    h = MHeap(new_sm("sim-linux"), clock=clock)
    s = h.alloc_span(2, SC_NOSCAN)
    ha = h.arenas.arena_of(s.base)
    i = (s.base - ha.base) // PAGE_SIZE + 5
    ha.freed_at[i] = -1
    assert any("have a free time" in p for p in h.problems())
    ha.freed_at[i] = 6
    assert any("after the clock's now" in p for p in h.problems())
    clock.advance(1)
    assert h.problems() == []


def test_gc_sweep_stamps_the_spans_it_frees():
    clock = VirtualClock(100)
    with Heap(backend="simulated", personality="windows", gogc="off", clock=clock) as h:
        addrs = h.alloc_many(4096, 64)  # 4 KiB objects: 32 spans of 2 objects
        big = h.alloc(1 << 20)
        h.add_root(int(addrs[0]))
        span_pages = {h.mheap.span_of(int(a)).base for a in addrs}
        big_base = h.mheap.span_of(big).base
        clock.advance(900)
        h.gc()
        # The large object and every span without a root died at t=1000.
        assert (h.mheap.freed_at(big_base, 128) == 1_000).all()
        kept = h.mheap.span_of(int(addrs[0])).base
        for b in span_pages - {kept}:
            assert (h.mheap.freed_at(b, 1) == 1_000).all()
        assert (h.mheap.freed_at(kept, 1) == -1).all()
        h.check()


class _BadClock(Clock):
    def __init__(self) -> None:
        self.value: object = 0

    def now(self):
        return self.value


@pytest.mark.parametrize("bad, exc", [(2**63, ValueError), (-1, ValueError), (1.5, TypeError),
                                      ("soon", TypeError)])
def test_a_bad_clock_reading_is_refused_or_reported(bad, exc):
    # Growth reads the clock before changing anything, so it refuses a bad reading.
    # A span free cannot be undone halfway through a sweep: it uses the last good time
    # and check() reports the clock.
    clock = _BadClock()
    with Heap(backend="simulated", gogc="off", clock=clock) as h:
        clock.value = 3
        keep, big = h.alloc(100_000), h.alloc(100_000)
        small = h.alloc_many(4096, 4)
        h.release_mcache()
        before = h.stats()
        clock.value = bad
        with pytest.raises(exc):
            h.grow(10_000)
        assert h.stats() == before
        h.free(big)
        h.free_many(small[:2])
        assert (h.mheap.freed_at(big, 13) == 3).all()
        assert any("the clock gave a bad reading" in p for p in h.problems())
        assert not [p for p in h.problems() if "clock" not in p]  # the heap itself is sound
        clock.value = 5
        h.mheap.clock_problem = None
        h.check()
        assert h.lookup(keep)
