"""Finding free gaps in the simulated address space without scanning every mapping.

:class:`_OwnerMap` is the address space's owner map (None = unmapped). For each
alignment that placement has asked about it keeps a :class:`_GapTree`: the free runs that
can hold an aligned piece, by start address, in a binary trie over the address bits whose
nodes hold the largest *fit* below them. The first (or last) free run from an address on
that can hold ``n`` bytes is then found in O(address bits), however many regions there
are; a linear scan made reserving n regions cost O(n²).
"""

from __future__ import annotations

from bisect import bisect_right
from typing import Any

from ..intervals import IntervalMap
from ._align import _up

_INF = float("inf")


class _GapTree:
    """Free runs by start address, each with its fit (the most bytes an ``align``-aligned
    piece of it can hold); only runs that fit at least one byte are kept."""

    def __init__(self, align: int, top: int) -> None:
        self.align = align
        self.top = top
        self.bits = top.bit_length() - 1  # top is a power of two
        # levels[k][p]: the largest fit among the runs whose start >> k == p
        self.levels: list[dict[int, int]] = [{} for _ in range(self.bits + 1)]

    def fit(self, start: int, end: int | float) -> int:
        """The fit of the free run [start, end); the space ends at ``top``."""
        return int(min(end, self.top)) - _up(start, self.align)

    def set(self, start: int, fit: int) -> None:
        """Record the free run starting at ``start`` (``fit`` <= 0: forget it)."""
        levels = self.levels
        if fit > 0:
            levels[0][start] = fit
        elif levels[0].pop(start, None) is None:
            return  # it was not there: nothing above changes
        p = start
        for level in range(1, self.bits + 1):
            below, here = levels[level - 1], levels[level]
            p >>= 1
            best = max(below.get(2 * p, 0), below.get(2 * p + 1, 0))
            if here.get(p, 0) == best:
                break  # the maxima above depend only on this one
            if best:
                here[p] = best
            else:
                del here[p]

    def first_from(self, a: int, n: int) -> int | None:
        """The lowest start >= ``a`` of a run whose fit is >= ``n`` (n >= 1), or None."""
        levels = self.levels
        if levels[0].get(a, 0) >= n:
            return a
        p, level = a, 0
        # Climb until a right sibling's subtree (all starts > a) holds a fit >= n ...
        while level < self.bits:
            if not p & 1 and levels[level].get(p + 1, 0) >= n:
                p += 1
                break
            p >>= 1
            level += 1
        else:
            return None
        # ... then descend to its leftmost such leaf.
        while level:
            level -= 1
            p <<= 1
            if levels[level].get(p, 0) < n:
                p += 1
        return p

    def last_upto(self, b: int, n: int) -> int | None:
        """The highest start <= ``b`` of a run whose fit is >= ``n`` (n >= 1), or None."""
        levels = self.levels
        if levels[0].get(b, 0) >= n:
            return b
        p, level = b, 0
        while level < self.bits:
            if p & 1 and levels[level].get(p - 1, 0) >= n:
                p -= 1
                break
            p >>= 1
            level += 1
        else:
            return None
        while level:
            level -= 1
            p = (p << 1) | 1
            if levels[level].get(p, 0) < n:
                p -= 1
        return p


class _OwnerMap(IntervalMap):
    """An :class:`IntervalMap` of owners (None = unmapped) that keeps its gap trees
    current through every :meth:`assign` (and so :meth:`exchange`)."""

    __slots__ = ("top", "trees")

    def __init__(self, top: int) -> None:
        super().__init__(None)
        self.top = top
        self.trees: dict[int, _GapTree] = {}

    def gaps(self, align: int) -> _GapTree:
        """The gap tree for ``align``, built from the runs on first use."""
        tree = self.trees.get(align)
        if tree is None:
            tree = self.trees[align] = _GapTree(align, self.top)
            starts, vals = self.starts, self.vals
            for k, start in enumerate(starts):
                if vals[k] is None:
                    tree.set(start, tree.fit(start, starts[k + 1] if k + 1 < len(starts) else _INF))
        return tree

    def assign(self, lo: int, hi: int, val: Any) -> None:
        """Set [lo, hi) to ``val``; the free runs around it are re-indexed."""
        if not self.trees or lo >= hi:
            super().assign(lo, hi, val)
            return
        _s, end, old = self.run_at(lo)
        if old == val and end >= hi:
            return  # nothing changes (the hot path: mapping inside a reservation)
        before = self._free_runs_near(lo, hi)
        super().assign(lo, hi, val)
        after = self._free_runs_near(lo, hi)
        for tree in self.trees.values():
            for start in before.keys() - after.keys():
                tree.set(start, 0)
            for start, stop in after.items():
                if before.get(start) != stop:
                    tree.set(start, tree.fit(start, stop))

    def _free_runs_near(self, lo: int, hi: int) -> dict[int, int | float]:
        """start -> end of the free runs holding an address in [lo-1, hi]: the only runs
        an assignment to [lo, hi) can create, remove, grow or shrink."""
        starts, vals = self.starts, self.vals
        count = len(starts)
        out: dict[int, int | float] = {}
        for k in range(bisect_right(starts, max(lo - 1, 0)) - 1, bisect_right(starts, hi)):
            if vals[k] is None:
                out[starts[k]] = starts[k + 1] if k + 1 < count else _INF
        return out
