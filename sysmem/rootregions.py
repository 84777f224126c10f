"""The leak checker's root-region registry, as Go feeds it under ASAN.

Go calls ``lsanregisterrootregion`` for every region it gets from the OS (so LSAN scans
it for pointers) and ``lsanunregisterrootregion`` when it gives one back. LSAN only
unregisters a region registered with exactly the same start and size, which is one
reason ``sysFree`` and ``sysUnreserve`` must name whole regions. heaplab keeps the
registry always (Go only under ``-asan``) so tests and learners can inspect it.
"""

from __future__ import annotations

from .errors import RootRegionError

__all__ = ["RootRegionRegistry"]


class RootRegionRegistry:
    """Registered (start, size) regions with LSAN's exact-match unregistration rule."""

    def __init__(self) -> None:
        self._regions: dict[int, int] = {}

    def register(self, start: int, size: int) -> None:
        """``lsanregisterrootregion``: add [start, start+size)."""
        if start in self._regions:
            raise RootRegionError(f"root region at {start:#x} is already registered")
        self._regions[start] = size

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

    def regions(self) -> list[tuple[int, int]]:
        """Registered (start, size) pairs in address order."""
        return sorted(self._regions.items())

    def __len__(self) -> int:
        return len(self._regions)
