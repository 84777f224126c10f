"""Which memory Python may touch, and the views that touch it.

Independent of the ledger (which can be turned off), SysMem always knows which ranges
are accessible — mapped readable and writable — because handing out a view of anything
else could crash the interpreter. Every numpy view is *pinned* here until it is garbage;
a transition that would unmap, protect or replace pinned memory is refused with
:class:`~sysmem.errors.LiveViewError`, as ``mmap.close()`` refuses while buffers are
exported.
"""

from __future__ import annotations

import gc
import threading
import weakref
from collections import deque

import numpy as np

from .errors import InaccessibleMemoryError, LiveViewError
from .intervals import IntervalMap

__all__ = ["AccessMap"]


class AccessMap:
    """Accessible address ranges plus the live views pinned inside them."""

    def __init__(self) -> None:
        self._accessible = IntervalMap(False)
        # weak reference to each view's owner → the range it exposes. A reference's
        # callback drops its entry when the owner dies, so only live views are kept.
        self._pins: dict[weakref.ref, tuple[int, int]] = {}
        # How many pins cover each address, so "is anything in [a, b) pinned?" costs a
        # bisection, not a walk over every view (the heap keeps one per span). A dying
        # view's callback may run anywhere (in the collector, mid-update, on any
        # thread), so it only queues its range; the queue is applied under _count_lock
        # before the counts are read or changed.
        self._counts = IntervalMap(0)
        self._unpinned: deque[tuple[int, int]] = deque()
        self._count_lock = threading.Lock()
        # Views pinned so far: a range found free of views stays free until this grows.
        self._pins_made = 0

    # -- intervals ------------------------------------------------------------------------
    def covers(self, a: int, b: int) -> bool:
        """Whether all of [a, b) is accessible."""
        _s, e, ok = self._accessible.run_at(a)
        return ok and e >= b

    def add(self, a: int, b: int) -> None:
        """Mark [a, b) accessible."""
        self._accessible.assign(a, b, True)

    def remove(self, a: int, b: int) -> None:
        """Mark [a, b) inaccessible. Call :meth:`check_unpinned` first."""
        self._accessible.assign(a, b, False)

    def accessible_pages(self, a: int, b: int, page_size: int) -> np.ndarray:
        """Per page of [a, b): is it accessible?"""
        out = np.zeros((b - a) // page_size, dtype=bool)
        for s, e, ok in self._accessible.runs(a, b):
            if ok:
                out[(s - a) // page_size : (e - a) // page_size] = True
        return out

    def intervals(self) -> list[tuple[int, int]]:
        """The accessible intervals, in address order."""
        m = self._accessible
        return [
            (s, m.starts[i + 1]) for i, (s, ok) in enumerate(zip(m.starts, m.vals)) if ok
        ]

    # -- views ------------------------------------------------------------------------------
    def pin(self, a: int, b: int, owner: object) -> None:
        """Record that [a, b) stays exposed while ``owner`` (weakly referenced) lives."""
        if not self.covers(a, b):
            raise InaccessibleMemoryError(f"[{a:#x}, {b:#x}) is not accessible memory")
        pins, unpinned = self._pins, self._unpinned

        def unpin(ref: weakref.ref) -> None:
            if pins.pop(ref, None) is not None:
                unpinned.append((a, b))

        with self._count_lock:
            self._settle()
            self._shift(a, b, 1)
            self._pins[weakref.ref(owner, unpin)] = (a, b)
        self._pins_made += 1

    def _shift(self, a: int, b: int, delta: int) -> None:
        # Add delta to the pin count over [a, b).
        counts = self._counts
        _s, e, c = counts.run_at(a)
        if e >= b:  # the usual case: one run covers the range
            counts.assign(a, b, c + delta)
            return
        for s, e, c in counts.runs(a, b):
            counts.assign(s, e, c + delta)

    def _settle(self) -> None:
        # Apply the ranges of views that died since (under _count_lock).
        unpinned = self._unpinned
        while unpinned:
            a, b = unpinned.popleft()
            self._shift(a, b, -1)

    def any_pinned(self, a: int, b: int) -> bool:
        """Whether a view may still expose part of [a, b): exact but for views dying
        right now (:meth:`live_views` tells those apart)."""
        with self._count_lock:
            self._settle()
            return any(c for _s, _e, c in self._counts.runs(a, b))

    def live_views(self, a: int, b: int) -> list[tuple[int, int]]:
        """Ranges of live views that overlap [a, b)."""
        if not self.any_pinned(a, b):
            return []
        # Iterate a copy made in one C call: a view dying meanwhile (its weakref callback
        # may run in the collector, on any thread) removes its entry from the dict.
        return [(s, e) for ref, (s, e) in self._pins.copy().items()
                if s < b and a < e and ref() is not None]

    def collect_if_pinned(self, a: int, b: int) -> int:
        """Collect garbage if a view seems to pin [a, b): one kept only by a reference
        cycle is garbage, not live. Never call this holding SysMem's lock: collecting
        runs finalizers, which may call back into the SysMem.

        Returns a token for :meth:`check_unpinned`, which can skip its scan while no view
        was pinned since this one found none over [a, b) (-1: it must scan).
        """
        pins_made = self._pins_made
        if self._pins and self.live_views(a, b):  # any_pinned first: cheap when clear
            gc.collect()
            return -1
        return pins_made

    def check_unpinned(self, a: int, b: int, op: str, clean: int = -1) -> None:
        """Raise LiveViewError if a live view overlaps [a, b) (call
        :meth:`collect_if_pinned` first, outside the lock, and pass its token)."""
        if not self._pins or clean == self._pins_made:
            return
        live = self.live_views(a, b)
        if live:
            s, e = live[0]
            raise LiveViewError(
                f"{op} on [{a:#x}, {b:#x}) would unmap, protect or replace memory that a live "
                f"view [{s:#x}, {e:#x}) still exposes ({len(live)} view(s)); drop the views first"
            )
