"""``MHeap``: the page heap under the allocator (Go's ``mheap`` in ``mheap.go``).

It hands out spans (runs of 8 KiB pages) and takes them back, growing the heap's
address space in whole 4 MiB chunks as needed, with Go's accounting:

===================  =========================  ========================================
event                sysmem transition          heap stats
===================  =========================  ========================================
grow                 Reserved → Prepared        heap_released += n
                     (``sys_map``)
alloc_span           Prepared → Ready for the   heap_released -= scav,
                     scavenged pages only        heap_free -= n - scav, heap_in_use += n
                     (``sys_used``)
free_span            none (pages stay Ready)    heap_in_use -= n, heap_free += n
scavenge             Ready → Prepared           heap_free -= n, heap_released += n
                     (``sys_unused``)
===================  =========================  ========================================

so ``heap_in_use + heap_free + heap_released`` is always the heap's mapped memory and
``heap_released`` the pages the page allocator marks scavenged, plus the released pages
held in the page cache (:meth:`MHeap.check`).

**The page cache.** As Go's allocSpan does with the P's ``pageCache``, a span of fewer
than 16 pages comes from a 64-page block of free pages taken from the page allocator
in one step (:meth:`~heap.pagealloc.PageAlloc.alloc_to_cache`); only when the cache has
no run that fits does it go to the page allocator itself. heaplab runs one P, so an
MHeap has one cache (``pcache``). To the page allocator the cached pages are in use;
to the heap's accounting they stay free or released, as their scavenged bits say
(Go moves nothing between the stats until a span is made of them). Freed spans go to
the page allocator, never back to the cache. :meth:`MHeap.flush_page_cache` gives
the cached pages back; :meth:`MHeap.scavenge_all` does so before releasing everything.

**Batches.** :meth:`MHeap.alloc_spans` makes the spans ``count`` calls of
:meth:`MHeap.alloc_span` would make, with one ``sys_used``, one accounting step and one
span-map write per stretch of spans that follow each other in memory.

One MHeap per :class:`~sysmem.SysMem`, as Go has one ``mheap_`` per process: the
three heap stats are the SysMem's own counters.

Failures never leave the heap half-changed. When no address space or memory can be
had for growth, :meth:`MHeap.alloc_span` returns None (Go's allocSpan returns nil);
when pages it found cannot be committed (``sys_used`` failing on a Windows-like OS),
it undoes the allocation and raises :class:`~sysmem.errors.HeapOutOfMemoryError`
(:meth:`MHeap.alloc_spans` raises it in both cases, after undoing all it did). Growth
that already happened in that call stays (Go never shrinks the heap; it is free,
released memory), and so does a page-cache refill it made (the pages are still free).
A span's memory view is made on first use (:attr:`MSpan.words`): a simulated
machine's ``physical_memory`` running out shows there, when the pages are touched.
"""

from __future__ import annotations

import threading
import weakref
from typing import Callable, Iterator

import numpy as np

from sysmem import State, SysMem
from sysmem.errors import (
    HeapError,
    HeapInvariantError,
    HeapOutOfMemoryError,
    HeapThrowError,
    InvalidSpanFreeError,
)

from .arena import Arenas, HeapArena
from .clock import Clock, VirtualClock, read_clock
from .constants import (
    ARENA_BASE_OFFSET,
    HEAP_ARENA_BYTES,
    LOG_PALLOC_CHUNK_BYTES,
    MASK64,
    MAX_ALLOC,
    PAGE_CACHE_PAGES,
    PAGE_SHIFT,
    PAGE_SIZE,
    PALLOC_CHUNK_BYTES,
    PALLOC_CHUNK_PAGES,
)
from .mspan import SPAN_DEAD, SPAN_IN_USE, MSpan
from .pagealloc import PageAlloc, PageCache, chunk_index
from .sizeclasses import CLASS_TO_SIZE, NUM_SPAN_CLASSES, span_nelems

__all__ = ["MHeap"]

_READY_MASK = 1 << State.READY
_CHUNK_PAGE_MASK = PALLOC_CHUNK_PAGES - 1

# SysMem -> the MHeap using it (one heap per SysMem: they share its heap stats).
_heaps: "weakref.WeakKeyDictionary[SysMem, weakref.ref]" = weakref.WeakKeyDictionary()


class _HeapPages(PageAlloc):
    """The page allocator, remembering which pages of each allocation were scavenged.

    ``alloc`` clears the scavenged bits of the pages it hands out (and only reports
    how many there were). If the heap then fails to commit those pages, putting them
    back must restore exactly those bits, and release exactly those pages again; so
    ``last_scav`` keeps them as a mask (bit k: page k of the allocation).
    """

    def __init__(self, **kw) -> None:
        super().__init__(**kw)
        self.last_scav = 0

    def alloc_range(self, base: int, npages: int) -> int:
        self.last_scav = _join_bits([
            ((self.chunk_of(ci).scavenged.to_int() >> first) & ((1 << n) - 1), n)
            for ci, _bits, first, n in _chunk_pieces(base, npages, 0)
        ])
        return super().alloc_range(base, npages)


