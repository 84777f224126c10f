"""``IntervalMap``: a value for every address, stored as runs of equal values.

One structure serves every per-page fact heaplab keeps — the ledger's page states,
which memory views may touch, and the simulated OS's mappings, protections and
residency — so a terabyte of address space costs one run, and each update costs a
couple of bisections plus the runs it replaces.
"""

from __future__ import annotations

from bisect import bisect_right
from typing import Any

__all__ = ["IntervalMap"]

_INF = float("inf")


class IntervalMap:
    """Values over [0, ∞): run i is [starts[i], starts[i+1]) holding vals[i].

    Neighbouring runs always hold different values, so every run is maximal.
    """

    __slots__ = ("starts", "vals")

    def __init__(self, default: Any = None) -> None:
        self.starts: list[int] = [0]
        self.vals: list[Any] = [default]

    def value_at(self, x: int) -> Any:
        """The value at address ``x``."""
        return self.vals[bisect_right(self.starts, x) - 1]

    def run_at(self, x: int) -> tuple[int, float, Any]:
        """(start, end, value) of the run holding ``x`` (end is ``inf`` for the last run)."""
        starts = self.starts
        i = bisect_right(starts, x) - 1
        return starts[i], (starts[i + 1] if i + 1 < len(starts) else _INF), self.vals[i]

    def run_end(self, x: int) -> float:
        """Where the run holding ``x`` ends."""
        i = bisect_right(self.starts, x)
        return self.starts[i] if i < len(self.starts) else _INF

    def runs(self, lo: int, hi: int) -> list[tuple[int, int, Any]]:
        """The runs overlapping [lo, hi), clipped to it, in address order."""
        out: list[tuple[int, int, Any]] = []
        if lo >= hi:
            return out
        if lo < 0:
            raise ValueError(f"IntervalMap covers addresses from 0, not {lo:#x}")
        starts, vals = self.starts, self.vals
        count = len(starts)
        i = bisect_right(starts, lo) - 1
        while i < count and starts[i] < hi:
            s = starts[i] if starts[i] > lo else lo
            e = starts[i + 1] if i + 1 < count and starts[i + 1] < hi else hi
            out.append((s, e, vals[i]))
            i += 1
        return out

    def assign(self, lo: int, hi: int, val: Any) -> None:
        """Set every address in [lo, hi) to ``val``."""
        if lo >= hi:
            return
        if lo < 0:
            raise ValueError(f"IntervalMap covers addresses from 0, not {lo:#x}")
        starts, vals = self.starts, self.vals
        count = len(starts)
        i = bisect_right(starts, lo) - 1
        end = starts[i + 1] if i + 1 < count else _INF
        if hi <= end:
            # Hot path (every scavenge, allocation and view): the range lies in one run,
            # so at most one boundary moves or one or two appear.
            old = vals[i]
            if old == val:
                return
            if starts[i] == lo:
                if hi == end:  # the whole run changes
                    vals[i] = val
                    if i + 1 < count and vals[i + 1] == val:
                        del starts[i + 1], vals[i + 1]
                    if i > 0 and vals[i - 1] == val:
                        del starts[i], vals[i]
                elif i > 0 and vals[i - 1] == val:  # the left neighbour grows
                    starts[i] = hi
                else:
                    vals[i] = val
                    starts.insert(i + 1, hi)
                    vals.insert(i + 1, old)
            elif hi == end:
                if i + 1 < count and vals[i + 1] == val:  # the right neighbour grows
                    starts[i + 1] = lo
                else:
                    starts.insert(i + 1, lo)
                    vals.insert(i + 1, val)
            else:  # a hole in the middle of the run
                starts[i + 1 : i + 1] = (lo, hi)
                vals[i + 1 : i + 1] = (val, old)
            return
        a = i + 1 if starts[i] < lo else i  # runs a .. b-1 start inside [lo, hi]
        b = bisect_right(starts, hi)
        after = vals[b - 1]  # the value that must resume at hi
        new_starts: list[int] = []
        new_vals: list[Any] = []
        if a == 0 or vals[a - 1] != val:
            new_starts.append(lo)
            new_vals.append(val)
        if after != val:
            new_starts.append(hi)
            new_vals.append(after)
        starts[a:b] = new_starts
        vals[a:b] = new_vals

    def exchange(self, lo: int, hi: int, val: Any) -> list[tuple[int, int, Any]]:
        """:meth:`assign`, returning the runs it replaced."""
        old = self.runs(lo, hi)
        self.assign(lo, hi, val)
        return old
