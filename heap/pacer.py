"""The GC pacer's arithmetic: heap goal, memory-limit goal and trigger (Go's gcController).

Go 1.27.3 ``src/runtime/mgcpacer.go`` (``gcControllerState``), ported number for number.
Given the same inputs, :class:`GCController` produces the heap goal, the trigger and the
memory-limit heap goal that Go's controller produces: ``tests/test_pacer.py`` checks this
against Go's own ``gcControllerState``, compiled into a ``go test`` binary.

What is computed, and from what::

    commit()                  GOGC, heap_marked, last_stack_scan, globals_scan → gc_percent_heap_goal
                              heap_live (while sweeping is unfinished)         → sweep_dist_min_trigger
                              cons_mark, last_heap_scan + stacks + globals     → runway
    memory_limit_heap_goal()  GOMEMLIMIT, mapped_ready, heap_free, heap_alloc  → memory-limit goal
    heap_goal_internal()      the smaller goal, sweep floor, triggered+64 KiB  → (goal, min_trigger)
    trigger()                 goal, min_trigger, heap_marked, runway           → (trigger, goal)

A heap-triggered GC should start when ``heap_live >= trigger`` (:meth:`should_start_gc`).

Integer conventions. Go keeps these quantities in ``uint64``/``int64`` and relies on
wrap-around in a few places (``heapMinimum`` for GOGC=off, ``heapLive + 1 MiB``, products
with huge GOGC values). Every formula below reduces to 64 bits exactly where Go's
arithmetic would wrap, and converts floats to integers the way Go's compiled code does on
linux/amd64 (truncation toward zero; a NaN or out-of-range value becomes
``0x8000000000000000``, the x86 "integer indefinite"). Float arithmetic is IEEE float64 in
both languages; Go on amd64 (GOAMD64=v1, the default) never fuses a multiply-add, so the
operation order written here reproduces its rounding, and a 0/0 gives x86's NaN
(``0xfff8000000000000``), as Go's does.

Sentinels are Go's numbers: ``MAX_INT64`` (``math.MaxInt64``) is "no memory limit";
``NO_GOAL`` (``^uint64(0)`` = 2**64-1) is the GOGC=off heap goal and the "not triggered"
value of :attr:`GCController.triggered`.

Cycle model. Go measures a concurrent mark (``start_cycle`` → allocation and scan work
while marking → ``end_cycle`` → ``reset_live`` → ``commit``), and those entry points are
ported with their inputs exposed. A collector that stops the world allocates nothing
during its mark: ``heap_live`` equals ``triggered`` at ``end_cycle``, and Go's
``endCycle`` then leaves ``cons_mark`` alone. ``cons_mark`` therefore stays at 0, the
runway at 0, and the trigger sits at its upper bound — exactly what Go's formulas give for
those inputs. :meth:`GCController.stw_cycle` runs that sequence.
"""

from __future__ import annotations

import math
import operator
import os
import struct
from collections.abc import Callable, Mapping
from typing import Any, Union

from sysmem.errors import HeapInvariantError, HeapThrowError, InvalidSizeError, MalformedMemoryLimitError

__all__ = [
    "GCController",
    "read_gogc",
    "read_gomemlimit",
    "parse_byte_count",
    "MAX_INT64",
    "NO_GOAL",
    "GC_PERCENT_OFF",
    "DEFAULT_GC_PERCENT",
    "DEFAULT_HEAP_MINIMUM",
    "GC_GOAL_UTILIZATION",
    "GC_BACKGROUND_UTILIZATION",
    "MEMORY_LIMIT_MIN_HEAP_GOAL_HEADROOM",
    "MEMORY_LIMIT_HEAP_GOAL_HEADROOM_PERCENT",
    "TRIGGER_RATIO_DEN",
    "MIN_TRIGGER_RATIO_NUM",
    "MAX_TRIGGER_RATIO_NUM",
    "SWEEP_MIN_HEAP_DISTANCE",
    "MIN_RUNWAY",
    "MalformedMemoryLimitError",
]

# --- Go's constants (mgcpacer.go unless noted) -------------------------------------------

