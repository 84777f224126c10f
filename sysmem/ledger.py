"""The ledger: every region this SysMem owns and the state of each of its pages.

A region is what one ``sys_alloc``/``sys_reserve``/``sys_reserve_aligned`` returned
(the unit ``sys_free``/``sys_unreserve`` must name whole). Inside a region, pages are
kept as runs of equal (state, stat) — run-length, so a terabyte reservation costs one
run, and a scavenger-fragmented arena costs one run per change of state.

The ledger only records and validates; :class:`sysmem.core.SysMem` decides when to ask
it, and applies a change only after the OS call succeeded, so a refused or failed call
leaves it untouched.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterator
from dataclasses import dataclass

from .errors import (
    AccountingMismatchError,
    IllegalTransitionError,
    NotReservedError,
    PartialRegionError,
)
from .states import State
from .stats import SysMemStat

__all__ = ["Ledger", "Region", "Run"]

# A run's value packs the state (low 2 bits) and the index of the stat its bytes are
# attributed to (0 = none): one small int per run keeps comparisons and merging cheap.
_STATE_MASK = 3


@dataclass(frozen=True)
class Run:
    """A maximal range of pages with one state and one stat attribution."""

    start: int
    end: int
    state: State
    stat: SysMemStat | None

    @property
    def size(self) -> int:
        """Bytes in the run."""
        return self.end - self.start


class Region:
    """One live region: [base, base+size), its VMA name and its runs of page states."""

    __slots__ = ("base", "size", "name", "starts", "vals")

    def __init__(self, base: int, size: int, name: str, val: int) -> None:
        self.base = base
        self.size = size
        self.name = name
        # starts[i] is where run i begins; it ends where run i+1 begins (or at the end).
        self.starts = [base]
        self.vals = [val]

    @property
    def end(self) -> int:
        """One past the last byte."""
        return self.base + self.size

    def pieces(self, a: int, b: int) -> Iterator[tuple[int, int, int]]:
        """(start, end, packed value) of each run overlapping [a, b), clipped to it."""
        starts, vals = self.starts, self.vals
        i = bisect_right(starts, a) - 1
        last = len(starts) - 1
        while i <= last and starts[i] < b:
            e = starts[i + 1] if i < last else self.base + self.size
            yield (max(starts[i], a), min(e, b), vals[i])
            i += 1

    def _boundary(self, a: int) -> int:
        """Make a run start at ``a`` (base <= a < end); return its index."""
        i = bisect_right(self.starts, a) - 1
        if self.starts[i] != a:
            i += 1
            self.starts.insert(i, a)
            self.vals.insert(i, self.vals[i - 1])
        return i

    def assign(self, a: int, b: int, fn) -> None:
        """Replace each run value v in [a, b) by fn(v), then merge equal neighbours."""
        starts, vals = self.starts, self.vals
        i = self._boundary(a)
        j = self._boundary(b) if b < self.base + self.size else len(starts)
        for k in range(i, j):
            vals[k] = fn(vals[k])
        # Only runs i-1 .. j can have become equal to a neighbour.
        lo, hi = max(i - 1, 0), min(j + 1, len(starts))
        new_s, new_v = [starts[lo]], [vals[lo]]
        for k in range(lo + 1, hi):
            if vals[k] != new_v[-1]:
                new_s.append(starts[k])
                new_v.append(vals[k])
        starts[lo:hi] = new_s
        vals[lo:hi] = new_v


class Ledger:
    """Regions, page states and stat attribution of one SysMem (see module docstring)."""

    def __init__(self) -> None:
        self._bases: list[int] = []
        self._regions: dict[int, Region] = {}
        # Stat attribution: index 0 means "no stat"; stats are registered on first use.
        self._stats: list[SysMemStat | None] = [None]
        self._stat_index: dict[int, int] = {}

    # -- stats ------------------------------------------------------------------------
    def stat_id(self, stat: SysMemStat) -> int:
        """The small integer this ledger attributes ``stat``'s pages with."""
        i = self._stat_index.get(id(stat))
        if i is None:
            i = len(self._stats)
            self._stats.append(stat)
            self._stat_index[id(stat)] = i
        return i

    def known_stats(self) -> list[SysMemStat]:
        """Every stat that has had pages attributed to it."""
        return [s for s in self._stats if s is not None]

    # -- regions ------------------------------------------------------------------------
    def region_at(self, v: int, n: int, op: str) -> Region:
        """The region holding all of [v, v+n), or NotReservedError naming ``op``."""
        i = bisect_right(self._bases, v) - 1
        if i >= 0:
            r = self._regions[self._bases[i]]
            if v + n <= r.base + r.size:
                return r
            if v < r.base + r.size:
                raise NotReservedError(
                    f"{op}({v:#x}, {n:#x}): the range runs past the end of its region "
                    f"[{r.base:#x}, {r.base + r.size:#x})"
                )
        raise NotReservedError(f"{op}({v:#x}, {n:#x}): the range is not memory this SysMem owns")

    def whole_region(self, v: int, n: int, op: str) -> Region:
        """The region that is exactly [v, v+n), or PartialRegionError / NotReservedError."""
        r = self._regions.get(v)
        if r is not None and r.size == n:
            return r
        i = bisect_right(self._bases, v) - 1
        if i >= 0:
            r = self._regions[self._bases[i]]
            if v < r.base + r.size:
                raise PartialRegionError(
                    f"{op}({v:#x}, {n:#x}): must name a whole region, as returned by "
                    f"sys_alloc/sys_reserve, here [{r.base:#x}, {r.base + r.size:#x})"
                )
        raise NotReservedError(f"{op}({v:#x}, {n:#x}): no region starts here")

    def add_region(self, base: int, size: int, name: str, state: State, stat: SysMemStat | None) -> None:
        """Record a new region whose pages are all in ``state`` (attributed to ``stat``)."""
        i = bisect_right(self._bases, base)
        # A new region overlapping a live one means the ledger and the OS have diverged.
        if (i > 0 and self._regions[self._bases[i - 1]].end > base) or (
            i < len(self._bases) and self._bases[i] < base + size
        ):
            raise AccountingMismatchError(
                f"the OS returned [{base:#x}, {base + size:#x}), which overlaps a region the "
                "ledger believes is live"
            )
        val = int(state) | ((self.stat_id(stat) if stat is not None else 0) << 2)
        self._bases.insert(i, base)
        self._regions[base] = Region(base, size, name, val)

    def remove_region(self, region: Region) -> None:
        """Forget a region (it went back to None)."""
        del self._regions[region.base]
        self._bases.pop(bisect_right(self._bases, region.base) - 1)

    def shrink_region(self, region: Region, new_base: int, new_size: int) -> None:
        """Keep only [new_base, new_base+new_size) of a region (sys_reserve_aligned's trim)."""
        self.remove_region(region)
        val = region.vals[0]
        if len(region.vals) != 1:
            raise AccountingMismatchError("sys_reserve_aligned trimmed a region that was already in use")
        self._bases.insert(bisect_right(self._bases, new_base), new_base)
        self._regions[new_base] = Region(new_base, new_size, region.name, val)

    def regions(self) -> list[Region]:
        """Live regions in address order."""
        return [self._regions[b] for b in self._bases]

    # -- validation -----------------------------------------------------------------
    def require(self, region: Region, v: int, n: int, allowed: tuple[State, ...], op: str,
                unattributed: bool = False) -> int:
        """Check every page of [v, v+n) is in an allowed state; return Prepared bytes.

        With ``unattributed`` also require that no page is attributed to a stat (pages
        ``sys_map`` may map must not be counted already).
        """
        prepared = 0
        for s, e, val in region.pieces(v, v + n):
            st = State(val & _STATE_MASK)
            if st not in allowed or (unattributed and val >> 2):
                what = st.name
                if st in allowed:
                    what += f" but still counted in {self._stats[val >> 2].name}"
                raise IllegalTransitionError(
                    f"{op}({v:#x}, {n:#x}): [{s:#x}, {e:#x}) is {what}; {op} needs "
                    + " or ".join(a.name for a in allowed)
                )
            if st is State.PREPARED:
                prepared += e - s
        return prepared

    def require_freeable(self, region: Region, stat: SysMemStat, op: str) -> None:
        """sys_free: every page Ready and attributed to ``stat`` (else its accounting breaks)."""
        want = self._stat_index.get(id(stat), -1)
        for s, e, val in region.pieces(region.base, region.end):
            if val & _STATE_MASK != State.READY:
                raise IllegalTransitionError(
                    f"{op}({region.base:#x}, {region.size:#x}): [{s:#x}, {e:#x}) is "
                    f"{State(val & _STATE_MASK).name}; sys_free moves Ready memory to None and "
                    "would miscount anything else"
                )
            if val >> 2 != want:
                owner = self._stats[val >> 2]
                raise IllegalTransitionError(
                    f"{op}({region.base:#x}, {region.size:#x}, {stat.name}): [{s:#x}, {e:#x}) "
                    f"is counted in {owner.name if owner else 'no stat'}, not {stat.name}"
                )

    # -- changes ------------------------------------------------------------------------
    @staticmethod
    def set_state(region: Region, v: int, n: int, state: State) -> None:
        """Move [v, v+n) to ``state``, keeping each page's stat attribution."""
        st = int(state)
        region.assign(v, v + n, lambda val: (val & ~_STATE_MASK) | st)

    def set_state_and_stat(self, region: Region, v: int, n: int, state: State,
                           stat: SysMemStat | None) -> None:
        """Move [v, v+n) to ``state`` and attribute it to ``stat`` (None: to no stat)."""
        val = int(state) | ((self.stat_id(stat) if stat is not None else 0) << 2)
        region.assign(v, v + n, lambda _old: val)

    # -- reading ------------------------------------------------------------------------
    def runs(self, region: Region | None = None) -> list[Run]:
        """Runs of every region (or of one), in address order."""
        out = []
        for r in [region] if region is not None else self.regions():
            for s, e, val in r.pieces(r.base, r.end):
                out.append(Run(s, e, State(val & _STATE_MASK), self._stats[val >> 2]))
        return out

    def bytes_in(self, state: State) -> int:
        """Total bytes in ``state`` over all regions."""
        return sum(r.size for r in self.runs() if r.state is state)

    def attributed(self) -> dict[str, int]:
        """Bytes attributed to each stat group (the sum the group's stats must equal)."""
        out: dict[str, int] = {}
        for run in self.runs():
            if run.stat is not None:
                out[run.stat.group] = out.get(run.stat.group, 0) + run.size
        return out
