"""A simulated operating system for :mod:`sysmem`: Go's ``*OS`` memory functions, no syscalls.

:class:`SimulatedBackend` models a process address space in Python (:mod:`._space`),
deterministically, with one of three personalities: ``linux`` (:mod:`._linux`),
``windows`` (:mod:`._windows`) or ``sbrk`` (:mod:`._sbrk`).

Memory contents and residency: :meth:`SimulatedBackend.buffer` hands out a writable
``memoryview``; every page it covers counts as touched (resident). A page that is not
resident always reads as zero, so zeroing on release is needed only for pages that were
resident. ``MADV_FREE``'d pages stay resident (and keep their contents) until touched
again or until :meth:`SimulatedBackend.reclaim` models memory pressure. Contents live in
host memory (:mod:`._storage`: one sparse memfd on Linux), so every buffer of the same
pages shares them, whichever range it covers.
"""

from __future__ import annotations

import random
import threading
from collections import deque
from typing import Any

from ..backend import Backend, OsPages
from ..settings import DebugSettings
from ._linux import MADV_DONTNEED, MADV_FREE, _Linux
from ._sbrk import _Sbrk
from ._align import _up
from ._space import _AddressSpace
from ._windows import _WIN_GRANULARITY, _Windows

__all__ = [
    "SimulatedBackend",
    "PERSONALITIES",
    "FAILABLE_OPS",
    "MADV_FREE",
    "MADV_DONTNEED",
]

#: the personalities :class:`SimulatedBackend` accepts
PERSONALITIES: tuple[str, ...] = ("linux", "windows", "sbrk")
#: operations :meth:`SimulatedBackend.fail_next` can make fail
FAILABLE_OPS: tuple[str, ...] = ("reserve", "alloc", "map", "used")

_GIB = 1 << 30
_ADVICE_STATES = ("free", "dontneed", "unsupported")


def _is_pow2(x: int) -> bool:
    return x > 0 and x & (x - 1) == 0


