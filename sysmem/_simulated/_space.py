"""The modelled address space of :class:`~sysmem._simulated.SimulatedBackend`.

The address space reaches ``1 << address_bits`` and costs nothing until touched: page
attributes are kept as run-length interval maps (the owner map also indexes its free gaps,
:mod:`._gaps`), and contents live in :mod:`._storage`: lazily created storage segments
(``segment_size``-aligned, 1 GiB by default) that are released to the host when nothing
in them is resident and mapped.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from typing import Any, Callable, Iterator

import numpy as np

from ..backend import OsPages
from ..errors import InaccessibleMemoryError, SysOutOfMemoryError
from ..intervals import IntervalMap
from ._align import _down, _up
from ._gaps import _OwnerMap
from ._storage import _Storage

# Linux's default vm.mmap_min_addr and the lowest address Windows hands out: 64 KiB.
_MIN_ADDR = 0x10000

# Page residency states.
_OUT, _IN, _LAZY = 0, 1, 2
# Huge-page advice recorded per page.
_HG, _NH = "hg", "nh"


# ---------------------------------------------------------------------------------------
# The machine: page attributes, residency, contents
# ---------------------------------------------------------------------------------------
class _AddressSpace:
    """Per-page state of the simulated process, shared by all personalities.

    Invariants: accessible ⇒ mapped; a non-resident page's stored bytes are zero;
    ``resident``/``lazyfree``/``accessible`` are byte totals of the maps.
    """

    def __init__(self, page: int, top: int, segment_size: int,
                 physical_memory: int | None) -> None:
        self.page = page
        self.top = top
        self.min_addr = min(_MIN_ADDR, top // 2)
        self.physical_memory = physical_memory
        self.owner = _OwnerMap(top)  # None = unmapped; else True / allocation base
        self.prot = IntervalMap(False)  # accessible (RW / committed)
        self.res = IntervalMap(_OUT)
        self.huge = IntervalMap(None)  # None / _HG / _NH
        self.resident = 0
        self.lazyfree = 0
        self.accessible = 0
        self.seg_shift = min(segment_size, top).bit_length() - 1
        self.storage = _Storage(self.seg_shift, top)
        self.seg_resident: dict[int, int] = {}

    # -- queries ------------------------------------------------------------------------
    def is_free(self, lo: int, hi: int) -> bool:
        return (self.min_addr <= lo < hi <= self.top and self.owner.value_at(lo) is None
                and self.owner.run_end(lo) >= hi)

    def first_unmapped(self, lo: int, hi: int) -> int | None:
        for s, _e, val in self.owner.runs(lo, hi):
            if val is None:
                return s
        return None

    def mapped_pieces(self, lo: int, hi: int) -> list[tuple[int, int]]:
        return [(s, e) for s, e, val in self.owner.runs(lo, hi) if val is not None]

    def count(self, imap: IntervalMap, lo: int, hi: int, pred: Callable[[Any], bool]) -> int:
        return sum(e - s for s, e, val in imap.runs(lo, hi) if pred(val))

    def place(self, n: int, align: int, base: int, top_down: bool) -> int | None:
        """A free, aligned [p, p+n): searched from ``base`` (the randomised mmap base)
        in the personality's direction, then in the rest of the space."""
        if top_down:
            p = self._gap_down(n, align, self.min_addr, base)
            return p if p is not None else self._gap_down(n, align, base, self.top)
        p = self._gap_up(n, align, base, self.top)
        return p if p is not None else self._gap_up(n, align, self.min_addr, base)

    # The searches take the first fitting free run (clipped to [lo_lim, hi_lim)) scanning
    # from one end of the range: the run at that end is checked here, the runs past it
    # are found through the owner map's gap tree, which holds their unclipped fits.
    def _run(self, i: int, lo_lim: int, hi_lim: int) -> tuple[int, int] | None:
        """Free run i clipped to [lo_lim, hi_lim), or None if it is mapped."""
        starts = self.owner.starts
        if self.owner.vals[i] is not None:
            return None
        end = starts[i + 1] if i + 1 < len(starts) else hi_lim
        return max(starts[i], lo_lim), min(end, hi_lim)

    def _fit_up(self, i: int, n: int, align: int, lo_lim: int, hi_lim: int) -> int | None:
        run = self._run(i, lo_lim, hi_lim)
        if run is not None and _up(run[0], align) + n <= run[1]:
            return _up(run[0], align)
        return None

    def _fit_down(self, i: int, n: int, align: int, lo_lim: int, hi_lim: int) -> int | None:
        run = self._run(i, lo_lim, hi_lim)
        if run is not None and run[1] - run[0] >= n and _down(run[1] - n, align) >= run[0]:
            return _down(run[1] - n, align)
        return None

    def _gap_up(self, n: int, align: int, lo_lim: int, hi_lim: int) -> int | None:
        starts = self.owner.starts
        i = max(bisect_right(starts, lo_lim) - 1, 0)  # the run holding lo_lim
        if starts[i] >= hi_lim:
            return None
        p = self._fit_up(i, n, align, lo_lim, hi_lim)
        if p is not None:
            return p
        s = self.owner.gaps(align).first_from(starts[i] + 1, n)
        if s is None or s >= hi_lim:
            return None
        # Inside the range it fits; the run holding hi_lim may not once clipped, and no
        # later run starts below hi_lim.
        return self._fit_up(bisect_right(starts, s) - 1, n, align, lo_lim, hi_lim)

    def _gap_down(self, n: int, align: int, lo_lim: int, hi_lim: int) -> int | None:
        starts = self.owner.starts
        i = bisect_left(starts, hi_lim) - 1  # the last run starting below hi_lim
        if i < 0:
            return None
        p = self._fit_down(i, n, align, lo_lim, hi_lim)
        if p is not None or starts[i] <= lo_lim:
            return p
        s = self.owner.gaps(align).last_upto(starts[i] - 1, n)
        if s is None or s < starts[bisect_right(starts, lo_lim) - 1]:
            return None  # below the run holding lo_lim, where the search stops
        return self._fit_down(bisect_right(starts, s) - 1, n, align, lo_lim, hi_lim)

    # -- attribute updates ----------------------------------------------------------------
    def set_prot(self, lo: int, hi: int, accessible: bool) -> None:
        for s, e, was in self.prot.exchange(lo, hi, accessible):
            if was != accessible:
                self.accessible += (e - s) if accessible else -(e - s)

    def _pieces(self, lo: int, hi: int) -> Iterator[tuple[int, int, int]]:
        shift = self.seg_shift
        while lo < hi:
            seg = lo >> shift
            end = min(hi, (seg + 1) << shift)
            yield seg, lo, end
            lo = end

    def set_res(self, lo: int, hi: int, state: int) -> None:
        """Set residency; pages leaving residency lose their contents."""
        emptied = []
        for s, e, was in self.res.exchange(lo, hi, state):
            if was == state:
                continue
            size = e - s
            self.resident += (size if state else 0) - (size if was else 0)
            self.lazyfree += (size if state == _LAZY else 0) - (size if was == _LAZY else 0)
            if bool(was) == bool(state):
                continue  # still resident: contents stay
            for seg, a, b in self._pieces(s, e):
                if state:
                    self.seg_resident[seg] = self.seg_resident.get(seg, 0) + (b - a)
                    continue
                base = seg << self.seg_shift
                self.storage.zero(seg, a - base, b - base)
                left = self.seg_resident.get(seg, 0) - (b - a)
                if left:
                    self.seg_resident[seg] = left
                else:
                    self.seg_resident.pop(seg, None)
                    emptied.append(seg)
        for seg in emptied:
            self._maybe_release(seg)

    def drop(self, lo: int, hi: int) -> None:
        self.set_res(lo, hi, _OUT)

    def zero_resident(self, lo: int, hi: int) -> None:
        """Zero contents but keep residency (a program writing zeros, e.g. memclr)."""
        for s, e, st in self.res.runs(lo, hi):
            if st:
                for seg, a, b in self._pieces(s, e):
                    base = seg << self.seg_shift
                    self.storage.zero(seg, a - base, b - base)

    def mark_lazyfree(self, lo: int, hi: int) -> None:
        for s, e, st in self.res.runs(lo, hi):
            if st == _IN:
                self.set_res(s, e, _LAZY)

    def advise_huge(self, lo: int, hi: int, advice: str) -> None:
        for s, e in self.mapped_pieces(lo, hi):
            self.huge.assign(s, e, advice)

    def replace(self, lo: int, hi: int, accessible: bool, owner: Any = True) -> None:
        """A fresh mapping over [lo, hi): old pages are discarded, VMA flags reset."""
        self.drop(lo, hi)
        self.owner.assign(lo, hi, owner)
        self.set_prot(lo, hi, accessible)
        self.huge.assign(lo, hi, None)

    def unmap(self, lo: int, hi: int) -> None:
        self.drop(lo, hi)
        self.owner.assign(lo, hi, None)
        self.set_prot(lo, hi, False)
        self.huge.assign(lo, hi, None)
        shift = self.seg_shift
        for seg in [s for s in self.storage.segments if lo >> shift <= s <= (hi - 1) >> shift]:
            self._maybe_release(seg)

    def _maybe_release(self, seg: int) -> None:
        # Keep storage while anything in the window is mapped, so a stale view of a
        # released-but-mapped page still reaches the same bytes, as it would on a kernel.
        if seg in self.seg_resident or seg not in self.storage.segments:
            return
        lo = seg << self.seg_shift
        if not self.mapped_pieces(lo, lo + (1 << self.seg_shift)):
            self.storage.release(seg)

    def reclaim(self, keep_lo: int = 0, keep_hi: int = 0) -> int:
        """Drop lazy-free pages outside [keep_lo, keep_hi); returns the bytes dropped."""
        dropped = 0
        for s, e, st in self.res.runs(0, self.top):
            if st != _LAZY:
                continue
            for a, b in ((s, min(e, keep_lo)), (max(s, keep_hi), e)):
                if a < b:
                    self.drop(a, b)
                    dropped += b - a
        return dropped

    # -- contents -----------------------------------------------------------------------
    def touch(self, v: int, n: int) -> memoryview:
        """The buffer over [v, v+n); its pages become resident (touched)."""
        if n == 0:
            return memoryview(bytearray())
        end = v + n
        if v < 0 or n < 0 or end > self.top:
            raise InaccessibleMemoryError(
                f"buffer(0x{v:x}, {n}): outside the simulated address space [0, 0x{self.top:x})")
        lo, hi = _down(v, self.page), _up(end, self.page)
        for s, _e, accessible in self.prot.runs(lo, hi):
            if not accessible:
                what = "not mapped" if self.owner.value_at(s) is None else "not accessible"
                raise InaccessibleMemoryError(
                    f"buffer(0x{v:x}, {n}): page 0x{s:x} is {what}; touching it would fault")
        runs = self.res.runs(lo, hi)
        if len(runs) == 1 and runs[0][2] == _IN:
            return self.storage.buffer(v, end)
        buf = self.storage.buffer(v, end)  # first: it may refuse, before anything changes
        new = sum(e - s for s, e, st in runs if st == _OUT)
        budget = self.physical_memory
        if new and budget is not None and self.resident + new > budget:
            self._relieve_pressure(new, lo, hi, runs)
        self.set_res(lo, hi, _IN)
        return buf

    def _relieve_pressure(self, new: int, lo: int, hi: int, runs: list) -> None:
        # A kernel short of memory frees MADV_FREE'd pages before it gives up.
        budget = self.physical_memory
        assert budget is not None
        own_lazy = sum(e - s for s, e, st in runs if st == _LAZY)
        if self.resident - (self.lazyfree - own_lazy) + new > budget:
            raise SysOutOfMemoryError(
                f"out of memory: touching [0x{lo:x}, 0x{hi:x}) needs {new} more resident "
                f"bytes; {self.resident} are resident and the simulated machine has "
                f"physical_memory={budget}")
        self.reclaim(lo, hi)

    def close(self) -> None:
        """Drop all contents (every page becomes non-resident) and the host storage."""
        for s, e, st in self.res.runs(0, self.top):
            if st:
                self.res.assign(s, e, _OUT)
        self.resident = self.lazyfree = 0
        self.seg_resident.clear()
        self.storage.close()

    def inspect(self, v: int, n: int) -> OsPages:
        page = self.page
        start, end = _down(v, page), _up(v + n, page)
        count = (end - start) // page

        def pages(imap: IntervalMap, pred: Callable[[Any], bool]) -> np.ndarray:
            out = np.zeros(count, dtype=bool)
            for s, e, val in imap.runs(start, end):
                if pred(val):
                    out[(s - start) // page:(e - start) // page] = True
            return out

        return OsPages(
            start=start,
            page_size=page,
            mapped=pages(self.owner, lambda x: x is not None),
            accessible=pages(self.prot, bool),
            resident=pages(self.res, bool),
            huge_advised=pages(self.huge, lambda x: x == _HG),
            lazyfree_bytes=self.count(self.res, start, end, lambda x: x == _LAZY),
        )
