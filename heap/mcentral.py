"""Go's ``mcentral``: the spans of one span class that no mcache holds.

Each span class (size class × scan/noscan) has one :class:`MCentral`. It keeps the spans
of its class that are not currently cached by the mcache in two sets, as Go does:

* ``partial`` — spans with at least one free slot, handed to the mcache first (oldest
  first, as Go's span sets are queues);
* ``full`` — spans without a free slot, kept so that a free (today explicit, later the
  sweeper's) can move them back to ``partial``.

When ``partial`` is empty, :meth:`MCentral.grow` asks the mheap for a fresh span of
``CLASS_TO_NPAGES[sizeclass]`` pages (:meth:`~heap.mheap.MHeap.alloc_spans`, which
turns "no memory" into :class:`~sysmem.errors.HeapOutOfMemoryError`). Go's two halves
of each set (swept / unswept) collapse to one because heaplab has no sweeper yet: every
span is always "swept".
Class 0 (large objects) has an MCentral too; its spans are only ever ``full`` (one
object per span), as Go puts large spans on the full swept list for the sweeper.

A span whose last object is freed while no mcache holds it goes straight back to the
mheap (:meth:`MCentral.object_freed`), which is what Go's sweeper does with a span it
finds empty.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .mspan import MSpan
from .sizeclasses import CLASS_TO_NPAGES, spanclass_noscan, spanclass_sizeclass

if TYPE_CHECKING:  # pragma: no cover
    from .mheap import MHeap

__all__ = ["MCentral"]


class MCentral:
    """The partial and full span sets of one span class (Go's ``mcentral``).

    Spans are keyed by base address: dicts keep insertion order (FIFO hand-out, like
    Go's span queues) and remove in O(1) when a free moves a span between sets.
    """

    __slots__ = ("spanclass", "sizeclass", "noscan", "npages", "partial", "full", "mheap",
                 "spans_grown", "spans_released")

    def __init__(self, mheap: MHeap, spanclass: int) -> None:
        self.mheap = mheap
        self.spanclass = spanclass
        self.sizeclass = spanclass_sizeclass(spanclass)
        self.noscan = spanclass_noscan(spanclass)
        #: pages of one span of this class (0 for class 0: large spans vary)
        self.npages = CLASS_TO_NPAGES[self.sizeclass] if self.sizeclass else 0
        self.partial: dict[int, MSpan] = {}
        self.full: dict[int, MSpan] = {}
        #: spans this class took from the mheap / gave back, for experiments
        self.spans_grown = 0
        self.spans_released = 0

    # -- the mcache's side (Go's cacheSpan / uncacheSpan) --------------------------------
    def cache_span(self) -> MSpan:
        """A span with free slots for the mcache: the oldest partial one, else a new one.

        Raises :class:`HeapOutOfMemoryError` when the mheap has no memory for a new span.
        """
        partial = self.partial
        if partial:
            base = next(iter(partial))
            return partial.pop(base)
        return self.grow()

    def uncache_span(self, span: MSpan) -> None:
        """Take back a span the mcache is done with: to ``full`` or ``partial``, or to the
        mheap if explicit frees emptied it while it was cached (no sweeper would)."""
        n = span.alloc_count
        if n == 0:
            self.release(span)
        elif n == span.nelems:
            self.full[span.base] = span
        else:
            self.partial[span.base] = span

    # -- growth --------------------------------------------------------------------------
    def grow(self, npages: int | None = None) -> MSpan:
        """A fresh span of this class from the mheap (Go's ``mcentral.grow``; for class
        0, Go's ``allocLarge``, ``npages`` is required).

        Raises :class:`HeapOutOfMemoryError` when the mheap has no memory for it.
        """
        return self.grow_many(1, npages)[0]

    def grow_many(self, count: int, npages: int | None = None) -> list[MSpan]:
        """``count`` fresh spans (of ``npages`` pages each: required for class 0), the
        ones ``count`` calls of :meth:`grow` would get (:meth:`MHeap.alloc_spans`).

        All or nothing: raises :class:`HeapOutOfMemoryError`, with nothing taken, when
        the mheap cannot supply them all.
        """
        npages = npages or self.npages
        if npages < 1:
            raise ValueError(f"span class {self.spanclass} needs npages (large spans vary)")
        spans = self.mheap.alloc_spans(npages, self.spanclass, count)
        self.spans_grown += count
        return spans

    # -- frees -----------------------------------------------------------------------------
    def object_freed(self, span: MSpan, cached: bool) -> None:
        """Keep the sets right after an object of ``span`` was freed.

        ``cached``: the mcache holds the span (then it stays there, even if empty, until
        the mcache lets it go — Go never sweeps a cached span either).
        """
        if cached:
            return
        base = span.base
        if span.alloc_count == 0:
            self.release(span)
        elif base in self.full:
            del self.full[base]
            self.partial[base] = span

    def release(self, span: MSpan) -> None:
        """Give an empty span back to the mheap (what Go's sweeper does on finding one).
        If the mheap refuses (its clock gave a bad reading), the span stays listed here,
        empty, to be given back later."""
        self.mheap.free_span(span)
        self.partial.pop(span.base, None)
        self.full.pop(span.base, None)
        self.spans_released += 1

    # -- inspection ---------------------------------------------------------------------------
    def spans(self):
        """Every span in either set (partial first)."""
        yield from self.partial.values()
        yield from self.full.values()

    def __len__(self) -> int:
        return len(self.partial) + len(self.full)

    def __repr__(self) -> str:
        return (f"MCentral(spanclass={self.spanclass}, partial={len(self.partial)}, "
                f"full={len(self.full)})")
