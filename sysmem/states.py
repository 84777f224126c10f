"""The four states of address space and the transitions between them (Go's ``mem.go``).

::

            sys_reserve[_aligned]            sys_map              sys_used
      None ──────────────────────▶ Reserved ────────▶ Prepared ──────────▶ Ready
      None ◀────────────────────── Reserved           Prepared ◀────────── Ready
            sys_unreserve                                      sys_unused
                                   Reserved ◀───────────────────────────── Ready
                                                  sys_fault
      None ──────────────────────────── sys_alloc ───────────────────────▶ Ready
      None ◀─────────────────────────── sys_free ──────────────────────── Ready

``TRANSITIONS`` below is the same picture as data: for every operation, the states the
range must be in, the state it ends in, and what happens to the accounting. The ledger
enforces it; the docs and the learners' demo print it.
"""

from __future__ import annotations

import enum
from typing import NamedTuple

__all__ = ["State", "Transition", "TRANSITIONS"]


class State(enum.IntEnum):
    """State of a page of address space (the four states of Go's ``mem.go``)."""

    #: not owned by the runtime; the default for every address
    NONE = 0
    #: owned address space; any access faults; costs no memory
    RESERVED = 1
    #: mapped but meant not to be backed; contents undefined; cheap to make Ready
    PREPARED = 2
    #: may be read and written
    READY = 3


class Transition(NamedTuple):
    """One operation of ``mem.go``: where the range must start, where it ends, and the accounting."""

    go_name: str
    from_states: tuple[State, ...]
    to_state: State | None  # None: a hint, no state change
    stat_delta: str  # effect on the SysMemStat passed in
    mapped_ready_delta: str  # effect on mapped_ready (Go's gcController.mappedReady)


_R, _P, _Y, _N = State.RESERVED, State.PREPARED, State.READY, State.NONE

#: Every operation of ``mem.go`` with its legal start states, end state and accounting.
TRANSITIONS: dict[str, Transition] = {
    "sys_alloc": Transition("sysAlloc", (_N,), _Y, "+n", "+n"),
    "sys_free": Transition("sysFree", (_Y,), _N, "-n", "-n"),
    "sys_reserve": Transition("sysReserve", (_N,), _R, "", ""),
    "sys_reserve_aligned": Transition("sysReserveAligned", (_N,), _R, "", ""),
    "sys_unreserve": Transition("sysUnreserve", (_R,), _N, "", ""),
    "sys_map": Transition("sysMap", (_R,), _P, "+n", ""),
    "sys_used": Transition("sysUsed", (_P, _Y), _Y, "", "+prepared"),
    "sys_unused": Transition("sysUnused", (_Y,), _P, "", "-n"),
    "sys_fault": Transition("sysFault", (_Y,), _R, "", "-n"),
    "sys_huge_page": Transition("sysHugePage", (_R, _P, _Y), None, "", ""),
    "sys_no_huge_page": Transition("sysNoHugePage", (_R, _P, _Y), None, "", ""),
    "sys_huge_page_collapse": Transition("sysHugePageCollapse", (_R, _P, _Y), None, "", ""),
    "need_zero_after_sys_unused": Transition("needZeroAfterSysUnused", (), None, "", ""),
}
