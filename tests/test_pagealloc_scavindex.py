"""The scavenge index and address ranges.

Ports of Go's runtime tests (Go 1.27.3): mgcscavenge_test.go TestScavengeIndex and
TestScavChunkDataPack, mranges_test.go TestAddrRangesAdd and TestAddrRangesFindSucc.
"""

from __future__ import annotations

import pytest

from heap.constants import PALLOC_CHUNK_PAGES
from heap.pagealloc import (
    BASE_CHUNK_IDX,
    AddrRange,
    AddrRanges,
    AtomicOffAddr,
    PageAllocError,
    ScavChunkData,
    new_scavenge_index,
    page_base,
)

P = PALLOC_CHUNK_PAGES
B = BASE_CHUNK_IDX
MAXU = (1 << 64) - 1

# --- TestScavengeIndex ----------------------------------------------------------------------


def setup(force: bool):
    """Go's setup: 64 chunks, dense last generation, all empty, cursors reset."""
    si = new_scavenge_index(B, B + 64)
    si.alloc_range(page_base(B, 0), page_base(B + 64, 0))
    si.next_gen()
    si.free_range(page_base(B, 0), page_base(B + 64, 0))
    for ci in range(B, B + 64):
        si.set_empty(ci)
    si.reset_search_addrs()

    def mark(base, limit):
        si.alloc_range(base, limit)
        si.free_range(base, limit)

    def find(want_ci, want_off):
        got = si.find(force)
        assert got == (want_ci, want_off)
        si.set_empty(got[0])

    return mark, find, si.next_gen


def _find_desc(find, hi, lo):
    for i in range(hi, lo - 1, -1):
        find(i, P - 1)


SCAV_INDEX_CASES = {
    "Uninitialized": (lambda mark: None, lambda find: None),
    "OnePage": (lambda mark: mark(page_base(B, 3), page_base(B, 4)), lambda find: find(B, 3)),
    "FirstPage": (lambda mark: mark(page_base(B, 0), page_base(B, 1)), lambda find: find(B, 0)),
    "SeveralPages": (lambda mark: mark(page_base(B, 9), page_base(B, 14)), lambda find: find(B, 13)),
    "WholeChunk": (lambda mark: mark(page_base(B, 0), page_base(B + 1, 0)), lambda find: find(B, P - 1)),
    "LastPage": (lambda mark: mark(page_base(B, P - 1), page_base(B + 1, 0)), lambda find: find(B, P - 1)),
    "SevenChunksOffset": (
        lambda mark: mark(page_base(B + 6, 11), page_base(B + 13, 15)),
        lambda find: (find(B + 13, 14), _find_desc(find, B + 12, B + 6)),
    ),
    "ThirtyTwoChunks": (
        lambda mark: mark(page_base(B, 0), page_base(B + 32, 0)),
        lambda find: _find_desc(find, B + 31, B),
    ),
    "ThirtyTwoChunksOffset": (
        lambda mark: mark(page_base(B + 3, 0), page_base(B + 35, 0)),
        lambda find: _find_desc(find, B + 34, B + 3),
    ),
    "Mark": (
        lambda mark: [mark(page_base(i, 0), page_base(i + 1, 0)) for i in range(B, B + 32)],
        lambda find: _find_desc(find, B + 31, B),
    ),
    "MarkIdempotentOneChunk": (
        lambda mark: [mark(page_base(B, 0), page_base(B + 1, 0)) for _ in range(2)],
        lambda find: find(B, P - 1),
    ),
    "MarkIdempotentThirtyTwoChunks": (
        lambda mark: [mark(page_base(B, 0), page_base(B + 32, 0)) for _ in range(2)],
        lambda find: _find_desc(find, B + 31, B),
    ),
    "MarkIdempotentThirtyTwoChunksOffset": (
        lambda mark: (mark(page_base(B + 4, 0), page_base(B + 31, 0)), mark(page_base(B + 5, 0), page_base(B + 36, 0))),
        lambda find: _find_desc(find, B + 35, B + 4),
    ),
    "TwoChunks": (
        lambda mark: mark(page_base(B, 128), page_base(B + 1, 128)),
        lambda find: (find(B + 1, 127), find(B, P - 1)),
    ),
    "TwoChunksOffset": (
        lambda mark: mark(page_base(B + 7, 128), page_base(B + 8, 129)),
        lambda find: (find(B + 8, 128), find(B + 7, P - 1)),
    ),
}


@pytest.mark.parametrize("name", SCAV_INDEX_CASES)
def test_scavenge_index_bg(name):  # TestScavengeIndex "Bg/<name>"
    do_mark, do_find = SCAV_INDEX_CASES[name]
    mark, find, next_gen = setup(force=False)
    do_mark(mark)
    find(0, 0)  # nothing visible before the next generation
    next_gen()
    do_find(find)
    find(0, 0)  # the test exhausts the index


