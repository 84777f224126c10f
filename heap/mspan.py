"""``MSpan``: a run of heap pages holding objects of one span class (Go's ``mspan``).

The heap (:class:`heap.mheap.MHeap`) creates a span in ``alloc_span`` and retires it in
``free_span``; the layers above fill in and read the allocation state. A span is a
plain record (``__slots__``, no behaviour beyond address arithmetic), so those layers
can work on its fields directly, as Go's mcache and mcentral do.

States, as Go's ``mSpanState``: ``"in_use"`` (mSpanInUse: handed out by the heap),
``"dead"`` (mSpanDead: returned to the page allocator; the object must not be used
again). ``"free"`` exists in the contract for symmetry with Go's free page ranges, but
free pages have no span object here (the page allocator's bitmaps describe them).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from sysmem.errors import HeapOutOfMemoryError

from .constants import PAGE_SHIFT

if TYPE_CHECKING:  # pragma: no cover
    from sysmem import SysMem

__all__ = ["MSpan", "SPAN_IN_USE", "SPAN_FREE", "SPAN_DEAD"]

SPAN_IN_USE = "in_use"  # mSpanInUse
SPAN_FREE = "free"  # free pages (no span object holds this state in heaplab)
SPAN_DEAD = "dead"  # mSpanDead


class MSpan:
    """One span. Fields (set by the heap unless noted):

    ``base``, ``npages``: the pages [base, base + npages*8192).
    ``spanclass``: ``sizeclass << 1 | noscan``. ``elemsize``: object size (whole span
    for a large object). ``nelems``: objects that fit (``span_nelems``).
    ``limit``: the end of the object area: ``base + nelems*elemsize``, or for a large
    object ``base + `` the size asked for (Go's ``s.limit``), set by the allocator.
    ``state``: ``"in_use"`` or ``"dead"``.
    ``alloc_bits``: bool[nelems], True = slot holds an allocated object;
    ``alloc_count``, ``freeindex``: allocation state kept by the layers above.
    ``needzero``: the memory may hold old data, so objects must be zeroed before
    they are handed out (Go's ``span.needzero``).
    ``ptr_mask``: bool per 8-byte word of the span, True where a pointer lives (scan
    spans; None for noscan spans).
    ``words``: uint64 view of the span's memory while the span is in use; None once
    freed, so sysmem may release or decommit the pages. Made on first use from the
    span's SysMem (``sm``): a view costs about as much as the rest of a span's set-up,
    and a span nobody reads, writes or zeroes (fresh pointer-free objects) never needs
    one; nor are its pages touched by making one (a simulated machine counts a view's
    pages as resident, as a real one would count touched pages).
    ``mark_bits``: bool[nelems] for the collector, created by :meth:`ensure_mark_bits`.
    ``sweepgen``: the heap's sweep generation when the span was handed out (for the
    collector). ``id``: the span's number in the heap's span maps (0 = none).
    ``aux``: free for the layers above (e.g. an mcentral's bookkeeping).
    """

    __slots__ = (
        "base",
        "npages",
        "spanclass",
        "elemsize",
        "nelems",
        "limit",
        "state",
        "alloc_bits",
        "alloc_count",
        "freeindex",
        "needzero",
        "ptr_mask",
        "_words",
        "_sm",
        "mark_bits",
        "sweepgen",
        "id",
        "aux",
    )

    def __init__(
        self,
        base: int,
        npages: int,
        spanclass: int,
        elemsize: int,
        nelems: int,
        *,
        needzero: bool = False,
        words: np.ndarray | None = None,
        sm: SysMem | None = None,
        span_id: int = 0,
        sweepgen: int = 0,
    ) -> None:
        self.base = base
        self.npages = npages
        self.spanclass = spanclass
        self.elemsize = elemsize
        self.nelems = nelems
        self.limit = base + nelems * elemsize
        self.state = SPAN_IN_USE
        self.alloc_bits = np.zeros(nelems, dtype=bool)
        self.alloc_count = 0
        self.freeindex = 0
        self.needzero = needzero
        # One flag per 8-byte word of the whole span (pages * 8192 / 8), scan spans only.
        self.ptr_mask = None if spanclass & 1 else np.zeros(npages << (PAGE_SHIFT - 3), dtype=bool)
        self._words = words
        self._sm = sm  # where the view comes from when first asked for (None: no view)
        self.mark_bits = None
        self.sweepgen = sweepgen
        self.id = span_id
        self.aux = None

    # --- memory -------------------------------------------------------------------------
    @property
    def words(self) -> np.ndarray | None:
        """The uint64 view of the span's pages (made now if this is the first use);
        None for a span that is not in use or has no SysMem.

        The heap keeps an in-use span's pages Ready, so the view can always be made,
        unless touching the pages exceeds the (simulated) machine's physical memory:
        then :class:`~sysmem.errors.HeapOutOfMemoryError`, as a Linux process only
        runs out of memory when it touches pages, not when it allocates them.
        """
        w = self._words
        if w is None and self._sm is not None and self.state == SPAN_IN_USE:
            nbytes = self.npages << PAGE_SHIFT
            try:
                w = self._sm.view(self.base, nbytes, np.uint64)
            except MemoryError as e:
                if isinstance(e, HeapOutOfMemoryError):
                    raise
                raise HeapOutOfMemoryError(f"cannot touch the {nbytes}-byte span at {self.base:#x}: {e}") from e
            self._words = w
        return w

    def touch_for_alloc(self) -> None:
        """Make the memory view that allocating from this span writes through, before
        any slot is handed out: zeroing (``needzero``), malloc headers and the
        collector's scans of pointerful spans all go through it. Touching pages is
        where a (simulated) machine runs out of physical memory
        (:class:`~sysmem.errors.HeapOutOfMemoryError`), so the caller can still undo
        the allocation. A fresh pointer-free span stays untouched until its objects
        are used, as fresh memory does on Linux."""
        if self.needzero or not self.spanclass & 1:
            self.words  # noqa: B018 - made on first access

    @words.setter
    def words(self, value: np.ndarray | None) -> None:
        self._words = value

    @property
    def sm(self) -> SysMem | None:
        """The SysMem the view comes from (None once the span is freed)."""
        return self._sm

    @property
    def has_view(self) -> bool:
        """Whether a view of the span's memory exists now (without making one)."""
        return self._words is not None

    def drop_words(self) -> None:
        """Drop the view and never make one again (the span is freed, or its heap
        closed), so the pages can be released or unmapped."""
        self._words = None
        self._sm = None

    # --- derived properties -------------------------------------------------------------
    @property
    def sizeclass(self) -> int:
        return self.spanclass >> 1

    @property
    def noscan(self) -> bool:
        return bool(self.spanclass & 1)

    @property
    def is_large(self) -> bool:
        """A span of one large object (size class 0)."""
        return self.spanclass >> 1 == 0

    @property
    def nbytes(self) -> int:
        return self.npages << PAGE_SHIFT

    @property
    def end(self) -> int:
        """First address after the span's pages."""
        return self.base + (self.npages << PAGE_SHIFT)

    # --- objects ------------------------------------------------------------------------
    def contains(self, addr: int) -> bool:
        """Whether ``addr`` lies in the span's pages."""
        return self.base <= addr < self.base + (self.npages << PAGE_SHIFT)

    def object_index(self, addr: int) -> int:
        """Index of the object containing ``addr`` (interior pointers included); the
        address must be in the object area [base, limit)."""
        if not self.base <= addr < self.limit:
            raise ValueError(
                f"object_index: {addr:#x} is outside the objects [{self.base:#x}, {self.limit:#x}) of {self!r}"
            )
        return (addr - self.base) // self.elemsize

    def object_base(self, index: int) -> int:
        """Address of object ``index`` (0 <= index < nelems)."""
        if not 0 <= index < self.nelems:
            raise IndexError(f"object_base: index {index} outside 0..{self.nelems - 1} of {self!r}")
        return self.base + index * self.elemsize

    def ensure_mark_bits(self) -> np.ndarray:
        """The mark bits, created (all clear) on first use."""
        mb = self.mark_bits
        if mb is None:
            mb = self.mark_bits = np.zeros(self.nelems, dtype=bool)
        return mb

    def __repr__(self) -> str:
        kind = "large" if self.is_large else f"class {self.spanclass >> 1}"
        scan = "noscan" if self.spanclass & 1 else "scan"
        return (
            f"MSpan({self.base:#x}+{self.npages}p {kind} {scan} elemsize={self.elemsize} "
            f"nelems={self.nelems} alloc={self.alloc_count} {self.state})"
        )