GC_BACKGROUND_UTILIZATION = 0.25  # gcBackgroundUtilization: dedicated+fractional mark CPU share
GC_GOAL_UTILIZATION = GC_BACKGROUND_UTILIZATION  # gcGoalUtilization: assists make up any gap
DEFAULT_HEAP_MINIMUM = 4 << 20  # defaultHeapMinimum (GOEXPERIMENT HeapMinimum512KiB is off in 1.27)
MEMORY_LIMIT_MIN_HEAP_GOAL_HEADROOM = 1 << 20  # memoryLimitMinHeapGoalHeadroom
MEMORY_LIMIT_HEAP_GOAL_HEADROOM_PERCENT = 3  # memoryLimitHeapGoalHeadroomPercent
TRIGGER_RATIO_DEN = 64  # triggerRatioDen
MIN_TRIGGER_RATIO_NUM = 45  # minTriggerRatioNum: trigger ≥ ~0.70 of the way to the goal
MAX_TRIGGER_RATIO_NUM = 61  # maxTriggerRatioNum: trigger ≤ ~0.95 of the way to the goal
SWEEP_MIN_HEAP_DISTANCE = 1 << 20  # sweepMinHeapDistance (mgc.go)
MIN_RUNWAY = 64 << 10  # heapGoalInternal's minRunway: goal ≥ triggered + 64 KiB
DEFAULT_GC_PERCENT = 100  # readGOGC's answer when GOGC is unset or unparsable

#: revise(): with GOGC=off a forced cycle is paced as if GOGC were this large
_REVISE_OFF_GC_PERCENT = 100000
#: revise(): once past the (extended) goal, aim 10% beyond it
_MAX_OVERSHOOT = 1.1
#: revise(): floor on the remaining scan work (marking is racy, the estimate can go <= 0)
_MIN_SCAN_WORK_REMAINING = 1000
#: startCycle(): rounding to whole dedicated workers may miss 25% by at most this much
_MAX_UTIL_ERROR = 0.3

# --- sentinels and 64-bit helpers ---------------------------------------------------------

MAX_INT64 = (1 << 63) - 1  # math.MaxInt64: "no memory limit"
NO_GOAL = (1 << 64) - 1  # ^uint64(0): GOGC=off goal; `triggered` when no cycle is marking
GC_PERCENT_OFF = -1  # gcPercent after any negative setting

_M64 = (1 << 64) - 1
_SIGN = 1 << 63
_INDEFINITE = 1 << 63  # what x86 CVTTSD2SQ yields for NaN / out-of-range (as uint64)


def _u64(x: int) -> int:
    """Go's uint64 view of an integer: arithmetic wraps modulo 2**64."""
    return x & _M64


def _i64(x: int) -> int:
    """Go's int64 view (two's complement wrap)."""
    x &= _M64
    return x - (1 << 64) if x & _SIGN else x


def _i32(x: int) -> int:
    """Go's int32(x) conversion (keeps the low 32 bits, signed)."""
    x &= 0xFFFFFFFF
    return x - (1 << 32) if x & 0x80000000 else x


def _f2i64(f: float) -> int:
    """Go's int64(f) on amd64: truncate toward zero; NaN or out of range → MinInt64."""
    if math.isnan(f) or not (-9223372036854775808.0 <= f < 9223372036854775808.0):
        return -(1 << 63)
    return int(f)


def _f2u64(f: float) -> int:
    """Go's uint64(f) on amd64. Below 2**63 it is the signed conversion reinterpreted
    (so -1.5 → 2**64-1); otherwise 2**63 is subtracted, converted and the top bit set
    (so 2**64 and beyond, +Inf and NaN all give 0x8000000000000000)."""
    if f < 9223372036854775808.0:  # False for NaN, which takes the other branch, as in Go
        return _u64(_f2i64(f))
    return _u64(_f2i64(f - 9223372036854775808.0)) | _SIGN


#: The NaN x86 produces for an invalid operation such as 0/0 (sign bit set); Go's float
#: division on amd64 yields exactly this, so it is what a NaN here must be, bit for bit.
_X86_DEFAULT_NAN = struct.unpack("<d", struct.pack("<Q", 0xFFF8000000000000))[0]


def _fdiv(a: float, b: float) -> float:
    """Float64 division as Go compiles it on amd64 (DIVSD): x/0 is ±Inf, 0/0 is x86's
    default NaN, a NaN dividend passes through. (Python raises on any division by zero.)"""
    if b == 0.0:
        if math.isnan(a):
            return a
        if a == 0.0:
            return _X86_DEFAULT_NAN
        neg = (math.copysign(1.0, a) < 0) != (math.copysign(1.0, b) < 0)
        return -math.inf if neg else math.inf
    return a / b


