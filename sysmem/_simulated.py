"""A simulated operating system for :mod:`sysmem`: Go's ``*OS`` memory functions, no syscalls.

:class:`SimulatedBackend` models a process address space in Python, deterministically, with
one of three personalities:

``linux``
    ``mem_linux.go``: ``mmap``/``madvise``/``mprotect``/``munmap``, the process-global
    ``MADV_FREE`` → ``MADV_DONTNEED`` → ``mmap`` fallback for ``unused``, and the
    ``madvdontneed``/``harddecommit``/``disablethp`` knobs. A hint (rounded up to a page)
    is used when the whole range there is free; otherwise mappings go top-down into the
    highest free gap, as Linux's mmap does.
``windows``
    ``mem_windows.go``: ``VirtualAlloc``/``VirtualFree``. Reserved memory is not committed
    (it faults), ``used`` commits and ``unused`` decommits, across allocations if every
    page is reserved; an allocation can only be released whole. A hint is honoured only
    exactly (on a 64 KiB allocation-granularity boundary, whole range free); otherwise
    allocations go bottom-up on 64 KiB boundaries.
``sbrk``
    ``mem_sbrk.go`` (plan9, wasm): one break that only grows, the runtime's own break
    ``bloc`` below it, and Go's address-ordered first-fit free list.

The address space reaches ``1 << address_bits`` and costs nothing until touched: page
attributes are kept as run-length interval maps, and contents live in lazily created
storage segments (``segment_size``-aligned, 1 GiB by default) that are released to the
host when nothing in them is resident and mapped.

Memory contents and residency: :meth:`SimulatedBackend.buffer` hands out a writable
``memoryview``; every page it covers counts as touched (resident). A page that is not
resident always reads as zero, so zeroing on release is needed only for pages that were
resident. ``MADV_FREE``'d pages stay resident (and keep their contents) until touched
again or until :meth:`SimulatedBackend.reclaim` models memory pressure.
"""

from __future__ import annotations

import mmap
import random
import threading
from bisect import bisect_left, bisect_right
from collections import deque
from typing import Any, Callable, Iterator

import numpy as np

from .backend import Backend, OsPages
from .errors import (
    InaccessibleMemoryError,
    MisalignedRangeError,
    RuntimeThrowError,
    SysOutOfMemoryError,
)
from .intervals import IntervalMap
from .settings import DebugSettings

__all__ = [
    "SimulatedBackend",
    "PERSONALITIES",
    "FAILABLE_OPS",
    "MADV_FREE",
    "MADV_DONTNEED",
]

#: the personalities :class:`SimulatedBackend` accepts
PERSONALITIES: tuple[str, ...] = ("linux", "windows", "sbrk")
#: operations :meth:`SimulatedBackend.fail_next` can make fail
FAILABLE_OPS: tuple[str, ...] = ("reserve", "alloc", "map", "used")
#: advice names, as they appear in ``SimulatedBackend.supported_advice`` and ``calls``
MADV_FREE = "MADV_FREE"
MADV_DONTNEED = "MADV_DONTNEED"

_RW = "PROT_READ|PROT_WRITE"
_NONE = "PROT_NONE"
_FIXED = "MAP_FIXED"
_OTHER_THREAD = "other thread"
_GIB = 1 << 30
# Linux's default vm.mmap_min_addr and the lowest address Windows hands out: 64 KiB.
_MIN_ADDR = 0x10000
# Windows places every allocation on a 64 KiB boundary.
_WIN_GRANULARITY = 0x10000
_ADVICE_STATES = ("free", "dontneed", "unsupported")

# Page residency states.
_OUT, _IN, _LAZY = 0, 1, 2
# Huge-page advice recorded per page.
_HG, _NH = "hg", "nh"


def _up(x: int, a: int) -> int:
    return (x + a - 1) & -a  # a is a power of two


def _down(x: int, a: int) -> int:
    return x & -a


def _is_pow2(x: int) -> bool:
    return x > 0 and x & (x - 1) == 0


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


# ---------------------------------------------------------------------------------------
# Personalities
# ---------------------------------------------------------------------------------------
class _Personality:
    """One OS's ``*OS`` functions over the shared machine. Called with the lock held."""

    def __init__(self, backend: "SimulatedBackend", mmap_base: int) -> None:
        self.b = backend
        self.m: _AddressSpace = backend._space
        self.page = backend.phys_page_size
        self.mmap_base = mmap_base

    def huge_page(self, v: int, n: int) -> None:
        pass

    def no_huge_page(self, v: int, n: int) -> None:
        pass

    def huge_page_collapse(self, v: int, n: int) -> None:
        pass

    def map(self, v: int, n: int, name: str) -> None:
        if self.b._take_failure("map"):
            raise SysOutOfMemoryError(
                f"runtime: out of memory (sysMap(0x{v:x}, {n}): injected failure)")


