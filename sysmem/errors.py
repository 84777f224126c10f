"""Every exception heaplab raises, in one place.

The tree (each class also subclasses the built-in it refines, so callers can catch
the familiar built-in without knowing heaplab)::

    HeaplabError
     ├── SysMemError                       problems in the OS memory layer (sysmem)
     │    ├── IllegalTransitionError        (ValueError) the regions' states forbid the call
     │    │    ├── NotReservedError          the range is not (wholly) owned memory
     │    │    └── PartialRegionError        free/unreserve of less than a whole region
     │    ├── MisalignedRangeError          (ValueError) address or size not page aligned
     │    ├── PreparedCountError            (ValueError) sys_used's `prepared` is not the
     │    │                                  exact number of Prepared bytes
     │    ├── StatOverflowError             (OverflowError) a SysMemStat would wrap,
     │    │                                  Go's "sysMemStat overflow"
     │    ├── RootRegionError               (ValueError) leak-checker registration that
     │    │                                  does not exactly match a registered region
     │    ├── InaccessibleMemoryError       (ValueError) a view of memory that is not Ready
     │    ├── LiveViewError                 (BufferError) unmapping/protecting memory that
     │    │                                  a live view still exposes (as mmap.close does)
     │    ├── LedgerDisabledError           (RuntimeError) a check that needs the ledger
     │    ├── ReentrantCallError            (RuntimeError) a SysMem call made by the thread
     │    │                                  already inside one of its operations (a
     │    │                                  finalizer the garbage collector ran mid-call)
     │    ├── FrozenSettingError            (AttributeError) changing a GODEBUG setting a
     │    │                                  running SysMem depends on (harddecommit)
     │    ├── AccountingMismatchError       (AssertionError) accounting ≠ states, or
     │    │                                  states ≠ what the kernel reports
     │    ├── RuntimeThrowError             (RuntimeError) where Go's runtime would throw
     │    │                                  for a reason other than the ones above
     │    ├── SysOutOfMemoryError           (MemoryError) the OS (or the simulation) has
     │    │                                  no memory or address space left
     │    └── SysCallError                  (OSError) a system call failed; has errno
     └── HeapError                         problems in the heap (heap)
          ├── PageAllocError                (RuntimeError) where Go's page allocator throws
          ├── HeapThrowError                (RuntimeError) where Go's mheap throws
          │    └── InvalidSpanFreeError      freeing a span that is not in use or not
          │                                  empty ("mheap.freeSpanLocked - invalid free")
          ├── HeapOutOfMemoryError          (MemoryError) the heap cannot get or commit
          │                                  the memory an allocation needs
          ├── HeapInvariantError            (AssertionError) MHeap.check(): the heap's
          │                                  accounting disagrees with its spans, page
          │                                  allocator or the sysmem ledger
          ├── InvalidSizeError              (ValueError) an allocation size (or count, or
          │                                  pointer mask) no object can have
          ├── InvalidFreeError              (ValueError) free() of an address that is not
          │    │                             the start of a live object
          │    └── DoubleFreeError           the object was already freed
          ├── ObjectBoundsError             (IndexError) a read or write outside every live
          │                                  object, or not word aligned where words are
          ├── PointerSlotError              (TypeError) write_pointer into a word the
          │                                  object's pointer mask says is not a pointer
          ├── InvalidPointerError           (ValueError) write_pointer of a target that is
          │                                  neither 0 (nil) nor inside a live object
          ├── MalformedMemoryLimitError     (ValueError) a GOMEMLIMIT value Go's
          │                                  readGOMEMLIMIT throws on ("malformed GOMEMLIMIT")
          └── RootNotFoundError             (KeyError) remove_root / release_root_slots of
                                             something that is not a root of the heap

Messages say what Go would have said where Go throws, followed by what heaplab saw.
"""

from __future__ import annotations

import errno as _errno
import os

__all__ = [
    "HeaplabError",
    "SysMemError",
    "IllegalTransitionError",
    "NotReservedError",
    "PartialRegionError",
    "MisalignedRangeError",
    "PreparedCountError",
    "StatOverflowError",
    "RootRegionError",
    "InaccessibleMemoryError",
    "LiveViewError",
    "LedgerDisabledError",
    "ReentrantCallError",
    "FrozenSettingError",
    "AccountingMismatchError",
    "RuntimeThrowError",
    "SysOutOfMemoryError",
    "SysCallError",
    "HeapError",
    "PageAllocError",
    "HeapThrowError",
    "InvalidSpanFreeError",
    "HeapOutOfMemoryError",
    "HeapInvariantError",
    "InvalidSizeError",
    "InvalidFreeError",
    "DoubleFreeError",
    "ObjectBoundsError",
    "PointerSlotError",
    "InvalidPointerError",
    "MalformedMemoryLimitError",
    "RootNotFoundError",
]


class HeaplabError(Exception):
    """Root of every exception heaplab raises on purpose."""


class SysMemError(HeaplabError):
    """A problem in the OS memory layer (``sysmem``)."""


class IllegalTransitionError(SysMemError, ValueError):
    """The call asks for a state transition the regions' current states forbid."""


class NotReservedError(IllegalTransitionError):
    """The range is not wholly inside memory this SysMem reserved or allocated."""


class PartialRegionError(IllegalTransitionError):
    """``sys_free``/``sys_unreserve`` named part of a region, not the whole of one."""


class MisalignedRangeError(SysMemError, ValueError):
    """An address or a size is not a multiple of the page size (Go: "unaligned sysUnused")."""


class PreparedCountError(SysMemError, ValueError):
    """``sys_used(v, n, prepared)`` where ``prepared`` is not the exact Prepared byte count."""