@pytest.mark.parametrize("name", SCAV_INDEX_CASES)
def test_scavenge_index_force(name):  # TestScavengeIndex "Force/<name>"
    do_mark, do_find = SCAV_INDEX_CASES[name]
    mark, find, _ = setup(force=True)
    do_mark(mark)
    do_find(find)
    find(0, 0)


def test_scavenge_index_bg_mark_interleaved():  # TestScavengeIndex "Bg/MarkInterleaved"
    mark, find, next_gen = setup(force=False)
    for i in range(B, B + 32):
        mark(page_base(i, 0), page_base(i + 1, 0))
        next_gen()
        find(i, P - 1)
    find(0, 0)


def test_scavenge_index_force_mark_interleaved():  # TestScavengeIndex "Force/MarkInterleaved"
    mark, find, _ = setup(force=True)
    for i in range(B, B + 32):
        mark(page_base(i, 0), page_base(i + 1, 0))
        find(i, P - 1)
    find(0, 0)


# --- TestScavChunkDataPack --------------------------------------------------------------------


@pytest.mark.parametrize(
    "gen,in_use,last_in_use,flags",
    [(1918237402, 512, 512, 0b11), ((1 << 32) - 1, 12, 0, 0b00), (7, 0, 495, 0b1), (0, 0, 0, 0)],
)
def test_scav_chunk_data_pack(gen, in_use, last_in_use, flags):  # TestScavChunkDataPack
    sc0 = ScavChunkData(gen=gen, in_use=in_use, last_in_use=last_in_use, flags=flags)
    assert ScavChunkData.unpack(sc0.pack()) == sc0


def test_scav_chunk_data_layout():
    sc = ScavChunkData(gen=5, in_use=3, last_in_use=9, flags=1)
    assert sc.pack() == 3 | (9 << 16) | (1 << 26) | (5 << 32)


def test_scav_chunk_data_rules():
    sc = ScavChunkData()
    assert sc.is_empty() and not sc.should_scavenge(0, True)  # fresh chunk: nothing to do
    sc.alloc(P, 0)
    sc.free(10, 0)  # gen 0: inUse 502 -> dense
    assert sc.should_scavenge(0, True) and not sc.should_scavenge(0, False)
    sc.free(10, 1)  # new gen: lastInUse = 502 (dense last generation)
    assert sc.last_in_use == 502 and sc.in_use == 492
    assert not sc.should_scavenge(1, False)
    assert sc.should_scavenge(2, False)  # a generation later only inUse counts
    sc.alloc(P - 492, 1)
    assert sc.in_use == P and sc.is_empty()
    with pytest.raises(PageAllocError, match="too many pages"):
        sc.alloc(1, 1)
    with pytest.raises(PageAllocError, match="below zero"):
        ScavChunkData().free(1, 0)


def test_atomic_off_addr_marking():
    a = AtomicOffAddr()
    assert a.load() == (0xFFFF800000000000, False)  # cleared = minOffAddr
    a.store_min(page_base(B, 5))  # cleared is the minimum: nothing is lower
    assert a.load() == (0xFFFF800000000000, False)
    a.store_marked(page_base(B, 5))
    a.store_unmark(page_base(B, 5), page_base(B, 5))
    assert a.load() == (page_base(B, 5), False)
    a.store_min(page_base(B, 9))  # not lower: kept
    assert a.load() == (page_base(B, 5), False)
    a.store_min(page_base(B, 4))
    assert a.load() == (page_base(B, 4), False)
    a.store_marked(page_base(B, 700))
    a.store_min(page_base(B, 1))  # a marked value is not overwritten by store_min
    a.clear()  # ...nor cleared
    assert a.load() == (page_base(B, 700), True)
    a.store_unmark(page_base(B, 699), page_base(B, 2))  # wrong expected value: no-op
    assert a.load() == (page_base(B, 700), True)
    a.store_unmark(page_base(B, 700), page_base(B, 2))
    assert a.load() == (page_base(B, 2), False)
    a.clear()
    assert a.load()[0] == 0xFFFF800000000000


# --- TestAddrRangesAdd / TestAddrRangesFindSucc ------------------------------------------------


def validate(a: AddrRanges, *want: AddrRange) -> None:
    """Go's validateAddrRanges."""
    assert a.ranges == list(want)
    for i, r in enumerate(a.ranges):
        assert r.base < r.limit
        if i:
            prev = a.ranges[i - 1]
            assert prev.base < r.base and prev.limit != r.base and prev.limit <= r.base
    assert a.total_bytes == sum(r.size() for r in want)


