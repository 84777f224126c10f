"""Bit tricks on Python ints: 64-bit words and whole 512-bit chunk bitmaps.

A chunk bitmap is 8 little-endian uint64 words; read as one Python int (word 0 in the
low bits) bit ``i`` is page ``i``. CPython works on such a 512-bit int in a handful of
machine instructions per operation, so scanning a whole chunk with a few shifts and
masks is much cheaper than visiting its words one by one from Python.

Every search here returns exactly what Go's word-by-word loops return; only the way of
computing it differs.
"""

from __future__ import annotations

from ..constants import PALLOC_CHUNK_PAGES

WORD_BITS = 64
WORD_MASK = (1 << WORD_BITS) - 1
CHUNK_BITS = PALLOC_CHUNK_PAGES
CHUNK_MASK = (1 << CHUNK_BITS) - 1
WORDS_PER_CHUNK = CHUNK_BITS // WORD_BITS


def tz(x: int) -> int:
    """Index of the lowest set bit of ``x`` (``x`` must be non-zero)."""
    return (x & -x).bit_length() - 1


def tz64(x: int) -> int:
    """Trailing zeros of a 64-bit word; 64 for zero (as Go's TrailingZeros64)."""
    return (x & -x).bit_length() - 1 if x else 64


def lz64(x: int) -> int:
    """Leading zeros of a 64-bit word; 64 for zero (as Go's LeadingZeros64)."""
    return WORD_BITS - x.bit_length()


def first_run(c: int, n: int) -> int | None:
    """Lowest index where ``n`` consecutive 1 bits of ``c`` start, or None.

    Each step ANDs ``c`` with itself shifted down, which keeps a bit only if the bits
    above it are set too; after shifts totalling ``n - 1`` a surviving bit marks the
    start of ``n`` ones. Shifts double in size (a run shortened by ``k`` leaves gaps of
    at least ``k`` behind), so this takes O(log n) big-int operations. Bits above the
    top of ``c`` count as zeros, so no run is found past the end of the bitmap.
    """
    if c == 0:
        return None
    remaining = n - 1
    step = 1
    while remaining > 0:
        s = remaining if remaining <= step else step
        c &= c >> s
        if c == 0:
            return None
        remaining -= s
        step <<= 1
    return (c & -c).bit_length() - 1


#: Up to this many runs, longest_run visits them one by one (about four big-int
#: operations each) rather than searching by doubling (about twenty in all).
_FEW_RUNS = 6


def longest_run(c: int) -> int:
    """Length of the longest run of 1 bits in ``c`` (0 when ``c`` is 0).

    With many runs: first double the tested length (ones-runs of >= 1, 2, 4, ... survive) until nothing
    survives, then add back the powers of two below the last success from largest to
    smallest, keeping each that still leaves a survivor: a binary search costing
    O(log max) big-int operations.
    """
    if c == 0:
        return 0
    if (c & ~(c << 1)).bit_count() <= _FEW_RUNS:
        # Few runs (the usual chunk: a used part and a free part or two): visit each.
        # Adding its lowest bit to c carries through the lowest run, clearing it and
        # setting the bit above, so c & ~(c + low) is exactly that run.
        best = 0
        while c:
            low = c & -c
            nxt = c + low
            n = (c & ~nxt).bit_length() - low.bit_length() + 1
            if n > best:
                best = n
            c &= nxt
        return best
    levels = [c]  # levels[k]: bit i set iff bits i .. i + 2**k - 1 are all set
    length = 1
    while True:
        nxt = c & (c >> length)
        if nxt == 0:
            break
        c = nxt
        length <<= 1
        levels.append(c)
    # c now marks runs of at least `length`; none reach 2 * length.
    for k in range(len(levels) - 2, -1, -1):
        t = c & (levels[k] >> length)
        if t:
            c = t
            length += 1 << k
    return length


def find_bit_range64(c: int, n: int) -> int:
    """Go's ``findBitRange64``: index of the first run of ``n`` set bits in the 64-bit
    word ``c``, or 64 (any value >= 64 means "none" in Go) when there is none.
    ``n`` must be at least 1."""
    if n <= 0:
        raise ValueError(f"find_bit_range64: n must be > 0, got {n}")
    i = first_run(c & WORD_MASK, n)
    return WORD_BITS if i is None else i


# fill_aligned: for each group size m, a constant with every bit set except the top bit
# of each m-bit group; built for one word and for a whole chunk (groups never straddle
# words because m <= 64 divides 64).
def _group_low_bits(m: int, width: int) -> int:
    group = ((1 << m) - 1) >> 1
    out = 0
    for shift in range(0, width, m):
        out |= group << shift
    return out


_FILL_CONST = {
    width: {m: _group_low_bits(m, width) for m in (2, 4, 8, 16, 32, 64)}
    for width in (WORD_BITS, CHUNK_BITS)
}


def fill_aligned_wide(x: int, m: int, width: int) -> int:
    """``fill_aligned`` over a ``width``-bit int (64 or 512)."""
    if m == 1:
        return x
    consts = _FILL_CONST[width]
    c = consts.get(m)
    if c is None:
        from sysmem.errors import PageAllocError

        raise PageAllocError("bad m value", f"m={m}")
    full = (1 << width) - 1
    # Top bit of each group: set iff the group had any bit set. Adding the low-bits
    # constant to the low bits carries into the group's top bit exactly when one of
    # them was set, and the sum never carries out of the group.
    any_set = (((x & c) + c) | x) | c
    # Groups whose top bit is still clear here were all zero.
    empty_top = ~any_set & full
    # Turn each empty group's top bit into a mask covering the whole group, then
    # complement: every group that had any bit set becomes all ones.
    return ~((empty_top - (empty_top >> (m - 1))) | empty_top) & full


def fill_aligned(x: int, m: int) -> int:
    """Go's ``fillAligned(x, m)`` on a 64-bit word: every m-aligned group of m bits
    that contains a set bit becomes all ones; all-zero groups stay zero. ``m`` must be
    1, 2, 4, 8, 16, 32 or 64 (Go throws ``bad m value`` otherwise)."""
    return fill_aligned_wide(x & WORD_MASK, m, WORD_BITS)