class _Linux(_Personality):
    """``mem_linux.go``."""

    def mapped_is_accessible(self) -> bool:
        return True

    def released_is_accessible(self) -> bool:
        return not self.b.debug.harddecommit

    def need_zero_after_unused(self) -> bool:
        return self.b.debug.madvdontneed == 0

    # -- the system calls ---------------------------------------------------------------
    def _name(self, p: int, n: int, name: str) -> None:
        if self.b.debug.decoratemappings and name:
            self.b._log("prctl", p, n, "PR_SET_VMA_ANON_NAME", (" Go: " + name)[:79])

    def _mmap_anywhere(self, n: int, prot: str, hint: int | None) -> int | None:
        m = self.m
        p = None
        if hint is not None:
            h = _up(hint, self.page)
            if m.is_free(h, h + n):
                p = h
        if p is None:
            p = m.place(n, self.page, self.mmap_base, top_down=True)
        if p is None:
            self.b._log("mmap", hint or 0, n, prot, "ENOMEM")
            return None
        m.replace(p, p + n, prot == _RW)
        self.b._log("mmap", p, n, prot)
        return p

    def _mmap_fixed(self, v: int, n: int, prot: str) -> str | None:
        """Returns the errno name on failure."""
        if v % self.page or n <= 0:
            err = "EINVAL"
        elif v + _up(n, self.page) > self.m.top:
            err = "ENOMEM"
        else:
            n = _up(n, self.page)
            self.m.replace(v, v + n, prot == _RW)
            self.b._log("mmap", v, n, prot, _FIXED)
            return None
        self.b._log("mmap", v, n, prot, _FIXED, err)
        return err

    def _madvise(self, v: int, n: int, advice: str) -> bool:
        b, m = self.b, self.m
        if advice in (MADV_FREE, MADV_DONTNEED) and advice not in b.supported_advice:
            b._log("madvise", v, n, advice, "EINVAL")
            return False
        if v % self.page:
            b._log("madvise", v, n, advice, "EINVAL")
            return False
        hi = _up(v + n, self.page)
        # Like the kernel: apply to every mapped piece, report ENOMEM if there were holes.
        for s, e in m.mapped_pieces(v, hi):
            if advice == MADV_DONTNEED:
                m.drop(s, e)
            elif advice == MADV_FREE:
                m.mark_lazyfree(s, e)
            elif advice == "MADV_HUGEPAGE":
                m.advise_huge(s, e, _HG)
            elif advice == "MADV_NOHUGEPAGE":
                m.advise_huge(s, e, _NH)
        if m.first_unmapped(v, hi) is not None:
            b._log("madvise", v, n, advice, "ENOMEM")
            return False
        b._log("madvise", v, n, advice)
        return True

    # -- the *OS functions --------------------------------------------------------------
    def steal(self, v: int) -> None:
        if v % self.page == 0 and self.m.is_free(v, v + self.page):
            self.m.replace(v, v + self.page, False)
            self.b._log("mmap", v, self.page, _NONE, _OTHER_THREAD)
            self.b.phantoms.append((v, self.page))

    def reserve(self, v: int | None, n: int, name: str) -> int | None:
        n = _up(n, self.page)
        if n == 0 or self.b._take_failure("reserve"):
            self.b._log("mmap", v or 0, n, _NONE, "ENOMEM" if n else "EINVAL")
            return None
        p = self._mmap_anywhere(n, _NONE, v)
        if p is not None:
            self._name(p, n, name)
        return p

    def alloc(self, n: int, name: str) -> int | None:
        n = _up(n, self.page)
        if n == 0 or self.b._take_failure("alloc"):
            self.b._log("mmap", 0, n, _RW, "ENOMEM" if n else "EINVAL")
            return None
        p = self._mmap_anywhere(n, _RW, None)
        if p is not None:
            self._name(p, n, name)
        return p

    def map(self, v: int, n: int, name: str) -> None:
        if self.b._take_failure("map"):
            self.b._log("mmap", v, n, _RW, _FIXED, "ENOMEM")
            raise SysOutOfMemoryError(
                f"runtime: out of memory (mmap(0x{v:x}, {n}) failed with ENOMEM: injected)")
        err = self._mmap_fixed(v, n, _RW)
        if err is not None:
            raise RuntimeThrowError(
                f"runtime: cannot map pages in arena address space "
                f"(mmap(0x{v:x}, {n}) failed with {err})")
        self._name(v, n, name)
        if self.b.debug.disablethp:
            self.no_huge_page(v, n)

    def unused(self, v: int, n: int) -> None:
        if v % self.page or n % self.page:
            raise MisalignedRangeError(
                f"unaligned sysUnused: [0x{v:x}, +0x{n:x}) is not a multiple of the "
                f"physical page size {self.page}")
        b = self.b
        advice = b._advise_unused
        if b.debug.madvdontneed != 0 and advice != "unsupported":
            advice = "dontneed"
        done = False
        if advice == "free":
            done = self._madvise(v, n, MADV_FREE)
            if not done:
                b._advise_unused = advice = "dontneed"
        if not done and advice == "dontneed":
            done = self._madvise(v, n, MADV_DONTNEED)
            if not done:
                b._advise_unused = "unsupported"
        if not done and self._mmap_fixed(v, n, _RW) is None:
            self._name(v, n, "unused")
        if b.debug.harddecommit > 0:
            err = self._mmap_fixed(v, n, _NONE)
            if err is not None:
                raise RuntimeThrowError(
                    f"runtime: cannot disable permissions in address space "
                    f"(mmap(0x{v:x}, {n}, PROT_NONE) failed with {err})")
            self._name(v, n, "unused")

    def used(self, v: int, n: int) -> None:
        failing = self.b._take_failure("used")
        if self.b.debug.harddecommit <= 0:
            return
        if failing:
            self.b._log("mmap", v, n, _RW, _FIXED, "ENOMEM")
            raise SysOutOfMemoryError(
                f"runtime: out of memory (mmap(0x{v:x}, {n}) failed with ENOMEM: injected)")
        err = self._mmap_fixed(v, n, _RW)
        if err is not None:
            raise RuntimeThrowError(
                f"runtime: cannot remap pages in address space "
                f"(mmap(0x{v:x}, {n}) failed with {err})")
        self._name(v, n, "used")

    def huge_page(self, v: int, n: int) -> None:
        size = self.b.huge_page_size
        if size:
            beg, end = _up(v, size), _down(v + n, size)
            if beg < end:
                self._madvise(beg, end - beg, "MADV_HUGEPAGE")

    def no_huge_page(self, v: int, n: int) -> None:
        if v % self.page:
            raise MisalignedRangeError(f"unaligned sysNoHugePageOS: v=0x{v:x}")
        if not self.b.huge_page_size:  # a kernel without THP rejects the advice
            self.b._log("madvise", v, n, "MADV_NOHUGEPAGE", "EINVAL")
            return
        self._madvise(v, n, "MADV_NOHUGEPAGE")

    def huge_page_collapse(self, v: int, n: int) -> None:
        if v % self.page:
            raise MisalignedRangeError(f"unaligned sysHugePageCollapseOS: v=0x{v:x}")
        if self.b.huge_page_size:
            # Best effort and its result ignored, as in Go; the model does not collapse.
            self.b._log("madvise", v, n, "MADV_COLLAPSE")

    def free(self, v: int, n: int) -> None:
        v = v or 0
        if v % self.page or n <= 0:
            self.b._log("munmap", v, n, "EINVAL")
            return
        self.m.unmap(v, min(_up(v + n, self.page), self.m.top))
        self.b._log("munmap", v, n)

    def fault(self, v: int, n: int) -> None:
        b, m = self.b, self.m
        if v % self.page:
            b._log("mprotect", v, n, _NONE, "EINVAL")
            b._log("madvise", v, n, MADV_DONTNEED, "EINVAL")
            return
        hi = _up(v + n, self.page)
        # mprotect stops at the first hole; Go ignores the error either way.
        hole = m.first_unmapped(v, hi)
        m.set_prot(v, hi if hole is None else hole, False)
        b._log("mprotect", v, n, _NONE, *(() if hole is None else ("ENOMEM",)))
        if not self._madvise(v, n, MADV_DONTNEED):
            b.fault_kept_pages = True


