"""sysmem: Go's OS memory layer (``runtime/mem.go``) on real memory, in Python.

Address space moves between four states — None, Reserved, Prepared, Ready — through
the operations of ``mem.go`` (see :mod:`sysmem.states` for the picture). A
:class:`SysMem` holds a backend (real Linux memory, or a simulated OS), the accounting
(``mapped_ready`` and the :class:`SysMemStat` counters) and a ledger of every page's
state. The plain functions below act on a default Linux ``SysMem``, for learning::

    import sysmem
    stat = sysmem.default().stat("other_sys")
    p = sysmem.sys_reserve(None, 1 << 20)        # None → Reserved
    sysmem.sys_map(p, 1 << 20, stat)             # Reserved → Prepared
    sysmem.sys_used(p, 1 << 20, 1 << 20)         # Prepared → Ready
    sysmem.view(p, 4096)[:] = 7                  # touch it
    sysmem.sys_unused(p, 1 << 20)                # Ready → Prepared (MADV_DONTNEED)
"""

from __future__ import annotations

import threading

import numpy as np

from .backend import Backend, OsPages
from .core import SysMem
from .errors import *  # noqa: F403  (the error tree is part of the public API)
from .errors import __all__ as _error_names
from .ledger import Run
from .settings import DebugSettings
from .states import TRANSITIONS, State
from .stats import SysMemStat

__all__ = [
    "SysMem",
    "SysMemStat",
    "State",
    "TRANSITIONS",
    "DebugSettings",
    "Backend",
    "OsPages",
    "Run",
    "default",
    "sys_alloc",
    "sys_free",
    "sys_reserve",
    "sys_reserve_aligned",
    "sys_unreserve",
    "sys_map",
    "sys_used",
    "sys_unused",
    "sys_fault",
    "sys_huge_page",
    "sys_no_huge_page",
    "sys_huge_page_collapse",
    "need_zero_after_sys_unused",
    "view",
    *_error_names,
]

_default: SysMem | None = None
_default_lock = threading.Lock()


def default() -> SysMem:
    """The process-wide Linux ``SysMem`` the plain functions use (made on first use)."""
    global _default
    if _default is None:
        with _default_lock:
            if _default is None:
                _default = SysMem("linux")
    return _default


def sys_alloc(n: int, stat: SysMemStat, vma_name: str = "") -> int | None:
    """None → Ready on the default SysMem (Go's ``sysAlloc``)."""
    return default().sys_alloc(n, stat, vma_name)


def sys_free(v: int, n: int, stat: SysMemStat) -> None:
    """Ready → None on the default SysMem (Go's ``sysFree``)."""
    default().sys_free(v, n, stat)


def sys_reserve(v: int | None, n: int, vma_name: str = "") -> int | None:
    """None → Reserved on the default SysMem (Go's ``sysReserve``)."""
    return default().sys_reserve(v, n, vma_name)


def sys_reserve_aligned(v: int | None, size: int, align: int, vma_name: str = "") -> tuple[int | None, int]:
    """None → Reserved, aligned, on the default SysMem (Go's ``sysReserveAligned``)."""
    return default().sys_reserve_aligned(v, size, align, vma_name)


def sys_unreserve(v: int, n: int) -> None:
    """Reserved → None on the default SysMem (Go's ``sysUnreserve``)."""
    default().sys_unreserve(v, n)


def sys_map(v: int, n: int, stat: SysMemStat, vma_name: str = "") -> None:
    """Reserved → Prepared on the default SysMem (Go's ``sysMap``)."""
    default().sys_map(v, n, stat, vma_name)


def sys_used(v: int, n: int, prepared: int) -> None:
    """Prepared → Ready on the default SysMem (Go's ``sysUsed``)."""
    default().sys_used(v, n, prepared)


def sys_unused(v: int, n: int) -> None:
    """Ready → Prepared on the default SysMem (Go's ``sysUnused``)."""
    default().sys_unused(v, n)


def sys_fault(v: int, n: int) -> None:
    """Ready → Reserved on the default SysMem (Go's ``sysFault``)."""
    default().sys_fault(v, n)


def sys_huge_page(v: int, n: int) -> None:
    """Huge-page advice on the default SysMem (Go's ``sysHugePage``)."""
    default().sys_huge_page(v, n)


def sys_no_huge_page(v: int, n: int) -> None:
    """No-huge-page advice on the default SysMem (Go's ``sysNoHugePage``)."""
    default().sys_no_huge_page(v, n)


def sys_huge_page_collapse(v: int, n: int) -> None:
    """Huge-page collapse on the default SysMem (Go's ``sysHugePageCollapse``)."""
    default().sys_huge_page_collapse(v, n)


def need_zero_after_sys_unused() -> bool:
    """Go's ``needZeroAfterSysUnused`` for the default SysMem."""
    return default().need_zero_after_sys_unused()


def view(addr: int, nbytes: int, dtype: np.typing.DTypeLike = np.uint8) -> np.ndarray:
    """A numpy view of Ready memory of the default SysMem (see :meth:`SysMem.view`)."""
    return default().view(addr, nbytes, dtype)
