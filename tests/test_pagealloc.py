"""The page allocator end to end.

Ports of Go's runtime tests (Go 1.27.3) from mpagealloc_test.go (TestPageAllocGrow,
TestPageAllocAlloc, TestPageAllocExhaust, TestPageAllocFree, TestPageAllocAllocAndFree)
and mgcscavenge_test.go (TestPageAllocScavenge), with Go's expected values, built with
the ``new_page_alloc`` helper (Go's NewPageAlloc). Plus checks of what the heap relies
on: the ``sys_unused`` callback, grow's treatment of new memory, the invariants.
"""

from __future__ import annotations

import time

import pytest

from heap.constants import (
    ARENA_BASE_OFFSET,
    MAX_OFF_ADDR,
    PAGE_SIZE,
    PALLOC_CHUNK_BYTES,
    PALLOC_CHUNK_PAGES,
    PHYS_PAGE_SIZE,
)
from heap.pagealloc import (
    BASE_CHUNK_IDX,
    AddrRange,
    PageAlloc,
    PageAllocError,
    chunk_base,
    chunk_index,
    chunk_page_index,
    diff_palloc_bits,
    new_page_alloc,
    page_base,
)

P = PALLOC_CHUNK_PAGES
B = BASE_CHUNK_IDX
PS = PAGE_SIZE
MAXU = (1 << 64) - 1  # Go's ^uintptr(0)
BIG_JUMP = 0x100000  # chunkIdxBigJump: O(TiB) apart


def check_page_alloc(want: PageAlloc, got: PageAlloc) -> None:
    """Go's checkPageAlloc: same bounds, same allocation and scavenged bitmaps."""
    assert got.bounds() == want.bounds()
    assert got.in_use() == want.in_use()
    for r in got.in_use():
        for ci in range(chunk_index(r.base), chunk_index(r.limit)):
            gb, wb = got.palloc_data(ci), want.palloc_data(ci)
            assert (gb is None) == (wb is None), f"chunk {ci:#x} nilness"
            if gb is None:
                continue
            assert not diff_palloc_bits(gb.palloc_bits, wb.palloc_bits), f"chunk {ci:#x} (mallocBits)"
            assert not diff_palloc_bits(gb.scavenged, wb.scavenged), f"chunk {ci:#x} (scavenged)"
    got.check()


def test_constants_match_go():
    assert B == chunk_index(0xC000 * PALLOC_CHUNK_BYTES) == 0x200C000
    assert chunk_base(B) == 0xC000 * PALLOC_CHUNK_BYTES
    assert page_base(B, 3) == chunk_base(B) + 3 * PS
    assert chunk_page_index(page_base(B + 1, 511)) == 511
    # arenaBaseOffset wrap-around: addresses above the hole come first.
    assert chunk_index(ARENA_BASE_OFFSET) == 0
    assert chunk_index(0) == 1 << 25
    assert MAX_OFF_ADDR == 0x7FFFFFFFFFFF


# --- TestPageAllocGrow ----------------------------------------------------------------------


def _rng(*pairs):
    return [AddrRange(page_base(a, 0), page_base(b, 0)) for a, b in pairs]


GROW_CASES = {
    "One": ([B], _rng((B, B + 1))),
    "Contiguous2": ([B, B + 1], _rng((B, B + 2))),
    "Contiguous5": ([B + k for k in range(5)], _rng((B, B + 5))),
    "Discontiguous": ([B, B + 2, B + 4], _rng((B, B + 1), (B + 2, B + 3), (B + 4, B + 5))),
    "Mixed": ([B, B + 1, B + 2, B + 4], _rng((B, B + 3), (B + 4, B + 5))),
    "WildlyDiscontiguous": ([B, B + 1, B + 0x10, B + 0x21], _rng((B, B + 2), (B + 0x10, B + 0x11), (B + 0x21, B + 0x22))),
    "ManyDiscontiguous": ([B + 2 * k for k in range(33)], _rng(*[(B + 2 * k, B + 2 * k + 1) for k in range(33)])),
    "ExtremelyDiscontiguous": ([B, B + BIG_JUMP], _rng((B, B + 1), (B + BIG_JUMP, B + BIG_JUMP + 1))),
}


