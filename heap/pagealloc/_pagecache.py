"""Go's per-P page cache (``mpagecache.go``): a 64-page block of free pages held aside.

Small spans are the common case, and the page allocator's search plus its summary
update is the expensive part of handing one out. So Go gives every P a *page cache*:
one 64-page aligned block (``PAGE_CACHE_PAGES``), taken from the page allocator in one
step (:meth:`PageAlloc.alloc_to_cache`), whose free pages are then handed out by bit
tricks on a 64-bit word, without touching the allocator. ``mheap.allocSpan`` uses it for
spans of fewer than ``PAGE_CACHE_PAGES // 4`` pages.

State is three fields, as Go's: ``base`` (64-page aligned), ``cache`` (bit i set: page
i of the block is free in the cache) and ``scav`` (bit i set: page i was released to
the OS when the block was taken). To the page allocator every free page of the block
is allocated and unscavenged while it sits in the cache; the released ones are still
released memory, and :meth:`PageCache.flush` hands the free pages back with their
scavenged bits.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..constants import PAGE_CACHE_PAGES, PAGE_SHIFT, PAGE_SIZE
from ._addr import chunk_index, chunk_page_index
from ._bits import WORD_MASK, first_run

if TYPE_CHECKING:  # pragma: no cover
    from ._pagealloc import PageAlloc

__all__ = ["PageCache", "PAGE_CACHE_PAGES"]


class PageCache:
    """Go's ``pageCache``: ``PageCache(base, cache, scav)``; ``PageCache()`` is empty.

    ``alloc(npages)`` returns ``(address, scavenged_bytes)`` or ``(None, 0)`` when no
    run of ``npages`` free pages is left in the block (Go returns a 0 address).
    """

    __slots__ = ("base", "cache", "scav")

    def __init__(self, base: int = 0, cache: int = 0, scav: int = 0) -> None:
        self.base = base
        self.cache = cache & WORD_MASK
        self.scav = scav & WORD_MASK

    def empty(self) -> bool:
        """No free page left in the cache."""
        return self.cache == 0

    def alloc(self, npages: int) -> tuple[int | None, int]:
        """Take the lowest run of ``npages`` free pages of the block (Go's ``alloc`` /
        ``allocN``); their scavenged bits are cleared, and their count, in bytes, is
        returned so the caller can make that memory usable again."""
        c = self.cache
        if c == 0:
            return None, 0
        if npages == 1:
            low = c & -c  # the lowest free page
            self.cache = c ^ low
            s = self.scav
            if s & low:
                self.scav = s ^ low
                return self.base + (low.bit_length() - 1) * PAGE_SIZE, PAGE_SIZE
            return self.base + (low.bit_length() - 1) * PAGE_SIZE, 0
        if npages < 1:
            raise ValueError(f"PageCache.alloc: npages must be >= 1, got {npages}")
        low = c & -c
        if (c & ~(c + low)).bit_length() - low.bit_length() + 1 >= npages:
            # The lowest run of free pages is long enough (adding its lowest bit to c
            # carries through it, so c & ~(c + low) is that run): it is the first fit.
            i = low.bit_length() - 1
        else:
            i = first_run(c, npages)  # None also when npages > 64: no run that long
            if i is None:
                return None, 0
        mask = ((1 << npages) - 1) << i
        s = self.scav
        scav = (s & mask).bit_count()
        self.cache = c & ~mask
        self.scav = s & ~mask
        return self.base + i * PAGE_SIZE, scav * PAGE_SIZE

    def alloc_run(self, npages: int, count: int) -> tuple[int | None, int, int]:
        """What up to ``count`` calls of :meth:`alloc` (``npages`` each) take while each
        lands right after the previous: ``(address of the first, how many, scavenged
        bytes of all)``; ``(None, 0, 0)`` when not even one fits. (After the first fit
        at page i, every free run below i is shorter than ``npages``, so the next fit is
        at i + npages for as long as those pages are free.)"""
        base, scav = self.alloc(npages)
        if base is None:
            return None, 0, 0
        more = 0
        if count > 1:
            i = ((base - self.base) >> PAGE_SHIFT) + npages
            r = self.cache >> i
            free_after = (~r & (r + 1)).bit_length() - 1  # free pages right after
            more = min(count - 1, free_after // npages)
            if more:
                mask = ((1 << (more * npages)) - 1) << i
                scav += (self.scav & mask).bit_count() * PAGE_SIZE
                self.cache &= ~mask
                self.scav &= ~mask
        return base, 1 + more, scav

    def flush(self, p: PageAlloc) -> None:
        """Give every free page of the cache back to ``p`` (Go's ``flush``): the pages
        become free again, released ones scavenged again, ``search_addr`` drops to the
        block if it was above, and the cache is left empty."""
        c = self.cache
        if c == 0:
            return
        base = self.base
        ci, pi = chunk_index(base), chunk_page_index(base)
        chunk = p.chunk_of(ci)
        chunk.palloc_bits.clear_block64(pi, c)
        # Go tells the scavenge index about each page in turn, lowest first; one call
        # for all of them leaves the same state (the in-use count drops by their number,
        # the chunk is marked as having free pages, the cursors go to the highest one).
        n = c.bit_count()
        p.scav_index.free(ci, pi + c.bit_length() - n, n)
        if self.scav:
            chunk.scavenged.set_block64(pi, self.scav)
        p.lower_search_addr(base)
        p.update(base, PAGE_CACHE_PAGES, False, False)
        self.base = self.cache = self.scav = 0

    def __eq__(self, other: object) -> bool:
        if isinstance(other, PageCache):
            return (self.base, self.cache, self.scav) == (other.base, other.cache, other.scav)
        return NotImplemented

    __hash__ = None  # mutable

    def __repr__(self) -> str:
        return f"PageCache(base={self.base:#x}, cache={self.cache:#018x}, scav={self.scav:#018x})"