def _join_bits(pieces: list[tuple[int, int]]) -> int:
    """One int from (value, bit count) pieces, the first in the lowest bits. Joined
    pairwise, so a span of millions of pages costs O(n log n), not O(n**2)."""
    while len(pieces) > 1:
        joined = [(a | b << na, na + nb) for (a, na), (b, nb) in zip(pieces[::2], pieces[1::2])]
        if len(pieces) & 1:
            joined.append(pieces[-1])
        pieces = joined
    return pieces[0][0] if pieces else 0


def _page_number(addr: int) -> int:
    # Global page number in the offset address space (chunk index << 9 | page).
    return ((addr - ARENA_BASE_OFFSET) & MASK64) >> PAGE_SHIFT


def _chunk_pieces(base: int, npages: int, mask: int) -> Iterator[tuple[int, int, int, int]]:
    """(chunk index, the bits of ``mask`` for its part, first page in the chunk, pages)
    for each chunk that [base, base + npages pages) touches; ``mask`` has one bit per
    page of the range."""
    p = _page_number(base)
    # Slices of the mask come from its bytes, so a huge mask is not shifted per chunk.
    raw = mask.to_bytes((npages + 7) >> 3, "little") if mask else b""
    done = 0
    while done < npages:
        first = p & _CHUNK_PAGE_MASK
        n = min(npages - done, PALLOC_CHUNK_PAGES - first)
        bits = 0
        if raw:
            lo = done >> 3
            bits = (int.from_bytes(raw[lo:(done + n + 7 >> 3) + 1], "little") >> (done & 7)) & ((1 << n) - 1)
        yield p >> _LOG_CHUNK_PAGES, bits, first, n
        p += n
        done += n


class _CannotGrow(Exception):
    """The heap needed to grow and could not (Go's allocSpan returning nil)."""


# Steps a span of an allocation has been through (see MHeap._alloc_spans / _undo):
# its pages found; its pages committed and accounted (and the span perhaps made).
_PLACED, _COMMITTED = 0, 1
#: Spans of fewer pages come from the page cache (Go: npages < pageCachePages/4).
_CACHE_MAX_PAGES = PAGE_CACHE_PAGES // 4
_CACHE_BLOCK_MASK = -(PAGE_CACHE_PAGES * PAGE_SIZE)  # aligns an address down to its block
_LOG_CHUNK_PAGES = LOG_PALLOC_CHUNK_BYTES - PAGE_SHIFT


