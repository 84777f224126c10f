"""The thirteen operations of Go's ``mem.go`` on real Linux memory.

For each operation: the state change (``runs()`` / ``state_bytes()``), the accounting
change (``mapped_ready`` and the SysMemStat passed in) and the kernel's agreement
(``os_pages`` from smaps + mincore, raw ``/proc/self/smaps`` fields, and ``check()``).
Also the GODEBUG knobs, the MADV_FREE → MADV_DONTNEED → fresh-mmap fallback chain of
Go's ``sysUnusedOS``, Go's VMA naming, threads on disjoint regions and the module-level
functions.

Kernel facts used (``mm/madvise.c``, ``mm/mmap.c``): MADV_DONTNEED and MADV_FREE don't
split a VMA; mprotect, MAP_FIXED mmap, MADV_HUGEPAGE/NOHUGEPAGE do, at the range's
boundaries. So a range mapped between two PROT_NONE guard pages is exactly one VMA,
whose ``Rss`` and ``LazyFree`` are the range's own.
"""

from __future__ import annotations

import random
import threading

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as hst

import sysmem
from sysmem.errors import FrozenSettingError
from sysmem import (
    DebugSettings,
    MisalignedRangeError,
    PreparedCountError,
    Run,
    State,
    SysMem,
)
from sysmem import _libc as L
from sysmem import _linux
from sysmem._linux import LinuxBackend
from sysmem._procfs import smaps

pytestmark = pytest.mark.linux

PS = L.libc.sysconf(L.SC_PAGESIZE)
KiB, MiB = 1 << 10, 1 << 20
HUGE = _linux.huge_page_size_from_sysfs()

needs_thp = pytest.mark.skipif(HUGE == 0, reason="no transparent huge pages on this kernel")


# -- helpers --------------------------------------------------------------------------


def vmas(v: int, n: int) -> list[tuple[int, int, str, frozenset]]:
    """(start, end, perms, VmFlags) of the mappings over [v, v+n), clipped to it."""
    return [(max(m.start, v), min(m.end, v + n), m.perms, m.vmflags) for m in smaps(v, n)]


def vma_at(addr: int):
    """The whole (unclipped) smaps entry containing ``addr``."""
    (m,) = smaps(addr, 1)
    return m


def unmapped(v: int, n: int) -> bool:
    """True when no page of [v, v+n) is mapped (per-page mincore, no smaps read, so
    nothing Python allocates meanwhile can land in the hole first)."""
    vec = L.ffi.new("unsigned char[1]")
    for a in range(v, v + n, PS):
        if L.libc.mincore(a, PS, vec) == 0 or L.ffi.errno != L.ENOMEM:
            return False
    return True


def carve(sm: SysMem, n: int, align: int = PS) -> tuple[int, int, int]:
    """Reserve a region with a PROT_NONE guard page on each side of an ``align``-aligned
    [p, p+n) inside it. Returns (base, size, p): once mapped, [p, p+n) is its own VMA."""
    size = n + align + 2 * PS
    base = sm.sys_reserve(None, size)
    assert base is not None
    p = (base + PS + align - 1) & -align
    assert base + PS <= p and p + n + PS <= base + size
    return base, size, p


def ready(sm: SysMem, n: int, stat, align: int = PS, touch: bool = True) -> tuple[int, int, int]:
    """carve() + sys_map + sys_used, and (by default) write every page."""
    base, size, p = carve(sm, n, align)
    sm.sys_map(p, n, stat)
    sm.sys_used(p, n, n)
    if touch:
        v = sm.view(p, n)
        v[::PS] = 0xA5
        del v
    return base, size, p


def state_map(sm: SysMem) -> list[tuple[int, int, State, str | None]]:
    return [(r.start, r.end, r.state, r.stat.name if r.stat else None) for r in sm.runs()]


class FakeSyscalls:
    """libc's mmap/munmap/mprotect/madvise/prctl, recorded, with chosen failures.

    A failing call returns -1 and sets ``ffi.errno`` as libc would (the backend reads
    ``ffi.errno`` right after the call). prctl never reaches the kernel: it records the
    name buffer and returns 0, or -1 with ``prctl_errno``.
    """

    def __init__(self, fail_madvise=(), prctl_errno: int | None = None) -> None:
        self.fail_madvise = set(fail_madvise)
        self.prctl_errno = prctl_errno
        self.calls: list[tuple] = []

    def mmap(self, addr, length, prot, flags, fd, offset):
        p = L.libc.mmap(addr, length, prot, flags, fd, offset)
        self.calls.append(("mmap", addr, length, prot, flags, p))
        return p

    def munmap(self, addr, length):
        self.calls.append(("munmap", addr, length))
        return L.libc.munmap(addr, length)

    def mprotect(self, addr, length, prot):
        self.calls.append(("mprotect", addr, length, prot))
        return L.libc.mprotect(addr, length, prot)

    def madvise(self, addr, length, advice):
        self.calls.append(("madvise", addr, length, advice))
        if advice in self.fail_madvise:
            L.ffi.errno = L.EINVAL
            return -1
        return L.libc.madvise(addr, length, advice)

    def prctl(self, option, arg2, arg3, arg4, arg5):
        name = L.ffi.string(L.ffi.cast("char *", arg5)) if arg5 else None
        self.calls.append(("prctl", option, arg2, arg3, arg4, name))
        if self.prctl_errno is not None:
            L.ffi.errno = self.prctl_errno
            return -1
        return 0

    def of(self, kind: str) -> list[tuple]:
        return [c for c in self.calls if c[0] == kind]

    def advices(self) -> list[int]:
        return [c[3] for c in self.of("madvise")]

    def names(self) -> list[bytes]:
        return [c[5] for c in self.of("prctl")]


