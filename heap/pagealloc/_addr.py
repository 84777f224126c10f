"""Address arithmetic of the page allocator: chunk indices and the offset address space.

Addresses are Python ints in [0, 2**64). On amd64 the usable address space is split
around a hole, so Go first subtracts ``arenaBaseOffset`` (wrapping modulo 2**64) to get
a linear "offset" address; chunk indices, summary indices and address comparisons are
all done on that offset. Here the wrap is an explicit ``& MASK64``.
"""

from __future__ import annotations

from ..constants import (
    ARENA_BASE_OFFSET,
    LEVEL_BITS,
    LEVEL_SHIFT,
    LOG_PALLOC_CHUNK_BYTES,
    MASK64,
    PAGE_SHIFT,
    PALLOC_CHUNK_BYTES,
)


def off(addr: int) -> int:
    """An address's position in the linear offset space (Go: ``addr - arenaBaseOffset``)."""
    return (addr - ARENA_BASE_OFFSET) & MASK64


def from_off(o: int) -> int:
    """The virtual address at offset ``o`` (Go: ``offset + arenaBaseOffset``)."""
    return (o + ARENA_BASE_OFFSET) & MASK64


def chunk_index(p: int) -> int:
    """Go's ``chunkIndex``: global index of the 4 MiB chunk containing address ``p``."""
    return ((p - ARENA_BASE_OFFSET) & MASK64) >> LOG_PALLOC_CHUNK_BYTES


def chunk_base(ci: int) -> int:
    """Go's ``chunkBase``: the first address of chunk ``ci``."""
    return (ci * PALLOC_CHUNK_BYTES + ARENA_BASE_OFFSET) & MASK64


def chunk_page_index(p: int) -> int:
    """Go's ``chunkPageIndex``: index within its chunk of the page containing ``p``."""
    return (p % PALLOC_CHUNK_BYTES) >> PAGE_SHIFT


def page_base(ci: int, page_idx: int) -> int:
    """Go's test helper ``PageBase``: address of page ``page_idx`` of chunk ``ci``."""
    return (chunk_base(ci) + (page_idx << PAGE_SHIFT)) & MASK64


def off_addr_to_level_index(level: int, addr: int) -> int:
    """Go's ``offAddrToLevelIndex``: the summary index at ``level`` covering ``addr``."""
    return off(addr) >> LEVEL_SHIFT[level]


def level_index_to_off_addr(level: int, idx: int) -> int:
    """Go's ``levelIndexToOffAddr`` (returned as a virtual address)."""
    return from_off(idx << LEVEL_SHIFT[level])


def addrs_to_summary_range(level: int, base: int, limit: int) -> tuple[int, int]:
    """Go's ``addrsToSummaryRange``: summary indices [lo, hi) at ``level`` that cover
    the address range [base, limit)."""
    shift = LEVEL_SHIFT[level]
    return off(base) >> shift, (off(limit - 1) >> shift) + 1


def block_align_summary_range(level: int, lo: int, hi: int) -> tuple[int, int]:
    """Go's ``blockAlignSummaryRange``: widen [lo, hi) to whole blocks of the level."""
    e = 1 << LEVEL_BITS[level]
    return lo & ~(e - 1), (hi + e - 1) & ~(e - 1)


def align_up(n: int, a: int) -> int:
    return (n + a - 1) & ~(a - 1)


def align_down(n: int, a: int) -> int:
    return n & ~(a - 1)
