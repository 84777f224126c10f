"""The Linux backend: the system calls of Go's ``mem_linux.go``, on this process's memory."""

from __future__ import annotations

import sys
import threading

import numpy as np

from . import _libc as L
from ._libc import ffi, libc
from ._procfs import mincore, smaps
from .backend import Backend, OsPages
from .errors import (
    MisalignedRangeError,
    RuntimeThrowError,
    SysCallError,
    SysOutOfMemoryError,
)
from .settings import DebugSettings

__all__ = ["LinuxBackend", "huge_page_size_from_sysfs"]

_RW = L.PROT_READ | L.PROT_WRITE
_ANON = L.MAP_ANONYMOUS | L.MAP_PRIVATE
_ANON_FIXED = L.MAP_ANONYMOUS | L.MAP_FIXED | L.MAP_PRIVATE

# Go's adviseUnused: process-wide, because what the kernel supports is process-wide.
# It starts at MADV_FREE and is only ever downgraded (FREE → DONTNEED → 0 = no madvise).
_MADVISE_UNSUPPORTED = 0
_advise_unused = L.MADV_FREE
_advise_lock = threading.Lock()

# setVMAName's "unsupported" flag: the first EINVAL turns naming off for the process.
_vma_names_unsupported = False

#: Go's VMA name prefix (``set_vma_name_linux.go``), so tools that read Go's names read ours.
VMA_NAME_PREFIX = b" Go: "
_VMA_NAME_BUFFER = 80
# Go's maxPhysHugePageSize is pallocChunkBytes: larger huge pages are ignored.
_MAX_HUGE_PAGE = 4 << 20


_DONE = -1  # sys_unused's advice was taken


def _downgrade_advice(advice: int) -> int:
    """Remember, for the whole process, that the kernel refused the previous advice."""
    global _advise_unused
    with _advise_lock:
        _advise_unused = advice
    return advice


def huge_page_size_from_sysfs() -> int:
    """Go's ``getHugePageSize``: the THP size, or 0 if unknown or above 4 MiB."""
    try:
        with open("/sys/kernel/mm/transparent_hugepage/hpage_pmd_size") as f:
            size = int(f.read())
    except (OSError, ValueError):
        return 0
    if size & (size - 1):
        raise RuntimeThrowError(f"runtime: huge page size ({size}) must be a power of 2")
    return 0 if size > _MAX_HUGE_PAGE else size


def reset_advise_unused() -> None:
    """Forget downgrades of the process-wide ``sys_unused`` advice (for tests)."""
    global _advise_unused
    with _advise_lock:
        _advise_unused = L.MADV_FREE


def advise_unused() -> int:
    """The process-wide advice ``sys_unused`` starts from (Go's ``adviseUnused``)."""
    return _advise_unused


