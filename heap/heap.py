"""``Heap``: the user-facing Go-shaped heap — ``mallocgc``'s paths over mcache, mcentral
and mheap, on memory from :mod:`sysmem`.

How an allocation is served (Go's ``mallocgc``, ``malloc.go``):

* The size and whether the object holds pointers choose the size class, exactly as Go
  does (:func:`heap.sizeclasses.alloc_size_class`): pointer-free ("noscan") and
  pointerful ("scan") objects live in different span classes; a scan object bigger
  than 512 bytes gets an 8-byte malloc header in front of it (its class is chosen for
  size + 8, and the address handed out is the slot's start + 8); anything bigger than
  32760 bytes is a large object with a span of its own (``ceil(size / 8192)`` pages).
* Small objects come from the mcache's span of their span class (:mod:`heap.mcache`);
  when it is used up, the mcentral (:mod:`heap.mcentral`) supplies another one with
  free slots, or a fresh one from the mheap.
* Memory that may hold old data is zeroed before it is handed out (the span's
  ``needzero``, Go's rule); fresh memory, and memory the OS zeroed when it was
  released, is not zeroed again.

Objects carry a pointer mask (which 8-byte words hold pointers), written into the
span's ``ptr_mask`` so a collector can be precise. The malloc header holds the id of
the object's pointer layout in :attr:`Heap.types` (Go stores its type pointer there).

Deliberate differences from Go:

* **No tiny allocator.** Go packs pointer-free objects under 16 bytes into shared
  16-byte blocks; that makes freeing one of them meaningless, and heaplab supports
  explicit ``free`` for malloc/free-trace experiments. Such objects get a slot of
  their own size class (8 or 16 bytes).
* **Explicit free** (Go has none): ``free(addr)`` clears the slot's allocation bit at
  once and marks the span dirty (``needzero``); a span that becomes empty goes back to
  the mheap the way Go's sweeper returns an empty span (unless the mcache holds it:
  then when the mcache lets it go). Explicit free and the collector can be mixed,
  but the collector frees every object not reachable from the roots: malloc/free
  trace experiments run with ``gogc="off"``.

Garbage collection (:mod:`heap.gc`): :meth:`Heap.gc` (``runtime.GC``),
:meth:`Heap.free_os_memory` (``debug.FreeOSMemory``), roots (:meth:`Heap.add_root`,
:meth:`Heap.root_slots`), pacing by :class:`~heap.pacer.GCController` with
``gogc``/``memory_limit`` (defaults: GOGC / GOMEMLIMIT), :meth:`Heap.metrics` and
gctrace (``gctrace=True`` / a callable / GODEBUG=gctrace=1). A cycle can start at any
allocation that takes a new span (or a large object, or an ``alloc_many`` batch),
*before* that allocation: an object must be reachable from the roots by the next
allocation call, or it may be collected.
* **Size 0** is refused (Go hands out the address of ``zerobase``).
* **Batches.** :meth:`Heap.alloc_many` takes whole runs of free slots per span with
  numpy, and gets the fresh spans a batch needs from the mheap in one request
  (:meth:`~heap.mheap.MHeap.alloc_spans`); objects, spans and what stays cached end up
  exactly as with ``n`` calls of :meth:`Heap.alloc`.
* One thread: a Heap is not safe to use from several threads at once.

Everything here reads and writes memory through sysmem views, so a bad address raises
an exception instead of crashing the interpreter. Drop a view returned by
:meth:`words` before its object is freed (see :meth:`Heap.words`).
"""

from __future__ import annotations

import gc as _gc
import operator
import sys
import time

import numpy as np

from sysmem import SysMem
from sysmem.errors import (
    DoubleFreeError,
    HeapError,
    HeapInvariantError,
    InvalidFreeError,
    InvalidPointerError,
    InvalidSizeError,
    ObjectBoundsError,
    PointerSlotError,
    RootNotFoundError,
)

from .clock import Clock
from .constants import HEAP_ARENA_BYTES, PAGE_SHIFT, PAGE_SIZE
from .mcache import MCache, free_slots, slot_header
from .mcentral import MCentral
from .mheap import MHeap
from .objects import LayoutTable, ObjectInfo, PointerLayout
from .pacer import MAX_INT64, GCController, gc_settings, gogc_value, memory_limit_value
from .sizeclasses import (
    CLASS_TO_SIZE,
    MAX_SIZE_CLASS_NPAGES,
    MAX_SMALL_SIZE_NO_HEADER,
    NUM_SIZE_CLASSES,
    NUM_SPAN_CLASSES,
    alloc_size_class,
    make_span_class,
    span_nelems,
)

__all__ = ["Heap", "release_sysmem"]

_U64 = np.uint64
_MASK64 = (1 << 64) - 1


# size -> span class of a noscan object, and size -> (span class, header) of a scan
# object, for every small size (index 0 unused). Built once, from alloc_size_class, so
# Go's rule lives in one place.
_TABLES: tuple[list[int], list[tuple[int, int]]] | None = None


def _size_tables() -> tuple[list[int], list[tuple[int, int]]]:
    global _TABLES
    if _TABLES is None:
        noscan = [0] * (MAX_SMALL_SIZE_NO_HEADER + 1)
        scan = [(0, 0)] * (MAX_SMALL_SIZE_NO_HEADER + 1)
        for size in range(1, MAX_SMALL_SIZE_NO_HEADER + 1):
            c, _ = alloc_size_class(size, False)
            noscan[size] = make_span_class(c, True)
            c, h = alloc_size_class(size, True)
            scan[size] = (make_span_class(c, False), h)
        _TABLES = noscan, scan
    return _TABLES


def _as_count(n: object, op: str, name: str = "n") -> int:
    """A non-negative whole number (a bool is not one), or InvalidSizeError naming
    ``op`` and the argument ``name``."""
    if isinstance(n, (bool, np.bool_)):
        raise InvalidSizeError(f"{op}: {name} must be an integer, not bool")
    try:
        n = operator.index(n)
    except TypeError:
        raise InvalidSizeError(f"{op}: {name} must be an integer, not {type(n).__name__}") from None
    if n < 0:
        raise InvalidSizeError(f"{op}: {name} must be >= 0, got {n}")
    return n


def _as_size(size: object) -> int:
    if size.__class__ is int and size > 0:
        return size  # the common case, without the checks' calls
    n = _as_count(size, "alloc", "size")
    if n == 0:
        raise InvalidSizeError("alloc: size must be positive, got 0 (heaplab has no zero-size objects)")
    return n