class _Windows(_Personality):
    """``mem_windows.go``: owner values are the allocation bases."""

    def __init__(self, backend: "SimulatedBackend", mmap_base: int) -> None:
        super().__init__(backend, mmap_base)
        self.allocs: dict[int, int] = {}

    def mapped_is_accessible(self) -> bool:
        return False

    def released_is_accessible(self) -> bool:
        return False

    def need_zero_after_unused(self) -> bool:
        return True

    def _new_alloc(self, p: int, n: int, commit: bool) -> None:
        self.m.replace(p, p + n, commit, owner=p)
        self.allocs[p] = n

    def _place(self, n: int) -> int | None:
        return self.m.place(n, _WIN_GRANULARITY, self.mmap_base, top_down=False)

    def steal(self, v: int) -> None:
        if v % _WIN_GRANULARITY == 0 and self.m.is_free(v, v + self.page):
            self._new_alloc(v, self.page, False)
            self.b._log("VirtualAlloc", v, self.page, "MEM_RESERVE", _OTHER_THREAD)
            self.b.phantoms.append((v, self.page))

    def reserve(self, v: int | None, n: int, name: str) -> int | None:
        b = self.b
        n = _up(n, self.page)
        if n == 0 or b._take_failure("reserve"):
            b._log("VirtualAlloc", v or 0, n, "MEM_RESERVE", "ERROR_NOT_ENOUGH_MEMORY")
            return None
        p = None
        if v is not None:
            if v % _WIN_GRANULARITY == 0 and self.m.is_free(v, v + n):
                p = v
            else:
                b._log("VirtualAlloc", v, n, "MEM_RESERVE", "ERROR_INVALID_ADDRESS")
        if p is None:
            p = self._place(n)
        if p is None:
            b._log("VirtualAlloc", 0, n, "MEM_RESERVE", "ERROR_NOT_ENOUGH_MEMORY")
            return None
        self._new_alloc(p, n, False)
        b._log("VirtualAlloc", p, n, "MEM_RESERVE")
        return p

    def alloc(self, n: int, name: str) -> int | None:
        b, m = self.b, self.m
        n = _up(n, self.page)
        flags = "MEM_COMMIT|MEM_RESERVE"
        if n == 0 or b._take_failure("alloc"):
            b._log("VirtualAlloc", 0, n, flags, "ERROR_NOT_ENOUGH_MEMORY")
            return None
        if m.physical_memory is not None and m.accessible + n > m.physical_memory:
            b._log("VirtualAlloc", 0, n, flags, "ERROR_COMMITMENT_LIMIT")
            return None
        p = self._place(n)
        if p is None:
            b._log("VirtualAlloc", 0, n, flags, "ERROR_NOT_ENOUGH_MEMORY")
            return None
        self._new_alloc(p, n, True)
        b._log("VirtualAlloc", p, n, flags)
        return p

    def _in_one_alloc(self, v: int, n: int) -> bool:
        return self.m.owner.value_at(v) is not None and self.m.owner.run_end(v) >= v + n

    def _log_pieces(self, call: str, lo: int, hi: int, flags: str) -> None:
        """Log the calls Go's halving loop makes when a range spans several allocations."""
        log, page = self.b._log, self.page
        if self._in_one_alloc(lo, hi - lo):
            log(call, lo, hi - lo, flags)
            return
        log(call, lo, hi - lo, flags, "ERROR_INVALID_ADDRESS")
        v, k = lo, hi - lo
        while k > 0:
            small = k
            while small >= page and not self._in_one_alloc(v, small):
                log(call, v, small, flags, "ERROR_INVALID_ADDRESS")
                small = _down(small // 2, page)
            log(call, v, small, flags)
            v += small
            k -= small

    def _check_reserved(self, lo: int, hi: int, what: str) -> None:
        hole = self.m.first_unmapped(lo, hi)
        if hole is not None:
            raise RuntimeThrowError(
                f"runtime: failed to {what} pages ([0x{lo:x}, 0x{hi:x}): page 0x{hole:x} "
                f"is not reserved)")

    def used(self, v: int, n: int) -> None:
        b, m = self.b, self.m
        lo, hi = _down(v, self.page), _up(v + n, self.page)
        if b._take_failure("used"):
            b._log("VirtualAlloc", v, n, "MEM_COMMIT", "ERROR_NOT_ENOUGH_MEMORY")
            raise SysOutOfMemoryError(
                f"out of memory (VirtualAlloc(0x{v:x}, {n}, MEM_COMMIT): injected failure)")
        if lo >= hi:
            return
        self._check_reserved(lo, hi, "commit")
        new = m.count(m.prot, lo, hi, lambda acc: not acc)
        if m.physical_memory is not None and m.accessible + new > m.physical_memory:
            b._log("VirtualAlloc", v, n, "MEM_COMMIT", "ERROR_COMMITMENT_LIMIT")
            raise SysOutOfMemoryError(
                f"out of memory (committing {new} bytes at 0x{lo:x} would exceed the "
                f"simulated machine's physical_memory={m.physical_memory}; "
                f"{m.accessible} bytes are committed)")
        self._log_pieces("VirtualAlloc", lo, hi, "MEM_COMMIT")
        # Pages committed now were not resident, so they read as zero; committed pages
        # keep their contents.
        m.set_prot(lo, hi, True)

    def unused(self, v: int, n: int) -> None:
        lo, hi = _down(v, self.page), _up(v + n, self.page)
        if lo >= hi:
            return
        self._check_reserved(lo, hi, "decommit")
        self._log_pieces("VirtualFree", lo, hi, "MEM_DECOMMIT")
        self.m.drop(lo, hi)
        self.m.set_prot(lo, hi, False)

    fault = unused

    def free(self, v: int, n: int) -> None:
        size = self.allocs.pop(v, None) if v is not None else None
        if size is None:
            self.b._log("VirtualFree", v or 0, 0, "MEM_RELEASE", "ERROR_INVALID_PARAMETER")
            raise RuntimeThrowError(
                f"runtime: failed to release pages (VirtualFree(0x{v or 0:x}, 0, MEM_RELEASE) "
                f"of {n} bytes: not the base of an allocation)")
        self.m.unmap(v, v + size)
        self.b._log("VirtualFree", v, 0, "MEM_RELEASE")


class _Sbrk(_Personality):
    """``mem_sbrk.go``: the break, and Go's address-ordered first-fit free list."""

    def __init__(self, backend: "SimulatedBackend", base: int) -> None:
        super().__init__(backend, base)
        self.bloc = self.bloc_max = base
        # The free list as two parallel address-ordered lists.
        self.fl_addr: list[int] = []
        self.fl_size: list[int] = []

    def mapped_is_accessible(self) -> bool:
        return True

    def released_is_accessible(self) -> bool:
        return True

    def need_zero_after_unused(self) -> bool:
        return True

    def _round(self, n: int) -> int:
        return _up(n, self.page)

    def sbrk(self, n: int, tag: tuple = ()) -> int | None:
        n = self._round(n)
        bl = self.bloc
        if bl + n > self.bloc_max:
            if bl + n > self.m.top:
                self.b._log("sbrk", n, "ENOMEM")
                return None
            # The OS break grows: that memory is mapped and accessible from now on.
            self.m.owner.assign(self.bloc_max, bl + n, True)
            self.m.set_prot(self.bloc_max, bl + n, True)
            self.bloc_max = bl + n
            self.b._log("brk", self.bloc_max)
        self.bloc += n
        self.b._log("sbrk", n, *tag)
        return bl

    def alloc_no_grow(self, n: int) -> int | None:
        n = self._round(n)
        for i, size in enumerate(self.fl_size):
            if size >= n:
                if size == n:
                    del self.fl_size[i]
                    return self.fl_addr.pop(i)
                self.fl_size[i] = size - n  # hand out the tail, the header stays put
                return self.fl_addr[i] + size - n
        return None

    def mem_alloc(self, n: int) -> int | None:
        p = self.alloc_no_grow(n)
        return p if p is not None else self.sbrk(n)

    def mem_free(self, ap: int, n: int) -> None:
        n = self._round(n)
        self.m.zero_resident(ap, ap + n)
        addrs, sizes = self.fl_addr, self.fl_size
        i = bisect_left(addrs, ap)
        if (i > 0 and addrs[i - 1] + sizes[i - 1] > ap) or (i < len(addrs) and ap + n > addrs[i]):
            # Go's memCheck (memDebug) would catch this corruption later.
            raise RuntimeThrowError(
                f"mem: overlapping blocks (freeing [0x{ap:x}, 0x{ap + n:x}) onto the free list)")
        if i < len(addrs) and ap + n == addrs[i]:
            n += sizes[i]
            del addrs[i], sizes[i]
        if i > 0 and addrs[i - 1] + sizes[i - 1] == ap:
            sizes[i - 1] += n
        else:
            addrs.insert(i, ap)
            sizes.insert(i, n)

    # -- the *OS functions --------------------------------------------------------------
    def steal(self, v: int) -> None:
        if v == self.bloc:
            p = self.sbrk(self.page, (_OTHER_THREAD,))
            if p is not None:
                self.b.phantoms.append((p, self.page))

    def reserve(self, v: int | None, n: int, name: str) -> int | None:
        if self.b._take_failure("reserve"):
            return None
        p = None
        if v == self.bloc:
            p = self.sbrk(n)
        if p is None and v is None:
            p = self.mem_alloc(n)
        return p

    def alloc(self, n: int, name: str) -> int | None:
        if self.b._take_failure("alloc"):
            return None
        return self.mem_alloc(n)

    def free(self, v: int, n: int) -> None:
        if not v:
            return
        if v + n == self.bloc:
            self.m.zero_resident(v, v + n)
            self.bloc -= n  # the OS break stays where it is
        else:
            self.mem_free(v, n)

    def reserve_aligned(self, size: int, align: int) -> tuple[int | None, int]:
        if self.b._take_failure("reserve"):
            return None, 0
        base = self.alloc_no_grow(size + align)
        if base is not None:
            start = _up(base, align)
            if start > base:
                self.mem_free(base, start - base)
            end = start + size
            if base + size + align > end:
                self.mem_free(end, base + size + align - end)
            return start, size
        p = _up(self.bloc, align)
        r = self.sbrk(p + size - self.bloc)
        if r is None:
            return None, 0
        if p > r:
            self.mem_free(r, p - r)
        return p, size

    def used(self, v: int, n: int) -> None:
        self.b._take_failure("used")

    def unused(self, v: int, n: int) -> None:
        pass

    def fault(self, v: int, n: int) -> None:
        pass


# ---------------------------------------------------------------------------------------
# The backend
# ---------------------------------------------------------------------------------------
class SimulatedBackend(Backend):
    """A deterministic simulated OS (personality ``linux``, ``windows`` or ``sbrk``).

    Test hooks: :meth:`fail_next` (out-of-memory injection), ``physical_memory`` (a
    budget: committed bytes on Windows, resident bytes touched through :meth:`buffer`
    elsewhere), :meth:`steal_next_reservations` (the race Go's Windows
    ``sysReserveAligned`` retries on), ``supported_advice`` (remove ``MADV_FREE`` or
    ``MADV_DONTNEED`` to make that advice fail). Evidence: :meth:`inspect`,
    :meth:`resident_bytes`, :meth:`lazyfree_bytes` and ``calls``, the log of the calls
    the real OS would have seen: ``(call, addr, size, detail, ...)``, where ``addr`` is
    the address acted on (the result, for calls that choose one); extra items are the
    flag ``"MAP_FIXED"``, ``"other thread"`` for a stolen hint, and last, when the call
    failed, the error name (``"ENOMEM"``, ``"ERROR_INVALID_ADDRESS"``, …). sbrk logs
    ``("sbrk", n)`` and ``("brk", new_break)``.
    """

    def __init__(self, debug: DebugSettings, personality: str = "linux", *,
                 address_bits: int = 47, physical_memory: int | None = None,
                 phys_page_size: int = 4096, huge_page_size: int | None = None,
                 seed: int = 0, sbrk_base: int = 0x1000_0000,
                 call_log_size: int = 10000, segment_size: int = _GIB) -> None:
        """See the class docstring; ``seed`` != 0 randomises the mmap base (like ASLR).

        ``segment_size`` is the span of one storage segment; :meth:`buffer` cannot
        cross a segment boundary.
        """
        super().__init__(debug)
        if personality not in PERSONALITIES:
            raise ValueError(f"personality must be one of {PERSONALITIES}, not {personality!r}")
        if not 20 <= address_bits <= 64:
            raise ValueError(f"address_bits must be in [20, 64], not {address_bits}")
        if not (_is_pow2(phys_page_size) and 4096 <= phys_page_size <= 512 * 1024):
            raise ValueError(f"phys_page_size must be a power of two in [4 KiB, 512 KiB], "
                             f"not {phys_page_size}")
        if huge_page_size is None:
            huge_page_size = 2 << 20 if personality == "linux" else 0
        if huge_page_size and (personality != "linux" or not _is_pow2(huge_page_size)
                               or huge_page_size < phys_page_size):
            raise ValueError(f"huge_page_size {huge_page_size} is not possible for "
                             f"personality {personality!r} with {phys_page_size}-byte pages")
        if physical_memory is not None and physical_memory < 0:
            raise ValueError("physical_memory must be None or >= 0")
        if not _is_pow2(segment_size) or segment_size < phys_page_size:
            raise ValueError("segment_size must be a power of two >= phys_page_size")
        top = 1 << address_bits
        if personality == "sbrk" and (sbrk_base % phys_page_size or not 0 < sbrk_base < top):
            raise ValueError(f"sbrk_base 0x{sbrk_base:x} must be page aligned and inside "
                             f"the address space")
        self.personality = personality
        self.name = f"simulated-{personality}"
        self.phys_page_size = phys_page_size
        self.huge_page_size = huge_page_size
        self.address_bits = address_bits
        self.seed = seed
        self.is_sbrk = personality == "sbrk"
        self.releases_whole_reservations_only = personality == "windows"
        #: the OS calls made, newest last (bounded)
        self.calls: deque[tuple] = deque(maxlen=call_log_size)
        #: Linux: the madvise advice the simulated kernel accepts (tests remove some)
        self.supported_advice: set[str] = {MADV_FREE, MADV_DONTNEED}
        self.fault_kept_pages = False  # a fault's MADV_DONTNEED was refused
        #: regions reserved by the phantom "other thread" of steal_next_reservations
        self.phantoms: list[tuple[int, int]] = []
        self._advise_unused = "free"
        self._lock = threading.Lock()
        self._failures = dict.fromkeys(FAILABLE_OPS, 0)
        self._steals = 0
        self._space = _AddressSpace(phys_page_size, top, segment_size, physical_memory)
        if personality == "sbrk":
            self._os: Any = _Sbrk(self, sbrk_base)
        else:
            offset = 0
            if seed:
                # ASLR-like: up to 2**28 pages (1 TiB with 4 KiB pages), at most top/4.
                pages = 1 << min(28, address_bits - 2 - phys_page_size.bit_length() + 1)
                offset = random.Random(seed).randrange(pages) * phys_page_size
            if personality == "linux":
                self._os = _Linux(self, top - _up(offset, phys_page_size))
            else:
                low = self._space.min_addr
                self._os = _Windows(self, min(low + _up(offset, _WIN_GRANULARITY), top // 2))

    def __repr__(self) -> str:
        return (f"<SimulatedBackend {self.personality} {self.address_bits}-bit "
                f"resident={self._space.resident} calls={len(self.calls)}>")

    # -- internals used by the personalities ---------------------------------------------
    def _log(self, *entry: Any) -> None:
        self.calls.append(entry)

    def _take_failure(self, op: str) -> bool:
        if self._failures[op]:
            self._failures[op] -= 1
            return True
        return False

    def _maybe_steal(self, v: int | None) -> None:
        if v is not None and self._steals:
            self._steals -= 1
            self._os.steal(v)

    # -- test hooks -----------------------------------------------------------------------
    def fail_next(self, op: str, count: int = 1) -> None:
        """Make the next ``count`` calls of ``op`` fail as the OS would (0 cancels).

        ``reserve``/``alloc`` return None (``reserve_aligned_sbrk`` counts as a
        ``reserve``); ``map`` raises :class:`SysOutOfMemoryError`; ``used`` raises it on
        Windows and on Linux with ``harddecommit`` (elsewhere the call is counted and
        does nothing, as there is no system call to fail).
        """
        if op not in FAILABLE_OPS:
            raise ValueError(f"op must be one of {FAILABLE_OPS}, not {op!r}")
        if count < 0:
            raise ValueError("count must be >= 0")
        with self._lock:
            self._failures[op] = count

    def steal_next_reservations(self, count: int) -> None:
        """For the next ``count`` hinted reserves, a phantom thread first takes one page
        at the hint, so the reservation lands elsewhere (recorded in ``phantoms``)."""
        if count < 0:
            raise ValueError("count must be >= 0")
        with self._lock:
            self._steals = count

    @property
    def advise_unused(self) -> str | None:
        """Linux: Go's process-global ``adviseUnused`` ("free", "dontneed" or
        "unsupported"); it only ever moves down. None for other personalities."""
        return self._advise_unused if self.personality == "linux" else None

    @advise_unused.setter
    def advise_unused(self, value: str) -> None:
        if value not in _ADVICE_STATES:
            raise ValueError(f"advise_unused must be one of {_ADVICE_STATES}")
        self._advise_unused = value

    @property
    def physical_memory(self) -> int | None:
        """The simulated machine's memory budget in bytes (None: unlimited)."""
        return self._space.physical_memory

    @physical_memory.setter
    def physical_memory(self, value: int | None) -> None:
        with self._lock:
            self._space.physical_memory = value

    def _sbrk_state(self) -> _Sbrk:
        if not isinstance(self._os, _Sbrk):
            raise AttributeError(f"{self.name} has no sbrk break")
        return self._os

    @property
    def bloc(self) -> int:
        """sbrk: the runtime's break (may go down)."""
        return self._sbrk_state().bloc

    @property
    def bloc_max(self) -> int:
        """sbrk: the OS break (only grows)."""
        return self._sbrk_state().bloc_max

    @property
    def free_list(self) -> list[tuple[int, int]]:
        """sbrk: the free list as address-ordered ``(addr, size)`` blocks."""
        state = self._sbrk_state()
        with self._lock:
            return list(zip(state.fl_addr, state.fl_size))

    # -- the Backend contract -------------------------------------------------------------
    @property
    def mapped_is_accessible(self) -> bool:
        """True on linux and sbrk; False on windows (reserved, not committed)."""
        return self._os.mapped_is_accessible()

    @property
    def released_is_accessible(self) -> bool:
        """True on linux (unless harddecommit) and sbrk; False on windows (decommitted)."""
        return self._os.released_is_accessible()

    def need_zero_after_unused(self) -> bool:
        """linux: ``madvdontneed == 0``; windows, sbrk: True."""
        return self._os.need_zero_after_unused()

    def reserve(self, v: int | None, n: int, vma_name: str = "") -> int | None:
        """``sysReserveOS``: inaccessible address space, at hint v when it is free."""
        with self._lock:
            self._maybe_steal(v)
            return self._os.reserve(v, n, vma_name)

    def alloc(self, n: int, vma_name: str = "") -> int | None:
        """``sysAllocOS``: zeroed, accessible memory anywhere, or None."""
        with self._lock:
            return self._os.alloc(n, vma_name)

    def map(self, v: int, n: int, vma_name: str = "") -> None:
        """``sysMapOS``: linux MAP_FIXED read-write mapping; a no-op elsewhere."""
        with self._lock:
            self._os.map(v, n, vma_name)

    def used(self, v: int, n: int) -> None:
        """``sysUsedOS``: commit (windows), remap (linux + harddecommit), else nothing."""
        with self._lock:
            self._os.used(v, n)

    def unused(self, v: int, n: int) -> None:
        """``sysUnusedOS``: madvise chain (linux), decommit (windows), nothing (sbrk)."""
        with self._lock:
            self._os.unused(v, n)

    def fault(self, v: int, n: int) -> None:
        """``sysFaultOS``: make the range fault (mprotect+DONTNEED / decommit)."""
        with self._lock:
            self._os.fault(v, n)

    @property
    def fault_releases_pages(self) -> bool:
        """False once a linux-personality fault's MADV_DONTNEED was refused."""
        return not self.fault_kept_pages

    def free(self, v: int, n: int) -> None:
        """``sysFreeOS``: munmap (any sub-range), release a whole allocation, or sbrk free."""
        with self._lock:
            self._os.free(v, n)

    def huge_page(self, v: int, n: int) -> None:
        """``sysHugePageOS``: MADV_HUGEPAGE on the huge pages inside the range (linux)."""
        with self._lock:
            self._os.huge_page(v, n)

    def no_huge_page(self, v: int, n: int) -> None:
        """``sysNoHugePageOS``: MADV_NOHUGEPAGE (linux)."""
        with self._lock:
            self._os.no_huge_page(v, n)

    def huge_page_collapse(self, v: int, n: int) -> None:
        """``sysHugePageCollapseOS``: best-effort MADV_COLLAPSE, logged only (linux)."""
        with self._lock:
            self._os.huge_page_collapse(v, n)

    def reserve_aligned_sbrk(self, size: int, align: int) -> tuple[int | None, int]:
        """``sysReserveAlignedSbrk``: ``(addr, size)`` or ``(None, 0)`` (sbrk only)."""
        if not self.is_sbrk:
            return super().reserve_aligned_sbrk(size, align)
        if not _is_pow2(align):
            raise ValueError(f"align must be a power of two, not {align}")
        with self._lock:
            return self._os.reserve_aligned(size, align)

    def buffer(self, v: int, n: int) -> memoryview:
        """A writable view of [v, v+n); its pages count as touched (resident).

        Raises :class:`InaccessibleMemoryError` for pages that are unmapped or
        inaccessible, or a range crossing a storage segment boundary, and
        :class:`SysOutOfMemoryError` when the touch exceeds ``physical_memory``.
        """
        with self._lock:
            return self._space.touch(v, n)

    def inspect(self, v: int, n: int) -> OsPages:
        """Per-page mapped/accessible/resident/huge_advised and lazy-free bytes of [v, v+n)."""
        with self._lock:
            return self._space.inspect(v, n)

    # -- residency --------------------------------------------------------------------------
    def resident_bytes(self) -> int:
        """Bytes resident in the whole simulated process (lazy-free pages included)."""
        return self._space.resident

    def lazyfree_bytes(self) -> int:
        """Bytes ``MADV_FREE``'d and not yet touched again or reclaimed."""
        return self._space.lazyfree

    def committed_bytes(self) -> int:
        """Bytes accessible now (on windows: the commit charge)."""
        return self._space.accessible

    def reclaim(self) -> int:
        """Memory pressure: drop every lazy-free page (zeroed, not resident); returns bytes."""
        with self._lock:
            return self._space.reclaim()

    def close(self) -> None:
        """Drop the simulated contents; idempotent. Pages read as zero afterwards."""
        with self._lock:
            space = self._space
            for s, e, st in space.res.runs(0, space.top):
                if st:
                    space.res.assign(s, e, _OUT)
            space.resident = space.lazyfree = 0
            space.seg_resident.clear()
            space.segments.clear()