@pytest.mark.parametrize("name", GROW_CASES)
def test_page_alloc_grow(name):  # TestPageAllocGrow
    chunks, want = GROW_CASES[name]
    b = new_page_alloc({c: [] for c in chunks})
    assert b.in_use() == want
    assert b.in_use_ranges.total_bytes == sum(r.size() for r in want)


def test_grow_out_of_order_and_rounding():
    p = PageAlloc()
    p.grow(page_base(B + 4, 0), PALLOC_CHUNK_BYTES)
    p.grow(page_base(B, 0), PALLOC_CHUNK_BYTES)
    p.grow(page_base(B + 2, 5), 3 * PS)  # rounded out to chunk B+2
    assert p.in_use() == _rng((B, B + 1), (B + 2, B + 3), (B + 4, B + 5))
    assert p.bounds() == (B, B + 5)
    p.grow(page_base(B + 1, 0), PALLOC_CHUNK_BYTES)  # coalesces three ranges
    assert p.in_use() == _rng((B, B + 3), (B + 4, B + 5))
    with pytest.raises(PageAllocError):
        p.grow(page_base(B + 1, 0), PALLOC_CHUNK_BYTES)  # already grown
    with pytest.raises(ValueError):
        p.grow(page_base(B + 9, 0), 0)
    p.check()


def test_grow_makes_free_scavenged_pages():
    p = PageAlloc()
    p.grow(page_base(B, 0), 3 * PALLOC_CHUNK_BYTES)
    for ci in range(B, B + 3):
        d = p.palloc_data(ci)
        assert d.palloc_bits.count() == 0
        assert d.scavenged.count() == P  # new memory is released memory
    assert p.search_addr == page_base(B, 0)
    # Growth is not a free: the scavenge index has nothing to do.
    assert p.scavenge(MAXU) == 0
    addr, scav = p.alloc(2 * P)
    assert (addr, scav) == (page_base(B, 0), 2 * P * PS)
    p.check()


# --- TestPageAllocAlloc ---------------------------------------------------------------------

SUMS_PER_PHYS_PAGE = PHYS_PAGE_SIZE // 8
BASE_ALIGNED = B & ~(SUMS_PER_PHYS_PAGE - 1)
SMALL_OFF = 0x503  # chunkIdxSmallOffset


