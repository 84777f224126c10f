"""The leak checker's root-region registry, as Go feeds it under ASAN.

Go calls ``lsanregisterrootregion`` for every region it gets from the OS (so LSAN scans
it for pointers) and ``lsanunregisterrootregion`` when it gives one back. LSAN only
unregisters a region registered with exactly the same start and size, which is one
reason ``sysFree`` and ``sysUnreserve`` must name whole regions. heaplab keeps the
registry always (Go only under ``-asan``) so tests and learners can inspect it.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right

from .errors import RootRegionError

__all__ = ["RootRegionRegistry"]


class RootRegionRegistry:
    """Registered (start, size) regions with LSAN's exact-match unregistration rule.

    Also SysMem's record of what it owns when the ledger is off: :meth:`covers` tells
    whether a range lies in its regions, so no operation touches anyone else's memory.
    """

    def __init__(self) -> None:
        self._regions: dict[int, int] = {}
        # Sorted starts and their ends, for covers().
        self._starts: list[int] = []
        self._ends: list[int] = []

    def register(self, start: int, size: int) -> None:
        """``lsanregisterrootregion``: add [start, start+size)."""
        if start in self._regions:
            raise RootRegionError(f"root region at {start:#x} is already registered")
        self._regions[start] = size
        i = bisect_left(self._starts, start)
        self._starts.insert(i, start)
        self._ends.insert(i, start + size)

    def require(self, start: int, size: int) -> None:
        """Raise unless exactly (start, size) is registered."""
        if self._regions.get(start) != size:
            raise RootRegionError(
                f"__lsan_unregister_root_region(): region at {start:#x} of size {size:#x} "
                "has not been registered"
            )

    def unregister(self, start: int, size: int) -> None:
        """``lsanunregisterrootregion``: remove exactly (start, size)."""
        self.require(start, size)
        del self._regions[start]
        i = bisect_left(self._starts, start)
        del self._starts[i], self._ends[i]

    def covers(self, start: int, size: int) -> bool:
        """Whether all of [start, start+size) lies in registered regions (a range may run
        on into a region that starts exactly where the previous one ends, as the ledger
        allows). O(log n) for a range inside one region; allocates nothing."""
        starts, ends = self._starts, self._ends
        i = bisect_right(starts, start) - 1
        if i < 0 or ends[i] <= start:
            return False
        stop = start + size
        while ends[i] < stop:  # rare: the range runs on; the next region must be adjacent
            i += 1
            if i == len(starts) or starts[i] != ends[i - 1]:
                return False
        return True

    def regions(self) -> list[tuple[int, int]]:
        """Registered (start, size) pairs in address order."""
        return sorted(self._regions.items())

    def __len__(self) -> int:
        return len(self._regions)
