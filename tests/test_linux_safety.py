"""What sysmem refuses, and that refusing changes nothing; views; faults; check() failing.

Every illegal call must raise its exception *and* leave the accounting (``mapped_ready``,
every stat), the ledger (``runs()``), the root-region registry, the accessible intervals
and the kernel's mappings exactly as they were. ``sys_fault``'d memory really faults:
a forked child that touches it dies of SIGSEGV, while the parent's public API refuses
to hand out a view of it.
"""

from __future__ import annotations

import gc
import multiprocessing
import os
import signal
import sys
from contextlib import contextmanager

import numpy as np
import pytest

from sysmem import (
    AccountingMismatchError,
    DebugSettings,
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
    StatOverflowError,
    SysMem,
    SysMemStat,
)
from sysmem import _libc as L
from sysmem._linux import LinuxBackend

pytestmark = pytest.mark.linux

PS = L.libc.sysconf(L.SC_PAGESIZE)
KiB, MiB = 1 << 10, 1 << 20


# -- snapshots ------------------------------------------------------------------------


def proc_maps() -> list[tuple[int, int, str]]:
    """(start, end, perms) of every mapping: /proc/self/maps, far cheaper than smaps."""
    out = []
    with open("/proc/self/maps") as f:
        for line in f:
            rng, perms = line.split(None, 2)[:2]
            lo, hi = rng.split("-")
            out.append((int(lo, 16), int(hi, 16), perms))
    return out


def mincore(v: int, n: int) -> bytes:
    """Residency of each page of [v, v+n), unmapped pages as 0xff."""
    vec = L.ffi.new("unsigned char[1]")
    out = bytearray()
    for a in range(v, v + n, PS):
        out.append(vec[0] & 1 if L.libc.mincore(a, PS, vec) == 0 else 0xFF)
    return bytes(out)


def snapshot(sm: SysMem, *stats: SysMemStat) -> dict:
    """Everything an illegal call must leave alone, including the kernel's view."""
    all_stats = {id(s): s for s in [*sm.stats.values(), *stats]}
    if sm.ledger is not None:
        all_stats.update({id(s): s for s in sm.ledger.known_stats()})
    kernel = []
    regions = sm.root_regions.regions()
    maps = proc_maps() if regions else []
    for base, size in regions:
        for start, end, perms in maps:
            if start < base + size and base < end:
                kernel.append((max(start, base), min(end, base + size), perms))
        kernel.append(mincore(base, size))
    return {
        "mapped_ready": sm.mapped_ready,
        "stats": sorted((s.name, s.load()) for s in all_stats.values()),
        "runs": sm.runs() if sm.ledger is not None else None,
        "regions": sm.root_regions.regions(),
        "access": sm.accessible_ranges(),
        "kernel": kernel,
    }


@contextmanager
def refused(sm: SysMem, exc, *stats: SysMemStat, also=()):
    """Expect ``exc`` (and the built-ins in ``also``), and no change to anything."""
    before = snapshot(sm, *stats)
    with pytest.raises(exc) as info:
        yield info
    for builtin in also:
        assert isinstance(info.value, builtin)
    assert snapshot(sm, *stats) == before


class World:
    """A SysMem with one region in each interesting shape.

    * ``a``: a sys_alloc'd 1 MiB region, all Ready (other_sys)
    * ``r``: a 1 MiB reservation: [0, 256K) Reserved, [256K, 512K) Prepared,
      [512K, 1M) Ready (other_sys)
    * ``r2``: a 256 KiB reservation, all Reserved
    * ``edge_r`` (Reserved) and ``edge_y`` (Ready, other_sys): 256 KiB regions, each
      followed by 256 KiB this SysMem does not own
    * ``hole``: 1 MiB of address space this SysMem does not own
    """

    def __init__(self, sm: SysMem) -> None:
        self.sm = sm
        self.st = sm.stat("other_sys")
        self.other = sm.stat("gc_misc_sys")
        self.a = sm.sys_alloc(1 * MiB, self.st)
        self.r = sm.sys_reserve(None, 1 * MiB)
        sm.sys_map(self.r + 256 * KiB, 768 * KiB, self.st)
        sm.sys_used(self.r + 512 * KiB, 512 * KiB, 512 * KiB)
        self.r2 = sm.sys_reserve(None, 256 * KiB)
        sm.view(self.a, PS)[:] = 1
        sm.view(self.r + 512 * KiB, PS)[:] = 1
        # Two regions whose next 256 KiB no region of ours holds: ``edge_r`` all Reserved,
        # ``edge_y`` all Ready. (Regions the kernel happens to place side by side may
        # merge in the ledger's view, so "past the end" must run into unowned space.)
        w = sm.sys_reserve(None, 1 * MiB)
        sm.sys_unreserve(w, 1 * MiB)
        self.edge_r = sm.sys_reserve(w, 256 * KiB)
        self.edge_y = sm.sys_reserve(w + 512 * KiB, 256 * KiB)
        assert (self.edge_r, self.edge_y) == (w, w + 512 * KiB), "the kernel ignored a free hint"
        sm.sys_map(self.edge_y, 256 * KiB, self.st)
        sm.sys_used(self.edge_y, 256 * KiB, 256 * KiB)
        # last, so no region of ours lands in it (it may hold someone else's mapping later)
        self.hole = sm.sys_reserve(None, 1 * MiB)
        sm.sys_unreserve(self.hole, 1 * MiB)
        assert sm.mapped_ready == 1792 * KiB and self.st.load() == 2 * MiB

    # shorthands
    @property
    def prep(self) -> int:
        return self.r + 256 * KiB

    @property
    def rdy(self) -> int:
        return self.r + 512 * KiB


