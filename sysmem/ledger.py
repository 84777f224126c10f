"""The ledger: every region this SysMem owns and the state of each of its pages.

A region is what one ``sys_alloc``/``sys_reserve``/``sys_reserve_aligned`` returned
(the unit ``sys_free``/``sys_unreserve`` must name whole). Page states live in one
:class:`~sysmem.intervals.IntervalMap` over the address space, as runs of equal
(state, stat) — so a terabyte reservation costs one run, and a scavenger-fragmented
arena one run per change of state.

The ledger only records and validates; :class:`sysmem.core.SysMem` decides when to ask
it, and applies a change only after the OS call succeeded, so a refused or failed call
leaves it untouched.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass

from .errors import (
    AccountingMismatchError,
    IllegalTransitionError,
    NotReservedError,
    PartialRegionError,
)
from .intervals import IntervalMap
from .states import State
from .stats import SysMemStat

__all__ = ["Ledger", "Region", "Run"]

# A page's value packs its state (low 2 bits; 0 = None, outside every region) and the
# index of the stat its bytes are attributed to (0 = none): one small int per run keeps
# comparisons and merging cheap.
_STATE_MASK = 3
# States are plain ints on the hot paths: IntEnum arithmetic costs more than the update.
_PREPARED = int(State.PREPARED)


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

    def __repr__(self) -> str:
        stat = self.stat.name if self.stat is not None else None
        return f"Run([{self.start:#x}, {self.end:#x}) {self.state.name}, {self.size:#x} bytes, stat={stat})"


class Region:
    """One live region: [base, base+size) and the VMA name it was created with."""

    __slots__ = ("base", "size", "name")

    def __init__(self, base: int, size: int, name: str) -> None:
        self.base = base
        self.size = size
        self.name = name

    @property
    def end(self) -> int:
        """One past the last byte."""
        return self.base + self.size

    def __repr__(self) -> str:
        return f"Region({self.base:#x}, {self.size:#x}, {self.name!r})"


class Ledger:
    """Regions, page states and stat attribution of one SysMem (see module docstring)."""

    def __init__(self) -> None:
        self._bases: list[int] = []
        self._regions: dict[int, Region] = {}
        self._pages = IntervalMap(0)
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

    def _val(self, state: int, stat: SysMemStat | None) -> int:
        if stat is None:
            return int(state)
        i = self._stat_index.get(id(stat))
        return int(state) | ((i if i is not None else self.stat_id(stat)) << 2)

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
        self._bases.insert(i, base)
        self._regions[base] = Region(base, size, name)
        self._pages.assign(base, base + size, self._val(state, stat))

    def remove_region(self, region: Region) -> None:
        """Forget a region (it went back to None)."""
        del self._regions[region.base]
        self._bases.pop(bisect_right(self._bases, region.base) - 1)
        self._pages.assign(region.base, region.end, 0)

    def shrink_region(self, region: Region, new_base: int, new_size: int) -> None:
        """Keep only [new_base, new_base+new_size) of a region (sys_reserve_aligned's trim)."""
        val = self._pages.value_at(new_base)
        self.remove_region(region)
        self.add_region(new_base, new_size, region.name, val & _STATE_MASK, self._stats[val >> 2])

    def regions(self) -> list[Region]:
        """Live regions in address order."""
        return [self._regions[b] for b in self._bases]

    # -- validation -----------------------------------------------------------------
    def require(self, v: int, n: int, allowed: int, op: str, unattributed: bool = False) -> int:
        """Check every page of [v, v+n) is in a state of the ``allowed`` bit mask
        (bit ``1 << state``); return how many of its bytes are Prepared.

        With ``unattributed`` also require that no page is attributed to a stat (pages
        ``sys_map`` may map must not be counted already).
        """
        _s, e, val = self._pages.run_at(v)
        if e >= v + n:  # fast path: the range sits inside one run
            if (allowed >> (val & _STATE_MASK)) & 1 and not (unattributed and val >> 2):
                return n if val & _STATE_MASK == _PREPARED else 0
        prepared = 0
        for s, e, val in self._pages.runs(v, v + n):
            st = State(val & _STATE_MASK)
            allowed_here = (allowed >> st) & 1
            if st is State.NONE:
                raise NotReservedError(
                    f"{op}({v:#x}, {n:#x}): [{s:#x}, {e:#x}) is not memory this SysMem owns"
                )
            if not allowed_here or (unattributed and val >> 2):
                what = st.name
                if allowed_here:
                    what += f" but still counted in {self._stats[val >> 2].name}"
                raise IllegalTransitionError(
                    f"{op}({v:#x}, {n:#x}): [{s:#x}, {e:#x}) is {what}; {op} needs "
                    + " or ".join(a.name for a in State if (allowed >> a) & 1)
                )
            if st is State.PREPARED:
                prepared += e - s
        return prepared

    def require_freeable(self, region: Region, stat: SysMemStat, op: str) -> None:
        """sys_free: every page Ready and counted in ``stat``'s group (else the accounting breaks)."""
        for s, e, val in self._pages.runs(region.base, region.end):
            if val & _STATE_MASK != State.READY:
                raise IllegalTransitionError(
                    f"{op}({region.base:#x}, {region.size:#x}): [{s:#x}, {e:#x}) is "
                    f"{State(val & _STATE_MASK).name}; sys_free moves Ready memory to None and "
                    "would miscount anything else"
                )
            owner = self._stats[val >> 2]
            if owner is None or owner.group != stat.group:
                raise IllegalTransitionError(
                    f"{op}({region.base:#x}, {region.size:#x}, {stat.name}): [{s:#x}, {e:#x}) "
                    f"is counted in {owner.name if owner else 'no stat'}, not in {stat.name}'s "
                    f"group {stat.group!r}"
                )

    # -- changes ------------------------------------------------------------------------
    def set_state(self, v: int, n: int, state: int) -> None:
        """Move [v, v+n) to ``state`` (a State or its int), keeping each page's stat."""
        pages = self._pages
        _s, e, val = pages.run_at(v)
        if e >= v + n:
            pages.assign(v, v + n, (val & ~_STATE_MASK) | state)
            return
        for s, e, val in pages.runs(v, v + n):
            pages.assign(s, e, (val & ~_STATE_MASK) | state)

    def set_state_and_stat(self, v: int, n: int, state: int, stat: SysMemStat | None) -> None:
        """Move [v, v+n) to ``state`` and attribute it to ``stat`` (None: to no stat)."""
        self._pages.assign(v, v + n, self._val(state, stat))

    # -- reading ------------------------------------------------------------------------
    def runs(self, region: Region | None = None) -> list[Run]:
        """Runs of every region (or of one), in address order, split at region ends."""
        out = []
        for r in [region] if region is not None else self.regions():
            for s, e, val in self._pages.runs(r.base, r.end):
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
