"""The modelled address space of :class:`~sysmem._simulated.SimulatedBackend`.

The address space reaches ``1 << address_bits`` and costs nothing until touched: page
attributes are kept as run-length interval maps, and contents live in lazily created
storage segments (``segment_size``-aligned, 1 GiB by default) that are released to the
host when nothing in them is resident and mapped.
"""

from __future__ import annotations

import mmap
from bisect import bisect_left, bisect_right
from typing import Any, Callable, Iterator

import numpy as np

from ..backend import OsPages
from ..errors import InaccessibleMemoryError, SysOutOfMemoryError
from ..intervals import IntervalMap

# Linux's default vm.mmap_min_addr and the lowest address Windows hands out: 64 KiB.
_MIN_ADDR = 0x10000

# Page residency states.
_OUT, _IN, _LAZY = 0, 1, 2
# Huge-page advice recorded per page.
_HG, _NH = "hg", "nh"


def _up(x: int, a: int) -> int:
    return (x + a - 1) & -a  # a is a power of two


def _down(x: int, a: int) -> int:
    return x & -a


# ---------------------------------------------------------------------------------------
# Contents
# ---------------------------------------------------------------------------------------
_HOST_PAGE = mmap.PAGESIZE
_CAN_DROP_HOST_PAGES = hasattr(mmap, "MADV_DONTNEED") and hasattr(mmap.mmap, "madvise")


class _Segment:
    """Backing bytes for one aligned window of the simulated address space.

    A private anonymous host mapping where the host has one (zero-filled and committed
    only where written; opted out of host THP so one touched simulated page costs one
    host page), else ``numpy.zeros``.
    """

    __slots__ = ("array", "view", "_mm")

    def __init__(self, size: int) -> None:
        self._mm: mmap.mmap | None = None
        try:
            mm = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE,
                           prot=mmap.PROT_READ | mmap.PROT_WRITE)
        except (AttributeError, OSError, TypeError, ValueError):
            self.array = np.zeros(size, dtype=np.uint8)
        else:
            if hasattr(mmap, "MADV_NOHUGEPAGE"):
                try:
                    mm.madvise(mmap.MADV_NOHUGEPAGE)
                except OSError:
                    pass
            self._mm = mm
            self.array = np.frombuffer(mm, dtype=np.uint8)
        self.view = memoryview(self.array)

    def zero(self, a: int, b: int) -> None:
        """Zero bytes [a, b) of the segment, giving whole host pages back when possible."""
        mm = self._mm
        if mm is not None and _CAN_DROP_HOST_PAGES and b - a >= 16 * _HOST_PAGE:
            ia, ib = _up(a, _HOST_PAGE), _down(b, _HOST_PAGE)
            self.array[a:ia] = 0
            self.array[ib:b] = 0
            try:
                mm.madvise(mmap.MADV_DONTNEED, ia, ib - ia)
                return
            except OSError:
                pass
        self.array[a:b] = 0


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
        self.owner = IntervalMap(None)  # None = unmapped; else True / allocation base
        self.prot = IntervalMap(False)  # accessible (RW / committed)
        self.res = IntervalMap(_OUT)
        self.huge = IntervalMap(None)  # None / _HG / _NH
        self.resident = 0
        self.lazyfree = 0
        self.accessible = 0
        self.seg_shift = min(segment_size, top).bit_length() - 1
        self.segments: dict[int, _Segment] = {}
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

    def _gap_down(self, n: int, align: int, lo_lim: int, hi_lim: int) -> int | None:
        starts, vals = self.owner.starts, self.owner.vals
        i = bisect_left(starts, hi_lim) - 1
        while i >= 0:
            if vals[i] is None:
                s = max(starts[i], lo_lim)
                e = min(starts[i + 1] if i + 1 < len(starts) else hi_lim, hi_lim)
                p = _down(e - n, align)
                if e - s >= n and p >= s:
                    return p
            if starts[i] <= lo_lim:
                break
            i -= 1
        return None

    def _gap_up(self, n: int, align: int, lo_lim: int, hi_lim: int) -> int | None:
        starts, vals = self.owner.starts, self.owner.vals
        i = max(bisect_right(starts, lo_lim) - 1, 0)
        while i < len(starts) and starts[i] < hi_lim:
            if vals[i] is None:
                s = _up(max(starts[i], lo_lim), align)
                e = min(starts[i + 1] if i + 1 < len(starts) else hi_lim, hi_lim)
                if s + n <= e:
                    return s
            i += 1
        return None

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
                segment = self.segments.get(seg)
                if segment is not None:
                    segment.zero(a - base, b - base)
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
                    segment = self.segments.get(seg)
                    if segment is not None:
                        base = seg << self.seg_shift
                        segment.zero(a - base, b - base)

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
        for seg in [s for s in self.segments if lo >> shift <= s <= (hi - 1) >> shift]:
            self._maybe_release(seg)

    def _maybe_release(self, seg: int) -> None:
        # Keep storage while anything in the window is mapped, so a stale view of a
        # released-but-mapped page still reaches the same bytes, as it would on a kernel.
        if seg in self.seg_resident or seg not in self.segments:
            return
        lo = seg << self.seg_shift
        if not self.mapped_pieces(lo, lo + (1 << self.seg_shift)):
            del self.segments[seg]

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
        seg = v >> self.seg_shift
        if (end - 1) >> self.seg_shift != seg:
            boundary = (seg + 1) << self.seg_shift
            raise InaccessibleMemoryError(
                f"buffer(0x{v:x}, {n}) straddles 0x{boundary:x}, a boundary between the "
                f"simulation's {1 << self.seg_shift}-byte storage segments; the simulated "
                f"backend cannot hand out one contiguous buffer across it")
        runs = self.res.runs(lo, hi)
        if len(runs) != 1 or runs[0][2] != _IN:
            new = sum(e - s for s, e, st in runs if st == _OUT)
            budget = self.physical_memory
            if new and budget is not None and self.resident + new > budget:
                self._relieve_pressure(new, lo, hi, runs)
            if seg not in self.segments:
                self.segments[seg] = _Segment(1 << self.seg_shift)
            self.set_res(lo, hi, _IN)
        base = seg << self.seg_shift
        return self.segments[seg].view[v - base:end - base]

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
