"""Tests of the simulated OS backend on its own, and of the SysMem paths only its hooks
reach (the Windows ``sys_reserve_aligned`` race and its nil re-reservation)."""

from __future__ import annotations

import bisect
import gc
import os
import random
import sys
import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sysmem import State, SysMem
from heap import Heap
from sysmem._simulated import MADV_DONTNEED, MADV_FREE, SimulatedBackend, _storage
from sysmem.errors import (
    InaccessibleMemoryError,
    MisalignedRangeError,
    RuntimeThrowError,
    SysOutOfMemoryError,
)
from sysmem.settings import DebugSettings

P = 4096
MiB = 1 << 20
GiB = 1 << 30


def make(personality: str = "linux", **kw) -> SimulatedBackend:
    debug = kw.pop("debug", None) or DebugSettings(**kw.pop("godebug", {}))
    return SimulatedBackend(debug, personality, **kw)


def calls_of(b: SimulatedBackend, name: str) -> list[tuple]:
    return [c for c in b.calls if c[0] == name]


def write(b: SimulatedBackend, v: int, data: bytes) -> None:
    b.buffer(v, len(data))[:] = data


def read(b: SimulatedBackend, v: int, n: int) -> bytes:
    return bytes(b.buffer(v, n))


def host_bytes(b: SimulatedBackend) -> int:
    """Host memory holding the simulated contents (the memfd's allocated bytes)."""
    file = b._space.storage.file
    return 0 if file is None else os.fstat(file.fd).st_blocks * 512


# -- construction ------------------------------------------------------------------------
@pytest.mark.parametrize(
    "personality, huge, sbrk, whole, released_acc, needzero",
    [
        ("linux", 2 * MiB, False, False, True, False),
        ("windows", 0, False, True, False, True),
        ("sbrk", 0, True, False, True, True),
    ],
)
def test_personality_attributes(personality, huge, sbrk, whole, released_acc, needzero):
    b = make(personality)
    assert b.name == f"simulated-{personality}"
    assert b.phys_page_size == P
    assert b.huge_page_size == huge
    assert b.is_sbrk is sbrk
    assert b.releases_whole_reservations_only is whole
    assert b.released_is_accessible is released_acc
    assert b.mapped_is_accessible is (personality != "windows")
    assert b.need_zero_after_unused() is needzero


def test_linux_knobs_change_answers():
    d = DebugSettings()
    b = SimulatedBackend(d, "linux")
    d.madvdontneed = 0
    assert b.need_zero_after_unused()
    d.harddecommit = 1
    assert not b.released_is_accessible
    assert b.mapped_is_accessible


def test_bad_arguments():
    with pytest.raises(ValueError):
        make("plan9")
    with pytest.raises(ValueError):
        make("windows", huge_page_size=2 * MiB)
    with pytest.raises(ValueError):
        make(phys_page_size=3000)
    with pytest.raises(ValueError):
        make().fail_next("munmap")
    with pytest.raises(NotImplementedError):
        make().reserve_aligned_sbrk(P, P)


# -- linux: placement ---------------------------------------------------------------------
def test_linux_reserve_honours_free_hint_and_places_top_down_otherwise():
    b = make(address_bits=40)
    top = 1 << 40
    v = 0x10_0000_0000
    assert b.reserve(v, 64 * MiB, "heap reservation") == v
    assert b.calls[-2] == ("mmap", v, 64 * MiB, "PROT_NONE")
    assert b.calls[-1] == ("prctl", v, 64 * MiB, "PR_SET_VMA_ANON_NAME", " Go: heap reservation")
    # The hint is taken: the kernel picks the highest free gap instead.
    p = b.reserve(v, 64 * MiB, "heap")
    assert p == top - 64 * MiB
    q = b.reserve(None, P, "x")
    assert q == p - P
    # An unmapped hole high up is reused first (top-down, first gap that fits).
    b.free(p, 64 * MiB)
    assert b.reserve(None, 2 * MiB, "y") == top - 2 * MiB


def test_linux_reserve_none_when_no_space():
    b = make(address_bits=24)
    assert b.reserve(None, 1 << 25, "big") is None
    assert b.calls[-1][-1] == "ENOMEM"
    assert b.alloc(0, "zero") is None


def test_terabyte_reservation_is_cheap():
    """A terabyte costs no host memory until touched (its speed is measured in
    benchmarks/test_bench_sysmem.py)."""
    b = make()
    p = b.reserve(None, 1 << 40, "heap")
    b.map(p, 1 << 40, "heap")
    b.unused(p, 1 << 40)
    pages = b.inspect(p + (1 << 39), 16 * P)
    assert pages.mapped.all() and pages.accessible.all() and not pages.resident.any()
    assert b.resident_bytes() == 0
    assert not b._space.storage.segments and host_bytes(b) == 0  # nothing stored yet
    assert len(b._space.owner.starts) <= 3  # one run for the whole terabyte
    b.buffer(p + (1 << 39), P)[:] = b"\1" * P
    assert b.resident_bytes() == P
    assert len(b._space.storage.segments) == 1
    assert 0 < host_bytes(b) <= 2 * MiB  # one host page (a huge one at most)
    b.free(p, 1 << 40)
    assert b.resident_bytes() == 0
    assert not b._space.storage.segments  # storage given back once nothing is mapped there
    assert host_bytes(b) == 0


def test_seed_randomises_mmap_base_deterministically():
    a, a2, c = make(seed=1), make(seed=1), make(seed=0)
    pa = a.reserve(None, MiB, "x")
    assert pa == a2.reserve(None, MiB, "x")
    assert pa != c.reserve(None, MiB, "x")


# -- linux: map, contents ------------------------------------------------------------------
def test_linux_map_over_reservation_and_contents():
    b = make()
    p = b.reserve(None, 4 * MiB, "heap")
    with pytest.raises(InaccessibleMemoryError, match="not accessible"):
        b.buffer(p, 16)
    b.map(p, 2 * MiB, "heap")
    assert b.calls[-2] == ("mmap", p, 2 * MiB, "PROT_READ|PROT_WRITE", "MAP_FIXED")
    write(b, p + 10, b"hello")
    assert read(b, p + 8, 9) == b"\0\0hello\0\0"
    # MAP_FIXED again replaces the pages: contents gone.
    b.map(p, P, "heap")
    assert read(b, p + 10, 5) == b"\0" * 5
    with pytest.raises(InaccessibleMemoryError):
        b.buffer(p + 2 * MiB - 4, 8)  # crosses into the still-reserved part


def test_linux_map_over_never_reserved_addresses_is_allowed():
    b = make()
    v = 0x7000_0000_0000
    b.map(v, MiB, "heap")
    assert b.inspect(v, MiB).accessible.all()
    with pytest.raises(InaccessibleMemoryError, match="not mapped"):
        b.buffer(v + MiB, 1)


def test_linux_map_errors():
    b = make(address_bits=32)
    with pytest.raises(RuntimeThrowError, match="cannot map pages in arena address space"):
        b.map((1 << 32) - P, 2 * P, "heap")
    with pytest.raises(RuntimeThrowError, match="cannot map pages"):
        b.map(0x10001, P, "heap")


def test_buffer_writes_persist_and_overlap():
    b = make()
    p = b.alloc(MiB, "x")
    big = b.buffer(p, MiB)
    big[P : P + 3] = b"abc"
    assert read(b, p + P + 1, 2) == b"bc"
    write(b, p + P + 2, b"Z")
    assert bytes(big[P : P + 3]) == b"abZ"
    assert not b.buffer(p, 4).readonly
    assert len(b.buffer(p, 0)) == 0


def test_buffer_cannot_straddle_a_segment_without_memfd(monkeypatch):
    monkeypatch.setattr(_storage, "_USE_MEMFD", False)  # a host without memfd_create
    b = make(segment_size=MiB)
    v = 0x10_0000_0000
    b.map(v, 4 * MiB, "heap")
    assert len(b.buffer(v + MiB - 8, 8)) == 8
    with pytest.raises(InaccessibleMemoryError, match="straddles .* no memfd"):
        b.buffer(v + MiB - 8, 16)
    assert b._space.storage.file is None


def test_buffer_outside_address_space():
    b = make(address_bits=32)
    with pytest.raises(InaccessibleMemoryError):
        b.buffer((1 << 32) - 8, 16)


