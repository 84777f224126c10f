"""Address ranges (Go's ``mranges.go``): ``AddrRange``, ``AddrRanges``, ``AtomicOffAddr``.

All ordering is in the offset address space (see ``_addr``), so a range never spans the
amd64 address-space hole and "lower" means lower after the offset is applied.
"""

from __future__ import annotations

from typing import Iterator

from ..constants import ARENA_BASE_OFFSET, MASK64
from ._addr import off
from sysmem.errors import PageAllocError


class AddrRange:
    """The address range [base, limit) (Go's ``addrRange``); base and limit are virtual
    addresses, compared in the offset space."""

    __slots__ = ("base", "limit")

    def __init__(self, base: int, limit: int) -> None:
        self.base = base & MASK64
        self.limit = limit & MASK64

    @classmethod
    def make(cls, base: int, limit: int) -> "AddrRange":
        """Go's ``makeAddrRange``: refuses a range whose ends lie on different sides of
        the address-space split (Go throws)."""
        base &= MASK64
        limit &= MASK64
        # Below arenaBaseOffset the subtraction wraps to a larger value; both ends must
        # agree on whether it does.
        if (((base - ARENA_BASE_OFFSET) & MASK64) >= base) != (((limit - ARENA_BASE_OFFSET) & MASK64) >= limit):
            raise PageAllocError(
                "addr range base and limit are not in the same memory segment", f"[{base:#x}, {limit:#x})"
            )
        return cls(base, limit)

    def size(self) -> int:
        """Bytes in the range (0 when limit is not above base)."""
        b, l = off(self.base), off(self.limit)
        return l - b if b < l else 0

    def contains(self, addr: int) -> bool:
        return off(self.base) <= off(addr) < off(self.limit)

    def subtract(self, b: "AddrRange") -> "AddrRange":
        """This range minus ``b``, where ``b`` may overlap one end or cover it all (Go
        throws ``bad prune`` if ``b`` would split it in two)."""
        ab, al, bb, bl = off(self.base), off(self.limit), off(b.base), off(b.limit)
        if bb <= ab and al <= bl:
            return AddrRange(0, 0)
        if ab < bb and bl < al:
            raise PageAllocError("bad prune", f"{self!r} - {b!r}")
        if bl < al and ab < bl:
            return AddrRange(b.limit, self.limit)
        if ab < bb and bb < al:
            return AddrRange(self.base, b.base)
        return AddrRange(self.base, self.limit)

    def remove_greater_equal(self, addr: int) -> "AddrRange":
        """The part of this range below ``addr``."""
        if off(addr) <= off(self.base):
            return AddrRange(0, 0)
        if off(self.limit) <= off(addr):
            return AddrRange(self.base, self.limit)
        return AddrRange.make(self.base, addr)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, AddrRange):
            return self.base == other.base and self.limit == other.limit
        return NotImplemented

    def __hash__(self) -> int:
        return hash((self.base, self.limit))

    def __iter__(self) -> Iterator[int]:
        yield self.base
        yield self.limit

    def __repr__(self) -> str:
        return f"AddrRange({self.base:#x}, {self.limit:#x})"


