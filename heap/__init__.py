"""heap: a Go-shaped heap on top of :mod:`sysmem`.

The public face is :class:`Heap` (``mallocgc`` over mcache → mcentral → mheap → page
allocator → arenas). The layers are importable on their own for experiments:
:mod:`heap.sizeclasses`, :mod:`heap.mspan`, :mod:`heap.mheap`, :mod:`heap.mcentral`,
:mod:`heap.mcache`, :mod:`heap.arena`, Go's page allocator, :mod:`heap.pagealloc`, the
collector :mod:`heap.gc`, its pacer :mod:`heap.pacer`, :mod:`heap.metrics` and the
heap's time, :mod:`heap.clock`.
"""

from sysmem.errors import (
    DoubleFreeError,
    HeapError,
    HeapInvariantError,
    HeapOutOfMemoryError,
    InvalidFreeError,
    InvalidPointerError,
    InvalidSizeError,
    ObjectBoundsError,
    PointerSlotError,
    RootNotFoundError,
)

from .clock import Clock, RealClock, VirtualClock
from .gc import CycleStats
from .heap import Heap
from .mcache import MCache
from .mcentral import MCentral
from .mheap import MHeap
from .mspan import MSpan
from .objects import ObjectInfo, PointerLayout

__all__ = [
    "Heap",
    "ObjectInfo",
    "PointerLayout",
    "MHeap",
    "MSpan",
    "MCentral",
    "MCache",
    "HeapError",
    "HeapOutOfMemoryError",
    "HeapInvariantError",
    "InvalidSizeError",
    "InvalidFreeError",
    "DoubleFreeError",
    "ObjectBoundsError",
    "PointerSlotError",
    "InvalidPointerError",
    "RootNotFoundError",
    "CycleStats",
    "Clock",
    "VirtualClock",
    "RealClock",
]
