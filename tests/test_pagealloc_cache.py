"""The page cache (``heap.pagealloc.PageCache`` and ``PageAlloc.alloc_to_cache``).

Ports of Go's runtime tests (Go 1.27.3) from mpagecache_test.go — TestPageCacheAlloc,
TestPageCacheFlush and TestPageAllocAllocToCache — with Go's cases and expected values,
table-driven. Where Go expects a 0 base address, heaplab returns None.
"""

from __future__ import annotations

import random

import pytest

from heap.constants import PAGE_CACHE_PAGES, PAGE_SIZE, PALLOC_CHUNK_PAGES, PHYS_PAGE_SIZE
from heap.pagealloc import BASE_CHUNK_IDX, PageCache, new_page_alloc, page_base
from heap.pagealloc._addr import off

from test_pagealloc import check_page_alloc

P = PALLOC_CHUNK_PAGES
B = BASE_CHUNK_IDX
PS = PAGE_SIZE
ONES = (1 << 64) - 1  # ^uint64(0)
BIG_JUMP = 0x100000  # chunkIdxBigJump


def test_page_cache_pages_is_64():
    assert PAGE_CACHE_PAGES == 64  # 8 * sizeof(pageCache.cache)


# --- TestPageCacheAlloc ---------------------------------------------------------------------

_BASE = page_base(B, 0)


def _hits(*triples):
    # (npages, base, scav) with Go's 0 base meaning "failed" -> None
    return [(n, None if b == 0 else b, s) for n, b, s in triples]


CACHE_ALLOC_CASES = {
    "Empty": (PageCache(_BASE, 0, 0), _hits(*[(n, 0, 0) for n in (1, 2, 3, 4, 5, 11, 12, 16, 27, 32, 43, 57, 64, 121)])),
    "Lo1": (PageCache(_BASE, 0x1, 0x1), _hits((1, _BASE, PS), (1, 0, 0), (10, 0, 0))),
    "Hi1": (PageCache(_BASE, 0x1 << 63, 0x1), _hits((1, _BASE + 63 * PS, 0), (1, 0, 0), (10, 0, 0))),
    "Swiss1": (PageCache(_BASE, 0x20005555, 0x5505), _hits(
        (2, 0, 0),
        (1, _BASE, PS),
        (1, _BASE + 2 * PS, PS),
        (1, _BASE + 4 * PS, 0),
        (1, _BASE + 6 * PS, 0),
        (1, _BASE + 8 * PS, PS),
        (1, _BASE + 10 * PS, PS),
        (1, _BASE + 12 * PS, PS),
        (1, _BASE + 14 * PS, PS),
        (1, _BASE + 29 * PS, 0),
        (1, 0, 0),
        (10, 0, 0),
    )),
    "Lo2": (PageCache(_BASE, 0x3, 0x2 << 62), _hits((2, _BASE, 0), (2, 0, 0), (1, 0, 0))),
    "Hi2": (PageCache(_BASE, 0x3 << 62, 0x3 << 62), _hits((2, _BASE + 62 * PS, 2 * PS), (2, 0, 0), (1, 0, 0))),
    "Swiss2": (PageCache(_BASE, 0x3333 << 31, 0x3030 << 31), _hits(
        (2, _BASE + 31 * PS, 0),
        (2, _BASE + 35 * PS, 2 * PS),
        (2, _BASE + 39 * PS, 0),
        (2, _BASE + 43 * PS, 2 * PS),
        (2, 0, 0),
    )),
    "Hi53": (PageCache(_BASE, ((1 << 53) - 1) << 10, ((1 << 16) - 1) << 10),
             _hits((53, _BASE + 10 * PS, 16 * PS), (53, 0, 0), (1, 0, 0))),
    "Full53": (PageCache(_BASE, ONES, ((1 << 16) - 1) << 10),
               _hits((53, _BASE, 16 * PS), (53, 0, 0), (1, _BASE + 53 * PS, 0))),
    "Full64": (PageCache(_BASE, ONES, ONES), _hits((64, _BASE, 64 * PS), (64, 0, 0), (1, 0, 0))),
    "FullMixed": (PageCache(_BASE, ONES, ONES), _hits(
        (5, _BASE, 5 * PS),
        (7, _BASE + 5 * PS, 7 * PS),
        (1, _BASE + 12 * PS, 1 * PS),
        (23, _BASE + 13 * PS, 23 * PS),
        (63, 0, 0),
        (3, _BASE + 36 * PS, 3 * PS),
        (3, _BASE + 39 * PS, 3 * PS),
        (3, _BASE + 42 * PS, 3 * PS),
        (12, _BASE + 45 * PS, 12 * PS),
        (11, 0, 0),
        (4, _BASE + 57 * PS, 4 * PS),
        (4, 0, 0),
        (6, 0, 0),
        (36, 0, 0),
        (2, _BASE + 61 * PS, 2 * PS),
        (3, 0, 0),
        (1, _BASE + 63 * PS, 1 * PS),
        (4, 0, 0),
        (2, 0, 0),
        (62, 0, 0),
        (1, 0, 0),
    )),
}