def _check_int(name: str, v: Any, lo: int, hi: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise TypeError(f"{name} must be an int, got {type(v).__name__}")
    if not lo <= v <= hi:
        raise ValueError(f"{name} {v} is outside Go's range [{lo}, {hi}]")
    return v


# --- GOGC / GOMEMLIMIT ------------------------------------------------------------------


def _parse_int(s: str, bits: int) -> int | None:
    """Go's ``strconv.ParseInt(s, 10, bits)``: one optional sign, then one or more ASCII
    digits, in range for a signed ``bits``-bit integer. None where Go returns an error."""
    body = s[1:] if s[:1] in ("+", "-") else s
    if not body or not all("0" <= c <= "9" for c in body):
        return None
    n = -int(body) if s[0] == "-" else int(body)
    if not -(1 << (bits - 1)) <= n < (1 << (bits - 1)):
        return None
    return n


_UNIT_POWER = {"K": 1, "M": 2, "G": 3, "T": 4}


def parse_byte_count(s: str) -> int | None:
    """A byte count as GOMEMLIMIT spells it: digits with an optional ``B``, ``KiB``,
    ``MiB``, ``GiB`` or ``TiB`` suffix (Go's ``parseByteCount``). Returns None where Go
    reports failure: empty, other suffixes, a negative count, or more than MaxInt64 bytes.

    The number goes through Go's ParseInt, so a leading ``+`` (and ``-0``) is accepted,
    as in Go.
    """
    if s == "":
        return None
    if "0" <= s[-1] <= "9":  # no suffix at all
        n = _parse_int(s, 64)
        return n if n is not None and n >= 0 else None
    # Any suffix ends in B and needs something before it.
    if s[-1] != "B" or len(s) < 2:
        return None
    if "0" <= s[-2] <= "9":  # plain "B"
        n = _parse_int(s[:-1], 64)
        return n if n is not None and n >= 0 else None
    if s[-2] != "i" or len(s) < 4:  # "KiB" etc. need a unit letter and a digit
        return None
    power = _UNIT_POWER.get(s[-3])
    if power is None:
        return None
    mult = 1024**power
    n = _parse_int(s[:-3], 64)
    if n is None or n < 0:
        return None
    # Go checks the uint64 product for overflow first, then the int64 range; over
    # unbounded Python ints only the final range matters, with the same outcome.
    if n * mult > MAX_INT64:
        return None
    return n * mult


def read_gogc(env: Mapping[str, str] | None = None) -> int:
    """GOGC from ``env`` (default ``os.environ``), as Go's ``readGOGC`` reads it.

    ``off`` → -1; an int32 (sign allowed) → that value, unnormalized (``-5`` stays -5;
    :meth:`GCController.init` turns any negative into -1); unset, empty or anything
    else → 100. Go never rejects GOGC, so neither does this.
    """
    p = (os.environ if env is None else env).get("GOGC", "")
    if p == "off":
        return GC_PERCENT_OFF
    n = _parse_int(p, 32)
    return DEFAULT_GC_PERCENT if n is None else n


def read_gomemlimit(env: Mapping[str, str] | None = None) -> int:
    """GOMEMLIMIT from ``env`` (default ``os.environ``), as Go's ``readGOMEMLIMIT``.

    Unset, empty or ``off`` → ``MAX_INT64`` (no limit); otherwise a byte count (see
    :func:`parse_byte_count`). Where Go throws at start-up, this raises
    :class:`~sysmem.errors.MalformedMemoryLimitError` naming the value.
    """
    p = (os.environ if env is None else env).get("GOMEMLIMIT", "")
    if p in ("", "off"):
        return MAX_INT64
    n = parse_byte_count(p)
    if n is None:
        raise MalformedMemoryLimitError(p)
    return n


def gc_settings(gogc, memory_limit, gctrace, godebug) -> tuple[int, int, object]:
    """A heap's collector settings from its constructor's arguments, or where one is
    None from the environment as Go reads it: (GOGC, memory limit, gctrace level or
    callable). Raises :class:`~sysmem.errors.InvalidSizeError` for a bad value."""
    env_gogc = read_gogc() if gogc is None else gogc_value(gogc)
    limit = read_gomemlimit() if memory_limit is None else memory_limit_value(memory_limit, constructing=True)
    if gctrace is None:
        # An explicit godebug's gctrace (even 0) wins over the environment's.
        gctrace = _gctrace_from_godebug(godebug)
        if gctrace is None:
            gctrace = _gctrace_from_godebug(os.environ.get("GODEBUG", "")) or 0
    return env_gogc, limit, gctrace


def gogc_value(v) -> int:
    """GOGC given as a number (negative: off) or a string ("off" or digits)."""
    if isinstance(v, str):
        if v.strip().lower() == "off":
            return GC_PERCENT_OFF
        try:
            return int(v)
        except ValueError:
            raise InvalidSizeError(f"malformed GOGC {v!r}: expected an integer or 'off'") from None
    return _as_signed(v, "GOGC")


def memory_limit_value(v, *, constructing: bool = False) -> int:
    """A memory limit given in bytes, as "off", or as a GOMEMLIMIT string. A negative
    number only reads the limit in SetMemoryLimit, so ``constructing`` refuses it."""
    if isinstance(v, str):
        if v.strip().lower() == "off":
            return MAX_INT64
        n = parse_byte_count(v.strip())
        if n is None:
            raise InvalidSizeError(f"malformed memory limit {v!r}")
        return n
    n = _as_signed(v, "memory limit")
    if constructing and n < 0:
        raise InvalidSizeError(f"memory_limit must be >= 0 bytes or 'off', got {n}")
    return n


def _as_signed(v, what: str) -> int:
    if isinstance(v, bool):
        raise InvalidSizeError(f"{what} must be an integer or a string, not bool")
    try:
        return operator.index(v)
    except TypeError:
        raise InvalidSizeError(f"{what} must be an integer or a string, not {type(v).__name__}") from None


def _gctrace_from_godebug(s: str | None) -> int | None:
    # "gctrace=1" anywhere in a GODEBUG-style comma list (the last setting wins);
    # None when the list does not set gctrace.
    if not isinstance(s, str):
        return None
    level = None
    for part in s.split(","):
        k, _, v = part.strip().partition("=")
        if k == "gctrace":
            try:
                level = int(v)
            except ValueError:
                level = 0
    return level


# --- the controller -----------------------------------------------------------------------

#: A heap statistic the controller reads: a number, a zero-argument callable, or an
#: object with ``load()`` (a ``SysMemStat``).
Source = Union[int, Callable[[], int], Any]


def _read(src: Source) -> int:
    if isinstance(src, int):
        return src
    load = getattr(src, "load", None)
    if load is not None:
        return load()
    return src()


class GCController:
    """Go's ``gcControllerState``: the pacing state and the formulas that read it.

    Attribute names are Go's field names in snake case and hold what Go's fields hold
    (uint64 quantities as non-negative ints, float64 ones as floats). The heap feeds it:

    * ``heap_live`` (Go grows it when an mcache takes a span or on a large allocation;
      :meth:`update` adds to it), ``heap_marked`` (set by :meth:`reset_live`),
      ``last_stack_scan``, ``max_stack_scan``, ``globals_scan``;
    * the memory-limit inputs as :data:`Source` s: ``mapped_ready``, ``heap_free`` and
      either ``heap_alloc`` or ``total_alloc``/``total_free`` (``heap_alloc = None``
      means ``total_alloc − total_free``, as Go computes it).

    Methods mirror Go's: :meth:`init`, :meth:`commit`, :meth:`heap_goal`,
    :meth:`heap_goal_internal`, :meth:`memory_limit_heap_goal`, :meth:`trigger`,
    :meth:`start_cycle`, :meth:`revise`, :meth:`end_cycle`, :meth:`reset_live`; the
    settings follow ``runtime/debug``: :meth:`set_gc_percent`, :meth:`set_memory_limit`.
    """

    def __init__(
        self,
        gc_percent: int = DEFAULT_GC_PERCENT,
        memory_limit: int = MAX_INT64,
        *,
        mapped_ready: Source = 0,
        heap_free: Source = 0,
        heap_alloc: Source | None = None,
        total_alloc: Source = 0,
        total_free: Source = 0,
    ) -> None:
        # Settings.
        self.gc_percent = 0  # int32; GC_PERCENT_OFF = GOGC=off
        self.memory_limit = 0  # int64; MAX_INT64 = no limit (0 until init sets it, as in Go)
        self.heap_minimum = 0  # uint64: 4 MiB × GOGC/100 (wrapped for GOGC=off)

        # Derived by commit().
        self.gc_percent_heap_goal = 0  # uint64; NO_GOAL when GOGC=off
        self.sweep_dist_min_trigger = 0  # uint64
        self.runway = 0  # uint64

        # Cycle state.
        self.heap_marked = 0  # live bytes found by the last mark
        self.heap_live = 0  # heap_marked + bytes handed out since (an overestimate)
        self.heap_scan = 0  # scannable part of heap_live
        self.last_heap_scan = 0  # heap scan work done by the last cycle
        self.last_stack_scan = 0  # stack bytes scanned by the last cycle
        self.max_stack_scan = 0  # allocated goroutine stack (worst-case stack work)
        self.globals_scan = 0  # scannable globals
        self.triggered = NO_GOAL  # heap_live when the current cycle started
        self.last_heap_goal = 0  # heap goal when the last cycle ended (for the scavenger)
        self.cons_mark = 0.0  # allocation rate / scan rate, per CPU
        self.last_cons_mark = [0.0, 0.0, 0.0, 0.0]  # the last four measured values

        # Work and time measured during a cycle (int64, nanoseconds for times).
        self.heap_scan_work = 0
        self.stack_scan_work = 0
        self.globals_scan_work = 0
        self.assist_time = 0
        self.dedicated_mark_time = 0
        self.fractional_mark_time = 0
        self.idle_mark_time = 0
        self.mark_start_time = 0

        # Per-cycle worker plan and assist ratio (start_cycle / revise).
        self.dedicated_mark_workers_needed = 0
        self.fractional_utilization_goal = 0.0
        self.max_idle_mark_workers = 0
        self.assist_work_per_byte = 0.0
        self.assist_bytes_per_work = 0.0

        #: True between start_cycle and reset_live (Go: gcphase != _GCoff)
        self.in_cycle = False

        # Memory-limit inputs.
        self.mapped_ready: Source = mapped_ready
        self.heap_free: Source = heap_free
        self.heap_alloc: Source | None = heap_alloc
        self.total_alloc: Source = total_alloc
        self.total_free: Source = total_free

        self.init(gc_percent, memory_limit)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **sources: Source) -> GCController:
        """A controller set up as Go's runtime sets up its own at start-up:
        ``init(readGOGC(), readGOMEMLIMIT())``."""
        return cls(read_gogc(env), read_gomemlimit(env), **sources)

    # --- settings ---------------------------------------------------------------------

    def init(self, gc_percent: int, memory_limit: int) -> None:
        """Go's ``init``: apply both settings and commit with sweeping done (there is no
        sweep before the first cycle). A negative ``memory_limit`` leaves the limit as it
        was — 0 for a fresh controller, as with Go's test copies."""
        self.heap_minimum = DEFAULT_HEAP_MINIMUM
        self.triggered = NO_GOAL
        self._set_gc_percent(_i32(_check_int("gc_percent", gc_percent, -(1 << 63), MAX_INT64)))
        self._set_memory_limit(_check_int("memory_limit", memory_limit, -(1 << 63), MAX_INT64))
        self.commit(True)

    def _set_gc_percent(self, p: int) -> int:
        old = self.gc_percent
        if p < 0:
            p = GC_PERCENT_OFF
        # Done in uint64 as Go does: for GOGC=off, uint64(-1) makes this wrap to a huge
        # value, which is harmless because the GOGC=off goal is NO_GOAL anyway.
        self.heap_minimum = _u64(DEFAULT_HEAP_MINIMUM * _u64(p)) // 100
        self.gc_percent = p
        return old

    def _set_memory_limit(self, limit: int) -> int:
        old = self.memory_limit
        if limit >= 0:
            self.memory_limit = limit
        return old

    def set_gc_percent(self, percent: int, *, is_sweep_done: bool = True) -> int:
        """``debug.SetGCPercent``: set GOGC (negative = off) and re-pace; returns the old
        value. ``percent`` is converted to int32 as Go does (``1 << 32 | 50`` means 50).
        ``is_sweep_done`` is what Go would read from ``isSweepDone()`` for the commit."""
        old = self._set_gc_percent(_i32(_check_int("percent", percent, -(1 << 63), MAX_INT64)))
        self.commit(is_sweep_done)
        if self.in_cycle:
            self.revise()
        return old

    def set_memory_limit(self, limit: int, *, is_sweep_done: bool = True) -> int:
        """``debug.SetMemoryLimit``: set the soft limit in bytes and return the old one.
        A negative ``limit`` only reads it; re-pacing is skipped when nothing changed."""
        old = self._set_memory_limit(_check_int("limit", limit, -(1 << 63), MAX_INT64))
        if limit < 0 or old == limit:
            return old
        self.commit(is_sweep_done)
        if self.in_cycle:
            self.revise()
        return old

    # --- pacing -----------------------------------------------------------------------

    def commit(self, is_sweep_done: bool = True) -> None:
        """Recompute the GOGC goal, the sweep-distance floor and the runway (Go's
        ``commit``). Call after heap_marked, heap_live or a setting changed."""
        # While sweeping is unfinished the sweeper needs at least 1 MiB of allocation
        # past the current heap to finish in; this floor applies to trigger and goal.
        self.sweep_dist_min_trigger = 0 if is_sweep_done else _u64(self.heap_live + SWEEP_MIN_HEAP_DISTANCE)

        # Grow by GOGC% of everything the next mark must scan (heap, stacks, globals).
        goal = NO_GOAL
        if self.gc_percent >= 0:
            base = _u64(self.heap_marked + self.last_stack_scan + self.globals_scan)
            goal = _u64(self.heap_marked + _u64(base * self.gc_percent) // 100)
        # The heap minimum keeps tiny heaps from collecting constantly.
        self.gc_percent_heap_goal = max(goal, _u64(self.heap_minimum))

        # How many bytes the program allocates while the GC does a full cycle's expected
        # scan work, if the GC gets 25% of the CPU and the program the other 75%.
        scan = _u64(self.last_heap_scan + self.last_stack_scan + self.globals_scan)
        u = GC_GOAL_UTILIZATION
        self.runway = _f2u64((self.cons_mark * (1 - u) / u) * float(scan))

    def read_memory_stats(self) -> tuple[int, int, int]:
        """``(heap_free, heap_alloc, mapped_ready)`` as one consistent snapshot.

        Go re-reads until ``heap_free + heap_alloc <= mapped_ready`` (a torn read of
        counters updated separately is transient). Sources here are read in the same
        order and retried a few times; an inconsistency that persists is an accounting
        bug (Go would spin forever), so it raises HeapInvariantError.
        """
        for _ in range(4):
            heap_free = _u64(_read(self.heap_free))
            if self.heap_alloc is None:
                heap_alloc = _u64(_read(self.total_alloc) - _read(self.total_free))
            else:
                heap_alloc = _u64(_read(self.heap_alloc))
            mapped_ready = _u64(_read(self.mapped_ready))
            if _u64(heap_free + heap_alloc) <= mapped_ready:
                return heap_free, heap_alloc, mapped_ready
        raise HeapInvariantError(
            f"pacer inputs inconsistent: heap_free ({heap_free:#x}) + heap_alloc ({heap_alloc:#x}) "
            f"> mapped_ready ({mapped_ready:#x}); Go's memoryLimitHeapGoal would never return"
        )

    def memory_limit_heap_goal(self) -> int:
        """The heap goal that keeps total Ready memory under the memory limit (Go's
        ``memoryLimitHeapGoal``)."""
        heap_free, heap_alloc, mapped_ready = self.read_memory_stats()
        limit = _u64(self.memory_limit)

        # Memory that counts against the limit but can never hold heap objects. Free
        # heap pages are left out: they are the pool future objects come from.
        non_heap = _u64(mapped_ready - heap_free - heap_alloc)
        # Being over the limit already pulls the goal (and so the next GC) closer.
        overage = _u64(mapped_ready - limit) if mapped_ready > limit else 0

        if _u64(non_heap + overage) >= limit:
            # Overheads alone exceed the limit: collect continuously at the live heap.
            return self.heap_marked

        goal = limit - _u64(non_heap + overage)
        # Headroom for pacing error and to keep allocation-time scavenging rare: 3%
        # (computed as goal/100*3, truncating first) but never under 1 MiB, because
        # small heaps are the worst-paced.
        headroom = goal // 100 * MEMORY_LIMIT_HEAP_GOAL_HEADROOM_PERCENT
        if headroom < MEMORY_LIMIT_MIN_HEAP_GOAL_HEADROOM:
            headroom = MEMORY_LIMIT_MIN_HEAP_GOAL_HEADROOM
        if goal < headroom or goal - headroom < headroom:
            goal = headroom  # tiny limits: the headroom itself is the goal
        else:
            goal -= headroom
        # A goal below what is already live would mean nothing.
        return max(goal, self.heap_marked)

    def heap_goal_internal(self) -> tuple[int, int]:
        """``(goal, min_trigger)`` (Go's ``heapGoalInternal``); ``min_trigger <= goal``."""
        goal = self.gc_percent_heap_goal
        limit_goal = self.memory_limit_heap_goal()
        if limit_goal < goal:
            # Memory-limited: take the limit's goal as is. Pushing it up (sweep distance,
            # minimum runway) could break the limit, so no floor is passed on either.
            return limit_goal, 0

        # Give an unfinished sweep its distance; this raises the goal too.
        sweep_floor = self.sweep_dist_min_trigger
        goal = max(goal, sweep_floor)
        # A cycle that started late (or close to the goal) still gets 64 KiB to finish
        # in; assists scale with this distance, so a tiny one would make them brutal.
        if self.triggered != NO_GOAL and goal < _u64(self.triggered + MIN_RUNWAY):
            goal = _u64(self.triggered + MIN_RUNWAY)
        return goal, sweep_floor

    def heap_goal(self) -> int:
        """The heap size at which the current/next cycle should finish (``heapGoal``)."""
        return self.heap_goal_internal()[0]

    def trigger(self) -> tuple[int, int]:
        """``(trigger, goal)`` (Go's ``trigger``): start a GC when heap_live >= trigger."""
        goal, min_trigger = self.heap_goal_internal()
        marked = self.heap_marked
        if marked >= goal:
            # Only possible with a goal pinned at heap_marked: collect continuously.
            return goal, goal

        span = (goal - marked) // TRIGGER_RATIO_DEN
        # Never below the live heap, and never below ~70% of the way to the goal: a
        # lower trigger mostly means marking all the time while the heap keeps growing.
        min_trigger = max(min_trigger, marked, _u64(span * MIN_TRIGGER_RATIO_NUM + marked))
        # Leave at least ~5% of the growth to the goal once the GC starts; for big heaps
        # the cap is 4 MiB (the cost of a GC with no work) short of the goal instead.
        max_trigger = _u64(span * MAX_TRIGGER_RATIO_NUM + marked)
        if goal > DEFAULT_HEAP_MINIMUM and goal - DEFAULT_HEAP_MINIMUM > max_trigger:
            max_trigger = goal - DEFAULT_HEAP_MINIMUM
        max_trigger = max(max_trigger, min_trigger)

        # Start early enough for the runway: the allocation expected during the mark.
        trig = min_trigger if self.runway > goal else goal - self.runway
        trig = min(max(trig, min_trigger), max_trigger)
        if trig > goal:
            raise HeapThrowError(
                "produced a trigger greater than the heap goal",
                f"trigger={trig} heapGoal={goal} minTrigger={min_trigger} maxTrigger={max_trigger}",
            )
        return trig, goal

    def should_start_gc(self, heap_live: int | None = None) -> bool:
        """Whether a heap-triggered GC should start now (Go's ``gcTrigger.test`` for
        ``gcTriggerHeap``): ``heap_live >= trigger``, and no cycle already running.
        ``heap_live`` defaults to :attr:`heap_live`."""
        if self.in_cycle:
            return False
        live = self.heap_live if heap_live is None else heap_live
        return live >= self.trigger()[0]

    # --- the cycle ------------------------------------------------------------------------

    def update(self, d_heap_live: int, d_heap_scan: int = 0) -> None:
        """Account allocation (Go's ``update``): outside a cycle the scannable heap grows
        with it; during a mark the assist ratio is revised instead."""
        if d_heap_live:
            self.heap_live = _u64(self.heap_live + d_heap_live)
        if not self.in_cycle:
            if d_heap_scan:
                self.heap_scan = _u64(self.heap_scan + d_heap_scan)
        else:
            self.revise()

    def start_cycle(self, mark_start_time: int = 0, procs: int = 1, *, periodic: bool = False) -> None:
        """Go's ``startCycle``: clear the cycle's counters, record the trigger point
        (``triggered = heap_live``), plan the mark workers for ``procs`` CPUs and set the
        first assist ratio. ``periodic`` is a time-triggered (2-minute) cycle, which
        runs with fewer idle workers. (Go's gcstoptheworld debug mode is not modelled.)"""
        self.heap_scan_work = self.stack_scan_work = self.globals_scan_work = 0
        self.assist_time = self.dedicated_mark_time = 0
        self.fractional_mark_time = self.idle_mark_time = 0
        self.mark_start_time = mark_start_time
        self.triggered = self.heap_live

        # Whole dedicated workers closest to 25% of the CPUs; when rounding misses by
        # more than 30% (GOMAXPROCS <= 3 or 6), a fractional worker makes up the rest.
        total = float(procs) * GC_BACKGROUND_UTILIZATION
        dedicated = _f2i64(total + 0.5)
        util_error = _fdiv(float(dedicated), total) - 1
        if util_error < -_MAX_UTIL_ERROR or util_error > _MAX_UTIL_ERROR:
            if float(dedicated) > total:
                dedicated -= 1
            self.fractional_utilization_goal = _fdiv(total - float(dedicated), float(procs))
        else:
            self.fractional_utilization_goal = 0.0
        if periodic:
            # An idle program needs no burst of idle workers, but at least one worker of
            # some kind must run for the cycle to make progress.
            self.max_idle_mark_workers = 0 if dedicated > 0 else 1
        else:
            self.max_idle_mark_workers = _i32(procs - dedicated)
        self.dedicated_mark_workers_needed = dedicated
        self.in_cycle = True
        self.revise()

    def revise(self) -> None:
        """Go's ``revise``: the assist ratio (scan work owed per allocated byte) that
        finishes the remaining scan work by the heap goal."""
        gc_percent = self.gc_percent
        if gc_percent < 0:
            gc_percent = _REVISE_OFF_GC_PERCENT  # a forced cycle with GOGC=off
        live = _u64(self.heap_live)
        scan = _u64(self.heap_scan)
        work = _i64(self.heap_scan_work + self.stack_scan_work + self.globals_scan_work)
        triggered = _i64(self.triggered)

        heap_goal = _i64(self.heap_goal())  # NO_GOAL reads as -1 here, as in Go
        expected = _i64(self.last_heap_scan + self.last_stack_scan + self.globals_scan)
        # Worst case: every scannable byte and every allocated stack byte is live.
        max_work = _i64(scan + self.max_stack_scan + self.globals_scan)
        if work > expected:
            # More work than last cycle: the heap is growing. Stretch the goal in
            # proportion (keeping the assist ratio steady), but at most to
            # (1+GOGC/100) × goal — no more than the next cycle would use anyway.
            ext = _i64(_f2i64(_fdiv(float(_i64(heap_goal - triggered)), float(expected)) * float(max_work)) + triggered)
            expected = max_work
            hard = _f2i64((1.0 + float(gc_percent) / 100.0) * float(heap_goal))
            if ext > hard:
                ext = hard
            heap_goal = ext
        if _i64(live) > heap_goal:
            # Already past even that: aim 10% further and assume the worst-case work.
            heap_goal = _f2i64(float(heap_goal) * _MAX_OVERSHOOT)
            expected = max_work

        remaining = _i64(expected - work)
        if remaining < _MIN_SCAN_WORK_REMAINING:
            remaining = _MIN_SCAN_WORK_REMAINING
        heap_remaining = _i64(heap_goal - _i64(live))
        if heap_remaining <= 0:
            heap_remaining = 1  # past the goal: avoid a zero or negative ratio
        self.assist_work_per_byte = float(remaining) / float(heap_remaining)
        self.assist_bytes_per_work = float(heap_remaining) / float(remaining)

    def end_cycle(self, now: int, procs: int) -> None:
        """Go's ``endCycle``: measure this cycle's cons/mark ratio and fold it into the
        estimate (the maximum of it and the previous four measurements).

        Inputs: ``now − mark_start_time`` is how long assists were on; ``assist_time``
        and ``idle_mark_time`` (ns) and the three scan-work counters were accumulated
        during the mark; ``heap_live − triggered`` is what the program allocated
        meanwhile. If nothing was allocated (a stop-the-world collection) Go leaves the
        estimate unchanged, and so does this.
        """
        # Go writes this into the global controller even for its test copies; here each
        # controller keeps its own.
        self.last_heap_goal = self.heap_goal()

        duration = _i64(now - self.mark_start_time)
        # Background workers are assumed to have hit 25%; assists add to it.
        utilization = GC_BACKGROUND_UTILIZATION
        if duration > 0:
            utilization += _fdiv(float(_i64(self.assist_time)), float(_i64(duration * procs)))

        if _u64(self.heap_live) <= _u64(self.triggered):
            return  # nothing allocated during the mark: no measurement
        idle = 0.0
        if duration > 0:
            idle = _fdiv(float(_i64(self.idle_mark_time)), float(_i64(duration * procs)))

        # (bytes allocated per mutator CPU-ns) / (bytes scanned per GC CPU-ns); the
        # duration and procs cancel out. Idle marking counts as GC CPU (it was
        # available to the GC) but not as mutator CPU taken away.
        scan_work = _i64(self.heap_scan_work + self.stack_scan_work + self.globals_scan_work)
        current = _fdiv(
            float(_u64(self.heap_live - self.triggered)) * (utilization + idle),
            float(scan_work) * (1 - utilization),
        )
        # Taking the max over recent cycles biases noisy estimates toward starting
        # earlier (more cycles) rather than toward more assists.
        cons = current
        for v in self.last_cons_mark:
            if v > cons:
                cons = v
        self.cons_mark = cons
        self.last_cons_mark = self.last_cons_mark[1:] + [current]

    def reset_live(self, bytes_marked: int) -> None:
        """Go's ``resetLive`` at mark termination: the marked bytes become both the live
        heap and ``heap_marked``; this cycle's scan work becomes next cycle's estimate."""
        self.heap_marked = _u64(bytes_marked)
        self.heap_live = _u64(bytes_marked)
        self.heap_scan = _u64(self.heap_scan_work)
        self.last_heap_scan = _u64(self.heap_scan_work)
        self.last_stack_scan = _u64(self.stack_scan_work)
        self.triggered = NO_GOAL
        self.in_cycle = False

    def stw_cycle(
        self,
        bytes_marked: int,
        *,
        heap_scan_work: int = 0,
        stack_scan_work: int = 0,
        globals_scan_work: int = 0,
        procs: int = 1,
        is_sweep_done: bool = True,
    ) -> None:
        """One stop-the-world collection through Go's sequence: start_cycle, the mark
        (its scan work given here), end_cycle, reset_live, commit.

        ``bytes_marked`` is what the mark found live; ``heap_scan_work`` (the scannable
        bytes of it), ``stack_scan_work`` and ``globals_scan_work`` are the bytes scanned.
        With no allocation during the mark, cons_mark does not move (see end_cycle).
        """
        self.start_cycle(0, procs)
        self.heap_scan_work = heap_scan_work
        self.stack_scan_work = stack_scan_work
        self.globals_scan_work = globals_scan_work
        self.end_cycle(0, procs)
        self.reset_live(bytes_marked)
        self.commit(is_sweep_done)

    def __repr__(self) -> str:
        trig, goal = self.trigger()
        gogc = "off" if self.gc_percent < 0 else str(self.gc_percent)
        limit = "off" if self.memory_limit == MAX_INT64 else f"{self.memory_limit:#x}"
        return (
            f"GCController(GOGC={gogc}, GOMEMLIMIT={limit}, heap_marked={self.heap_marked:#x}, "
            f"heap_live={self.heap_live:#x}, trigger={trig:#x}, goal={goal:#x})"
        )
