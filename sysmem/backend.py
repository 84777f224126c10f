"""The contract between the cross-OS layer (``SysMem``) and a platform: Go's ``*OS`` half.

A backend implements only what ``mem_linux.go`` / ``mem_windows.go`` / ``mem_sbrk.go``
implement: the system calls (or their simulation) and the platform's own error rules.
Accounting, the ledger, the leak-checker registry, argument checks, views' safety and
``sys_reserve_aligned``'s trimming live once, in :mod:`sysmem.core`.

Addresses are Python ints; ``None`` stands for Go's nil pointer.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

from .settings import DebugSettings

__all__ = ["Backend", "OsPages"]


@dataclass
class OsPages:
    """What the OS (or the simulation) says about each physical page of a range.

    Arrays have one entry per physical page starting at ``start``. This is the evidence
    the ledger's states are checked against (``SysMem.os_problems`` / ``SysMem.check``).
    """

    start: int
    page_size: int
    #: the address is part of some mapping/reservation
    mapped: np.ndarray
    #: the page can be read and written without faulting
    accessible: np.ndarray
    #: the page is backed by physical memory now
    resident: np.ndarray
    #: the page's mapping has huge pages advised (Linux ``VmFlags: hg``) or already holds
    #: some (``AnonHugePages``, e.g. after a collapse), so a neighbour's fault may have
    #: backed this page as part of a huge page
    huge_advised: np.ndarray
    #: bytes the OS reports as lazily freeable (``MADV_FREE``d, not yet reclaimed) in the
    #: mappings overlapping the range (Linux reports it per mapping, not per page)
    lazyfree_bytes: int = 0


class Backend(ABC):
    """One platform's ``sys*OS`` functions. Subclasses: ``LinuxBackend``, ``SimulatedBackend``."""

    #: short name used in reprs and reports ("linux", "simulated-windows", …)
    name: str = "abstract"
    #: Go's ``physPageSize``
    phys_page_size: int = 4096
    #: Go's ``physHugePageSize`` (0 when the platform has none)
    huge_page_size: int = 0
    #: Go's ``isSbrkPlatform``: reserve_aligned goes through :meth:`reserve_aligned_sbrk`
    is_sbrk: bool = False
    #: a reservation can only be released whole (Windows): sys_reserve_aligned cannot trim
    #: and takes Go's unreserve-and-retry path instead
    releases_whole_reservations_only: bool = False

    def __init__(self, debug: DebugSettings) -> None:
        #: the GODEBUG settings this backend reads: fixed at construction, since every
        #: SysMem on the backend shares this one object and may have frozen parts of it
        self.debug = debug
        #: SysMems using this backend and not closed yet (see :meth:`SysMem.close`)
        self.users = 0

    def __setattr__(self, name: str, value: object) -> None:
        # A plain attribute, read on every system call; only rebinding it is refused.
        if name == "debug" and "debug" in self.__dict__:
            raise AttributeError(
                "a backend's debug settings cannot be replaced (SysMems on it rely on them); "
                "change individual settings, or make a new backend"
            )
        super().__setattr__(name, value)

    # -- What the platform does with each state (drives view safety) ------------------
    @property
    @abstractmethod
    def mapped_is_accessible(self) -> bool:
        """Whether memory fresh from :meth:`map` (Prepared) can be touched without faulting.

        True on Linux (``sysMapOS`` maps read/write, even with ``harddecommit``) and sbrk;
        False on Windows (reserved, not committed).
        """

    @property
    @abstractmethod
    def released_is_accessible(self) -> bool:
        """Whether memory released by :meth:`unused` (Prepared) can still be touched.

        True on Linux (``madvise`` keeps the mapping) unless ``harddecommit``, and on
        sbrk; False on Windows (decommitted).
        """

    @property
    def used_replaces_memory(self) -> bool:
        """Whether :meth:`used` maps fresh pages over its whole range, Ready parts included
        (Linux with ``harddecommit``: Go's ``sysUsedOS`` re-mmaps it), so what a view of
        that memory held is lost."""
        return False

    @property
    def fault_releases_pages(self) -> bool:
        """Whether :meth:`fault` drops the pages' contents (False once the OS refused the
        MADV_DONTNEED that ``sysFaultOS`` sends; Go ignores that error)."""
        return True

    # -- The *OS functions ----------------------------------------------------------
    @abstractmethod
    def alloc(self, n: int, vma_name: str) -> int | None:
        """``sysAllocOS``: n bytes of fresh zeroed Ready memory anywhere, or None."""

    @abstractmethod
    def unused(self, v: int, n: int) -> None:
        """``sysUnusedOS``: tell the OS the pages' contents are no longer needed."""

    @abstractmethod
    def used(self, v: int, n: int) -> None:
        """``sysUsedOS``: make the range usable again (commit on Windows; usually nothing)."""

    @abstractmethod
    def huge_page(self, v: int, n: int) -> None:
        """``sysHugePageOS``: advise huge pages (rounding inward to huge-page boundaries)."""

    @abstractmethod
    def no_huge_page(self, v: int, n: int) -> None:
        """``sysNoHugePageOS``: advise against huge pages."""

    @abstractmethod
    def huge_page_collapse(self, v: int, n: int) -> None:
        """``sysHugePageCollapseOS``: best-effort synchronous collapse into huge pages."""

    @abstractmethod
    def free(self, v: int, n: int) -> None:
        """``sysFreeOS``: return the range to the OS (unmap / release)."""

    @abstractmethod
    def fault(self, v: int, n: int) -> None:
        """``sysFaultOS``: make any access to the range fault."""

    @abstractmethod
    def reserve(self, v: int | None, n: int, vma_name: str) -> int | None:
        """``sysReserveOS``: n bytes of inaccessible address space, at hint v if it can."""

    @abstractmethod
    def map(self, v: int, n: int, vma_name: str) -> None:
        """``sysMapOS``: make reserved space mappable (Reserved → Prepared).

        Raises :class:`~sysmem.errors.SysOutOfMemoryError` where Go throws
        "runtime: out of memory" and :class:`~sysmem.errors.RuntimeThrowError` where Go
        throws "cannot map pages in arena address space".
        """

    @abstractmethod
    def need_zero_after_unused(self) -> bool:
        """``needZeroAfterSysUnusedOS``: may memory released by ``unused`` keep old data?"""

    def reserve_aligned_sbrk(self, size: int, align: int) -> tuple[int | None, int]:
        """``sysReserveAlignedSbrk`` (sbrk platforms only)."""
        raise NotImplementedError(f"{self.name} is not an sbrk platform")

    # -- Memory access ------------------------------------------------------------------
    @abstractmethod
    def buffer(self, v: int, n: int) -> memoryview:
        """A writable byte buffer over [v, v+n). Called only for accessible ranges."""

    def expose(self, v: int, n: int) -> tuple[object, int]:
        """(an object to keep alive while the bytes are used, or None; the host address
        where [v, v+n) can be read and written). What views are made from; by default
        through :meth:`buffer`."""
        buf = self.buffer(v, n)
        return buf, np.frombuffer(buf, dtype=np.uint8).__array_interface__["data"][0]

    @abstractmethod
    def inspect(self, v: int, n: int) -> OsPages:
        """What the OS reports about [v, v+n): mappings, protection, residency."""

    def inspect_many(self, ranges: list[tuple[int, int]]) -> list[OsPages]:
        """:meth:`inspect` for several (v, n) ranges (a backend may share the work)."""
        return [self.inspect(v, n) for v, n in ranges]

    def close(self) -> None:
        """Release whatever the backend holds (simulated storage). Idempotent."""
