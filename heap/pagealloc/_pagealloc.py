"""The page allocator (Go's ``pageAlloc``): address-ordered first fit over 8 KiB pages.

State, as in Go:

* per chunk (512 pages) an allocation bitmap and a scavenged bitmap, kept in numpy
  arrays of 8192 chunks each (one "L2 block" per 32 GiB of address space, created when
  the heap first grows into it; np.zeros leaves untouched rows unbacked by the OS);
* a 5-level radix tree of packed summaries: a root entry covers 16 GiB, then 2 GiB,
  256 MiB, 32 MiB and finally one chunk. Go reserves every level for the whole address
  space; here level 0 is a dict plus the sorted list of its indices that cover grown
  memory, and the lower levels are dicts of 8-entry blocks (one block = the children of
  one parent), so memory follows the grown heap wherever it sits in the 48-bit space;
* ``search_addr``: every heap page below it is in use;
* the grown address ranges (``in_use_ranges``), chunk bounds ``start``/``end``, and the
  scavenge index.

Addresses are virtual addresses (ints); ordering and summary indices use the offset
address space (``_addr``), which on amd64 is the address minus ``arenaBaseOffset``
modulo 2**64. ``search_addr`` is kept as such an offset internally.

Releasing memory to the OS goes through the ``sys_unused(addr, nbytes)`` callback, which
the heap points at sysmem's ``sys_unused``; ``None`` is Go's test mode (no release).
"""

from __future__ import annotations

from bisect import bisect_left, insort
from typing import Callable, Iterator

import numpy as np

from ..constants import (
    LEVEL_BITS,
    LEVEL_LOG_PAGES,
    LEVEL_SHIFT,
    LOG_PALLOC_CHUNK_BYTES,
    MAX_OFF_ADDR,
    PAGE_SHIFT,
    PAGE_SIZE,
    PALLOC_CHUNK_BYTES,
    PALLOC_CHUNK_PAGES,
    PALLOC_CHUNKS_L2_BITS,
    PHYS_HUGE_PAGE_SIZE,
    PHYS_PAGE_SIZE,
    SUMMARY_LEVELS,
)
from ._addr import align_down, align_up, chunk_base, chunk_index, from_off, off
from ._bits import CHUNK_MASK, WORD_MASK, WORDS_PER_CHUNK, tz
from ._pagecache import PAGE_CACHE_PAGES, PageCache
from sysmem.errors import PageAllocError
from ._pallocbits import PallocBits, PallocData, _flat_views
from ._ranges import AddrRange, AddrRanges
from ._scavindex import ScavengeIndex
from ._summary import (
    FREE_CHUNK_SUM,
    PallocSum,
    merge_summaries,
    pack_palloc_sum,
    sum_end,
    sum_max,
    sum_start,
)

_LEAF = SUMMARY_LEVELS - 1
_L2_BITS = PALLOC_CHUNKS_L2_BITS
_L2_CHUNKS = 1 << _L2_BITS
_L2_MASK = _L2_CHUNKS - 1
_MAX_OFF = off(MAX_OFF_ADDR)  # maxOffAddr / maxSearchAddr as an offset
_CHUNK_PAGE_MASK = PALLOC_CHUNK_PAGES - 1
_ALL_ONES = np.uint64(WORD_MASK)

# Summary of an entirely free entry at each level, and of 8 entirely free children.
_FREE_SUM = tuple(pack_palloc_sum(1 << lp, 1 << lp, 1 << lp) for lp in LEVEL_LOG_PAGES)

SysUnused = Callable[[int, int], None]


class _L2Block:
    """Bitmaps of 8192 consecutive chunks: one flat uint64 array per bitmap kind."""

    __slots__ = ("alloc", "alloc_raw", "alloc_w", "scav", "scav_raw", "scav_w")

    def __init__(self) -> None:
        self.alloc = np.zeros(_L2_CHUNKS * WORDS_PER_CHUNK, dtype=np.uint64)
        self.scav = np.zeros(_L2_CHUNKS * WORDS_PER_CHUNK, dtype=np.uint64)
        self.alloc_raw, self.alloc_w = _flat_views(self.alloc)
        self.scav_raw, self.scav_w = _flat_views(self.scav)