class SimulatedBackend(Backend):
    """A deterministic simulated OS (personality ``linux``, ``windows`` or ``sbrk``).

    Test hooks: :meth:`fail_next` (out-of-memory injection), ``physical_memory`` (a
    budget: committed bytes on Windows, resident bytes touched through :meth:`buffer`
    elsewhere), :meth:`steal_next_reservations` (the race Go's Windows
    ``sysReserveAligned`` retries on), ``supported_advice`` (remove ``MADV_FREE`` or
    ``MADV_DONTNEED`` to make that advice fail). Evidence: :meth:`inspect`,
    :meth:`resident_bytes`, :meth:`lazyfree_bytes` and ``calls``, the log of the calls
    the real OS would have seen: ``(call, addr, size, detail, ...)``, where ``addr`` is
    the address acted on (the result, for calls that choose one); extra items are the
    flag ``"MAP_FIXED"``, ``"other thread"`` for a stolen hint, and last, when the call
    failed, the error name (``"ENOMEM"``, ``"ERROR_INVALID_ADDRESS"``, …). sbrk logs
    ``("sbrk", n)`` and ``("brk", new_break)``.
    """

    def __init__(self, debug: DebugSettings, personality: str = "linux", *,
                 address_bits: int = 47, physical_memory: int | None = None,
                 phys_page_size: int = 4096, huge_page_size: int | None = None,
                 seed: int = 0, sbrk_base: int = 0x1000_0000,
                 call_log_size: int = 10000, segment_size: int = _GIB) -> None:
        """See the class docstring; ``seed`` != 0 randomises the mmap base (like ASLR).

        ``segment_size`` is the span of one storage segment (one host mapping). On hosts
        without ``memfd_create`` (and above 2**62), :meth:`buffer` cannot cross a segment
        boundary.
        """
        super().__init__(debug)
        if personality not in PERSONALITIES:
            raise ValueError(f"personality must be one of {PERSONALITIES}, not {personality!r}")
        if not 20 <= address_bits <= 64:
            raise ValueError(f"address_bits must be in [20, 64], not {address_bits}")
        if not (_is_pow2(phys_page_size) and 4096 <= phys_page_size <= 512 * 1024):
            raise ValueError(f"phys_page_size must be a power of two in [4 KiB, 512 KiB], "
                             f"not {phys_page_size}")
        if huge_page_size is None:
            huge_page_size = 2 << 20 if personality == "linux" else 0
        if huge_page_size and (personality != "linux" or not _is_pow2(huge_page_size)
                               or huge_page_size < phys_page_size):
            raise ValueError(f"huge_page_size {huge_page_size} is not possible for "
                             f"personality {personality!r} with {phys_page_size}-byte pages")
        if physical_memory is not None and physical_memory < 0:
            raise ValueError("physical_memory must be None or >= 0")
        if not _is_pow2(segment_size) or segment_size < phys_page_size:
            raise ValueError("segment_size must be a power of two >= phys_page_size")
        top = 1 << address_bits
        if personality == "sbrk" and (sbrk_base % phys_page_size or not 0 < sbrk_base < top):
            raise ValueError(f"sbrk_base 0x{sbrk_base:x} must be page aligned and inside "
                             f"the address space")
        self.personality = personality
        self.name = f"simulated-{personality}"
        self.phys_page_size = phys_page_size
        self.huge_page_size = huge_page_size
        self.address_bits = address_bits
        self.seed = seed
        self.is_sbrk = personality == "sbrk"
        self.releases_whole_reservations_only = personality == "windows"
        #: the OS calls made, newest last (bounded)
        self.calls: deque[tuple] = deque(maxlen=call_log_size)
        #: Linux: the madvise advice the simulated kernel accepts (tests remove some)
        self.supported_advice: set[str] = {MADV_FREE, MADV_DONTNEED}
        self.fault_kept_pages = False  # a fault's MADV_DONTNEED was refused
        #: regions reserved by the phantom "other thread" of steal_next_reservations
        self.phantoms: list[tuple[int, int]] = []
        self._advise_unused = "free"
        self._lock = threading.Lock()
        # per op: (calls to let through first, calls to fail then)
        self._failures = dict.fromkeys(FAILABLE_OPS, (0, 0))
        self._steals = 0
        self._space = _AddressSpace(phys_page_size, top, segment_size, physical_memory)
        if personality == "sbrk":
            self._os: Any = _Sbrk(self, sbrk_base)
        else:
            offset = 0
            if seed:
                # ASLR-like: up to 2**28 pages (1 TiB with 4 KiB pages), at most top/4.
                pages = 1 << min(28, address_bits - 2 - phys_page_size.bit_length() + 1)
                offset = random.Random(seed).randrange(pages) * phys_page_size
            if personality == "linux":
                self._os = _Linux(self, top - _up(offset, phys_page_size))
            else:
                low = self._space.min_addr
                self._os = _Windows(self, min(low + _up(offset, _WIN_GRANULARITY), top // 2))

    def __repr__(self) -> str:
        return (f"<SimulatedBackend {self.personality} {self.address_bits}-bit "
                f"resident={self._space.resident} calls={len(self.calls)}>")

    # -- internals used by the personalities ---------------------------------------------
    def _log(self, *entry: Any) -> None:
        self.calls.append(entry)

    def _take_failure(self, op: str) -> bool:
        after, count = self._failures[op]
        if not count:
            return False
        self._failures[op] = (after - 1, count) if after else (0, count - 1)
        return not after

    def _maybe_steal(self, v: int | None) -> None:
        if v is not None and self._steals:
            self._steals -= 1
            self._os.steal(v)

    # -- test hooks -----------------------------------------------------------------------
    def fail_next(self, op: str, count: int = 1, *, after: int = 0) -> None:
        """Make ``count`` calls of ``op`` fail as the OS would (0 cancels), once ``after``
        more have succeeded (``after=1`` reaches the re-reservation of Windows'
        ``sys_reserve_aligned``).

        ``reserve``/``alloc`` return None (``reserve_aligned_sbrk`` counts as a
        ``reserve``); ``map`` raises :class:`SysOutOfMemoryError`; ``used`` raises it on
        Windows and on Linux with ``harddecommit`` (elsewhere the call is counted and
        does nothing, as there is no system call to fail).
        """
        if op not in FAILABLE_OPS:
            raise ValueError(f"op must be one of {FAILABLE_OPS}, not {op!r}")
        if count < 0 or after < 0:
            raise ValueError("count and after must be >= 0")
        with self._lock:
            self._failures[op] = (after, count)

    def steal_next_reservations(self, count: int) -> None:
        """For the next ``count`` hinted reserves, a phantom thread first takes one page
        at the hint, so the reservation lands elsewhere (recorded in ``phantoms``)."""
        if count < 0:
            raise ValueError("count must be >= 0")
        with self._lock:
            self._steals = count

    @property
    def advise_unused(self) -> str | None:
        """Linux: Go's process-global ``adviseUnused`` ("free", "dontneed" or
        "unsupported"); it only ever moves down. None for other personalities."""
        return self._advise_unused if self.personality == "linux" else None

    @advise_unused.setter
    def advise_unused(self, value: str) -> None:
        if value not in _ADVICE_STATES:
            raise ValueError(f"advise_unused must be one of {_ADVICE_STATES}")
        self._advise_unused = value

    @property
    def physical_memory(self) -> int | None:
        """The simulated machine's memory budget in bytes (None: unlimited)."""
        return self._space.physical_memory

    @physical_memory.setter
    def physical_memory(self, value: int | None) -> None:
        with self._lock:
            self._space.physical_memory = value

    def _sbrk_state(self) -> _Sbrk:
        if not isinstance(self._os, _Sbrk):
            raise AttributeError(f"{self.name} has no sbrk break")
        return self._os

    @property
    def bloc(self) -> int:
        """sbrk: the runtime's break (may go down)."""
        return self._sbrk_state().bloc

    @property
    def bloc_max(self) -> int:
        """sbrk: the OS break (only grows)."""
        return self._sbrk_state().bloc_max

    @property
    def free_list(self) -> list[tuple[int, int]]:
        """sbrk: the free list as address-ordered ``(addr, size)`` blocks."""
        state = self._sbrk_state()
        with self._lock:
            return list(zip(state.fl_addr, state.fl_size))

    # -- the Backend contract -------------------------------------------------------------
    @property
    def mapped_is_accessible(self) -> bool:
        """True on linux and sbrk; False on windows (reserved, not committed)."""
        return self._os.mapped_is_accessible()

    @property
    def released_is_accessible(self) -> bool:
        """True on linux (unless harddecommit) and sbrk; False on windows (decommitted)."""
        return self._os.released_is_accessible()

    @property
    def used_replaces_memory(self) -> bool:
        """linux with harddecommit: ``used`` re-mmaps the whole range."""
        return self._os.used_replaces_memory()

    def need_zero_after_unused(self) -> bool:
        """linux: ``madvdontneed == 0``; windows, sbrk: True."""
        return self._os.need_zero_after_unused()

    def reserve(self, v: int | None, n: int, vma_name: str = "") -> int | None:
        """``sysReserveOS``: inaccessible address space, at hint v when it is free."""
        with self._lock:
            self._maybe_steal(v)
            return self._os.reserve(v, n, vma_name)

    def alloc(self, n: int, vma_name: str = "") -> int | None:
        """``sysAllocOS``: zeroed, accessible memory anywhere, or None."""
        with self._lock:
            return self._os.alloc(n, vma_name)

    def map(self, v: int, n: int, vma_name: str = "") -> None:
        """``sysMapOS``: linux MAP_FIXED read-write mapping; a no-op elsewhere."""
        with self._lock:
            self._os.map(v, n, vma_name)

    def used(self, v: int, n: int) -> None:
        """``sysUsedOS``: commit (windows), remap (linux + harddecommit), else nothing."""
        with self._lock:
            self._os.used(v, n)

    def unused(self, v: int, n: int) -> None:
        """``sysUnusedOS``: madvise chain (linux), decommit (windows), nothing (sbrk)."""
        with self._lock:
            self._os.unused(v, n)

    def fault(self, v: int, n: int) -> None:
        """``sysFaultOS``: make the range fault (mprotect+DONTNEED / decommit)."""
        with self._lock:
            self._os.fault(v, n)

    @property
    def fault_releases_pages(self) -> bool:
        """False once a linux-personality fault's MADV_DONTNEED was refused."""
        return not self.fault_kept_pages

    def free(self, v: int, n: int) -> None:
        """``sysFreeOS``: munmap (any sub-range), release a whole allocation, or sbrk free."""
        with self._lock:
            self._os.free(v, n)

    def huge_page(self, v: int, n: int) -> None:
        """``sysHugePageOS``: MADV_HUGEPAGE on the huge pages inside the range (linux)."""
        with self._lock:
            self._os.huge_page(v, n)

    def no_huge_page(self, v: int, n: int) -> None:
        """``sysNoHugePageOS``: MADV_NOHUGEPAGE (linux)."""
        with self._lock:
            self._os.no_huge_page(v, n)

    def huge_page_collapse(self, v: int, n: int) -> None:
        """``sysHugePageCollapseOS``: best-effort MADV_COLLAPSE, logged only (linux)."""
        with self._lock:
            self._os.huge_page_collapse(v, n)

    def reserve_aligned_sbrk(self, size: int, align: int) -> tuple[int | None, int]:
        """``sysReserveAlignedSbrk``: ``(addr, size)`` or ``(None, 0)`` (sbrk only)."""
        if not self.is_sbrk:
            return super().reserve_aligned_sbrk(size, align)
        if not _is_pow2(align):
            raise ValueError(f"align must be a power of two, not {align}")
        with self._lock:
            return self._os.reserve_aligned(size, align)

    def buffer(self, v: int, n: int) -> memoryview:
        """A writable view of [v, v+n); its pages count as touched (resident).

        Every buffer of the same pages shares their memory, whatever ranges they cover.
        Raises :class:`InaccessibleMemoryError` for pages that are unmapped or
        inaccessible (or for a range crossing a storage segment boundary on hosts without
        memfd, or above 2**62), and :class:`SysOutOfMemoryError` when the touch exceeds
        ``physical_memory`` or the host refuses the mapping.
        """
        with self._lock:
            return self._space.touch(v, n)

    def inspect(self, v: int, n: int) -> OsPages:
        """Per-page mapped/accessible/resident/huge_advised and lazy-free bytes of [v, v+n)."""
        with self._lock:
            return self._space.inspect(v, n)

    # -- residency --------------------------------------------------------------------------
    def resident_bytes(self) -> int:
        """Bytes resident in the whole simulated process (lazy-free pages included)."""
        return self._space.resident

    def lazyfree_bytes(self) -> int:
        """Bytes ``MADV_FREE``'d and not yet touched again or reclaimed."""
        return self._space.lazyfree

    def committed_bytes(self) -> int:
        """Bytes accessible now (on windows: the commit charge)."""
        return self._space.accessible

    def reclaim(self) -> int:
        """Memory pressure: drop every lazy-free page (zeroed, not resident); returns bytes."""
        with self._lock:
            return self._space.reclaim()

    def close(self) -> None:
        """Drop the simulated contents and close the host storage (the memfd and its
        mappings, once no view uses them); idempotent. Pages read as zero afterwards."""
        with self._lock:
            self._space.close()