# -- linux: unused and its fallback chain -------------------------------------------------
def test_unused_requires_alignment():
    b = make()
    p = b.alloc(MiB, "x")
    with pytest.raises(MisalignedRangeError, match="unaligned sysUnused"):
        b.unused(p + 1, P)
    with pytest.raises(MisalignedRangeError, match="unaligned sysUnused"):
        b.unused(p, P + 1)


def test_dontneed_default_zeroes_and_drops_residency():
    b = make()
    p = b.alloc(MiB, "x")
    write(b, p, b"x" * (3 * P))
    assert b.resident_bytes() == 3 * P
    b.unused(p, 2 * P)
    assert b.calls[-1] == ("madvise", p, 2 * P, MADV_DONTNEED)
    pages = b.inspect(p, 4 * P)
    assert list(pages.resident) == [False, False, True, False]
    assert pages.accessible.all()
    assert b.resident_bytes() == P
    assert read(b, p, 2 * P) == b"\0" * 2 * P
    assert read(b, p + 2 * P, P) == b"x" * P


def test_madv_free_keeps_contents_until_reclaimed():
    b = make(godebug={"madvdontneed": 0})
    p = b.alloc(MiB, "x")
    write(b, p, b"a" * (4 * P))
    b.unused(p, 4 * P)
    assert b.calls[-1] == ("madvise", p, 4 * P, MADV_FREE)
    assert b.advise_unused == "free"
    assert b.resident_bytes() == 4 * P and b.lazyfree_bytes() == 4 * P
    assert b.inspect(p, 4 * P).lazyfree_bytes == 4 * P
    assert b.inspect(p + P, P).lazyfree_bytes == P
    # Touching one page makes it a normal resident page again, contents intact.
    assert read(b, p, P) == b"a" * P
    assert b.lazyfree_bytes() == 3 * P
    # Memory pressure: the rest is dropped.
    assert b.reclaim() == 3 * P
    assert b.resident_bytes() == P and b.lazyfree_bytes() == 0
    assert read(b, p + P, P) == b"\0" * P
    assert read(b, p, 1) == b"a"


def test_fallback_chain_free_to_dontneed():
    b = make(godebug={"madvdontneed": 0})
    b.supported_advice.discard(MADV_FREE)
    p = b.alloc(MiB, "x")
    write(b, p, b"q" * P)
    b.unused(p, P)
    assert list(b.calls)[-2:] == [
        ("madvise", p, P, MADV_FREE, "EINVAL"),
        ("madvise", p, P, MADV_DONTNEED),
    ]
    assert b.advise_unused == "dontneed"
    assert b.lazyfree_bytes() == 0 and read(b, p, 1) == b"\0"
    b.supported_advice.add(MADV_FREE)  # the downgrade is permanent anyway
    b.unused(p, P)
    assert b.calls[-1] == ("madvise", p, P, MADV_DONTNEED)


def test_fallback_chain_down_to_mmap():
    b = make(godebug={"madvdontneed": 0})
    b.supported_advice.clear()
    p = b.alloc(MiB, "x")
    write(b, p, b"q" * P)
    b.unused(p, P)
    assert [c[:4] for c in list(b.calls)[-4:]] == [
        ("madvise", p, P, MADV_FREE),
        ("madvise", p, P, MADV_DONTNEED),
        ("mmap", p, P, "PROT_READ|PROT_WRITE"),
        ("prctl", p, P, "PR_SET_VMA_ANON_NAME"),
    ]
    assert b.calls[-1][-1] == " Go: unused"
    assert b.advise_unused == "unsupported"
    assert read(b, p, P) == b"\0" * P
    n = len(b.calls)
    b.unused(p, P)
    assert b.calls[n][:5] == ("mmap", p, P, "PROT_READ|PROT_WRITE", "MAP_FIXED")


def test_fallback_chain_with_madvdontneed_skips_free():
    b = make()  # madvdontneed=1
    b.supported_advice.discard(MADV_DONTNEED)
    p = b.alloc(MiB, "x")
    b.unused(p, P)
    assert not any(c[3] == MADV_FREE for c in calls_of(b, "madvise"))
    assert b.advise_unused == "unsupported"


def test_madvise_over_a_hole_fails_like_the_kernel():
    b = make(godebug={"madvdontneed": 0})
    p = b.alloc(4 * P, "x")
    write(b, p, b"k" * P)
    b.free(p + P, P)
    # madvise applies to the mapped parts but returns ENOMEM: Go takes both failures
    # for "unsupported" and falls back to a MAP_FIXED mapping, which fills the hole.
    b.unused(p, 4 * P)
    assert [c[3:] for c in calls_of(b, "madvise")] == [(MADV_FREE, "ENOMEM"), (MADV_DONTNEED, "ENOMEM")]
    assert b.advise_unused == "unsupported"
    assert b.inspect(p, 4 * P).mapped.all()
    assert b.lazyfree_bytes() == 0 and b.resident_bytes() == 0


def test_harddecommit():
    b = make(godebug={"harddecommit": 1})
    assert not b.released_is_accessible
    assert b.mapped_is_accessible
    p = b.alloc(MiB, "x")
    write(b, p, b"h" * P)
    b.unused(p, 2 * P)
    assert [c[:5] for c in list(b.calls)[-3:-1]] == [
        ("madvise", p, 2 * P, MADV_DONTNEED),
        ("mmap", p, 2 * P, "PROT_NONE", "MAP_FIXED"),
    ]
    pages = b.inspect(p, 2 * P)
    assert pages.mapped.all() and not pages.accessible.any() and not pages.resident.any()
    with pytest.raises(InaccessibleMemoryError):
        b.buffer(p, 1)
    b.used(p, 2 * P)
    assert b.calls[-2][:5] == ("mmap", p, 2 * P, "PROT_READ|PROT_WRITE", "MAP_FIXED")
    assert b.calls[-1][-1] == " Go: used"
    assert read(b, p, P) == b"\0" * P
    b.fail_next("used")
    with pytest.raises(SysOutOfMemoryError, match="runtime: out of memory"):
        b.used(p, P)


def test_used_without_harddecommit_does_nothing():
    b = make()
    p = b.alloc(MiB, "x")
    n = len(b.calls)
    b.fail_next("used")
    b.used(p, P)  # no system call to fail
    assert len(b.calls) == n


# -- linux: fault, free, huge pages ---------------------------------------------------------
def test_linux_fault():
    b = make()
    p = b.alloc(MiB, "x")
    write(b, p, b"f" * P)
    b.fault(p, P)
    assert list(b.calls)[-2:] == [("mprotect", p, P, "PROT_NONE"), ("madvise", p, P, MADV_DONTNEED)]
    pages = b.inspect(p, P)
    assert pages.mapped.all() and not pages.accessible.any() and not pages.resident.any()
    b.map(p, P, "x")
    assert read(b, p, 1) == b"\0"


def test_linux_fault_when_dontneed_fails_keeps_pages():
    b = make()
    b.supported_advice.discard(MADV_DONTNEED)
    p = b.alloc(MiB, "x")
    write(b, p, b"f")
    b.fault(p, P)
    pages = b.inspect(p, P)
    assert not pages.accessible.any() and pages.resident.all()
    assert b.advise_unused == "free"  # only sysUnused downgrades


def test_linux_free_any_subrange():
    b = make()
    p = b.alloc(8 * P, "x")
    write(b, p, b"z" * (8 * P))
    b.free(p + 2 * P, 3 * P)
    assert b.calls[-1] == ("munmap", p + 2 * P, 3 * P)
    assert list(b.inspect(p, 8 * P).mapped) == [True, True, False, False, False, True, True, True]
    assert b.resident_bytes() == 5 * P
    assert read(b, p + 5 * P, 1) == b"z"
    b.free(p + 1, P)  # munmap(EINVAL) is ignored, like Go
    assert b.calls[-1][-1] == "EINVAL"