@pytest.fixture
def world(linux_sm) -> World:
    w = World(linux_sm)
    linux_sm.check(os=False)
    yield w
    linux_sm.check(os=False)  # a refused call leaves consistent accounting behind
    # (and the kernel's side is compared by ``refused`` itself)


# -- every illegal call: its exception, and no change -------------------------------------

ILLEGAL = {
    # free/unreserve of part of a region
    "free head of region": (PartialRegionError, lambda w: w.sm.sys_free(w.a, 512 * KiB, w.st)),
    "free tail of region": (PartialRegionError, lambda w: w.sm.sys_free(w.a + PS, 1 * MiB - PS, w.st)),
    "free more than region": (PartialRegionError, lambda w: w.sm.sys_free(w.a, 2 * MiB, w.st)),
    "unreserve head": (PartialRegionError, lambda w: w.sm.sys_unreserve(w.r2, 128 * KiB)),
    "unreserve tail": (PartialRegionError, lambda w: w.sm.sys_unreserve(w.r2 + PS, 256 * KiB - PS)),
    # never-reserved memory
    "map hole": (NotReservedError, lambda w: w.sm.sys_map(w.hole, PS, w.st)),
    "used hole": (NotReservedError, lambda w: w.sm.sys_used(w.hole, PS, PS)),
    "unused hole": (NotReservedError, lambda w: w.sm.sys_unused(w.hole, PS)),
    "fault hole": (NotReservedError, lambda w: w.sm.sys_fault(w.hole, PS)),
    "free hole": (NotReservedError, lambda w: w.sm.sys_free(w.hole, 1 * MiB, w.st)),
    "unreserve hole": (NotReservedError, lambda w: w.sm.sys_unreserve(w.hole, 1 * MiB)),
    "huge_page hole": (NotReservedError, lambda w: w.sm.sys_huge_page(w.hole, 1 * MiB)),
    "no_huge_page hole": (NotReservedError, lambda w: w.sm.sys_no_huge_page(w.hole, PS)),
    "collapse hole": (NotReservedError, lambda w: w.sm.sys_huge_page_collapse(w.hole, PS)),
    "unused past region end": (NotReservedError, lambda w: w.sm.sys_unused(w.edge_y + 256 * KiB - PS, 2 * PS)),
    "fault past region end": (NotReservedError, lambda w: w.sm.sys_fault(w.edge_y + 128 * KiB, 256 * KiB)),
    "map past region end": (NotReservedError, lambda w: w.sm.sys_map(w.edge_r + 128 * KiB, 256 * KiB, w.st)),
    # alignment
    "unused misaligned v": (MisalignedRangeError, lambda w: w.sm.sys_unused(w.a + 1, PS)),
    "unused misaligned n": (MisalignedRangeError, lambda w: w.sm.sys_unused(w.a, PS + 1)),
    "unused misaligned both": (MisalignedRangeError, lambda w: w.sm.sys_unused(w.a + 8, PS - 8)),
    "map misaligned": (MisalignedRangeError, lambda w: w.sm.sys_map(w.r2 + 1, PS, w.st)),
    "used misaligned": (MisalignedRangeError, lambda w: w.sm.sys_used(w.prep, PS + 1, PS)),
    "fault misaligned": (MisalignedRangeError, lambda w: w.sm.sys_fault(w.a + 1, PS)),
    "free misaligned": (MisalignedRangeError, lambda w: w.sm.sys_free(w.a, 1 * MiB + 1, w.st)),
    "alloc misaligned": (MisalignedRangeError, lambda w: w.sm.sys_alloc(PS + 1, w.st)),
    "no_huge_page misaligned": (MisalignedRangeError, lambda w: w.sm.sys_no_huge_page(w.a + 1, PS)),
    "collapse misaligned": (MisalignedRangeError, lambda w: w.sm.sys_huge_page_collapse(w.a + 1, PS)),
    # sys_used's prepared count
    "used prepared too small": (PreparedCountError, lambda w: w.sm.sys_used(w.prep, 512 * KiB, 128 * KiB)),
    "used prepared too big": (PreparedCountError, lambda w: w.sm.sys_used(w.prep, 512 * KiB, 512 * KiB)),
    "used prepared zero": (PreparedCountError, lambda w: w.sm.sys_used(w.prep, PS, 0)),
    "used prepared on ready": (PreparedCountError, lambda w: w.sm.sys_used(w.rdy, PS, PS)),
    "used prepared > n": (PreparedCountError, lambda w: w.sm.sys_used(w.prep, PS, 2 * PS)),
    "used prepared negative": (PreparedCountError, lambda w: w.sm.sys_used(w.prep, PS, -PS)),
    "used prepared unaligned": (PreparedCountError, lambda w: w.sm.sys_used(w.prep, PS, PS - 1)),
    # states the transition does not start from
    "used on reserved": (IllegalTransitionError, lambda w: w.sm.sys_used(w.r, PS, PS)),
    "used across reserved": (IllegalTransitionError, lambda w: w.sm.sys_used(w.prep - PS, 2 * PS, PS)),
    "map on prepared": (IllegalTransitionError, lambda w: w.sm.sys_map(w.prep, PS, w.st)),
    "map on ready": (IllegalTransitionError, lambda w: w.sm.sys_map(w.rdy, PS, w.st)),
    "map on alloc'd": (IllegalTransitionError, lambda w: w.sm.sys_map(w.a, PS, w.st)),
    "map across prepared": (IllegalTransitionError, lambda w: w.sm.sys_map(w.r, 512 * KiB, w.st)),
    "unused on prepared": (IllegalTransitionError, lambda w: w.sm.sys_unused(w.prep, PS)),
    "unused on reserved": (IllegalTransitionError, lambda w: w.sm.sys_unused(w.r, PS)),
    "fault on prepared": (IllegalTransitionError, lambda w: w.sm.sys_fault(w.prep, PS)),
    "fault on reserved": (IllegalTransitionError, lambda w: w.sm.sys_fault(w.r2, PS)),
    "fault across prepared": (IllegalTransitionError, lambda w: w.sm.sys_fault(w.rdy - PS, 2 * PS)),
    "unreserve mapped": (IllegalTransitionError, lambda w: w.sm.sys_unreserve(w.r, 1 * MiB)),
    "unreserve alloc'd": (IllegalTransitionError, lambda w: w.sm.sys_unreserve(w.a, 1 * MiB)),
    "free not all ready": (IllegalTransitionError, lambda w: w.sm.sys_free(w.r, 1 * MiB, w.st)),
    "free reserved": (IllegalTransitionError, lambda w: w.sm.sys_free(w.r2, 256 * KiB, w.st)),
    "free wrong stat": (IllegalTransitionError, lambda w: w.sm.sys_free(w.a, 1 * MiB, w.other)),
    # stats that would wrap
    "map overflows stat": (StatOverflowError,
                           lambda w: w.sm.sys_map(w.r2, PS, SysMemStat("full", value=(1 << 64) - 1))),
    # sys_reserve_aligned's align
    "align 3 pages": (MisalignedRangeError, lambda w: w.sm.sys_reserve_aligned(None, 1 * MiB, 3 * PS)),
    "align 6 pages": (MisalignedRangeError, lambda w: w.sm.sys_reserve_aligned(None, 1 * MiB, 6 * PS)),
    "align 0": (MisalignedRangeError, lambda w: w.sm.sys_reserve_aligned(None, 1 * MiB, 0)),
    "align negative": (MisalignedRangeError, lambda w: w.sm.sys_reserve_aligned(None, 1 * MiB, -PS)),
    "align below a page": (MisalignedRangeError, lambda w: w.sm.sys_reserve_aligned(None, 1 * MiB, 8)),
    # n <= 0
    "alloc 0": (ValueError, lambda w: w.sm.sys_alloc(0, w.st)),
    "alloc negative": (ValueError, lambda w: w.sm.sys_alloc(-PS, w.st)),
    "reserve 0": (ValueError, lambda w: w.sm.sys_reserve(None, 0)),
    "reserve negative": (ValueError, lambda w: w.sm.sys_reserve(None, -PS)),
    "reserve_aligned 0": (ValueError, lambda w: w.sm.sys_reserve_aligned(None, 0, 64 * KiB)),
    "map 0": (ValueError, lambda w: w.sm.sys_map(w.r2, 0, w.st)),
    "map negative": (ValueError, lambda w: w.sm.sys_map(w.r2, -PS, w.st)),
    "used 0": (ValueError, lambda w: w.sm.sys_used(w.rdy, 0, 0)),
    "unused 0": (ValueError, lambda w: w.sm.sys_unused(w.a, 0)),
    "unused negative": (ValueError, lambda w: w.sm.sys_unused(w.a, -PS)),
    "fault 0": (ValueError, lambda w: w.sm.sys_fault(w.a, 0)),
    "free 0": (ValueError, lambda w: w.sm.sys_free(w.a, 0, w.st)),
    "unreserve 0": (ValueError, lambda w: w.sm.sys_unreserve(w.r2, 0)),
    "unreserve negative": (ValueError, lambda w: w.sm.sys_unreserve(w.r2, -PS)),
    "huge_page negative": (ValueError, lambda w: w.sm.sys_huge_page(w.a, -PS)),
    "no_huge_page negative": (ValueError, lambda w: w.sm.sys_no_huge_page(w.a, -PS)),
    "collapse negative": (ValueError, lambda w: w.sm.sys_huge_page_collapse(w.a, -PS)),
    # views of memory that is not Ready
    "view reserved": (InaccessibleMemoryError, lambda w: w.sm.view(w.r, PS)),
    "view prepared": (InaccessibleMemoryError, lambda w: w.sm.view(w.prep, PS)),
    "view prepared+ready": (InaccessibleMemoryError, lambda w: w.sm.view(w.rdy - PS, 2 * PS)),
    "view past ready end": (InaccessibleMemoryError, lambda w: w.sm.view(w.edge_y + 256 * KiB - 8, 16)),
    "view hole": (InaccessibleMemoryError, lambda w: w.sm.view(w.hole, PS)),
    "view 0 bytes": (ValueError, lambda w: w.sm.view(w.a, 0)),
    "view odd bytes for dtype": (ValueError, lambda w: w.sm.view(w.a, 6, np.uint32)),
    "view zero-size dtype": (ValueError, lambda w: w.sm.view(w.a, PS, "V0")),
    "view object dtype": (TypeError, lambda w: w.sm.view(w.a, PS, object)),
    # arguments that are not integers in [0, 2**64): bool, float, too big, negative
    "alloc size bool": (TypeError, lambda w: w.sm.sys_alloc(True, w.st)),
    "alloc size float": (TypeError, lambda w: w.sm.sys_alloc(float(PS), w.st)),
    "alloc size 2**64": (ValueError, lambda w: w.sm.sys_alloc(1 << 64, w.st)),
    "reserve size 2**64": (ValueError, lambda w: w.sm.sys_reserve(None, 1 << 64)),
    "reserve hint negative": (ValueError, lambda w: w.sm.sys_reserve(-PS, PS)),
    "reserve hint float": (TypeError, lambda w: w.sm.sys_reserve(float(w.hole), PS)),
    "reserve_aligned hint negative": (ValueError, lambda w: w.sm.sys_reserve_aligned(-PS, 1 * MiB, 2 * MiB)),
    "reserve_aligned hint 2**64": (ValueError, lambda w: w.sm.sys_reserve_aligned(1 << 64, 1 * MiB, 2 * MiB)),
    "reserve_aligned align float": (TypeError, lambda w: w.sm.sys_reserve_aligned(None, 1 * MiB, 2.0 * MiB)),
    "reserve_aligned align bool": (TypeError, lambda w: w.sm.sys_reserve_aligned(None, 1 * MiB, True)),
    "map address float": (TypeError, lambda w: w.sm.sys_map(float(w.r2), PS, w.st)),
    "map address 2**64": (ValueError, lambda w: w.sm.sys_map(1 << 64, PS, w.st)),
    "map past 2**64": (ValueError, lambda w: w.sm.sys_map((1 << 64) - PS, 2 * PS, w.st)),
    "used prepared bool": (TypeError, lambda w: w.sm.sys_used(w.prep, PS, True)),
    "used prepared float": (TypeError, lambda w: w.sm.sys_used(w.prep, PS, float(PS))),
    "used prepared np float": (TypeError, lambda w: w.sm.sys_used(w.prep, PS, np.float64(PS))),
    "unused address float": (TypeError, lambda w: w.sm.sys_unused(float(w.a), PS)),
    "unused address 2**64": (ValueError, lambda w: w.sm.sys_unused(1 << 64, PS)),
    "fault size None": (TypeError, lambda w: w.sm.sys_fault(w.a, None)),
    "free size np float": (TypeError, lambda w: w.sm.sys_free(w.a, np.float64(1 * MiB), w.st)),
    "huge_page address float": (TypeError, lambda w: w.sm.sys_huge_page(float(w.a), PS)),
    "view address float": (TypeError, lambda w: w.sm.view(w.a + 0.5, PS)),
    "stat add float": (TypeError, lambda w: w.st.add(0.5)),
    "stat add bool": (TypeError, lambda w: w.st.add(True)),
    # numpy integers are plain integers: the usual rules apply to them
    "map np ints on prepared": (IllegalTransitionError,
                                lambda w: w.sm.sys_map(np.uint64(w.prep), np.int64(PS), w.st)),
    "unused np ints in the hole": (NotReservedError, lambda w: w.sm.sys_unused(np.uint64(w.hole), np.int32(PS))),
    "used np prepared wrong": (PreparedCountError, lambda w: w.sm.sys_used(w.prep, PS, np.uint64(0))),
}

