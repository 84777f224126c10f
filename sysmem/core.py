"""``SysMem``: the cross-OS half of Go's ``mem.go`` — the thirteen operations and their accounting.

Each ``sys_*`` method is one function of ``mem.go``: it checks its arguments and (with
the ledger on) that the regions' states allow it, calls the backend's ``*OS`` function,
and only when that succeeded updates the accounting exactly as Go does:

==========================  ===========================  ==========  ==================
operation (Go name)         transition                   stat        mapped_ready
==========================  ===========================  ==========  ==================
sys_alloc (sysAlloc)        None → Ready                 +n          +n
sys_free (sysFree)          Ready → None                 −n          −n
sys_reserve (sysReserve)    None → Reserved
sys_reserve_aligned         None → Reserved
sys_unreserve               Reserved → None
sys_map (sysMap)            Reserved → Prepared          +n
sys_used (sysUsed)          Prepared|Ready → Ready                   +prepared
sys_unused (sysUnused)      Ready → Prepared                         −n
sys_fault (sysFault)        Ready → Reserved                         −n
sys_huge_page[_collapse],   (hints, no transition)
sys_no_huge_page
==========================  ===========================  ==========  ==================

Like Go, a SysMemStat is counted before the OS call (its overflow check and the addition
are one atomic step, so another thread cannot fill the stat in between); unlike Go, the
addition is taken back if the call fails or returns nil, and everything else (``mapped_ready``,
the ledger, the registry) changes only after the call succeeded, so a call that raises or
returns ``None`` leaves the accounting as it was. Where Go would throw, heaplab raises
(see :mod:`sysmem.errors`); where Go returns nil, heaplab returns ``None``.

Every address, size, hint, alignment and count is turned into a plain int (numpy integers
accepted; bool, float, None refused with TypeError) and checked to lie in [0, 2**64) by
``SysMem._aligned`` and :func:`sysmem._ints.as_int`, the one validator.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

import numpy as np

from ._ints import U64_LIMIT, as_int
from .access import AccessMap
from .backend import Backend, OsPages
from .errors import (
    AccountingMismatchError,
    IllegalTransitionError,
    InaccessibleMemoryError,
    LedgerDisabledError,
    MisalignedRangeError,
    NotReservedError,
    PreparedCountError,
    ReentrantCallError,
    RuntimeThrowError,
)
from .ledger import Ledger, Run
from .rootregions import RootRegionRegistry
from .settings import DebugSettings
from .states import State
from .stats import STANDARD_STATS, SysMemStat

__all__ = ["SysMem"]

# Bit masks of allowed states (bit 1 << state) for Ledger.require.
_READY = 1 << State.READY
_RESERVED = 1 << State.RESERVED
_USABLE = 1 << State.PREPARED | 1 << State.READY
_OWNED = 1 << State.RESERVED | 1 << State.PREPARED | 1 << State.READY
# Plain ints for the hot paths (IntEnum arithmetic is slow).
_RESERVED_INT = int(State.RESERVED)
_PREPARED_INT = int(State.PREPARED)
_READY_INT = int(State.READY)

#: Go's sysReserveAligned gives up after this many Windows re-reservation races.
RESERVE_ALIGNED_RETRIES = 100


class _Exposed:
    """The owner of the memory a view exposes: every array made from a view, and the
    view's ``.base``, keep it alive, and SysMem pins the memory while it lives."""

    __slots__ = ("__array_interface__", "_keep", "__weakref__")

    def __init__(self, keep: object, host_addr: int, nbytes: int) -> None:
        self._keep = keep  # e.g. a simulated backend's storage
        self.__array_interface__ = {
            "shape": (nbytes,), "typestr": "|u1", "data": (host_addr, False), "version": 3,
        }


def _require_stat(op: str, stat: object) -> None:
    # Go requires a non-nil sysStat: every mapped byte is counted somewhere.
    if not isinstance(stat, SysMemStat):
        raise TypeError(f"{op}: stat must be a SysMemStat, not {type(stat).__name__}")


class _OpLock:
    """SysMem's lock: one operation at a time, over the bookkeeping and the OS call it
    belongs to, so threads working on disjoint regions always leave the accounting exact.

    The thread inside an operation can call in again only through code the interpreter
    runs mid-operation: a ``__del__`` or weakref callback of the garbage collector, which
    any allocation may start. That call raises ReentrantCallError, rather than deadlock
    (as a plain Lock would) or run on half-updated bookkeeping (as a plain RLock would).
    Hot paths inline ``__enter__``/``__exit__`` (``with`` costs ~150 ns more here).
    """

    __slots__ = ("rlock", "busy")

    def __init__(self) -> None:
        self.rlock = threading.RLock()
        self.busy = False

    def __enter__(self) -> None:
        self.rlock.acquire()
        if self.busy:  # only the thread that holds the lock can get here while busy
            self.refuse()
        self.busy = True

    def __exit__(self, *exc_info: object) -> None:
        self.busy = False
        self.rlock.release()

    def refuse(self) -> None:
        """Release the re-entered lock and raise ReentrantCallError."""
        self.rlock.release()
        raise ReentrantCallError(
            "a SysMem operation was called by the thread already inside another operation "
            "of the same SysMem (from a __del__ or weakref callback that the garbage "
            "collector ran mid-operation?); nothing was done"
        )


