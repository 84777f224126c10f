"""Hypothesis state machines for ``sysmem``: random sequences of all thirteen operations.

Each machine drives one ``SysMem`` (real Linux memory, or the simulated OS with one of
its three personalities) and keeps its OWN reference model: for every live region, the
state, the stat attribution, the expected contents and a few OS-level expectations of
every page, plus the value every ``SysMemStat`` must read. After every step it compares
``mapped_ready`` (= Ready bytes), every stat (and every stat group = the bytes attributed
to it), the root-region registry, the live views and, with the ledger, ``runs()`` and
``state_bytes()`` with that model; then ``sm.check()`` (accounting = ledger, ledger = what
the kernel or the simulation reports; the OS part for the regions the step acted on,
and for all regions every few steps and at teardown, since each region costs a read
of ``/proc/self/smaps``).

Rules make legal calls (ranges drawn from the model: a Ready range for ``sys_unused``, a
Prepared/Ready mix with the exact prepared count for ``sys_used``, a whole region for
``sys_free``…; ranges may span adjacent regions, as the ledger keeps one address space)
and illegal ones (sub-regions, wrong counts, wrong states, wrong stat groups, unaligned
or non-positive ranges, never-owned addresses, transitions under live views), which must
raise the documented exception class and change nothing. Views are written with
per-page patterns that must survive (or read as zero / stale, as
``need_zero_after_sys_unused()`` allows). On the simulated OS, injected failures,
stolen reservations (Windows ``sys_reserve_aligned`` retries), memory pressure and a
kernel without ``MADV_FREE``/``MADV_DONTNEED`` are part of the mix.

Variants (one ``TestCase`` class each): Linux with Go's defaults, ``madvdontneed=0``,
``harddecommit=1`` and ``ledger=False``; simulated ``linux`` (also ``madvdontneed=0``,
``harddecommit=1``, ``ledger=False``), ``windows`` and ``sbrk``; longer runs are marked
``slow``.

Bugs the machines found have regression tests at the end of the file.
"""

from __future__ import annotations

import re
import sys
from bisect import bisect_right
from collections import Counter
from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import HealthCheck, note, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from sysmem import TRANSITIONS, State, SysMem, SysMemStat
from sysmem.errors import (
    AccountingMismatchError,
    FrozenSettingError,
    IllegalTransitionError,
    InaccessibleMemoryError,
    LedgerDisabledError,
    LiveViewError,
    MisalignedRangeError,
    NotReservedError,
    PartialRegionError,
    PreparedCountError,
    RootRegionError,
    RuntimeThrowError,
    StatOverflowError,
    SysOutOfMemoryError,
)

R, P, Y = State.RESERVED, State.PREPARED, State.READY

ON_LINUX = sys.platform.startswith("linux")




def _thp_mode() -> str:
    try:
        with open("/sys/kernel/mm/transparent_hugepage/enabled") as f:
            return re.search(r"\[(\w+)\]", f.read()).group(1)
    except (OSError, AttributeError):
        return "never"


THP_ALWAYS = ON_LINUX and _thp_mode() == "always"


# ---------------------------------------------------------------------------------------
# The reference model
# ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Stale:
    """A page that reads either as its old byte pattern ``b`` or as zero (MADV_FREE, sbrk)."""

    b: int


# Page contents in the model: an int (every byte of the page equals it), Stale(b), or
# None (unknown: the platform gives no guarantee).
ANY = None


class RegionModel:
    """One live region: per-page state, stat name, contents and OS expectations."""

    def __init__(self, base: int, npages: int, state: State, stat: str | None, kind: str):
        self.base = base
        self.npages = npages
        self.kind = kind
        self.states = [state] * npages
        self.stats = [stat] * npages
        self.content: list = [0] * npages
        # Linux harddecommit: Prepared pages keep the kernel's RW protection when they
        # come from sys_map, lose it when they come from sys_unused.
        self.krw = [state is not R] * npages
        # Prepared pages that a (collapsed or faulted-in) huge page may keep resident.
        self.maybe_res = [False] * npages

    def runs_where(self, states: tuple[State, ...]) -> list[tuple[int, int]]:
        """Maximal page runs [i, j) whose states are all in ``states``."""
        out, i, n = [], 0, self.npages
        while i < n:
            if self.states[i] in states:
                j = i
                while j < n and self.states[j] in states:
                    j += 1
                out.append((i, j))
                i = j
            else:
                i += 1
        return out


# ---------------------------------------------------------------------------------------
# The machine
# ---------------------------------------------------------------------------------------
MAX_REGIONS = 8
MAX_PAGES = 64
FULL_CHECK_EVERY = 8
STAT_NAMES = ("other_sys", "gc_misc_sys", "heap_in_use", "heap_free", "heap_released", "lab_custom")
HEAP_STATS = ("heap_in_use", "heap_free", "heap_released")  # one group: the heap moves bytes among them
SMALL_PAGES = st.integers(1, 8) | st.integers(1, MAX_PAGES)
ALL = (R, P, Y)
#: the page states each ranged operation accepts (Go's mem.go, sysmem.TRANSITIONS)
ACCEPTS = {"map": (R,), "used": (P, Y), "unused": (Y,), "fault": (Y,), "view": (Y,),
           "huge_page": ALL, "no_huge_page": ALL, "huge_page_collapse": ALL}


#: a raw index; reduced modulo the number of live choices, so that what is drawn has the
#: same shape whatever addresses the OS hands out (Hypothesis replays examples and
#: insists that draws keep their shape; real Linux places and merges regions at will)
_INDEX = st.integers(0, (1 << 16) - 1)


def _choose(data, seq, label: str):
    """One element of ``seq`` (non-empty), drawn with address-independent constraints."""
    seq = list(seq)
    return seq[data.draw(_INDEX, label=label) % len(seq)]


def _int(data, lo: int, hi: int, label: str) -> int:
    """An int in [lo, hi], drawn with address-independent constraints (shrinks to lo)."""
    return lo + data.draw(_INDEX, label=label) % (hi - lo + 1)


def _has(*states: State):
    """Precondition: some live page is in one of ``states``."""
    return lambda self: any(s in states for r in self.regions.values() for s in r.states)


def _has_region(pred):
    """Precondition: some live region satisfies ``pred``."""
    return lambda self: any(pred(r) for r in self.regions.values())


def _group(name: str | None) -> str | None:
    return "heap" if name in HEAP_STATS else name


def _freeable(r: RegionModel) -> bool:
    """sys_free's condition: all Ready, all counted in one stat group."""
    return all(s is Y for s in r.states) and len({_group(s) for s in r.stats}) == 1


def _all_reserved(r: RegionModel) -> bool:
    return all(s is R for s in r.states)