class Heap:
    """A Go-shaped heap on one :class:`~sysmem.SysMem`.

    ``Heap()`` makes its own ``SysMem("linux")``; ``Heap(backend="simulated",
    personality="windows")`` a simulated one (``backend``, ``ledger``, ``godebug`` and
    any further keyword arguments go to ``SysMem``). ``Heap(sm)`` uses a given SysMem
    (one heap per SysMem: they share its heap statistics). ``arena_bytes``,
    ``randomize_base``, ``seed``, ``greentea``, ``arena_metadata`` and ``clock`` (a
    :class:`~heap.clock.Clock`; a :class:`~heap.clock.VirtualClock` by default) go to
    :class:`~heap.mheap.MHeap`.

    Allocation: :meth:`alloc`, :meth:`alloc_many`; freeing: :meth:`free`,
    :meth:`free_many`; memory: :meth:`read_word`, :meth:`write_word`,
    :meth:`write_pointer`, :meth:`words`, :meth:`read`, :meth:`write`; lookup:
    :meth:`lookup`, :meth:`object_size`; :meth:`stats` (Go's MemStats names) and
    :meth:`check`. See the module docstring for how it follows Go and where it doesn't.
    """

    def __init__(
        self,
        sm: SysMem | None = None,
        *,
        backend: str | None = None,
        ledger: bool | None = None,
        godebug: str | None = None,
        arena_bytes: int = HEAP_ARENA_BYTES,
        randomize_base: bool = False,
        seed: int = 0,
        greentea: bool = True,
        arena_metadata: bool = True,
        gogc: int | str | None = None,
        memory_limit: int | str | None = None,
        gctrace=None,
        clock: Clock | None = None,
        **backend_options,
    ) -> None:
        # Settings first: a bad one must fail before any memory or registration exists.
        settings = gc_settings(gogc, memory_limit, gctrace, godebug)
        if sm is None:
            sm = SysMem(
                backend or "linux",
                ledger=True if ledger is None else ledger,
                godebug=godebug,
                **backend_options,
            )
            self.owns_sysmem = True
        else:
            if backend is not None or ledger is not None or godebug is not None or backend_options:
                raise TypeError("backend, ledger, godebug and backend options are for a Heap "
                                "that makes its own SysMem; pass them to SysMem instead")
            self.owns_sysmem = False
        self.sm = sm
        try:
            self.mheap = MHeap(sm, arena_bytes=arena_bytes, randomize_base=randomize_base,
                               seed=seed, greentea=greentea, arena_metadata=arena_metadata,
                               clock=clock)
        except BaseException:
            if self.owns_sysmem:
                sm.close()
            raise
        #: the heap's time (:class:`~heap.clock.Clock`), shared with its MHeap
        self.clock = self.mheap.clock
        self.greentea = greentea
        self.centrals = [MCentral(self.mheap, spc) for spc in range(NUM_SPAN_CLASSES)]
        self.mcache = MCache(self.centrals, NUM_SIZE_CLASSES)
        # The allocation fast path reads these two directly.
        self._nexts = self.mcache.nexts
        self._noscan_spc, self._scan_class = _size_tables()
        #: True while the mcache has handed out slots its spans' alloc bits don't show
        self._dirty = False
        #: scannable bytes allocated since the last settle (Go's mcache.scanAlloc)
        self._scan_alloc = 0
        self._layouts = LayoutTable()
        #: pointer layouts by id (index 0 unused: a header of 0 means "no layout")
        self.types = self._layouts.types
        # Frees, per size class (class 0: large), and freed bytes (slot sizes).
        self._nfree = [0] * NUM_SIZE_CLASSES
        self._free_bytes = 0
        # Spans freed back to the mheap: base page -> (base, elemsize, header bytes,
        # nelems), so a later free of one of their objects is told apart as a double
        # free (best effort: kept until the pages belong to a span that dies again).
        self._dead_spans: dict[int, tuple[int, int, int, int]] = {}
        self.mheap.on_span_free.append(self._note_dead_span)
        self._closed = False
        self._init_gc(*settings)

    # ======================================================================================
    # allocation
    # ======================================================================================
    def alloc(self, size: int, pointers=None) -> int:
        """Allocate one ``size``-byte object; return its address.

        ``pointers``: None/False for a pointer-free object; True if every word is a
        pointer; or the pointer words as a sequence of word indices or a bool array
        (one entry per 8-byte word). Raises :class:`~sysmem.errors.InvalidSizeError`
        for a size <= 0 (or a mask outside the object) and
        :class:`~sysmem.errors.HeapOutOfMemoryError` when no memory can be had (the
        heap stays usable).
        """
        if pointers is None or pointers is False:
            if size.__class__ is int and 0 < size <= MAX_SMALL_SIZE_NO_HEADER:
                # The fast path: the next free slot of the cached span of this class.
                spc = self._noscan_spc[size]
                addr = next(self._nexts[spc], None)
                if addr is not None:
                    self._dirty = True
                    return addr
                addr = self._refill_next(spc)
                self._dirty = True
                return addr
        return self._alloc_general(size, pointers)

    def _alloc_general(self, size: object, pointers) -> int:
        if self._closed:
            raise _closed_error()
        size = _as_size(size)
        layout = self._layouts.layout_for(size, pointers)
        if size > MAX_SMALL_SIZE_NO_HEADER:
            return self._alloc_large(size, layout)
        if layout is None:
            spc, header = self._noscan_spc[size], 0
        else:
            spc, header = self._scan_class[size]
        addr = next(self._nexts[spc], None)
        if addr is None:
            addr = self._refill_next(spc)
        self._dirty = True
        if layout is not None:
            span = self.mcache.spans[spc]
            self._init_scan_object(span, addr, header, layout)
            self._scan_alloc += layout.scan_bytes(span.elemsize, header)  # _dirty is set
        return addr

    def _refill_next(self, spc: int) -> int:
        # Go's nextFree slow path: mcache.refill, then the first slot of the new span.
        if self._closed:
            raise _closed_error()
        if self._gc_armed:
            self._maybe_gc()
        self.mcache.refill(spc)
        return next(self._nexts[spc])

    def _init_scan_object(self, span, addr: int, header: int, layout: PointerLayout) -> None:
        # Write the object's pointer mask into the span (the slot may have held another
        # object's), and its layout id into the malloc header.
        w = (addr - span.base) >> 3
        ws = w - (header >> 3)
        pm = span.ptr_mask
        pm[ws:ws + (span.elemsize >> 3)] = False
        if layout.all_pointers:
            pm[w:w + layout.nwords] = True
        else:
            pm[w + layout.offsets] = True
        if header:
            span.words[ws] = layout.id

    def _alloc_large(self, size: int, layout: PointerLayout | None) -> int:
        # Go's mallocgcLarge / mcache.allocLarge: a span of its own, class 0.
        npages = (size + PAGE_SIZE - 1) >> PAGE_SHIFT
        spc = make_span_class(0, layout is None)
        central = self.centrals[spc]
        if self._gc_armed:
            self._maybe_gc()
        span = central.grow(npages)
        self._init_large(span, layout, size)
        central.full[span.base] = span
        mc = self.mcache
        mc.nmalloc[0] += 1
        mc.alloc_bytes += npages << PAGE_SHIFT
        if layout is not None:
            self.pacer.update(0, npages << PAGE_SHIFT)  # Go: the span's elemsize
        return span.base

    @staticmethod
    def _init_large(span, layout: PointerLayout | None, size: int) -> None:
        # Go's allocLarge: the object ends at the size asked for (s.limit), so a
        # pointer into the rest of its last page refers to nothing (findObject).
        span.limit = span.base + size
        span.alloc_bits[0] = True
        span.alloc_count = 1
        span.freeindex = 1
        if span.needzero:
            span.words[:] = 0
        if layout is not None:
            pm = span.ptr_mask  # a new span's mask is clear
            if layout.all_pointers:
                pm[:layout.nwords] = True
            else:
                pm[layout.offsets] = True

    def alloc_many(self, size: int, n: int, pointers=None) -> np.ndarray:
        """Allocate ``n`` objects of ``size`` bytes (same ``pointers`` for all); return
        their addresses (uint64 array, in allocation order: what ``n`` calls of
        :meth:`alloc` would return).

        The batch path: whole runs of free slots are taken per span with numpy, and
        the fresh spans the batch needs come from the mheap in one request before
        anything is handed out, so running out of memory raises
        :class:`~sysmem.errors.HeapOutOfMemoryError` with nothing allocated.
        """
        if self._closed:
            raise _closed_error()
        size = _as_size(size)
        n = _as_count(n, "alloc_many")
        layout = self._layouts.layout_for(size, pointers)
        out = np.empty(n, dtype=_U64)
        if n == 0:
            return out
        if self._gc_armed:
            # Before the batch: its objects cannot be rooted until it returns.
            self._maybe_gc()
        if self._dirty:
            self._flush()
        if size > MAX_SMALL_SIZE_NO_HEADER:
            return self._alloc_many_large(size, n, layout, out)
        if layout is None:
            spc, header = self._noscan_spc[size], 0
        else:
            spc, header = self._scan_class[size]
        mc = self.mcache
        central = self.centrals[spc]

        # A used-up cached span is what alloc's first refill hands back, before
        # anything else happens (it may go back to the mheap, if frees emptied it).
        cached = mc.spans[spc]
        if cached is not None and not mc.remaining(spc):
            mc.uncache(spc)
            cached = None
        # How many slots the cached span and the partial spans offer; the rest must
        # come from fresh spans, taken first (all or nothing) so a failure changes nothing.
        have = 0
        used = []  # the spans already held whose slots the batch takes
        if cached is not None:
            # All its free slots: those the mcache has not reached yet and those freed
            # since it was cached, which step 2 takes once it is back in the partial set.
            have = cached.nelems - cached.alloc_count
            used.append(cached)
        if have < n:
            for s in central.partial.values():
                have += s.nelems - s.alloc_count
                used.append(s)
                if have >= n:
                    break
        # Touch the spans held already that the batch writes through (fresh ones come
        # touched), before any slot is taken: running out of memory changes nothing.
        for span in used:
            span.touch_for_alloc()
        fresh: list = []
        if have < n:
            nel = self._nelems(spc)
            fresh = central.grow_many(-(-(n - have) // nel))

        groups: list[tuple] = []  # (span, slot indices, must zero, fresh)
        got = 0
        # 1. the cached span's remaining slots, in the order alloc would take them
        if cached is not None:
            it = mc.nexts[spc]
            rem = it.__length_hint__()
            if rem:
                k = min(rem, n)
                pos = mc.totals[spc] - rem
                out[:k] = mc.addresses(spc, pos, pos + k)
                groups.append((cached, mc.slots[spc][pos:pos + k], cached.needzero, False))
                it.__setstate__(pos + k)
                mc.commit(spc)
                got = k
            if got < n:
                mc.uncache(spc)
        # 2. partial spans, oldest first
        while got < n and central.partial:
            span = central.cache_span()
            free = free_slots(span)
            k = min(len(free), n - got)
            idx = free[:k]
            out[got:got + k] = idx.astype(_U64) * _U64(span.elemsize) + _U64(span.base + header)
            self._take(span, idx)
            groups.append((span, idx, span.needzero, False))
            got += k
            if got == n:
                # The span the last object came from stays cached, used up or not, as
                # alloc leaves it (a free in it must find it cached, as after alloc).
                mc.install(spc, span, free[k:])
            else:
                central.full[span.base] = span
        # 3. fresh spans: all slots of each, the last one perhaps only in part
        if got < n:
            got = self._fill_fresh(spc, header, fresh, n, got, out, groups)
        # Zero what needs it, write pointer masks and headers, per span.
        for span, idx, zero, new in groups:
            self._prepare_slots(span, idx, zero, new, header, layout)
        if layout is not None:
            self.pacer.update(0, n * layout.scan_bytes(groups[0][0].elemsize, header))
        return out

    def _nelems(self, spc: int) -> int:
        return span_nelems(spc >> 1, bool(spc & 1), self.greentea)

    def _fill_fresh(self, spc, header, spans, n, got, out, groups) -> int:
        mc = self.mcache
        central = self.centrals[spc]
        rem = n - got
        nel = spans[0].nelems
        elemsize = spans[0].elemsize
        bases = np.fromiter((s.base for s in spans), dtype=_U64, count=len(spans))
        offs = np.arange(nel, dtype=_U64) * _U64(elemsize) + _U64(header)
        out[got:] = (bases[:, None] + offs[None, :]).ravel()[:rem]
        full = central.full
        all_slots = None
        for s in spans[:-1]:
            s.alloc_bits[:] = True
            s.alloc_count = nel
            s.freeindex = nel
            full[s.base] = s
            if all_slots is None:
                all_slots = np.arange(nel)
            groups.append((s, all_slots, s.needzero, True))
        last = spans[-1]
        k = rem - (len(spans) - 1) * nel
        last.alloc_bits[:k] = True
        last.alloc_count = k
        last.freeindex = k
        groups.append((last, np.arange(k), last.needzero, True))
        # The last span stays cached, used up or not, as alloc leaves it.
        if mc.spans[spc] is not None:
            mc.uncache(spc)
        mc.install(spc, last, np.arange(k, nel))
        mc.nmalloc[spc >> 1] += rem
        mc.alloc_bytes += rem * elemsize
        return n

    def _take(self, span, idx: np.ndarray) -> None:
        # Mark slots idx (the lowest free ones) allocated, as mcache.commit would.
        k = len(idx)
        span.alloc_bits[idx] = True
        span.alloc_count += k
        span.freeindex = int(idx[-1]) + 1
        self.mcache.nmalloc[span.sizeclass] += k
        self.mcache.alloc_bytes += k * span.elemsize

    @staticmethod
    def _prepare_slots(span, idx: np.ndarray, zero: bool, fresh: bool, header: int,
                       layout: PointerLayout | None) -> None:
        if not zero and layout is None:
            return
        wpe = span.elemsize >> 3
        nel = span.nelems
        if zero:
            slots = span.words[:nel * wpe].reshape(nel, wpe)
            if len(idx) == nel:
                slots[:] = 0
            else:
                slots[idx] = 0
            del slots
        if layout is not None:
            pm = span.ptr_mask[:nel * wpe].reshape(nel, wpe)
            if not fresh:
                pm[idx] = False
            hw = header >> 3
            if layout.all_pointers:
                pm[idx, hw:hw + layout.nwords] = True
            else:
                pm[idx[:, None], (layout.offsets + hw)[None, :]] = True
            if header:
                words = span.words[:nel * wpe].reshape(nel, wpe)
                words[idx, 0] = layout.id

    def _alloc_many_large(self, size: int, n: int, layout, out: np.ndarray) -> np.ndarray:
        npages = (size + PAGE_SIZE - 1) >> PAGE_SHIFT
        spc = make_span_class(0, layout is None)
        central = self.centrals[spc]
        spans = central.grow_many(n, npages)
        full = central.full
        init = self._init_large
        for i, s in enumerate(spans):
            init(s, layout, size)
            full[s.base] = s
            out[i] = s.base
        mc = self.mcache
        mc.nmalloc[0] += n
        mc.alloc_bytes += n * (npages << PAGE_SHIFT)
        if layout is not None:
            self.pacer.update(0, n * (npages << PAGE_SHIFT))
        return out

    # ======================================================================================
    # freeing
    # ======================================================================================
    def _settle(self) -> None:
        """Refuse a closed heap; make the alloc bits exact (see :meth:`_flush`)."""
        if self._closed:
            raise _closed_error()
        if self._dirty:
            self._flush()

    def _flush(self) -> None:
        """Settle the slots the mcache handed out into their spans' alloc bits."""
        if self._closed:
            raise _closed_error()
        self.mcache.commit_all()
        self._dirty = False
        if self._scan_alloc:  # Go's mcache.scanAlloc, handed to the pacer when settled
            self.pacer.update(0, self._scan_alloc)
            self._scan_alloc = 0

    def free(self, addr: int) -> None:
        """Free the object at ``addr`` (the address :meth:`alloc` returned).

        Raises :class:`~sysmem.errors.InvalidFreeError` unless ``addr`` is the start of a
        live object (:class:`~sysmem.errors.DoubleFreeError` when it was already freed);
        nothing changes then. The span becomes dirty (``needzero``); an empty span goes
        back to the mheap unless the mcache holds it.
        """
        self._settle()
        try:
            a = operator.index(addr)
        except TypeError:
            raise InvalidFreeError(f"free: address must be an integer, not {type(addr).__name__}") from None
        span = self.mheap.span_of(a) if 0 < a <= _MASK64 else None
        if span is None:
            raise self._bad_free(a)
        if span.spanclass >> 1 == 0:
            if a != span.base:
                raise InvalidFreeError(
                    f"free({a:#x}): not the start of the large object at {span.base:#x}")
            self._free_large(span)
            return
        header = slot_header(span)
        elemsize = span.elemsize
        i, r = divmod(a - span.base - header, elemsize)
        if r or i < 0 or i >= span.nelems:
            raise InvalidFreeError(f"free({a:#x}): not the start of an object in {span!r}")
        bits = span.alloc_bits
        if not bits[i]:
            raise DoubleFreeError(f"free({a:#x}): the object is already free (double free)")
        self._free_slots(span, i, 1, i)

    def _free_slots(self, span, idx, k: int, lowest: int) -> None:
        # Free k checked live slots `idx` (an index or an index array; `lowest` the
        # smallest) of a small-object span: clear their bits, mark the span dirty, count
        # the frees and let the span's mcentral file it (or the mheap take it back).
        span.alloc_bits[idx] = False
        span.alloc_count -= k
        if lowest < span.freeindex:
            span.freeindex = lowest
        span.needzero = True
        spc = span.spanclass
        self._nfree[spc >> 1] += k
        self._free_bytes += k * span.elemsize
        mc = self.mcache
        cached = mc.spans[spc] is span
        if cached:
            mc.holes[spc] = True
        self.centrals[spc].object_freed(span, cached)

    def _free_large(self, span) -> None:
        span.alloc_bits[0] = False
        span.alloc_count = 0
        try:
            self.centrals[span.spanclass].release(span)
        except BaseException:  # the mheap refused: the object stays allocated
            span.alloc_bits[0] = True
            span.alloc_count = 1
            raise
        self._nfree[0] += 1
        self._free_bytes += span.npages << PAGE_SHIFT

    def _bad_free(self, a: int) -> InvalidFreeError:
        dead = self._dead_span_of(a)
        if dead is not None:
            return DoubleFreeError(f"free({a:#x}): the object's span was already freed (double free)")
        return InvalidFreeError(f"free({a:#x}): not an address of a live heap object")

    def _dead_span_of(self, a: int) -> tuple | None:
        # A span freed earlier whose object started at a (see _dead_spans).
        if not self._dead_spans:
            return None
        page = a >> PAGE_SHIFT
        for p in range(page, page - MAX_SIZE_CLASS_NPAGES, -1):
            rec = self._dead_spans.get(p)
            if rec is not None:
                base, elemsize, header, nelems = rec
                i, r = divmod(a - base - header, elemsize)
                return rec if (r == 0 and 0 <= i < nelems) else None
        return None

    def _note_dead_span(self, span) -> None:
        self._dead_spans[span.base >> PAGE_SHIFT] = (
            span.base, span.elemsize, slot_header(span), span.nelems)

    def free_many(self, addrs) -> None:
        """Free every object in ``addrs`` (addresses as :meth:`alloc` returned them).

        All or nothing: every address is checked first, and if any is not the start of
        a live object (or appears twice) the error for the first such address is raised
        and nothing is freed.
        """
        self._settle()
        try:
            a = np.asarray(addrs)
            if a.size and a.dtype.kind not in "iu":
                raise TypeError
            a = a.astype(_U64, copy=False).ravel() if a.dtype.kind == "u" else a.ravel()
            if a.size and a.dtype.kind == "i" and int(a.min()) <= 0:
                bad = int(a[np.flatnonzero(a <= 0)[0]])
                raise InvalidFreeError(f"free({bad:#x}): not an address of a live heap object")
            a = a.astype(_U64, copy=False)
        except (TypeError, OverflowError, ValueError) as e:
            if isinstance(e, InvalidFreeError):
                raise
            got = np.asarray(addrs).dtype if not isinstance(e, OverflowError) else "out-of-range values"
            raise InvalidFreeError(f"free_many: addresses must be 64-bit integers, got {got}") from None
        if a.size == 0:
            return
        order = np.argsort(a, kind="stable")
        sa = a[order]
        dup = np.flatnonzero(sa[1:] == sa[:-1])
        # Group by span: one span_of per distinct page (spans are page runs).
        pages = sa >> _U64(PAGE_SHIFT)
        starts = np.flatnonzero(np.concatenate(([True], pages[1:] != pages[:-1])))
        span_of = self.mheap.span_of
        plan: dict[int, tuple] = {}  # span id -> (span, [positions in sa])
        bad: list[tuple[int, Exception]] = []  # (position in input, error)
        bounds = np.append(starts, len(sa))
        for j in range(len(starts)):
            lo, hi = int(bounds[j]), int(bounds[j + 1])
            span = span_of(int(sa[lo]))
            if span is None:
                bad.append((int(order[lo]), self._bad_free(int(sa[lo]))))
                continue
            entry = plan.get(id(span))
            if entry is None:
                plan[id(span)] = (span, [(lo, hi)])
            else:
                entry[1].append((lo, hi))
        if len(dup):
            pos = int(order[dup[0] + 1])
            bad.append((pos, DoubleFreeError(
                f"free({int(a[pos]):#x}): the address appears twice (double free)")))
        work = []
        for span, runs in plan.values():
            sel = np.concatenate([np.arange(lo, hi) for lo, hi in runs]) if len(runs) > 1 else np.arange(*runs[0])
            va = sa[sel].astype(np.int64) - np.int64(span.base)
            if span.spanclass >> 1 == 0:
                wrong = np.flatnonzero(va != 0)
                if len(wrong):
                    p = int(order[sel[wrong[0]]])
                    bad.append((p, InvalidFreeError(
                        f"free({int(a[p]):#x}): not the start of the large object at {span.base:#x}")))
                    continue
                work.append((span, None))
                continue
            header = slot_header(span)
            off = va - header
            idx, rem = np.divmod(off, span.elemsize)
            wrong = np.flatnonzero((rem != 0) | (off < 0) | (idx >= span.nelems))
            if len(wrong):
                p = int(order[sel[wrong[0]]])
                bad.append((p, InvalidFreeError(f"free({int(a[p]):#x}): not the start of an object in {span!r}")))
                continue
            dead = np.flatnonzero(~span.alloc_bits[idx])
            if len(dead):
                p = int(order[sel[dead[0]]])
                bad.append((p, DoubleFreeError(f"free({int(a[p]):#x}): the object is already free (double free)")))
                continue
            work.append((span, idx))
        if bad:
            bad.sort(key=lambda t: t[0])
            raise bad[0][1]
        for span, idx in work:
            if idx is None:
                self._free_large(span)
            else:
                self._free_slots(span, idx, len(idx), int(idx.min()))

    # ======================================================================================
    # lookup and memory access
    # ======================================================================================
    def _object_at(self, addr) -> tuple | None:
        """(span, slot start, object start, object end) of the live object whose slot
        holds ``addr``, or None."""
        self._settle()
        try:
            a = operator.index(addr)
        except TypeError:
            return None
        if not 0 < a <= _MASK64:
            return None
        span = self.mheap.span_of(a)
        if span is None:
            return None
        if span.spanclass >> 1 == 0:
            if not span.alloc_count or a >= span.limit:
                return None
            return span, span.base, span.base, span.base + ((span.limit - span.base + 7) & -8)
        elemsize = span.elemsize
        i = (a - span.base) // elemsize
        if i >= span.nelems or not span.alloc_bits[i]:
            return None
        slot = span.base + i * elemsize
        return span, slot, slot + slot_header(span), slot + elemsize

    def lookup(self, addr: int) -> ObjectInfo | None:
        """The live object whose slot holds ``addr`` (interior addresses, and a malloc
        header, count as the object's), or None."""
        found = self._object_at(addr)
        if found is None:
            return None
        span, slot, start, end = found
        pm = span.ptr_mask
        if pm is None:
            pw: tuple[int, ...] = ()
        else:
            w0 = (start - span.base) >> 3
            pw = tuple(np.flatnonzero(pm[w0:(end - span.base) >> 3]).tolist())
        return ObjectInfo(start, end - start, span.spanclass, pm is not None, pw, start - slot)

    def object_size(self, addr: int) -> int:
        """Usable bytes of the live object holding ``addr``; ObjectBoundsError if none."""
        found = self._object_at(addr)
        if found is None:
            raise ObjectBoundsError(f"object_size({_hex(addr)}): no live object there")
        return found[3] - found[2]

    def _word(self, addr, what: str) -> tuple:
        found = self._object_at(addr)
        if found is None:
            raise ObjectBoundsError(f"{what}({_hex(addr)}): no live object there")
        span, slot, start, end = found
        a = operator.index(addr)
        if a & 7:
            raise ObjectBoundsError(f"{what}({a:#x}): not 8-byte aligned")
        if a < start:
            raise ObjectBoundsError(f"{what}({a:#x}): that is the malloc header of the object at {start:#x}")
        return span, (a - span.base) >> 3

    def read_word(self, addr: int) -> int:
        """The 8-byte word at ``addr`` (aligned, inside a live object)."""
        span, w = self._word(addr, "read_word")
        return int(span.words[w])

    def write_word(self, addr: int, value: int) -> None:
        """Store ``value`` (an int in [-2**63, 2**64)) in the word at ``addr``.

        Into a pointer word only a valid pointer may go (0 or an address inside a live
        object; else InvalidPointerError), so a collector can trust pointer words.
        """
        span, w = self._word(addr, "write_word")
        v = _as_word(value)
        pm = span.ptr_mask
        if pm is not None and pm[w]:
            self._check_target(v, "write_word")
        span.words[w] = v

    def write_pointer(self, obj: int, word_index: int, target: int) -> None:
        """Store the pointer ``target`` (0 = nil, or any address inside a live object)
        in word ``word_index`` of the live object holding ``obj``, counted from the
        object's start. The word must be a pointer word of the object's layout."""
        found = self._object_at(obj)
        if found is None:
            raise ObjectBoundsError(f"write_pointer({_hex(obj)}): no live object there")
        span, slot, start, end = found
        if isinstance(word_index, (bool, np.bool_)):
            raise TypeError("write_pointer: word_index must be an integer, not bool")
        i = operator.index(word_index)
        if not 0 <= i < (end - start) >> 3:
            raise ObjectBoundsError(
                f"write_pointer: word {i} is outside the object at {start:#x} ({(end - start) >> 3} words)")
        w = ((start - span.base) >> 3) + i
        pm = span.ptr_mask
        if pm is None or not pm[w]:
            raise PointerSlotError(
                f"write_pointer: word {i} of the object at {start:#x} is not a pointer word of its layout")
        v = _as_word(target)
        self._check_target(v, "write_pointer")
        span.words[w] = v

    def _check_target(self, v: int, what: str) -> None:
        if v and self._object_at(v) is None:
            raise InvalidPointerError(f"{what}: {v:#x} is neither nil nor inside a live object")

    def words(self, addr: int) -> np.ndarray:
        """A uint64 view of the whole live object holding ``addr`` (from its start, header
        excluded). Writes go straight to memory, unchecked: keep pointer words valid.

        Drop the view before the object is freed: like a dangling pointer, a view kept
        past that writes into whatever lives there next, or into released pages (which
        :meth:`check` then reports as resident). It can never crash the interpreter:
        while it lives, sysmem refuses to make its pages inaccessible, so where released
        memory is inaccessible (the simulated Windows) scavenging those pages raises
        :class:`~sysmem.errors.LiveViewError` instead."""
        found = self._object_at(addr)
        if found is None:
            raise ObjectBoundsError(f"words({_hex(addr)}): no live object there")
        span, slot, start, end = found
        return span.words[(start - span.base) >> 3:(end - span.base) >> 3]

    def _byte_range(self, addr, n: int, what: str) -> tuple:
        found = self._object_at(addr)
        if found is None:
            raise ObjectBoundsError(f"{what}({_hex(addr)}): no live object there")
        span, slot, start, end = found
        a = operator.index(addr)
        if a < start or a + n > end:
            raise ObjectBoundsError(
                f"{what}: [{a:#x}, {a + n:#x}) is not inside the object [{start:#x}, {end:#x})")
        return span, a - span.base

    def read(self, addr: int, n: int) -> bytes:
        """``n`` bytes from ``addr``, all inside one live object."""
        n = operator.index(n)
        if n < 0:
            raise ValueError(f"read: n must be >= 0, got {n}")
        span, off = self._byte_range(addr, n, "read")
        return span.words.view(np.uint8)[off:off + n].tobytes()

    def write(self, addr: int, data) -> None:
        """Copy ``data`` (any bytes-like object) to ``addr``; the range must lie in one
        live object and must not overlap its pointer words (use write_pointer)."""
        mv = memoryview(data).cast("B")
        n = len(mv)
        span, off = self._byte_range(addr, n, "write")
        if n == 0:
            return
        pm = span.ptr_mask
        if pm is not None and pm[off >> 3:(off + n + 7) >> 3].any():
            raise PointerSlotError(
                f"write: [{operator.index(addr):#x}, +{n}) overlaps pointer words; use write_pointer")
        span.words.view(np.uint8)[off:off + n] = np.frombuffer(mv, dtype=np.uint8)

    # ======================================================================================
    # heap-level operations
    # ======================================================================================
    def release_mcache(self) -> None:
        """Hand every cached span back to its mcentral (Go's ``mcache.releaseAll``);
        spans emptied by frees go back to the mheap."""
        self._settle()
        self.mcache.release_all()

    def scavenge(self, nbytes: int | None = None) -> int:
        """Release up to ``nbytes`` of free heap pages to the OS now; return the bytes
        released. By default everything (``debug.FreeOSMemory``'s scavenging,
        :meth:`MHeap.scavenge_all`), including the pages the page cache holds."""
        if self._closed:
            raise _closed_error()
        if nbytes is None:
            return self.mheap.scavenge_all()
        return self.mheap.scavenge(_as_count(nbytes, "scavenge", "nbytes"))

    def grow(self, npages: int) -> int | None:
        """Add at least ``npages`` pages of address space to the heap (Go's
        ``mheap.grow``); returns the bytes added or None when none could be had."""
        if self._closed:
            raise _closed_error()
        return self.mheap.grow(_as_count(npages, "grow", "npages"))

    # ======================================================================================
    # garbage collection (heap.gc does the work; this is the Heap's face of it)
    # ======================================================================================
    def _init_gc(self, env_gogc: int, limit: int, gctrace) -> None:
        # The pacer reads Go's three memory-limit inputs straight from the accounting.
        mc = self.mcache
        self.pacer = GCController(
            env_gogc, limit,
            mapped_ready=lambda: self.sm.mapped_ready,
            heap_free=self.mheap.heap_free,
            heap_alloc=lambda: mc.alloc_bytes - self._free_bytes,
        )
        #: mcache.alloc_bytes when the last mark ended: heap_live = heap_marked + since
        self._alloc_at_mark = 0
        self._roots: dict[int, int] = {}  # address -> how many times added
        self._root_arrays: dict[int, np.ndarray] = {}  # id -> root slot array
        self._in_gc = False
        self._gc_armed = True
        self._rearm()
        self.gctrace = gctrace
        self._t_init = time.perf_counter_ns()
        #: CycleStats of every cycle so far (the newest last), and totals
        self.gc_cycles: list = []
        #: callables run with the cycle's CycleStats at the end of every collection
        #: (where Go's gcMarkTermination hands over to the scavenger's pacing)
        self.on_gc_end: list = []
        self.num_gc = 0
        self.num_forced_gc = 0
        self.gc_pause_total_ns = 0

    def _rearm(self) -> None:
        # With GOGC=off and no memory limit the goal is "never": skip the trigger test.
        p = self.pacer
        self._gc_armed = not self._in_gc and not (p.gc_percent < 0 and p.memory_limit == MAX_INT64)

    def _heap_live(self) -> int:
        # Go's heapLive: the marked heap plus what was allocated since the mark. Go
        # counts a whole span when an mcache takes it (an overestimate fixed up later);
        # heaplab can count exactly, because it settles allocations per span anyway.
        self._flush()
        return self.pacer.heap_marked + self.mcache.alloc_bytes - self._alloc_at_mark

    def _maybe_gc(self) -> None:
        """The allocation slow path's trigger test (Go's mallocgc → gcTrigger.test):
        run a cycle when heap_live has reached the pacer's trigger."""
        if self._in_gc or self._closed:
            return
        p = self.pacer
        p.heap_live = self._heap_live()
        if p.should_start_gc():
            self._run_gc(forced=False)

    def _run_gc(self, forced: bool):
        from .gc import collect
        from .metrics import gctrace_line

        self._settle()
        self._in_gc = True
        self._gc_armed = False
        try:
            st = collect(self, forced)
        finally:
            self._in_gc = False
            self._rearm()
        self.num_gc += 1
        st.number = self.num_gc
        if forced:
            self.num_forced_gc += 1
        self.gc_pause_total_ns += st.total_ns
        self.gc_cycles.append(st)
        if len(self.gc_cycles) > 1024:
            del self.gc_cycles[:512]
        for hook in self.on_gc_end:
            hook(st)
        if self.gctrace:
            line = gctrace_line(self, st)
            if callable(self.gctrace):
                self.gctrace(line)
            else:
                sys.stderr.write(line + "\n")
        return st

    def gc(self):
        """Run a full, blocking collection (Go's ``runtime.GC``): every object not
        reachable from the roots is freed. Returns the cycle's :class:`~heap.gc.CycleStats`.

        The world is stopped only for this heap's own code: no other thread may write
        root slot arrays meanwhile (the collector reads them while the GIL is released),
        and a :meth:`words` view of an object the cycle frees must be dropped (it would
        alias whatever is allocated there next)."""
        if self._closed:
            raise _closed_error()
        return self._run_gc(forced=True)

    def free_os_memory(self) -> int:
        """Go's ``debug.FreeOSMemory``: a collection, then every free page released to the
        OS (``mheap.scavenge_all``). Returns the bytes released."""
        self.gc()
        return self.mheap.scavenge_all()

    def set_gc_percent(self, percent: int | str) -> int:
        """``debug.SetGCPercent``: set GOGC (negative or "off" = off); returns the old value."""
        if self._closed:
            raise _closed_error()
        old = self.pacer.set_gc_percent(gogc_value(percent))
        self._rearm()
        return old

    def set_memory_limit(self, limit: int | str) -> int:
        """``debug.SetMemoryLimit``: set the soft memory limit in bytes (a negative value
        only reads it; "off" = no limit); returns the old one."""
        if self._closed:
            raise _closed_error()
        old = self.pacer.set_memory_limit(memory_limit_value(limit))
        self._rearm()
        return old

    @property
    def gc_percent(self) -> int:
        return self.pacer.gc_percent

    @property
    def memory_limit(self) -> int:
        return self.pacer.memory_limit

    # -- roots -----------------------------------------------------------------------------
    def add_root(self, addr: int) -> None:
        """Make ``addr`` a root (like a global variable holding it): the object whose
        slot holds it stays alive. Any 64-bit value is accepted; one that is not inside
        a live object is ignored by the collector. Added twice, removed twice."""
        if self._closed:
            raise _closed_error()
        a = _as_word(addr)
        self._roots[a] = self._roots.get(a, 0) + 1

    def remove_root(self, addr: int) -> None:
        """Undo one :meth:`add_root`; RootNotFoundError if ``addr`` is not a root."""
        if self._closed:
            raise _closed_error()
        a = _as_word(addr)
        n = self._roots.get(a)
        if n is None:
            raise RootNotFoundError(f"remove_root({a:#x}): not a root")
        if n == 1:
            del self._roots[a]
        else:
            self._roots[a] = n - 1

    @property
    def roots(self) -> tuple[int, ...]:
        """The addresses added with :meth:`add_root` (each once), lowest first. Root
        slot arrays are in :attr:`root_arrays`."""
        return tuple(sorted(self._roots))

    def root_slots(self, n: int) -> np.ndarray:
        """A new array of ``n`` root pointer slots (uint64, all nil): the collector reads
        every slot, so writing an address into one keeps that object alive, overwriting
        or zeroing it lets the object go. Millions of roots cost 8 bytes each. Keep it
        registered until :meth:`release_root_slots`. Do not write it from another
        thread while a collection runs: the collector reads it without the GIL, so an
        object moved between slots meanwhile can be missed."""
        if self._closed:
            raise _closed_error()
        arr = np.zeros(_as_count(n, "root_slots"), dtype=_U64)
        self._root_arrays[id(arr)] = arr
        return arr

    def release_root_slots(self, slots: np.ndarray) -> None:
        """Stop treating ``slots`` (an array from :meth:`root_slots`) as roots."""
        if self._closed:
            raise _closed_error()
        if self._root_arrays.pop(id(slots), None) is None:
            raise RootNotFoundError("release_root_slots: not a root slot array of this heap")

    @property
    def root_arrays(self) -> tuple[np.ndarray, ...]:
        return tuple(self._root_arrays.values())

    def _root_values(self) -> np.ndarray:
        parts = [a.ravel() for a in self._root_arrays.values()]
        if self._roots:
            parts.append(np.fromiter(self._roots, dtype=_U64, count=len(self._roots)))
        if not parts:
            return np.zeros(0, dtype=_U64)
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    # -- metrics ---------------------------------------------------------------------------
    def metrics(self) -> dict:
        """A runtime/metrics-style snapshot keyed by Go's metric names, plus
        ``mapped_ready`` (see :mod:`heap.metrics`). Cheap: counters only."""
        from .metrics import snapshot

        self._settle()
        return snapshot(self)

    # -- statistics ---------------------------------------------------------------------------
    def stats(self) -> dict:
        """Go's ``runtime.MemStats`` heap fields (bytes or counts), plus ``by_size``: per
        size class (0 = large objects) its ``Size`` and ``Mallocs``, ``Frees``, live
        ``Objects`` and in-use ``Spans``."""
        self._settle()
        mc = self.mcache
        mh = self.mheap
        in_use, free, released = mh.heap_in_use.load(), mh.heap_free.load(), mh.heap_released.load()
        mallocs = sum(mc.nmalloc)
        frees = sum(self._nfree)
        spans = [0] * NUM_SIZE_CLASSES
        for spc, central in enumerate(self.centrals):
            spans[spc >> 1] += len(central) + (mc.spans[spc] is not None)
        by_size = [
            {"Size": CLASS_TO_SIZE[c], "Mallocs": mc.nmalloc[c], "Frees": self._nfree[c],
             "Objects": mc.nmalloc[c] - self._nfree[c], "Spans": spans[c]}
            for c in range(NUM_SIZE_CLASSES)
        ]
        return {
            "HeapAlloc": mc.alloc_bytes - self._free_bytes,
            "HeapInuse": in_use,
            "HeapIdle": free + released,
            "HeapReleased": released,
            "HeapSys": in_use + free + released,
            "HeapObjects": mallocs - frees,
            "Mallocs": mallocs,
            "Frees": frees,
            "TotalAlloc": mc.alloc_bytes,
            "by_size": by_size,
        }

    # -- checks ----------------------------------------------------------------------------------
    def problems(self, os: bool = True) -> list[str]:
        """Every inconsistency between the heap's spans, sets, counters, the mheap and
        sysmem (``os``: also sysmem's states against what the OS reports)."""
        self._settle()
        out: list[str] = []
        mc = self.mcache
        seen: dict[int, str] = {}
        live = 0
        live_bytes = 0

        def visit(span, where: str, spc: int) -> None:
            nonlocal live, live_bytes
            if id(span) in seen:
                out.append(f"{span!r} is both in {seen[id(span)]} and in {where}")
                return
            seen[id(span)] = where
            if span.state != "in_use":
                out.append(f"{span!r} in {where} is not in use")
            if span.spanclass != spc:
                out.append(f"{span!r} in {where} has span class {span.spanclass}, expected {spc}")
            n = int(np.count_nonzero(span.alloc_bits))
            if n != span.alloc_count:
                out.append(f"{span!r} in {where}: alloc_count {span.alloc_count}, alloc bits {n}")
            if not span.alloc_bits[:span.freeindex].all():
                out.append(f"{span!r} in {where}: a slot below freeindex {span.freeindex} is free")
            if (span.ptr_mask is None) != bool(span.spanclass & 1):
                out.append(f"{span!r} in {where}: pointer mask present for noscan or missing for scan")
            live += n
            live_bytes += n * (span.npages << PAGE_SHIFT if span.spanclass >> 1 == 0 else span.elemsize)
            header = slot_header(span)
            if header and n:
                wpe = span.elemsize >> 3
                ids = span.words[:span.nelems * wpe].reshape(span.nelems, wpe)[span.alloc_bits, 0]
                badid = (ids == 0) | (ids >= len(self.types))
                if badid.any():
                    out.append(f"{span!r}: {int(badid.sum())} malloc header(s) hold no valid layout id")

        for spc, central in enumerate(self.centrals):
            for base, span in central.partial.items():
                visit(span, f"mcentral[{spc}].partial", spc)
                if base != span.base or not 0 < span.alloc_count < span.nelems:
                    out.append(f"{span!r} in mcentral[{spc}].partial is empty, full or misfiled")
            for base, span in central.full.items():
                visit(span, f"mcentral[{spc}].full", spc)
                if base != span.base or span.alloc_count != span.nelems:
                    out.append(f"{span!r} in mcentral[{spc}].full is not full or misfiled")
            span = mc.spans[spc]
            if span is not None:
                visit(span, f"mcache[{spc}]", spc)
                if spc not in mc.active:
                    out.append(f"mcache span class {spc} has a span but is not active")
        for span in self.mheap.in_use_spans():
            if id(span) not in seen:
                out.append(f"{span!r} is in use in the mheap but no mcentral or mcache has it")
        st = self.stats()
        if st["HeapObjects"] != live:
            out.append(f"HeapObjects is {st['HeapObjects']}, the alloc bits show {live} live objects")
        if st["HeapAlloc"] != live_bytes:
            out.append(f"HeapAlloc is {st['HeapAlloc']}, live objects fill {live_bytes} bytes")
        out += self.mheap.problems()
        if self.sm.ledger is not None:
            out += self.sm.accounting_problems()
            if os:
                out += self.sm.os_problems()
        return out

    def check(self, os: bool = True) -> None:
        """Raise :class:`~sysmem.errors.HeapInvariantError` listing the heap's problems
        (see :meth:`problems`); includes ``mheap.check()`` and ``sm.check(os=os)``."""
        problems = self.problems(os=os)
        if problems:
            raise HeapInvariantError("; ".join(problems[:20]))

    # -- life cycle -----------------------------------------------------------------------------
    def close(self) -> None:
        """Stop using the heap. If it made its own SysMem, give all of that memory back
        to the OS (regions a live view still exposes stay mapped, never unmapped under
        the view). The heap must not be used afterwards."""
        if self._closed:
            return
        self._flush()
        self._closed = True
        mc = self.mcache
        for spc in list(mc.active):
            mc._forget(spc)
        for span in list(self.mheap.in_use_spans()):
            span.drop_words()  # never make a view of this memory again
        if self.owns_sysmem:
            release_sysmem(self.sm)

    def __enter__(self) -> Heap:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        if self._closed:
            return f"Heap({self.sm.backend.name}, closed)"
        st = self.stats()
        return (f"Heap({self.sm.backend.name}, objects={st['HeapObjects']}, "
                f"alloc={st['HeapAlloc']:#x}, inuse={st['HeapInuse']:#x}, sys={st['HeapSys']:#x})")


def release_sysmem(sm: SysMem) -> None:
    """Give every region ``sm`` holds back to the OS and close it: through sysmem's API
    where the states allow, else straight to the backend. A region that a live view
    still exposes is left mapped (unmapping it could crash the interpreter later)."""
    from sysmem import State

    if sm.ledger is not None:
        regions = [(r.base, r.size, sm.ledger.runs(r)) for r in sm.ledger.regions()]
    else:
        regions = [(base, size, None) for base, size in sm.root_regions.regions()]
    if any(sm.live_views(base, size) for base, size, _ in regions):
        _gc.collect()  # views only a cycle still holds
    for base, size, runs in regions:
        if sm.live_views(base, size):
            continue
        try:
            if runs and all(r.state is State.RESERVED for r in runs):
                sm.sys_unreserve(base, size)
                continue
            if runs and all(r.state is State.READY for r in runs) and len({id(r.stat) for r in runs}) == 1:
                stat = runs[0].stat
                if stat.load() >= size:
                    sm.sys_free(base, size, stat)
                    continue
        except Exception:  # noqa: BLE001 - fall back to the raw release below
            pass
        sm.backend.free(base, size)
    sm.close()


def _closed_error() -> HeapError:
    return HeapError("the heap is closed")


def _as_word(value) -> int:
    try:
        v = operator.index(value)
    except TypeError:
        raise TypeError(f"a word must be an integer, not {type(value).__name__}") from None
    if not -(1 << 63) <= v <= _MASK64:
        raise ValueError(f"{v} does not fit in a 64-bit word")
    return v & _MASK64


def _hex(addr) -> str:
    try:
        return f"{operator.index(addr):#x}"
    except TypeError:
        return repr(addr)
