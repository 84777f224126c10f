"""Go's ``mcache``: the span each span class is currently allocating from.

Go gives every P an mcache holding one span per span class, and finds the next free slot
with a 64-bit cache of the span's allocation bits (``nextFreeFast``). heaplab has one
mcache per :class:`~heap.heap.Heap` and does the equivalent in the way that is cheap in
Python: when a span is cached, the addresses of all its free slots are computed at once
(a ``range`` when they are consecutive, as a fresh span's are; numpy otherwise), and
allocating is taking the next one from an iterator over them.

Allocation bits are written lazily, as Go counts its allocation statistics lazily
(``allocCountBeforeCache``, settled in ``refill``): the iterator's position says how many
slots were handed out, and :meth:`MCache.commit` settles the handed-out slots into the
span's ``alloc_bits``/``alloc_count``/``freeindex`` (and the statistics) in one numpy
operation. The heap calls it before anything reads those bits (lookups, frees, checks,
statistics), so outside the allocation fast path the bits are always exact.

Slots of a span whose ``needzero`` is set are zeroed one by one as they are handed out
(:class:`_ZeroingSlots`), never earlier: a cached span's unused slots are not touched,
so the pages they sit on stay as they were (not faulted in, not made dirty).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import numpy as np

from .sizeclasses import MIN_SIZE_FOR_MALLOC_HEADER, MALLOC_HEADER_SIZE, spanclass_noscan

if TYPE_CHECKING:  # pragma: no cover
    from .mcentral import MCentral
    from .mspan import MSpan

__all__ = ["MCache", "slot_header"]

_EMPTY: list = []


def slot_header(span: MSpan) -> int:
    """Bytes of malloc header at the start of each slot of ``span`` (0 or 8).

    Go puts an 8-byte header (the type) in front of pointerful objects too big to keep
    their pointer bitmap in the span (elemsize > 512); large objects keep it in the span
    instead. So every slot of a small scan span with such an elemsize has a header.
    """
    if span.sizeclass == 0 or spanclass_noscan(span.spanclass):
        return 0
    return MALLOC_HEADER_SIZE if span.elemsize > MIN_SIZE_FOR_MALLOC_HEADER else 0


class _ZeroingSlots:
    """Iterator over a needzero span's free slots that zeroes each slot as it hands it
    out. It mimics the parts of a list iterator the mcache uses (``__length_hint__``
    for the position, ``__setstate__`` to skip slots taken in bulk)."""

    __slots__ = ("_addrs", "_words", "_first", "_wpe", "_pos", "_n")

    def __init__(self, addrs: Sequence[int], words: np.ndarray, first_words: Sequence[int], wpe: int) -> None:
        self._addrs = addrs
        self._words = words
        self._first = first_words  # first word (in span.words) of each slot
        self._wpe = wpe  # words per slot
        self._pos = 0
        self._n = len(addrs)

    def __iter__(self):
        return self

    def __next__(self) -> int:
        i = self._pos
        if i >= self._n:
            raise StopIteration
        w = self._first[i]
        self._words[w:w + self._wpe] = 0
        self._pos = i + 1
        return self._addrs[i]

    def __length_hint__(self) -> int:
        return self._n - self._pos

    def __setstate__(self, pos: int) -> None:
        self._pos = min(max(pos, 0), self._n)


class MCache:
    """The heap's mcache: per span class, the cached span and its free-slot iterator.

    ``nexts[spc]`` is the iterator the allocation fast path calls ``next`` on (an empty
    one when no span is cached); the heap binds this very list, so it is only ever
    mutated in place. ``nmalloc[sizeclass]`` / ``alloc_bytes`` count settled
    allocations of small objects (Go's ``smallAllocCount`` / ``totalAlloc``).
    """

    __slots__ = ("centrals", "spans", "nexts", "slots", "runs", "committed", "totals",
                 "holes", "active", "nmalloc", "alloc_bytes")

    def __init__(self, centrals: list[MCentral], num_size_classes: int) -> None:
        n = len(centrals)
        self.centrals = centrals
        self.spans: list[MSpan | None] = [None] * n
        self.nexts: list = [iter(_EMPTY)] * n
        self.slots: list[np.ndarray | None] = [None] * n  # indices of the free slots (intp)
        # The first of them when they are consecutive (a fresh span's are), else -1:
        # then addresses come from a range and alloc bits are set by slices.
        self.runs = [-1] * n
        self.committed = [0] * n  # how many of them alloc_bits already show
        self.totals = [0] * n  # how many there are
        # True once an object of the cached span was freed: then slots below the last
        # one handed out may be free, and freeindex must not move past them.
        self.holes = [False] * n
        self.active: set[int] = set()  # span classes with a cached span
        self.nmalloc = [0] * num_size_classes
        self.alloc_bytes = 0

    # -- position of a cached span ------------------------------------------------------
    def position(self, spc: int) -> int:
        """How many of the cached span's free slots have been handed out."""
        return self.totals[spc] - self.nexts[spc].__length_hint__()

    def remaining(self, spc: int) -> int:
        return self.nexts[spc].__length_hint__()

    # -- settling ----------------------------------------------------------------------------
    def commit(self, spc: int) -> None:
        """Write the slots handed out from ``spc``'s cached span into its alloc bits."""
        pos = self.totals[spc] - self.nexts[spc].__length_hint__()
        lo = self.committed[spc]
        if pos <= lo:
            return
        span = self.spans[spc]
        first = self.runs[spc]
        if first >= 0:
            span.alloc_bits[first + lo:first + pos] = True
            last = first + pos - 1
        else:
            idx = self.slots[spc][lo:pos]
            span.alloc_bits[idx] = True
            last = int(idx[-1])
        k = pos - lo
        span.alloc_count += k
        if not self.holes[spc]:
            # Every slot up to the last one handed out is now allocated: either it was
            # when the span was cached, or it was in the free list before it.
            span.freeindex = last + 1
        self.committed[spc] = pos
        self.nmalloc[spc >> 1] += k
        self.alloc_bytes += k * span.elemsize

    def commit_all(self) -> None:
        for spc in self.active:
            self.commit(spc)

    # -- caching and uncaching ----------------------------------------------------------------
    def install(self, spc: int, span: MSpan, free: np.ndarray | None = None) -> None:
        """Make ``span`` the cached span of ``spc``, allocating from its slots ``free``
        (default: every free slot), lowest first."""
        if free is None:
            free = all_slots(span.nelems) if span.alloc_count == 0 else free_slots(span)
        n = len(free)
        elemsize = span.elemsize
        start = span.base + slot_header(span)
        first = int(free[0]) if n else 0
        if n and int(free[-1]) - first + 1 != n:
            first = -1  # scattered free slots
        if first >= 0:
            # Consecutive slots (always so for a fresh span): ranges, no arrays.
            addrs = range(start + first * elemsize, start + (first + n) * elemsize, elemsize)
        else:
            addrs = ((free.astype(np.uint64) * np.uint64(elemsize)) + np.uint64(start)).tolist()
        if span.needzero:
            wpe = elemsize >> 3
            words = range(first * wpe, (first + n) * wpe, wpe) if first >= 0 else (free * wpe).tolist()
            it = _ZeroingSlots(addrs, span.words, words, wpe)
        else:
            it = iter(addrs)
        self.spans[spc] = span
        self.slots[spc] = free
        self.runs[spc] = first
        self.committed[spc] = 0
        self.totals[spc] = n
        self.holes[spc] = False
        self.nexts[spc] = it
        self.active.add(spc)

    def addresses(self, spc: int, lo: int, hi: int) -> np.ndarray:
        """Addresses (uint64) of the cached span's free slots number lo..hi-1."""
        span = self.spans[spc]
        idx = self.slots[spc][lo:hi]
        return idx.astype(np.uint64) * np.uint64(span.elemsize) + np.uint64(span.base + slot_header(span))

    def uncache(self, spc: int) -> MSpan | None:
        """Settle and drop ``spc``'s cached span; hand it back to its mcentral."""
        span = self.spans[spc]
        if span is None:
            return None
        self.commit(spc)
        self._forget(spc)
        self.centrals[spc].uncache_span(span)
        return span

    def _forget(self, spc: int) -> None:
        # Drop every reference to the span and its memory (a _ZeroingSlots holds a view).
        self.spans[spc] = None
        self.slots[spc] = None
        self.runs[spc] = -1
        self.committed[spc] = 0
        self.totals[spc] = 0
        self.holes[spc] = False
        self.nexts[spc] = iter(_EMPTY)
        self.active.discard(spc)

    def refill(self, spc: int) -> MSpan:
        """Go's ``mcache.refill``: return the exhausted span, cache one with free slots.

        Raises :class:`~sysmem.errors.HeapOutOfMemoryError` (leaving no span cached for
        ``spc``) when a new span cannot be had.
        """
        if self.spans[spc] is not None:
            self.uncache(spc)
        central = self.centrals[spc]
        span = central.cache_span()
        try:
            span.touch_for_alloc()  # a partial span's (a new one's is touched already)
        except BaseException:
            central.uncache_span(span)  # back to the partial set, unchanged
            raise
        self.install(spc, span)
        return span

    def release_all(self) -> None:
        """Go's ``mcache.releaseAll``: give every cached span back to its mcentral."""
        for spc in sorted(self.active):
            self.uncache(spc)

    def is_cached(self, span: MSpan) -> bool:
        return self.spans[span.spanclass] is span

    def cached_spans(self) -> list[MSpan]:
        return [self.spans[spc] for spc in sorted(self.active)]


_ALL_SLOTS: dict[int, np.ndarray] = {}


def all_slots(nelems: int) -> np.ndarray:
    """0 .. nelems-1 (read-only, shared): the free slots of an empty span."""
    a = _ALL_SLOTS.get(nelems)
    if a is None:
        a = _ALL_SLOTS[nelems] = np.arange(nelems)
        a.flags.writeable = False
    return a


def free_slots(span: MSpan) -> np.ndarray:
    """Indices of ``span``'s free slots, lowest first (all slots below ``freeindex`` are
    allocated, so the search starts there, as Go's does)."""
    fi = span.freeindex
    free = np.flatnonzero(~span.alloc_bits[fi:])
    if fi:
        free += fi
    return free