def _shared_settings(backend: Backend, godebug: object) -> DebugSettings:
    """The settings of a backend instance, with ``godebug`` applied to them in place.

    Never a new object: the backend, and any SysMem already running on it (which froze
    harddecommit and madvdontneed and decided its view safety by them), read that one.
    """
    settings = backend.debug
    if isinstance(godebug, DebugSettings):
        if godebug is not settings:
            raise ValueError(
                "SysMem(backend, godebug=DebugSettings(...)): the backend already reads its "
                "own DebugSettings; pass that object (backend.debug), or a GODEBUG string "
                "to apply to it"
            )
    elif godebug is not None:
        settings.apply(godebug)  # FrozenSettingError if a running SysMem depends on it
    return settings


def _make_backend(backend: str | Backend, debug: DebugSettings, options: dict) -> Backend:
    if isinstance(backend, Backend):
        if options:
            raise TypeError(f"backend options {sorted(options)} given with a backend instance")
        return backend
    if backend == "linux":
        from ._linux import LinuxBackend

        return LinuxBackend(debug, **options)
    if backend == "simulated":
        from ._simulated import SimulatedBackend

        return SimulatedBackend(debug, **options)
    raise ValueError(f"unknown backend {backend!r}: expected 'linux', 'simulated' or a Backend")