class AddrRanges:
    """A sorted list of disjoint, coalesced address ranges (Go's ``addrRanges``).

    ``ranges`` is ordered by base in the offset space; ``total_bytes`` is the sum of
    their sizes. Go starts with room for 16 ranges and doubles; a Python list grows by
    itself, so only the observable contents are kept.
    """

    __slots__ = ("ranges", "total_bytes")

    def __init__(self, ranges: list[AddrRange] | None = None) -> None:
        self.ranges: list[AddrRange] = list(ranges) if ranges else []
        self.total_bytes = sum(r.size() for r in self.ranges)

    def __len__(self) -> int:
        return len(self.ranges)

    def __iter__(self) -> Iterator[AddrRange]:
        return iter(self.ranges)

    def __repr__(self) -> str:
        return f"AddrRanges({self.ranges!r})"

    def find_succ(self, addr: int) -> int:
        """Index of the first range whose base is above ``addr`` (in offset order)."""
        a = off(addr)
        lo, hi = 0, len(self.ranges)
        ranges = self.ranges
        while lo < hi:
            mid = (lo + hi) >> 1
            if a < off(ranges[mid].base):
                hi = mid
            else:
                lo = mid + 1
        return lo

    def find_addr_greater_equal(self, addr: int) -> int | None:
        """The lowest address in the set that is >= ``addr``; None if there is none."""
        i = self.find_succ(addr)
        if i == 0:
            return self.ranges[0].base if self.ranges else None
        if self.ranges[i - 1].contains(addr):
            return addr
        if i < len(self.ranges):
            return self.ranges[i].base
        return None

    def contains(self, addr: int) -> bool:
        i = self.find_succ(addr)
        return i > 0 and self.ranges[i - 1].contains(addr)

    def add(self, r: AddrRange) -> None:
        """Insert ``r``, merging it with the neighbours it touches. ``r`` must be
        non-empty and must not overlap the set (Go throws / assumes so)."""
        size = r.size()
        if size == 0:
            raise PageAllocError("attempted to add zero-sized address range", repr(r))
        i = self.find_succ(r.base)
        ranges = self.ranges
        if (i > 0 and off(ranges[i - 1].limit) > off(r.base)) or (
            i < len(ranges) and off(r.limit) > off(ranges[i].base)
        ):
            raise PageAllocError("overlapping address range", f"{r!r} overlaps {self!r}")
        down = i > 0 and ranges[i - 1].limit == r.base
        up = i < len(ranges) and r.limit == ranges[i].base
        if down and up:
            ranges[i - 1] = AddrRange(ranges[i - 1].base, ranges[i].limit)
            del ranges[i]
        elif down:
            ranges[i - 1] = AddrRange(ranges[i - 1].base, r.limit)
        elif up:
            ranges[i] = AddrRange(r.base, ranges[i].limit)
        else:
            ranges.insert(i, AddrRange(r.base, r.limit))
        self.total_bytes += size

    def remove_last(self, nbytes: int) -> AddrRange:
        """Remove and return the top ``nbytes`` of the highest range (or all of it if it
        is smaller); an empty range if the set is empty."""
        if not self.ranges:
            return AddrRange(0, 0)
        r = self.ranges[-1]
        size = r.size()
        if size > nbytes:
            new_end = (r.limit - nbytes) & MASK64
            self.ranges[-1] = AddrRange(r.base, new_end)
            self.total_bytes -= nbytes
            return AddrRange(new_end, r.limit)
        self.ranges.pop()
        self.total_bytes -= size
        return r

    def remove_greater_equal(self, addr: int) -> None:
        """Drop every address >= ``addr``, splitting the range that contains it."""
        pivot = self.find_succ(addr)
        if pivot == 0:
            self.ranges.clear()
            self.total_bytes = 0
            return
        removed = sum(r.size() for r in self.ranges[pivot:])
        r = self.ranges[pivot - 1]
        if r.contains(addr):
            removed += r.size()
            r = r.remove_greater_equal(addr)
            if r.size() == 0:
                pivot -= 1
            else:
                removed -= r.size()
                self.ranges[pivot - 1] = r
        del self.ranges[pivot:]
        self.total_bytes -= removed

    def clone(self) -> "AddrRanges":
        c = AddrRanges()
        c.ranges = [AddrRange(r.base, r.limit) for r in self.ranges]
        c.total_bytes = self.total_bytes
        return c


class AtomicOffAddr:
    """Go's ``atomicOffAddr`` without the atomics: an offset address that can be
    *marked*.

    The value is kept as Go keeps it, a signed 64-bit offset stored negated when marked.
    A marked value records a raise by ``free``/``nextGen`` that ``find`` has not seen
    yet, so ``store_min`` leaves it alone and only ``store_unmark`` (given the marked
    value it saw) replaces it.
    """

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0  # minOffAddr: "cleared"

    def clear(self) -> None:
        if self.value >= 0:
            self.value = 0

    def store_min(self, addr: int) -> None:
        new = off(addr)
        if self.value >= new:
            self.value = new

    def store_unmark(self, marked_addr: int, new_addr: int) -> None:
        if self.value == -off(marked_addr):
            self.value = off(new_addr)

    def store_marked(self, addr: int) -> None:
        self.value = -off(addr)

    def load(self) -> tuple[int, bool]:
        """(virtual address, was it marked)."""
        v = self.value
        marked = v < 0
        if marked:
            v = -v
        return (v + ARENA_BASE_OFFSET) & MASK64, marked

    def __repr__(self) -> str:
        addr, marked = self.load()
        return f"AtomicOffAddr({addr:#x}{', marked' if marked else ''})"