class StatOverflowError(SysMemError, OverflowError):
    """A ``SysMemStat`` would go below zero or past 2**64-1 (Go: "sysMemStat overflow")."""


class RootRegionError(SysMemError, ValueError):
    """Leak-checker root-region (un)registration that breaks the exact-match rule."""


class InaccessibleMemoryError(SysMemError, ValueError):
    """A view or access of memory that is not Ready (touching it could fault)."""


class LiveViewError(SysMemError, BufferError):
    """A transition would unmap or protect memory that a live view still exposes."""


class LedgerDisabledError(SysMemError, RuntimeError):
    """An operation needs the state ledger, but this SysMem was created with ``ledger=False``."""


class ReentrantCallError(SysMemError, RuntimeError):
    """A SysMem operation was called by the thread already inside one of its operations.

    Only code the interpreter runs in the middle of an operation can do that: a ``__del__``
    or weakref callback run by the garbage collector. Blocking would deadlock, and running
    it would act on half-updated bookkeeping, so the call is refused and nothing changes.
    """


class FrozenSettingError(SysMemError, AttributeError):
    """A GODEBUG setting that a running SysMem depends on cannot change (Go reads it once)."""


class AccountingMismatchError(SysMemError, AssertionError):
    """Accounting disagrees with the ledger's states, or the states with the kernel."""


class RuntimeThrowError(SysMemError, RuntimeError):
    """A condition on which Go's runtime throws (a fatal error) not covered by a subclass."""


class SysOutOfMemoryError(SysMemError, MemoryError):
    """The OS (or the simulated machine) refused memory or address space."""


class SysCallError(SysMemError, OSError):
    """A system call failed. ``errno`` and ``strerror`` are set as for ``OSError``."""

    def __init__(self, call: str, err: int, detail: str = "") -> None:
        msg = f"{call} failed: {os.strerror(err)}"
        if detail:
            msg += f" ({detail})"
        super().__init__(err, msg)
        self.call = call

    @property
    def errno_name(self) -> str:
        """The symbolic errno (``"ENOMEM"``, …)."""
        return _errno.errorcode.get(self.errno or 0, str(self.errno))


class HeapError(HeaplabError):
    """A problem in the heap built on sysmem (``heap``)."""


class PageAllocError(HeapError, RuntimeError):
    """A condition on which Go's page allocator throws (a fatal error in Go).

    ``go_message`` is the text Go's ``throw`` prints, so a failure can be matched to
    the Go source; ``detail`` says what heaplab saw. The allocator's state may be
    partly updated when this is raised, as Go would be dead at that point.
    """

    def __init__(self, go_message: str, detail: str = "") -> None:
        self.go_message = go_message
        self.detail = detail
        super().__init__(f"{go_message}: {detail}" if detail else go_message)


class HeapThrowError(HeapError, RuntimeError):
    """A condition on which Go's mheap throws (a fatal error in Go).

    ``go_message`` is the text of Go's ``throw``; ``detail`` what heaplab saw.
    """

    def __init__(self, go_message: str, detail: str = "") -> None:
        self.go_message = go_message
        self.detail = detail
        super().__init__(f"{go_message}: {detail}" if detail else go_message)


class InvalidSpanFreeError(HeapThrowError):
    """``free_span`` of a span that is not in use, not empty or not this heap's
    (Go: "mheap.freeSpanLocked - invalid free" / "... - invalid span state")."""


class HeapOutOfMemoryError(HeapError, MemoryError):
    """The heap could not reserve, map or commit the memory an allocation needs.

    Raised after the heap undid its own changes, so it stays usable."""


class HeapInvariantError(HeapError, AssertionError):
    """``MHeap.check()`` found the heap's accounting inconsistent."""


class InvalidSizeError(HeapError, ValueError):
    """An allocation no object can satisfy: size <= 0 or not an integer, a negative
    count, or a pointer mask that names words outside the object."""


class InvalidFreeError(HeapError, ValueError):
    """``free`` of an address that is not the start of a live heap object (an interior
    pointer, a header word, an address outside the heap). Nothing was freed."""


class DoubleFreeError(InvalidFreeError):
    """``free`` of an object that was already freed (its slot, or its whole span, is
    free). Nothing was freed."""


class ObjectBoundsError(HeapError, IndexError):
    """A read or write that is not wholly inside one live object (or, for word access,
    not 8-byte aligned). Nothing was read or written."""


class PointerSlotError(HeapError, TypeError):
    """``write_pointer`` into a word that the object's pointer mask marks as scalar:
    a collector would never see the pointer. Nothing was written."""


class InvalidPointerError(HeapError, ValueError):
    """``write_pointer`` of a target that is neither 0 (nil) nor an address inside a
    live heap object. Nothing was written."""


class MalformedMemoryLimitError(HeapError, ValueError):
    """A ``GOMEMLIMIT`` value that is neither empty, ``off`` nor a byte count with an
    optional B/KiB/MiB/GiB/TiB suffix that fits in an int64 (Go throws "malformed
    GOMEMLIMIT" at start-up). ``value`` is the offending string."""

    go_message = "malformed GOMEMLIMIT; see `go doc runtime/debug.SetMemoryLimit`"

    def __init__(self, value: str) -> None:
        self.value = value
        super().__init__(f"{self.go_message}: GOMEMLIMIT={value!r}")


class RootNotFoundError(HeapError, KeyError):
    """``remove_root`` of an address that is not a root (or one removed as often as it
    was added), or ``release_root_slots`` of an array the heap did not hand out or
    already released. Nothing changed."""

    def __str__(self) -> str:  # KeyError would show the message quoted
        return str(self.args[0]) if self.args else ""
