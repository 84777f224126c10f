"""``SysMemStat``: a byte counter of memory mapped for one purpose (Go's ``sysMemStat``)."""

from __future__ import annotations

import threading

from ._ints import as_int
from .errors import StatOverflowError

__all__ = ["SysMemStat", "STANDARD_STATS"]

_U64_MAX = (1 << 64) - 1

#: Go's memstats fields of type sysMemStat, by heaplab name. The three heap counters
#: form one group: the heap moves bytes between them itself (as Go's mheap does), so the
#: ledger can only vouch for their sum.
STANDARD_STATS: dict[str, str] = {
    "heap_in_use": "heap",
    "heap_free": "heap",
    "heap_released": "heap",
    "stacks_sys": "stacks_sys",
    "mspan_sys": "mspan_sys",
    "mcache_sys": "mcache_sys",
    "buckhash_sys": "buckhash_sys",
    "gc_misc_sys": "gc_misc_sys",
    "other_sys": "other_sys",
}


class SysMemStat:
    """An unsigned byte counter, Go's ``sysMemStat`` (``mstats.go``).

    ``add`` raises :class:`StatOverflowError` rather than wrapping, where Go throws
    "sysMemStat overflow". ``group`` names the set of stats whose sum the ledger checks
    against the bytes mapped for them (by default the stat is its own group).
    """

    __slots__ = ("name", "group", "_value", "_lock")

    def __init__(self, name: str, group: str | None = None, value: int = 0) -> None:
        value = as_int(value, f"sysMemStat {name!r}: value")
        if value < 0 or value > _U64_MAX:
            raise StatOverflowError(f"sysMemStat {name!r}: initial value {value} out of range")
        self.name = name
        self.group = group or name
        self._value = value
        self._lock = threading.Lock()

    def load(self) -> int:
        """The current value (Go's ``sysMemStat.load``)."""
        return self._value

    def add(self, n: int) -> None:
        """Add ``n`` (may be negative); refuse to go below 0 or above 2**64-1 (Go's ``add``).

        The check and the addition are one atomic step, so a caller that must not act
        on a full stat adds first and undoes the addition if the action fails.
        """
        if n.__class__ is not int:
            n = as_int(n, f"sysMemStat {self.name!r}: add")
        # acquire/release rather than ``with``: this is on every sys_map and heap span alloc.
        self._lock.acquire()
        try:
            self._value = self._checked(n)
        finally:
            self._lock.release()

    def check_add(self, n: int) -> None:
        """Raise as :meth:`add` would, without adding. Only a hint when other threads
        share the stat: it may fill up before a later :meth:`add`."""
        if n.__class__ is not int:
            n = as_int(n, f"sysMemStat {self.name!r}: check_add")
        self._checked(n)

    def _checked(self, n: int) -> int:
        v = self._value + n
        if v < 0 or v > _U64_MAX:
            raise StatOverflowError(
                f"sysMemStat overflow: {self.name} is {self._value}, adding {n} would give {v}"
            )
        return v

    def __int__(self) -> int:
        return self._value

    def __repr__(self) -> str:
        return f"SysMemStat({self.name!r}, {self._value})"
