"""Which memory Python may touch, and the views that touch it.

Independent of the ledger (which can be turned off), SysMem always knows which ranges
are accessible — mapped readable and writable — because handing out a view of anything
else could crash the interpreter. Every numpy view is *pinned* here until it is garbage;
a transition that would unmap or protect pinned memory is refused with
:class:`~sysmem.errors.LiveViewError`, as ``mmap.close()`` refuses while buffers are
exported.
"""

from __future__ import annotations

import gc
import weakref
from bisect import bisect_left, bisect_right

from .errors import InaccessibleMemoryError, LiveViewError

__all__ = ["AccessMap"]


class AccessMap:
    """Disjoint accessible intervals plus the live views pinned inside them."""

    def __init__(self) -> None:
        self._starts: list[int] = []
        self._ends: list[int] = []
        # (start, end, weak reference to the base array) of every view handed out
        self._pins: list[tuple[int, int, weakref.ref]] = []

    # -- intervals ------------------------------------------------------------------------
    def covers(self, a: int, b: int) -> bool:
        """Whether all of [a, b) is accessible."""
        i = bisect_right(self._starts, a) - 1
        return i >= 0 and self._ends[i] >= b

    def add(self, a: int, b: int) -> None:
        """Mark [a, b) accessible (merging with touching intervals)."""
        starts, ends = self._starts, self._ends
        i = bisect_left(ends, a)  # first interval that ends at or after a
        j = bisect_right(starts, b)  # intervals before j start at or before b
        if i < j:
            a = min(a, starts[i])
            b = max(b, ends[j - 1])
        starts[i:j] = [a]
        ends[i:j] = [b]

    def remove(self, a: int, b: int) -> None:
        """Mark [a, b) inaccessible. Call :meth:`check_unpinned` first."""
        starts, ends = self._starts, self._ends
        i = bisect_right(ends, a)  # first interval ending after a
        j = bisect_left(starts, b)  # intervals before j start before b
        if i >= j:
            return
        keep_s, keep_e = [], []
        if starts[i] < a:
            keep_s.append(starts[i])
            keep_e.append(a)
        if ends[j - 1] > b:
            keep_s.append(b)
            keep_e.append(ends[j - 1])
        starts[i:j] = keep_s
        ends[i:j] = keep_e

    def intervals(self) -> list[tuple[int, int]]:
        """The accessible intervals, in address order."""
        return list(zip(self._starts, self._ends))

    # -- views ------------------------------------------------------------------------------
    def pin(self, a: int, b: int, base) -> None:
        """Record that ``base`` (a numpy array) exposes [a, b)."""
        if not self.covers(a, b):
            raise InaccessibleMemoryError(f"[{a:#x}, {b:#x}) is not accessible memory")
        if len(self._pins) > 64 and len(self._pins) & (len(self._pins) - 1) == 0:
            self._prune()  # at powers of two, so pruning stays amortised O(1) per view
        self._pins.append((a, b, weakref.ref(base)))

    def _prune(self) -> None:
        self._pins = [p for p in self._pins if p[2]() is not None]

    def live_views(self, a: int, b: int) -> list[tuple[int, int]]:
        """Ranges of live views that overlap [a, b)."""
        return [(s, e) for s, e, ref in self._pins if s < b and a < e and ref() is not None]

    def check_unpinned(self, a: int, b: int, op: str) -> None:
        """Raise LiveViewError if a live view overlaps [a, b)."""
        if not self._pins:
            return
        live = self.live_views(a, b)
        if live:
            gc.collect()  # a view kept only by a reference cycle is garbage, not live
            live = self.live_views(a, b)
        if live:
            s, e = live[0]
            raise LiveViewError(
                f"{op} on [{a:#x}, {b:#x}) would unmap or protect memory that a live view "
                f"[{s:#x}, {e:#x}) still exposes ({len(live)} view(s)); drop the views first"
            )