@pytest.fixture
def fake_sm(make_sm):
    """``fake_sm(godebug, **fake_options) -> (SysMem, FakeSyscalls)``."""

    def make(godebug: str = "", **fake_options):
        debug = DebugSettings.from_godebug(godebug)
        fake = FakeSyscalls(**fake_options)
        sm = make_sm(debug, backend=LinuxBackend(debug, syscalls=fake))
        assert sm.debug is debug and sm.backend.debug is debug
        return sm, fake

    return make


@pytest.fixture
def fresh_advice():
    """Go's process-wide adviseUnused back at MADV_FREE before and after the test."""
    _linux.reset_advise_unused()
    yield
    _linux.reset_advise_unused()


@pytest.fixture
def naming_on(monkeypatch):
    """Pretend the kernel has not refused a VMA name yet (restored afterwards)."""
    monkeypatch.setattr(_linux, "_vma_names_unsupported", False)


# -- None ⇄ Ready: sys_alloc / sys_free -------------------------------------------------


def test_sys_alloc_maps_zeroed_ready_memory_and_counts_it(linux_sm):
    sm, st = linux_sm, linux_sm.stat("other_sys")
    n = 1 * MiB
    p = sm.sys_alloc(n, st, "test alloc")
    assert p is not None and p % PS == 0
    # state
    assert state_map(sm) == [(p, p + n, State.READY, "other_sys")]
    assert sm.state_bytes() == {State.RESERVED: 0, State.PREPARED: 0, State.READY: n}
    assert sm.root_regions.regions() == [(p, n)]
    # accounting
    assert st.load() == n and sm.mapped_ready == n
    # kernel: read/write private anonymous memory, nothing resident until touched
    assert {perms for *_, perms, _f in vmas(p, n)} == {"rw-p"}
    pages = sm.os_pages(p, n)
    assert pages.mapped.all() and pages.accessible.all() and not pages.resident.any()
    v = sm.view(p, n)
    assert not v.any()  # zeroed, as sysAlloc promises
    v[::PS] = 1
    del v
    assert sm.os_pages(p, n).resident.all()
    sm.check()


def test_sys_free_unmaps_the_region_and_uncounts_it(linux_sm):
    sm, st = linux_sm, linux_sm.stat("other_sys")
    n = 1 * MiB
    p = sm.sys_alloc(n, st)
    sm.view(p, n)[:] = 7
    sm.sys_free(p, n, st)
    assert unmapped(p, n)
    assert st.load() == 0 and sm.mapped_ready == 0
    assert sm.runs() == [] and sm.root_regions.regions() == [] and sm.accessible_ranges() == []
    sm.check()


def test_sys_free_of_a_reserved_then_mapped_region(linux_sm):
    """sysFree takes any whole region whose pages are all Ready in its stat."""
    sm, st = linux_sm, linux_sm.stat("gc_misc_sys")
    n = 256 * KiB
    p = sm.sys_reserve(None, n)
    sm.sys_map(p, n, st)
    sm.sys_used(p, n, n)
    assert sm.mapped_ready == n and st.load() == n
    sm.sys_free(p, n, st)
    assert unmapped(p, n) and sm.mapped_ready == 0 and st.load() == 0
    sm.check()


# -- None ⇄ Reserved: sys_reserve / sys_reserve_aligned / sys_unreserve ----------------


def test_sys_reserve_is_address_space_only(linux_sm):
    sm = linux_sm
    n = 4 * MiB
    p = sm.sys_reserve(None, n, "test reservation")
    assert p is not None and p % PS == 0
    assert state_map(sm) == [(p, p + n, State.RESERVED, None)]
    assert sm.root_regions.regions() == [(p, n)]
    assert sm.mapped_ready == 0 and all(s.load() == 0 for s in sm.stats.values())
    assert {perms for *_, perms, _f in vmas(p, n)} == {"---p"}
    pages = sm.os_pages(p, n)
    assert pages.mapped.all() and not pages.accessible.any() and not pages.resident.any()
    sm.check()


def test_sys_reserve_honours_a_free_hint(linux_sm):
    sm = linux_sm
    n = 1 * MiB
    hole = sm.sys_reserve(None, 4 * n)
    sm.sys_unreserve(hole, 4 * n)
    p = sm.sys_reserve(hole + n, n)
    assert p == hole + n  # the kernel takes a free hint
    assert sm.root_regions.regions() == [(p, n)]


def test_sys_unreserve_gives_the_address_space_back(linux_sm):
    sm = linux_sm
    n = 2 * MiB
    p = sm.sys_reserve(None, n)
    sm.sys_unreserve(p, n)
    assert unmapped(p, n)
    assert sm.runs() == [] and sm.root_regions.regions() == [] and sm.mapped_ready == 0
    sm.check()


def test_sys_unreserve_of_a_faulted_region(linux_sm):
    """A region all of whose pages went back to Reserved (sysFault) can be unreserved."""
    sm, st = linux_sm, linux_sm.stat("other_sys")
    n = 64 * KiB
    p = sm.sys_alloc(n, st)
    sm.sys_fault(p, n)
    st.add(-n)  # sysFault's caller takes the bytes out of their stat
    sm.sys_unreserve(p, n)
    assert unmapped(p, n) and sm.mapped_ready == 0 and sm.runs() == []
    sm.check()


def _free_window(sm: SysMem, n: int) -> int:
    w = sm.sys_reserve(None, n)
    sm.sys_unreserve(w, n)
    return w


