"""The ``windows`` personality: ``mem_windows.go``.

``VirtualAlloc``/``VirtualFree``. Reserved memory is not committed (it faults), ``used``
commits and ``unused`` decommits, across allocations if every page is reserved; an
allocation can only be released whole. A hint is honoured only exactly (on a 64 KiB
allocation-granularity boundary, whole range free); otherwise allocations go bottom-up on
64 KiB boundaries.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import RuntimeThrowError, SysOutOfMemoryError
from ._personality import _OTHER_THREAD, _Personality
from ._align import _down, _up

if TYPE_CHECKING:
    from . import SimulatedBackend

# Windows places every allocation on a 64 KiB boundary.
_WIN_GRANULARITY = 0x10000


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