# the built-in each exception also is (callers may catch the familiar one)
BUILTIN = {
    MisalignedRangeError: (ValueError,),
    PreparedCountError: (ValueError,),
    IllegalTransitionError: (ValueError,),
    NotReservedError: (IllegalTransitionError, ValueError),
    PartialRegionError: (IllegalTransitionError, ValueError),
    StatOverflowError: (OverflowError,),
    InaccessibleMemoryError: (ValueError,),
}


@pytest.mark.parametrize("case", list(ILLEGAL))
def test_illegal_call_raises_and_changes_nothing(world, case):
    exc, call = ILLEGAL[case]
    with refused(world.sm, exc, also=BUILTIN.get(exc, ())) as info:
        call(world)
    if exc is not StatOverflowError:  # a raw cffi OverflowError means no check ran
        assert not isinstance(info.value, OverflowError), info.value


#: the ILLEGAL cases about memory this SysMem does not own: refused with the ledger off too
UNOWNED = [case for case in ILLEGAL if ILLEGAL[case][0] is NotReservedError]


@pytest.mark.parametrize("case", UNOWNED)
def test_unowned_memory_is_refused_without_the_ledger_too(make_sm, case):
    """Regression: with ledger=False every operation accepted any address."""
    sm = make_sm("", ledger=False)
    w = World(sm)
    _exc, call = ILLEGAL[case]
    with refused(sm, NotReservedError, also=(ValueError,)):
        call(w)