class PageAlloc:
    """Go's ``pageAlloc`` (see the module docstring).

    ``sys_unused(addr, nbytes)`` is called by :meth:`scavenge` for every run it releases
    (Go's ``sysUnused``); ``None`` releases nothing, like Go's test mode.
    ``phys_page_size`` and ``phys_huge_page_size`` are the machine's (Go reads them at
    start-up); they set the scavenging granularity and huge-page preservation.
    """

    def __init__(
        self,
        *,
        sys_unused: SysUnused | None = None,
        phys_page_size: int = PHYS_PAGE_SIZE,
        phys_huge_page_size: int = PHYS_HUGE_PAGE_SIZE,
    ) -> None:
        self.sys_unused = sys_unused
        self.phys_page_size = phys_page_size
        self.phys_huge_page_size = phys_huge_page_size
        self._l2: dict[int, _L2Block] = {}
        self._chunk_cache: dict[int, PallocData] = {}
        # Summaries: level 0 by index; levels 1..4 by block (parent index) -> 8 entries.
        self._sum0: dict[int, int] = {}
        self._sum0_keys: list[int] = []
        self._sumb: list[dict[int, list[int]] | None] = [None] + [{} for _ in range(1, SUMMARY_LEVELS)]
        self._search = _MAX_OFF  # offset of searchAddr: no free memory yet
        self.start = 0
        self.end = 0
        self.in_use_ranges = AddrRanges()
        self.scav_index = ScavengeIndex()
        # Per parent level, leaf-most first: what update needs to re-merge it.
        self._walk_up = tuple(
            (
                LEVEL_SHIFT[level],
                LEVEL_LOG_PAGES[level + 1],
                _FREE_SUM[level + 1],
                _FREE_SUM[level],
                self._sumb[level + 1],
                self._sumb[level] if level else None,
            )
            for level in range(_LEAF - 1, -1, -1)
        )

    # --- small accessors --------------------------------------------------------------

    @property
    def test(self) -> bool:
        """Go's ``test`` flag: true when nothing is released to the OS."""
        return self.sys_unused is None

    @property
    def search_addr(self) -> int:
        """The virtual address below which every heap page is in use."""
        return from_off(self._search)

    def bounds(self) -> tuple[int, int]:
        """Go's ``Bounds``: the chunk indices [start, end) the allocator knows."""
        return self.start, self.end

    def in_use(self) -> list[AddrRange]:
        """Go's ``InUse``: the grown address ranges, sorted and coalesced."""
        return [AddrRange(r.base, r.limit) for r in self.in_use_ranges.ranges]

    def try_chunk_of(self, ci: int) -> PallocData | None:
        """Bitmaps of chunk ``ci``; None if no memory near it was ever grown (Go's
        ``tryChunkOf`` / export ``PallocData``)."""
        d = self._chunk_cache.get(ci)
        if d is None:
            blk = self._l2.get(ci >> _L2_BITS)
            if blk is None:
                return None
            o = (ci & _L2_MASK) * WORDS_PER_CHUNK
            d = PallocData(
                PallocBits._over(blk.alloc, blk.alloc_raw, blk.alloc_w, o),
                PallocBits._over(blk.scav, blk.scav_raw, blk.scav_w, o),
            )
            self._chunk_cache[ci] = d
        return d

    palloc_data = try_chunk_of

    def chunk_of(self, ci: int) -> PallocData:
        """Bitmaps of chunk ``ci``, which must lie in grown memory's L2 block."""
        d = self.try_chunk_of(ci)
        if d is None:
            raise PageAllocError("chunk not mapped", f"chunk index {ci:#x}")
        return d

    def summary(self, level: int, idx: int) -> PallocSum:
        """The summary entry ``idx`` of ``level`` (0 = root, 4 = one chunk)."""
        return PallocSum.from_packed(self._sum_get(level, idx))

    def _sum_get(self, level: int, idx: int) -> int:
        if level == 0:
            return self._sum0.get(idx, 0)
        blk = self._sumb[level].get(idx >> 3)
        return blk[idx & 7] if blk is not None else 0

    # --- growing ---------------------------------------------------------------------

    def grow(self, base: int, size: int) -> None:
        """Add the never-used address range [base, base+size) to the heap (rounded out
        to whole chunks). Its pages become free and scavenged (new memory has not been
        touched), the summaries and ``search_addr`` are updated and the chunks join the
        scavenge index."""
        if size < PAGE_SIZE:
            raise ValueError(f"grow: size must be at least one page, got {size}")
        limit = align_up(base + size, PALLOC_CHUNK_BYTES)
        base = align_down(base, PALLOC_CHUNK_BYTES)
        new = AddrRange.make(base, limit)
        i = self.in_use_ranges.find_succ(base)
        rs = self.in_use_ranges.ranges
        if (i > 0 and off(rs[i - 1].limit) > off(base)) or (i < len(rs) and off(limit) > off(rs[i].base)):
            raise PageAllocError("grow over memory the page allocator already has", repr(new))

        self._sys_grow(base, limit)
        self.scav_index.grow(base, limit)

        first_growth = self.start == 0
        start, end = chunk_index(base), chunk_index(limit)
        if first_growth or start < self.start:
            self.start = start
        if end > self.end:
            self.end = end
        self.in_use_ranges.add(new)
        if off(base) < self._search:
            self._search = off(base)

        # Chunk bitmaps: allocate L2 blocks as needed; new memory counts as scavenged.
        c = start
        while c < end:
            bi = c >> _L2_BITS
            blk = self._l2.get(bi)
            if blk is None:
                blk = self._l2[bi] = _L2Block()
            stop = min(end, (bi + 1) << _L2_BITS)
            first_row = c & _L2_MASK
            blk.scav[first_row * WORDS_PER_CHUNK : (first_row + stop - c) * WORDS_PER_CHUNK] = _ALL_ONES
            c = stop

        # Like a free of the new range. Go passes the chunk-aligned base with the
        # caller's unrounded size, so for an unaligned base the last `base % 4 MiB`
        # bytes of the range are not summarized (they look in use until freed); kept
        # as Go has it, since results must match Go's.
        self.update(base, size // PAGE_SIZE, True, False)

    def _sys_grow(self, base: int, limit: int) -> None:
        """Make summary storage exist for [base, limit) at every level (Go's sysGrow
        maps the whole blocks covering it; here the blocks are created)."""
        bo, lo_last = off(base), off(limit - 1)
        for level in range(SUMMARY_LEVELS):
            shift = LEVEL_SHIFT[level]
            lo, hi = bo >> shift, (lo_last >> shift) + 1
            if level == 0:
                keys, sums = self._sum0_keys, self._sum0
                for i in range(lo, hi):
                    if i not in sums:
                        sums[i] = 0
                        insort(keys, i)
            else:
                blocks = self._sumb[level]
                for b in range(lo >> 3, ((hi - 1) >> 3) + 1):
                    if b not in blocks:
                        blocks[b] = [0] * 8

    # --- summaries ---------------------------------------------------------------------

    def update(self, base: int, npages: int, contig: bool, alloc: bool) -> None:
        """Recompute the summaries over [base, base + npages pages) after its bitmaps
        changed. ``contig`` says one contiguous alloc/free happened (so chunks strictly
        inside the range are entirely used or entirely free); ``alloc`` says which."""
        limit = base + npages * PAGE_SIZE - 1
        base_off, limit_off = off(base), off(limit)
        sc, ec = base_off >> LOG_PALLOC_CHUNK_BYTES, limit_off >> LOG_PALLOC_CHUNK_BYTES
        leaves = self._sumb[_LEAF]

        if sc == ec:
            blk = leaves[sc >> 3]
            y = self.chunk_of(sc).summarize_packed()
            if blk[sc & 7] == y:
                return  # nothing above can change either
            blk[sc & 7] = y
            # One chunk changed, so one entry per level above it: walk that path (the
            # general walk below gives the same; this is the common case, made cheap).
            i = sc
            for _shift, child_log, free_child, free_parent, children_of, blocks in self._walk_up:
                i >>= 3  # the parent's index; its children are block i of the level below
                ch = children_of[i]
                first = ch[0]
                if (first == 0 or first == free_child) and ch.count(first) == 8:
                    s = 0 if first == 0 else free_parent
                else:
                    s = merge_summaries(ch, child_log)
                if blocks is None:
                    if self._sum0.get(i, 0) == s:
                        return
                    self._sum0[i] = s
                    return
                pb = blocks[i >> 3]
                if pb[i & 7] == s:
                    return
                pb[i & 7] = s
            return
        elif contig:
            leaves[sc >> 3][sc & 7] = self.chunk_of(sc).summarize_packed()
            whole = 0 if alloc else FREE_CHUNK_SUM
            for c in range(sc + 1, ec):
                leaves[c >> 3][c & 7] = whole
            leaves[ec >> 3][ec & 7] = self.chunk_of(ec).summarize_packed()
        else:
            for c in range(sc, ec + 1):
                leaves[c >> 3][c & 7] = self.chunk_of(c).summarize_packed()

        # Walk up, re-merging the parents of what changed, until a level is unchanged.
        for shift, child_log, free_child, free_parent, children_of, blocks in self._walk_up:
            lo, hi = base_off >> shift, (limit_off >> shift) + 1
            changed = False
            for i in range(lo, hi):
                ch = children_of[i]
                first = ch[0]
                if (first == 0 or first == free_child) and ch.count(first) == 8:
                    s = 0 if first == 0 else free_parent  # 8 used / 8 free children
                else:
                    s = merge_summaries(ch, child_log)
                if blocks is None:  # the root level: a plain dict
                    if self._sum0.get(i, 0) != s:
                        self._sum0[i] = s
                        changed = True
                else:
                    blk = blocks[i >> 3]
                    if blk[i & 7] != s:
                        blk[i & 7] = s
                        changed = True
            if not changed:
                break

    # --- searching ---------------------------------------------------------------------

    def find_mapped_addr(self, addr: int) -> int:
        """The lowest grown address >= ``addr``, or maxOffAddr if there is none."""
        v = self.in_use_ranges.find_addr_greater_equal(addr)
        return MAX_OFF_ADDR if v is None else v

    def _root_entries(self, j0: int) -> Iterator[tuple[int, int]]:
        """Root entries from index j0 on, as (index, summary). Entries never grown are
        zero; runs of them are reported as one zero entry, which has the same effect
        on the search as Go's walk over each of them."""
        keys, sums = self._sum0_keys, self._sum0
        expect = j0
        for k in range(bisect_left(keys, j0), len(keys)):
            j = keys[k]
            if j != expect:
                yield expect, 0
            yield j, sums[j]
            expect = j + 1

    def find(self, npages: int) -> tuple[int | None, int]:
        """Go's ``find``: the address of the lowest run of ``npages`` free pages and a
        new candidate ``search_addr`` (both virtual addresses); ``(None,
        MAX_SEARCH_ADDR)`` when nothing fits.

        Walk the radix tree from the root: within the 8 (at the root, all) entries under
        the current parent, either a run straddling entries is long enough (found), or
        an entry's own longest run is (descend into it), or move on. The search starts at
        the entry holding ``search_addr`` when that entry is in the block. The narrowest
        region seen to contain the first free page gives the new ``search_addr``.
        """
        search_off = self._search
        i = 0
        ff_base, ff_bound = 0, _MAX_OFF  # window holding the first free page (offsets)

        for level in range(SUMMARY_LEVELS):
            bits = LEVEL_BITS[level]
            per_block = 1 << bits
            log_max = LEVEL_LOG_PAGES[level]
            full = 1 << log_max
            shift = LEVEL_SHIFT[level]
            i <<= bits

            j0 = 0
            sidx = search_off >> shift
            if sidx & ~(per_block - 1) == i:
                j0 = sidx & (per_block - 1)

            if level == 0:
                entries: Iterator[tuple[int, int]] | enumerate = self._root_entries(j0)
            else:
                blk = self._sumb[level].get(i >> bits)
                entries = enumerate((blk if blk is not None else [0] * 8)[j0:], j0)

            base = size = 0
            descended = False
            for j, s in entries:
                if s == 0:
                    size = 0
                    continue
                # Free memory in this entry: narrow the first-free window if it fits.
                a = (i + j) << shift
                top = a + full * PAGE_SIZE - 1
                if ff_base <= a and top <= ff_bound:
                    ff_base, ff_bound = a, top
                elif not (top < ff_base or ff_bound < a):
                    raise PageAllocError("range partially overlaps", f"{from_off(a):#x}+{full * PAGE_SIZE:#x}")

                st = sum_start(s)
                if size + st >= npages:
                    if size == 0:
                        base = j << log_max
                    size += st
                    break
                if sum_max(s) >= npages:
                    i += j
                    descended = True
                    break
                if size == 0 or st < full:
                    size = sum_end(s)
                    base = ((j + 1) << log_max) - size
                    continue
                size += full
            if descended:
                continue
            if size >= npages:
                addr_off = (i << shift) + base * PAGE_SIZE
                return from_off(addr_off), self.find_mapped_addr(from_off(ff_base))
            if level == 0:
                return None, MAX_OFF_ADDR
            raise PageAllocError("bad summary data", f"level {level}, block {i}, npages {npages}")

        # Descended to a single chunk whose longest run fits: search its bitmap.
        addr_off, a = self._find_in_chunk(i, npages, 0)
        top = (i << LOG_PALLOC_CHUNK_BYTES) + PALLOC_CHUNK_BYTES - 1
        if ff_base <= a and top <= ff_bound:
            ff_base = a
        elif not (top < ff_base or ff_bound < a):
            raise PageAllocError("range partially overlaps", f"{from_off(a):#x}")
        return from_off(addr_off), self.find_mapped_addr(from_off(ff_base))

    def _find_in_chunk(self, ci: int, npages: int, pidx: int) -> tuple[int, int]:
        """Search chunk ``ci`` (whose summary says it fits) for ``npages`` free pages
        from the word of page ``pidx``: (offset of the run, offset of the first free
        page seen)."""
        j, sidx = self.chunk_of(ci).find(npages, pidx)
        if j is None:
            raise PageAllocError("bad summary data", f"chunk {ci:#x} has no run of {npages} pages from page {pidx}")
        cb = ci << LOG_PALLOC_CHUNK_BYTES
        return cb + j * PAGE_SIZE, cb + sidx * PAGE_SIZE

    # --- allocating and freeing ---------------------------------------------------------

    def alloc(self, npages: int) -> tuple[int | None, int]:
        """Allocate the lowest run of ``npages`` free pages: ``(address, scav_bytes)``
        where ``scav_bytes`` is how much of it had been released to the OS (the caller
        must make that memory usable again). ``(None, 0)`` when nothing fits."""
        if npages < 1:
            raise ValueError(f"alloc: npages must be >= 1, got {npages}")
        s_off = self._search
        ci = s_off >> LOG_PALLOC_CHUNK_BYTES
        if ci >= self.end:
            return None, 0
        pidx = (s_off >> PAGE_SHIFT) & _CHUNK_PAGE_MASK
        addr_off = -1
        if PALLOC_CHUNK_PAGES - pidx >= npages:
            # Fast path: it may fit in the rest of search_addr's chunk.
            blk = self._sumb[_LEAF].get(ci >> 3)
            if blk is not None and sum_max(blk[ci & 7]) >= npages:
                addr_off, new_search = self._find_in_chunk(ci, npages, pidx)
        if addr_off < 0:
            addr, sa = self.find(npages)
            if addr is None:
                if npages == 1:
                    self._search = _MAX_OFF  # not even one page: the heap is full
                return None, 0
            addr_off, new_search = off(addr), off(sa)
        addr = from_off(addr_off)
        scav = self.alloc_range(addr, npages)
        if self._search < new_search:
            self._search = new_search
        return addr, scav

    def alloc_range(self, base: int, npages: int) -> int:
        """Mark [base, base + npages pages) allocated (clearing scavenged bits) and
        update summaries and the scavenge index; returns the bytes that were scavenged."""
        limit = base + npages * PAGE_SIZE - 1
        sc, ec = chunk_index(base), chunk_index(limit)
        si, ei = (base >> PAGE_SHIFT) & _CHUNK_PAGE_MASK, (limit >> PAGE_SHIFT) & _CHUNK_PAGE_MASK
        index = self.scav_index
        scav = 0
        if sc == ec:
            chunk = self.chunk_of(sc)
            n = ei + 1 - si
            scav += chunk.scavenged.popcnt_range(si, n)
            chunk.alloc_range(si, n)
            index.alloc(sc, n)
        else:
            chunk = self.chunk_of(sc)
            n = PALLOC_CHUNK_PAGES - si
            scav += chunk.scavenged.popcnt_range(si, n)
            chunk.alloc_range(si, n)
            index.alloc(sc, n)
            for c in range(sc + 1, ec):
                chunk = self.chunk_of(c)
                scav += chunk.scavenged.count()
                chunk.alloc_all()
                index.alloc(c, PALLOC_CHUNK_PAGES)
            chunk = self.chunk_of(ec)
            scav += chunk.scavenged.popcnt_range(0, ei + 1)
            chunk.alloc_range(0, ei + 1)
            index.alloc(ec, ei + 1)
        self.update(base, npages, True, True)
        return scav * PAGE_SIZE

    def alloc_to_cache(self) -> PageCache:
        """Move the 64-page aligned block holding the lowest free page into a new
        :class:`PageCache` (Go's ``allocToCache``); an empty cache when no page is free.

        Every free page of the block is marked allocated and unscavenged here; the
        cache remembers which of them were scavenged. ``search_addr`` moves to the
        block's last page: everything below it is now in use or in the cache.
        """
        s_off = self._search
        ci = s_off >> LOG_PALLOC_CHUNK_BYTES
        if ci >= self.end:
            return PageCache()  # search_addr is past every chunk: out of memory
        blk = self._sumb[_LEAF].get(ci >> 3)
        if blk is not None and blk[ci & 7] != 0:
            # search_addr's chunk has a free page: the first one at or after it.
            chunk = self.chunk_of(ci)
            j, _ = chunk.find(1, (s_off >> PAGE_SHIFT) & _CHUNK_PAGE_MASK)
            if j is None:
                raise PageAllocError("bad summary data", f"chunk {ci:#x} has no free page")
            base = chunk_base(ci) + (j & -PAGE_CACHE_PAGES) * PAGE_SIZE
        else:
            addr, _ = self.find(1)
            if addr is None:
                self._search = _MAX_OFF  # not one free page: remember the heap is full
                return PageCache()
            ci = chunk_index(addr)
            chunk = self.chunk_of(ci)
            j = (addr >> PAGE_SHIFT) & _CHUNK_PAGE_MASK
            base = addr & -(PAGE_CACHE_PAGES * PAGE_SIZE)
        free = ~chunk.pages64(j) & WORD_MASK
        scav = chunk.scavenged.block64(j)
        pi = j & -PAGE_CACHE_PAGES
        chunk.alloc_pages64(pi, free)
        chunk.scavenged.clear_block64(pi, free & scav)  # only the pages now cached
        self.update(base, PAGE_CACHE_PAGES, False, True)  # not one contiguous run
        self.scav_index.alloc(ci, free.bit_count())
        # The block's last page rather than the page after it: search_addr may not
        # point into memory the heap never grew (the block may end the heap).
        self._search = off(base + (PAGE_CACHE_PAGES - 1) * PAGE_SIZE)
        return PageCache(base, free, scav)

    def lower_search_addr(self, addr: int) -> None:
        """Pages at ``addr`` became free: make sure ``search_addr`` is not above it."""
        b = off(addr)
        if b < self._search:
            self._search = b

    def free(self, base: int, npages: int) -> None:
        """Return [base, base + npages pages) to the allocator (pages must be in use)."""
        if npages < 1:
            raise ValueError(f"free: npages must be >= 1, got {npages}")
        b = off(base)
        if b < self._search:
            self._search = b
        index = self.scav_index
        if npages == 1:
            ci = chunk_index(base)
            pi = (base >> PAGE_SHIFT) & _CHUNK_PAGE_MASK
            self.chunk_of(ci).free1(pi)
            index.free(ci, pi, 1)
        else:
            limit = base + npages * PAGE_SIZE - 1
            sc, ec = chunk_index(base), chunk_index(limit)
            si, ei = (base >> PAGE_SHIFT) & _CHUNK_PAGE_MASK, (limit >> PAGE_SHIFT) & _CHUNK_PAGE_MASK
            if sc == ec:
                self.chunk_of(sc).free(si, ei + 1 - si)
                index.free(sc, si, ei + 1 - si)
            else:
                self.chunk_of(sc).free(si, PALLOC_CHUNK_PAGES - si)
                index.free(sc, si, PALLOC_CHUNK_PAGES - si)
                for c in range(sc + 1, ec):
                    self.chunk_of(c).free_all()
                    index.free(c, 0, PALLOC_CHUNK_PAGES)
                self.chunk_of(ec).free(0, ei + 1)
                index.free(ec, 0, ei + 1)
        self.update(base, npages, True, False)

    def mark_random_padding_pages(self, base: int, npages: int) -> None:
        """Go's ``markRandomPaddingPages``: make [base, base + npages pages) allocated
        *and* scavenged, so the padding in front of a randomized heap base is never
        used and counts as released."""
        limit = base + npages * PAGE_SIZE - 1
        sc, ec = chunk_index(base), chunk_index(limit)
        si, ei = (base >> PAGE_SHIFT) & _CHUNK_PAGE_MASK, (limit >> PAGE_SHIFT) & _CHUNK_PAGE_MASK
        index = self.scav_index
        pieces = [(sc, si, ei + 1 - si)] if sc == ec else (
            [(sc, si, PALLOC_CHUNK_PAGES - si)]
            + [(c, 0, PALLOC_CHUNK_PAGES) for c in range(sc + 1, ec)]
            + [(ec, 0, ei + 1)]
        )
        for c, i, n in pieces:
            chunk = self.chunk_of(c)
            chunk.alloc_range(i, n)
            index.alloc(c, n)
            chunk.scavenged.set_range(i, n)
        self.update(base, npages, True, True)

    # --- scavenging --------------------------------------------------------------------

    def scavenge(self, nbytes: int, force: bool = True, should_stop: Callable[[], bool] | None = None) -> int:
        """Release at least ``nbytes`` of free, unscavenged memory to the OS, highest
        addresses first, unless the heap runs out of such memory or ``should_stop``
        says so after a step. Returns the bytes released (possibly more than asked:
        whole physical and huge pages are released). ``force`` ignores chunk density
        and GC generations (Go's forced mode, used for FreeOSMemory and the memory
        limit); the background scavenger passes ``force=False``."""
        released = 0
        index = self.scav_index
        while released < nbytes:
            ci, page_idx = index.find(force)
            if ci == 0:
                break
            released += self.scavenge_one(ci, page_idx, nbytes - released)
            if should_stop is not None and should_stop():
                break
        return released

    def scavenge_one(self, ci: int, search_idx: int, max: int) -> int:  # noqa: A002 - Go's name
        """Release one run of free, unscavenged pages from chunk ``ci``, at or below
        page ``search_idx``, of about ``max`` bytes; returns the bytes released (0 when
        the chunk has nothing, after which the index skips it until a free)."""
        max_pages = max // PAGE_SIZE + (1 if max % PAGE_SIZE else 0)
        min_pages = self.phys_page_size // PAGE_SIZE
        if min_pages < 1:
            min_pages = 1
        blk = self._sumb[_LEAF].get(ci >> 3)
        if blk is not None and sum_max(blk[ci & 7]) >= min_pages:
            chunk = self.chunk_of(ci)
            base, npages = chunk.find_scavenge_candidate(
                search_idx,
                min_pages,
                max_pages,
                phys_huge_page_size=self.phys_huge_page_size,
                phys_page_size=self.phys_page_size,
            )
            if npages != 0:
                addr = chunk_base(ci) + base * PAGE_SIZE
                nbytes = npages * PAGE_SIZE
                # Hold the run as allocated while it is being released, so nothing
                # can allocate it meanwhile; the scavenge index is left alone (this is
                # not a real allocation).
                chunk.alloc_range(base, npages)
                self.update(addr, npages, True, True)
                released = False
                try:
                    if self.sys_unused is not None:
                        self.sys_unused(addr, nbytes)
                    released = True
                finally:
                    # Free the run again (now scavenged, if the release happened).
                    if off(addr) < self._search:
                        self._search = off(addr)
                    chunk.free(base, npages)
                    self.update(addr, npages, True, False)
                    if released:
                        chunk.scavenged.set_range(base, npages)
                return nbytes
        self.scav_index.set_empty(ci)
        return 0

    # --- consistency checks (tests and debugging) --------------------------------------

    def check(self) -> None:
        """Raise AssertionError unless the allocator's invariants hold: no page both
        allocated and scavenged, every summary equal to what its bitmaps/children say,
        no free page below ``search_addr``, and scavenge-index counts equal to the
        bitmaps' in-use counts."""
        for r in self.in_use_ranges.ranges:
            for ci in range(chunk_index(r.base), chunk_index(r.limit)):
                d = self.chunk_of(ci)
                a, s = d.palloc_bits.to_int(), d.scavenged.to_int()
                assert a & s == 0, f"chunk {ci:#x}: pages both allocated and scavenged: {a & s:#x}"
                leaf = self._sum_get(_LEAF, ci)
                assert leaf == d.summarize_packed(), f"chunk {ci:#x}: stale leaf summary"
                in_use = self.scav_index.load(ci).in_use
                assert in_use == a.bit_count(), f"chunk {ci:#x}: index in_use {in_use} != {a.bit_count()}"
                free = ~a & CHUNK_MASK
                if free:
                    first_free = chunk_base(ci) + tz(free) * PAGE_SIZE
                    assert off(first_free) >= self._search, (
                        f"free page {first_free:#x} below search_addr {self.search_addr:#x}"
                    )
        for level in range(_LEAF - 1, -1, -1):
            child_log = LEVEL_LOG_PAGES[level + 1]
            for b, ch in self._sumb[level + 1].items():
                want = merge_summaries(ch, child_log)
                got = self._sum_get(level, b)
                assert got == want, f"level {level} entry {b}: {PallocSum.from_packed(got)} != {PallocSum.from_packed(want)}"