def test_huge_page_rounds_inward():
    b = make()
    p = b.reserve(None, 16 * MiB, "heap")
    p = (p + 2 * MiB - 1) & -(2 * MiB)
    b.map(p, 8 * MiB, "heap")
    b.huge_page(p + P, 6 * MiB - 2 * P)
    assert b.calls[-1] == ("madvise", p + 2 * MiB, 2 * MiB, "MADV_HUGEPAGE")
    hg = b.inspect(p, 6 * MiB).huge_advised
    per_huge = hg.reshape(3, -1)
    assert list(per_huge.all(axis=1)) == [False, True, False]
    assert not per_huge[[0, 2]].any()
    n = len(b.calls)
    b.huge_page(p + P, 2 * MiB)  # no whole huge page inside: nothing
    assert len(b.calls) == n
    b.no_huge_page(p + 2 * MiB, P)
    assert b.calls[-1] == ("madvise", p + 2 * MiB, P, "MADV_NOHUGEPAGE")
    assert not b.inspect(p + 2 * MiB, P).huge_advised.any()
    assert b.inspect(p + 2 * MiB + P, P).huge_advised.all()
    with pytest.raises(MisalignedRangeError, match="unaligned sysNoHugePageOS"):
        b.no_huge_page(p + 1, P)
    with pytest.raises(MisalignedRangeError, match="unaligned sysHugePageCollapseOS"):
        b.huge_page_collapse(p + 1, P)
    b.huge_page_collapse(p, 2 * MiB)
    assert b.calls[-1] == ("madvise", p, 2 * MiB, "MADV_COLLAPSE")
    # A fresh mapping resets the VMA's advice.
    b.map(p + 2 * MiB, 2 * MiB, "heap")
    assert not b.inspect(p, 8 * MiB).huge_advised.any()


def test_no_thp_machine():
    b = make(huge_page_size=0)
    p = b.alloc(4 * MiB, "x")
    n = len(b.calls)
    b.huge_page(p, 4 * MiB)
    b.huge_page_collapse(p, 4 * MiB)
    assert len(b.calls) == n


def test_disablethp_advises_nohugepage_on_map():
    b = make(godebug={"disablethp": 1})
    p = b.reserve(None, 4 * MiB, "heap")
    b.map(p, 4 * MiB, "heap")
    assert b.calls[-1] == ("madvise", p, 4 * MiB, "MADV_NOHUGEPAGE")


def test_decoratemappings_off_skips_prctl():
    b = make(godebug={"decoratemappings": 0})
    b.alloc(P, "x")
    assert not calls_of(b, "prctl")


# -- windows -------------------------------------------------------------------------------
def test_windows_reserve_hint_exact_or_anywhere():
    b = make("windows")
    v = 0x40_0000_0000
    assert b.reserve(v, 4 * MiB, "heap") == v
    assert b.calls[-1] == ("VirtualAlloc", v, 4 * MiB, "MEM_RESERVE")
    p = b.reserve(v + 2 * MiB, 4 * MiB, "heap")
    assert p is not None and p != v + 2 * MiB and p % 0x10000 == 0
    assert b.calls[-2] == ("VirtualAlloc", v + 2 * MiB, 4 * MiB, "MEM_RESERVE", "ERROR_INVALID_ADDRESS")
    assert b.reserve(None, 1 << 50, "huge") is None


def test_windows_reserved_faults_until_committed():
    b = make("windows")
    p = b.reserve(None, 4 * MiB, "heap")
    b.map(p, 4 * MiB, "heap")  # no-op: Prepared is not committed
    pages = b.inspect(p, 4 * MiB)
    assert pages.mapped.all() and not pages.accessible.any()
    with pytest.raises(InaccessibleMemoryError):
        b.buffer(p, 1)
    b.used(p, 2 * P)
    assert b.calls[-1] == ("VirtualAlloc", p, 2 * P, "MEM_COMMIT")
    assert b.committed_bytes() == 2 * P
    write(b, p, b"w" * 10)
    b.used(p, 2 * P)  # already committed: contents stay
    assert read(b, p, 10) == b"w" * 10
    b.unused(p, P)
    assert b.calls[-1] == ("VirtualFree", p, P, "MEM_DECOMMIT")
    with pytest.raises(InaccessibleMemoryError):
        b.buffer(p, 1)
    b.used(p, P)
    assert read(b, p, 10) == b"\0" * 10
    b.fault(p, 2 * P)
    assert not b.inspect(p, 2 * P).accessible.any() and b.resident_bytes() == 0


def test_windows_used_and_unused_across_allocations():
    b = make("windows")
    v = 0x40_0000_0000
    assert b.reserve(v, 3 * P, "a") == v
    assert b.reserve(v + 0x10000, 0x10000, "b") == v + 0x10000
    # [v+3P, v+64K) is not reserved: Windows refuses.
    with pytest.raises(RuntimeThrowError, match="failed to commit pages"):
        b.used(v, 0x20000)
    with pytest.raises(RuntimeThrowError, match="failed to decommit pages"):
        b.unused(v, 0x20000)
    # Two adjacent allocations: Go's halving loop gets through.
    w = 0x50_0000_0000
    assert b.reserve(w, 0x10000, "c") == w
    assert b.reserve(w + 0x10000, 0x30000, "d") == w + 0x10000
    b.used(w + 0x8000, 0x20000)
    assert b.inspect(w + 0x8000, 0x20000).accessible.all()
    commits = [c for c in calls_of(b, "VirtualAlloc") if c[3] == "MEM_COMMIT"]
    ok = [c for c in commits if len(c) == 4]
    assert ok == [
        ("VirtualAlloc", w + 0x8000, 0x8000, "MEM_COMMIT"),
        ("VirtualAlloc", w + 0x10000, 0x18000, "MEM_COMMIT"),
    ]
    failed = [c[1:3] for c in commits if c[-1] == "ERROR_INVALID_ADDRESS"]
    assert failed[-2:] == [(w + 0x8000, 0x20000), (w + 0x8000, 0x10000)]
    write(b, w + 0xFFF0, b"x" * 16)  # buffers may cross allocations
    b.unused(w, 0x40000)
    assert b.committed_bytes() == 0 and b.resident_bytes() == 0


def test_windows_release_whole_only():
    b = make("windows")
    p = b.reserve(None, 4 * MiB, "heap")
    b.used(p, MiB)
    with pytest.raises(RuntimeThrowError, match="runtime: failed to release pages"):
        b.free(p + 0x10000, MiB)
    with pytest.raises(RuntimeThrowError, match="runtime: failed to release pages"):
        b.free(None, MiB)
    b.free(p, P)  # n is ignored: the whole allocation goes
    assert b.calls[-1] == ("VirtualFree", p, 0, "MEM_RELEASE")
    assert not b.inspect(p, 4 * MiB).mapped.any()
    assert b.committed_bytes() == 0
    assert b.reserve(p, 4 * MiB, "again") == p


def test_windows_commit_limit():
    b = make("windows", physical_memory=MiB)
    p = b.reserve(None, 4 * MiB, "heap")
    b.used(p, MiB)
    b.used(p, MiB)  # recommitting committed pages costs nothing
    with pytest.raises(SysOutOfMemoryError, match="out of memory"):
        b.used(p + MiB, P)
    assert not b.inspect(p + MiB, P).accessible.any()
    assert b.alloc(P, "x") is None
    b.unused(p, P)
    assert b.alloc(P, "x") is not None
    b.fail_next("used")
    with pytest.raises(SysOutOfMemoryError):
        b.used(p + 2 * MiB, P)


def test_windows_alloc_is_committed():
    b = make("windows")
    p = b.alloc(MiB, "x")
    assert b.calls[-1] == ("VirtualAlloc", p, MiB, "MEM_COMMIT|MEM_RESERVE")
    assert read(b, p, 4) == b"\0" * 4
    assert b.committed_bytes() == MiB


def test_windows_huge_page_functions_are_noops():
    b = make("windows")
    p = b.alloc(4 * MiB, "x")
    n = len(b.calls)
    b.huge_page(p, 4 * MiB)
    b.no_huge_page(p + 1, P)
    b.huge_page_collapse(p + 1, P)
    assert len(b.calls) == n


# -- the Windows sysReserveAligned race (through SysMem) ------------------------------------
def windows_sysmem() -> tuple[SysMem, SimulatedBackend, int]:
    """A SysMem on the windows personality whose next over-reservation is not aligned."""
    sm = SysMem("simulated", personality="windows", godebug="")
    misalign = sm.sys_alloc(P, sm.stat("other_sys"))  # so no reservation is aligned by luck
    return sm, sm.backend, misalign