def test_world_still_works_after_refusals(world):
    """The legal versions of the refused calls go through afterwards."""
    sm, st = world.sm, world.st
    sm.sys_used(world.prep, 512 * KiB, 256 * KiB)
    sm.sys_unused(world.rdy, PS)
    sm.sys_fault(world.rdy + PS, PS)
    st.add(-PS)
    sm.sys_free(world.a, 1 * MiB, st)
    sm.sys_unreserve(world.r2, 256 * KiB)
    assert sm.mapped_ready == 1 * MiB - 2 * PS
    sm.check()


def test_free_with_a_stat_that_would_go_negative(linux_sm):
    """The heap moves bytes between its stats (heap_in_use → heap_released); freeing
    against a stat that no longer holds them would wrap it: Go's "sysMemStat overflow"."""
    sm = linux_sm
    hin, hrel = sm.stat("heap_in_use"), sm.stat("heap_released")
    p = sm.sys_alloc(1 * MiB, hin)
    hin.add(-1 * MiB)
    hrel.add(1 * MiB)
    sm.check()  # the heap group as a whole still matches
    with refused(sm, StatOverflowError, also=(OverflowError,)):
        sm.sys_free(p, 1 * MiB, hin)
    hin.add(1 * MiB)
    hrel.add(-1 * MiB)
    sm.sys_free(p, 1 * MiB, hin)
    sm.check()


