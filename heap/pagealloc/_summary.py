"""Packed free-page summaries (Go's ``pallocSum``) and how they combine.

A summary describes a stretch of pages by three counts of free pages: ``start`` (the
free run at its low end), ``max`` (the longest free run anywhere in it) and ``end`` (the
free run at its high end). Go packs the three into one uint64, 21 bits each; the one
value that does not fit, all three equal to 2**21 (a completely free root entry),
is encoded as bit 63 alone. The allocator stores and compares packed values, exactly
as Go does, so "summary == 0" means "no free page here".
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

from ..constants import LOG_MAX_PACKED_VALUE, MAX_PACKED_VALUE, PALLOC_CHUNK_PAGES

_FIELD_MASK = MAX_PACKED_VALUE - 1
_SHIFT_MAX = LOG_MAX_PACKED_VALUE
_SHIFT_END = 2 * LOG_MAX_PACKED_VALUE
_ALL_MAX_BIT = 1 << 63


def pack_palloc_sum(start: int, max: int, end: int) -> int:  # noqa: A002 - Go's name
    """Go's ``packPallocSum``: the packed uint64 for (start, max, end).

    Each field keeps only its low 21 bits; ``max == 2**21`` (which forces the other two
    to be 2**21 as well) is stored as the single bit 63."""
    if max == MAX_PACKED_VALUE:
        return _ALL_MAX_BIT
    return (
        (start & _FIELD_MASK)
        | ((max & _FIELD_MASK) << _SHIFT_MAX)
        | ((end & _FIELD_MASK) << _SHIFT_END)
    )


def unpack_palloc_sum(p: int) -> tuple[int, int, int]:
    """The (start, max, end) a packed summary decodes to."""
    if p & _ALL_MAX_BIT:
        return MAX_PACKED_VALUE, MAX_PACKED_VALUE, MAX_PACKED_VALUE
    return p & _FIELD_MASK, (p >> _SHIFT_MAX) & _FIELD_MASK, (p >> _SHIFT_END) & _FIELD_MASK


def sum_start(p: int) -> int:
    return MAX_PACKED_VALUE if p & _ALL_MAX_BIT else p & _FIELD_MASK


def sum_max(p: int) -> int:
    return MAX_PACKED_VALUE if p & _ALL_MAX_BIT else (p >> _SHIFT_MAX) & _FIELD_MASK


def sum_end(p: int) -> int:
    return MAX_PACKED_VALUE if p & _ALL_MAX_BIT else (p >> _SHIFT_END) & _FIELD_MASK


class PallocSum(NamedTuple):
    """A summary as its three decoded counts (Go's exported ``PallocSum`` accessors).

    Build it with :meth:`of` (round-trips through the packed form, so the values are the
    ones Go would read back) or :meth:`from_packed`; :meth:`pack` gives Go's uint64.
    """

    start: int
    max: int
    end: int

    @classmethod
    def from_packed(cls, p: int) -> "PallocSum":
        return cls(*unpack_palloc_sum(p))

    @classmethod
    def of(cls, start: int, max: int, end: int) -> "PallocSum":  # noqa: A002
        """Go's ``PackPallocSum(start, max, end)`` read back through its accessors."""
        return cls.from_packed(pack_palloc_sum(start, max, end))

    def pack(self) -> int:
        return pack_palloc_sum(self.start, self.max, self.end)


FREE_CHUNK_SUM = pack_palloc_sum(PALLOC_CHUNK_PAGES, PALLOC_CHUNK_PAGES, PALLOC_CHUNK_PAGES)  # freeChunkSum


# Packed summary of an entirely free stretch of 2**k pages, for each k a summary can hold.
_FREE_BY_LOG = tuple(pack_palloc_sum(1 << k, 1 << k, 1 << k) for k in range(LOG_MAX_PACKED_VALUE + 1))


def merge_summaries(sums: Sequence[int], log_max_pages_per_sum: int) -> int:
    """Go's ``mergeSummaries``: combine consecutive packed summaries, each covering
    ``2**log_max_pages_per_sum`` pages, into the packed summary of the whole.

    Walk left to right keeping the summary of everything seen so far: the combined
    start grows only while everything so far is free; a longer run may form across each
    boundary (previous end + next start); the combined end restarts at every child
    that is not entirely free. Entirely used (0) and entirely free children, the common
    case, skip the decoding; the arithmetic is the same.
    """
    full = 1 << log_max_pages_per_sum
    free = _FREE_BY_LOG[log_max_pages_per_sum] if log_max_pages_per_sum < len(_FREE_BY_LOG) else pack_palloc_sum(full, full, full)
    # Starting from nothing (0, 0, 0) at offset 0, the first child's step leaves
    # exactly its own (start, max, end), as Go's starting from it does.
    start = most = end = 0
    i = -full
    for p in sums:
        i += full  # first page of this child
        if p == 0:
            if end > most:
                most = end
            end = 0
            continue
        if p == free:
            if start == i:
                start += full
            end += full
            if end > most:
                most = end
            continue
        if p & _ALL_MAX_BIT:
            si = mi = ei = MAX_PACKED_VALUE
        else:
            si = p & _FIELD_MASK
            mi = (p >> _SHIFT_MAX) & _FIELD_MASK
            ei = (p >> _SHIFT_END) & _FIELD_MASK
        if start == i:
            start += si
        joined = end + si
        if joined > most:
            most = joined
        if mi > most:
            most = mi
        if ei == full:
            end += full
        else:
            end = ei
    # pack_palloc_sum inlined (this runs several times per allocation): only a
    # completely free stretch reaches the all-max value, and then all three do.
    if most == MAX_PACKED_VALUE:
        return _ALL_MAX_BIT
    return start | (most << _SHIFT_MAX) | (end << _SHIFT_END)
