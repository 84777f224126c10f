"""Chunk bitmaps, summaries and the scavenge-candidate search.

Ports of Go's runtime tests (Go 1.27.3): mpallocbits_test.go (TestPallocBitsAllocRange,
TestMallocBitsPopcntRange, TestPallocBitsSummarize, TestPallocBitsSummarizeRandom,
TestPallocBitsAlloc, TestPallocBitsFree, TestFindBitRange64) and mgcscavenge_test.go
(TestFillAligned, TestPallocDataFindScavengeCandidate). The expected values are Go's.
"""

from __future__ import annotations

import random

import numpy as np
import pytest

from heap.constants import PAGE_SIZE, PALLOC_CHUNK_PAGES, PHYS_HUGE_PAGE_SIZE
from heap.pagealloc import (
    FREE_CHUNK_SUM,
    BitRange,
    PageAllocError,
    PallocBits,
    PallocData,
    PallocSum,
    diff_palloc_bits,
    fill_aligned,
    find_bit_range64,
    make_palloc_bits,
    make_palloc_data,
    merge_summaries,
    pack_palloc_sum,
    stringify_palloc_bits,
    unpack_palloc_sum,
)

P = PALLOC_CHUNK_PAGES
ONES = (1 << 64) - 1


def assert_bits_equal(got: PallocBits, want: PallocBits) -> None:
    """Go's checkPallocBits: report the differing ranges bit by bit."""
    d = diff_palloc_bits(got, want)
    assert not d, "; ".join(
        f"@{r.i}: got {stringify_palloc_bits(got, r)} want {stringify_palloc_bits(want, r)}" for r in d
    )


def inverted(b: PallocBits) -> PallocBits:
    return PallocBits([~w & ONES for w in b])


def words(**set_words: int) -> PallocBits:
    b = PallocBits()
    for k, v in set_words.items():
        b[int(k[1:])] = v
    return b


# --- TestPallocBitsAllocRange ---------------------------------------------------------

ALLOC_RANGE_CASES = {
    "OneLow": (0, 1, words(w0=0x1)),
    "OneHigh": (P - 1, 1, words(w7=1 << 63)),
    "Inner": (129, 5, words(w2=0x3E)),
    "Aligned": (128, 128, words(w2=ONES, w3=ONES)),
    "Begin": (0, 321, words(w0=ONES, w1=ONES, w2=ONES, w3=ONES, w4=ONES, w5=0x1)),
    "End": (P - (64 * 3 + 1), 64 * 3 + 1, words(w7=ONES, w6=ONES, w5=ONES, w4=1 << 63)),
    "All": (0, P, PallocBits([ONES] * 8)),
}


@pytest.mark.parametrize("name", ALLOC_RANGE_CASES)
def test_palloc_bits_alloc_range(name):  # TestPallocBitsAllocRange
    i, n, want = ALLOC_RANGE_CASES[name]
    assert_bits_equal(make_palloc_bits([BitRange(i, n)]), want)


# --- TestMallocBitsPopcntRange ---------------------------------------------------------