def test_steal_race_windows():
    sm, b, misalign = windows_sysmem()
    align = 64 * MiB
    b.steal_next_reservations(2)
    start = len(b.calls)
    p, size = sm.sys_reserve_aligned(None, 4 * MiB, align, "heap")
    assert p % align == 0 and size == 4 * MiB
    # two rounds lost the aligned part to the other thread, the third kept it
    assert len(b.phantoms) == 2
    assert all(addr % align == 0 for addr, _ in b.phantoms)
    stolen = [c for c in b.calls if "other thread" in c]
    assert len(stolen) == 2 and all(c[-1] == "other thread" for c in stolen)
    releases = [c for c in list(b.calls)[start:] if c[0] == "VirtualFree"]
    assert len(releases) == 5  # 3 over-reservations + 2 lost re-reservations given back
    assert b.inspect(b.phantoms[0][0], P).mapped.all()  # they stay reserved, not ours
    # SysMem holds exactly the aligned region: registry, ledger and OS agree
    assert sm.root_regions.regions() == [(misalign, P), (p, size)]
    assert [(r.start, r.end, r.state) for r in sm.runs() if r.start == p] == [(p, p + size, State.RESERVED)]
    for addr, n in b.phantoms:
        assert not any(base <= addr < base + s for base, s in sm.root_regions.regions())
    sm.check()
    sm.close()


def test_steal_race_windows_gives_up_after_100_tries_like_go():
    sm, b, misalign = windows_sysmem()
    b.steal_next_reservations(100)
    with pytest.raises(RuntimeThrowError, match="too many retries"):
        sm.sys_reserve_aligned(None, 4 * MiB, 64 * MiB, "heap")
    assert len(b.phantoms) == 100
    assert sm.root_regions.regions() == [(misalign, P)]  # nothing left reserved
    sm.check()
    sm.close()


def test_windows_nil_re_reservation_throws_like_go():
    """Go hands the nil re-reservation to sysUnreserve(nil, size), whose VirtualFree
    fails: Go throws "runtime: failed to release pages"; heaplab raises the same, with
    nothing left reserved (it used to return (None, 0) as for a plain failure)."""
    sm, b, misalign = windows_sysmem()
    b.fail_next("reserve", after=1)  # the over-reservation succeeds, the re-reservation not
    with pytest.raises(RuntimeThrowError, match="runtime: failed to release pages"):
        sm.sys_reserve_aligned(None, 4 * MiB, 64 * MiB, "heap")
    assert sm.root_regions.regions() == [(misalign, P)] and sm.mapped_ready == P
    assert [c[0] for c in b.calls][-3:] == ["VirtualAlloc", "VirtualFree", "VirtualAlloc"]
    assert b.calls[-1][-1] == "ERROR_NOT_ENOUGH_MEMORY"
    sm.check()
    # and a plain failure of the over-reservation is still Go's nil
    b.fail_next("reserve")
    assert sm.sys_reserve_aligned(None, 4 * MiB, 64 * MiB, "heap") == (None, 0)
    sm.close()


def test_fail_next_after_lets_calls_through_first():
    b = make()
    b.fail_next("reserve", 2, after=1)
    assert b.reserve(None, P, "x") is not None
    assert b.reserve(None, P, "x") is None
    assert b.reserve(None, P, "x") is None
    assert b.reserve(None, P, "x") is not None
    with pytest.raises(ValueError):
        b.fail_next("reserve", 1, after=-1)


def test_steal_race_linux():
    b = make()
    v = 0x10_0000_0000
    b.steal_next_reservations(1)
    p = b.reserve(v, MiB, "heap")
    assert p != v and b.phantoms == [(v, P)]
    assert b.reserve(v + MiB, MiB, "heap") == v + MiB  # only one steal
    assert b.reserve(None, P, "x") is not None  # unhinted calls don't count


# -- sbrk ----------------------------------------------------------------------------------
def test_sbrk_reserve_paths():
    base = 0x1000_0000
    b = make("sbrk")
    assert b.bloc == b.bloc_max == base
    assert b.reserve(base, 3 * P - 1, "x") == base
    assert b.bloc == b.bloc_max == base + 3 * P
    assert b.calls[-1] == ("sbrk", 3 * P)
    assert b.reserve(0x2000_0000, P, "x") is None  # a hint that is not the break fails
    assert b.reserve(None, P, "x") == base + 3 * P  # empty free list: sbrk
    pages = b.inspect(base, 4 * P)
    assert pages.mapped.all() and pages.accessible.all()
    n = len(b.calls)
    b.map(base, P, "x")
    b.used(base, P)
    b.unused(base, P)
    b.fault(base, P)
    assert len(b.calls) == n  # all no-ops


def test_sbrk_free_at_break_lowers_bloc_only():
    b = make("sbrk")
    p = b.alloc(4 * P, "x")
    write(b, p + 3 * P, b"tail")
    b.free(p + 2 * P, 2 * P)
    assert b.bloc == p + 2 * P and b.bloc_max == p + 4 * P
    assert b.free_list == []
    assert read(b, p + 3 * P, 4) == b"\0" * 4  # zeroed, still OS memory
    assert b.alloc(P, "y") == p + 2 * P  # reuses memory below blocMax without growing
    assert b.bloc_max == p + 4 * P


def test_sbrk_first_fit_tail_exact_fit_and_coalescing():
    b = make("sbrk")
    blocks = [b.alloc(P * k, "x") for k in (2, 1, 3, 1, 2)]
    a, bb, c, d, e = blocks
    write(b, c, b"data")
    b.free(a, 2 * P)
    b.free(c, 3 * P)
    assert b.free_list == [(a, 2 * P), (c, 3 * P)]
    assert read(b, c, 4) == b"\0" * 4
    # First fit that is larger: the block shrinks and its tail is returned.
    assert b.alloc(P, "t") == a + P
    assert b.free_list == [(a, P), (c, 3 * P)]
    # Exact fit unlinks.
    assert b.alloc(P, "t") == a
    assert b.free_list == [(c, 3 * P)]
    # Coalesce with both neighbours.
    b.free(bb, P)
    b.free(d, P)
    assert b.free_list == [(bb, 5 * P)]
    b.free(a, P)
    b.free(a + P, P)
    assert b.free_list == [(a, 7 * P)]
    with pytest.raises(RuntimeThrowError, match="overlapping"):
        b.free(a + P, P)
    assert e + 2 * P == b.bloc


def test_reserve_aligned_sbrk_grow_path():
    base = 0x1000_0000 + P
    b = make("sbrk", sbrk_base=base)
    align = 64 * 1024
    p, size = b.reserve_aligned_sbrk(8 * P, align)
    assert p == 0x1001_0000 and size == 8 * P
    assert b.bloc == p + 8 * P
    assert b.free_list == [(base, p - base)]  # the skipped gap


def test_reserve_aligned_sbrk_free_list_path():
    b = make("sbrk")
    align = 4 * P
    first = b.alloc(P, "pad")
    big = b.alloc(16 * P, "big")
    b.alloc(P, "fence")
    b.free(big, 16 * P)
    assert big == first + P
    p, size = b.reserve_aligned_sbrk(4 * P, align)
    # memAllocNoGrow(8 pages) takes the tail of the 16-page block; then trim.
    tail = big + 8 * P
    start = (tail + align - 1) & -align
    assert (p, size) == (start, 4 * P) == (first + 12 * P, 4 * P)
    # The head [tail, start) coalesces with what was left of the block; the tail page
    # after the aligned part is its own block.
    assert b.free_list == [(big, 11 * P), (start + 4 * P, P)]


def test_sbrk_fails_past_address_space():
    b = make("sbrk", address_bits=29)
    assert b.reserve(None, 1 << 29, "x") is None
    assert b.reserve_aligned_sbrk(1 << 29, P) == (None, 0)
    b.fail_next("reserve")
    assert b.reserve_aligned_sbrk(P, P) == (None, 0)
    assert b.reserve_aligned_sbrk(P, P) != (None, 0)


