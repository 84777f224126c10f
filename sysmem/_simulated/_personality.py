"""The base of the simulated OS personalities (:mod:`._linux`, :mod:`._windows`, :mod:`._sbrk`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import SysOutOfMemoryError
from ._space import _AddressSpace

if TYPE_CHECKING:
    from . import SimulatedBackend

_OTHER_THREAD = "other thread"


class _Personality:
    """One OS's ``*OS`` functions over the shared machine. Called with the lock held."""

    def __init__(self, backend: "SimulatedBackend", mmap_base: int) -> None:
        self.b = backend
        self.m: _AddressSpace = backend._space
        self.page = backend.phys_page_size
        self.mmap_base = mmap_base

    def used_replaces_memory(self) -> bool:
        return False

    def huge_page(self, v: int, n: int) -> None:
        pass

    def no_huge_page(self, v: int, n: int) -> None:
        pass

    def huge_page_collapse(self, v: int, n: int) -> None:
        pass

    def map(self, v: int, n: int, name: str) -> None:
        if self.b._take_failure("map"):
            raise SysOutOfMemoryError(
                f"runtime: out of memory (sysMap(0x{v:x}, {n}): injected failure)")
