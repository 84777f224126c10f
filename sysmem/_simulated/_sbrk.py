"""The ``sbrk`` personality: ``mem_sbrk.go`` (plan9, wasm).

One break that only grows, the runtime's own break ``bloc`` below it, and Go's
address-ordered first-fit free list.
"""

from __future__ import annotations

from bisect import bisect_left
from typing import TYPE_CHECKING

from ..errors import RuntimeThrowError
from ._personality import _OTHER_THREAD, _Personality
from ._align import _up

if TYPE_CHECKING:
    from . import SimulatedBackend


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