class SysMem:
    """Go's OS memory layer over one backend, with its accounting, ledger and views.

    ``SysMem("linux")`` uses real memory through ``mmap``/``madvise``;
    ``SysMem("simulated", personality="windows")`` a deterministic model (personalities
    ``linux``, ``windows``, ``sbrk``; other keyword arguments go to the backend).

    ``ledger=False`` skips per-page state tracking for speed. It still checks: every
    argument (types, ranges, page alignment, ``prepared`` within [0, n]); that the range
    of every operation on existing memory lies in regions this SysMem reserved or
    allocated (NotReservedError otherwise; whole regions for ``sys_free`` and
    ``sys_unreserve``, RootRegionError otherwise); stat overflow; that ``sys_free``,
    ``sys_unused`` and ``sys_fault`` do not take ``mapped_ready`` below zero; and views:
    only of accessible memory, and no unmapping, protecting or fresh mapping (``sys_map``;
    ``sys_used`` under harddecommit) under a live view. It does not check page states
    (``sys_used`` of Reserved memory, ``sys_map`` over Prepared or Ready memory, the
    ``prepared`` count, a ``sys_free`` stat's group).

    ``godebug`` is a GODEBUG string or :class:`DebugSettings` (default: the ``GODEBUG``
    environment variable). With a backend instance, the backend's own settings are used:
    a string is applied to them in place (FrozenSettingError if that would change what a
    SysMem already on the backend froze), a DebugSettings must be that same object.
    """

    def __init__(
        self,
        backend: str | Backend = "linux",
        *,
        ledger: bool = True,
        godebug: str | DebugSettings | None = None,
        **backend_options,
    ) -> None:
        if godebug is not None and not isinstance(godebug, (str, DebugSettings)):
            raise TypeError(
                f"godebug must be a GODEBUG string or DebugSettings, not {type(godebug).__name__}"
            )
        if isinstance(backend, Backend):
            self.debug = _shared_settings(backend, godebug)
        elif isinstance(godebug, DebugSettings):
            self.debug = godebug
        else:
            defaults = {}
            if backend_options.get("personality", "linux") != "linux":
                defaults["madvdontneed"] = 0  # Go's default everywhere but Linux
            self.debug = DebugSettings.from_godebug(godebug, **defaults)
        self.backend = _make_backend(backend, self.debug, backend_options)
        self.backend.users += 1
        self._closed = False
        self.page_size = self.backend.phys_page_size
        self._mask = self.page_size - 1
        self._lock = _OpLock()
        self._mapped_ready = 0
        self.stats: dict[str, SysMemStat] = {
            name: SysMemStat(name, group) for name, group in STANDARD_STATS.items()
        }
        self.root_regions = RootRegionRegistry()
        self.ledger: Ledger | None = Ledger() if ledger else None
        self._access = AccessMap()
        # Whether Prepared memory can be touched decides which transitions must respect
        # views, and it depends on harddecommit; so that setting and madvdontneed are fixed
        # from here on, as in Go, which reads GODEBUG once at start-up.
        self._mapped_accessible = self.backend.mapped_is_accessible
        self._released_accessible = self.backend.released_is_accessible
        # sys_used must grant access where some Prepared memory may lack it.
        self._used_grants_access = not (self._mapped_accessible and self._released_accessible)
        # harddecommit: sys_used maps fresh pages over Ready memory too.
        self._used_replaces = self.backend.used_replaces_memory
        # madvdontneed too: need_zero_after_sys_unused must stay true for memory that
        # MADV_FREE released, however the setting is later read.
        self.debug.freeze("harddecommit", "madvdontneed")

    # -- accounting ---------------------------------------------------------------------
    @property
    def mapped_ready(self) -> int:
        """Bytes in the Ready state (Go's ``gcController.mappedReady``)."""
        return self._mapped_ready

    def stat(self, name: str, group: str | None = None) -> SysMemStat:
        """The stat called ``name``, created (in ``group``) on first use."""
        s = self.stats.get(name)
        if s is None:
            s = self.stats[name] = SysMemStat(name, group)
        return s

    # -- argument checks ------------------------------------------------------------------
    def _aligned(self, op: str, v: int, n: int, pages: bool = True, empty_ok: bool = False,
                 go_name: str = "") -> tuple[int, int]:
        """The range check of every public entry point: ``(v, n)`` as plain ints.

        TypeError unless both are integers (numpy integers are converted; bool, float and
        None are not integers here); ValueError unless both are in [0, 2**64), n > 0
        (``empty_ok``: n >= 0) and v + n <= 2**64; with ``pages``, MisalignedRangeError
        unless both are page multiples ("unaligned <go_name>", where Go throws so).
        """
        if (v.__class__ is int and n.__class__ is int and v >= 0 and n > 0
                and v + n < U64_LIMIT and not (v | n) & self._mask):
            return v, n  # the common case, in one expression
        if v.__class__ is not int or n.__class__ is not int:  # numpy ints, bool, float, ...
            v, n = as_int(v, f"{op}: address"), as_int(n, f"{op}: size")
        if v < 0 or v >= U64_LIMIT:
            raise ValueError(f"{op}: address must be in [0, 2**64), got {v:#x}")
        if n <= 0 and not (empty_ok and n == 0) or n >= U64_LIMIT:
            want = "non-negative" if empty_ok else "positive"
            raise ValueError(f"{op}: size must be {want} and below 2**64, got {n:#x}")
        if v + n > U64_LIMIT:
            raise ValueError(
                f"{op}: [{v:#x}, +{n:#x}) runs past the end of the 64-bit address space"
            )
        if pages and (v | n) & self._mask:
            raise MisalignedRangeError(
                f"unaligned {go_name or op}: [{v:#x}, +{n:#x}) is not a multiple of the "
                f"{self.page_size}-byte page size"
            )
        return v, n

    @staticmethod
    def _not_owned(op: str, v: int, n: int) -> NotReservedError:
        """With the ledger off, every operation on existing memory checks
        ``root_regions.covers(v, n)`` (regions this SysMem reserved or allocated), so no
        call reaches memory Python or anyone else owns; this is the error it raises,
        the one the ledger raises for such a range."""
        return NotReservedError(
            f"{op}({v:#x}, {n:#x}): the range is not memory this SysMem owns (not inside "
            "the regions it reserved or allocated)"
        )

    # -- None ⇄ Ready -----------------------------------------------------------------------
    def sys_alloc(self, n: int, stat: SysMemStat, vma_name: str = "") -> int | None:
        """None → Ready: ``n`` bytes of zeroed memory where the OS likes (Go's ``sysAlloc``).

        Adds ``n`` to ``stat`` and to ``mapped_ready``. Returns None if the OS has none.
        """
        _, n = self._aligned("sys_alloc", 0, n)
        _require_stat("sys_alloc", stat)
        with self._lock:
            # Count first, as Go does: the overflow check and the addition are one atomic
            # step, so no other thread can fill the stat between them.
            stat.add(n)
            try:
                p = self.backend.alloc(n, vma_name)
            except BaseException:
                stat.add(-n)
                raise
            if p is None:
                stat.add(-n)
                return None
            self._mapped_ready += n
            self.root_regions.register(p, n)
            if self.ledger is not None:
                self.ledger.add_region(p, n, vma_name, State.READY, stat)
            self._access.add(p, p + n)
            return p

    def sys_free(self, v: int, n: int, stat: SysMemStat) -> None:
        """Ready → None for a whole region (Go's ``sysFree``); subtracts ``n`` from ``stat``
        and ``mapped_ready``. The region must be Ready and mapped for ``stat``'s group."""
        v, n = self._aligned("sys_free", v, n)
        _require_stat("sys_free", stat)
        clean = self._access.collect_if_pinned(v, v + n)  # not under the lock: runs finalizers
        with self._lock:
            if self.ledger is not None:
                region = self.ledger.whole_region(v, n, "sys_free")
                self.ledger.require_freeable(region, stat, "sys_free")
            elif not self.root_regions.covers(v, n):
                raise self._not_owned("sys_free", v, n)
            self.root_regions.require(v, n)
            stat.add(-n)  # as Go, before the OS call; in one step with the overflow check
            try:
                if self._mapped_ready < n:
                    raise AccountingMismatchError(
                        f"sys_free({v:#x}, {n:#x}): mapped_ready is only {self._mapped_ready:#x}"
                    )
                self._access.check_unpinned(v, v + n, "sys_free", clean)
                self.backend.free(v, n)
            except BaseException:
                stat.add(n)
                raise
            self.root_regions.unregister(v, n)
            self._mapped_ready -= n
            if self.ledger is not None:
                self.ledger.remove_region(region)
            self._access.remove(v, v + n)

    # -- None ⇄ Reserved --------------------------------------------------------------------
    def sys_reserve(self, v: int | None, n: int, vma_name: str = "") -> int | None:
        """None → Reserved: ``n`` bytes of address space, at hint ``v`` if the OS agrees
        (Go's ``sysReserve``). Returns the address, or None."""
        _, n = self._aligned("sys_reserve", 0, n)
        if v is not None:
            v = as_int(v, "sys_reserve: hint", unsigned=True)
        with self._lock:
            return self._reserve(v, n, vma_name)

    def _reserve(self, v: int | None, n: int, vma_name: str) -> int | None:
        p = self.backend.reserve(v or None, n, vma_name)
        if p is None:
            return None
        self.root_regions.register(p, n)
        if self.ledger is not None:
            self.ledger.add_region(p, n, vma_name, State.RESERVED, None)
        return p

    def sys_reserve_aligned(
        self, v: int | None, size: int, align: int, vma_name: str = ""
    ) -> tuple[int | None, int]:
        """None → Reserved, aligned to ``align`` (Go's ``sysReserveAligned``).

        Returns ``(address, reserved_size)``: ``size + align`` when the over-reservation
        happened to be aligned (Go keeps it all), else ``size``; ``(None, 0)`` when the
        OS has no address space.

        Where reservations can only be released whole (Windows), Go gives the
        over-reservation back and reserves its aligned part again, which another thread
        may take first: it retries, and throws after 100 tries (RuntimeThrowError). If
        that re-reservation returns nil, Go hands the nil to ``sysUnreserve``, whose
        ``VirtualFree`` fails, and throws "runtime: failed to release pages"; heaplab
        raises RuntimeThrowError with that message too (nothing stays reserved), rather
        than return ``(None, 0)`` as for a plain failure.
        """
        _, size = self._aligned("sys_reserve_aligned", 0, size)
        if v is not None:
            v = as_int(v, "sys_reserve_aligned: hint", unsigned=True)
        align = as_int(align, "sys_reserve_aligned: align")
        if align <= 0 or align & (align - 1) or align & self._mask:
            raise MisalignedRangeError(
                f"sys_reserve_aligned: align {align:#x} must be a power of two and a "
                f"multiple of the {self.page_size}-byte page size"
            )
        if size + align >= U64_LIMIT:
            raise ValueError(
                f"sys_reserve_aligned: size + align must be below 2**64, got align "
                f"{align:#x} and size {size:#x}"
            )
        with self._lock:
            if self.backend.is_sbrk:
                return self._reserve_aligned_sbrk(v, size, align, vma_name)
            for _ in range(RESERVE_ALIGNED_RETRIES):
                p = self._reserve(v, size + align, vma_name)
                if p is None:
                    return None, 0
                if p & (align - 1) == 0:
                    return p, size + align
                p_aligned = (p + align - 1) & -align
                if self.backend.releases_whole_reservations_only:
                    # Windows cannot release part of a reservation: give it all back and
                    # ask for the aligned part, which another thread may take meanwhile.
                    self._unreserve(p, size + align)
                    p2 = self._reserve(p_aligned, size, vma_name)
                    if p2 == p_aligned:
                        return p2, size
                    if p2 is None:
                        # Go passes the nil on: sysUnreserve(nil, size) → VirtualFree fails.
                        raise RuntimeThrowError(
                            f"runtime: failed to release pages (VirtualFree of {size} bytes "
                            "failed with errno=87: sysReserveAligned's re-reservation of the "
                            f"aligned part at {p_aligned:#x} returned nil)"
                        )
                    self._unreserve(p2, size)
                    continue
                return self._trim_reservation(p, size, align, p_aligned), size
            raise RuntimeThrowError("failed to allocate aligned heap memory; too many retries")

    def _trim_reservation(self, p: int, size: int, align: int, p_aligned: int) -> int:
        # Release head and tail straight to the OS: sys_unreserve can't take part of a
        # region, so the leak-checker registration moves to the kept part instead.
        end = p_aligned + size
        tail = p + size + align - end
        self.root_regions.unregister(p, size + align)
        self.root_regions.register(p_aligned, size)
        self.backend.free(p, p_aligned - p)
        if tail > 0:
            self.backend.free(end, tail)
        if self.ledger is not None:
            region = self.ledger.whole_region(p, size + align, "sys_reserve_aligned")
            self.ledger.shrink_region(region, p_aligned, size)
        return p_aligned

    def _reserve_aligned_sbrk(
        self, v: int | None, size: int, align: int, vma_name: str
    ) -> tuple[int | None, int]:
        if v:
            raise RuntimeThrowError("unexpected heap arena hint on sbrk platform")
        p, n = self.backend.reserve_aligned_sbrk(size, align)
        if p is None:
            return None, 0
        # Go registers nothing here (no ASAN on sbrk platforms); heaplab does, so the
        # registry keeps matching the live regions on every personality.
        self.root_regions.register(p, n)
        if self.ledger is not None:
            self.ledger.add_region(p, n, vma_name, State.RESERVED, None)
        return p, n

    def sys_unreserve(self, v: int, n: int) -> None:
        """Reserved → None for a whole region (Go's ``sysUnreserve``)."""
        v, n = self._aligned("sys_unreserve", v, n)
        clean = self._access.collect_if_pinned(v, v + n)  # not under the lock: runs finalizers
        with self._lock:
            self._unreserve(v, n, clean)

    def _unreserve(self, v: int, n: int, clean: int = -1) -> None:
        if self.ledger is not None:
            region = self.ledger.whole_region(v, n, "sys_unreserve")
            self.ledger.require(v, n, _RESERVED, "sys_unreserve")
        elif not self.root_regions.covers(v, n):
            raise self._not_owned("sys_unreserve", v, n)
        self.root_regions.require(v, n)
        self._access.check_unpinned(v, v + n, "sys_unreserve", clean)
        self.backend.free(v, n)
        self.root_regions.unregister(v, n)
        if self.ledger is not None:
            self.ledger.remove_region(region)
        self._access.remove(v, v + n)

    # -- Reserved → Prepared ⇄ Ready ------------------------------------------------------
    def sys_map(self, v: int, n: int, stat: SysMemStat, vma_name: str = "") -> None:
        """Reserved → Prepared (Go's ``sysMap``); adds ``n`` to ``stat``.

        Raises :class:`~sysmem.errors.SysOutOfMemoryError` where Go throws
        "runtime: out of memory".
        """
        v, n = self._aligned("sys_map", v, n)
        _require_stat("sys_map", stat)
        ledger = self.ledger
        if ledger is None:  # not under the lock: collecting runs finalizers
            clean = self._access.collect_if_pinned(v, v + n)
        lock = self._lock  # `with self._lock:`, inlined (see _OpLock)
        lock.rlock.acquire()
        if lock.busy:
            lock.refuse()
        lock.busy = True
        try:
            if ledger is not None:
                ledger.require(v, n, _RESERVED, "sys_map", unattributed=True)
            else:
                if not self.root_regions.covers(v, n):
                    raise self._not_owned("sys_map", v, n)
                # Only the ledger knows the range is Reserved (so no view can be there);
                # without it, refuse to map fresh pages under a live view.
                self._access.check_unpinned(v, v + n, "sys_map", clean)
            stat.add(n)  # as Go, before the OS call; in one step with the overflow check
            try:
                self.backend.map(v, n, vma_name)
            except BaseException:
                stat.add(-n)
                raise
            if ledger is not None:
                ledger.set_state_and_stat(v, n, _PREPARED_INT, stat)
            if self._mapped_accessible:
                self._access.add(v, v + n)
        finally:
            lock.busy = False
            lock.rlock.release()

    def sys_used(self, v: int, n: int, prepared: int) -> None:
        """Prepared → Ready (Go's ``sysUsed``); ``mapped_ready`` grows by ``prepared``.

        ``[v, v+n)`` may mix Prepared and Ready pages; ``prepared`` must be the exact
        number of Prepared bytes in it (the ledger checks; Go trusts the caller).

        With ``harddecommit`` on Linux, Go's ``sysUsedOS`` maps fresh zero pages over the
        whole range, Ready pages included, and so does heaplab; if a live view overlaps
        the range, that would silently zero what the view holds, so the call raises
        :class:`~sysmem.errors.LiveViewError` first and changes nothing.
        """
        v, n = self._aligned("sys_used", v, n)
        if prepared.__class__ is not int:
            prepared = as_int(prepared, "sys_used: prepared")
        if prepared < 0 or prepared > n or prepared & self._mask:
            raise PreparedCountError(
                f"sys_used({v:#x}, {n:#x}, prepared={prepared:#x}): prepared must be a "
                "page multiple between 0 and n"
            )
        if self._used_replaces:  # not under the lock: collecting runs finalizers
            clean = self._access.collect_if_pinned(v, v + n)
        lock = self._lock  # `with self._lock:`, inlined (see _OpLock)
        lock.rlock.acquire()
        if lock.busy:
            lock.refuse()
        lock.busy = True
        try:
            ledger = self.ledger
            if ledger is not None:
                actual = ledger.require(v, n, _USABLE, "sys_used")
                if actual != prepared:
                    raise PreparedCountError(
                        f"sys_used({v:#x}, {n:#x}, prepared={prepared:#x}): the range holds "
                        f"{actual:#x} Prepared bytes; mapped_ready would drift by "
                        f"{prepared - actual:+#x}"
                    )
            elif not self.root_regions.covers(v, n):
                raise self._not_owned("sys_used", v, n)
            if self._used_replaces:
                self._access.check_unpinned(v, v + n, "sys_used", clean)
            self.backend.used(v, n)
            self._mapped_ready += prepared
            if ledger is not None and prepared:
                ledger.set_state(v, n, _READY_INT)
            if self._used_grants_access:
                self._access.add(v, v + n)
        finally:
            lock.busy = False
            lock.rlock.release()

    def sys_unused(self, v: int, n: int) -> None:
        """Ready → Prepared (Go's ``sysUnused``): the OS may take the pages back;
        ``mapped_ready`` falls by ``n``. Unaligned ranges raise, as Go throws."""
        v, n = self._aligned("sys_unused", v, n, go_name="sysUnused")
        if not self._released_accessible:  # not under the lock: collecting runs finalizers
            clean = self._access.collect_if_pinned(v, v + n)
        lock = self._lock  # `with self._lock:`, inlined (see _OpLock)
        lock.rlock.acquire()
        if lock.busy:
            lock.refuse()
        lock.busy = True
        try:
            ledger = self.ledger
            if ledger is not None:
                ledger.require(v, n, _READY, "sys_unused")
            else:
                if not self.root_regions.covers(v, n):
                    raise self._not_owned("sys_unused", v, n)
                if self._mapped_ready < n:
                    raise AccountingMismatchError(
                        f"sys_unused({v:#x}, {n:#x}): mapped_ready is only {self._mapped_ready:#x}"
                    )
            if self._released_accessible:
                self.backend.unused(v, n)
            else:
                self._access.check_unpinned(v, v + n, "sys_unused", clean)
                self.backend.unused(v, n)
                self._access.remove(v, v + n)
            self._mapped_ready -= n
            if ledger is not None:
                ledger.set_state(v, n, _PREPARED_INT)
        finally:
            lock.busy = False
            lock.rlock.release()

    def sys_fault(self, v: int, n: int) -> None:
        """Ready → Reserved: any later access faults (Go's ``sysFault``, for debugging).

        ``mapped_ready`` falls by ``n``. Like Go, no SysMemStat changes: the pages stop
        being attributed to the stat they were mapped with, and the caller takes them out
        of it (as Go's ``arena.go`` takes them out of ``heapInUse``).
        """
        v, n = self._aligned("sys_fault", v, n)
        clean = self._access.collect_if_pinned(v, v + n)  # not under the lock: runs finalizers
        with self._lock:
            if self.ledger is not None:
                self.ledger.require(v, n, _READY, "sys_fault")
            else:
                if not self.root_regions.covers(v, n):
                    raise self._not_owned("sys_fault", v, n)
                if self._mapped_ready < n:
                    raise AccountingMismatchError(
                        f"sys_fault({v:#x}, {n:#x}): mapped_ready is only {self._mapped_ready:#x}"
                    )
            self._access.check_unpinned(v, v + n, "sys_fault", clean)
            self.backend.fault(v, n)
            self._mapped_ready -= n
            if self.ledger is not None:
                self.ledger.set_state_and_stat(v, n, _RESERVED_INT, None)
            self._access.remove(v, v + n)

    # -- hints ------------------------------------------------------------------------------
    def sys_huge_page(self, v: int, n: int) -> None:
        """Advise huge pages for the huge-page-aligned middle of the range (Go's ``sysHugePage``)."""
        self._hint("sys_huge_page", v, n, self.backend.huge_page)

    def sys_no_huge_page(self, v: int, n: int) -> None:
        """Advise against huge pages (Go's ``sysNoHugePage``); ``v`` must be page aligned."""
        self._hint("sys_no_huge_page", v, n, self.backend.no_huge_page, "unaligned sysNoHugePageOS")

    def sys_huge_page_collapse(self, v: int, n: int) -> None:
        """Try to back the range with huge pages now, best effort (Go's ``sysHugePageCollapse``)."""
        self._hint("sys_huge_page_collapse", v, n, self.backend.huge_page_collapse,
                   "unaligned sysHugePageCollapseOS")

    def _hint(self, op: str, v: int, n: int, advise, unaligned_throw: str = "") -> None:
        # Hints change no state, but the range must be owned memory; Go throws on an
        # unaligned start for the two that madvise without rounding.
        v, n = self._aligned(op, v, n, pages=False, empty_ok=True)
        if unaligned_throw and v & self._mask:
            raise MisalignedRangeError(f"{unaligned_throw}: {v:#x}")
        with self._lock:
            if n:
                if self.ledger is not None:
                    self.ledger.require(v, n, _OWNED, op)
                elif not self.root_regions.covers(v, n):
                    raise self._not_owned(op, v, n)
            advise(v, n)

    def need_zero_after_sys_unused(self) -> bool:
        """Whether memory that went through ``sys_unused`` may hold old data when reused
        (Go's ``needZeroAfterSysUnused``): False on Linux with ``madvdontneed=1``."""
        return self.backend.need_zero_after_unused()

    # -- views ------------------------------------------------------------------------------
    def view(self, addr: int, nbytes: int, dtype: np.typing.DTypeLike = np.uint8) -> np.ndarray:
        """A numpy array over ``nbytes`` of Ready memory at ``addr``.

        Raises :class:`~sysmem.errors.InaccessibleMemoryError` unless every byte is Ready
        (with the ledger off: accessible). While the array, or anything made from it, is
        alive, ``sys_free``/``sys_fault``/``sys_unreserve`` (and decommitting
        ``sys_unused`` on Windows or with ``harddecommit``) of that memory raise
        :class:`~sysmem.errors.LiveViewError`.
        """
        addr, nbytes = self._aligned("view", addr, nbytes, pages=False)
        dt = np.dtype(dtype)
        if dt.hasobject:
            raise TypeError(f"view: dtype {dt} holds Python object references; a view is raw memory")
        if dt.itemsize == 0:
            raise ValueError(f"view: dtype {dt} has no size (itemsize 0); use a dtype of at least one byte")
        if nbytes % dt.itemsize:
            raise ValueError(f"view: nbytes={nbytes} must be a positive multiple of {dt} size")
        with self._lock:
            if self.ledger is not None:
                try:
                    self.ledger.require(addr, nbytes, _READY, "view")
                except IllegalTransitionError as e:
                    raise InaccessibleMemoryError(str(e)) from None
            if not self._access.covers(addr, addr + nbytes):
                raise InaccessibleMemoryError(
                    f"view({addr:#x}, {nbytes:#x}): the range is not accessible memory"
                )
            exposed = _Exposed(*self.backend.expose(addr, nbytes), nbytes)
            self._access.pin(addr, addr + nbytes, exposed)
        arr = np.asarray(exposed)
        return arr if dt == np.uint8 else arr.view(dt)

    def accessible_ranges(self) -> list[tuple[int, int]]:
        """(start, end) of every range views may touch (kept even with the ledger off)."""
        with self._lock:
            return self._access.intervals()

    def live_views(self, v: int, n: int) -> list[tuple[int, int]]:
        """(start, end) of the live views overlapping [v, v+n)."""
        v, n = self._aligned("live_views", v, n, pages=False, empty_ok=True)
        with self._lock:
            return self._access.live_views(v, v + n)

    # -- inspection and checks ----------------------------------------------------------
    def _need_ledger(self, what: str) -> Ledger:
        if self.ledger is None:
            raise LedgerDisabledError(f"{what} needs the ledger; create SysMem(..., ledger=True)")
        return self.ledger

    def runs(self) -> list[Run]:
        """Every region's pages as runs of (state, stat), in address order (needs the ledger)."""
        with self._lock:
            return self._need_ledger("runs()").runs()

    def state_bytes(self) -> dict[State, int]:
        """Bytes in each state over all regions (needs the ledger)."""
        out = {s: 0 for s in (State.RESERVED, State.PREPARED, State.READY)}
        for run in self.runs():
            out[run.state] += run.size
        return out

    def os_pages(self, v: int, n: int) -> OsPages:
        """What the OS (kernel or simulation) reports about each page of [v, v+n)."""
        v, n = self._aligned("os_pages", v, n, pages=False)
        return self.backend.inspect(v, n)

    def accounting_problems(self) -> list[str]:
        """Every way the accounting disagrees with the ledger (empty when exact)."""
        ledger = self._need_ledger("accounting_problems()")
        with self._lock:
            problems = []
            ready = ledger.bytes_in(State.READY)
            if ready != self._mapped_ready:
                problems.append(f"mapped_ready is {self._mapped_ready:#x}, Ready bytes are {ready:#x}")
            attributed = ledger.attributed()
            groups: dict[str, int] = {}
            for s in {id(s): s for s in [*self.stats.values(), *ledger.known_stats()]}.values():
                groups[s.group] = groups.get(s.group, 0) + s.load()
            for g in sorted(set(groups) | set(attributed)):
                if groups.get(g, 0) != attributed.get(g, 0):
                    problems.append(
                        f"stat group {g!r} counts {groups.get(g, 0):#x} bytes, the ledger "
                        f"attributes {attributed.get(g, 0):#x} to it"
                    )
            live = [(r.base, r.size) for r in ledger.regions()]
            if live != self.root_regions.regions():
                problems.append(
                    f"root regions {self.root_regions.regions()} differ from live regions {live}"
                )
            return problems

    def os_problems(self, regions: Iterable | None = None) -> list[str]:
        """Every page whose OS-reported protection or residency contradicts the ledger."""
        ledger = self._need_ledger("os_problems()")
        with self._lock:
            problems: list[str] = []
            # Released pages may stay resident only where release keeps them lazily
            # (MADV_FREE, sbrk's no-op); decommitting or PROT_NONE remapping drops them.
            lazy_ok = self.backend.need_zero_after_unused() and self._released_accessible
            regions = ledger.regions() if regions is None else list(regions)
            reports = self.backend.inspect_many([(r.base, r.size) for r in regions])
            for r, pages in zip(regions, reports):
                believed = self._access.accessible_pages(r.base, r.end, self.page_size)
                problems += _disagreements(
                    ledger.runs(r), pages, believed, lazy_ok,
                    reserved_accessible=self.backend.is_sbrk,
                    reserved_resident_ok=not self.backend.fault_releases_pages,
                )
            return problems

    def check(self, os: bool = True) -> None:
        """Raise AccountingMismatchError unless accounting = states (and, with ``os``,
        states = what the OS reports)."""
        problems = self.accounting_problems() + (self.os_problems() if os else [])
        if problems:
            raise AccountingMismatchError("; ".join(problems[:20]))

    def close(self) -> None:
        """Stop using the backend: the last SysMem on it to close releases the backend's
        own resources (simulated storage, whose contents then read as zero; views made
        before keep the old bytes, no longer shared with new views); regions stay as
        they are. Idempotent; while another SysMem shares the backend, nothing of its
        memory changes."""
        if self._closed:
            return
        self._closed = True
        backend = self.backend
        backend.users -= 1
        if backend.users == 0:
            backend.close()

    def __repr__(self) -> str:
        return (
            f"SysMem({self.backend.name}, mapped_ready={self._mapped_ready:#x}, "
            f"regions={len(self.root_regions)}, ledger={'on' if self.ledger else 'off'})"
        )