POPCNT_CASES = {
    "None": ([], [(0, 1, 0), (5, 3, 0), (2, 11, 0), (P // 4 + 1, P // 2, 0), (0, P, 0)]),
    "All": (
        [(0, P)],
        [(0, 1, 1), (5, 3, 3), (2, 11, 11), (P // 4 + 1, P // 2, P // 2), (0, P, P)],
    ),
    "Half": (
        [(P // 2, P // 2)],
        [
            (0, 1, 0), (5, 3, 0), (2, 11, 0), (P // 2 - 1, 1, 0), (P // 2, 1, 1),
            (P // 2 + 10, 1, 1), (P // 2 - 1, 2, 1), (P // 4, P // 4, 0),
            (P // 4, P // 4 + 1, 1), (P // 4 + 1, P // 2, P // 4 + 1), (0, P, P // 2),
        ],
    ),
    "OddBound": (
        [(0, 111)],
        [
            (0, 1, 1), (5, 3, 3), (2, 11, 11), (110, 2, 1), (99, 50, 12), (110, 1, 1),
            (111, 1, 0), (99, 1, 1), (120, 1, 0), (P // 2, P // 2, 0), (0, P, 111),
        ],
    ),
    "Scattered": (
        [
            (1, 3), (5, 1), (7, 1), (10, 2), (13, 1), (15, 4), (21, 1), (23, 1), (26, 2),
            (30, 5), (36, 2), (40, 3), (44, 6), (51, 1), (53, 2), (58, 3), (63, 1), (67, 2),
            (71, 10), (84, 1), (89, 7), (99, 2), (103, 1), (107, 2), (111, 1), (113, 1),
            (115, 1), (118, 1), (120, 2), (125, 5),
        ],
        [(0, 11, 6), (0, 64, 39), (13, 64, 40), (64, 64, 34), (0, 128, 73), (1, 128, 74), (0, P, 75)],
    ),
}


@pytest.mark.parametrize("name", POPCNT_CASES)
def test_malloc_bits_popcnt_range(name):  # TestMallocBitsPopcntRange
    init, checks = POPCNT_CASES[name]
    b = make_palloc_bits(init)
    for i, n, want in checks:
        assert b.popcnt_range(i, n) == want, (i, n)


# --- TestPallocBitsSummarize / TestPallocBitsSummarizeRandom -----------------------------

SUMMARIZE_CASES = {
    "NoneFree": ([], (0, 0, 0)),
    "OnlyStart": ([(0, 10)], (10, 10, 0)),
    "OnlyEnd": ([(P - 40, 40)], (0, 40, 40)),
    "StartAndEnd": ([(0, 11), (P - 23, 23)], (11, 23, 23)),
    "StartMaxEnd": ([(0, 4), (50, 100), (P - 4, 4)], (4, 100, 4)),
    "OnlyMax": ([(1, 20), (35, 241), (P - 50, 30)], (0, 241, 0)),
    "MultiMax": ([(35, 2), (40, 5), (100, 5)], (0, 5, 0)),
    "One": ([(2, 1)], (0, 1, 0)),
    "AllFree": ([(0, P)], (P, P, P)),
}


@pytest.mark.parametrize("name", SUMMARIZE_CASES)
def test_palloc_bits_summarize(name):  # TestPallocBitsSummarize
    free, want = SUMMARIZE_CASES[name]
    b = inverted(make_palloc_bits(free))  # the table lists free ranges; 1 = in use
    assert b.summarize() == PallocSum.of(*want)


def summarize_slow(b: PallocBits) -> PallocSum:
    """Go's SummarizeSlow: count bit by bit."""
    bits = [b.get(i) for i in range(P)]
    start = next((i for i, v in enumerate(bits) if v), P)
    end = next((i for i, v in enumerate(reversed(bits)) if v), P)
    most = run = 0
    for v in bits:
        run = 0 if v else run + 1
        most = max(most, run)
    return PallocSum.of(start, most, end)


def test_palloc_bits_summarize_random():  # TestPallocBitsSummarizeRandom
    rng = random.Random(1)
    for k in range(1000):
        # Mix uniform words with sparse and dense ones so long runs also occur.
        mode = k % 3
        ws = []
        for _ in range(8):
            w = rng.getrandbits(64)
            if mode == 1:
                w &= rng.getrandbits(64) & rng.getrandbits(64) & rng.getrandbits(64)
            elif mode == 2:
                w = 0 if rng.random() < 0.5 else w & rng.getrandbits(64)
            ws.append(w)
        b = PallocBits(ws)
        assert b.summarize() == summarize_slow(b), ws


@pytest.mark.parametrize(
    "patt",
    [0, ONES, 0xAA, 0xAAAAAAAAAAAAAAAA, 0x80000000AAAAAAAA, 0xAAAAAAAA00000001, 0xBBBBBBBBBBBBBBBB,
     0x80000000BBBBBBBB, 0xBBBBBBBB00000001, 0xCCCCCCCCCCCCCCCC, 0x4444444444444444,
     0x4040404040404040, 0x4000400040004000, 0x1000404044CCAAFF],
)
def test_palloc_bits_summarize_patterns(patt):  # BenchmarkPallocBitsSummarize's own check
    b = PallocBits([patt] * 8)
    assert b.summarize() == summarize_slow(b)


def test_pack_palloc_sum():
    assert pack_palloc_sum(P, P, P) == FREE_CHUNK_SUM
    assert unpack_palloc_sum(pack_palloc_sum(3, 77, 9)) == (3, 77, 9)
    top = 1 << 21
    assert pack_palloc_sum(top, top, top) == 1 << 63  # the all-max special encoding
    assert unpack_palloc_sum(1 << 63) == (top, top, top)
    assert pack_palloc_sum(0, 0, 0) == 0
    assert PallocSum.of(5, 6, 7).pack() == pack_palloc_sum(5, 6, 7)


def test_merge_summaries_against_flat_bitmap():
    # Summaries of 8 neighbouring chunks merged must equal the summary of the
    # concatenated 4096-page bitmap.
    rng = random.Random(7)
    for _ in range(300):
        chunks = []
        for _ in range(8):
            kind = rng.random()
            if kind < 0.25:
                chunks.append(0)
            elif kind < 0.5:
                chunks.append((1 << P) - 1)
            else:
                chunks.append(rng.getrandbits(P) & rng.getrandbits(P) if rng.random() < 0.5 else rng.getrandbits(P))
        sums = [PallocBits([(c >> (64 * k)) & ONES for k in range(8)]).summarize_packed() for c in chunks]
        flat = "".join(format(c, f"0{P}b")[::-1] for c in chunks)  # '1' = in use, page order
        free = [ch == "0" for ch in flat]
        start = next((i for i, f in enumerate(free) if not f), len(free))
        end = next((i for i, f in enumerate(reversed(free)) if not f), len(free))
        most = run = 0
        for f in free:
            run = run + 1 if f else 0
            most = max(most, run)
        assert merge_summaries(sums, 9) == pack_palloc_sum(start, most, end)


# --- TestPallocBitsAlloc ----------------------------------------------------------------

NONE = None  # Go's ^uint(0)

PALLOC_ALLOC_CASES = {
    "AllFree1": ([], 1, [0, 1, 2, 3, 4, 5], [(0, 6)]),
    "AllFree2": ([], 2, [0, 2, 4, 6, 8, 10], [(0, 12)]),
    "AllFree5": ([], 5, [0, 5, 10, 15, 20], [(0, 25)]),
    "NoneFree1": ([(0, P)], 1, [NONE, NONE], [(0, P)]),
    "NoneFree2": ([(0, P)], 2, [NONE, NONE], [(0, P)]),
    "NoneFree5": ([(0, P)], 5, [NONE, NONE], [(0, P)]),
    "NoneFree65": ([(0, P)], 65, [NONE, NONE], [(0, P)]),
    "ExactFit1": ([(0, P // 2 - 3), (P // 2 - 2, P // 2 + 2)], 1, [P // 2 - 3, NONE], [(0, P)]),
    "ExactFit2": ([(0, P // 2 - 3), (P // 2 - 1, P // 2 + 1)], 2, [P // 2 - 3, NONE], [(0, P)]),
    "ExactFit5": ([(0, P // 2 - 3), (P // 2 + 2, P // 2 - 2)], 5, [P // 2 - 3, NONE], [(0, P)]),
    "AllFree64": ([], 64, [0, 64, 128], [(0, 192)]),
    "AllFree65": ([], 65, [0, 65, 130], [(0, 195)]),
    "SomeFree64": ([(0, 32), (64, 32), (100, P - 100)], 64, [NONE], [(0, 32), (64, 32), (100, P - 100)]),
    "ExactFit65": ([(0, P // 2 - 31), (P // 2 + 34, P // 2 - 34)], 65, [P // 2 - 31, NONE], [(0, P)]),
    "SomeFree161": ([(0, 185), (331, 1)], 161, [332], [(0, 185), (331, 162)]),
}


@pytest.mark.parametrize("name", PALLOC_ALLOC_CASES)
def test_palloc_bits_alloc(name):  # TestPallocBitsAlloc
    before, npages, hits, after = PALLOC_ALLOC_CASES[name]
    b = make_palloc_bits(before)
    for k, want in enumerate(hits):
        got, _ = b.find(npages, 0)
        assert got == want, f"find #{k + 1}"
        if want is not None:
            b.alloc_range(got, npages)
    assert_bits_equal(b, make_palloc_bits(after))


def find_slow(b: PallocBits, npages: int, search_idx: int):
    """First fit by brute force, from the word holding search_idx (Go's contract)."""
    lo = (search_idx // 64) * 64
    free = [not b.get(i) for i in range(P)]
    first = next((i for i in range(lo, P) if free[i]), None)
    for s in range(lo, P - npages + 1):
        if all(free[s : s + npages]):
            return s, first
    return None, first


def test_palloc_bits_find_random_against_slow():
    rng = random.Random(3)
    for k in range(400):
        dens = rng.choice([0.05, 0.3, 0.7, 0.95])
        ws = [sum(1 << j for j in range(64) if rng.random() < dens) for _ in range(8)]
        if k % 5 == 0:  # long free stretches straddling words
            ws[rng.randrange(8)] = 0
            ws[rng.randrange(8)] = 0
        b = PallocBits(ws)
        npages = rng.choice([1, 2, 3, 5, 8, 17, 63, 64, 65, 100, 128, 200, 511, 512])
        search_idx = rng.randrange(P)
        idx, new_search = b.find(npages, search_idx)
        want_idx, want_first = find_slow(b, npages, search_idx)
        assert idx == want_idx, (ws, npages, search_idx)
        if want_first is not None:
            assert new_search == want_first
        else:
            assert idx is None


def test_find_searches_from_the_word_not_the_bit():
    # Go begins at word searchIdx/64: a free bit below searchIdx in that word counts.
    b = make_palloc_bits([(0, P)])
    b.free(65, 1)
    assert b.find(1, 100) == (65, 65)
    assert b.find(1, 128) == (None, None)
    assert b.find1(64) == 65


# --- TestPallocBitsFree -----------------------------------------------------------------

PALLOC_FREE_CASES = {
    "NoneFree1": ([], 1, [0, 1, 2, 3, 4, 5], [(0, 6)]),
    "NoneFree2": ([], 2, [0, 2, 4, 6, 8, 10], [(0, 12)]),
    "NoneFree5": ([], 5, [0, 5, 10, 15, 20], [(0, 25)]),
    "SomeFree": ([(0, 32), (64, 32), (100, 1)], 1, [32], [(0, 33), (64, 32), (100, 1)]),
    "NoneFree64": ([], 64, [0, 64, 128], [(0, 192)]),
    "NoneFree65": ([], 65, [0, 65, 130], [(0, 195)]),
}


@pytest.mark.parametrize("name", PALLOC_FREE_CASES)
def test_palloc_bits_free(name):  # TestPallocBitsFree
    before_inv, npages, frees, after_inv = PALLOC_FREE_CASES[name]
    b = inverted(make_palloc_bits(before_inv))
    for i in frees:
        b.free(i, npages)
    assert_bits_equal(b, inverted(make_palloc_bits(after_inv)))


# --- TestFindBitRange64 -----------------------------------------------------------------


@pytest.mark.parametrize("n", range(1, 65))
def test_find_bit_range64_trivial(n):  # TestFindBitRange64 (the loops)
    assert find_bit_range64(ONES, n) == 0
    assert find_bit_range64(0, n) >= 64


@pytest.mark.parametrize(
    "x,n,want",
    [
        (0x8000000000000000, 1, 63),
        (0xC000010001010000, 2, 62),
        (0xC000010001030000, 2, 16),
        (0xE000030001030000, 3, 61),
        (0xE000030001070000, 3, 16),
        (0xFFFF03FF01070000, 16, 48),
        (0xFFFF03FF0107FFFF, 16, 0),
        (0x0FFF03FF01079FFF, 16, None),
    ],
)
def test_find_bit_range64(x, n, want):  # TestFindBitRange64
    got = find_bit_range64(x, n)
    if want is None:
        assert got >= 64
    else:
        assert got == want


# --- TestFillAligned ---------------------------------------------------------------------


def fill_aligned_slow(x: int, m: int) -> int:
    if m == 1:
        return x
    out = 0
    for i in range(0, 64, m):
        if (x >> i) & ((1 << m) - 1):
            out |= ((1 << m) - 1) << i
    return out


@pytest.mark.parametrize("m", [1, 2, 4, 8, 16, 32, 64])
def test_fill_aligned(m):  # TestFillAligned
    fixed = [
        0x0000000000000000, 0x00000000FFFFFFFF, 0xFFFFFFFF00000000, 0x8000000000000001,
        0xF00000000000000F, 0xF00000010050000F, 0xFFFFFFFFFFFFFFFF, 0x0000000000000001,
        0x0000000000000002, 0x0000000000000008, (1 << (m - 1)) & ONES, (1 << m) & ONES,
        0xB02B9EFFCF137016, 0x3975A076A9FBFF18, 0x0F8C88EC3B81506E, 0x60F14D80EF2FA0E6,
    ]
    for x in fixed:
        assert fill_aligned(x, m) == fill_aligned_slow(x, m), hex(x)
    rng = random.Random(m)
    for _ in range(1000):
        x = rng.getrandbits(64)
        assert fill_aligned(x, m) == fill_aligned_slow(x, m)
        if m > 1:
            val = 0
            for n in range(0, 64, m):
                if rng.getrandbits(1) == 0:
                    val |= (rng.getrandbits(64) & ((1 << m) - 1)) << n
            assert fill_aligned(val, m) == fill_aligned_slow(val, m)


def test_fill_aligned_example_and_bad_m():
    assert fill_aligned(0x0100A3, 8) == 0xFF00FF
    with pytest.raises(PageAllocError, match="bad m value"):
        fill_aligned(1, 3)


# --- TestPallocDataFindScavengeCandidate ---------------------------------------------------


def _scavenge_candidate_cases():
    t = {
        "MixedMin1": ([(0, 40), (42, P - 42)], [(0, 41), (42, P - 42)], 1, P, (41, 1)),
        "MultiMin1": ([(0, 63), (65, 20), (87, P - 87)], [(86, 1)], 1, P, (85, 1)),
    }
    m = 1
    while m <= 64:
        sfx = f"Min{m}"
        t["AllFree" + sfx] = ([], [], m, P, (0, P))
        t["AllScavenged" + sfx] = ([], [(0, P)], m, P, (0, 0))
        t["NoneFree" + sfx] = ([(0, P)], [(P // 2, P // 2)], m, P, (0, 0))
        t["StartFree" + sfx] = ([(m, P - m)], [], m, P, (0, m))
        t["EndFree" + sfx] = ([(0, P - m)], [], m, P, (P - m, m))
        t["Straddle64" + sfx] = ([(0, 64 - m), (64 + m, P - (64 + m))], [], m, 2 * m, (64 - m, 2 * m))
        t["BottomEdge64WithFull" + sfx] = (
            [(64, 64), (128 + 3 * m, P - (128 + 3 * m))], [(1, 10)], m, 3 * m, (128, 3 * m)
        )
        t["BottomEdge64WithPocket" + sfx] = (
            [(64, 62), (127, 1), (128 + 3 * m, P - (128 + 3 * m))], [(1, 10)], m, 3 * m, (128, 3 * m)
        )
        t["Max0" + sfx] = ([], [(0, P - m)], m, 0, (P - m, m))
        if m <= 8:
            # Go reuses one map key for these across m, so only the last m (8) survives
            # there; every m is checked here.
            t["OneFree" + sfx] = ([(0, 40), (40 + m, P - (40 + m))], [], m, P, (40, m))
            t["OneScavenged" + sfx] = ([(0, 40), (40 + m, P - (40 + m))], [(40, 1)], m, P, (0, 0))
        if m > 1:
            t["MaxUnaligned" + sfx] = ([], [(0, P - (m * 2 - 1))], m, m - 2, (P - m, m))
            t["SkipSmall" + sfx] = ([(0, 64 - m), (64, 5), (70, 11), (82, P - 82)], [], m, m, (64 - m, m))
            t["SkipMisaligned" + sfx] = (
                [(0, 64 - m), (64, 63), (127 + m, P - (127 + m))], [], m, m, (64 - m, m)
            )
            t["MaxLessThan" + sfx] = ([], [(0, P - m)], m, 1, (P - m, m))
        m *= 2
    bits = PHYS_HUGE_PAGE_SIZE // PAGE_SIZE  # 256 pages per 2 MiB huge page
    t["PreserveHugePageBottom"] = ([(bits + 2, P - (bits + 2))], [], 1, 3, (0, bits + 2))
    if 3 * bits < P:  # Go's guard: needs 3 huge pages per chunk (not so with 2 MiB)
        t["PreserveHugePageMiddle"] = ([(0, bits - 10), (2 * bits + 10, P - (2 * bits + 10))], [], 1, 12, (bits, bits + 10))
    t["PreserveHugePageTop"] = ([(0, P - bits)], [], 1, 1, (P - bits, bits))
    return t


SCAV_CANDIDATE_CASES = _scavenge_candidate_cases()


@pytest.mark.parametrize("name", SCAV_CANDIDATE_CASES)
def test_palloc_data_find_scavenge_candidate(name):  # TestPallocDataFindScavengeCandidate
    alloc, scavenged, mn, mx, want = SCAV_CANDIDATE_CASES[name]
    b = make_palloc_data(alloc, scavenged)
    got = b.find_scavenge_candidate(P - 1, mn, mx)
    if not (got[1] == 0 and want[1] == 0):
        assert got == want


def test_find_scavenge_candidate_huge_page_size_variants():
    # The PreserveHugePageAll / None branches of the Go test, reached by passing the
    # huge page size Go would have discovered on such a machine.
    d = PallocData()
    assert d.find_scavenge_candidate(P - 1, 1, 1, phys_huge_page_size=P * PAGE_SIZE) == (0, P)
    assert d.find_scavenge_candidate(P - 1, 1, 1, phys_huge_page_size=0) == (P - 1, 1)
    # With 1 MiB huge pages (128 pages) all three preserve cases of the Go test apply.
    hp, bits = 1 << 20, 128
    cases = [
        ([(bits + 2, P - (bits + 2))], 3, (0, bits + 2)),  # Bottom
        ([(0, bits - 10), (2 * bits + 10, P - (2 * bits + 10))], 12, (bits, bits + 10)),  # Middle
        ([(0, P - bits)], 1, (P - bits, bits)),  # Top
    ]
    for alloc, mx, want in cases:
        got = make_palloc_data(alloc, []).find_scavenge_candidate(P - 1, 1, mx, phys_huge_page_size=hp)
        assert got == want


def test_find_scavenge_candidate_bad_min():
    d = PallocData()
    with pytest.raises(PageAllocError, match="power of 2"):
        d.find_scavenge_candidate(P - 1, 3, 4)
    with pytest.raises(PageAllocError, match="too large"):
        d.find_scavenge_candidate(P - 1, 128, 4)


def test_find_scavenge_candidate_searches_down_from_word():
    d = make_palloc_data([(0, P)], [])
    d.free(10, 5)
    d.free(300, 4)
    assert d.find_scavenge_candidate(P - 1, 1, P) == (300, 4)
    assert d.find_scavenge_candidate(255, 1, P) == (10, 5)  # words above 255's are skipped
    assert d.find_scavenge_candidate(5, 1, P) == (10, 5)  # ...but all of its own word counts


def test_palloc_data_alloc_clears_scavenged():
    d = make_palloc_data([], [(0, P)])
    d.alloc_range(3, 70)
    assert d.scavenged.popcnt_range(0, P) == P - 70
    assert d.palloc_bits.popcnt_range(0, P) == 70
    assert d.palloc_bits.to_int() & d.scavenged.to_int() == 0
    d.alloc_all()
    assert d.scavenged.count() == 0 and d.palloc_bits.count() == P


def test_bitmap_is_numpy_and_shares_storage():
    arr = np.zeros(8, dtype=np.uint64)
    b = PallocBits(arr)
    b.alloc_range(60, 10)
    assert arr[0] == np.uint64(0xF << 60) and arr[1] == np.uint64(0x3F)
    assert b.bits.dtype == np.uint64 and b.bits.shape == (8,)
    assert b[0] == 0xF << 60
    with pytest.raises(ValueError):
        PallocBits(np.zeros(8, dtype=np.int64))