def test_free_with_an_empty_stat_without_ledger(make_sm):
    sm = make_sm("", ledger=False)
    st, empty = sm.stat("other_sys"), SysMemStat("empty")
    p = sm.sys_alloc(64 * KiB, st)
    with refused(sm, StatOverflowError, empty):
        sm.sys_free(p, 64 * KiB, empty)
    with refused(sm, RootRegionError, empty, also=(ValueError,)):
        sm.sys_free(p, 32 * KiB, st)  # the root-region registry still insists on whole regions
    sm.sys_free(p, 64 * KiB, st)
    assert sm.mapped_ready == 0 and st.load() == 0


def test_alloc_with_a_full_stat_changes_no_accounting(linux_sm):
    sm = linux_sm
    full = SysMemStat("full", value=(1 << 64) - 1)
    with refused(sm, StatOverflowError, full):
        sm.sys_alloc(1 * MiB, full)


class Recorder:
    """libc, with every call recorded as (name, *args, result)."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def __getattr__(self, name):
        fn = getattr(L.libc, name)

        def call(*args):
            result = fn(*args)
            self.calls.append((name, *args, result))
            return result

        return call

    def of(self, kind: str) -> list[tuple]:
        return [c for c in self.calls if c[0] == kind]


def test_alloc_with_a_full_stat_maps_nothing(make_sm):
    """Regression (HEAD a7c4190): sys_alloc mmapped before checking the stat, so the
    StatOverflowError leaked the fresh mapping."""
    debug = DebugSettings.from_godebug("")
    fake = Recorder()
    sm = make_sm(debug, backend=LinuxBackend(debug, syscalls=fake))
    full = SysMemStat("full", value=(1 << 64) - 1)
    try:
        with pytest.raises(StatOverflowError):
            sm.sys_alloc(1 * MiB, full)
        mapped = {c[7] for c in fake.of("mmap")} - {c[1] for c in fake.of("munmap")}
        assert mapped == set(), "the mapping made for the refused sys_alloc is still there"
    finally:
        unmapped = {c[1] for c in fake.of("munmap")}
        for c in fake.of("mmap"):
            if c[7] not in unmapped and c[7] != L.MAP_FAILED:
                L.libc.munmap(c[7], c[2])


def test_settings_cannot_change_harddecommit_midway(make_sm):
    """Go reads GODEBUG once: a running SysMem refuses a new harddecommit, either when it
    is set or at the next call that depends on it, and changes nothing."""
    from sysmem import SysMemError

    sm = make_sm("")
    st = sm.stat("other_sys")
    p = sm.sys_alloc(64 * KiB, st)
    before = snapshot(sm)
    try:
        sm.debug.harddecommit = 1
    except SysMemError:
        pass  # refused on the spot
    else:
        try:
            with pytest.raises(SysMemError):
                sm.sys_unused(p, PS)
        finally:
            sm.debug.harddecommit = 0
    assert sm.debug.harddecommit == 0 and snapshot(sm) == before
    # the shared-backend route: a second SysMem on the same backend asking for it
    with pytest.raises(FrozenSettingError):
        SysMem(sm.backend, godebug="harddecommit=1")
    with pytest.raises(ValueError):
        SysMem(sm.backend, godebug=DebugSettings(harddecommit=1))
    with pytest.raises(AttributeError):
        sm.backend.debug = DebugSettings(harddecommit=1)
    assert sm.backend.debug is sm.debug and sm.debug.harddecommit == 0
    assert snapshot(sm) == before
    sm.sys_unused(p, PS)
    sm.check()


# -- live views block unmapping/protecting --------------------------------------------------


def test_live_view_blocks_free_until_dropped(linux_sm):
    sm, st = linux_sm, linux_sm.stat("other_sys")
    p = sm.sys_alloc(1 * MiB, st)
    v = sm.view(p + 4 * PS, PS)
    assert sm.live_views(p, 1 * MiB) == [(p + 4 * PS, p + 5 * PS)]
    with refused(sm, LiveViewError, also=(BufferError,)):
        sm.sys_free(p, 1 * MiB, st)
    del v
    sm.sys_free(p, 1 * MiB, st)
    assert sm.mapped_ready == 0 and sm.runs() == []


def test_live_view_blocks_fault_of_overlapping_pages_only(linux_sm):
    sm, st = linux_sm, linux_sm.stat("other_sys")
    p = sm.sys_alloc(1 * MiB, st)
    v = sm.view(p + PS, 2 * PS)
    with refused(sm, LiveViewError, also=(BufferError,)):
        sm.sys_fault(p, 2 * PS)
    with refused(sm, LiveViewError):
        sm.sys_fault(p + 2 * PS, PS)
    sm.sys_fault(p + 3 * PS, PS)  # next to the view: fine
    st.add(-PS)
    v[:] = 3  # and the view still works
    del v
    sm.sys_fault(p, 3 * PS)
    st.add(-3 * PS)
    assert sm.mapped_ready == 1 * MiB - 4 * PS
    sm.check()


def test_live_view_blocks_unreserve_without_ledger(make_sm):
    sm = make_sm("", ledger=False)
    st = sm.stat("other_sys")
    p = sm.sys_reserve(None, 256 * KiB)
    sm.sys_map(p, 256 * KiB, st)
    sm.sys_used(p, 256 * KiB, 256 * KiB)
    v = sm.view(p, PS)
    with refused(sm, LiveViewError, also=(BufferError,)):
        sm.sys_unreserve(p, 256 * KiB)
    del v
    sm.sys_unreserve(p, 256 * KiB)
    assert sm.root_regions.regions() == [] and sm.accessible_ranges() == []


def test_live_view_blocks_unused_under_harddecommit(make_sm):
    sm = make_sm("harddecommit=1")
    st = sm.stat("other_sys")
    p = sm.sys_alloc(64 * KiB, st)
    v = sm.view(p, PS)
    with refused(sm, LiveViewError):
        sm.sys_unused(p, 64 * KiB)
    del v
    sm.sys_unused(p, 64 * KiB)
    assert sm.mapped_ready == 0


def test_live_view_blocks_used_under_harddecommit(make_sm):
    """Regression: harddecommit's sysUsedOS re-mmaps its whole range, Ready pages too, so
    sys_used over Prepared + Ready pages zeroed a live view's memory without a word."""
    sm = make_sm("harddecommit=1")
    st = sm.stat("other_sys")
    p = sm.sys_alloc(8 * PS, st)
    v = sm.view(p + PS, 7 * PS)
    v[:] = 0xAB
    sm.sys_unused(p, PS)  # page 0 Prepared, pages 1..7 Ready under the view
    with refused(sm, LiveViewError, also=(BufferError,)):
        sm.sys_used(p, 8 * PS, PS)
    with refused(sm, LiveViewError):
        sm.sys_used(p + 7 * PS, PS, 0)  # Ready only: still a fresh mapping
    assert (v == 0xAB).all()
    sm.sys_used(p, PS, PS)  # next to the view: fine
    del v
    sm.sys_unused(p, PS)
    sm.sys_used(p, 8 * PS, PS)  # Go's call over the whole range, once no view is there
    assert not sm.view(p, 8 * PS).any()  # every page is a fresh one, as in Go
    sm.check()


