"""The ``linux`` personality: ``mem_linux.go``.

``mmap``/``madvise``/``mprotect``/``munmap``, the process-global ``MADV_FREE`` →
``MADV_DONTNEED`` → ``mmap`` fallback for ``unused``, and the
``madvdontneed``/``harddecommit``/``disablethp`` knobs. A hint (rounded up to a page) is
used when the whole range there is free; otherwise mappings go top-down into the highest
free gap, as Linux's mmap does.
"""

from __future__ import annotations

from ..errors import MisalignedRangeError, RuntimeThrowError, SysOutOfMemoryError
from ._personality import _OTHER_THREAD, _Personality
from ._align import _down, _up
from ._space import _HG, _NH

#: advice names, as they appear in ``SimulatedBackend.supported_advice`` and ``calls``
MADV_FREE = "MADV_FREE"
MADV_DONTNEED = "MADV_DONTNEED"

_RW = "PROT_READ|PROT_WRITE"
_NONE = "PROT_NONE"
_FIXED = "MAP_FIXED"


class _Linux(_Personality):
    """``mem_linux.go``."""

    def mapped_is_accessible(self) -> bool:
        return True

    def released_is_accessible(self) -> bool:
        return not self.b.debug.harddecommit

    def need_zero_after_unused(self) -> bool:
        return self.b.debug.madvdontneed == 0

    def used_replaces_memory(self) -> bool:
        return self.b.debug.harddecommit > 0

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

    def _map_rw_or_throw(self, v: int, n: int, inject_enomem: bool, throw: str) -> None:
        """mmap(v, n, RW, MAP_FIXED) where Go throws: out of memory on ENOMEM (here also
        an injected one), ``throw`` on any other failure."""
        if inject_enomem:
            self.b._log("mmap", v, n, _RW, _FIXED, "ENOMEM")
            raise SysOutOfMemoryError(
                f"runtime: out of memory (mmap(0x{v:x}, {n}) failed with ENOMEM: injected)")
        err = self._mmap_fixed(v, n, _RW)
        if err is not None:
            raise RuntimeThrowError(f"runtime: {throw} (mmap(0x{v:x}, {n}) failed with {err})")

    def map(self, v: int, n: int, name: str) -> None:
        self._map_rw_or_throw(v, n, self.b._take_failure("map"),
                              "cannot map pages in arena address space")
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
        self._map_rw_or_throw(v, n, failing, "cannot remap pages in address space")
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
