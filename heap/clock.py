"""Where the heap's time comes from: a :class:`Clock`.

Release policies are about time (a page freed a second ago is treated differently from
one freed a minute ago), so the heap never reads the system clock for them itself: it
asks its clock. Two kinds:

- :class:`VirtualClock` — time moves only when the workload says so
  (:meth:`VirtualClock.advance`). Runs are deterministic and as fast as the machine
  allows; a policy's "after 10 s" costs no waiting. The heap's default.
- :class:`RealClock` — the monotonic system clock, for runs that must behave like a
  live process (a background thread doing timed work, as Go's scavenger does).

Times are integer nanoseconds, like Go's ``nanotime()``. The clock only tells the time;
the collector's own CPU and pause figures (``gctrace``, ``CycleStats``) are always
measured with the real clock, since they describe what heaplab itself cost.
"""

from __future__ import annotations

import operator
import threading
import time
from abc import ABC, abstractmethod

__all__ = ["Clock", "VirtualClock", "RealClock", "read_clock", "MAX_NS"]


#: Times are int64 nanoseconds, as Go's nanotime: about 292 years.
MAX_NS = (1 << 63) - 1


class Clock(ABC):
    """A source of monotonic time in integer nanoseconds (Go's ``nanotime``)."""

    @abstractmethod
    def now(self) -> int:
        """The current time in nanoseconds, 0 <= now <= MAX_NS; never smaller than an
        earlier reading."""


def read_clock(clock: Clock) -> int:
    """``clock.now()``, checked: what the heap stamps must be an int64 nanosecond count
    (a bad reading raises here, before anything is changed)."""
    t = clock.now()
    if t.__class__ is not int:
        t = _nonnegative_ns(t, f"{type(clock).__name__}.now()")
    if not 0 <= t <= MAX_NS:
        raise ValueError(f"{type(clock).__name__}.now() returned {t}, outside [0, 2**63) nanoseconds")
    return t


class VirtualClock(Clock):
    """A clock that stands still until :meth:`advance` moves it. Thread-safe."""

    def __init__(self, start_ns: int = 0) -> None:
        self._now = _nonnegative_ns(start_ns, "start_ns")
        self._lock = threading.Lock()

    def now(self) -> int:
        return self._now

    def advance(self, ns: int) -> int:
        """Move the clock ``ns`` nanoseconds forward (0 is allowed); returns the new
        time. Raises ValueError for a negative step: time never goes back."""
        step = _nonnegative_ns(ns, "ns")
        with self._lock:
            if self._now + step > MAX_NS:
                raise ValueError(f"advance({step}): the clock would pass 2**63 - 1 ns (int64, as Go's nanotime)")
            self._now += step
            return self._now

    def advance_to(self, t_ns: int) -> int:
        """Move the clock to ``t_ns``; returns it. Raises ValueError if ``t_ns`` is in
        the past."""
        t = _nonnegative_ns(t_ns, "t_ns")
        with self._lock:
            if t < self._now:
                raise ValueError(f"advance_to({t}): the clock is already at {self._now} ns; time never goes back")
            self._now = t
            return t

    def __repr__(self) -> str:
        return f"VirtualClock(now={self._now} ns)"


class RealClock(Clock):
    """The system's monotonic clock (``time.monotonic_ns``)."""

    def now(self) -> int:
        return time.monotonic_ns()

    def __repr__(self) -> str:
        return "RealClock()"


def _nonnegative_ns(value: object, name: str) -> int:
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an integer number of nanoseconds, not bool")
    try:
        ns = operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an integer number of nanoseconds, not {type(value).__name__}") from None
    if not 0 <= ns <= MAX_NS:
        raise ValueError(f"{name} must be in [0, 2**63) nanoseconds, got {ns}")
    return ns