def test_slices_and_dtype_views_keep_the_pin(linux_sm):
    sm, st = linux_sm, linux_sm.stat("other_sys")
    p = sm.sys_alloc(64 * KiB, st)
    v = sm.view(p, 64 * KiB, np.uint32)
    s = v[100:200:3]
    t = s.reshape(-1)[::2]
    del v, s
    with refused(sm, LiveViewError):
        sm.sys_free(p, 64 * KiB, st)
    t[:] = 9
    del t
    sm.sys_free(p, 64 * KiB, st)


_DANGLING: list = []


def test_the_views_base_buffer_keeps_the_pin(linux_sm):
    """Regression (HEAD a7c4190): the pin was a weakref to the array, whose ``.base`` (a
    raw cffi buffer) could outlive it and expose unmapped memory."""
    sm, st = linux_sm, linux_sm.stat("other_sys")
    p = sm.sys_alloc(64 * KiB, st)
    raw = sm.view(p, PS).base  # anything made from a view, here the array's base object
    assert raw is not None
    try:
        with pytest.raises(LiveViewError):
            sm.sys_free(p, 64 * KiB, st)  # must not unmap what ``raw`` still exposes
    finally:
        if not sm.runs():
            _DANGLING.append(raw)  # it did unmap: keep ``raw`` from being freed, never touch it