def test_addr_ranges_add():  # TestAddrRangesAdd
    a = AddrRanges()
    a.add(AddrRange.make(512, 1024))
    validate(a, AddrRange(512, 1024))
    a.add(AddrRange.make(1024, 2048))  # coalesce up
    validate(a, AddrRange(512, 2048))
    a.add(AddrRange.make(4096, 8192))
    validate(a, AddrRange(512, 2048), AddrRange(4096, 8192))
    a.add(AddrRange.make(3776, 4096))  # coalesce down
    validate(a, AddrRange(512, 2048), AddrRange(3776, 8192))
    a.add(AddrRange.make(2048, 3776))  # coalesce both ways
    validate(a, AddrRange(512, 8192))
    expected = [AddrRange(512, 8192)]
    for i in range(64):  # push ranges to the end (Go: forces backing-store growth)
        d = AddrRange.make(8192 + (i + 1) * 2048, 8192 + (i + 1) * 2048 + 10)
        a.add(d)
        expected.append(d)
        validate(a, *expected)
    bottom = []
    for i in range(63):  # and to the beginning
        d = AddrRange.make(8 + i * 8, 8 + i * 8 + 4)
        a.add(d)
        bottom.append(d)
        validate(a, *(bottom + expected))


def test_addr_ranges_add_rejects_bad_ranges():
    a = AddrRanges()
    with pytest.raises(PageAllocError, match="zero-sized"):
        a.add(AddrRange.make(4096, 4096))
    a.add(AddrRange.make(4096, 8192))
    with pytest.raises(PageAllocError):
        a.add(AddrRange.make(6000, 9000))  # overlaps
    with pytest.raises(PageAllocError, match="same memory segment"):
        AddrRange.make(0x7FFFFFFFF000, 0xFFFF800000001000)


_LARGE = [AddrRange.make(5 + i * 5, 5 + i * 5 + 3) for i in range(100)]
_THREE = [AddrRange.make(6, 10), AddrRange.make(12, 16), AddrRange.make(19, 22)]

FIND_SUCC_CASES = {
    "Empty": (12, 0, []),
    "OneBefore": (12, 0, [AddrRange.make(14, 16)]),
    "OneWithin": (14, 1, [AddrRange.make(14, 16)]),
    "OneAfterLimit": (16, 1, [AddrRange.make(14, 16)]),
    "OneAfter": (17, 1, [AddrRange.make(14, 16)]),
    "ThreeBefore": (3, 0, _THREE),
    "ThreeAfter": (24, 3, _THREE),
    "ThreeBetween": (11, 1, _THREE),
    "ThreeWithin": (9, 1, _THREE),
    "Zero": (0, 1, [AddrRange.make(0, 10)]),
    "Max": (MAXU, 1, [AddrRange.make(MAXU - 5, MAXU)]),
    "LargeBefore": (2, 0, _LARGE),
    "LargeAfter": (5 + len(_LARGE) * 5 + 30, len(_LARGE), _LARGE),
    "LargeBetweenLow": (14, 2, _LARGE),
    "LargeBetweenHigh": (249, 49, _LARGE),
    "LargeWithinLow": (25, 5, _LARGE),
    "LargeWithinHigh": (396, 79, _LARGE),
    "LargeWithinMiddle": (250, 50, _LARGE),
}


@pytest.mark.parametrize("name", FIND_SUCC_CASES)
def test_addr_ranges_find_succ(name):  # TestAddrRangesFindSucc
    base, expect, ranges = FIND_SUCC_CASES[name]
    assert AddrRanges(ranges).find_succ(base) == expect


def test_addr_ranges_queries_and_removal():
    a = AddrRanges([AddrRange.make(100, 200), AddrRange.make(300, 400)])
    assert a.find_addr_greater_equal(50) == 100
    assert a.find_addr_greater_equal(150) == 150
    assert a.find_addr_greater_equal(250) == 300
    assert a.find_addr_greater_equal(400) is None
    assert a.contains(399) and not a.contains(400) and not a.contains(250)
    assert a.remove_last(30) == AddrRange(370, 400)
    assert a.total_bytes == 170
    a.remove_greater_equal(150)
    assert a.ranges == [AddrRange(100, 150)] and a.total_bytes == 50
    a.remove_greater_equal(10)
    assert a.ranges == [] and a.total_bytes == 0


def test_addr_range_subtract():
    r = AddrRange.make(100, 200)
    assert r.subtract(AddrRange.make(50, 120)) == AddrRange(120, 200)
    assert r.subtract(AddrRange.make(150, 250)) == AddrRange(100, 150)
    assert r.subtract(AddrRange.make(0, 300)).size() == 0
    with pytest.raises(PageAllocError, match="bad prune"):
        r.subtract(AddrRange.make(120, 130))


def test_index_updates_equal_scav_chunk_data_methods():
    # The index updates packed values in place; they must agree with ScavChunkData.
    import random

    rng = random.Random(5)
    si = new_scavenge_index(B, B + 1)
    ref = ScavChunkData()
    for _ in range(3000):
        r = rng.random()
        if r < 0.05:
            si.next_gen()
        elif r < 0.1:
            si.set_empty(B)
            ref.set_empty()
        elif r < 0.55:
            n = rng.randint(1, 40)
            if ref.in_use + n <= P:
                si.alloc(B, n)
                ref.alloc(n, si.gen)
        else:
            n = rng.randint(1, 40)
            if ref.in_use >= n:
                si.free(B, 0, n)
                ref.free(n, si.gen)
        assert si.load(B) == ref
        assert si.chunks[B] == ref.pack() if B in si.chunks else True