def test_sys_reserve_aligned_lucky_keeps_the_whole_over_reservation(fake_sm):
    sm, fake = fake_sm()
    size, align = 1 * MiB, 4 * MiB
    w = _free_window(sm, 32 * MiB)
    hint = (w + 8 * MiB) & -align  # aligned and free: the kernel returns it
    start = len(fake.calls)
    p, n = sm.sys_reserve_aligned(hint, size, align, "heap")
    assert p == hint and p % align == 0
    assert n == size + align  # Go keeps and reports it all
    assert sm.root_regions.regions() == [(p, size + align)]
    assert state_map(sm) == [(p, p + size + align, State.RESERVED, None)]
    assert fake.of("munmap") == fake.of("munmap")[:1]  # only _free_window's: no trimming
    assert [c[0] for c in fake.calls[start:]] in (["mmap"], ["mmap", "prctl"])
    assert {perms for *_, perms, _f in vmas(p, n)} == {"---p"}
    assert sm.mapped_ready == 0
    sm.check()


def test_sys_reserve_aligned_trims_head_and_tail(fake_sm):
    sm, fake = fake_sm()
    size, align = 1 * MiB, 4 * MiB
    w = _free_window(sm, 32 * MiB)
    hint = ((w + 8 * MiB) & -align) + PS  # free but misaligned: the trimming path
    start = len(fake.calls)
    p, n = sm.sys_reserve_aligned(hint, size, align, "heap")
    (raw,) = [c[5] for c in fake.calls[start:] if c[0] == "mmap"]
    assert raw == hint
    assert p == (raw + align - 1) & -align and n == size
    # head [raw, p) and tail [p+size, raw+size+align) went back to the OS...
    assert ("munmap", raw, p - raw) in fake.calls[start:]
    assert ("munmap", p + size, raw + size + align - (p + size)) in fake.calls[start:]
    assert unmapped(raw, p - raw) and unmapped(p + size, raw + size + align - (p + size))
    # ...and the kept part is the only region, re-registered at its new size
    assert sm.root_regions.regions() == [(p, size)]
    assert state_map(sm) == [(p, p + size, State.RESERVED, None)]
    assert {perms for *_, perms, _f in vmas(p, size)} == {"---p"}
    assert sm.mapped_ready == 0
    sm.check()
    sm.sys_unreserve(p, size)  # the kept part is a whole region now
    assert sm.root_regions.regions() == []


@pytest.mark.parametrize("align", [64 * KiB, 2 * MiB, 64 * MiB])
def test_sys_reserve_aligned_without_hint(fake_sm, align):
    sm, fake = fake_sm()
    size = 1 * MiB
    start = len(fake.calls)
    p, n = sm.sys_reserve_aligned(None, size, align)
    assert p is not None and p % align == 0 and n in (size, size + align)
    (raw,) = [c[5] for c in fake.calls[start:] if c[0] == "mmap"]  # the over-reservation
    if n == size + align:  # aligned by luck: Go keeps all of it, nothing is trimmed
        assert raw == p and not [c for c in fake.calls[start:] if c[0] == "munmap"]
    else:  # trimmed: head [raw, p) and tail [p+size, raw+size+align) went back to the OS
        head, tail = p - raw, raw + size + align - (p + size)
        trims = [c for c in fake.calls[start:] if c[0] == "munmap"]
        assert trims == [c for c in (("munmap", raw, head), ("munmap", p + size, tail)) if c[2]]
        assert unmapped(raw, head) and unmapped(p + size, tail)
    assert sm.os_pages(p, n).mapped.all()  # the kept part is all there
    assert sm.root_regions.regions() == [(p, n)]
    assert state_map(sm) == [(p, p + n, State.RESERVED, None)]
    sm.check()


# -- Reserved → Prepared ⇄ Ready: sys_map / sys_used / sys_unused ----------------------


def test_sys_map_makes_reserved_memory_read_write_but_not_resident(linux_sm):
    sm, st = linux_sm, linux_sm.stat("heap_in_use")
    base, size, p = carve(sm, 1 * MiB)
    n = 1 * MiB
    sm.sys_map(p, n, st, "heap")
    assert state_map(sm) == [
        (base, p, State.RESERVED, None),
        (p, p + n, State.PREPARED, "heap_in_use"),
        (p + n, base + size, State.RESERVED, None),
    ]
    assert st.load() == n and sm.mapped_ready == 0
    m = vma_at(p)
    assert (m.start, m.end, m.perms) == (p, p + n, "rw-p") and m.rss == 0
    pages = sm.os_pages(p, n)
    assert pages.accessible.all() and not pages.resident.any()
    assert vma_at(p - PS).perms == "---p" and vma_at(p + n).perms == "---p"
    sm.check()


def test_sys_used_adds_exactly_the_prepared_bytes(linux_sm):
    sm, st = linux_sm, linux_sm.stat("other_sys")
    n = 1 * MiB
    base, size, p = carve(sm, n)
    sm.sys_map(p, n, st)
    sm.sys_used(p, n, n)
    assert sm.mapped_ready == n and st.load() == n
    assert sm.state_bytes()[State.READY] == n
    # mixed: [p, p+256K) Prepared, the rest Ready; sys_used over all of it counts 256K
    sm.sys_unused(p, 256 * KiB)
    assert sm.mapped_ready == n - 256 * KiB
    for wrong in (0, 128 * KiB, 512 * KiB, n):
        with pytest.raises(PreparedCountError):
            sm.sys_used(p, n, wrong)
    assert sm.mapped_ready == n - 256 * KiB
    sm.sys_used(p, n, 256 * KiB)
    assert sm.mapped_ready == n and st.load() == n
    assert [(r.start, r.end, r.state) for r in sm.runs() if r.state is not State.RESERVED] == [
        (p, p + n, State.READY)
    ]
    # all Ready: idempotent with prepared=0
    sm.sys_used(p, n, 0)
    assert sm.mapped_ready == n
    assert sm.view(p, n).sum() == 0  # used memory reads as zero (never touched)
    sm.check()