def test_sbrk_steal():
    b = make("sbrk")
    bloc = b.bloc
    b.steal_next_reservations(1)
    assert b.reserve(bloc, P, "x") is None
    assert b.phantoms == [(bloc, P)] and b.bloc == bloc + P


@st.composite
def sbrk_ops(draw):
    return draw(
        st.lists(
            st.one_of(
                st.tuples(st.just("alloc"), st.integers(1, 6)),
                st.tuples(st.just("free"), st.integers(0, 50)),
                st.tuples(st.just("aligned"), st.integers(1, 4), st.sampled_from([1, 2, 4, 8])),
            ),
            max_size=60,
        )
    )


class _RefSbrk:
    """The sbrk allocator over a set of free page numbers: an independent model."""

    def __init__(self, bloc: int) -> None:
        self.bloc = bloc
        self.free: set[int] = set()

    def runs(self) -> list[tuple[int, int]]:
        out: list[list[int]] = []
        for pg in sorted(self.free):
            if out and out[-1][0] + out[-1][1] == pg:
                out[-1][1] += 1
            else:
                out.append([pg, 1])
        return [(a, n) for a, n in out]

    def alloc_no_grow(self, n: int) -> int | None:
        for a, size in self.runs():
            if size >= n:
                got = a + size - n
                self.free -= set(range(got, got + n))
                return got
        return None

    def alloc(self, n: int) -> int:
        p = self.alloc_no_grow(n)
        if p is None:
            p, self.bloc = self.bloc, self.bloc + n
        return p

    def release(self, a: int, n: int) -> None:
        if a + n == self.bloc:
            self.bloc = a
        else:
            self.free |= set(range(a, a + n))

    def aligned(self, n: int, align: int) -> int:
        base = self.alloc_no_grow(n + align)
        if base is not None:
            start = -(-base // align) * align
            self.free |= set(range(base, start)) | set(range(start + n, base + n + align))
            return start
        p = -(-self.bloc // align) * align
        self.free |= set(range(self.bloc, p))
        self.bloc = p + n
        return p


@settings(max_examples=150, deadline=None)
@given(sbrk_ops())
def test_sbrk_free_list_matches_reference(ops):
    base = 0x1000_0000
    b = make("sbrk")
    ref = _RefSbrk(base // P)
    live: list[tuple[int, int]] = []
    for op in ops:
        if op[0] == "alloc":
            p = b.alloc(op[1] * P, "x")
            assert p == ref.alloc(op[1]) * P
            live.append((p, op[1] * P))
        elif op[0] == "aligned":
            p, size = b.reserve_aligned_sbrk(op[1] * P, op[2] * P)
            assert (p, size) == (ref.aligned(op[1], op[2]) * P, op[1] * P)
            live.append((p, size))
        elif live:
            p, n = live.pop(op[1] % len(live))
            b.free(p, n)
            ref.release(p // P, n // P)
        assert b.free_list == [(a * P, n * P) for a, n in ref.runs()]
        assert b.bloc == ref.bloc * P
    spans = sorted(live)
    for (a, n), (c, _) in zip(spans, spans[1:]):
        assert a + n <= c


# -- failure injection ----------------------------------------------------------------------
@pytest.mark.parametrize("personality", ["linux", "windows", "sbrk"])
def test_fail_next_reserve_and_alloc(personality):
    b = make(personality)
    b.fail_next("reserve", 2)
    assert b.reserve(None, P, "x") is None
    assert b.reserve(None, P, "x") is None
    assert b.reserve(None, P, "x") is not None
    b.fail_next("alloc")
    assert b.alloc(P, "x") is None
    assert b.alloc(P, "x") is not None
    b.fail_next("alloc", 3)
    b.fail_next("alloc", 0)  # cancels
    assert b.alloc(P, "x") is not None


@pytest.mark.parametrize("personality", ["linux", "windows", "sbrk"])
def test_fail_next_map(personality):
    b = make(personality)
    p = b.reserve(None, MiB, "heap")
    b.fail_next("map")
    with pytest.raises(SysOutOfMemoryError, match="runtime: out of memory"):
        b.map(p, MiB, "heap")
    b.map(p, MiB, "heap")


def test_fail_next_used_windows():
    b = make("windows")
    p = b.reserve(None, MiB, "heap")
    b.fail_next("used")
    with pytest.raises(SysOutOfMemoryError, match="out of memory"):
        b.used(p, P)
    assert not b.inspect(p, P).accessible.any()
    b.used(p, P)


# -- residency and memory budget ------------------------------------------------------------
def test_linux_physical_memory_limits_touched_bytes():
    b = make(physical_memory=4 * P)
    p = b.alloc(MiB, "x")  # address space is free
    b.buffer(p, 4 * P)
    with pytest.raises(SysOutOfMemoryError, match="physical_memory"):
        b.buffer(p + 4 * P, 1)
    assert b.resident_bytes() == 4 * P
    b.buffer(p, 4 * P)  # already resident: fine
    b.unused(p, P)
    b.buffer(p + 4 * P, 1)


def test_memory_pressure_reclaims_lazyfree_first():
    b = make(physical_memory=4 * P, godebug={"madvdontneed": 0})
    p = b.alloc(MiB, "x")
    write(b, p, b"a" * (4 * P))
    b.unused(p, 2 * P)
    write(b, p + 4 * P, b"b" * (2 * P))  # needs 2 pages: the lazy-free ones go
    assert b.resident_bytes() == 4 * P and b.lazyfree_bytes() == 0
    with pytest.raises(SysOutOfMemoryError):
        read(b, p, 1)  # nothing left to reclaim
    b.unused(p + 5 * P, P)
    assert read(b, p, 1) == b"\0"  # reclaimed contents read as zero
    assert b.resident_bytes() == 4 * P
    assert read(b, p + 4 * P, 1) == b"b"  # the touched range itself was kept


def test_inspect_reports_pages():
    b = make(godebug={"madvdontneed": 0})
    p = b.reserve(None, 8 * P, "heap")
    b.map(p + 2 * P, 4 * P, "heap")
    write(b, p + 2 * P, b"x" * (2 * P))
    b.unused(p + 3 * P, P)
    pages = b.inspect(p + P // 2, 6 * P)
    assert pages.start == p and pages.page_size == P
    assert len(pages.mapped) == 7
    assert pages.mapped.all()
    assert list(pages.accessible) == [False, False, True, True, True, True, False]
    assert list(pages.resident) == [False, False, True, True, False, False, False]
    assert pages.lazyfree_bytes == P
    assert not pages.huge_advised.any()
    assert pages.mapped.dtype == np.bool_


def test_call_log_is_bounded():
    b = make(call_log_size=5)
    p = b.alloc(MiB, "x")
    for i in range(20):
        b.unused(p, P)
    assert len(b.calls) == 5


def test_close_is_idempotent():
    b = make()
    p = b.alloc(MiB, "x")
    write(b, p, b"abc")
    b.close()
    b.close()
    assert b.resident_bytes() == 0
    assert read(b, p, 3) == b"\0\0\0"


def test_many_small_operations_leave_exact_state():
    """20000 used / touch / unused rounds over a 64 MiB mapping (the simulation's hot
    path; its speed is measured by benchmarks/, not here): the state after them is
    exactly what the rounds imply."""
    for personality in ("linux", "windows"):
        b = make(personality)  # linux: madvdontneed=1, so unused drops the pages
        base = b.reserve(None, 64 * MiB, "heap")
        b.map(base, 64 * MiB, "heap")
        touched = set()
        for i in range(20000):
            v = base + (i * 7919 % 8192) * 8192
            b.used(v, 8192)
            b.buffer(v, 16)[0] = 1
            b.unused(v, 8192)
            touched.add(v)
        assert len(touched) == 8192  # 7919 is prime to 8192: every 8 KiB block, some twice
        pages = b.inspect(base, 64 * MiB)
        assert pages.mapped.all() and not pages.resident.any()
        assert b.resident_bytes() == b.lazyfree_bytes() == 0
        # linux: still mapped read/write; windows: decommitted again
        assert pages.accessible.all() == (personality == "linux")
        assert b.committed_bytes() == (64 * MiB if personality == "linux" else 0)
        if personality == "linux":
            assert read(b, base, 16) == bytes(16)  # MADV_DONTNEED: zero pages again


def test_threads_keep_counters_exact():
    b = make()
    p = b.alloc(64 * MiB, "x")

    def work(k: int) -> None:
        lo = p + k * 8 * MiB
        for i in range(300):
            v = lo + (i % 64) * P
            b.buffer(v, P)[0] = k
            if i % 3 == 0:
                b.unused(v, P)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert b.resident_bytes() == int(b.inspect(p, 64 * MiB).resident.sum()) * P


# -- randomized checks of the machinery ------------------------------------------------------
@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["map", "unused", "write", "read", "fault", "free", "reclaim"]),
            st.integers(0, 15),
            st.integers(1, 6),
            st.integers(1, 255),
        ),
        max_size=50,
    )
)
def test_linux_pages_match_reference_model(ops):
    b = make(godebug={"madvdontneed": 0})
    base = 0x10_0000_0000
    npages = 16
    mapped = [False] * npages
    acc = [False] * npages
    res = [False] * npages
    lazy = [False] * npages
    data = [0] * npages
    for op, i, k, val in ops:
        j = min(i + k, npages)
        pages = range(i, j)
        v, n = base + i * P, (j - i) * P
        if op == "map":
            b.map(v, n, "heap")
            for q in pages:
                mapped[q], acc[q], res[q], lazy[q], data[q] = True, True, False, False, 0
        elif op in ("unused", "fault") and all(mapped[q] for q in pages):
            getattr(b, op)(v, n)
            for q in pages:
                if op == "unused":
                    lazy[q] = res[q]
                else:
                    acc[q], res[q], lazy[q], data[q] = False, False, False, 0
        elif op == "free":
            b.free(v, n)
            for q in pages:
                mapped[q], acc[q], res[q], lazy[q], data[q] = False, False, False, False, 0
        elif op == "reclaim":
            assert b.reclaim() == sum(lazy) * P
            for q in range(npages):
                if lazy[q]:
                    res[q], lazy[q], data[q] = False, False, 0
        elif op in ("write", "read"):
            if not acc[i]:
                with pytest.raises(InaccessibleMemoryError):
                    b.buffer(base + i * P + 7, 1)
                continue
            buf = b.buffer(base + i * P + 7, 1)
            assert buf[0] == data[i]
            if op == "write":
                buf[0] = data[i] = val
            res[i], lazy[i] = True, False
        assert b.advise_unused == "free"
        got = b.inspect(base, npages * P)
        assert list(got.mapped) == mapped
        assert list(got.accessible) == acc
        assert list(got.resident) == res
        assert got.lazyfree_bytes == sum(lazy) * P
        assert b.resident_bytes() == sum(res) * P
        assert b.lazyfree_bytes() == sum(lazy) * P


# -- contents: views across storage segments ---------------------------------------------------
needs_memfd = pytest.mark.skipif(not hasattr(os, "memfd_create"),
                                 reason="views across storage segments need memfd_create")

SEG = 0x10_0000_0000  # a segment-aligned address; the tests use 1 MiB segments


def straddling(personality: str, **kw) -> tuple[SimulatedBackend, int]:
    """A backend with 1 MiB storage segments and [base, base+4 MiB) accessible; base is
    segment aligned."""
    if personality == "sbrk":
        b = make("sbrk", segment_size=MiB, **kw)
        base = b.alloc(4 * MiB, "x")
        assert base % MiB == 0
        return b, base
    b = make(personality, segment_size=MiB, **kw)
    if personality == "linux":
        b.map(SEG, 4 * MiB, "heap")
    else:
        assert b.reserve(SEG, 4 * MiB, "heap") == SEG
        b.used(SEG, 4 * MiB)
    return b, SEG


def pattern(n: int, salt: int = 0) -> bytes:
    return ((np.arange(n) * 7 + salt) % 251 + 1).astype(np.uint8).tobytes()


@needs_memfd
@pytest.mark.parametrize("personality", ["linux", "windows", "sbrk"])
def test_views_across_segments_are_one_coherent_memory(personality):
    b, base = straddling(personality)
    v = base + MiB // 2  # [v, v + 3 MiB) crosses two segment boundaries
    data = pattern(3 * MiB)
    big = b.buffer(v, 3 * MiB)
    big[:] = data
    assert b.resident_bytes() == 3 * MiB and b.inspect(v, 3 * MiB).resident.all()
    # Another straddling view, overlapping: same bytes, and writes go both ways.
    edge = base + MiB
    small = b.buffer(edge - 8, 16)
    assert bytes(small) == data[MiB // 2 - 8 : MiB // 2 + 8]
    small[:] = b"z" * 16
    assert bytes(big[MiB // 2 - 8 : MiB // 2 + 8]) == b"z" * 16
    # Views inside one segment see the same memory.
    inside = b.buffer(edge, 8)
    assert bytes(inside) == b"z" * 8
    inside[:] = b"12345678"
    assert bytes(big[MiB // 2 : MiB // 2 + 8]) == b"12345678"
    assert read(b, edge - 4, 8) == b"zzzz1234"
    assert read(b, v, 3 * MiB)[2 * MiB :] == data[2 * MiB :]
    assert b.resident_bytes() == 3 * MiB  # residency counted once


@needs_memfd
def test_sysmem_view_and_heap_across_a_segment_boundary():
    sm = SysMem("simulated", personality="linux")  # 1 GiB segments
    st_other = sm.stat("other")
    p = sm.sys_reserve(GiB - 0x10000, 0x20000, "x")
    assert p == GiB - 0x10000
    sm.sys_map(p, 0x20000, st_other)
    sm.sys_used(p, 0x20000, 0x20000)
    view = sm.view(p, 0x20000)
    view[:] = 7
    words = sm.view(p + 0x8000, 0x10000, np.uint64)
    assert (words == 0x0707070707070707).all()
    words[:] = 9
    assert (view[0x8000:0x18000:8] == 9).all()
    del view, words
    sm.check()
    sm.close()
    # A heap much bigger than a segment: objects cross segment boundaries.
    h = Heap(backend="simulated", personality="linux", gogc="off", segment_size=MiB)
    objs = [h.alloc(3 * MiB // 2, False) for _ in range(6)]
    for i, o in enumerate(objs):
        h.write(o, pattern(3 * MiB // 2, i))
    for i, o in enumerate(objs):
        assert h.read(o, 3 * MiB // 2) == pattern(3 * MiB // 2, i)
    h.close()


@needs_memfd
@pytest.mark.parametrize("madvdontneed", [1, 0])
def test_linux_unused_zeroes_every_view_of_the_pages(madvdontneed):
    b, base = straddling("linux", godebug={"madvdontneed": madvdontneed})
    v = base + MiB // 2
    big = b.buffer(v, 3 * MiB)
    big[:] = b"\xff" * (3 * MiB)
    other = b.buffer(base + 2 * MiB - P, 2 * P)  # crosses the second boundary
    # Released: many pages across the first boundary, two across the second.
    wide = (base + MiB - 32 * P, 64 * P)
    narrow = (base + 2 * MiB - P, 2 * P)
    b.unused(*wide)
    b.unused(*narrow)
    if madvdontneed == 0:  # MADV_FREE: contents stay until the kernel needs the pages
        assert bytes(other) == b"\xff" * 2 * P
        assert b.reclaim() == 66 * P
    assert b.resident_bytes() == 3 * MiB - 66 * P
    assert bytes(other) == bytes(2 * P)
    got = np.frombuffer(big, dtype=np.uint8)
    zero = np.zeros(3 * MiB, dtype=bool)
    for a, n in (wide, narrow):
        zero[a - v : a - v + n] = True
    assert (got[zero] == 0).all() and (got[~zero] == 0xFF).all()
    assert read(b, wide[0], wide[1]) == bytes(wide[1])


@needs_memfd
def test_windows_decommitted_straddling_range_faults_until_committed():
    b, base = straddling("windows")
    v = base + MiB // 2
    big = b.buffer(v, 3 * MiB)
    big[:] = b"\x5a" * (3 * MiB)
    b.unused(base + MiB - P, 2 * P)  # decommit across the boundary
    with pytest.raises(InaccessibleMemoryError, match="not accessible"):
        b.buffer(base + MiB - P, 2 * P)
    with pytest.raises(InaccessibleMemoryError, match="not accessible"):
        b.buffer(v, 3 * MiB)
    assert b.resident_bytes() == 3 * MiB - 2 * P
    b.used(base + MiB - P, 2 * P)
    assert read(b, base + MiB - P - 2, 2 * P + 4) == b"\x5a\x5a" + bytes(2 * P) + b"\x5a\x5a"
    # The old view saw the decommit too: decommitted pages come back as zeros.
    assert bytes(big[MiB // 2 - P : MiB // 2 + P]) == bytes(2 * P)


@needs_memfd
def test_host_memory_goes_back_with_the_pages():
    b, base = straddling("linux", godebug={"madvdontneed": 0})
    v = base + MiB // 2
    view = b.buffer(v, 3 * MiB)
    view[:] = b"\1" * (3 * MiB)
    assert host_bytes(b) >= 3 * MiB
    b.unused(v, 3 * MiB)  # MADV_FREE: still resident
    assert host_bytes(b) >= 3 * MiB
    assert b.reclaim() == 3 * MiB  # memory pressure drops it, in every view
    assert host_bytes(b) == 0 and bytes(view[:16]) == bytes(16)
    del view
    b.free(base, 4 * MiB)
    assert not b._space.storage.segments and host_bytes(b) == 0
    # Pages zeroed a few at a time are zeroed by writing, and stay allocated on the host
    # until their segment has nothing resident and nothing mapped.
    b, base = straddling("linux")  # madvdontneed=1: sys_unused zeroes at once
    edge = base + MiB
    for k in range(-8, 8):
        b.buffer(edge + 4 * k * P - 1, 2)[:] = b"xy"  # k == 0 crosses the segments
        b.unused(edge + 4 * k * P - P, 2 * P)
    assert b.resident_bytes() == 0 and read(b, edge - 1, 2) == b"\0\0"
    b.unused(edge - P, 2 * P)  # that read made them resident again
    assert 0 < host_bytes(b)
    b.free(base, 4 * MiB)
    assert not b._space.storage.segments and host_bytes(b) == 0
    b.map(base, MiB, "heap")
    assert read(b, base + P - 1, 2) == b"\0\0"


def open_memfd(file) -> set:
    """Descriptors and mappings of the process that still refer to ``file``'s memfd."""
    st = os.fstat(file.fd)
    key = (st.st_dev, st.st_ino)
    found = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            s = os.stat(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if (s.st_dev, s.st_ino) == key:
            found.add(("fd", int(fd)))
    with open("/proc/self/maps") as maps:
        for line in maps:
            fields = line.split()
            if len(fields) >= 6 and "memfd:" in line and int(fields[4]) == st.st_ino:
                found.add(("map", fields[0]))
    return found


@needs_memfd
@pytest.mark.parametrize("how", ["close", "sysmem close", "gc"])
def test_closing_or_dropping_the_backend_releases_the_memfd(how):
    holder = SysMem("simulated", personality="linux", segment_size=MiB)
    b = holder.backend
    b.map(SEG, 4 * MiB, "heap")
    b.buffer(SEG + MiB - 8, 16)[:] = b"s" * 16  # a segment mapping + a straddling one
    file = b._space.storage.file
    fd = os.dup(file.fd)  # to identify the memfd after it is closed
    try:
        file_id = type("F", (), {"fd": fd})()
        assert {k for k, _ in open_memfd(file_id)} == {"fd", "map"}
        if how == "close":
            b.close()
            assert read(b, SEG + MiB - 8, 16) == bytes(16)  # fresh, zeroed contents
            b.close()
        elif how == "sysmem close":
            holder.close()
        else:
            del b, holder, file
            gc.collect()
        assert open_memfd(file_id) == {("fd", fd)}  # only our own duplicate is left
    finally:
        os.close(fd)


@needs_memfd
def test_forked_child_gets_its_own_copy_of_the_contents():
    import multiprocessing

    b, base = straddling("linux")
    view = b.buffer(base + MiB - 8, 16)
    view[:] = b"parent-parent-pa"
    ctx = multiprocessing.get_context("fork")
    proc = ctx.Process(target=_child_scribbles, args=(b, view, base))
    proc.start()
    proc.join(60)
    assert proc.exitcode == 0
    assert bytes(view) == b"parent-parent-pa"  # the child's writes stayed in the child
    assert b.resident_bytes() == 2 * P
    assert read(b, base, 4) == bytes(4)


def _child_scribbles(b: SimulatedBackend, view: memoryview, base: int) -> None:
    ok = bytes(view) == b"parent-parent-pa"
    view[:] = b"child-child-chil"
    b.buffer(base, 4)[:] = b"kid!"
    b.unused(base + MiB - P, 2 * P)
    ok = ok and bytes(view) == bytes(16)
    sys.exit(0 if ok else 1)


def test_closing_one_sysmem_leaves_a_shared_backend_alone():
    b = SimulatedBackend(DebugSettings(madvdontneed=0))
    sm1, sm2 = SysMem(b), SysMem(b)
    st = sm2.stat("other")
    p = sm2.sys_alloc(64 << 10, st)
    v = sm2.view(p, 16)
    v[:] = 9
    sm1.close()
    sm1.close()  # once per SysMem
    assert bytes(sm2.view(p, 16)) == bytes([9]) * 16 and b.resident_bytes() == P
    del v
    sm2.sys_free(p, 64 << 10, st)
    sm2.close()  # the last user: now the storage goes
    assert b.resident_bytes() == 0


@needs_memfd
def test_views_older_than_a_close_stay_out_of_a_forked_childs_reach():
    import multiprocessing

    sm = SysMem("simulated", personality="linux")
    p = sm.sys_alloc(64 << 10, sm.stat("other"))
    old = sm.view(p, 16)
    old[:] = 7
    sm.close()  # contents dropped: old views keep their (stale) memory, new ones read 0
    assert bytes(sm.view(p, 16)) == bytes(16) and bytes(old) == bytes([7]) * 16
    proc = multiprocessing.get_context("fork").Process(target=_child_writes, args=(old,))
    proc.start()
    proc.join(60)
    assert proc.exitcode == 0
    assert bytes(old) == bytes([7]) * 16  # the child's write stayed in the child


def _child_writes(view: np.ndarray) -> None:
    view[:] = 5
    sys.exit(0 if (view == 5).all() else 1)


# -- placement ----------------------------------------------------------------------------------
def placement_sequence(personality: str, seed: int, address_bits: int, steps: int = 60) -> list:
    """Addresses the simulated OS picks for a fixed mix of hinted and unhinted reserves,
    allocs and frees."""
    b = make(personality, seed=seed, address_bits=address_bits)
    rng = random.Random(1000 + seed)
    live: list[tuple[int, int]] = []
    out: list[int | None] = []
    for _ in range(steps):
        op = rng.random()
        if op < 0.15 and live:
            p, n = live.pop(rng.randrange(len(live)))
            b.free(p, n)
            continue
        n = rng.choice([1, 3, 16, 17, 256, 4096, 1 << 14, 1 << 18, 1 << 20, 1 << 21]) * P
        if op < 0.3:
            hint = rng.randrange(1 << address_bits) & -(1 << 16)
            p = b.reserve(hint, n, "h")
        elif op < 0.6:
            p = b.alloc(n, "a")
        else:
            p = b.reserve(None, n, "r")
        out.append(p)
        if p is not None:
            live.append((p, n))
    return out


PLACEMENTS_RECORDED = {
    ('linux', 0, 36): [
        0xfffffd000, 0xfffffa000, 0xeffffa000, 0xefbffa000, 0xebbffa000, 0xebaffa000,
        0x12edc0000, 0xe7affa000, 0xe7afe9000, 0xe7afe9000, 0xe7afd9000, 0xfffffa000,
        0x17c50000, 0xe7afd8000, 0xe7aed8000, 0x61e7c0000, 0xe76ed8000, 0xe76ec7000,
        0x91ea40000, 0xe75ec7000, 0xe75dc7000, 0xe75dc6000, 0xe76ed5000, 0x45ed10000,
        0xe75db6000, 0xe35db6000, 0xe31db6000, 0xe31da5000, 0xe31d94000, 0xe31c94000,
        0xe2dc94000, 0xe76ed4000, 0xc2dc94000, 0xe76ed1000, 0x71ea40000, 0xc29c94000,
        0xe76ed0000, 0xe76ecf000, 0x324080000, 0xb29c94000, 0xb29c83000, 0xb29c73000,
        0x22b250000, 0xb29c62000, 0x51ea40000, 0x2b250000, 0x4dea40000, 0xb29c52000,
        0xb25c52000, 0xe76ed7000, 0xe76ed6000, 0x49ea40000, None,
    ],
    ('linux', 5, 34): [
        0x379365000, 0x179365000, 0x179265000, 0x179255000, None, 0x178255000, 0x178254000,
        None, 0x178154000, 0x177154000, 0x177054000, 0xa61c0000, 0x177043000, None,
        0x176043000, None, 0x175f43000, 0x135f43000, 0x134f43000, 0x134e43000, 0x177053000,
        0x130e43000, 0x3ecd30000, 0x177043000, 0x37d364000, 0xf0e43000, 0xb0e43000,
        0x37c364000, 0x37c354000, None, 0x37c351000, 0x37b351000, None, None, 0xa8bb0000,
        None, 0x37b251000, 0x37b250000, None, 0x37b23f000, 0x130f43000, 0x37a23f000,
        0x661c0000, 0x2d0f0000, None, 0x37c354000, 0xafe43000, 0x37a23c000, 0x37a22b000,
        0xabe43000, 0xa7e43000, 0x621c0000,
    ],
    ('windows', 0, 36): [
        0x10000, 0x20000, 0x30000, 0x100030000, 0x104030000, 0x144030000, 0x145030000,
        0x185030000, 0x145030000, 0x145030000, 0x20000, 0x145050000, 0x145060000,
        0x145160000, 0x145170000, 0x61e7c0000, 0x145270000, 0x149270000, 0x91ea40000,
        0x149290000, 0x14a290000, 0x14a390000, 0x149270000, 0x45ed10000, 0x149280000,
        0x1c5030000, 0x14a3a0000, 0x14e3a0000, 0x14e3c0000, 0x14e3e0000, 0x14e4e0000,
        0x1524e0000, 0x205030000, 0x1524f0000, 0x71e7c0000, 0x152500000, 0x156500000,
        0x156510000, 0x156520000, 0x45ed20000, 0x157520000, 0x149270000, 0x157540000,
        0x158540000, 0xb1ea40000, 0xd1ea40000, 0x405030000, 0x158560000, 0x158570000,
        0x15c570000, 0x15c580000, 0x55ed20000, None,
    ],
    ('windows', 9, 33): [
        0xfece0000, 0x76890000, 0xb6890000, 0xb68a0000, 0x8170000, 0x1ac790000, 0x192170000,
        None, None, 0xb68c0000, 0xb68c0000, 0xb68e0000, 0xb68f0000, 0xb69f0000, 0xb6a10000,
        0xb7a10000, 0xf7a10000, 0x18bb60000, 0xf8a10000, 0xf9a10000, 0xf9a20000, 0xb68c0000,
        0x15e7a0000, 0xfda20000, 0xb68c0000, 0x1f1940000, 0x143ee0000, 0xfea20000,
        0x1ac7a0000, 0x76890000, 0xb68d0000, 0x8180000, 0xfda20000, 0x13ece0000, None,
        0xb69f0000, None, 0xfdb20000, None, 0xb6a00000, 0x13fce0000, None, None, 0xfdb40000,
        0xfdb60000, 0xfdb70000, 0xfdb90000, 0x143f00000, 0xfdba0000, 0xfdbb0000, None, None,
        0xfdbc0000,
    ],
}


@pytest.mark.parametrize("config", list(PLACEMENTS_RECORDED))
def test_placement_is_unchanged(config):
    """Recorded from the linear-scan placement that the gap index replaced."""
    assert placement_sequence(*config) == PLACEMENTS_RECORDED[config]


def linear_gap(owner, n: int, align: int, lo: int, hi: int, top_down: bool) -> int | None:
    """The linear-scan search the gap index replaced: the reference it must agree with."""
    starts, vals = owner.starts, owner.vals
    if top_down:
        i = bisect.bisect_left(starts, hi) - 1
        while i >= 0:
            if vals[i] is None:
                s = max(starts[i], lo)
                e = min(starts[i + 1] if i + 1 < len(starts) else hi, hi)
                p = (e - n) & -align
                if e - s >= n and p >= s:
                    return p
            if starts[i] <= lo:
                break
            i -= 1
        return None
    i = max(bisect.bisect_right(starts, lo) - 1, 0)
    while i < len(starts) and starts[i] < hi:
        if vals[i] is None:
            s = -(-max(starts[i], lo) // align) * align
            e = min(starts[i + 1] if i + 1 < len(starts) else hi, hi)
            if s + n <= e:
                return s
        i += 1
    return None


def linear_place(space, n: int, align: int, base: int, top_down: bool) -> int | None:
    if top_down:
        p = linear_gap(space.owner, n, align, space.min_addr, base, True)
        return p if p is not None else linear_gap(space.owner, n, align, base, space.top, True)
    p = linear_gap(space.owner, n, align, base, space.top, False)
    return p if p is not None else linear_gap(space.owner, n, align, space.min_addr, base, False)


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from(["linux", "windows"]),
    st.lists(st.tuples(st.booleans(), st.integers(0, 40), st.integers(1, 40)), max_size=40),
    st.lists(st.tuples(st.integers(1, 64), st.integers(0, 1 << 20)), min_size=1, max_size=8),
)
def test_placement_matches_the_linear_search(personality, ops, queries):
    b = make(personality, address_bits=24)
    space = b._space
    page = 0x10000 if personality == "windows" else P
    for query_first in (True, False):  # the index is built before or after the changes
        if query_first:
            space.place(P, page, space.top // 2, personality == "linux")
        for free, slot, pages in ops:
            lo = 0x10000 + slot * 0x18000
            if personality == "linux":
                if free:
                    b.free(lo, pages * P)
                else:
                    b.map(lo, pages * P, "x")
            elif not free and space.is_free(lo, lo + pages * P):
                b.reserve(lo, pages * P, "x")
            elif free and lo in b._os.allocs:
                b.free(lo, 0)
        for k, base in queries:
            for align in {page, P, 4 * P}:
                for down in (False, True):
                    base_at = max(space.min_addr, min(base * 16, space.top))
                    want = linear_place(space, k * P, align, base_at, down)
                    assert space.place(k * P, align, base_at, down) == want, (k, align, base_at)
        b = make(personality, address_bits=24)
        space = b._space


class _CountingList(list):
    """A list that counts the items read from it."""

    reads = 0

    def __getitem__(self, i):
        self.reads += 1
        return super().__getitem__(i)


def runs_read(b: SimulatedBackend, call) -> int:
    """How many owner-map runs ``call`` reads (the linear search read every run it
    passed)."""
    owner = b._space.owner
    owner.vals = counting = _CountingList(owner.vals)
    try:
        call()
    finally:
        owner.vals = list(counting)
    return counting.reads


@pytest.mark.parametrize("personality", ["linux", "windows"])
def test_placement_does_not_scan_every_region(personality):
    """Placing past thousands of regions reads a few runs, not all of them (its speed is
    measured in benchmarks/test_bench_sysmem.py)."""
    b = make(personality)
    if personality == "windows":  # bottom-up, 64 KiB apart: each leaves a useless remainder
        got = [b.alloc(5 * P, "meta") for _ in range(3000)]
        assert got == [0x10000 * (k + 1) for k in range(3000)]
        want = got[-1] + 0x10000
    else:  # top-down; every other page freed again: 1500 one-page holes
        got = [b.alloc(P, "x") for _ in range(3001)]
        assert got == [got[0] - k * P for k in range(3001)]
        for p in got[1::2]:
            b.free(p, P)
        want = got[-1] - 2 * P
    out = []
    assert runs_read(b, lambda: out.append(b.alloc(2 * P, "y"))) < 50
    assert out == [want]
    # Freed space is found again, first fit from the base.
    b.free(got[1500], P)
    if personality == "windows":
        assert b.alloc(P, "again") == got[1500]
    else:
        assert b.alloc(3 * P, "again") == got[1501]  # the only 3-page hole