@pytest.mark.parametrize("name", CACHE_ALLOC_CASES)
def test_page_cache_alloc(name):  # TestPageCacheAlloc
    proto, hits = CACHE_ALLOC_CASES[name]
    c = PageCache(proto.base, proto.cache, proto.scav)
    for i, (npages, base, scav) in enumerate(hits):
        got = c.alloc(npages)
        assert got[0] == base, f"bad alloc base #{i}"
        if base is not None:  # Go: "the amount of scavenged memory should be ignored" on failure
            assert got[1] == scav, f"bad alloc scav #{i}"
        else:
            assert got[1] == scav == 0


def test_page_cache_alloc_refuses_zero_pages():
    with pytest.raises(ValueError):
        PageCache(_BASE, ONES, 0).alloc(0)


# --- TestPageCacheFlush ---------------------------------------------------------------------


def _bits64_to_bit_ranges(bits: int, base: int) -> list[tuple[int, int]]:
    ranges: list[tuple[int, int]] = []
    start = size = 0
    for i in range(64):
        if bits & (1 << i):
            if size == 0:
                start = i + base
            size += 1
        elif size:
            ranges.append((start, size))
            size = 0
    if size:
        ranges.append((start, size))
    return ranges


def _flush_cases():
    rng = random.Random(1)
    cases = [(0, 0, 0), (0, ONES, ONES)]  # Empty, Full
    for _ in range(100):  # Random
        base = rng.randrange(P // 64) * 64
        cache = rng.getrandbits(64)
        cases.append((base, cache, rng.getrandbits(64) & cache))
    return cases


@pytest.mark.parametrize("base,cache,scav", _flush_cases())
def test_page_cache_flush(base, cache, scav):  # TestPageCacheFlush
    b = new_page_alloc({B: [(base, 64)]}, {B: []})
    c = PageCache(page_base(B, base), cache, scav)
    c.flush(b)
    assert c.empty(), "pageCache flush did not clear cache"
    want = new_page_alloc({B: _bits64_to_bit_ranges(~cache & ONES, base)}, {B: _bits64_to_bit_ranges(scav, base)})
    check_page_alloc(want, b)


def test_flush_lowers_search_addr_and_restores_index_counts():
    b = new_page_alloc({B: [(0, 64)]}, {B: []})
    b.alloc(1)  # search_addr moves past the first block
    assert off(b.search_addr) >= off(page_base(B, 64))
    c = PageCache(page_base(B, 0), 0b1010, 0b10)
    c.flush(b)
    assert b.search_addr == page_base(B, 0)
    assert b.scav_index.load(B).in_use == 65 - 2
    b.check()


# --- TestPageAllocAllocToCache --------------------------------------------------------------

SUMS_PER_PHYS_PAGE = PHYS_PAGE_SIZE // 8  # PhysPageSize / PallocSumBytes
BASE_ALIGNED = B & ~(SUMS_PER_PHYS_PAGE - 1)


def _to_cache_cases():
    t = {
        "ManyArena": dict(
            before={B: [(0, P)], B + 1: [(0, P)], B + 2: [(0, P - 64)]},
            scav={B: [(0, P)], B + 1: [(0, P)], B + 2: []},
            hits=[PageCache(page_base(B + 2, P - 64), ONES, 0)],
            after={B: [(0, P)], B + 1: [(0, P)], B + 2: [(0, P)]},
        ),
        "Fail": dict(
            before={B: [(0, P)]},
            hits=[PageCache(0, 0, 0)] * 3,
            after={B: [(0, P)]},
        ),
        "RetainScavBits": dict(
            before={B: [(0, 1), (10, 2)]},
            scav={B: [(0, 4), (11, 1)]},
            hits=[PageCache(page_base(B, 0), ~(0x1 | (0x3 << 10)), 0x7 << 1)],
            after={B: [(0, 64)]},
            after_scav={B: [(0, 1), (11, 1)]},
        ),
        # PallocChunkPages >= 512
        "AllFree": dict(
            before={B: []},
            scav={B: [(1, 1), (64, 64)]},
            hits=[
                PageCache(page_base(B, 0), ONES, 0x2),
                PageCache(page_base(B, 64), ONES, ONES),
                PageCache(page_base(B, 128), ONES, 0),
                PageCache(page_base(B, 192), ONES, 0),
            ],
            after={B: [(0, 256)]},
        ),
        "NotContiguous": dict(
            before={B: [(0, P)], B + 0xFF: [(0, 0)]},
            scav={B: [(0, P)], B + 0xFF: [(31, 67)]},
            hits=[PageCache(page_base(B + 0xFF, 0), ONES, ((1 << 33) - 1) << 31)],
            after={B: [(0, P)], B + 0xFF: [(0, 64)]},
            after_scav={B: [(0, P)], B + 0xFF: [(64, 34)]},
        ),
        "First": dict(
            before={B: [(0, 32), (33, 31), (96, 32)]},
            scav={B: [(1, 4), (31, 5), (66, 2)]},
            hits=[
                PageCache(page_base(B, 0), 1 << 32, 1 << 32),
                PageCache(page_base(B, 64), (1 << 32) - 1, 0x3 << 2),
            ],
            after={B: [(0, 128)]},
        ),
        # PageAlloc64Bit
        "DiscontiguousMappedSumBoundary": dict(
            before={BASE_ALIGNED + SUMS_PER_PHYS_PAGE - 1: [(0, P - 1)], BASE_ALIGNED + BIG_JUMP: [(1, P - 1)]},
            scav={BASE_ALIGNED + SUMS_PER_PHYS_PAGE - 1: [], BASE_ALIGNED + BIG_JUMP: []},
            hits=[
                PageCache(page_base(BASE_ALIGNED + SUMS_PER_PHYS_PAGE - 1, P - 64), 1 << 63, 0),
                PageCache(page_base(BASE_ALIGNED + BIG_JUMP, 0), 1, 0),
                PageCache(0, 0, 0),
            ],
            after={BASE_ALIGNED + SUMS_PER_PHYS_PAGE - 1: [(0, P)], BASE_ALIGNED + BIG_JUMP: [(0, P)]},
        ),
    }
    return t


TO_CACHE_CASES = _to_cache_cases()


@pytest.mark.parametrize("name", TO_CACHE_CASES)
def test_page_alloc_alloc_to_cache(name):  # TestPageAllocAllocToCache
    v = TO_CACHE_CASES[name]
    b = new_page_alloc(v["before"], v.get("scav"))
    for i, expect in enumerate(v["hits"]):
        got = b.alloc_to_cache()
        assert (got.base, got.cache, got.scav) == (expect.base, expect.cache, expect.scav), f"hit #{i}: {got!r}"
    want = new_page_alloc(v["after"], v.get("after_scav"))
    check_page_alloc(want, b)


def test_alloc_to_cache_then_flush_is_a_round_trip():
    """Taking a block into the cache and flushing it straight back leaves the same
    bitmaps and summaries (only search_addr may differ: it lands on the block)."""
    b = new_page_alloc({B: [(0, 3), (70, 5)], B + 1: []}, {B: [(3, 20), (100, 9)], B + 1: [(0, P)]})
    want = new_page_alloc({B: [(0, 3), (70, 5)], B + 1: []}, {B: [(3, 20), (100, 9)], B + 1: [(0, P)]})
    for _ in range(4):
        c = b.alloc_to_cache()
        assert not c.empty()
        c.flush(b)
        check_page_alloc(want, b)
        b.alloc(1)  # move on, so the next block differs
        want.alloc(1)


def test_alloc_run_takes_what_successive_allocs_would():
    """alloc_run(n, k) (heaplab's, for batches) == successive alloc(n) calls for as
    long as each lands right after the previous one."""
    rng = random.Random(7)
    for _ in range(3000):
        cache, scav = rng.getrandbits(64), rng.getrandbits(64)
        if rng.random() < 0.3:
            cache |= ((1 << rng.randint(1, 64)) - 1) << rng.randrange(64)
            cache &= ONES
        npages, count = rng.choice([1, 1, 2, 3, 5, 8, 15]), rng.randint(1, 70)
        a, b = PageCache(_BASE, cache, scav), PageCache(_BASE, cache, scav)
        base, m, s = a.alloc_run(npages, count)
        want = []
        while len(want) < count:
            got = b.alloc(npages)
            if got[0] is None or (want and got[0] != want[-1][0] + npages * PS):
                if got[0] is not None:  # not part of the run: undo that one
                    i = (got[0] - _BASE) // PS
                    b.cache |= ((1 << npages) - 1) << i
                    b.scav |= (scav >> i & ((1 << npages) - 1)) << i
                break
            want.append(got)
        if not want:
            assert (base, m, s) == (None, 0, 0)
        else:
            assert (base, m, s) == (want[0][0], len(want), sum(x[1] for x in want))
        assert (a.cache, a.scav) == (b.cache, b.scav)