def _alloc_cases():
    t = {
        "AllFree1": dict(
            before={B: []},
            scav={B: [(0, 1), (2, 2)]},
            hits=[(1, page_base(B, 0), PS), (1, page_base(B, 1), 0), (1, page_base(B, 2), PS),
                  (1, page_base(B, 3), PS), (1, page_base(B, 4), 0)],
            after={B: [(0, 5)]},
        ),
        "ManyArena1": dict(
            before={B: [(0, P)], B + 1: [(0, P)], B + 2: [(0, P - 1)]},
            scav={B: [(0, P)], B + 1: [(0, P)], B + 2: [(0, P)]},
            hits=[(1, page_base(B + 2, P - 1), PS)],
            after={B: [(0, P)], B + 1: [(0, P)], B + 2: [(0, P)]},
        ),
        "NotContiguous1": dict(
            before={B: [(0, P)], B + 0xFF: [(0, 0)]},
            scav={B: [(0, P)], B + 0xFF: [(0, P)]},
            hits=[(1, page_base(B + 0xFF, 0), PS)],
            after={B: [(0, P)], B + 0xFF: [(0, 1)]},
        ),
        "AllFree2": dict(
            before={B: []},
            scav={B: [(0, 3), (7, 1)]},
            hits=[(2, page_base(B, 0), 2 * PS), (2, page_base(B, 2), PS), (2, page_base(B, 4), 0),
                  (2, page_base(B, 6), PS), (2, page_base(B, 8), 0)],
            after={B: [(0, 10)]},
        ),
        "Straddle2": dict(
            before={B: [(0, P - 1)], B + 1: [(1, P - 1)]},
            scav={B: [(P - 1, 1)], B + 1: []},
            hits=[(2, page_base(B, P - 1), PS)],
            after={B: [(0, P)], B + 1: [(0, P)]},
        ),
        "AllFree5": dict(
            before={B: []},
            scav={B: [(0, 8), (9, 1), (17, 5)]},
            hits=[(5, page_base(B, 0), 5 * PS), (5, page_base(B, 5), 4 * PS), (5, page_base(B, 10), 0),
                  (5, page_base(B, 15), 3 * PS), (5, page_base(B, 20), 2 * PS)],
            after={B: [(0, 25)]},
        ),
        "ExhaustPallocChunkPages-3": dict(
            before={B: []},
            scav={B: [(10, 1)]},
            hits=[(P - 3, page_base(B, 0), PS), (P - 3, None, 0), (1, page_base(B, P - 3), 0),
                  (2, page_base(B, P - 2), 0), (1, None, 0), (P - 3, None, 0)],
            after={B: [(0, P)]},
        ),
        "AllFreePallocChunkPages": dict(
            before={B: []},
            scav={B: [(0, 1), (P - 1, 1)]},
            hits=[(P, page_base(B, 0), 2 * PS), (P, None, 0), (1, None, 0)],
            after={B: [(0, P)]},
        ),
        "StraddlePallocChunkPages+1": dict(
            before={B: [(0, P // 2)], B + 1: []},
            scav={B: [(0, P)], B + 1: [(0, P)]},
            hits=[(P + 1, page_base(B, P // 2), (P + 1) * PS), (P, None, 0),
                  (1, page_base(B + 1, P // 2 + 1), PS)],
            after={B: [(0, P)], B + 1: [(0, P // 2 + 2)]},
        ),
        "AllFreePallocChunkPages*2": dict(
            before={B: [], B + 1: []},
            scav={B: [], B + 1: []},
            hits=[(P * 2, page_base(B, 0), 0), (P * 2, None, 0), (1, None, 0)],
            after={B: [(0, P)], B + 1: [(0, P)]},
        ),
        "NotContiguousPallocChunkPages*2": dict(
            before={B: [], B + 0x40: [], B + 0x41: []},
            scav={B: [(0, P)], B + 0x40: [], B + 0x41: []},
            hits=[(P * 2, page_base(B + 0x40, 0), 0), (21, page_base(B, 0), 21 * PS), (1, page_base(B, 21), PS)],
            after={B: [(0, 22)], B + 0x40: [(0, P)], B + 0x41: [(0, P)]},
        ),
        "StraddlePallocChunkPages*5/4": dict(
            before={B: [(0, P)], B + 1: [(0, P * 3 // 4)], B + 2: [(0, P * 3 // 4)], B + 3: [(0, 0)]},
            scav={B: [(0, P)], B + 1: [(P // 2, P // 4 + 1)], B + 2: [(P // 3, 1)], B + 3: [(P * 2 // 3, 1)]},
            hits=[(P * 5 // 4, page_base(B + 2, P * 3 // 4), PS), (P * 5 // 4, None, 0),
                  (1, page_base(B + 1, P * 3 // 4), PS)],
            after={B: [(0, P)], B + 1: [(0, P * 3 // 4 + 1)], B + 2: [(0, P)], B + 3: [(0, P)]},
        ),
        "AllFree64": dict(
            before={B: []},
            scav={B: [(21, 1), (63, 65)]},
            hits=[(64, page_base(B, 0), 2 * PS), (64, page_base(B, 64), 64 * PS), (64, page_base(B, 128), 0)],
            after={B: [(0, 192)]},
        ),
        "AllFree65": dict(
            before={B: []},
            scav={B: [(129, 1)]},
            hits=[(65, page_base(B, 0), 0), (65, page_base(B, 65), PS), (65, page_base(B, 130), 0)],
            after={B: [(0, 195)]},
        ),
        "StraddlePallocChunkPages": dict(
            before={B: [(0, P // 2)], B + 1: [(P // 2, P // 2)]},
            scav={B: [], B + 1: [(3, 100)]},
            hits=[(P, page_base(B, P // 2), 100 * PS), (P, None, 0), (1, None, 0)],
            after={B: [(0, P)], B + 1: [(0, P)]},
        ),
        "AllFreePallocChunkPages*7+5": dict(
            before={B + k: [] for k in range(8)},
            scav={B: [(50, 1)], B + 1: [(31, 1)], B + 2: [(7, 1)], B + 3: [(200, 1)], B + 4: [(3, 1)],
                  B + 5: [(51, 1)], B + 6: [(20, 1)], B + 7: [(1, 1)]},
            hits=[(P * 7 + 5, page_base(B, 0), 8 * PS), (P * 7 + 5, None, 0), (1, page_base(B + 7, 5), 0)],
            after={**{B + k: [(0, P)] for k in range(7)}, B + 7: [(0, 6)]},
        ),
        "StraddlePallocChunkPages*2": dict(
            before={B: [(0, P // 2)], B + 1: [], B + 2: [(P // 2, P // 2)]},
            scav={B: [(0, 7)], B + 1: [(3, 5), (121, 10)], B + 2: [(P // 2 + 12, 2)]},
            hits=[(P * 2, page_base(B, P // 2), 15 * PS), (P * 2, None, 0), (1, None, 0)],
            after={B: [(0, P)], B + 1: [(0, P)], B + 2: [(0, P)]},
        ),
        "DiscontiguousMappedSumBoundary": dict(
            before={BASE_ALIGNED + SUMS_PER_PHYS_PAGE - 1: [], BASE_ALIGNED + BIG_JUMP: []},
            scav={BASE_ALIGNED + SUMS_PER_PHYS_PAGE - 1: [], BASE_ALIGNED + BIG_JUMP: []},
            hits=[(P - 1, page_base(BASE_ALIGNED + SUMS_PER_PHYS_PAGE - 1, 0), 0),
                  (1, page_base(BASE_ALIGNED + SUMS_PER_PHYS_PAGE - 1, P - 1), 0),
                  (1, page_base(BASE_ALIGNED + BIG_JUMP, 0), 0),
                  (P - 1, page_base(BASE_ALIGNED + BIG_JUMP, 1), 0),
                  (1, None, 0)],
            after={BASE_ALIGNED + SUMS_PER_PHYS_PAGE - 1: [(0, P)], BASE_ALIGNED + BIG_JUMP: [(0, P)]},
        ),
        "DiscontiguousBadSearchAddr": dict(
            before={B: [(0, P - 1)], B + BIG_JUMP + SMALL_OFF: [(0, P - 10), (P - 1, 1)], B + 2 * BIG_JUMP: []},
            scav={B: [], B + BIG_JUMP + SMALL_OFF: [], B + 2 * BIG_JUMP: []},
            hits=[(1, page_base(B, P - 1), 0), (100, page_base(BASE_ALIGNED + 2 * BIG_JUMP, 0), 0),
                  (9, page_base(BASE_ALIGNED + BIG_JUMP + SMALL_OFF, P - 10), 0)],
            after={B: [(0, P)], B + BIG_JUMP + SMALL_OFF: [(0, P)], B + 2 * BIG_JUMP: [(0, 100)]},
        ),
    }
    return t


ALLOC_CASES = _alloc_cases()


@pytest.mark.parametrize("name", ALLOC_CASES)
def test_page_alloc_alloc(name):  # TestPageAllocAlloc
    v = ALLOC_CASES[name]
    b = new_page_alloc(v["before"], v["scav"])
    for k, (npages, base, scav) in enumerate(v["hits"]):
        assert b.alloc(npages) == (base, scav), f"alloc #{k + 1}"
    check_page_alloc(new_page_alloc(v["after"], v["scav"]), b)


# --- TestPageAllocExhaust -----------------------------------------------------------------


def _exhaust(npages: int) -> None:
    b = new_page_alloc({B + k: [] for k in range(4)})
    n_alloc = (P * 4) // npages
    for k in range(n_alloc):
        addr, _ = b.alloc(npages)
        assert addr == page_base(B, k * npages), f"alloc #{k + 1}"
    assert b.alloc(npages) == (None, 0)
    alloc_pages = n_alloc * npages
    want = {}
    for k in range(4):
        if alloc_pages >= P:
            want[B + k] = [(0, P)]
            alloc_pages -= P
        elif alloc_pages > 0:
            want[B + k] = [(0, alloc_pages)]
            alloc_pages = 0
        else:
            want[B + k] = []
    check_page_alloc(new_page_alloc(want), b)


@pytest.mark.parametrize("npages", [1, 2, 3, 4, 5, 8, 16, 64, 1024, 1025, 2048, 2049])
def test_page_alloc_exhaust(npages):  # TestPageAllocExhaust
    _exhaust(npages)


# --- TestPageAllocFree --------------------------------------------------------------------

FREE_CASES = {
    "Free1": (1, {B: [(0, P)]}, [page_base(B, k) for k in range(5)], {B: [(5, P - 5)]}),
    "ManyArena1": (
        1,
        {B: [(0, P)], B + 1: [(0, P)], B + 2: [(0, P)]},
        [page_base(B, P // 2), page_base(B + 1, 0), page_base(B + 2, P - 1)],
        {B: [(0, P // 2), (P // 2 + 1, P // 2 - 1)], B + 1: [(1, P - 1)], B + 2: [(0, P - 1)]},
    ),
    "Free2": (2, {B: [(0, P)]}, [page_base(B, k) for k in (0, 2, 4, 6, 8)], {B: [(10, P - 10)]}),
    "Straddle2": (2, {B: [(P - 1, 1)], B + 1: [(0, 1)]}, [page_base(B, P - 1)], {B: [], B + 1: []}),
    "Free5": (5, {B: [(0, P)]}, [page_base(B, k) for k in (0, 5, 10, 15, 20)], {B: [(25, P - 25)]}),
    "FreePallocChunkPages": (P, {B: [(0, P)]}, [page_base(B, 0)], {B: []}),
    "StraddlePallocChunkPages": (
        P, {B: [(P // 2, P // 2)], B + 1: [(0, P // 2)]}, [page_base(B, P // 2)], {B: [], B + 1: []}
    ),
    "StraddlePallocChunkPages+1": (
        P + 1,
        {B: [(0, P)], B + 1: [(0, P)]},
        [page_base(B, P // 2)],
        {B: [(0, P // 2)], B + 1: [(P // 2 + 1, P // 2 - 1)]},
    ),
    "FreePallocChunkPages*2": (P * 2, {B: [(0, P)], B + 1: [(0, P)]}, [page_base(B, 0)], {B: [], B + 1: []}),
    "StraddlePallocChunkPages*2": (
        P * 2,
        {B: [(0, P)], B + 1: [(0, P)], B + 2: [(0, P)]},
        [page_base(B, P // 2)],
        {B: [(0, P // 2)], B + 1: [], B + 2: [(P // 2, P // 2)]},
    ),
    "AllFreePallocChunkPages*7+5": (
        P * 7 + 5,
        {B + k: [(0, P)] for k in range(8)},
        [page_base(B, 0)],
        {**{B + k: [] for k in range(7)}, B + 7: [(5, P - 5)]},
    ),
    "Free64": (64, {B: [(0, P)]}, [page_base(B, k) for k in (0, 64, 128)], {B: [(192, P - 192)]}),
    "Free65": (65, {B: [(0, P)]}, [page_base(B, k) for k in (0, 65, 130)], {B: [(195, P - 195)]}),
}


@pytest.mark.parametrize("name", FREE_CASES)
def test_page_alloc_free(name):  # TestPageAllocFree
    npages, before, frees, after = FREE_CASES[name]
    b = new_page_alloc(before)
    for addr in frees:
        b.free(addr, npages)
    check_page_alloc(new_page_alloc(after), b)


# --- TestPageAllocAllocAndFree ---------------------------------------------------------------


def test_page_alloc_alloc_and_free():  # TestPageAllocAllocAndFree "Chunks8"
    b = new_page_alloc({B + k: [] for k in range(8)})
    hits = [
        (True, P * 8), (False, P * 8), (True, P * 8), (False, P * 8), (True, P * 8),
        (False, P * 8), (True, 1), (False, 1), (True, P * 8),
    ]
    for k, (is_alloc, npages) in enumerate(hits):
        if is_alloc:
            assert b.alloc(npages)[0] == page_base(B, 0), f"alloc #{k + 1}"
        else:
            b.free(page_base(B, 0), npages)
    b.check()


# --- TestPageAllocScavenge ------------------------------------------------------------------

MIN_PAGES = max(1, PHYS_PAGE_SIZE // PS)

SCAVENGE_CASES = {
    "AllFreeUnscavExhaust": (
        {B: [], B + 1: [], B + 2: []},
        {B: [], B + 1: [], B + 2: []},
        [(MAXU, 3 * P * PS)],
        {B: [(0, P)], B + 1: [(0, P)], B + 2: [(0, P)]},
    ),
    "NoneFreeUnscavExhaust": (
        {B: [(0, P)], B + 1: [], B + 2: [(0, P)]},
        {B: [], B + 1: [(0, P)], B + 2: []},
        [(MAXU, 0)],
        {B: [], B + 1: [(0, P)], B + 2: []},
    ),
    "ScavHighestPageFirst": (
        {B: []},
        {B: [(MIN_PAGES, P - 2 * MIN_PAGES)]},
        [(1, MIN_PAGES * PS)],
        {B: [(MIN_PAGES, P - MIN_PAGES)]},
    ),
    "ScavMultiple": (
        {B: []},
        {B: [(MIN_PAGES, P - 2 * MIN_PAGES)]},
        [(MIN_PAGES * PS, MIN_PAGES * PS), (MIN_PAGES * PS, MIN_PAGES * PS)],
        {B: [(0, P)]},
    ),
    "ScavMultiple2": (
        {B: [], B + 1: []},
        {B: [(MIN_PAGES, P - 2 * MIN_PAGES)], B + 1: [(0, P - 2 * MIN_PAGES)]},
        [(2 * MIN_PAGES * PS, 2 * MIN_PAGES * PS), (MIN_PAGES * PS, MIN_PAGES * PS),
         (MIN_PAGES * PS, MIN_PAGES * PS)],
        {B: [(0, P)], B + 1: [(0, P)]},
    ),
    "ScavDiscontiguous": (
        {B: [], B + 0xE: []},
        {B: [(MIN_PAGES, P - 2 * MIN_PAGES)], B + 0xE: [(2 * MIN_PAGES, P - 2 * MIN_PAGES)]},
        [(2 * MIN_PAGES * PS, 2 * MIN_PAGES * PS), (MAXU, 2 * MIN_PAGES * PS), (MAXU, 0)],
        {B: [(0, P)], B + 0xE: [(0, P)]},
    ),
    "ScavAllVeryDiscontiguous": (
        {B: [], B + 0x1000: []},
        {B: [], B + 0x1000: []},
        [(MAXU, 2 * P * PS), (MAXU, 0)],
        {B: [(0, P)], B + 0x1000: [(0, P)]},
    ),
}


@pytest.mark.parametrize("name", SCAVENGE_CASES)
def test_page_alloc_scavenge(name):  # TestPageAllocScavenge
    before_alloc, before_scav, expect, after_scav = SCAVENGE_CASES[name]
    b = new_page_alloc(before_alloc, before_scav)
    for k, (request, want) in enumerate(expect):
        assert b.scavenge(request) == want, f"scavenge #{k + 1}"
    check_page_alloc(new_page_alloc(before_alloc, after_scav), b)


# --- the release callback and scavenging details ----------------------------------------------


def test_scavenge_calls_sys_unused_per_run_highest_first():
    calls = []
    b = new_page_alloc({B: [(100, 50)], B + 1: [(0, P - 8)]}, sys_unused=lambda a, n: calls.append((a, n)))
    assert not b.test
    released = b.scavenge(MAXU)
    # Free runs: chunk B+1 [P-8, P), chunk B [150, P) and [0, 100). Highest first; each
    # call stays inside one chunk. The [256, 512) run of chunk B is one whole huge page
    # and the run reaching down to 150 is taken whole (no max), so it is one call.
    assert calls == [
        (page_base(B + 1, P - 8), 8 * PS),
        (page_base(B, 150), (P - 150) * PS),
        (page_base(B, 0), 100 * PS),
    ]
    assert released == sum(n for _, n in calls)
    b.check()
    for ci in (B, B + 1):
        d = b.palloc_data(ci)
        assert d.scavenged.to_int() == ~d.palloc_bits.to_int() & ((1 << P) - 1)


def test_scavenge_small_request_preserves_huge_page():
    calls = []
    b = new_page_alloc({B: []}, sys_unused=lambda a, n: calls.append((a, n)))
    # 64 KiB asked: the top huge page (pages 256..511) is free, so all 2 MiB go.
    assert b.scavenge(64 << 10) == 2 << 20
    assert calls == [(page_base(B, 256), 2 << 20)]
    b.check()


def test_scavenge_failed_release_leaves_memory_unscavenged():
    def boom(addr, n):
        raise OSError("madvise failed")

    b = new_page_alloc({B: [(0, P - 4)]}, sys_unused=boom)
    with pytest.raises(OSError):
        b.scavenge(MAXU)
    d = b.palloc_data(B)
    assert d.palloc_bits.popcnt_range(P - 4, 4) == 0  # given back to the allocator
    assert d.scavenged.count() == 0
    b.check()
    assert b.alloc(4) == (page_base(B, P - 4), 0)


def test_background_scavenge_waits_for_next_gen():
    b = new_page_alloc({B: [(0, P)]})
    b.free(page_base(B, 10), 20)
    assert b.scavenge(MAXU, force=False) == 0  # freed this cycle: not yet visible
    b.scav_index.next_gen()
    assert b.scavenge(MAXU, force=False) == 20 * PS
    b.check()


def test_background_scavenge_skips_dense_chunks():
    b = new_page_alloc({B: [(0, P)], B + 1: [(0, P)]})
    b.free(page_base(B, 0), 100)  # B: 412 in use -> sparse
    b.free(page_base(B + 1, 0), 10)  # B+1: 502 >= 496 in use -> dense
    b.scav_index.next_gen()
    assert b.scavenge(MAXU, force=False) == 100 * PS
    assert b.scavenge(MAXU, force=True) == 10 * PS  # forced ignores density


def test_background_pass_can_hide_pages_from_forced_scavenge():
    # Go behaviour, checked against Go 1.27.3: the background cursor still points at
    # page 0 (the first free of the last generation); its pass searches only word 0 of
    # the chunk, finds nothing there and marks the whole chunk empty, so the forced
    # pass skips page 64 although it is free and unscavenged.
    p = PageAlloc()
    p.grow(page_base(B, 0), PALLOC_CHUNK_BYTES)  # all free, all scavenged, index empty
    p.alloc(64)
    p.alloc(1)
    p.free(page_base(B, 0), 1)
    p.scav_index.next_gen()
    assert p.alloc(1) == (page_base(B, 0), 0)
    p.free(page_base(B, 64), 1)
    assert p.scavenge(MAXU, force=False) == 0
    assert p.scavenge(MAXU, force=True) == 0
    assert p.palloc_data(B).scavenged.get(64) == 0  # still free and unscavenged
    p.free(page_base(B, 0), 1)  # the next free makes the chunk visible again
    assert p.scavenge(MAXU) == 2 * PS


def test_should_stop_stops_after_one_step():
    b = new_page_alloc({B: [(0, 100), (200, 100)], B + 1: []})
    n = []
    assert b.scavenge(MAXU, should_stop=lambda: n.append(1) or True) == P * PS
    assert len(n) == 1


def test_mark_random_padding_pages():
    p = PageAlloc()
    p.grow(page_base(B, 0), 2 * PALLOC_CHUNK_BYTES)
    p.mark_random_padding_pages(page_base(B, 0), P + 7)
    assert p.alloc(1) == (page_base(B + 1, 7), PS)
    d = p.palloc_data(B)
    assert d.palloc_bits.count() == P and d.scavenged.count() == P  # both set: padding
    assert p.palloc_data(B + 1).scavenged.popcnt_range(0, 7) == 7


# --- search_addr behaviour ------------------------------------------------------------------


def test_search_addr_moves_as_go_describes():
    p = new_page_alloc({B: [], B + 1: []})
    assert p.search_addr == page_base(B, 0)
    p.alloc(P + 3)
    assert p.search_addr == page_base(B, 0)  # straddling find keeps the first-free window
    p.alloc(1)
    assert p.search_addr == page_base(B + 1, 3)
    p.free(page_base(B, 5), 1)
    assert p.search_addr == page_base(B, 5)
    p.alloc(1)
    p.alloc(P - 4)  # takes everything left
    assert p.alloc(1) == (None, 0)
    assert p.search_addr == MAX_OFF_ADDR  # a failed 1-page alloc: heap full
    p.free(page_base(B + 1, 100), 2)
    assert p.search_addr == page_base(B + 1, 100)
    assert p.alloc(2) == (page_base(B + 1, 100), 0)


def test_find_reports_not_found():
    p = new_page_alloc({B: [(0, 10)]})
    assert p.find(P) == (None, MAX_OFF_ADDR)
    assert p.alloc(P - 9) == (None, 0)


def test_empty_allocator():
    p = PageAlloc()
    assert p.alloc(1) == (None, 0)
    assert p.scavenge(MAXU) == 0
    assert p.bounds() == (0, 0) and p.in_use() == []
    assert p.palloc_data(B) is None


def test_summaries_at_every_level():
    p = new_page_alloc({B + k: [] for k in range(16)})
    p.alloc(3)
    leaf = p.summary(4, B)
    assert (leaf.start, leaf.max, leaf.end) == (0, P - 3, P - 3)
    # Level 3 entries cover 8 chunks; B is 8-aligned.
    l3 = p.summary(3, B >> 3)
    assert (l3.start, l3.max, l3.end) == (0, 8 * P - 3, 8 * P - 3)
    root_idx = ((page_base(B, 0) - ARENA_BASE_OFFSET) % (1 << 64)) >> 34
    root = p.summary(0, root_idx)
    assert (root.start, root.max, root.end) == (0, 16 * P - 3, 0)  # 16 GiB entry, 64 MiB grown
    p.check()


# --- speed: the heap calls these on every span allocation -------------------------------------


def test_alloc_free_speed_on_a_gib_heap():
    p = PageAlloc()
    p.grow(0xC000000000, 4 << 30)
    n = 3000
    t0 = time.perf_counter()
    addrs = [p.alloc(1)[0] for _ in range(n)]
    t1 = time.perf_counter()
    for a in addrs[::2]:
        p.free(a, 1)
    for _ in range(n // 2):
        p.alloc(1)
    t2 = time.perf_counter()
    per_alloc = (t1 - t0) / n
    per_pair = (t2 - t1) / (n // 2)
    # Typically ~20-30 us each; generous bounds for loaded CI machines.
    assert per_alloc < 400e-6, per_alloc
    assert per_pair < 800e-6, per_pair
    p.check()