class SysMemMachine(RuleBasedStateMachine):
    """Random sequences of all ``mem.go`` operations against an independent model."""

    BACKEND = "linux"
    PERSONALITY: str | None = None
    GODEBUG = ""
    LEDGER = True
    #: allow one huge-page-aligned region of one huge page (so huge-page advice acts)
    HUGE = True

    def __init__(self) -> None:
        super().__init__()
        options = {"personality": self.PERSONALITY} if self.PERSONALITY else {}
        self.sm = SysMem(self.BACKEND, ledger=self.LEDGER, godebug=self.GODEBUG, **options)
        sm = self.sm
        self.ps = sm.page_size
        self.flavor = self.PERSONALITY or "linux"
        self.real_linux = self.BACKEND == "linux"
        self.harddecommit = self.flavor == "linux" and bool(sm.debug.harddecommit)
        self.need_zero = sm.need_zero_after_sys_unused()
        expected_need_zero = (sm.debug.madvdontneed == 0) if self.flavor == "linux" else True
        assert self.need_zero == expected_need_zero
        # Released (sys_unused) memory stays accessible on Linux without harddecommit and
        # on sbrk; there views may outlive sys_unused. Elsewhere sys_unused needs no views.
        self.released_accessible = self.flavor == "sbrk" or (
            self.flavor == "linux" and not self.harddecommit
        )
        # Released pages may stay resident (MADV_FREE, sbrk's no-op).
        self.lazy_release = self.need_zero and self.released_accessible
        self.huge_size = sm.backend.huge_page_size
        self.stats: dict[str, SysMemStat] = {
            name: sm.stat(name) for name in STAT_NAMES if name != "lab_custom"
        }
        self.stats["lab_custom"] = SysMemStat("lab_custom")  # a stat SysMem never saw
        for name, stat in self.stats.items():
            assert stat.group == _group(name), (name, stat.group)
        #: what every stat must read (exact), kept by the model alone
        self.expected = dict.fromkeys(STAT_NAMES, 0)
        self.regions: dict[int, RegionModel] = {}
        # (start, end, object keeping the view's memory alive)
        self.views: list[tuple[int, int, np.ndarray]] = []
        self.released: list[int] = []  # bases given back (hints that may be free again)
        self.pattern_seed = 0
        self.step = 0
        self.touched: set[int] = set()  # bases of regions the current step acted on

    # -- the model's address space -------------------------------------------------------
    def _end(self, r: RegionModel) -> int:
        return r.base + r.npages * self.ps

    def _locate(self, addr: int) -> tuple[RegionModel, int] | None:
        """The region and page index holding ``addr``, or None (not owned)."""
        bases = sorted(self.regions)
        i = bisect_right(bases, addr) - 1
        if i >= 0:
            r = self.regions[bases[i]]
            if addr < self._end(r):
                return r, (addr - r.base) // self.ps
        return None

    def _pages(self, v: int, n: int) -> list[tuple[RegionModel, int] | None]:
        """(region, page index) of every page of [v, v+n); None where nothing is owned."""
        out = [self._locate(a) for a in range(v, v + n, self.ps)]
        self.touched.update(p[0].base for p in out if p)
        return out

    def _owned(self, a: int, b: int) -> bool:
        return any(r.base < b and a < self._end(r) for r in self.regions.values())

    def _runs(self, states: tuple[State, ...]) -> list[tuple[int, int]]:
        """Maximal address runs [v, e) of owned pages whose states are in ``states``
        (runs continue across adjacent regions: the ledger keeps one address space)."""
        out: list[list[int]] = []
        for base in sorted(self.regions):
            r = self.regions[base]
            for i, j in r.runs_where(states):
                v, e = r.base + i * self.ps, r.base + j * self.ps
                if out and out[-1][1] == v:
                    out[-1][1] = e
                else:
                    out.append([v, e])
        return [(v, e) for v, e in out]

    def _pick(self, data, states: tuple[State, ...], label: str) -> tuple[int, int] | None:
        """A range [v, v+n) of owned pages all in ``states``, or None."""
        runs = self._runs(states)
        if not runs:
            return None
        v, e = _choose(data, runs, f"{label} run")
        a, b = self._subrange(data, 0, (e - v) // self.ps, label)
        return v + a * self.ps, (b - a) * self.ps

    def _subrange(self, data, i: int, j: int, label="pages") -> tuple[int, int]:
        """Pages [a, b) with i <= a < b <= j."""
        if data.draw(st.booleans(), label=f"{label}: whole run"):
            return i, j
        a = _int(data, i, j - 1, f"{label}: first")
        b = _int(data, a + 1, min(j, a + 2 * MAX_PAGES), f"{label}: end")
        return a, b

    def _region(self, data, pred=lambda r: True, label="region") -> RegionModel | None:
        bases = sorted(b for b, r in self.regions.items() if pred(r))
        if not bases:
            return None
        base = _choose(data, bases, label)
        self.touched.add(base)
        return self.regions[base]

    def _stat_of(self, data, label="stat") -> str:
        return _choose(data, STAT_NAMES, label)

    def _unowned_addr(self, data) -> int:
        ps = self.ps
        cands = [0x10000, 0x7000_0000, 1 << 44]
        for r in self.regions.values():
            cands += [r.base - 64 * ps, self._end(r) + 64 * ps]
        cands += self.released
        cands = [c for c in cands if c > 0 and not self._owned(c, c + ps)]
        return _choose(data, sorted(set(cands)), "unowned")

    def _overlaps_view(self, v: int, n: int) -> bool:
        return any(s < v + n and v < e for s, e, _ in self.views)

    def _add_region(self, p: int, nbytes: int, state: State, stat: str | None, kind: str):
        ps = self.ps
        assert p % ps == 0, f"{kind} returned unaligned {p:#x}"
        assert nbytes % ps == 0
        assert not self._owned(p, p + nbytes), (
            f"{kind} returned [{p:#x}, +{nbytes:#x}) overlapping a live region")
        r = RegionModel(p, nbytes // ps, state, stat, kind)
        if THP_ALWAYS and self.real_linux:
            r.maybe_res = [True] * r.npages
        self.regions[p] = r
        self.touched.add(p)
        if p in self.released:
            self.released.remove(p)
        note(f"{kind} -> region [{p:#x}, +{nbytes // ps} pages)")
        return r

    def _forget_region(self, r: RegionModel) -> None:
        del self.regions[r.base]
        self.released = (self.released + [r.base])[-4:]

    def _hint(self, data) -> int | None:
        """A hint for sys_reserve[_aligned]: nothing, a freed base, past a region, far away."""
        kind = _choose(data, ["none", "zero", "far", "unaligned", "released", "after"], "hint kind")
        if (kind == "released" and not self.released) or (kind == "after" and not self.regions):
            kind = "none"
        ps = self.ps
        if kind == "none":
            return None
        if kind == "zero":
            return 0
        if kind == "far":
            return (0x2A_0000_0000 + _int(data, 0, 255, "far") * (1 << 21)) & ~(ps - 1)
        if kind == "unaligned":
            return 0x2B_0000_0000 + _int(data, 1, ps - 1, "offset")
        if kind == "released":
            return _choose(data, self.released, "released base")
        return self._end(self.regions[_choose(data, sorted(self.regions), "after region")])

    def _expect(self, exc: type[BaseException], fn, *args, exact: bool = True) -> None:
        """Call ``fn``; require it to raise ``exc`` (exactly that class unless not ``exact``)."""
        try:
            fn(*args)
        except exc as e:
            if exact:
                assert type(e) is exc, f"{fn.__name__}: wanted {exc.__name__}, got {type(e).__name__}: {e}"
            note(f"{fn.__name__} raised {type(e).__name__}: {e}")
            del e
            return
        shown = tuple(hex(a) if isinstance(a, int) else a for a in args)
        pytest.fail(f"{fn.__name__}{shown} did not raise {exc.__name__}")

    def _next_pattern(self, npages: int) -> np.ndarray:
        self.pattern_seed += 1
        return ((np.arange(npages) * 7 + self.pattern_seed * 13) % 255 + 1).astype(np.uint8)

    # -- contents --------------------------------------------------------------------------
    def _check_contents(self, v: int, n: int) -> None:
        """Read Ready pages [v, v+n) through a temporary view; compare with the model."""
        ps, npages = self.ps, n // self.ps
        arr = self.sm.view(v, n)
        pages = arr.reshape(npages, ps)
        lo, hi = pages.min(axis=1), pages.max(axis=1)
        del pages, arr
        for k, (r, i) in enumerate(self._pages(v, n)):
            want = r.content[i]
            got = (int(lo[k]), int(hi[k]))
            where = f"page {i} of region {r.base:#x} reads {got[0]}..{got[1]}"
            if want is ANY:
                continue
            if isinstance(want, Stale):
                assert got[0] == got[1] and got[0] in (0, want.b), f"{where}: wanted all {want.b} or all 0"
            else:
                assert got == (want, want), f"{where}: wanted all {want}"

    def _released_content(self, c):
        """What a page holding ``c`` may read as after sys_unused (then sys_used)."""
        if not self.need_zero:
            return 0  # MADV_DONTNEED: fresh zero pages
        if self.flavor in ("linux", "sbrk"):
            # MADV_FREE keeps the old data until the kernel reclaims it; sbrk keeps it.
            return Stale(c) if isinstance(c, int) else c
        return ANY

    def _lacks_dontneed(self) -> bool:
        return (self.BACKEND == "simulated" and self.flavor == "linux"
                and "MADV_DONTNEED" not in self.sm.backend.supported_advice)

    def _faulted_content(self, c):
        if self.flavor == "linux":
            return 0  # MADV_DONTNEED after the mprotect
        if self.flavor == "sbrk":
            return Stale(c) if isinstance(c, int) else c  # sysFaultOS is a no-op there
        return ANY

    # ==================================================================================
    # Rules: None → Ready / Reserved
    # ==================================================================================
    @precondition(lambda self: len(self.regions) < MAX_REGIONS)
    @rule(data=st.data())
    def alloc(self, data):
        npages = data.draw(SMALL_PAGES, label="pages")
        stat = self._stat_of(data)
        p = self.sm.sys_alloc(npages * self.ps, self.stats[stat], "lab alloc")
        if p is None:
            return
        self.expected[stat] += npages * self.ps
        self._add_region(p, npages * self.ps, Y, stat, "sys_alloc")
        self._check_contents(p, npages * self.ps)  # sysAlloc returns zeroed memory

    @precondition(lambda self: len(self.regions) < MAX_REGIONS)
    @rule(data=st.data())
    def reserve(self, data):
        npages = data.draw(SMALL_PAGES, label="pages")
        hint = self._hint(data)
        p = self.sm.sys_reserve(hint, npages * self.ps, "lab reservation")
        if p is None:
            return
        self._add_region(p, npages * self.ps, R, None, "sys_reserve")

    @precondition(lambda self: len(self.regions) < MAX_REGIONS)
    @rule(data=st.data())
    def reserve_aligned(self, data):
        ps = self.ps
        size = data.draw(SMALL_PAGES, label="pages") * ps
        align = (1 << _int(data, 0, 6, "log2 align pages")) * ps
        hint = self._hint(data)
        if self.flavor == "sbrk" and hint:
            self._expect(RuntimeThrowError, self.sm.sys_reserve_aligned, hint, size, align)
            return
        p, n = self.sm.sys_reserve_aligned(hint, size, align, "lab aligned")
        self._record_aligned(p, n, size, align)

    @precondition(lambda self: len(self.regions) < MAX_REGIONS and self.HUGE
                  and not any(r.kind == "huge" for r in self.regions.values()))
    @rule()
    def reserve_huge(self):
        """A region of one huge page, huge-page aligned: the hint operations bite here."""
        h = self.huge_size or 512 * self.ps
        p, n = self.sm.sys_reserve_aligned(None, h, h, "lab huge")
        r = self._record_aligned(p, n, h, h)
        if r is not None:
            r.kind = "huge"

    def _record_aligned(self, p, n, size, align):
        if p is None:
            assert n == 0
            return None
        assert p % align == 0, f"sys_reserve_aligned returned {p:#x}, not {align:#x}-aligned"
        if self.flavor == "sbrk":
            assert n == size
        else:
            assert n in (size, size + align), f"reserved {n:#x} for size {size:#x} align {align:#x}"
        return self._add_region(p, n, R, None, "sys_reserve_aligned")

    # ==================================================================================
    # Rules: Reserved → Prepared ⇄ Ready → Reserved
    # ==================================================================================
    @precondition(_has(R))
    @rule(data=st.data())
    def map(self, data):
        pick = self._pick(data, (R,), "map")
        if pick is None:
            return
        v, n = pick
        stat = self._stat_of(data)
        self.sm.sys_map(v, n, self.stats[stat], "lab map")
        self.expected[stat] += n
        for r, k in self._pages(v, n):
            r.states[k], r.stats[k], r.krw[k] = P, stat, True
            if self.flavor == "linux":
                r.content[k] = 0  # mmap(MAP_FIXED) puts fresh zero pages there
                if r.kind != "huge" and not THP_ALWAYS:
                    r.maybe_res[k] = False

    @precondition(_has(P))
    @rule(data=st.data())
    def used(self, data):
        pick = self._pick(data, (P, Y), "used")
        if pick is None:
            return
        v, n = pick
        pages = self._pages(v, n)
        prepared = sum(r.states[k] is P for r, k in pages) * self.ps
        if self.harddecommit and self._overlaps_view(v, n):
            # sysUsedOS would map fresh pages under the view: refused, nothing changes
            self._expect(LiveViewError, self.sm.sys_used, v, n, prepared)
            return
        self.sm.sys_used(v, n, prepared)
        for r, k in pages:
            if self.harddecommit:
                r.content[k] = 0  # Go's sysUsedOS re-mmaps the whole range, Ready parts too
            r.states[k], r.krw[k] = Y, True

    @precondition(_has(Y))
    @rule(data=st.data())
    def unused(self, data):
        pick = self._pick(data, (Y,), "unused")
        if pick is None:
            return
        v, n = pick
        if not self.released_accessible and self._overlaps_view(v, n):
            self._expect(LiveViewError, self.sm.sys_unused, v, n)
            return
        self.sm.sys_unused(v, n)
        for r, k in self._pages(v, n):
            r.content[k] = self._released_content(r.content[k])
            r.states[k] = P
            r.krw[k] = not self.harddecommit
            if not self.lazy_release and r.kind != "huge":
                r.maybe_res[k] = False

    @precondition(_has(Y))
    @rule(data=st.data())
    def fault(self, data):
        pick = self._pick(data, (Y,), "fault")
        if pick is None:
            return
        v, n = pick
        if self._overlaps_view(v, n):
            self._expect(LiveViewError, self.sm.sys_fault, v, n)
            return
        self.sm.sys_fault(v, n)
        # sysFaultOS ignores a failed MADV_DONTNEED: the pages may stay resident
        # (see test_fault_without_dontneed_passes_check)
        kept = self._lacks_dontneed()
        # Like Go's callers, take the faulted bytes out of the stats they were counted in.
        by_stat: dict[str, int] = {}
        for r, k in self._pages(v, n):
            by_stat[r.stats[k]] = by_stat.get(r.stats[k], 0) + self.ps
            r.states[k], r.stats[k], r.krw[k] = R, None, False
            r.content[k] = self._faulted_content(r.content[k])
            r.maybe_res[k] = r.maybe_res[k] or kept
        for name, nbytes in by_stat.items():
            self._take_from_group(name, nbytes)

    def _take_from_group(self, name: str, nbytes: int) -> None:
        """Take bytes that stopped being mapped out of ``name``'s group, as Go's callers
        do after sysFault: from ``name`` first, then from the group's other stats."""
        for other in [name] + [s for s in STAT_NAMES if s != name and _group(s) == _group(name)]:
            take = min(nbytes, self.expected[other])
            if take:
                self.stats[other].add(-take)
                self.expected[other] -= take
                nbytes -= take
        assert nbytes == 0, "the model's group sum fell below the bytes attributed to it"

    @rule(data=st.data())
    def heap_moves_bytes(self, data):
        """The heap moves bytes between its stats (in use → free → released), as Go's
        mheap does; the ledger vouches for the group's sum only."""
        src, dst = _choose(data, HEAP_STATS, "from"), _choose(data, HEAP_STATS, "to")
        nbytes = min(self.expected[src], _int(data, 0, 2 * MAX_PAGES, "pages") * self.ps)
        self.stats[src].add(-nbytes)
        self.stats[dst].add(nbytes)
        self.expected[src] -= nbytes
        self.expected[dst] += nbytes

    # ==================================================================================
    # Rules: back to None
    # ==================================================================================
    @precondition(_has_region(_freeable))
    @rule(data=st.data())
    def free(self, data):
        r = self._region(data, _freeable)
        v, n = r.base, r.npages * self.ps
        # any stat of the group the pages are counted in (the heap's three share one)
        name = _choose(data, [s for s in STAT_NAMES if _group(s) == _group(r.stats[0])], "stat")
        stat = self.stats[name]
        if self.expected[name] < n:
            self._expect(StatOverflowError, self.sm.sys_free, v, n, stat)
            return
        if self._overlaps_view(v, n):
            self._expect(LiveViewError, self.sm.sys_free, v, n, stat)
            return
        self.sm.sys_free(v, n, stat)
        self.expected[name] -= n
        self._forget_region(r)

    @precondition(_has_region(_all_reserved))
    @rule(data=st.data())
    def unreserve(self, data):
        r = self._region(data, _all_reserved)
        assert not self._overlaps_view(r.base, r.npages * self.ps)
        self.sm.sys_unreserve(r.base, r.npages * self.ps)
        self._forget_region(r)

    # ==================================================================================
    # Rules: hints and need_zero
    # ==================================================================================
    @precondition(lambda self: self.regions)
    @rule(data=st.data(), op=st.sampled_from(["huge_page", "no_huge_page", "huge_page_collapse"]))
    def huge_hint(self, data, op):
        v, n = self._pick(data, ALL, "hint")
        if op == "huge_page" and data.draw(st.booleans(), label="odd bounds"):
            # sysHugePage takes any bounds and rounds them inward itself
            v += _int(data, 0, self.ps - 1, "start offset")
            n = max(0, n - (v % self.ps) - _int(data, 0, self.ps, "end cut"))
        getattr(self.sm, f"sys_{op}")(v, n)
        h = self.huge_size
        if h and op != "no_huge_page":
            # pages of every huge page inside the range may be resident from now on
            beg, end = -(-v // h) * h, (v + n) // h * h
            if beg < end:
                for p in self._pages(beg, end - beg):
                    p[0].maybe_res[p[1]] = True

    @rule()
    def need_zero(self):
        assert self.sm.need_zero_after_sys_unused() == self.need_zero

    @rule()
    def settings_are_fixed_while_running(self):
        """Go reads GODEBUG once: a running SysMem refuses madvdontneed/harddecommit changes."""
        from sysmem.errors import FrozenSettingError

        for name in ("madvdontneed", "harddecommit"):
            with pytest.raises(FrozenSettingError):
                setattr(self.sm.debug, name, 1 - getattr(self.sm.debug, name))
        assert self.sm.need_zero_after_sys_unused() == self.need_zero

    # ==================================================================================
    # Rules: views and contents
    # ==================================================================================
    @precondition(lambda self: len(self.views) < 6 and _has(Y)(self))
    @rule(data=st.data())
    def take_view(self, data):
        pick = self._pick(data, (Y,), "view")
        if pick is None:
            return
        v, n = pick
        ps, npages = self.ps, n // self.ps
        self._check_contents(v, n)
        pattern = self._next_pattern(npages)
        dtype = _choose(data, [np.uint8, np.uint32, np.uint64], "dtype")
        arr = self.sm.view(v, n, dtype)
        assert arr.dtype == np.dtype(dtype) and arr.nbytes == n
        arr.view(np.uint8).reshape(npages, ps)[:] = pattern[:, None]
        for k, (r, i) in enumerate(self._pages(v, n)):
            r.content[i] = int(pattern[k])
        keep = _choose(data, ["array", "slice", "reshaped"], "keep")
        if keep == "slice":
            arr = arr[1:]  # anything made from a view keeps the memory pinned
        elif keep == "reshaped":
            arr = arr.view(np.uint8).reshape(npages, ps)[::-1]
        self.views.append((v, v + n, arr))
        self._check_contents(v, n)

    @precondition(lambda self: self.views)
    @rule(data=st.data())
    def drop_views(self, data):
        if data.draw(st.booleans(), label="drop all"):
            self.views.clear()
        else:
            self.views.pop(_int(data, 0, len(self.views) - 1, "view index"))

    @precondition(_has(Y))
    @rule(data=st.data())
    def verify_contents(self, data):
        pick = self._pick(data, (Y,), "verify")
        if pick is not None:
            self._check_contents(*pick)

    @precondition(lambda self: self.regions and self.LEDGER)
    @rule(data=st.data())
    def verify_os_pages(self, data):
        """Check what the OS reports for one region against the model, page by page."""
        self._check_os_pages(self._region(data))

    def _check_os_pages(self, r: RegionModel) -> None:
        pages = self.sm.os_pages(r.base, r.npages * self.ps)
        assert pages.mapped.all(), f"region {r.base:#x}: unmapped pages {np.flatnonzero(~pages.mapped)}"
        for k, s in enumerate(r.states):
            acc, res = bool(pages.accessible[k]), bool(pages.resident[k])
            where = f"page {k} of region {r.base:#x} ({s.name})"
            if s is Y:
                assert acc, f"{where}: Ready but not accessible"
            elif s is P:
                want = {"windows": False, "sbrk": True}.get(self.flavor, r.krw[k])
                assert acc == want, f"{where}: accessible={acc}, expected {want}"
                if not self.lazy_release and not r.maybe_res[k] and not pages.huge_advised[k]:
                    assert not res, f"{where}: released but resident"
            elif self.flavor != "sbrk":
                assert not acc, f"{where}: Reserved but accessible"
                assert not res or r.maybe_res[k], f"{where}: Reserved but resident"

    # ==================================================================================
    # Rules: the simulated OS's test hooks (failures, races, memory pressure)
    # ==================================================================================
    @precondition(lambda self: self.BACKEND == "simulated")
    @rule(data=st.data())
    def injected_failure(self, data):
        """The OS refuses: None from alloc/reserve, SysOutOfMemoryError from map/used;
        either way nothing may change (heaplab updates accounting only after success)."""
        sm, ps, backend = self.sm, self.ps, self.sm.backend
        op = _choose(data, ["alloc", "reserve", "reserve_aligned", "map", "used"], "failing op")
        if op == "map" and not _has(R)(self) or op == "used" and not _has(P)(self):
            op = "alloc"
        failing = "reserve" if op == "reserve_aligned" else op
        backend.fail_next(failing)
        try:
            if op == "alloc":
                assert sm.sys_alloc(ps, self.stats[self._stat_of(data)]) is None
            elif op == "reserve":
                assert sm.sys_reserve(self._hint(data), ps) is None
            elif op == "reserve_aligned":
                assert sm.sys_reserve_aligned(None, ps, 4 * ps) == (None, 0)
            elif op == "map":
                v, n = self._pick(data, (R,), "map")
                self._pages(v, n)
                self._expect(SysOutOfMemoryError, sm.sys_map, v, n, self.stats[self._stat_of(data)])
            elif self.flavor == "windows" or self.harddecommit:
                v, n = self._pick(data, (P, Y), "used")
                fn, args = self._ranged_call("used", v, n)
                # a live view under harddecommit's re-mmap is refused before the OS call
                refused = self.harddecommit and self._overlaps_view(v, n)
                self._expect(LiveViewError if refused else SysOutOfMemoryError, fn, *args)
            else:
                self.used(data)  # no system call to fail: sys_used simply succeeds
        finally:
            backend.fail_next(failing, 0)

    @precondition(lambda self: self.BACKEND == "simulated" and self.flavor != "sbrk"
                  and len(self.regions) < MAX_REGIONS)
    @rule(data=st.data())
    def reserve_aligned_race(self, data):
        """Another thread takes the hinted address first (Windows: Go's retry loop)."""
        sm, ps, backend = self.sm, self.ps, self.sm.backend
        steals = _choose(data, [1, 2, 5, 100], "stolen reservations")
        size = data.draw(SMALL_PAGES, label="pages") * ps
        align = (1 << _int(data, 3, 6, "log2 align pages")) * ps
        hint = self._hint(data)
        # 100 steals take every Windows re-reservation (a hinted over-reservation would
        # use up steals of its own): Go gives up after 100 tries and throws
        must_throw = steals >= 100 and self.flavor == "windows"
        if must_throw:
            hint = None
        backend.steal_next_reservations(steals)
        try:
            p, n = sm.sys_reserve_aligned(hint, size, align, "lab race")
        except RuntimeThrowError as e:
            assert must_throw, e
            assert "too many retries" in str(e)
            return
        finally:
            backend.steal_next_reservations(0)
        # only an over-reservation aligned by luck needs no re-reservation to steal
        assert not must_throw or n == size + align, "100 stolen re-reservations, yet no throw"
        self._record_aligned(p, n, size, align)
        for a, n in backend.phantoms:
            assert not self._owned(a, a + n), f"the other thread's page {a:#x} is in a live region"

    @precondition(lambda self: self.BACKEND == "simulated")
    @rule()
    def memory_pressure(self):
        """The simulated kernel reclaims lazily freed pages (they read as zero after)."""
        self.sm.backend.reclaim()

    @precondition(lambda self: self.BACKEND == "simulated" and self.flavor == "linux")
    @rule(data=st.data())
    def kernel_lacks_advice(self, data):
        """A kernel without MADV_FREE / MADV_DONTNEED: sys_unused falls back (Go's chain)."""
        self.sm.backend.supported_advice.discard(_choose(data, ["MADV_FREE", "MADV_DONTNEED"], "advice"))

    # ==================================================================================
    # Rules: illegal calls (must raise the documented class and change nothing)
    # ==================================================================================
    @rule(data=st.data())
    def illegal(self, data):
        ps = self.ps
        regions = list(self.regions.values())
        kinds = ["misaligned", "nonpositive", "bad_prepared", "view_unowned", "view_bad_size",
                 "flip_harddecommit", "unowned"]
        if any(r.npages > 1 for r in regions):
            kinds += ["free_partial", "unreserve_partial"]
        if self.flavor == "sbrk":
            kinds += ["sbrk_hint"]
        if self.LEDGER and regions:
            kinds += ["straddle"]
            if any(any(s is not Y for s in r.states) for r in regions):
                kinds += ["free_not_ready"]
            if any(_freeable(r) for r in regions):
                kinds += ["free_wrong_stat"]
            if any(any(s is not R for s in r.states) for r in regions):
                kinds += ["unreserve_not_reserved"]
            if any(s is not Y for r in regions for s in r.states):
                kinds += ["wrong_state"]
            if any(s in (P, Y) for r in regions for s in r.states):
                kinds += ["used_wrong_count"]
        if regions:
            kinds += ["view_not_ready"]
        if not self.LEDGER and any(self._overlaps_view(r.base, r.npages * ps) for r in regions):
            kinds += ["unreserve_under_view"]
        if not self.LEDGER and any(r.npages * ps > self.sm.mapped_ready for r in regions):
            kinds += ["beyond_mapped_ready"]
        kind = _choose(data, kinds, "illegal kind")
        getattr(self, f"_illegal_{kind}")(data)

    def _ranged_call(self, op: str, v: int, n: int):
        """(function, args) for a ranged operation with otherwise valid arguments."""
        sm = self.sm
        if op == "map":
            return sm.sys_map, (v, n, self.stats["other_sys"])
        if op == "used":
            prepared = sum(1 for p in self._pages(v, n) if p and p[0].states[p[1]] is P) * self.ps
            return sm.sys_used, (v, n, prepared)
        if op == "view":
            return sm.view, (v, n)
        return getattr(sm, f"sys_{op}"), (v, n)

    def _illegal_misaligned(self, data):
        sm, ps = self.sm, self.ps
        stat = self.stats["other_sys"]
        base = next(iter(self.regions), 0x7000_0000)  # alignment is checked before ownership
        off = _choose(data, [1, ps // 2, ps - 1], "offset")
        bad_v, bad_n = base + off, ps + off
        op = _choose(data, [
            "alloc", "reserve", "reserve_aligned_size", "reserve_aligned_align", "free", "unreserve",
            "map", "used", "unused", "fault", "no_huge_page", "huge_page_collapse",
        ], "op")
        v, n = (bad_v, ps) if data.draw(st.booleans(), label="misalign the address") else (base, bad_n)
        calls = {
            "alloc": (sm.sys_alloc, bad_n, stat),
            "reserve": (sm.sys_reserve, None, bad_n),
            "reserve_aligned_size": (sm.sys_reserve_aligned, None, bad_n, ps),
            "reserve_aligned_align": (sm.sys_reserve_aligned, None, ps,
                                      _choose(data, [3 * ps, ps // 2, 0, -ps], "align")),
            "free": (sm.sys_free, v, n, stat),
            "unreserve": (sm.sys_unreserve, v, n),
            "map": (sm.sys_map, v, n, stat),
            "used": (sm.sys_used, v, n, 0),
            "unused": (sm.sys_unused, v, n),
            "fault": (sm.sys_fault, v, n),
            "no_huge_page": (sm.sys_no_huge_page, bad_v, ps),
            "huge_page_collapse": (sm.sys_huge_page_collapse, bad_v, ps),
        }
        fn, *args = calls[op]
        self._expect(MisalignedRangeError, fn, *args)

    def _illegal_nonpositive(self, data):
        sm, ps = self.sm, self.ps
        stat = self.stats["other_sys"]
        base = next(iter(self.regions), 0x7000_0000)
        n = _choose(data, [0, -ps], "n")
        op = _choose(data, ["alloc", "reserve", "free", "unreserve", "map", "used", "fault",
                                        "unused", "huge_page", "reserve_aligned"], "op")
        if op == "huge_page":
            n = -ps  # zero-length hints are fine; negative ones are not
        calls = {
            "alloc": (sm.sys_alloc, n, stat),
            "reserve": (sm.sys_reserve, None, n),
            "reserve_aligned": (sm.sys_reserve_aligned, None, n, ps),
            "free": (sm.sys_free, base, n, stat),
            "unreserve": (sm.sys_unreserve, base, n),
            "map": (sm.sys_map, base, n, stat),
            "used": (sm.sys_used, base, n, 0),
            "unused": (sm.sys_unused, base, n),
            "fault": (sm.sys_fault, base, n),
            "huge_page": (sm.sys_huge_page, base, n),
        }
        fn, *args = calls[op]
        self._expect(ValueError, fn, *args)

    def _illegal_bad_prepared(self, data):
        ps = self.ps
        r = self._region(data)
        v = r.base if r else 0x7000_0000
        n = ps * (r.npages if r else 1)
        prepared = _choose(data, [-ps, n + ps, ps // 2, 1], "prepared")
        self._expect(PreparedCountError, self.sm.sys_used, v, n, prepared)

    def _illegal_flip_harddecommit(self, data):
        """harddecommit is read once (Go reads GODEBUG at start-up): changing it is refused."""
        debug = self.sm.debug
        before = debug.harddecommit
        with pytest.raises(FrozenSettingError):
            debug.harddecommit = 0 if before else 1
        assert debug.harddecommit == before

    def _illegal_view_bad_size(self, data):
        base = next(iter(self.regions), 0x7000_0000)
        nbytes, dtype = _choose(
            data, [(0, np.uint8), (-self.ps, np.uint8), (6, np.uint32), (12, np.uint64)], "size")
        self._expect(ValueError, self.sm.view, base, nbytes, dtype)

    def _illegal_view_unowned(self, data):
        self._expect(InaccessibleMemoryError, self.sm.view, self._unowned_addr(data), self.ps)

    def _illegal_unowned(self, data):
        sm, ps = self.sm, self.ps
        v = self._unowned_addr(data)
        n = ps
        op = _choose(data, ["free", "unreserve", "map", "used", "unused", "fault",
                                        "huge_page", "no_huge_page", "huge_page_collapse"], "op")
        if op == "free":
            fn, args = sm.sys_free, (v, n, self.stats["other_sys"])
        elif op == "unreserve":
            fn, args = sm.sys_unreserve, (v, n)
        else:
            fn, args = self._ranged_call(op, v, n)
        self._expect(NotReservedError, fn, *args)

    def _illegal_straddle(self, data):
        """A range reaching from owned pages into unowned ones (or the other way)."""
        ps = self.ps
        v0, e0 = _choose(data, self._runs(ALL), "owned run")
        run_pages = (e0 - v0) // ps
        if data.draw(st.booleans(), label="run past the end"):
            a = _int(data, 0, run_pages - 1, "first page")
            v, n = v0 + a * ps, (run_pages - a + _int(data, 1, 4, "pages past")) * ps
        else:
            before = _int(data, 1, 4, "pages before")
            v, n = v0 - before * ps, (before + _int(data, 1, run_pages, "pages in")) * ps
        op = _choose(data, sorted(ACCEPTS), "op")
        self._expect_refused(op, v, n)

    def _expect_refused(self, op: str, v: int, n: int) -> None:
        """The exception the ledger owes for ``op`` on [v, v+n), given every page's state."""
        pages = self._pages(v, n)
        unowned = any(p is None for p in pages)
        wrong = any(p is not None and p[0].states[p[1]] not in ACCEPTS[op] for p in pages)
        assert unowned or wrong
        fn, args = self._ranged_call(op, v, n)
        if op == "view":
            self._expect(InaccessibleMemoryError, fn, *args)
        elif unowned and wrong:  # either complaint is right; the first page found decides
            self._expect(IllegalTransitionError, fn, *args, exact=False)
        else:
            self._expect(NotReservedError if unowned else IllegalTransitionError, fn, *args)

    def _illegal_wrong_state(self, data):
        """A range of owned pages, at least one in a state the operation does not accept."""
        ops = [op for op in ACCEPTS
               if any(s not in ACCEPTS[op] for r in self.regions.values() for s in r.states)]
        op = _choose(data, sorted(ops), "op")
        bad = sorted((r.base + k * self.ps) for r in self.regions.values()
                     for k, s in enumerate(r.states) if s not in ACCEPTS[op])
        b_addr = _choose(data, bad, "bad page")
        v0, e0 = next((v, e) for v, e in self._runs(ALL) if v <= b_addr < e)
        i = (b_addr - v0) // self.ps
        a = _int(data, max(0, i - MAX_PAGES), i, "first page")
        b = _int(data, i + 1, min((e0 - v0) // self.ps, i + MAX_PAGES), "end page")
        self._expect_refused(op, v0 + a * self.ps, (b - a) * self.ps)

    def _illegal_free_partial(self, data):
        r = self._region(data, lambda r: r.npages > 1)
        a, b = self._partial(data, r)
        want = PartialRegionError if self.LEDGER else RootRegionError
        stat = self.stats[r.stats[0] or "other_sys"]
        self._expect(want, self.sm.sys_free, r.base + a * self.ps, (b - a) * self.ps, stat)

    def _illegal_unreserve_partial(self, data):
        r = self._region(data, lambda r: r.npages > 1)
        a, b = self._partial(data, r)
        want = PartialRegionError if self.LEDGER else RootRegionError
        self._expect(want, self.sm.sys_unreserve, r.base + a * self.ps, (b - a) * self.ps)

    def _partial(self, data, r):
        a = _int(data, 0, r.npages - 1, "first page")
        b = _int(data, a + 1, r.npages, "end page")
        if (a, b) == (0, r.npages):
            b -= 1
        return a, b

    def _illegal_free_not_ready(self, data):
        r = self._region(data, lambda r: any(s is not Y for s in r.states))
        stat = self.stats[next((s for s in r.stats if s), "other_sys")]
        self._expect(IllegalTransitionError, self.sm.sys_free, r.base, r.npages * self.ps, stat)

    def _illegal_free_wrong_stat(self, data):
        r = self._region(data, _freeable)
        other = _choose(data, [s for s in STAT_NAMES if _group(s) != _group(r.stats[0])], "wrong stat")
        self._expect(IllegalTransitionError, self.sm.sys_free, r.base, r.npages * self.ps, self.stats[other])

    def _illegal_unreserve_not_reserved(self, data):
        r = self._region(data, lambda r: any(s is not R for s in r.states))
        self._expect(IllegalTransitionError, self.sm.sys_unreserve, r.base, r.npages * self.ps)

    def _illegal_used_wrong_count(self, data):
        v, n = self._pick(data, (P, Y), "used")
        actual = sum(r.states[k] is P for r, k in self._pages(v, n))
        wrong = _choose(data, [k for k in range(n // self.ps + 1) if k != actual], "wrong prepared pages")
        self._expect(PreparedCountError, self.sm.sys_used, v, n, wrong * self.ps)

    def _illegal_sbrk_hint(self, data):
        hint = _choose(data, [0x1000_0000, 0x7000_0000, self.ps], "hint")
        self._expect(RuntimeThrowError, self.sm.sys_reserve_aligned, hint, self.ps, self.ps)

    def _inaccessible(self, r: RegionModel, k: int) -> bool:
        """Whether SysMem must refuse a view of page ``k`` of ``r``."""
        s = r.states[k]
        if self.LEDGER or s is R:
            return s is not Y
        if s is P:  # with the ledger off, views only need accessible memory
            return self.flavor == "windows" or (self.harddecommit and not r.krw[k])
        return False

    def _illegal_view_not_ready(self, data):
        """A view touching a page that is not Ready (with the ledger off: not accessible)."""
        bad = sorted(r.base + k * self.ps for r in self.regions.values()
                     for k in range(r.npages) if self._inaccessible(r, k))
        if not bad:
            self._illegal_view_unowned(data)
            return
        b_addr = _choose(data, bad, "bad page")
        v0, e0 = next((v, e) for v, e in self._runs(ALL) if v <= b_addr < e)
        i = (b_addr - v0) // self.ps
        a = _int(data, max(0, i - MAX_PAGES), i, "first page")
        b = _int(data, i + 1, min((e0 - v0) // self.ps, i + MAX_PAGES), "end page")
        self._expect(InaccessibleMemoryError, self.sm.view, v0 + a * self.ps, (b - a) * self.ps)

    def _illegal_unreserve_under_view(self, data):
        r = self._region(data, lambda r: self._overlaps_view(r.base, r.npages * self.ps))
        self._expect(LiveViewError, self.sm.sys_unreserve, r.base, r.npages * self.ps)

    def _illegal_beyond_mapped_ready(self, data):
        r = self._region(data, lambda r: r.npages * self.ps > self.sm.mapped_ready)
        op = _choose(data, ["unused", "fault"], "op")
        self._expect(AccountingMismatchError, getattr(self.sm, f"sys_{op}"), r.base, r.npages * self.ps)

    # ==================================================================================
    # The invariant: the layer matches the model, and sm.check() agrees
    # ==================================================================================
    def _model_runs(self):
        out = []
        for base in sorted(self.regions):
            r = self.regions[base]
            i = 0
            while i < r.npages:
                j = i + 1
                while j < r.npages and r.states[j] is r.states[i] and r.stats[j] == r.stats[i]:
                    j += 1
                out.append((r.base + i * self.ps, r.base + j * self.ps, r.states[i], r.stats[i]))
                i = j
        return out

    @invariant()
    def layer_matches_model(self):
        sm, ps = self.sm, self.ps
        in_state: Counter = Counter()
        attributed: Counter = Counter()
        for r in self.regions.values():
            in_state.update(r.states)
            attributed.update(r.stats)
        # mapped_ready = Ready bytes
        assert sm.mapped_ready == in_state[Y] * ps
        # each SysMemStat reads what the model expects, and each stat group (a stat on
        # its own, or the heap's three together) = the bytes attributed to it
        counted: Counter = Counter()
        for name, stat in self.stats.items():
            assert stat.load() == self.expected[name], f"{name}: {stat.load():#x} != {self.expected[name]:#x}"
            counted[_group(name)] += self.expected[name]
            counted[_group(name)] -= attributed[name] * ps
        assert not +counted and not -counted, f"stat groups minus attributed bytes: {dict(counted)}"
        for name, stat in sm.stats.items():
            if name not in self.stats:
                assert stat.load() == 0, name
        # the root-region registry matches the live regions
        want_regions = sorted((r.base, r.npages * ps) for r in self.regions.values())
        assert sm.root_regions.regions() == want_regions
        # views: exactly the ones the model keeps alive
        assert sorted(sm.live_views(0, (1 << 64) - 1)) == sorted((s, e) for s, e, _ in self.views)
        self.step += 1
        touched, self.touched = self.touched, set()
        if not self.LEDGER:
            for what in (sm.runs, sm.state_bytes, sm.accounting_problems, sm.os_problems, sm.check):
                self._expect(LedgerDisabledError, what)
            return
        runs = sm.runs()
        got = [(x.start, x.end, x.state, x.stat.name if x.stat else None) for x in runs]
        assert got == self._model_runs()
        for x in runs:
            assert x.stat is None or x.stat is self.stats[x.stat.name]
        assert sm.state_bytes() == {s: in_state[s] * ps for s in ALL}
        assert [(r.base, r.size) for r in sm.ledger.regions()] == want_regions
        # accounting = ledger, and the kernel / simulation agrees. Asking the kernel costs
        # a read of /proc/self/smaps per region, so every step checks the regions the
        # step acted on, and every FULL_CHECK_EVERY-th step (and teardown) all of them.
        if self.step % FULL_CHECK_EVERY == 0:
            self._full_check()
        else:
            sm.check(os=False)
            live = [reg for reg in sm.ledger.regions() if reg.base in touched]
            if live:
                assert sm.os_problems(live) == []

    def _full_check(self):
        self.sm.check()

    # ==================================================================================
    # Teardown: drop the views, give every region back through the API, check all is zero
    # ==================================================================================
    def teardown(self):
        sm, ps = self.sm, self.ps
        self.views.clear()
        try:
            if self.LEDGER:
                self._full_check()
            for r in list(self.regions.values()):
                v, n = r.base, r.npages * ps
                rich = [s for s in STAT_NAMES if _group(s) == _group(r.stats[0]) and self.expected[s] >= n]
                if _freeable(r) and rich:
                    sm.sys_free(v, n, self.stats[rich[0]])
                    self.expected[rich[0]] -= n
                else:
                    for i, j in r.runs_where((P,)):
                        sm.sys_used(r.base + i * ps, (j - i) * ps, (j - i) * ps)
                        for k in range(i, j):
                            r.states[k] = Y
                    for i, j in r.runs_where((Y,)):
                        sm.sys_fault(r.base + i * ps, (j - i) * ps)
                        for k in range(i, j):
                            self._take_from_group(r.stats[k], ps)
                            r.states[k], r.stats[k] = R, None
                    sm.sys_unreserve(v, n)
                self._forget_region(r)
            assert sm.mapped_ready == 0
            assert sm.root_regions.regions() == []
            assert all(s.load() == 0 for s in self.stats.values())
            assert sm.live_views(0, (1 << 64) - 1) == []
            if self.LEDGER:
                assert sm.runs() == []
                sm.check()
        except BaseException:
            # Never leave real mappings behind, even when the layer misbehaved.
            for base, size in sm.root_regions.regions():
                if not sm.live_views(base, size):
                    sm.backend.free(base, size)
            raise
        finally:
            sm.close()


# ---------------------------------------------------------------------------------------
# Variants
# ---------------------------------------------------------------------------------------
FAST = settings(
    max_examples=40,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
)
#: the simulated OS is cheap to ask: more and longer runs
SIM = settings(FAST, max_examples=50, stateful_step_count=40)
SLOW = settings(FAST, max_examples=150, stateful_step_count=60)

linux_only = pytest.mark.skipif(not ON_LINUX, reason="needs the real Linux backend")


class LinuxDefault(SysMemMachine):
    BACKEND, GODEBUG = "linux", ""


class LinuxMadvFree(SysMemMachine):
    BACKEND, GODEBUG = "linux", "madvdontneed=0"


class LinuxHardDecommit(SysMemMachine):
    BACKEND, GODEBUG = "linux", "harddecommit=1"


class LinuxNoLedger(SysMemMachine):
    BACKEND, GODEBUG, LEDGER = "linux", "", False


class SimLinux(SysMemMachine):
    BACKEND, PERSONALITY = "simulated", "linux"


class SimWindows(SysMemMachine):
    BACKEND, PERSONALITY = "simulated", "windows"


class SimSbrk(SysMemMachine):
    BACKEND, PERSONALITY = "simulated", "sbrk"


class SimLinuxMadvFree(SysMemMachine):
    BACKEND, PERSONALITY, GODEBUG = "simulated", "linux", "madvdontneed=0"


class SimLinuxHardDecommit(SysMemMachine):
    BACKEND, PERSONALITY, GODEBUG = "simulated", "linux", "harddecommit=1"


class SimLinuxNoLedger(SysMemMachine):
    BACKEND, PERSONALITY, LEDGER = "simulated", "linux", False


class SimWindowsNoLedger(SysMemMachine):
    BACKEND, PERSONALITY, LEDGER = "simulated", "windows", False


class SimSbrkNoLedger(SysMemMachine):
    BACKEND, PERSONALITY, LEDGER = "simulated", "sbrk", False


def _case(machine, *marks, cfg=FAST):
    case = machine.TestCase
    case.settings = cfg
    for m in marks:
        case = m(case)
    return case


TestLinuxDefault = _case(LinuxDefault, linux_only, pytest.mark.linux)
TestLinuxMadvFree = _case(LinuxMadvFree, linux_only, pytest.mark.linux)
TestLinuxHardDecommit = _case(LinuxHardDecommit, linux_only, pytest.mark.linux)
TestLinuxNoLedger = _case(LinuxNoLedger, linux_only, pytest.mark.linux)
TestSimulatedLinux = _case(SimLinux, cfg=SIM)
TestSimulatedWindows = _case(SimWindows, cfg=SIM)
TestSimulatedSbrk = _case(SimSbrk, cfg=SIM)
TestSimulatedLinuxMadvFree = _case(SimLinuxMadvFree, cfg=SIM)
TestSimulatedLinuxHardDecommit = _case(SimLinuxHardDecommit, cfg=SIM)
TestSimulatedLinuxNoLedger = _case(SimLinuxNoLedger, cfg=SIM)
TestSimulatedWindowsNoLedger = _case(SimWindowsNoLedger, cfg=SIM)
TestSimulatedSbrkNoLedger = _case(SimSbrkNoLedger, cfg=SIM)


class LinuxDefaultLong(LinuxDefault):
    pass


class SimWindowsLong(SimWindows):
    pass


TestLinuxDefaultLong = _case(LinuxDefaultLong, linux_only, pytest.mark.linux, pytest.mark.slow, cfg=SLOW)
TestSimulatedWindowsLong = _case(SimWindowsLong, pytest.mark.slow, cfg=SLOW)


# ---------------------------------------------------------------------------------------
# Regular tests
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("personality", ["linux", "windows", "sbrk"])
def test_transitions_table_matches_the_machines_model(personality, check_transitions_table):
    """The machine's model encodes the same transitions as ``sysmem.TRANSITIONS``: the
    states, and what its rules do to the stat passed in (``self.expected``) and to the
    Ready bytes it compares with mapped_ready; and the simulated OS does the same."""
    N = State.NONE
    model = {  # (from, to, stat, Ready bytes), as the rules above update the model
        "sys_alloc": ((N,), Y, "+n", "+n"), "sys_free": ((Y,), N, "-n", "-n"),
        "sys_reserve": ((N,), R, "", ""), "sys_reserve_aligned": ((N,), R, "", ""),
        "sys_unreserve": ((R,), N, "", ""), "sys_map": ((R,), P, "+n", ""),
        "sys_used": ((P, Y), Y, "", "+prepared"), "sys_unused": ((Y,), P, "", "-n"),
        "sys_fault": ((Y,), R, "", "-n"),
        "sys_huge_page": ((R, P, Y), None, "", ""), "sys_no_huge_page": ((R, P, Y), None, "", ""),
        "sys_huge_page_collapse": ((R, P, Y), None, "", ""),
        "need_zero_after_sys_unused": ((), None, "", ""),
    }
    assert {k: (set(t.from_states), t.to_state, t.stat_delta, t.mapped_ready_delta)
            for k, t in TRANSITIONS.items()} == {
        k: (set(a), b, s, m) for k, (a, b, s, m) in model.items()
    }
    sm = SysMem("simulated", personality=personality, godebug="")
    try:
        check_transitions_table(sm)
    finally:
        sm.close()


def _fault_a_touched_page(sm: SysMem) -> None:
    stat, ps = sm.stat("other_sys"), sm.page_size
    p = sm.sys_alloc(ps, stat)
    sm.view(p, ps)[:] = 1  # resident now
    sm.sys_fault(p, ps)
    stat.add(-ps)  # as Go's callers do after sysFault
    try:
        sm.check()
    finally:
        sm.sys_unreserve(p, ps)
        sm.close()


def test_fault_without_dontneed_passes_check():
    """Regression: on a kernel without MADV_DONTNEED, sys_fault leaves touched pages
    resident (Go's sysFaultOS ignores the error); the kernel check accepts that."""
    sm = SysMem("simulated", personality="linux")
    sm.backend.supported_advice.discard("MADV_DONTNEED")
    _fault_a_touched_page(sm)


@linux_only
def test_fault_without_dontneed_passes_check_linux():
    """Regression: the same on the real Linux backend with a libc refusing MADV_DONTNEED."""
    from sysmem import _libc
    from sysmem._linux import LinuxBackend
    from sysmem.settings import DebugSettings

    class NoDontneed:
        def __getattr__(self, name):
            return getattr(_libc.libc, name)

        def madvise(self, v, n, advice):
            if advice == _libc.MADV_DONTNEED:
                return -1
            return _libc.libc.madvise(v, n, advice)

    debug = DebugSettings.from_godebug("")
    _fault_a_touched_page(SysMem(LinuxBackend(debug, syscalls=NoDontneed()), godebug=debug))


def _linux_or_simulated(kind: str) -> SysMem:
    if kind == "linux":
        if not ON_LINUX:
            pytest.skip("needs the real Linux backend")
        return SysMem("linux", godebug="madvdontneed=0")
    return SysMem("simulated", personality="linux", godebug="madvdontneed=0")


@pytest.mark.parametrize("kind", ["simulated", "linux"])
def test_madvdontneed_is_fixed_once_running(kind):
    """Regression: madvdontneed could change at run time, after which memory that MADV_FREE
    released still held old data while need_zero_after_sys_unused() said False. Like
    Go, which reads GODEBUG once, a running SysMem now refuses the change."""
    from sysmem.errors import FrozenSettingError

    sm = _linux_or_simulated(kind)
    stat, ps = sm.stat("other_sys"), sm.page_size
    p = sm.sys_alloc(4 * ps, stat)
    try:
        sm.view(p, 4 * ps)[:] = 0xAB
        sm.sys_unused(p, 4 * ps)
        with pytest.raises(FrozenSettingError):
            sm.debug.madvdontneed = 1
        assert sm.need_zero_after_sys_unused()
        sm.check()
        sm.sys_used(p, 4 * ps, 4 * ps)
    finally:
        sm.sys_free(p, 4 * ps, stat)
        sm.close()


@pytest.mark.parametrize("kind", ["simulated", "linux"])
def test_negative_address_is_refused(kind):
    """Regression: a hint range starting below 0 used to skip the ownership check
    (IntervalMap.runs wrapped index -1 to the last run)."""
    sm = _linux_or_simulated(kind)
    ps, stat = sm.page_size, sm.stat("other_sys")
    p = sm.sys_alloc(ps, stat)  # something owned, so the ledger has runs
    try:
        for op in (sm.sys_huge_page, sm.sys_no_huge_page, sm.sys_huge_page_collapse):
            # [-4096, 4096) is not owned memory (harmless even unchecked: it rounds to nothing)
            try:
                op(-ps, 2 * ps)
            except (NotReservedError, ValueError):
                continue
            except Exception as e:  # noqa: BLE001 - e.g. cffi's OverflowError on Linux
                raise AssertionError(f"{op.__name__}(-0x1000, 0x2000) raised {type(e).__name__}: {e}") from e
            raise AssertionError(f"{op.__name__}(-0x1000, 0x2000) accepted a range that is not owned")
    finally:
        sm.sys_free(p, ps, stat)
        sm.close()