def test_view_kept_alive_only_by_a_cycle_does_not_block(linux_sm):
    sm, st = linux_sm, linux_sm.stat("other_sys")
    p = sm.sys_alloc(64 * KiB, st)

    class Holder:
        pass

    was_enabled = gc.isenabled()
    gc.disable()  # so the cycle is certainly still uncollected when sys_free looks
    try:
        h = Holder()
        h.me, h.view = h, sm.view(p, PS)
        del h
        assert sm.live_views(p, 64 * KiB)  # not yet collected
        sm.sys_free(p, 64 * KiB, st)  # check_unpinned collects the cycle
    finally:
        if was_enabled:
            gc.enable()
    assert sm.runs() == [] and sm.mapped_ready == 0


# -- views ------------------------------------------------------------------------------------


def test_views_read_and_write_the_memory(linux_sm):
    sm, st = linux_sm, linux_sm.stat("other_sys")
    n = 64 * KiB
    p = sm.sys_alloc(n, st)
    a = sm.view(p, n)
    assert a.dtype == np.uint8 and a.shape == (n,) and a.flags.writeable
    a[:] = np.arange(n, dtype=np.uint64).astype(np.uint8)
    b = sm.view(p + 256, 256)  # a second view sees the same bytes
    assert b.tolist() == list(range(256))
    w = sm.view(p, 16, np.uint64)
    assert w.dtype == np.uint64 and w.shape == (2,)
    w[0] = 0x1122334455667788
    assert a[:8].tolist() == [0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11]  # little endian
    f = sm.view(p + PS, 8 * PS, np.float64)
    f[:] = 1.5
    assert sm.view(p + PS, 8, np.float64)[0] == 1.5
    assert L.ffi.cast("unsigned char *", p)[3] == 0x55  # the same memory, really
    assert sm.os_pages(p, n).resident.all()
    del a, b, w, f
    sm.check()


def test_views_without_ledger_follow_accessibility(make_sm):
    sm = make_sm("", ledger=False)
    st = sm.stat("other_sys")
    p = sm.sys_reserve(None, 256 * KiB)
    with refused(sm, InaccessibleMemoryError):
        sm.view(p, PS)  # reserved: PROT_NONE
    sm.sys_map(p, 128 * KiB, st)
    v = sm.view(p, 128 * KiB)  # Prepared memory is mapped read/write on Linux: allowed
    v[:] = 2
    with refused(sm, InaccessibleMemoryError):
        sm.view(p + 64 * KiB, 128 * KiB)  # runs into the reserved half
    del v
    with pytest.raises(LedgerDisabledError):
        sm.runs()
    with pytest.raises(LedgerDisabledError):
        sm.check()
    sm.sys_unreserve(p, 256 * KiB)
    with refused(sm, InaccessibleMemoryError):
        sm.view(p, PS)  # freed


def test_view_after_free_is_refused(linux_sm):
    sm, st = linux_sm, linux_sm.stat("other_sys")
    p = sm.sys_alloc(64 * KiB, st)
    sm.sys_free(p, 64 * KiB, st)
    with refused(sm, InaccessibleMemoryError):
        sm.view(p, PS)