class MHeap:
    """Go's ``mheap``: spans from a page allocator over arenas reserved from ``sm``.

    ``arena_bytes``: arena size (a power of two >= 4 MiB; Go's 64 MiB by default).
    ``randomize_base``/``seed``: Go's randomized heap base (hints, first-growth chunk
    and page padding), reproducibly. ``greentea``: size spans for Go's default Green
    Tea collector (inline mark bits). ``arena_metadata``: account Go's per-arena
    metadata as ``gc_misc_sys`` memory (see :mod:`heap.arena`). ``clock``: the
    :class:`~heap.clock.Clock` that stamps when pages become free (:meth:`freed_at`);
    a fresh :class:`~heap.clock.VirtualClock` by default.

    Hooks (lists; append callables): ``on_grow(base, nbytes)`` after each range is
    added to the page allocator; ``on_span_free(span)`` after a span was freed;
    ``before_span_commit(scav, growth)`` for each span of ``alloc_span(s)`` after its
    pages were found and before they are committed, where Go scavenges synchronously.
    """

    def __init__(
        self,
        sm: SysMem,
        *,
        arena_bytes: int = HEAP_ARENA_BYTES,
        randomize_base: bool = False,
        seed: int = 0,
        greentea: bool = True,
        arena_metadata: bool = True,
        clock: Clock | None = None,
    ) -> None:
        if clock is not None and not isinstance(clock, Clock):
            raise TypeError(f"clock must be a heap.clock.Clock, not {type(clock).__name__}")
        other = _heaps.get(sm)
        if other is not None and other() is not None:
            raise HeapError("this SysMem already has an MHeap; use one MHeap per SysMem (they share its heap stats)")
        self.sm = sm
        #: where page free times (:meth:`freed_at`) come from
        self.clock: Clock = VirtualClock() if clock is None else clock
        self._last_time = 0
        #: what went wrong reading the clock at a span free (reported by problems())
        self.clock_problem: str | None = None
        self.greentea = greentea
        self.lock = threading.RLock()  # Go's heap lock; reentrant so hooks may call back
        self.heap_in_use = sm.stat("heap_in_use")
        self.heap_free = sm.stat("heap_free")
        self.heap_released = sm.stat("heap_released")
        self.stats = {"heap_in_use": self.heap_in_use, "heap_free": self.heap_free, "heap_released": self.heap_released}
        self.arenas = Arenas(
            sm, arena_bytes, randomize_base=randomize_base, seed=seed, metadata=arena_metadata
        )
        self.arena_bytes = arena_bytes
        self._log_arena = self.arenas.log_arena_bytes
        self._ppa = self.arenas.pages_per_arena
        self.randomize_base = self.arenas.rand is not None
        backend = sm.backend
        self.pages = _HeapPages(
            sys_unused=self._sys_unused,
            phys_page_size=sm.page_size,
            phys_huge_page_size=int(getattr(backend, "huge_page_size", 0) or 0),
        )
        self.phys_page_size = sm.page_size
        # Go's per-P page cache; heaplab runs one P, so one cache per heap.
        self.pcache = PageCache()
        # curArena: the part of the newest reservation not yet mapped.
        self.cur_arena_base = 0
        self.cur_arena_end = 0
        self.mapped_bytes = 0  # sys_map'ed for the heap (= heap_sys)
        self.padding_pages = 0  # randomized-base padding: allocated + scavenged forever
        self.pages_in_use = 0  # Go's pagesInUse
        self.sweepgen = 0  # Go's sweepgen, for the collector
        # (elemsize, nelems) of a span of each small span class (Go's initSpan reads
        # them from the size-class tables; class 0's depend on the span's size).
        self._shapes = [(0, 0)] * 2 + [
            (CLASS_TO_SIZE[spc >> 1], span_nelems(spc >> 1, bool(spc & 1), greentea))
            for spc in range(2, NUM_SPAN_CLASSES)
        ]
        # Span ids: the span maps hold ids, _spans[id] the span; 0 = no span.
        self._spans: list[MSpan | None] = [None]
        self._free_ids: list[int] = []
        self.on_grow: list[Callable[[int, int], None]] = []
        self.on_span_free: list[Callable[[MSpan], None]] = []
        self.before_span_commit: list[Callable[[int, int], None]] = []
        _heaps[sm] = weakref.ref(self)

    # --- stats ------------------------------------------------------------------------
    @property
    def heap_sys(self) -> int:
        """Go's HeapSys: in use + free + released."""
        return self.heap_in_use.load() + self.heap_free.load() + self.heap_released.load()

    def in_use_spans(self) -> Iterator[MSpan]:
        """Every in-use span (no particular order)."""
        return (s for s in self._spans if s is not None)

    @property
    def nspans(self) -> int:
        return len(self._spans) - 1 - len(self._free_ids)

    # --- page allocator callback ----------------------------------------------------------
    def _sys_unused(self, addr: int, nbytes: int) -> None:
        # The scavenger releasing free pages: the OS may take them back; account them
        # as released only once the release happened (Go's scavengeOne).
        self.sm.sys_unused(addr, nbytes)
        self.heap_free.add(-nbytes)
        self.heap_released.add(nbytes)

    # --- growing ----------------------------------------------------------------------
    def grow(self, npages: int) -> int | None:
        """Add at least ``npages`` pages to the page allocator, in whole 4 MiB chunks
        (Go's ``mheap.grow``): map the next part of the current arena, reserving a new
        arena when it is used up. New memory is Prepared and counts as released.
        Returns the bytes added, or None when address space or memory ran out."""
        with self.lock:
            return self._grow(npages)

    def _grow(self, npages: int) -> int | None:
        added: list[tuple[int, int]] = []
        try:
            # The clock first: a bad reading must fail before anything changes.
            t = read_clock(self.clock)
            self._last_time = max(t, self._last_time)
            return self._grow_into(npages, added, t)
        finally:
            # Hooks run once the heap is consistent again (they may allocate or scavenge).
            for v, n in added:
                for hook in self.on_grow:
                    hook(v, n)

    def _grow_into(self, npages: int, added: list[tuple[int, int]], t: int) -> int | None:
        if npages < 1:
            raise ValueError(f"grow: npages must be >= 1, got {npages}")
        phys = self.phys_page_size
        first_grow = self.cur_arena_base == 0
        ask = ((npages + PALLOC_CHUNK_PAGES - 1) // PALLOC_CHUNK_PAGES) * PALLOC_CHUNK_BYTES
        if ask > MAX_ALLOC:
            return None  # more than the heap's whole address space (Go's maxAlloc)
        total = 0
        n_base = (self.cur_arena_base + ask + phys - 1) & -phys
        got = None
        rand_state = self.arenas.rand.state() if first_grow and self.randomize_base else None
        if n_base > self.cur_arena_end:
            got = self.arenas.sys_alloc(ask)
            if got is None:
                return None
            av, asize = got
            saved_cur = (self.cur_arena_base, self.cur_arena_end)
            if av == self.cur_arena_end:
                # Contiguous with the current arena: just extend it.
                self.cur_arena_end = av + asize
            else:
                # Elsewhere: hand what is left of the current arena to the page
                # allocator first, then switch to the new space.
                left = self.cur_arena_end - self.cur_arena_base
                if left:
                    try:
                        self._add_to_heap(self.cur_arena_base, left, t)
                    except MemoryError:
                        self.arenas.undo_sys_alloc(av)
                        return None
                    added.append((self.cur_arena_base, left))
                    total += left
                self.cur_arena_base, self.cur_arena_end = av, av + asize
                if first_grow and self.randomize_base:
                    # Start the heap at a random chunk of the first arena; the part
                    # below stays Reserved for good.
                    bits = self._log_arena - LOG_PALLOC_CHUNK_BYTES
                    off = self.arenas.next_rand_bits(bits)
                    self.cur_arena_base = (av | off << LOG_PALLOC_CHUNK_BYTES) & -PALLOC_CHUNK_BYTES
            n_base = (self.cur_arena_base + ask + phys - 1) & -phys

        v = self.cur_arena_base
        try:
            self._add_to_heap(v, n_base - v, t)
        except MemoryError:
            if got is not None:
                # Give back the arena reserved for this growth. (If the rest of the
                # old arena was added just before, that growth stays: it is
                # consistent, only not enough.)
                self.arenas.undo_sys_alloc(got[0])
                if total:  # the old arena is used up
                    self.cur_arena_base = self.cur_arena_end = saved_cur[1]
                else:
                    self.cur_arena_base, self.cur_arena_end = saved_cur
                if rand_state is not None:  # draw the same random start next time
                    self.arenas.rand.restore(rand_state)
            return None
        self.cur_arena_base = n_base
        added.append((v, n_base - v))
        total += n_base - v

        if first_grow and self.randomize_base:
            # Start at a random page of that chunk: the pages in front are marked
            # allocated and scavenged, and never used.
            npad = (self.arenas.next_rand_bits(LOG_PALLOC_CHUNK_BYTES) & -PAGE_SIZE) >> PAGE_SHIFT
            if npad:
                self.pages.mark_random_padding_pages(v, npad)
                self._stamp_freed(v, npad, -1)
                self.padding_pages += npad
        return total

    def _add_to_heap(self, v: int, n: int, t: int) -> None:
        # Reserved -> Prepared; the new memory is counted as released (it was never
        # touched) and joins the page allocator as free, scavenged pages.
        self.sm.sys_map(v, n, self.heap_released, "heap")
        self.mapped_bytes += n
        self.pages.grow(v, n)
        self._stamp_freed(v, n >> PAGE_SHIFT, t)

    # --- spans ------------------------------------------------------------------------
    def alloc_span(self, npages: int, spanclass: int) -> MSpan | None:
        """A new in-use span of ``npages`` pages for ``spanclass`` (Go's ``allocSpan``
        for heap spans): from the page cache when it is small (fewer than 16 pages),
        else the lowest free pages that fit, growing the heap if needed; the scavenged
        ones among them are made Ready again (``sys_used``). Returns None when the heap
        cannot grow; raises HeapOutOfMemoryError when the pages cannot be committed.
        Either way nothing changed, except that growth this call already made stays
        (as free, released memory), as do pages it moved into the page cache."""
        try:
            return self._alloc_spans(npages, spanclass, 1)[0]
        except _CannotGrow:
            return None

    def alloc_spans(self, npages: int, spanclass: int, count: int) -> list[MSpan]:
        """``count`` new in-use spans of ``npages`` pages each: the very spans (same
        addresses, ids, ``needzero``, accounting) that ``count`` calls of
        :meth:`alloc_span` would return, in that order. All or nothing: raises
        :class:`HeapOutOfMemoryError` after giving back everything it took when the heap
        cannot grow or memory cannot be committed.

        Cheaper than the calls: pages are found where ``alloc_span`` would find them
        (from the page cache, as many spans at once as land one after the other), and
        the spans that lie next to each other are made Ready with one ``sys_used``,
        accounted once and written into the span map at once. (While
        ``before_span_commit`` or ``on_grow`` hooks are registered, each span is
        committed before the next is looked for, so the hooks see every state they
        would see with ``alloc_span``.)
        """
        if count < 0:
            raise ValueError(f"alloc_spans: count must be >= 0, got {count}")
        if count == 0:
            return []
        try:
            return self._alloc_spans(npages, spanclass, count)
        except _CannotGrow:
            raise HeapOutOfMemoryError(
                f"out of memory: no room for {count} span(s) of {npages} page(s) (span class {spanclass})"
            ) from None

    def _alloc_spans(self, npages: int, spanclass: int, count: int) -> list[MSpan]:
        # Go's allocSpan in two steps: find the pages (_place), then commit the
        # released ones and set the spans up (_finish: sys_used, initSpan, accounting),
        # the latter once per stretch of spans that follow each other in memory. Each
        # step is recorded in `taken` so that a failure can be undone (_undo).
        if npages < 1:
            raise ValueError(f"alloc_span: npages must be >= 1, got {npages}")
        if not 0 <= spanclass < NUM_SPAN_CLASSES:
            raise ValueError(f"alloc_span: span class {spanclass} outside 0..{NUM_SPAN_CLASSES - 1}")
        with self.lock:
            taken: list[list] = []
            out: list[MSpan] = []
            try:
                if count == 1 or self.before_span_commit or self.on_grow:
                    # Span by span, as count calls of alloc_span (hooks see every state).
                    for k in range(count):
                        self._place(npages, 1, taken)
                        out += self._finish(taken, k, k + 1, npages, spanclass)
                else:
                    left = count
                    while left:
                        left -= self._place(npages, left, taken)
                    i, n = 0, len(taken)
                    while i < n:
                        j = i + 1
                        while j < n and taken[j][0] == taken[j - 1][0] + (taken[j - 1][1] * npages << PAGE_SHIFT):
                            j += 1
                        out += self._finish(taken, i, j, npages, spanclass)
                        i = j
                # Touch what the allocator will write to at once (zeroing, headers, the
                # collector's scans): running out of memory there still undoes it all.
                for span in out:
                    span.touch_for_alloc()
                return out
            except BaseException as e:
                self._undo(taken, npages)
                if isinstance(e, MemoryError) and not isinstance(e, HeapOutOfMemoryError):
                    raise HeapOutOfMemoryError(
                        f"out of memory: allocating {count} span(s) of {npages} page(s) "
                        f"(span class {spanclass}): {e}"
                    ) from e
                raise

    def _place(self, npages: int, want: int, taken: list[list]) -> int:
        # Go's allocSpan up to the pages of a span: a small span comes from the page
        # cache (refilled when empty), else (or when no run in the cache fits) from the
        # page allocator, growing the heap when that fails. From the cache, up to
        # `want` spans are taken at once while each would land right after the
        # previous one. Appends to `taken` [base, spans, scav bytes, scavenged-page
        # mask, source cache or None, state, spans made] and returns the spans taken.
        if npages < _CACHE_MAX_PAGES:
            c = self.pcache
            if c.cache == 0:
                c = self.pcache = self.pages.alloc_to_cache()
            scav_before = c.scav
            base, m, scav = c.alloc_run(npages, want)
            if base is not None:
                smask = (scav_before >> ((base - c.base) >> PAGE_SHIFT)) & ((1 << (m * npages)) - 1) if scav else 0
                taken.append([base, m, scav, smask, c, _PLACED, None])
                if self.before_span_commit:
                    self._before_commit(scav, 0)
                return m
        pages = self.pages
        growth = 0
        base, scav = pages.alloc(npages)
        if base is None:
            growth = self._grow(npages)
            if growth is None:
                raise _CannotGrow
            base, scav = pages.alloc(npages)
            if base is None:
                raise HeapThrowError("grew heap, but no adequate free space found", f"npages={npages}")
        taken.append([base, 1, scav, pages.last_scav if scav else 0, None, _PLACED, None])
        if self.before_span_commit:
            self._before_commit(scav, growth)
        return 1

    def _before_commit(self, scav: int, growth: int) -> None:
        # Where Go decides on synchronous scavenging: the pages are found, not yet
        # committed (on Windows sys_used commits memory, so scavenging comes first).
        for hook in self.before_span_commit:
            hook(scav, growth)

    def _finish(self, taken: list[list], i: int, j: int, npages: int, spanclass: int) -> list[MSpan]:
        # The spans of taken[i:j], which follow each other in memory: commit their
        # released pages with one sys_used (Go's allocSpan does it per span, after
        # initSpan; the order does not matter here and lets a failure be undone
        # cleanly) and account for them, then Go's initSpan for each.
        sm = self.sm
        base0 = taken[i][0]
        nspans = scav_total = 0
        for k in range(i, j):
            nspans += taken[k][1]
            scav_total += taken[k][2]
        total = nspans * npages
        tbytes = total << PAGE_SHIFT
        if scav_total:
            try:
                sm.sys_used(base0, tbytes, scav_total)
            except MemoryError as e:
                raise HeapOutOfMemoryError(
                    f"cannot commit {scav_total} released bytes of {tbytes} bytes of spans at {base0:#x}: {e}"
                ) from e
            self.heap_released.add(-scav_total)
        self.heap_free.add(scav_total - tbytes)
        self.heap_in_use.add(tbytes)
        self.pages_in_use += total
        for k in range(i, j):
            taken[k][5] = _COMMITTED
        elemsize, nelems = self._shapes[spanclass] if spanclass > 1 else (npages << PAGE_SHIFT, 1)
        step = npages << PAGE_SHIFT
        all_released = (1 << npages) - 1
        dirty = self._alloc_needs_zero(base0, npages, nspans)
        spans_list, free_ids, sweepgen = self._spans, self._free_ids, self.sweepgen
        out = []
        for k in range(i, j):
            rec = taken[k]
            base, smask = rec[0], rec[3]
            made = rec[6] = []
            for _ in range(rec[1]):
                # Dirty memory must be zeroed before use, unless every page was released
                # and the OS hands released pages back zeroed.
                needzero = dirty[len(out)]
                if needzero and smask & all_released == all_released:
                    needzero = sm.need_zero_after_sys_unused()
                sid = free_ids.pop() if free_ids else len(spans_list)
                span = MSpan(base, npages, spanclass, elemsize, nelems, needzero=needzero, sm=sm,
                             span_id=sid, sweepgen=sweepgen)
                if sid == len(spans_list):
                    spans_list.append(span)
                else:
                    spans_list[sid] = span
                made.append(span)
                out.append(span)
                base += step
                smask >>= npages
        if nspans == 1:
            self._set_spans(base0, npages, out[0].id)
        else:
            self._set_spans(base0, total, np.repeat(np.fromiter((s.id for s in out), np.int32, nspans), npages))
        return out

    def _undo(self, taken: list[list], npages: int) -> None:
        # Put everything back as it was before the call, newest first: retire the
        # spans made, release again the pages that were released, and return the pages
        # where they came from (the page cache they were taken from, if it still holds
        # their block, else the page allocator) with their scavenged bits.
        pages = self.pages
        for base, m, scav, smask, src, state, made in reversed(taken):
            n = m * npages
            if state == _COMMITTED:
                for span in reversed(made or ()):
                    self._retire(span)
                self._pages_not_in_use(base, n)
                if scav:  # back from free to released, as they were
                    self.heap_free.add(-scav)
                    self.heap_released.add(scav)
                    self._release_again(base, smask)
            c = self.pcache
            if src is not None and src is c and c.base == base & _CACHE_BLOCK_MASK:
                i = (base - c.base) >> PAGE_SHIFT
                c.cache |= ((1 << n) - 1) << i
                c.scav |= smask << i
                continue
            pages.free(base, n)
            for ci, bits, first, k in _chunk_pieces(base, n, smask):
                if bits:
                    sb = pages.chunk_of(ci).scavenged
                    sb.from_int(sb.to_int() | (bits << first))

    def _release_again(self, base: int, smask: int) -> None:
        # Undo sys_used: release again exactly the pages that were released before,
        # one sys_unused per run of them (found with numpy: the mask may be huge).
        if not smask:
            return
        bits = np.unpackbits(np.frombuffer(smask.to_bytes((smask.bit_length() + 7) >> 3, "little"),
                                           np.uint8), bitorder="little")
        edges = np.flatnonzero(np.diff(np.concatenate(([0], bits.astype(np.int8), [0]))))
        for i, j in zip(edges[::2].tolist(), edges[1::2].tolist()):
            self.sm.sys_unused(base + (i << PAGE_SHIFT), (j - i) << PAGE_SHIFT)

    def _alloc_needs_zero(self, base: int, npages: int, count: int = 1) -> list[bool]:
        # Go's allocNeedsZero for `count` spans of `npages` pages one after the other
        # from `base`, in order: per arena, memory below zeroed_base was handed out
        # before (so may be dirty); each span raises the watermark past itself.
        out = []
        arenas = self.arenas._map
        log, ab = self._log_arena, self.arena_bytes
        nbytes = npages << PAGE_SHIFT
        ha, lo, hi = None, 0, 0  # the arena of the previous span, and its bounds
        for _ in range(count):
            if not (lo <= base and base + nbytes <= hi):
                ha = arenas[((base - ARENA_BASE_OFFSET) & MASK64) >> log]
                lo, hi = ha.base, ha.base + ab
            if base + nbytes <= hi:  # the usual case: in one arena
                start, stop = base - lo, base - lo + nbytes
                zb = ha.zeroed_base
                if stop > zb:
                    ha.zeroed_base = stop
                out.append(start < zb)
            else:  # across arenas: each part against its own arena
                need = False
                b, n = base, npages
                while n > 0:
                    a = arenas[((b - ARENA_BASE_OFFSET) & MASK64) >> log]
                    start = b & (ab - 1)
                    if start < a.zeroed_base:
                        need = True
                    stop = min(start + (n << PAGE_SHIFT), ab)
                    if stop > a.zeroed_base:
                        a.zeroed_base = stop
                    b += stop - start
                    n -= (stop - start) >> PAGE_SHIFT
                out.append(need)
                hi = 0  # look the arena up afresh next time
            base += nbytes
        return out

    def _set_spans(self, base: int, npages: int, sid: int | np.ndarray) -> None:
        # Write span id `sid` (or per-page ids, an array of npages) into the span map.
        arenas = self.arenas._map
        log, ppa = self._log_arena, self._ppa
        ha = arenas[((base - ARENA_BASE_OFFSET) & MASK64) >> log]
        i = (base - ha.base) >> PAGE_SHIFT
        if npages == 1:
            ha.spans[i] = sid
            return
        if i + npages <= ppa:  # in one arena
            ha.spans[i : i + npages] = sid
            return
        for ha, i, n, done in self._arena_pieces(base, npages):
            ha.spans[i : i + n] = sid if isinstance(sid, int) else sid[done : done + n]

    def _arena_pieces(self, base: int, npages: int) -> Iterator[tuple[HeapArena | None, int, int, int]]:
        # (arena or None where there is none, first page in it, pages, pages before
        # this piece) for each arena-sized piece of [base, base + npages pages).
        arenas = self.arenas._map
        log, ppa = self._log_arena, self._ppa
        done = 0
        while done < npages:
            key = ((base - ARENA_BASE_OFFSET) & MASK64) >> log
            i = (((base - ARENA_BASE_OFFSET) & MASK64) >> PAGE_SHIFT) & (ppa - 1)
            n = min(npages - done, ppa - i)
            yield arenas.get(key), i, n, done
            base += n << PAGE_SHIFT
            done += n

    # --- page free times --------------------------------------------------------------
    def _free_time(self) -> int:
        # The time a span is freed at. Frees happen deep inside sweeps and frees that
        # cannot be undone, so a bad reading of a user's Clock does not raise here: the
        # last good time is used and check() reports the problem.
        try:
            t = read_clock(self.clock)
        except Exception as e:  # noqa: BLE001 - reported by problems()
            self.clock_problem = f"the clock gave a bad reading at a span free ({e}); the last good time was used"
            return self._last_time
        self._last_time = max(t, self._last_time)
        return self._last_time

    def _stamp_freed(self, base: int, npages: int, t: int) -> None:
        for ha, i, n, _ in self._arena_pieces(base, npages):
            ha.freed_at[i : i + n] = t

    def freed_at(self, addr: int, npages: int) -> np.ndarray:
        """When each of the ``npages`` pages from page-aligned ``addr`` last became
        free, in :attr:`clock` nanoseconds (int64): the time its span was freed, or the
        heap grew over it. -1 for a page that is not free now (held by an in-use span,
        never part of the heap, or Go's random-base padding). Pages in the page cache
        are free (they keep the time they were freed). What time-based release policies
        (purge delays, decay) read; Go itself keeps no such times."""
        if addr & (PAGE_SIZE - 1) or addr < 0:
            raise ValueError(f"freed_at: address {addr:#x} is not a page boundary (pages are {PAGE_SIZE} bytes)")
        if npages < 0 or addr + (npages << PAGE_SHIFT) > MASK64 + 1:
            raise ValueError(f"freed_at: {npages} pages from {addr:#x} is not a range of the address space")
        out = np.full(npages, -1, dtype=np.int64)
        with self.lock:
            for ha, i, n, done in self._arena_pieces(addr, npages):
                if ha is not None:
                    out[done : done + n] = np.where(ha.spans[i : i + n] == 0, ha.freed_at[i : i + n], -1)
        return out

    # --- page cache -------------------------------------------------------------------
    def flush_page_cache(self) -> None:
        """Give the page cache's free pages back to the page allocator (Go's
        ``pageCache.flush``): they become visible to the scavenger and to spans of any
        size again. Go does this for idle Ps at the end of a GC cycle and when a P is
        destroyed; heaplab's one P is idle whenever no allocation is running."""
        with self.lock:
            self.pcache.flush(self.pages)

    def page_cache_pages(self) -> tuple[int, int]:
        """(free pages held in the page cache, how many of them are released)."""
        c = self.pcache
        return c.cache.bit_count(), (c.cache & c.scav).bit_count()

    def free_span(self, span: MSpan) -> None:
        """Return an in-use, empty span's pages to the page allocator (Go's
        ``freeSpanLocked``). No sysmem call: the pages stay Ready, counted as free,
        until the scavenger releases them. The span is dead afterwards."""
        with self.lock:
            if span.state != SPAN_IN_USE or not 0 < span.id < len(self._spans) or self._spans[span.id] is not span:
                raise InvalidSpanFreeError(
                    "mheap.freeSpanLocked - invalid span state", f"{span!r} is not an in-use span of this heap"
                )
            if span.alloc_count != 0:
                raise InvalidSpanFreeError(
                    "mheap.freeSpanLocked - invalid free", f"span {span.base:#x} allocCount {span.alloc_count}"
                )
            t = self._free_time()
            self._pages_not_in_use(span.base, span.npages)
            self.pages.free(span.base, span.npages)
            self._stamp_freed(span.base, span.npages, t)
            self._retire(span)
            for hook in self.on_span_free:
                hook(span)

    def _pages_not_in_use(self, base: int, npages: int) -> None:
        # A span's pages stop being in use (they count as free now): span map, counts.
        nbytes = npages << PAGE_SHIFT
        self._set_spans(base, npages, 0)
        self.pages_in_use -= npages
        self.heap_in_use.add(-nbytes)
        self.heap_free.add(nbytes)

    def _retire(self, span: MSpan) -> None:
        # The span object is done with: its id is free again; it is dead, and has no
        # view of its memory any more (so the pages can be released later).
        self._spans[span.id] = None
        self._free_ids.append(span.id)
        span.id = 0
        span.state = SPAN_DEAD
        span.drop_words()

    def span_of(self, addr: int) -> MSpan | None:
        """The in-use span whose pages hold ``addr`` (interior addresses included), or
        None (Go's ``spanOf`` restricted to in-use spans)."""
        ha = self.arenas._map.get(((addr - ARENA_BASE_OFFSET) & MASK64) >> self._log_arena)
        if ha is None:
            return None
        sid = int(ha.spans[(addr - ha.base) >> PAGE_SHIFT])
        return self._spans[sid] if sid else None

    # --- scavenging -------------------------------------------------------------------
    def scavenge(self, nbytes: int) -> int:
        """Release up to about ``nbytes`` of free pages to the OS now, highest addresses
        first (``pages.scavenge(nbytes, force=True)``); returns the bytes released.
        Pages in the page cache are not free to the page allocator, so they stay."""
        with self.lock:
            return self.pages.scavenge(nbytes, force=True)

    def scavenge_all(self) -> int:
        """Release every free page to the OS (Go's ``scavengeAll``, what
        ``debug.FreeOSMemory`` does after its GC); returns the bytes released. The page
        cache is flushed first, as that GC flushes the caches of idle Ps, so its pages
        are released too."""
        with self.lock:
            self.pcache.flush(self.pages)
            return self.pages.scavenge(MASK64, force=True)

    # --- checks -----------------------------------------------------------------------
    def problems(self) -> list[str]:
        """Every way the heap's accounting disagrees with its spans, its page allocator
        and (with the ledger on) sysmem's page states; empty when consistent."""
        out: list[str] = []
        in_use, free, released = self.heap_in_use.load(), self.heap_free.load(), self.heap_released.load()
        spans = list(self.in_use_spans())
        span_pages = sum(s.npages for s in spans)
        if in_use != span_pages << PAGE_SHIFT:
            out.append(f"heap_in_use is {in_use:#x}, in-use spans hold {span_pages << PAGE_SHIFT:#x}")
        if span_pages != self.pages_in_use:
            out.append(f"pages_in_use is {self.pages_in_use}, in-use spans hold {span_pages} pages")
        if in_use + free + released != self.mapped_bytes:
            out.append(
                f"heap_in_use+heap_free+heap_released = {in_use + free + released:#x}, "
                f"the heap mapped {self.mapped_bytes:#x}"
            )
        # Page allocator: scavenged pages (plus the page cache's released ones) =
        # released bytes; allocated pages = span pages, the randomized-base padding and
        # the free pages held in the page cache (allocated, to the page allocator).
        scav_pages = alloc_pages = 0
        for r in self.pages.in_use_ranges.ranges:
            for ci in range(chunk_index(r.base), chunk_index(r.limit)):
                d = self.pages.chunk_of(ci)
                scav_pages += d.scavenged.count()
                alloc_pages += d.palloc_bits.count()
        cached, cached_scav = self.page_cache_pages()
        if released != (scav_pages + cached_scav) << PAGE_SHIFT:
            out.append(
                f"heap_released is {released:#x}, the page allocator marks {scav_pages << PAGE_SHIFT:#x} "
                f"scavenged and the page cache holds {cached_scav << PAGE_SHIFT:#x} released"
            )
        if alloc_pages != span_pages + self.padding_pages + cached:
            out.append(
                f"the page allocator has {alloc_pages} pages allocated, spans hold {span_pages} "
                f"(+{self.padding_pages} padding, +{cached} in the page cache)"
            )
        c = self.pcache
        if c.cache:
            ci, pi = chunk_index(c.base), (c.base >> PAGE_SHIFT) & _CHUNK_PAGE_MASK
            d = self.pages.try_chunk_of(ci)
            if c.base & ~_CACHE_BLOCK_MASK or d is None:
                out.append(f"{c!r}: not a block of the heap")
            else:
                if ~d.palloc_bits.block64(pi) & c.cache:
                    out.append(f"{c!r}: the page allocator has cached pages free")
                if d.scavenged.block64(pi) & c.cache:
                    out.append(f"{c!r}: the page allocator has cached pages scavenged")
                for sp in spans:
                    if sp.base < c.base + (PAGE_CACHE_PAGES << PAGE_SHIFT) and c.base < sp.end:
                        lo = max(sp.base, c.base) - c.base >> PAGE_SHIFT
                        hi = min(sp.end, c.base + (PAGE_CACHE_PAGES << PAGE_SHIFT)) - c.base >> PAGE_SHIFT
                        if c.cache & ((1 << hi) - (1 << lo)):
                            out.append(f"{sp!r} holds pages the page cache has free")
        # Span maps: exactly the in-use spans' pages carry their ids.
        mapped_pages = sum(int(np.count_nonzero(ha.spans)) for ha in self.arenas)
        if mapped_pages != span_pages:
            out.append(f"span maps cover {mapped_pages} pages, in-use spans hold {span_pages}")
        if self.clock_problem:
            out.append(self.clock_problem)
        # Free times: every mapped page no span holds, but for the padding, has one,
        # and none is in the future.
        stamped = sum(int(np.count_nonzero((ha.spans == 0) & (ha.freed_at >= 0))) for ha in self.arenas)
        free_pages = (self.mapped_bytes >> PAGE_SHIFT) - span_pages - self.padding_pages
        if stamped != free_pages:
            out.append(f"{stamped} pages have a free time, {free_pages} pages are free")
        try:
            now = read_clock(self.clock)
        except Exception as e:  # noqa: BLE001 - reported, not raised
            out.append(f"the clock gives a bad reading: {e}")
        else:
            late = [ha for ha in self.arenas if len(ha.freed_at) and int(ha.freed_at.max()) > now]
            if late:
                out.append(f"{late[0]!r} has pages freed after the clock's now ({now} ns)")
        for s in spans:
            if s.state != SPAN_IN_USE or (s.sm is None and not s.has_view):
                out.append(f"{s!r}: listed as in use but state {s.state!r}, or no memory to view")
            large = s.spanclass >> 1 == 0
            if (not s.base < s.limit <= s.end) if large else (
                    s.limit != s.base + s.nelems * s.elemsize or s.limit > s.end):
                out.append(f"{s!r}: limit {s.limit:#x} is wrong")
            for a in (s.base, s.end - 1):
                if self.span_of(a) is not s:
                    out.append(f"{s!r}: span map at {a:#x} names another span")
        if self.padding_pages == 0:
            try:
                self.pages.check()
            except AssertionError as e:
                out.append(f"page allocator: {e}")
        # sysmem: heap memory is Ready exactly where it is in use or free, Prepared
        # where released, and every in-use span is Ready.
        ledger = self.sm.ledger
        if ledger is not None:
            ready = prepared = 0
            for run in self.sm.runs():
                if run.stat is not None and run.stat.group == "heap":
                    if run.state is State.READY:
                        ready += run.size
                    elif run.state is State.PREPARED:
                        prepared += run.size
            if ready != in_use + free:
                out.append(f"the ledger has {ready:#x} Ready heap bytes, heap_in_use+heap_free is {in_use + free:#x}")
            if prepared != released:
                out.append(f"the ledger has {prepared:#x} Prepared heap bytes, heap_released is {released:#x}")
            for s in spans:
                try:
                    ledger.require(s.base, s.nbytes, _READY_MASK, "MHeap.check")
                except Exception as e:  # noqa: BLE001 - reported, not raised
                    out.append(f"{s!r} is not all Ready: {e}")
        return out

    def check(self) -> None:
        """Raise HeapInvariantError unless :meth:`problems` finds nothing."""
        problems = self.problems()
        if problems:
            raise HeapInvariantError("; ".join(problems[:20]))

    def __repr__(self) -> str:
        return (
            f"MHeap(in_use={self.heap_in_use.load():#x}, free={self.heap_free.load():#x}, "
            f"released={self.heap_released.load():#x}, spans={self.nspans}, arenas={len(self.arenas)})"
        )


__all__ += ["HeapArena"]