def _disagreements(runs: list[Run], pages: OsPages, believed: np.ndarray, lazy_ok: bool,
                   reserved_accessible: bool, reserved_resident_ok: bool) -> list[str]:
    """Compare the ledger's runs of one region with the OS's per-page report.

    ``believed``: per page, whether SysMem lets views touch it; the OS must agree, or a
    view could fault (or usable memory be refused). ``lazy_ok``: released pages may stay
    resident (MADV_FREE, or an OS that never releases). ``reserved_accessible``: sbrk
    platforms can neither protect memory nor give it back. ``reserved_resident_ok``: the
    kernel refused sys_fault's MADV_DONTNEED (Go ignores that), so faulted pages stay.
    """
    out = []
    ps = pages.page_size
    for run in runs:
        i, j = (run.start - pages.start) // ps, (run.end - pages.start) // ps
        mapped = pages.mapped[i:j]
        acc = pages.accessible[i:j]
        res = pages.resident[i:j]
        where = f"[{run.start:#x}, {run.end:#x}) {run.state.name}"
        if not mapped.all():
            out.append(f"{where}: the OS has no mapping for {int((~mapped).sum())} page(s)")
            continue
        if run.state is State.RESERVED and reserved_accessible:
            continue  # sbrk: Reserved memory is plain, resident-or-not memory
        if run.state is State.READY:
            if not acc.all():
                out.append(f"{where}: {int((~acc).sum())} page(s) are not accessible")
        elif run.state is State.PREPARED:
            # Whether Prepared memory is accessible depends on its history (sys_map vs
            # sys_unused under harddecommit); SysMem's belief decides what views may touch.
            wrong = acc != believed[i:j]
            if wrong.any():
                now = "accessible" if acc[wrong][0] else "inaccessible"
                out.append(f"{where}: {int(wrong.sum())} page(s) are {now}, unlike what SysMem believes")
            # Released pages are gone from RSS unless release was lazy, or a huge page
            # around a Ready neighbour backs them.
            stray = res & ~pages.huge_advised[i:j]
            if not lazy_ok and stray.any():
                out.append(f"{where}: {int(stray.sum())} page(s) are still resident")
        else:  # Reserved
            if acc.any():
                out.append(f"{where}: {int(acc.sum())} page(s) are accessible")
            if res.any() and not reserved_resident_ok:
                out.append(f"{where}: {int(res.sum())} page(s) are resident")
    return out