def test_sys_unused_default_dontneed_drops_the_pages(linux_sm):
    sm, st = linux_sm, linux_sm.stat("other_sys")
    n = 4 * MiB
    base, size, p = ready(sm, n, st)
    m = vma_at(p)
    assert (m.start, m.end) == (p, p + n) and m.rss == n
    assert sm.mapped_ready == n
    u, k = p + 1 * MiB, 2 * MiB
    sm.sys_unused(u, k)
    assert sm.mapped_ready == n - k and st.load() == n  # mapped_ready falls by exactly k
    m = vma_at(p)
    assert (m.start, m.end, m.perms) == (p, p + n, "rw-p")  # DONTNEED doesn't split
    assert m.rss == n - k and m.lazyfree == 0
    res = sm.os_pages(p, n).resident
    assert not res[(u - p) // PS : (u + k - p) // PS].any()
    assert res[: (u - p) // PS].all() and res[(u + k - p) // PS :].all()
    assert state_map(sm)[1:4] == [
        (p, u, State.READY, "other_sys"),
        (u, u + k, State.PREPARED, "other_sys"),
        (u + k, p + n, State.READY, "other_sys"),
    ]
    assert sm.need_zero_after_sys_unused() is False
    sm.check()
    # reused memory reads zero without zeroing: that is what need_zero=False means
    sm.sys_used(u, k, k)
    assert not sm.view(u, k).any()
    sm.check()


def test_sys_unused_madv_free_leaves_lazyfree_pages(make_sm):
    sm = make_sm("madvdontneed=0")
    st = sm.stat("other_sys")
    n = 4 * MiB
    base, size, p = ready(sm, n, st)
    sm.view(p, n)[:] = 0x5A  # dirty every page
    assert vma_at(p).rss == n
    sm.sys_unused(p, n)
    assert sm.mapped_ready == 0 and st.load() == n
    m = vma_at(p)
    assert (m.start, m.end, m.perms) == (p, p + n, "rw-p")
    # the kernel batches LRU moves, so a few dozen pages may lag behind
    assert n - 256 * KiB <= m.lazyfree <= n
    assert m.rss == n  # lazily freed pages stay resident until reclaim
    pages = sm.os_pages(p, n)
    assert pages.lazyfree_bytes == m.lazyfree and pages.resident.all()
    assert sm.need_zero_after_sys_unused() is True
    assert [r.state for r in sm.runs() if r.start == p] == [State.PREPARED]
    sm.check()  # resident Prepared pages are fine under MADV_FREE
    sm.sys_used(p, n, n)
    assert sm.mapped_ready == n
    sm.check()


def test_need_zero_after_sys_unused_follows_madvdontneed(make_sm):
    assert make_sm("").need_zero_after_sys_unused() is False  # Go's Linux default
    assert make_sm("madvdontneed=1").need_zero_after_sys_unused() is False
    sm = make_sm("madvdontneed=0")
    assert sm.need_zero_after_sys_unused() is True
    with pytest.raises(FrozenSettingError):  # Go reads GODEBUG once, at start-up
        sm.debug.madvdontneed = 1
    assert sm.need_zero_after_sys_unused() is True


# -- Ready → Reserved: sys_fault ---------------------------------------------------------


def test_sys_fault_protects_and_drops_the_pages(linux_sm):
    sm, st = linux_sm, linux_sm.stat("other_sys")
    n = 1 * MiB
    base, size, p = ready(sm, n, st)
    f, k = p + 256 * KiB, 512 * KiB
    sm.sys_fault(f, k)
    assert sm.mapped_ready == n - k
    assert st.load() == n  # like Go: no stat changes, the caller takes them out
    m = vma_at(f)
    assert (m.start, m.end, m.perms) == (f, f + k, "---p") and m.rss == 0
    pages = sm.os_pages(f, k)
    assert not pages.accessible.any() and not pages.resident.any()
    assert vma_at(p).perms == "rw-p" and vma_at(f + k).perms == "rw-p"
    assert state_map(sm)[1:4] == [
        (p, f, State.READY, "other_sys"),
        (f, f + k, State.RESERVED, None),
        (f + k, p + n, State.READY, "other_sys"),
    ]
    assert sm.os_problems() == []
    assert sm.accounting_problems()  # the stat still counts the faulted bytes...
    st.add(-k)  # ...until the caller takes them out (Go's arena.go does)
    sm.check()
    # faulted memory can be mapped again
    sm.sys_map(f, k, st)
    sm.sys_used(f, k, k)
    assert sm.mapped_ready == n and st.load() == n and vma_at(f).perms == "rw-p"
    sm.check()


# -- hints: sys_huge_page / sys_no_huge_page / sys_huge_page_collapse --------------------


def _hg_pages(sm, v, n) -> np.ndarray:
    return sm.os_pages(v, n).huge_advised


@needs_thp
@pytest.mark.parametrize(
    "off, length",
    [
        (PS, 6 * MiB),  # → [2M, 6M)
        (0, 8 * MiB),  # whole
        (PS, 2 * MiB),  # no whole huge page inside: nothing advised
        (2 * MiB, 2 * MiB),  # exactly one
        (2 * MiB - PS, 2 * MiB + 2 * PS),  # one, rounded inward on both sides
        (3 * MiB, 4 * MiB),  # [4M, 6M)
    ],
)
@pytest.mark.parametrize("state", ["reserved", "ready"])
def test_sys_huge_page_rounds_inward_like_go(linux_sm, off, length, state):
    sm, st = linux_sm, linux_sm.stat("other_sys")
    n = 8 * MiB
    base, size, p = carve(sm, n, align=HUGE)
    if state == "ready":
        sm.sys_map(p, n, st)
        sm.sys_used(p, n, n)
    before = (sm.mapped_ready, st.load(), state_map(sm))
    sm.sys_huge_page(p + off, length)
    assert (sm.mapped_ready, st.load(), state_map(sm)) == before  # a hint only
    beg = (p + off + HUGE - 1) & -HUGE
    end = (p + off + length) & -HUGE
    expect = np.zeros(n // PS, dtype=bool)
    if beg < end:
        expect[(beg - p) // PS : (end - p) // PS] = True
        m = vma_at(beg)
        assert (m.start, m.end) == (beg, end) and "hg" in m.vmflags  # VMA split exactly
    assert (_hg_pages(sm, p, n) == expect).all()
    assert not any("hg" in flags for *_, flags in vmas(base, p - base))
    sm.check()


@needs_thp
@settings(max_examples=25, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(off=hst.integers(0, 1023), pages=hst.integers(0, 2048))
def test_sys_huge_page_rounding_property(linux_sm, off, pages):
    sm = linux_sm
    n = 12 * MiB
    base, size, p = carve(sm, n, align=HUGE)
    try:
        v, k = p + off * PS, pages * PS
        sm.sys_huge_page(v, k)
        beg, end = (v + HUGE - 1) & -HUGE, (v + k) & -HUGE
        hg = _hg_pages(sm, p, n)
        idx = np.arange(n // PS) * PS + p
        assert (hg == ((idx >= beg) & (idx < end))).all()
    finally:
        sm.sys_unreserve(base, size)


def test_sys_no_huge_page_marks_exactly_the_range(linux_sm):
    sm, st = linux_sm, linux_sm.stat("other_sys")
    n = 4 * MiB
    base, size, p = ready(sm, n, st, touch=False)
    a, k = p + 3 * PS, 5 * PS  # no rounding: page granularity
    sm.sys_no_huge_page(a, k)
    m = vma_at(a)
    assert (m.start, m.end) == (a, a + k) and "nh" in m.vmflags and "hg" not in m.vmflags
    assert "nh" not in vma_at(p).vmflags and "nh" not in vma_at(a + k).vmflags
    assert sm.mapped_ready == n and st.load() == n
    with pytest.raises(MisalignedRangeError):
        sm.sys_no_huge_page(a + 1, k)
    sm.check()


@needs_thp
def test_sys_huge_page_collapse_is_best_effort(linux_sm):
    sm, st = linux_sm, linux_sm.stat("other_sys")
    n = 4 * MiB
    base, size, p = ready(sm, n, st, align=HUGE)
    before = (sm.mapped_ready, st.load(), state_map(sm))
    sm.sys_huge_page_collapse(p, n)  # may or may not get huge pages: never raises
    sm.sys_huge_page_collapse(base, size)  # over Reserved guards too
    assert (sm.mapped_ready, st.load(), state_map(sm)) == before
    assert 0 <= sum(vma.anon_huge for vma in smaps(p, n)) <= n
    assert sm.view(p, n)[::PS].tolist() == [0xA5] * (n // PS)  # contents kept
    with pytest.raises(MisalignedRangeError):
        sm.sys_huge_page_collapse(p + 1, PS)
    sm.check()


@needs_thp
def test_check_accepts_huge_page_backing_prepared_pages_after_collapse(linux_sm):
    """Regression (HEAD a7c4190): os_problems only excused pages of 'hg' VMAs, so a
    collapsed huge page over Ready + Prepared pages failed check()."""
    sm, st = linux_sm, linux_sm.stat("other_sys")
    base, size, p = carve(sm, HUGE, align=HUGE)
    sm.sys_map(p, HUGE, st)
    sm.sys_used(p, PS, PS)  # one Ready page, the rest of the huge page Prepared
    sm.view(p, PS)[:] = 1
    sm.sys_huge_page_collapse(p, HUGE)  # legal on owned memory, best effort
    if vma_at(p).anon_huge == 0:
        pytest.skip("the kernel did not collapse the range this time")
    sm.check()  # the kernel backing Prepared memory is not a disagreement with its state


# -- GODEBUG knobs -----------------------------------------------------------------------


def test_disablethp_marks_every_sys_map_nohugepage(make_sm):
    sm = make_sm("disablethp=1")
    st = sm.stat("heap_in_use")
    base, size, p = carve(sm, 1 * MiB)
    sm.sys_map(p, 1 * MiB, st)
    m = vma_at(p)
    assert (m.start, m.end, m.perms) == (p, p + 1 * MiB, "rw-p") and "nh" in m.vmflags
    sm.check()
    # and without it, no nh
    sm2 = make_sm("")
    b2, s2, p2 = carve(sm2, 1 * MiB)
    sm2.sys_map(p2, 1 * MiB, sm2.stat("heap_in_use"))
    assert "nh" not in vma_at(p2).vmflags


def test_harddecommit_takes_the_permissions_of_unused_memory(make_sm):
    sm = make_sm("harddecommit=1")
    st = sm.stat("other_sys")
    n = 1 * MiB
    base, size, p = ready(sm, n, st)
    u, k = p + 256 * KiB, 256 * KiB
    sm.sys_unused(u, k)
    m = vma_at(u)
    assert (m.start, m.end, m.perms) == (u, u + k, "---p") and m.rss == 0
    assert sm.mapped_ready == n - k
    assert [r.state for r in sm.runs() if r.start == u] == [State.PREPARED]
    with pytest.raises(sysmem.InaccessibleMemoryError):
        sm.view(u, PS)
    sm.check()
    sm.sys_used(u, k, k)
    m = vma_at(u)
    assert m.perms == "rw-p" and m.start <= u and m.end >= u + k
    assert sm.mapped_ready == n
    assert not sm.view(u, k).any()  # a fresh mapping: zeroed
    sm.check()


def test_check_accepts_sys_map_under_harddecommit(make_sm):
    """Regression (HEAD a7c4190): harddecommit made check() expect every Prepared page
    PROT_NONE, but only sys_unused drops permissions."""
    sm = make_sm("harddecommit=1")
    base, size, p = carve(sm, 1 * MiB)
    sm.sys_map(p, 1 * MiB, sm.stat("other_sys"))
    assert vma_at(p).perms == "rw-p"  # sysMapOS maps read/write whatever harddecommit says
    sm.check()


def test_godebug_given_with_a_backend_instance_reaches_the_backend(make_sm):
    """Regression (HEAD a7c4190): SysMem(backend, godebug=...) kept a DebugSettings of
    its own, so sm.debug and the backend's settings silently disagreed. And (later): a
    second SysMem on the same backend replaced the settings the first had frozen."""
    debug = DebugSettings()  # Go's defaults: madvdontneed=1
    backend = LinuxBackend(debug)
    sm = make_sm("madvdontneed=0", backend=backend)
    assert sm.debug is backend.debug is debug  # applied in place, never replaced
    assert sm.debug.madvdontneed == 0
    assert sm.need_zero_after_sys_unused() is True  # MADV_FREE, as sm.debug says
    # a second SysMem sharing the backend cannot unfreeze or change what the first froze
    for godebug in ("madvdontneed=1", "harddecommit=1", DebugSettings(madvdontneed=0)):
        with pytest.raises((FrozenSettingError, ValueError)):
            make_sm(godebug, backend=backend)
        assert backend.debug is debug and (debug.madvdontneed, debug.harddecommit) == (0, 0)
    with pytest.raises(FrozenSettingError):
        debug.madvdontneed = 1
    with pytest.raises(FrozenSettingError):
        debug.harddecommit = 1
    sm2 = make_sm("madvdontneed=0", backend=backend)  # agreeing is fine
    assert sm2.debug is debug and sm2.need_zero_after_sys_unused() is True


def test_vma_naming_failure_on_this_kernel_is_silent(make_sm, naming_on):
    sm = make_sm("")
    st = sm.stat("other_sys")
    p = sm.sys_alloc(64 * KiB, st, "heap")  # prctl may fail with EINVAL: no error
    q = sm.sys_reserve(None, 64 * KiB, "heap reservation")
    assert p is not None and q is not None
    names = {m.name for m in smaps(p, 64 * KiB)}
    if _linux.vma_names_supported():
        assert names == {"[anon: Go: heap]"}
    else:  # CONFIG_ANON_VMA_NAME missing: the first EINVAL turned naming off for good
        assert not any("Go:" in name for name in names)
    sm.check()


def test_vma_names_are_gos_buffer(fake_sm, naming_on):
    sm, fake = fake_sm()
    st = sm.stat("other_sys")
    p = sm.sys_alloc(64 * KiB, st, "heap")
    q = sm.sys_reserve(None, 1 * MiB, "heap reservation")
    sm.sys_map(q, 64 * KiB, st, "page alloc")
    long_name = "x" * 100
    r = sm.sys_alloc(PS, st, long_name)
    assert fake.of("prctl") == [
        ("prctl", L.PR_SET_VMA, L.PR_SET_VMA_ANON_NAME, p, 64 * KiB, b" Go: heap"),
        ("prctl", L.PR_SET_VMA, L.PR_SET_VMA_ANON_NAME, q, 1 * MiB, b" Go: heap reservation"),
        ("prctl", L.PR_SET_VMA, L.PR_SET_VMA_ANON_NAME, q, 64 * KiB, b" Go: page alloc"),
        ("prctl", L.PR_SET_VMA, L.PR_SET_VMA_ANON_NAME, r, PS, (b" Go: " + b"x" * 100)[:79]),
    ]
    assert len(fake.names()[-1]) == 79  # an 80-byte buffer, last byte NUL
    sm.sys_fault(p, PS)  # sysFault does not rename
    assert len(fake.of("prctl")) == 4
    assert _linux.vma_names_supported()


def test_harddecommit_names_unused_and_used(fake_sm, naming_on):
    sm, fake = fake_sm("harddecommit=1")
    st = sm.stat("other_sys")
    p = sm.sys_alloc(64 * KiB, st, "heap")
    sm.sys_unused(p, PS)
    sm.sys_used(p, PS, PS)
    assert fake.names() == [b" Go: heap", b" Go: unused", b" Go: used"]


def test_decoratemappings_0_makes_no_prctl(fake_sm, naming_on):
    sm, fake = fake_sm("decoratemappings=0")
    st = sm.stat("other_sys")
    p = sm.sys_alloc(64 * KiB, st, "heap")
    q = sm.sys_reserve(None, 64 * KiB, "heap reservation")
    sm.sys_map(q, PS, st, "heap")
    assert p and q and fake.of("prctl") == []


def test_first_einval_turns_naming_off_for_the_process(fake_sm, naming_on):
    sm, fake = fake_sm(prctl_errno=L.EINVAL)
    st = sm.stat("other_sys")
    sm.sys_alloc(PS, st, "heap")  # silent
    assert not _linux.vma_names_supported()
    sm.sys_alloc(PS, st, "heap")
    sm2, fake2 = fake_sm()
    sm2.sys_alloc(PS, sm2.stat("other_sys"), "heap")  # process-wide, like Go's flag
    assert len(fake.of("prctl")) == 1 and fake2.of("prctl") == []


def test_other_prctl_errors_keep_naming_on(fake_sm, naming_on):
    sm, fake = fake_sm(prctl_errno=1)  # EPERM
    st = sm.stat("other_sys")
    sm.sys_alloc(PS, st, "heap")
    sm.sys_alloc(PS, st, "heap")
    assert len(fake.of("prctl")) == 2 and _linux.vma_names_supported()


# -- sysUnusedOS's fallback chain ---------------------------------------------------------


def _dirty_ready(sm, st, n):
    p = sm.sys_alloc(n, st)
    sm.view(p, n)[:] = 0x77
    assert sm.os_pages(p, n).resident.all()
    return p


def test_madv_free_failure_downgrades_to_dontneed_for_good(fake_sm, fresh_advice, naming_on):
    sm, fake = fake_sm("madvdontneed=0", fail_madvise={L.MADV_FREE})
    st = sm.stat("other_sys")
    n = 256 * KiB
    assert _linux.advise_unused() == L.MADV_FREE
    p = _dirty_ready(sm, st, n)
    del fake.calls[:]
    sm.sys_unused(p, n)
    assert fake.advices() == [L.MADV_FREE, L.MADV_DONTNEED]
    assert _linux.advise_unused() == L.MADV_DONTNEED
    assert not sm.os_pages(p, n).resident.any()  # really released (DONTNEED did it)
    assert sm.mapped_ready == 0
    # the downgrade sticks: the next sys_unused goes straight to DONTNEED
    q = _dirty_ready(sm, st, n)
    del fake.calls[:]
    sm.sys_unused(q, n)
    assert fake.advices() == [L.MADV_DONTNEED] and fake.of("mmap") == []
    # ...process-wide: another SysMem whose MADV_FREE works doesn't try it either
    sm2, fake2 = fake_sm("madvdontneed=0")
    r = _dirty_ready(sm2, sm2.stat("other_sys"), n)
    sm2.sys_unused(r, n)
    assert fake2.advices() == [L.MADV_DONTNEED]
    assert sm.need_zero_after_sys_unused() is True  # still what GODEBUG says, as in Go
    sm.check()
    sm2.check()


def test_dontneed_failure_falls_back_to_a_fresh_mapping(fake_sm, fresh_advice, naming_on):
    sm, fake = fake_sm("madvdontneed=0", fail_madvise={L.MADV_FREE, L.MADV_DONTNEED})
    st = sm.stat("other_sys")
    n = 256 * KiB
    p = _dirty_ready(sm, st, n)
    del fake.calls[:]
    sm.sys_unused(p, n)
    assert fake.advices() == [L.MADV_FREE, L.MADV_DONTNEED]
    rw, fixed = L.PROT_READ | L.PROT_WRITE, L.MAP_ANONYMOUS | L.MAP_FIXED | L.MAP_PRIVATE
    assert [c[1:5] for c in fake.of("mmap")] == [(p, n, rw, fixed)]
    assert fake.names() == [b" Go: unused"]
    assert _linux.advise_unused() == 0  # Go's madviseUnsupported
    pages = sm.os_pages(p, n)
    assert pages.accessible.all() and not pages.resident.any()  # old pages are gone
    assert sm.mapped_ready == 0
    sm.check()
    sm.sys_used(p, n, n)
    assert not sm.view(p, n).any()
    # from now on no madvise at all, even with Go's default madvdontneed=1
    sm2, fake2 = fake_sm("")
    q = _dirty_ready(sm2, sm2.stat("other_sys"), n)
    sm2.sys_unused(q, n)
    assert fake2.advices() == [] and [c[1:3] for c in fake2.of("mmap")][-1] == (q, n)
    assert not sm2.os_pages(q, n).resident.any()
    sm2.check()


def test_default_dontneed_failure_skips_madv_free(fake_sm, fresh_advice):
    sm, fake = fake_sm("", fail_madvise={L.MADV_DONTNEED})
    st = sm.stat("other_sys")
    p = _dirty_ready(sm, st, 64 * KiB)
    del fake.calls[:]
    sm.sys_unused(p, 64 * KiB)
    assert fake.advices() == [L.MADV_DONTNEED]  # madvdontneed=1 never tries FREE
    assert _linux.advise_unused() == 0 and len(fake.of("mmap")) == 1
    _linux.reset_advise_unused()
    assert _linux.advise_unused() == L.MADV_FREE


# -- threads on disjoint regions -----------------------------------------------------------


def test_threads_on_disjoint_regions_keep_the_accounting_exact(linux_sm):
    sm = linux_sm
    stat = sm.stat("other_sys")
    threads_n, iterations, n = 4, 200, 16 * PS
    barrier = threading.Barrier(threads_n)
    left = [None] * threads_n
    errors: list[BaseException] = []

    def worker(tid: int) -> None:
        rng = random.Random(tid)
        ready_b = stat_b = 0
        kept: list[tuple[int, str, int]] = []  # (p, layout, k)

        def release(p: int, layout: str, k: int) -> None:
            nonlocal ready_b, stat_b
            if layout == "prepared-head":  # [0,k) Prepared, rest Ready
                sm.sys_used(p, n, k)
                ready_b += k
            elif layout == "reserved-head":  # [0,k) Reserved, rest Ready
                sm.sys_map(p, k, stat)
                sm.sys_used(p, k, k)
                stat_b += k
                ready_b += k
            elif layout == "reserved":
                sm.sys_unreserve(p, k)
                return
            sm.sys_free(p, n, stat)
            ready_b -= n
            stat_b -= n

        try:
            barrier.wait()
            for i in range(iterations):
                k = rng.randrange(1, n // PS) * PS
                op = rng.randrange(4)
                if op == 0:
                    p = sm.sys_alloc(n, stat)
                    ready_b += n
                    stat_b += n
                    v = sm.view(p, n, np.uint32)
                    v[:] = tid
                    assert (v == tid).all()
                    del v
                    kept.append((p, "ready", 0))
                else:
                    p = sm.sys_reserve(None, n)
                    sm.sys_map(p, n, stat)
                    stat_b += n
                    sm.sys_used(p, n, n)
                    ready_b += n
                    if op == 1:
                        sm.sys_unused(p, k)
                        ready_b -= k
                        kept.append((p, "prepared-head", k))
                    elif op == 2:
                        sm.sys_fault(p, k)
                        stat.add(-k)
                        ready_b -= k
                        stat_b -= k
                        kept.append((p, "reserved-head", k))
                    else:
                        sm.sys_unused(p, n)
                        ready_b -= n
                        sm.sys_used(p, n, n)
                        ready_b += n
                        sm.sys_fault(p, n)
                        stat.add(-n)
                        ready_b -= n
                        stat_b -= n
                        q, size = sm.sys_reserve_aligned(None, n, 16 * PS)
                        sm.sys_unreserve(p, n)
                        kept.append((q, "reserved", size))
                if len(kept) > 4:
                    release(*kept.pop(rng.randrange(len(kept))))
            left[tid] = (ready_b, stat_b)
        except BaseException as e:  # noqa: BLE001 - reported by the main thread
            errors.append(e)
            barrier.abort()

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(threads_n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors[0]
    assert sm.mapped_ready == sum(r for r, _ in left)
    assert stat.load() == sum(s for _, s in left)
    assert sm.state_bytes()[State.READY] == sm.mapped_ready
    assert len(sm.root_regions) == threads_n * 4
    sm.check()


# -- the module-level functions on sysmem.default() ----------------------------------------


def test_module_level_functions_use_the_default_sysmem():
    sm = sysmem.default()
    assert sysmem.default() is sm and isinstance(sm, SysMem) and sm.backend.name == "linux"
    stat = sm.stat("other_sys")
    ready0, stat0, regions0 = sm.mapped_ready, stat.load(), sm.root_regions.regions()
    n = 1 * MiB
    p = sysmem.sys_reserve(None, n, "module test")
    try:
        sysmem.sys_map(p, n, stat)
        assert stat.load() == stat0 + n and sm.mapped_ready == ready0
        sysmem.sys_used(p, n, n)
        assert sm.mapped_ready == ready0 + n
        v = sysmem.view(p, PS)
        v[:] = 7
        assert sm.view(p, PS).tolist() == [7] * PS
        del v
        sysmem.sys_huge_page(p, n)
        sysmem.sys_no_huge_page(p, n)
        sysmem.sys_huge_page_collapse(p, n)
        sysmem.sys_unused(p, n)
        assert sm.mapped_ready == ready0
        assert sysmem.need_zero_after_sys_unused() == sm.need_zero_after_sys_unused()
        sysmem.sys_used(p, n, n)
        sysmem.sys_fault(p, PS)
        stat.add(-PS)
        assert sm.mapped_ready == ready0 + n - PS
        a, size = sysmem.sys_reserve_aligned(None, n, 2 * MiB)
        assert a % (2 * MiB) == 0
        sysmem.sys_unreserve(a, size)
        q = sysmem.sys_alloc(n, stat)
        assert sm.mapped_ready == ready0 + 2 * n - PS
        sysmem.sys_free(q, n, stat)
    finally:
        # give p back whatever state it reached
        runs = [r for r in sm.runs() if p <= r.start < p + n]
        for r in runs:
            if r.state is State.READY:
                sm.sys_fault(r.start, r.size)
                stat.add(-r.size)
            elif r.state is State.PREPARED:
                sm.sys_used(r.start, r.size, r.size)
                sm.sys_fault(r.start, r.size)
                stat.add(-r.size)
        sysmem.sys_unreserve(p, n)
    assert (sm.mapped_ready, stat.load(), sm.root_regions.regions()) == (ready0, stat0, regions0)
    sm.check()


def test_transitions_table_matches_the_operations(linux_sm, check_transitions_table):
    assert set(sysmem.TRANSITIONS) == {
        "sys_alloc", "sys_free", "sys_reserve", "sys_reserve_aligned", "sys_unreserve",
        "sys_map", "sys_used", "sys_unused", "sys_fault", "sys_huge_page",
        "sys_no_huge_page", "sys_huge_page_collapse", "need_zero_after_sys_unused",
    }
    for name in sysmem.TRANSITIONS:
        assert callable(getattr(sysmem, name)) and callable(getattr(SysMem, name))
    assert isinstance(Run(0, PS, State.READY, None).size, int)
    # the states and the stat_delta / mapped_ready_delta columns, against real calls
    check_transitions_table(linux_sm)