class LinuxBackend(Backend):
    """Go's ``mem_linux.go`` through cffi: mmap, madvise, mprotect, munmap, prctl.

    ``syscalls`` replaces libc (an object with ``mmap``/``madvise``/… of the same
    signatures), so tests can make a call fail and watch Go's fallbacks run.
    """

    name = "linux"

    def __init__(self, debug: DebugSettings, *, syscalls=None) -> None:
        if not sys.platform.startswith("linux"):
            raise OSError(f"the linux backend needs Linux, not {sys.platform}")
        super().__init__(debug)
        self._sys = sys_ = libc if syscalls is None else syscalls
        # Bound once: attribute lookups show on the per-call cost of the hot paths.
        self._mmap, self._madvise = sys_.mmap, sys_.madvise
        self.phys_page_size = int(libc.sysconf(L.SC_PAGESIZE))
        self._page_mask = self.phys_page_size - 1
        self._fault_kept_pages = False
        self.huge_page_size = huge_page_size_from_sysfs()
        self._name_buf = ffi.new("char[]", _VMA_NAME_BUFFER)

    @property
    def mapped_is_accessible(self) -> bool:
        """``sysMapOS`` maps read/write."""
        return True

    @property
    def released_is_accessible(self) -> bool:
        """``madvise`` keeps the mapping; ``harddecommit`` remaps it PROT_NONE."""
        return not self.debug.harddecommit

    @property
    def used_replaces_memory(self) -> bool:
        """``harddecommit``: ``sysUsedOS`` mmaps the whole range read/write afresh."""
        return self.debug.harddecommit > 0

    # -- helpers ------------------------------------------------------------------------
    def _set_vma_name(self, v: int, n: int, name: str) -> None:
        """Go's ``setVMAName``: name the mapping " Go: <name>" where the kernel allows."""
        global _vma_names_unsupported
        if _vma_names_unsupported or not name or not self.debug.decoratemappings:
            return
        raw = VMA_NAME_PREFIX + name.encode("utf-8", "replace")
        raw = raw[: _VMA_NAME_BUFFER - 1]
        ffi.memmove(self._name_buf, raw + b"\0", len(raw) + 1)
        addr = int(ffi.cast("uintptr_t", self._name_buf))
        if self._sys.prctl(L.PR_SET_VMA, L.PR_SET_VMA_ANON_NAME, v, n, addr) != 0:
            if ffi.errno == L.EINVAL:
                _vma_names_unsupported = True  # kernel built without CONFIG_ANON_VMA_NAME

    def _map_fixed(self, v: int, n: int, prot: int, throw: str) -> None:
        """mmap(v, n, prot, MAP_FIXED) where Go throws if the mapping fails or moves."""
        p = self._mmap(v, n, prot, _ANON_FIXED, -1, 0)
        if p != v:
            err = ffi.errno if p == L.MAP_FAILED else 0
            if err == L.ENOMEM and prot != L.PROT_NONE:
                raise SysOutOfMemoryError(f"runtime: out of memory: mmap({v:#x}, {n:#x}) failed")
            raise RuntimeThrowError(
                f"runtime: {throw} (mmap({v:#x}, {n:#x}) returned {p:#x}, errno {err})"
            )

    # -- the *OS functions -----------------------------------------------------------
    def alloc(self, n: int, vma_name: str) -> int | None:
        """``sysAllocOS``: mmap(NULL, n, RW, ANON|PRIVATE)."""
        p = self._sys.mmap(0, n, _RW, _ANON, -1, 0)
        if p == L.MAP_FAILED:
            err = ffi.errno
            # Go prints these and exits(2); a library raises instead.
            if err == L.EACCES:
                raise SysCallError("mmap", err, "runtime: mmap: access denied")
            if err == L.EAGAIN:
                raise SysCallError(
                    "mmap", err, "runtime: mmap: too much locked memory (check 'ulimit -l')."
                )
            return None
        self._set_vma_name(p, n, vma_name)
        return p

    def unused(self, v: int, n: int) -> None:
        """``sysUnusedOS``: MADV_DONTNEED (Go's default) or MADV_FREE, with Go's fallbacks."""
        if (v | n) & self._page_mask:
            # madvise would round outward and release memory the caller still uses.
            raise MisalignedRangeError(f"unaligned sysUnused: [{v:#x}, +{n:#x})")
        advise = _advise_unused
        if self.debug.madvdontneed and advise != _MADVISE_UNSUPPORTED:
            advise = L.MADV_DONTNEED
        if advise == L.MADV_FREE:
            if self._madvise(v, n, L.MADV_FREE) == 0:
                advise = _DONE
            else:
                advise = _downgrade_advice(L.MADV_DONTNEED)
        if advise == L.MADV_DONTNEED:
            if self._madvise(v, n, L.MADV_DONTNEED) == 0:
                advise = _DONE
            else:
                advise = _downgrade_advice(_MADVISE_UNSUPPORTED)
        if advise == _MADVISE_UNSUPPORTED:
            # No madvise: a fresh fixed mapping over the range drops the old pages.
            if self._mmap(v, n, _RW, _ANON_FIXED, -1, 0) != L.MAP_FAILED:
                self._set_vma_name(v, n, "unused")
        if self.debug.harddecommit > 0:
            self._map_fixed(v, n, L.PROT_NONE, "cannot disable permissions in address space")
            self._set_vma_name(v, n, "unused")

    def used(self, v: int, n: int) -> None:
        """``sysUsedOS``: nothing, unless ``harddecommit`` took the permissions away."""
        if self.debug.harddecommit > 0:
            self._map_fixed(v, n, _RW, "cannot remap pages in address space")
            self._set_vma_name(v, n, "used")

    def huge_page(self, v: int, n: int) -> None:
        """``sysHugePageOS``: MADV_HUGEPAGE on the range rounded inward to huge pages."""
        h = self.huge_page_size
        if h:
            beg = (v + h - 1) & -h
            end = (v + n) & -h
            if beg < end:
                self._sys.madvise(beg, end - beg, L.MADV_HUGEPAGE)

    def no_huge_page(self, v: int, n: int) -> None:
        """``sysNoHugePageOS``: MADV_NOHUGEPAGE (no rounding)."""
        if v & (self.phys_page_size - 1):
            raise MisalignedRangeError(f"unaligned sysNoHugePageOS: {v:#x}")
        self._sys.madvise(v, n, L.MADV_NOHUGEPAGE)

    def huge_page_collapse(self, v: int, n: int) -> None:
        """``sysHugePageCollapseOS``: MADV_COLLAPSE, errors ignored (it is best effort)."""
        if v & (self.phys_page_size - 1):
            raise MisalignedRangeError(f"unaligned sysHugePageCollapseOS: {v:#x}")
        if self.huge_page_size:
            self._sys.madvise(v, n, L.MADV_COLLAPSE)

    def free(self, v: int, n: int) -> None:
        """``sysFreeOS``: munmap (errors ignored, as in Go)."""
        self._sys.munmap(v, n)

    def fault(self, v: int, n: int) -> None:
        """``sysFaultOS``: mprotect(PROT_NONE) then MADV_DONTNEED (errors ignored, as in Go)."""
        self._sys.mprotect(v, n, L.PROT_NONE)
        if self._madvise(v, n, L.MADV_DONTNEED) != 0:
            self._fault_kept_pages = True  # only so the kernel check knows why they stay

    @property
    def fault_releases_pages(self) -> bool:
        """False once a fault's MADV_DONTNEED was refused."""
        return not self._fault_kept_pages

    def reserve(self, v: int | None, n: int, vma_name: str) -> int | None:
        """``sysReserveOS``: mmap(v, n, PROT_NONE) with ``v`` only a hint."""
        p = self._sys.mmap(v or 0, n, L.PROT_NONE, _ANON, -1, 0)
        if p == L.MAP_FAILED:
            return None
        self._set_vma_name(p, n, vma_name)
        return p

    def map(self, v: int, n: int, vma_name: str) -> None:
        """``sysMapOS``: mmap(v, n, RW, FIXED), then MADV_NOHUGEPAGE if ``disablethp``."""
        self._map_fixed(v, n, _RW, "cannot map pages in arena address space")
        if vma_name:
            self._set_vma_name(v, n, vma_name)
        if self.debug.disablethp:
            self.no_huge_page(v, n)

    def need_zero_after_unused(self) -> bool:
        """``needZeroAfterSysUnusedOS``: MADV_FREE may leave the old contents."""
        return self.debug.madvdontneed == 0

    # -- access and inspection ---------------------------------------------------------
    def buffer(self, v: int, n: int) -> memoryview:
        """A writable buffer over [v, v+n) of this process's memory."""
        return ffi.buffer(ffi.cast("char *", v), n)

    def expose(self, v: int, n: int) -> tuple[object, int]:
        """The memory is this process's own, at its own address: nothing to keep alive."""
        return None, v

    def inspect(self, v: int, n: int) -> OsPages:
        """The kernel's view: protection and huge-page advice from smaps, residency from mincore."""
        return self._inspect(v, n, smaps(v, n))

    def inspect_many(self, ranges: list[tuple[int, int]]) -> list[OsPages]:
        """:meth:`inspect` for several ranges from one read of ``/proc/self/smaps``."""
        if not ranges:
            return []
        lo = min(v for v, _ in ranges)
        vmas = smaps(lo, max(v + n for v, n in ranges) - lo)
        return [self._inspect(v, n, [m for m in vmas if m.start < v + n and v < m.end])
                for v, n in ranges]

    def _inspect(self, v: int, n: int, vmas: list) -> OsPages:
        ps = self.phys_page_size
        pages = (n + ps - 1) // ps
        mapped = np.zeros(pages, dtype=bool)
        accessible = np.zeros(pages, dtype=bool)
        huge = np.zeros(pages, dtype=bool)
        lazy = 0
        for vma in vmas:
            i = (max(vma.start, v) - v) // ps
            j = (min(vma.end, v + n) - v + ps - 1) // ps
            mapped[i:j] = True
            accessible[i:j] = vma.accessible
            huge[i:j] = "hg" in vma.vmflags or vma.anon_huge > 0
            lazy += vma.lazyfree
        return OsPages(v, ps, mapped, accessible, mincore(v, n, ps), huge, lazy)


def vma_names_supported() -> bool:
    """False once the kernel has refused to name a mapping (no CONFIG_ANON_VMA_NAME)."""
    return not _vma_names_unsupported