def test_view_after_unused_and_used_reads_zeros_under_dontneed(linux_sm):
    sm, st = linux_sm, linux_sm.stat("other_sys")
    n = 256 * KiB
    p = sm.sys_alloc(n, st)
    held = sm.view(p, n)
    held[:] = 0xEE
    sm.sys_unused(p, n)  # allowed under a live view: the memory stays mapped read/write
    with refused(sm, InaccessibleMemoryError):
        sm.view(p, PS)  # but Prepared memory gets no new view
    sm.sys_used(p, n, n)
    assert not sm.need_zero_after_sys_unused()
    assert not sm.view(p, n).any()  # DONTNEED gave zero pages back
    assert not held.any()  # the old view reads the new zero pages too
    del held
    sm.check()


# -- sys_fault really faults ----------------------------------------------------------------


def _touch(addr: int, write: bool) -> None:  # runs in a forked child
    import faulthandler
    import resource

    faulthandler.disable()  # die of the signal itself, quietly
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # and leave no core file
    mem = L.ffi.cast("unsigned char *", addr)
    if write:
        mem[0] = 1
    else:
        _ = mem[0]
    os._exit(0)


def _in_child(addr: int, write: bool) -> int:
    proc = multiprocessing.get_context("fork").Process(target=_touch, args=(addr, write))
    proc.start()
    proc.join(30)
    assert proc.exitcode is not None, "the child hung"
    return proc.exitcode


@pytest.mark.skipif(sys.platform != "linux", reason="fork + SIGSEGV on Linux")
def test_touching_faulted_memory_kills_with_sigsegv(linux_sm):
    sm, st = linux_sm, linux_sm.stat("other_sys")
    n = 64 * KiB
    p = sm.sys_alloc(n, st)
    sm.view(p, n)[:] = 1
    assert _in_child(p + PS, True) == 0  # control: Ready memory is fine to touch
    sm.sys_fault(p + PS, 2 * PS)
    st.add(-2 * PS)
    assert _in_child(p + PS, True) == -signal.SIGSEGV
    assert _in_child(p + 2 * PS + 100, False) == -signal.SIGSEGV  # reading faults too
    assert _in_child(p + 3 * PS, True) == 0  # the next page is still Ready
    # the parent is alive, and the public API refuses instead of faulting
    with refused(sm, InaccessibleMemoryError):
        sm.view(p + PS, PS)
    with refused(sm, InaccessibleMemoryError):
        sm.view(p, 2 * PS)
    pages = sm.os_pages(p + PS, 2 * PS)
    assert pages.mapped.all() and not pages.accessible.any() and not pages.resident.any()
    sm.check()


# -- check() can fail --------------------------------------------------------------------------


def test_check_catches_a_wrong_mapped_ready(world):
    sm = world.sm
    sm._mapped_ready += PS
    try:
        with pytest.raises(AccountingMismatchError, match="mapped_ready"):
            sm.check(os=False)
        assert isinstance(AccountingMismatchError("x"), AssertionError)
    finally:
        sm._mapped_ready -= PS
    sm.check()


def test_check_catches_a_wrong_stat(world):
    sm = world.sm
    world.st.add(PS)
    try:
        with pytest.raises(AccountingMismatchError, match="other_sys"):
            sm.check()
        assert any("other_sys" in p for p in sm.accounting_problems())
    finally:
        world.st.add(-PS)
    sm.check()


def test_check_catches_a_stray_root_region(world):
    sm = world.sm
    sm.root_regions.register(world.hole, PS)
    try:
        with pytest.raises(AccountingMismatchError, match="root regions"):
            sm.check(os=False)
    finally:
        sm.root_regions.unregister(world.hole, PS)
    sm.check()


def test_check_catches_protection_changed_behind_its_back(world):
    sm = world.sm
    assert sm.os_problems() == []
    assert L.libc.mprotect(world.a + PS, PS, L.PROT_NONE) == 0
    try:
        problems = sm.os_problems()
        assert len(problems) == 1 and "READY" in problems[0] and "not accessible" in problems[0]
        with pytest.raises(AccountingMismatchError):
            sm.check()
        sm.check(os=False)  # the accounting itself is still right
    finally:
        assert L.libc.mprotect(world.a + PS, PS, L.PROT_READ | L.PROT_WRITE) == 0
    sm.check()


def test_check_catches_prepared_memory_made_resident_behind_its_back(world):
    sm = world.sm
    L.ffi.cast("unsigned char *", world.prep + 8 * PS)[0] = 1  # touch a Prepared page directly
    try:
        problems = sm.os_problems()
        assert len(problems) == 1 and "PREPARED" in problems[0] and "resident" in problems[0]
    finally:
        assert L.libc.madvise(world.prep + 8 * PS, PS, L.MADV_DONTNEED) == 0
    sm.check()


def test_check_catches_a_mapping_that_vanished(world):
    sm = world.sm
    assert L.libc.munmap(world.r2, PS) == 0
    try:
        problems = sm.os_problems()
        assert any("no mapping" in p for p in problems)
    finally:
        p = L.libc.mmap(world.r2, PS, L.PROT_NONE,
                        L.MAP_ANONYMOUS | L.MAP_PRIVATE | L.MAP_FIXED, -1, 0)
        assert p == world.r2
    sm.check()
