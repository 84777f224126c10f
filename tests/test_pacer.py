"""heap.pacer: the GC pacer's heap goal, memory-limit goal and trigger, against Go's.

Three layers of evidence that the arithmetic is Go's (Go 1.27.3 ``src/runtime``):

1. Tables of inputs whose expected outputs are worked out by hand from the formulas in
   ``mgcpacer.go`` (each table names the Go function it exercises): the GOGC goal and heap
   minimum (``commit``, ``setGCPercent``), GOGC=off, every regime of
   ``memoryLimitHeapGoal``, the trigger bounds and the runway (``trigger``, ``commit``),
   ``heapGoalInternal``'s sweep-distance and 64 KiB floors, ``endCycle``'s cons/mark
   estimate, the runtime/debug setters, and ``readGOGC`` / ``readGOMEMLIMIT`` /
   ``parseByteCount`` (``string.go``).
2. ``mgcpacer_test.go TestGcPacer``: its simulation and its per-case checks, ported
   (the 17 cases whose input streams are deterministic; the three using ``math/rand``
   streams run in layer 3 with Python's RNG instead).
3. Opt-in (``pytest -m go``; compiles Go's runtime tests, ~30 s the
   first time): the same operations replayed on Go's own ``gcControllerState`` in a
   ``go test`` binary (files laid over ``src/runtime`` with ``-overlay``, see
   ``go_harness.py``). One file gives the test binary a fully settable controller
   (every input field, commit/startCycle/revise/endCycle/resetLive, the debug setters,
   readGOGC/readGOMEMLIMIT with a swapped environment); the other replays a script and
   prints every query as JSON. Scripts: all of layer 1's tables, thousands of random
   states (including 64-bit wrap-around, NaN/Inf cons/mark and int32 GOGC truncation),
   the env-parsing corpus, and all 20 TestGcPacer cases driven through the runtime's
   exported hooks (``NewGCController``, ``StartCycle``, ``Revise``, ``EndCycle``,
   ``HeapGoal``, ``AssistWorkPerByte`` …). Every output must be identical.
"""

from __future__ import annotations

import json
import math
import random
import struct
from dataclasses import dataclass
from typing import Callable

import pytest

from go_harness import build_runtime_test, require_go, run_go_test
from heap.pacer import (
    DEFAULT_HEAP_MINIMUM,
    GC_BACKGROUND_UTILIZATION,
    GC_GOAL_UTILIZATION,
    GC_PERCENT_OFF,
    MAX_INT64,
    MAX_TRIGGER_RATIO_NUM,
    MEMORY_LIMIT_HEAP_GOAL_HEADROOM_PERCENT,
    MEMORY_LIMIT_MIN_HEAP_GOAL_HEADROOM,
    MIN_RUNWAY,
    MIN_TRIGGER_RATIO_NUM,
    NO_GOAL,
    SWEEP_MIN_HEAP_DISTANCE,
    TRIGGER_RATIO_DEN,
    GCController,
    _f2i64,
    _fdiv,
    _i64,
    _u64,
    parse_byte_count,
    read_gogc,
    read_gomemlimit,
)
from sysmem.errors import HeapError, HeapInvariantError, MalformedMemoryLimitError

KiB, MiB, GiB, TiB = 1 << 10, 1 << 20, 1 << 30, 1 << 40
M64 = (1 << 64) - 1


def bits(f: float) -> int:
    return struct.unpack("<Q", struct.pack("<d", f))[0]


def unbits(b: int) -> float:
    return struct.unpack("<d", struct.pack("<Q", b & M64))[0]


def ctl(gogc=100, limit=MAX_INT64, **fields) -> GCController:
    """A controller with GOGC/GOMEMLIMIT and some fields set, then committed (sweep done)."""
    sources = {k: fields.pop(k) for k in ("mapped_ready", "heap_free", "heap_alloc", "total_alloc", "total_free")
               if k in fields}
    c = GCController(gogc, limit, **sources)
    for k, v in fields.items():
        assert hasattr(c, k), k
        setattr(c, k, v)
    c.commit(True)
    return c


# ---------------------------------------------------------------------------------------
# Layer 1: tables worked out from mgcpacer.go's formulas.


def test_constants_are_gos():
    # mgcpacer.go's const block and mgc.go sweepMinHeapDistance, Go 1.27.3 linux/amd64.
    assert GC_GOAL_UTILIZATION == GC_BACKGROUND_UTILIZATION == 0.25
    assert DEFAULT_HEAP_MINIMUM == 4 << 20  # GOEXPERIMENT HeapMinimum512KiB is off
    assert MEMORY_LIMIT_MIN_HEAP_GOAL_HEADROOM == 1 << 20
    assert MEMORY_LIMIT_HEAP_GOAL_HEADROOM_PERCENT == 3
    assert (TRIGGER_RATIO_DEN, MIN_TRIGGER_RATIO_NUM, MAX_TRIGGER_RATIO_NUM) == (64, 45, 61)
    assert SWEEP_MIN_HEAP_DISTANCE == 1 << 20
    assert MIN_RUNWAY == 64 << 10
    assert MAX_INT64 == 2**63 - 1 and NO_GOAL == 2**64 - 1


# commit(): gcPercentHeapGoal = heapMarked + (heapMarked+lastStackScan+globalsScan)*GOGC/100
# (uint64, truncating), floored at heapMinimum = 4 MiB*GOGC/100 (setGCPercent).
GC_PERCENT_GOALS = [
    # (GOGC, heap_marked, last_stack_scan, globals_scan, heap_minimum, goal)
    (100, 0, 0, 0, 4 * MiB, 4 * MiB),  # empty heap: the 4 MiB minimum
    (100, 1 * MiB, 0, 0, 4 * MiB, 4 * MiB),  # 2 MiB < minimum
    (100, 10 * MiB, 0, 0, 4 * MiB, 20 * MiB),
    (100, 10 * MiB, 1 * MiB, 1 * MiB, 4 * MiB, 22 * MiB),  # stacks and globals grow the goal
    (50, 1 * MiB, 0, 0, 2 * MiB, 2 * MiB),  # minimum scales with GOGC: 4 MiB*50/100
    (50, 10 * MiB, 0, 0, 2 * MiB, 15 * MiB),
    (200, 1 * MiB, 0, 0, 8 * MiB, 8 * MiB),
    (200, 10 * MiB, 0, 0, 8 * MiB, 30 * MiB),
    (0, 0, 0, 0, 0, 0),  # GOGC=0: no minimum, goal = live heap (continuous GC)
    (0, 5 * MiB, 1 * MiB, 0, 0, 5 * MiB),
    (33, 10_000_001, 0, 0, 1_384_120, 13_300_001),  # 4194304*33//100; 330000033//100 truncates
    (1, 99, 0, 0, 41_943, 41_943),  # 99*1//100 = 0 → goal 99 < minimum 4194304//100
    # int32 GOGC at its maximum: the product wraps modulo 2**64 before the division.
    (2**31 - 1, 1 << 40, 0, 0, 4 * MiB * (2**31 - 1) // 100,
     (1 << 40) + (((1 << 40) * (2**31 - 1)) & M64) // 100),
]


@pytest.mark.parametrize("gogc,marked,stack,globals_,minimum,goal", GC_PERCENT_GOALS)
def test_gc_percent_goal(gogc, marked, stack, globals_, minimum, goal):
    c = ctl(gogc, heap_marked=marked, last_stack_scan=stack, globals_scan=globals_)
    assert c.heap_minimum == minimum
    assert c.gc_percent_heap_goal == goal
    assert c.heap_goal() == goal  # no memory limit, sweep done, not triggered
    assert c.heap_goal_internal() == (goal, 0)


def test_gogc_off():
    # setGCPercent(-1): heapMinimum = 4 MiB * uint64(-1) / 100 wraps (harmless: the goal is ^0).
    c = ctl(-1, heap_marked=100 * MiB)
    assert c.gc_percent == GC_PERCENT_OFF
    assert c.heap_minimum == (2**64 - 4 * MiB) // 100 == 184467440737053573
    assert c.gc_percent_heap_goal == NO_GOAL
    # With no memory limit the limit goal (MaxInt64 minus 3%) is still below ^0, so it is
    # the goal, as in TestGcPacer's *NoGCPercent cases with MaxInt64.
    limit_goal = MAX_INT64 - MAX_INT64 // 100 * 3
    assert limit_goal == 8946670875749132533
    assert c.heap_goal() == limit_goal
    assert c.trigger() == (limit_goal - 4 * MiB, limit_goal)  # goal − 4 MiB cap
    # Any negative setting is stored as -1.
    c2 = ctl(-57)
    assert c2.gc_percent == -1


def mem_limit_ctl(limit, mapped, free, alloc, marked=0, gogc=100):
    return ctl(gogc, limit, mapped_ready=mapped, heap_free=free, heap_alloc=alloc, heap_marked=marked)


# memoryLimitHeapGoal(): nonHeap = mappedReady − heapFree − heapAlloc,
# overage = max(mappedReady − limit, 0); if nonHeap+overage ≥ limit → heapMarked;
# goal = limit − (nonHeap+overage); headroom = max(goal/100*3, 1 MiB);
# goal = headroom if goal < headroom or goal−headroom < headroom else goal−headroom;
# result max(goal, heapMarked).
MEMORY_LIMIT_GOALS = [
    # (name, limit, mapped_ready, heap_free, heap_alloc, heap_marked, expected)
    ("non-heap alone exceeds limit", 10 * MiB, 30 * MiB, 0, 5 * MiB, 3 * MiB, 3 * MiB),
    ("non-heap exactly the limit", 10 * MiB, 15 * MiB, 0, 5 * MiB, 2 * MiB, 2 * MiB),
    ("zero limit", 0, 0, 0, 0, 7, 7),
    # TestGcPacer's applyMemoryLimitHeapGoalHeadroom(512<<20): no non-heap memory.
    ("3% headroom", 512 * MiB, 0, 0, 0, 0, 512 * MiB - 536870912 // 100 * 3),
    ("3% headroom, truncating first", 100 * MiB + 99, 0, 0, 0, 0,
     100 * MiB + 99 - (100 * MiB + 99) // 100 * 3),
    ("non-heap subtracted", 100 * MiB, 30 * MiB, 5 * MiB, 20 * MiB, 0,
     95 * MiB - (95 * MiB) // 100 * 3),
    ("heap free is not non-heap", 100 * MiB, 90 * MiB, 60 * MiB, 20 * MiB, 0,
     90 * MiB - (90 * MiB) // 100 * 3),
    # 120 MiB mapped: non-heap 20 MiB, overage 20 MiB → 60 MiB; 62914560//100*3 = 1887435.
    ("over the limit: overage counted twice", 100 * MiB, 120 * MiB, 10 * MiB, 90 * MiB, 0,
     60 * MiB - 1_887_435),
    ("1 MiB minimum headroom", 20 * MiB, 0, 0, 0, 0, 19 * MiB),  # 3% = 629145 < 1 MiB
    ("goal-headroom < headroom", 3 * MiB // 2, 0, 0, 0, 0, 1 * MiB),
    ("goal-headroom == headroom", 2 * MiB, 0, 0, 0, 0, 1 * MiB),
    ("goal < headroom: the headroom is the goal", 512 * KiB, 0, 0, 0, 0, 1 * MiB),
    ("floored at heap_marked", 20 * MiB, 0, 0, 0, 25 * MiB, 25 * MiB),
    ("no limit", MAX_INT64, 0, 0, 0, 0, 8946670875749132533),
]


@pytest.mark.parametrize("name,limit,mapped,free,alloc,marked,expected", MEMORY_LIMIT_GOALS,
                         ids=[t[0] for t in MEMORY_LIMIT_GOALS])
def test_memory_limit_goal(name, limit, mapped, free, alloc, marked, expected):
    c = mem_limit_ctl(limit, mapped, free, alloc, marked)
    assert c.memory_limit_heap_goal() == expected


def test_memory_limit_goal_inputs():
    # heapAlloc = totalAlloc − totalFree (uint64); sources may be ints, callables or
    # objects with load() (a SysMemStat, like MHeap.heap_free).
    class Stat:
        def __init__(self, v):
            self.v = v

        def load(self):
            return self.v

    box = {"mapped": 100 * MiB}
    c = GCController(100, 100 * MiB, mapped_ready=lambda: box["mapped"], heap_free=Stat(5 * MiB),
                     total_alloc=70 * MiB, total_free=50 * MiB)
    assert c.read_memory_stats() == (5 * MiB, 20 * MiB, 100 * MiB)
    assert c.memory_limit_heap_goal() == 24 * MiB  # 25 MiB less 1 MiB (3% is only 786432)
    box["mapped"] = 110 * MiB  # 10 MiB over: non-heap 85 MiB + overage 10 MiB
    assert c.memory_limit_heap_goal() == 4 * MiB
    c.heap_alloc = 1 * MiB  # an explicit heap_alloc wins over total_alloc − total_free
    assert c.read_memory_stats()[1] == 1 * MiB


def test_memory_limit_inconsistent_inputs_raise():
    # Go re-reads until heapFree + heapAlloc <= mappedReady and would spin forever on a
    # persistent violation; heaplab reports it.
    c = GCController(100, 100 * MiB)
    c.mapped_ready, c.heap_free, c.heap_alloc = 10 * MiB, 6 * MiB, 6 * MiB
    with pytest.raises(HeapInvariantError, match="mapped_ready"):
        c.memory_limit_heap_goal()
    # A torn read that resolves on retry is fine, as in Go.
    reads = iter([12 * MiB, 10 * MiB])
    c.heap_free = lambda: next(reads)
    c.heap_alloc = 0
    assert c.read_memory_stats() == (10 * MiB, 0, 10 * MiB)


def test_heap_goal_internal_regimes():
    # Memory-limited: the limit goal, min_trigger 0, no sweep/runway adjustments.
    c = mem_limit_ctl(20 * MiB, 0, 0, 0, marked=10 * MiB)  # GOGC goal 20 MiB > 19 MiB
    c.heap_live = 30 * MiB
    c.commit(False)  # sweep floor 31 MiB would raise a GOGC goal, but not this one
    c.triggered = 18 * MiB
    assert c.heap_goal_internal() == (19 * MiB, 0)
    # GOGC regime: the sweep distance floor raises the goal and is the min trigger...
    c = ctl(100, heap_marked=10 * MiB)
    c.heap_live = 25 * MiB
    c.commit(False)
    assert c.sweep_dist_min_trigger == 26 * MiB
    assert c.heap_goal_internal() == (26 * MiB, 26 * MiB)
    assert c.trigger() == (26 * MiB, 26 * MiB)  # min trigger = goal: trigger at the goal
    c.commit(True)
    assert c.heap_goal_internal() == (20 * MiB, 0)
    # ...and a triggered cycle always gets 64 KiB of runway past the trigger point.
    c.triggered = 20 * MiB - 10
    assert c.heap_goal() == 20 * MiB - 10 + 64 * KiB
    c.triggered = 19 * MiB
    assert c.heap_goal() == 20 * MiB  # already far enough


# trigger(): minTrigger = max(minTrigger, heapMarked, heapMarked + (goal−heapMarked)/64*45);
# maxTrigger = heapMarked + (goal−heapMarked)/64*61, or goal − 4 MiB if that is larger;
# trigger = goal − runway (minTrigger if runway > goal), clamped to [min, max].
TRIGGERS = [
    # (name, GOGC, heap_marked, runway, (trigger, goal))
    ("empty heap: 61/64 of 4 MiB", 100, 0, 0, (61 * 65536, 4 * MiB)),
    ("small heap, no runway: 61/64 bound", 100, 1 * MiB, 0, (3 * MiB // 64 * 61 + MiB, 4 * MiB)),
    ("small heap, runway > goal: 45/64 bound", 100, 1 * MiB, 5 * MiB, (3 * MiB // 64 * 45 + MiB, 4 * MiB)),
    ("small heap, runway inside bounds", 100, 1 * MiB, 500 * KiB, (4 * MiB - 500 * KiB, 4 * MiB)),
    ("small heap, runway past 45/64", 100, 1 * MiB, 3 * MiB, (3 * MiB // 64 * 45 + MiB, 4 * MiB)),
    ("big heap, no runway: goal − 4 MiB", 100, 100 * MiB, 0, (196 * MiB, 200 * MiB)),
    ("big heap, runway 10 MiB", 100, 100 * MiB, 10 * MiB, (190 * MiB, 200 * MiB)),
    ("big heap, runway 90 MiB: 45/64", 100, 100 * MiB, 90 * MiB, (100 * MiB // 64 * 45 + 100 * MiB, 200 * MiB)),
    ("GOGC=10: goal − 4 MiB below 61/64", 10, 50 * MiB, 0, (5 * MiB // 64 * 61 + 50 * MiB, 55 * MiB)),
    ("GOGC=0: heap_marked >= goal", 0, 5 * MiB, 0, (5 * MiB, 5 * MiB)),
    # goal − marked = 1000063: (d/64)*61 = 953125, whereas d*61/64 would be 953185.
    ("divides by 64 before multiplying", 10, 10_000_633, 0, (953_125 + 10_000_633, 11_000_696)),
]


@pytest.mark.parametrize("name,gogc,marked,runway,expected", TRIGGERS, ids=[t[0] for t in TRIGGERS])
def test_trigger_bounds(name, gogc, marked, runway, expected):
    c = ctl(gogc, heap_marked=marked)
    c.runway = runway
    assert c.trigger() == expected
    trig = expected[0]
    assert c.should_start_gc(trig)
    assert trig == 0 or not c.should_start_gc(trig - 1)


def test_trigger_with_memory_limit_at_heap_marked():
    # Over the limit: the goal is heap_marked and trigger() returns (goal, goal).
    c = mem_limit_ctl(10 * MiB, 30 * MiB, 0, 5 * MiB, marked=3 * MiB)
    assert c.trigger() == (3 * MiB, 3 * MiB)


# commit(): runway = uint64(consMark * (1−0.25)/0.25 * float64(lastHeapScan+lastStackScan+globalsScan)).
RUNWAYS = [
    # (cons_mark, last_heap_scan, last_stack_scan, globals_scan, runway)
    (0.0, 100 * MiB, 0, 0, 0),
    (0.5, 1 * MiB, 64 * KiB, 32 * KiB, 1_720_320),  # 1.5 * 1146880
    (0.2, 7, 0, 0, 4),  # 0.6000000000000001 * 7 = 4.200000000000001 truncates
    (1.0, 1, 0, 0, 3),
    (1e300, 1 << 40, 0, 0, 1 << 63),  # beyond 2**64: amd64's conversion gives 0x8000000000000000
    (math.inf, 1, 0, 0, 1 << 63),
    (math.nan, 1, 0, 0, 1 << 63),
    (-1.5, 3, 0, 0, 2**64 - 13),  # -13.5 → int64 -13 → uint64 wrap
]


@pytest.mark.parametrize("cons,heap_scan,stack,globals_,runway", RUNWAYS)
def test_runway(cons, heap_scan, stack, globals_, runway):
    c = ctl(100, cons_mark=cons, last_heap_scan=heap_scan, last_stack_scan=stack, globals_scan=globals_)
    assert c.runway == runway


def test_runway_moves_trigger_between_bounds():
    c = ctl(100, heap_marked=100 * MiB, cons_mark=0.5, last_heap_scan=4 * MiB)
    assert c.runway == 6 * MiB  # 0.5*3*4 MiB
    assert c.trigger() == (194 * MiB, 200 * MiB)


def test_set_gc_percent_like_debug():
    c = GCController(100)
    assert c.set_gc_percent(50) == 100
    assert c.heap_minimum == 2 * MiB and c.heap_goal() == 2 * MiB
    assert c.set_gc_percent(-20) == 50  # negative = off, stored as -1
    assert c.gc_percent == -1 and c.gc_percent_heap_goal == NO_GOAL
    assert c.set_gc_percent(200) == -1
    assert c.set_gc_percent((1 << 32) + 150) == 200  # debug.SetGCPercent's int32(percent)
    assert c.gc_percent == 150 and c.heap_minimum == 4 * MiB * 150 // 100
    assert c.set_gc_percent(2**31) == 150  # int32(2**31) is negative: off
    assert c.gc_percent == -1
    with pytest.raises(TypeError):
        c.set_gc_percent(1.5)


def test_set_memory_limit_like_debug():
    c = GCController(100)
    assert c.set_memory_limit(-1) == MAX_INT64  # negative: read only
    assert c.memory_limit == MAX_INT64
    assert c.set_memory_limit(64 * MiB) == MAX_INT64
    assert c.memory_limit_heap_goal() == 64 * MiB - 64 * MiB // 100 * 3 == 65_095_600
    assert c.heap_goal() == 4 * MiB  # the GOGC goal is still the smaller one
    assert c.set_memory_limit(-5) == 64 * MiB
    assert c.set_memory_limit(3 * MiB) == 64 * MiB
    assert c.heap_goal() == 2 * MiB  # 3 MiB − 1 MiB headroom
    assert c.set_memory_limit(0) == 3 * MiB and c.memory_limit == 0
    # An unchanged limit skips the commit (observable through the sweep floor).
    c = GCController(100, 64 * MiB)
    c.heap_live = 10 * MiB
    c.set_memory_limit(64 * MiB, is_sweep_done=False)
    assert c.sweep_dist_min_trigger == 0
    c.set_memory_limit(65 * MiB, is_sweep_done=False)
    assert c.sweep_dist_min_trigger == 11 * MiB
    with pytest.raises(ValueError):
        c.set_memory_limit(2**63)


def test_init_like_go():
    # gcControllerState.init ignores a negative limit, leaving the zero value (0).
    assert GCController(100, -1).memory_limit == 0
    c = GCController.from_env({"GOGC": "off", "GOMEMLIMIT": "1GiB"})
    assert (c.gc_percent, c.memory_limit) == (-1, GiB)
    assert c.heap_goal() == GiB - GiB // 100 * 3
    assert c.triggered == NO_GOAL


def test_end_cycle_cons_mark():
    # endCycle(): currentConsMark = (heapLive−triggered)*(u+idle) / (scanWork*(1−u)), with
    # u = 0.25 + assistTime/(duration*procs), idle = idleMarkTime/(duration*procs);
    # consMark = max(current, last four measurements).
    c = ctl(100, heap_marked=10 * MiB)
    c.heap_live = 12 * MiB
    c.start_cycle(1000, 4)
    assert c.triggered == 12 * MiB
    c.heap_live += 1 * MiB
    c.heap_scan_work = 4 * MiB
    c.end_cycle(1000 + 1_000_000, 4)
    assert c.cons_mark == (MiB * 0.25) / (4 * MiB * 0.75)
    assert c.last_cons_mark == [0.0, 0.0, 0.0, c.cons_mark]
    c.reset_live(11 * MiB)
    c.commit(False)
    assert (c.heap_marked, c.heap_live, c.last_heap_scan, c.triggered) == (11 * MiB, 11 * MiB, 4 * MiB, NO_GOAL)
    assert c.runway == int((c.cons_mark * 0.75 / 0.25) * float(4 * MiB))

    # Assists and idle marking enter the utilisation: 1 ms × 4 procs, 1 ms assist, 2 ms idle.
    c.heap_live = 12 * MiB
    c.start_cycle(0, 4)
    c.heap_live += 2 * MiB
    c.heap_scan_work, c.assist_time, c.idle_mark_time = 8 * MiB, 1_000_000, 2_000_000
    c.end_cycle(1_000_000, 4)
    u = 0.25 + 1_000_000 / 4_000_000
    cur = (float(2 * MiB) * (u + 0.5)) / (float(8 * MiB) * (1 - u))
    assert c.last_cons_mark[-1] == cur and c.cons_mark == max(cur, 1 / 12)


def test_cons_mark_is_max_of_last_four():
    c = GCController(100)
    c.last_cons_mark = [0.5, 0.1, 0.2, 0.3]
    c.start_cycle(0, 1)
    c.heap_live += 3
    c.heap_scan_work = 4
    c.end_cycle(0, 1)  # current = 3*0.25/(4*0.75) = 0.25, but 0.5 is in the window
    assert c.last_cons_mark == [0.1, 0.2, 0.3, 0.25] and c.cons_mark == 0.5
    c.reset_live(0)
    for _ in range(4):  # four more 0.25s push the 0.5 out
        c.start_cycle(0, 1)
        c.heap_live += 3
        c.heap_scan_work = 4
        c.end_cycle(0, 1)
        c.reset_live(0)
    assert c.last_cons_mark == [0.25] * 4 and c.cons_mark == 0.25
    # No allocation during the mark (stop-the-world): no measurement, nothing moves.
    c.start_cycle(0, 1)
    c.heap_scan_work = 4
    c.end_cycle(0, 1)
    assert c.last_cons_mark == [0.25] * 4 and c.cons_mark == 0.25


def test_stw_cycle_keeps_cons_mark_and_trigger_at_upper_bound():
    c = GCController(100)
    c.heap_live = 50 * MiB
    assert c.should_start_gc()
    c.stw_cycle(40 * MiB, heap_scan_work=30 * MiB, procs=8)
    assert c.cons_mark == 0.0 and c.runway == 0  # nothing allocated while marking
    assert (c.heap_marked, c.last_heap_scan) == (40 * MiB, 30 * MiB)
    # Runway 0: the trigger is the upper bound, 61/64 of the way (40 MiB/64*61 + 40 MiB),
    # which beats goal − 4 MiB = 76 MiB at this size.
    assert c.trigger() == (81_920_000, 80 * MiB)
    assert not c.should_start_gc() and c.should_start_gc(81_920_000)
    c.heap_marked = c.heap_live = 400 * MiB
    c.commit()
    assert c.trigger() == (796 * MiB, 800 * MiB)  # bigger heaps: goal − 4 MiB


def test_should_start_gc_not_during_a_cycle():
    c = GCController(100)
    c.heap_live = 10 * MiB
    c.start_cycle(0, 4)
    assert not c.should_start_gc()
    c.end_cycle(0, 4)
    c.reset_live(1 * MiB)
    c.commit()
    assert not c.should_start_gc() and c.should_start_gc(4 * MiB)


def test_update_outside_and_during_cycle():
    c = GCController(100)
    c.update(1000, 600)
    assert (c.heap_live, c.heap_scan) == (1000, 600)
    c.start_cycle(0, 8)
    awpb = c.assist_work_per_byte
    c.heap_scan_work = 10**6
    c.update(5 * MiB, 600)
    assert c.heap_scan == 600  # fixed during a cycle
    assert c.assist_work_per_byte != awpb  # revised instead


def test_start_cycle_worker_plan():
    # startCycle(): dedicated = int64(procs*0.25 + 0.5); fractional worker if rounding
    # misses 25% by more than 30% (GOMAXPROCS <= 3 or 6).
    for procs, dedicated, frac in [(1, 0, 0.25), (2, 0, 0.25), (3, 0, 0.25), (4, 1, 0.0), (5, 1, 0.0),
                                   (6, 1, (1.5 - 1) / 6), (8, 2, 0.0), (64, 16, 0.0)]:
        c = GCController(100)
        c.start_cycle(0, procs)
        assert (c.dedicated_mark_workers_needed, c.fractional_utilization_goal) == (dedicated, frac), procs
        assert c.max_idle_mark_workers == procs - dedicated
        c.reset_live(0)
        c.start_cycle(0, procs, periodic=True)
        assert c.max_idle_mark_workers == (0 if dedicated else 1)


# readGOGC: "off" → -1, ParseInt(s, 10, 32) → value, else 100.
GOGC_CASES = [
    (None, 100), ("", 100), ("off", -1), ("100", 100), ("0", 0), ("50", 50), ("-1", -1), ("-5", -5),
    ("+50", 50), ("2147483647", 2147483647), ("-2147483648", -2147483648), ("2147483648", 100),
    ("-2147483649", 100), ("OFF", 100), ("Off", 100), (" 100", 100), ("100 ", 100), ("1_000", 100),
    ("0x10", 100), ("1e3", 100), ("50%", 100), ("+", 100), ("-", 100), ("007", 7), ("\u0663", 100),
]


@pytest.mark.parametrize("value,expected", GOGC_CASES)
def test_read_gogc(value, expected):
    env = {} if value is None else {"GOGC": value}
    assert read_gogc(env) == expected


# readGOMEMLIMIT: ""/"off" → MaxInt64; parseByteCount (string.go) else throw.
GOMEMLIMIT_OK = [
    (None, MAX_INT64), ("", MAX_INT64), ("off", MAX_INT64), ("0", 0), ("1", 1), ("123B", 123),
    ("1KiB", KiB), ("1MiB", MiB), ("1GiB", GiB), ("1TiB", TiB), ("512MiB", 512 * MiB),
    ("+5", 5), ("-0", 0), ("+1KiB", KiB), ("-0KiB", 0), ("0B", 0), ("007MiB", 7 * MiB),
    ("9223372036854775807", MAX_INT64), ("9223372036854775807B", MAX_INT64),
    ("8388607TiB", 8388607 * TiB), ("8589934591GiB", 8589934591 * GiB),
]
GOMEMLIMIT_BAD = [
    "-1", "-1KiB", "9223372036854775808", "99999999999999999999", "8388608TiB", "8589934592GiB",
    "18014398509481984KiB", "1KB", "1kiB", "1Kib", "KiB", "iB", "B", "1iB", "1 MiB", "1.5GiB",
    "1PiB", "1EiB", "0x10", "1_000", "OFF", "Off", "1e9", "\u0663MiB", "MiB", "+", "+B", "1b", " 1",
]


@pytest.mark.parametrize("value,expected", GOMEMLIMIT_OK)
def test_read_gomemlimit(value, expected):
    env = {} if value is None else {"GOMEMLIMIT": value}
    assert read_gomemlimit(env) == expected


@pytest.mark.parametrize("value", GOMEMLIMIT_BAD)
def test_read_gomemlimit_malformed(value):
    assert parse_byte_count(value) is None
    with pytest.raises(MalformedMemoryLimitError) as ei:
        read_gomemlimit({"GOMEMLIMIT": value})
    assert isinstance(ei.value, ValueError) and isinstance(ei.value, HeapError)
    assert ei.value.value == value and repr(value) in str(ei.value) and "malformed GOMEMLIMIT" in str(ei.value)


def test_reads_os_environ_by_default(monkeypatch):
    monkeypatch.setenv("GOGC", "off")
    monkeypatch.setenv("GOMEMLIMIT", "3GiB")
    assert (read_gogc(), read_gomemlimit()) == (-1, 3 * GiB)
    monkeypatch.delenv("GOGC")
    monkeypatch.delenv("GOMEMLIMIT")
    assert (read_gogc(), read_gomemlimit()) == (100, MAX_INT64)


# ---------------------------------------------------------------------------------------
# Layer 2: mgcpacer_test.go TestGcPacer, ported (simulation, streams, checks).


class Stream:
    """mgcpacer_test.go's float64Stream: an infinite stateful stream of floats."""

    def __init__(self, f: Callable[[], float]):
        self.f = f

    def __call__(self) -> float:
        return self.f()

    def delay(self, cycles):
        left = [cycles]

        def g():
            if left[0] > 0:
                left[0] -= 1
                return 0.0
            return self.f()

        return Stream(g)

    def offset(self, amt):
        return Stream(lambda: self.f() + amt)

    def sum(self, *fs):
        def g():
            s = self.f()
            for x in fs:
                s += x()
            return s

        return Stream(g)

    def quantize(self, mult):
        def g():
            r = self.f() / mult
            return (math.ceil(r) if r < 0 else math.floor(r)) * mult

        return Stream(g)

    def min(self, lo):
        return Stream(lambda: max(lo, self.f()))

    def limit(self, lo, hi):
        return Stream(lambda: min(max(self.f(), lo), hi))


def constant(c):
    return Stream(lambda: c)


def unit(amp):
    dropped = [False]

    def g():
        if dropped[0]:
            return 0.0
        dropped[0] = True
        return amp

    return Stream(g)


def oscillate(amp, phase, period):
    cyc = [0]

    def g():
        p = cyc[0] / period * 2 * math.pi + phase
        cyc[0] += 1
        if cyc[0] == period:
            cyc[0] = 0
        return math.sin(p) * amp

    return Stream(g)


def ramp(height, length):
    cyc = [0]

    def g():
        h = height * cyc[0] / length
        if cyc[0] < length:
            cyc[0] += 1
        return h

    return Stream(g)


def rand_stream(amp, seed):
    # Go's math/rand sequence for this seed is not reproduced; Python's RNG stands in
    # (the Go comparison replays the exact inputs the Python run used).
    r = random.Random(seed)
    return Stream(lambda: ((r.random() - 0.5) * 2) * amp)


def headroom_goal(goal):  # mgcpacer_test.go applyMemoryLimitHeapGoalHeadroom
    h = max(goal // 100 * MEMORY_LIMIT_HEAP_GOAL_HEADROOM_PERCENT, MEMORY_LIMIT_MIN_HEAP_GOAL_HEADROOM)
    return h if goal < h or goal - h < h else goal - h


@dataclass
class CycleResult:
    cycle: int
    heap_live: int  # heapMarked at the cycle's start
    heap_trigger: int
    heap_goal: int
    heap_peak: int
    heap_scannable: int
    gc_utilization: float

    def goal_ratio(self):
        return _fdiv(float(self.heap_peak), float(self.heap_goal))

    def runway(self):
        return float(_u64(self.heap_goal - self.heap_trigger))

    def trigger_ratio(self):
        return _fdiv(float(_u64(self.heap_trigger - self.heap_live)), float(_u64(self.heap_goal - self.heap_live)))


class Checks:
    def __init__(self):
        self.errors: list[str] = []
        self.n = 0

    def in_range(self, name, a, lo, hi):  # assertInRange: NaN passes, as in Go
        if a < lo or a > hi:
            self.errors.append(f"cycle {self.n}: {name} not in range ({lo}, {hi}): {a}")

    def in_eps(self, name, a, b, eps):
        self.in_range(name, a, b - eps, b + eps)

    def error(self, msg):
        self.errors.append(f"cycle {self.n}: {msg}")


G = GC_GOAL_UTILIZATION
LIMIT_GOAL = headroom_goal(512 << 20)


def chk_steady(t, c):
    n = len(c)
    if n >= 25:
        t.in_eps("GC utilization", c[n - 1].gc_utilization, G, 0.005)
        t.in_eps("GC utilization", c[n - 1].gc_utilization, c[n - 2].gc_utilization, 0.005)
        t.in_range("goal ratio", c[n - 1].goal_ratio(), 0.95, 1.05)


def chk_step(t, c):
    n = len(c)
    if 25 <= n < 50 or n >= 75:
        t.in_eps("GC utilization", c[n - 1].gc_utilization, c[n - 2].gc_utilization, 0.005)
        t.in_range("goal ratio", c[n - 1].goal_ratio(), 0.95, 1.05)


def chk_high_gogc(t, c):
    n = len(c)
    if n > 12:
        t.in_range("goal ratio", c[n - 1].goal_ratio(), 0.90, 15 if n == 26 else 1.05)
        t.in_eps("GC utilization", c[n - 1].gc_utilization, G, G + 0.03)
        t.in_eps("GC utilization", c[n - 1].gc_utilization, c[n - 2].gc_utilization, 0.03)


def chk_osc(t, c):
    n = len(c)
    if n > 12:
        t.in_range("goal ratio", c[n - 1].goal_ratio(), 0.95, 1.05)
        t.in_range("GC utilization", c[n - 1].gc_utilization, 0.25, 0.3)


def chk_jitter(t, c):
    n = len(c)
    if n > 12:
        t.in_range("goal ratio", c[n - 1].goal_ratio(), 0.95, 1.025)
        t.in_range("GC utilization", c[n - 1].gc_utilization, 0.25, 0.275)


def chk_heavy_jitter(t, c):
    n = len(c)
    if n > 13:
        t.in_range("goal ratio", c[n - 1].goal_ratio(), 0.95, 1.05)
        t.in_eps("GC utilization", c[n - 1].gc_utilization, c[n - 2].gc_utilization, 0.05)
        t.in_eps("GC utilization", c[n - 1].gc_utilization, c[11].gc_utilization, 0.05)


def _settled(t, c):
    n = len(c)
    t.in_eps("GC utilization", c[n - 1].gc_utilization, G, 0.005)
    t.in_eps("GC utilization", c[n - 1].gc_utilization, c[n - 2].gc_utilization, 0.05)
    t.in_eps("GC utilization", c[n - 1].gc_utilization, c[11].gc_utilization, 0.05)


def chk_slow_alloc(after):
    def chk(t, c):
        n = len(c)
        if n > after:
            t.in_range("goal ratio", c[n - 1].goal_ratio(), 0.925, 1.025)
            t.in_range("trigger ratio", c[n - 1].trigger_ratio(), 0.925, 0.975)
        if n > 25:
            _settled(t, c)

    return chk


def chk_large_heap(t, c):
    n = len(c)
    if n > 13:
        t.in_range("goal ratio", c[n - 1].goal_ratio(), 0.95, 1.05)
        t.in_range("runway", c[n - 1].runway(), DEFAULT_HEAP_MINIMUM - (64 << 10), DEFAULT_HEAP_MINIMUM + (64 << 10))
    if n > 25:
        _settled(t, c)


def chk_steady_limit(t, c):
    if c[-1].heap_peak >= LIMIT_GOAL:
        t.error(f"peak heap size reaches heap limit: {c[-1].heap_peak}")
    chk_steady(t, c)


def chk_steady_limit_nogc(t, c):
    if c[-1].heap_goal != LIMIT_GOAL:
        t.error(f"heap goal is not the heap limit: {c[-1].heap_goal}")
    chk_steady(t, c)


def _exceed(t, c):
    n = len(c)
    if n > 12 and c[-1].heap_goal != c[-1].heap_live:
        t.error(f"heap goal is not equal to live heap: {c[-1].heap_goal} != {c[-1].heap_live}")
    if n >= 25:
        t.in_eps("GC utilization", c[n - 1].gc_utilization, 1.0, 0.005)
        t.in_eps("GC utilization", c[n - 1].gc_utilization, c[n - 2].gc_utilization, 0.005)


def chk_exceed_nogc(t, c):
    if len(c) < 10 and c[-1].heap_goal != LIMIT_GOAL:
        t.error(f"heap goal is not the heap limit: {c[-1].heap_goal}")
    _exceed(t, c)


def chk_maintain(t, c):
    if len(c) > 12 and c[-1].heap_goal != LIMIT_GOAL:
        t.error(f"heap goal is not the heap limit: {c[-1].heap_goal}")
    chk_steady(t, c)


@dataclass
class ExecTest:
    name: str
    gc_percent: int
    memory_limit: int
    globals_bytes: int
    n_cores: int
    alloc_rate: Stream
    scan_rate: Stream
    growth_rate: Stream
    scannable_frac: Stream
    stack_bytes: Stream
    length: int
    checker: Callable

    def next(self):  # gcExecTest.next, minRate = 0.0001
        return (
            max(0.0001, self.alloc_rate()),
            max(0.0001, self.scan_rate()),
            max(0.0001, self.growth_rate()),
            min(max(self.scannable_frac(), 0.0), 1.0),
            _u64(_f2i64(max(0.0, self.stack_bytes.quantize(2048)()))),
        )


def exec_tests() -> list[ExecTest]:
    """TestGcPacer's table (fresh streams each call). ``rand_stream`` marks the three
    cases that use math/rand in Go."""
    mx = MAX_INT64

    def std(name, alloc, growth, checker, *, gogc=100, limit=mx, globals_=32 << 10, stack=None, frac=None,
            scan=1024.0, length=50):
        return ExecTest(name, gogc, limit, globals_, 8, alloc, constant(scan), growth,
                        frac or constant(1.0), stack or constant(8192), length, checker)

    g2 = lambda: constant(2.0).sum(ramp(-1.0, 12))  # noqa: E731
    return [
        std("Steady", constant(33.0), g2(), chk_steady),
        std("SteadyBigStacks", constant(132.0), g2(), chk_steady, stack=constant(2048).sum(ramp(128 << 20, 8))),
        std("SteadyBigGlobals", constant(132.0), g2(), chk_steady, globals_=128 << 20),
        std("StepAlloc", constant(33.0).sum(ramp(66.0, 1).delay(50)), g2(), chk_step, length=100),
        std("HeavyStepAlloc", constant(33).sum(ramp(330, 1).delay(50)), g2(), chk_step, length=100),
        std("StepScannableFrac", constant(128.0), g2(), chk_step, length=100,
            frac=constant(0.2).sum(unit(0.5).delay(50))),
        std("HighGOGC", rand_stream(7, 0x53).offset(165),
            constant(2.0).sum(ramp(-1.0, 12), rand_stream(0.01, 0x1), unit(14).delay(25)), chk_high_gogc,
            gogc=1500),
        std("OscAlloc", oscillate(13, 0, 8).offset(67), g2(), chk_osc),
        std("JitterAlloc", rand_stream(13, 0xF).offset(132), constant(2.0).sum(ramp(-1.0, 12), rand_stream(0.01, 0xE)),
            chk_jitter),
        std("HeavyJitterAlloc", rand_stream(33.0, 0x0).offset(330),
            constant(2.0).sum(ramp(-1.0, 12), rand_stream(0.01, 0x152)), chk_heavy_jitter),
        std("SmallHeapSlowAlloc", constant(1.0), constant(2.0).sum(ramp(-1.0, 3)), chk_slow_alloc(4),
            scan=2048.0, frac=constant(0.01)),
        std("MediumHeapSlowAlloc", constant(1.0), constant(2.0).sum(ramp(-1.0, 8)), chk_slow_alloc(9),
            scan=2048.0, frac=constant(0.01)),
        std("LargeHeapSlowAlloc", constant(1.0), constant(4.0).sum(ramp(-3.0, 12)), chk_large_heap,
            scan=2048.0, frac=constant(0.01)),
        std("SteadyMemoryLimit", constant(33.0), g2(), chk_steady_limit, limit=512 << 20),
        std("SteadyMemoryLimitNoGCPercent", constant(33.0), g2(), chk_steady_limit_nogc, gogc=-1, limit=512 << 20),
        std("ExceedMemoryLimit", constant(33.0), constant(3.5).sum(ramp(-2.5, 12)), _exceed, limit=512 << 20),
        std("ExceedMemoryLimitNoGCPercent", constant(33.0), constant(3.5).sum(ramp(-2.5, 12)), chk_exceed_nogc,
            gogc=-1, limit=512 << 20),
        std("MaintainMemoryLimit", constant(33.0), constant(3.0).sum(ramp(-2.0, 12)), chk_maintain, limit=512 << 20),
        std("MaintainMemoryLimitNoGCPercent", constant(33.0), constant(3.0).sum(ramp(-2.0, 12)),
            chk_steady_limit_nogc, gogc=-1, limit=512 << 20),
    ]


RANDOM_STREAM_CASES = {"HighGOGC", "JitterAlloc", "HeavyJitterAlloc"}


class Hooks:
    """export_test.go's GCController test hooks on a heaplab controller; every call is
    also recorded as a script line for the Go replay (followed by a query)."""

    def __init__(self, gc_percent, memory_limit, script: list[str] | None):
        self.c = GCController(gc_percent, memory_limit)
        self.script = script
        self._rec(f"xnew {gc_percent} {memory_limit}")

    def _rec(self, line):
        if self.script is not None:
            self.script.append(line)

    def start_cycle(self, stack_size, globals_size, scannable_frac, procs):
        x_start(self.c, stack_size, globals_size, scannable_frac, procs)
        self._rec(f"xstart {stack_size} {globals_size} {bits(scannable_frac):#x} {procs}")
        self._rec("xq")

    def revise(self, heap_live, heap_scan, heap_work, stack_work, globals_work):
        x_revise(self.c, heap_live, heap_scan, heap_work, stack_work, globals_work)
        self._rec(f"xrevise {heap_live} {heap_scan} {heap_work} {stack_work} {globals_work}")
        self._rec("xq")

    def end_cycle(self, bytes_marked, assist_time, elapsed, procs):
        x_end(self.c, bytes_marked, assist_time, elapsed, procs)
        self._rec(f"xend {bytes_marked} {assist_time} {elapsed} {procs}")
        self._rec("xq")


def x_start(c, stack_size, globals_size, frac, procs):  # (*GCController).StartCycle
    trig, _ = c.trigger()
    if c.heap_marked > trig:
        trig = c.heap_marked
    c.max_stack_scan = stack_size
    c.globals_scan = globals_size
    c.heap_live = trig
    c.heap_scan = _u64(c.heap_scan + _f2i64(float(trig - c.heap_marked) * frac))
    c.start_cycle(0, procs)


def x_revise(c, dl, ds, dhw, dsw, dgw):  # (*GCController).Revise
    c.heap_live = _u64(c.heap_live + dl)
    c.heap_scan = _u64(c.heap_scan + ds)
    c.heap_scan_work = _i64(c.heap_scan_work + dhw)
    c.stack_scan_work = _i64(c.stack_scan_work + dsw)
    c.globals_scan_work = _i64(c.globals_scan_work + dgw)
    c.revise()


def x_end(c, bytes_marked, assist_time, elapsed, procs):  # (*GCController).EndCycle
    c.assist_time = assist_time
    c.end_cycle(elapsed, procs)
    c.reset_live(bytes_marked)
    c.commit(False)


def x_query(c) -> dict:
    return {"op": "xq", "goal": c.heap_goal(), "live": c.heap_live, "marked": c.heap_marked,
            "triggered": c.triggered, "awpb": bits(c.assist_work_per_byte)}


def run_exec_test(e: ExecTest, script: list[str] | None = None) -> tuple[list[CycleResult], list[str]]:
    """TestGcPacer's loop for one case: returns the per-cycle results and the checker's
    complaints. Integer/float conversions follow the Go test's (int64(float) truncation)."""
    initial_heap_bytes = 256 << 10
    revise_period = 500_000  # 500 µs in ns
    rate_conv = 1024 * float(revise_period) / float(1_000_000)
    h = Hooks(e.gc_percent, e.memory_limit, script)
    c = h.c
    black_last = 0
    results: list[CycleResult] = []
    checks = Checks()
    for i in range(e.length):
        alloc_rate, scan_rate, growth_rate, frac, stack_bytes = e.next()
        h.start_cycle(stack_bytes, e.globals_bytes, frac, e.n_cores)
        if i == 0:
            next_marked = initial_heap_bytes
        else:
            next_marked = _f2i64(float(_i64(c.heap_marked) - black_last) * growth_rate)
        left = [_i64(e.globals_bytes), _i64(stack_bytes), _f2i64(float(next_marked) * frac)]

        def do_work(work):
            deltas = [0, 0, 0]
            for k in range(3):  # globals, then stacks, then heap
                if left[k] == 0:
                    continue
                if left[k] > work:
                    deltas[k] += work
                    left[k] -= work
                    break
                deltas[k] += left[k]
                work -= left[k]
                left[k] = 0
            return deltas

        gc_duration = assist_time = black = 0
        while sum(left) > 0:
            ratio = c.assist_work_per_byte
            util = _fdiv(ratio * alloc_rate, ratio * alloc_rate + scan_rate)
            if util < GC_BACKGROUND_UTILIZATION:
                util = GC_BACKGROUND_UTILIZATION
            scanned = _f2i64(scan_rate * rate_conv * float(e.n_cores) * util)
            allocated = _f2i64(alloc_rate * rate_conv * float(e.n_cores) * (1 - util))
            g_done, s_done, h_done = do_work(scanned)
            elapsed, actual_alloc = revise_period, allocated
            actual = g_done + s_done + h_done
            if actual < scanned:
                rate = scan_rate * rate_conv * float(e.n_cores) * util
                elapsed = _f2i64(float(actual) * float(revise_period) / rate)
                actual_alloc = _f2i64(alloc_rate * rate_conv * float(elapsed) / float(revise_period)
                                      * float(e.n_cores) * (1 - util))
            h.revise(actual_alloc, _f2i64(float(actual_alloc) * frac), h_done, s_done, g_done)
            assist_time += _f2i64(float(elapsed) * float(e.n_cores) * (util - GC_BACKGROUND_UTILIZATION))
            gc_duration += elapsed
            black += actual_alloc

        r = CycleResult(
            cycle=i + 1, heap_live=c.heap_marked, heap_trigger=c.triggered, heap_goal=c.heap_goal(),
            heap_peak=c.heap_live,
            heap_scannable=_f2i64(float(_i64(c.heap_marked) - black_last) * frac),
            gc_utilization=_fdiv(float(assist_time), float(gc_duration) * float(e.n_cores)) + GC_BACKGROUND_UTILIZATION,
        )
        results.append(r)
        checks.n = r.cycle
        # gcExecTest.check's general checks, then the case's own.
        if len(results) > 1 and results[-1].cycle != results[-2].cycle + 1:
            checks.error("cycle numbers out of order")
        if r.gc_utilization < 0 or r.gc_utilization > 1:
            checks.error("GC utilization not within acceptable bounds")
            break
        if r.heap_scannable < 0:
            checks.error("heapScannable is negative")
            break
        e.checker(checks, results)
        h.end_cycle(_u64(next_marked + black), assist_time, gc_duration, e.n_cores)
        black_last = black
    return results, checks.errors


DETERMINISTIC = [e.name for e in exec_tests() if e.name not in RANDOM_STREAM_CASES]


@pytest.mark.parametrize("name", DETERMINISTIC)
def test_gc_pacer_simulation(name):
    """mgcpacer_test.go TestGcPacer/<name>: the same simulation and checks."""
    e = next(x for x in exec_tests() if x.name == name)
    results, errors = run_exec_test(e)
    assert len(results) == e.length
    assert errors == []


# ---------------------------------------------------------------------------------------
# Layer 3: replay on Go's own gcControllerState.

_GO_EXPORT = r"""
package runtime

// HeaplabGC: a test-only gcControllerState with every input settable, so heaplab's
// pacer can be compared with Go's on arbitrary states.
type HeaplabGC struct {
	c       gcControllerState
	inCycle bool
}

func NewHeaplabGC(gcPercent int32, memoryLimit int64) *HeaplabGC {
	h := Escape(new(HeaplabGC))
	h.c.test = true
	h.c.init(gcPercent, memoryLimit)
	return h
}

func (h *HeaplabGC) Set(name string, v uint64) bool {
	c := &h.c
	switch name {
	case "heapMarked":
		c.heapMarked = v
	case "heapLive":
		c.heapLive.Store(v)
	case "heapScan":
		c.heapScan.Store(v)
	case "lastHeapScan":
		c.lastHeapScan = v
	case "lastStackScan":
		c.lastStackScan.Store(v)
	case "maxStackScan":
		c.maxStackScan.Store(v)
	case "globalsScan":
		c.globalsScan.Store(v)
	case "triggered":
		c.triggered = v
	case "runway":
		c.runway.Store(v)
	case "consMark":
		c.consMark = float64frombits(v)
	case "lastConsMark0", "lastConsMark1", "lastConsMark2", "lastConsMark3":
		c.lastConsMark[name[len(name)-1]-'0'] = float64frombits(v)
	case "heapFree":
		c.heapFree = sysMemStat(v)
	case "totalAlloc":
		c.totalAlloc.Store(v)
	case "totalFree":
		c.totalFree.Store(v)
	case "mappedReady":
		c.mappedReady.Store(v)
	case "heapScanWork":
		c.heapScanWork.Store(int64(v))
	case "stackScanWork":
		c.stackScanWork.Store(int64(v))
	case "globalsScanWork":
		c.globalsScanWork.Store(int64(v))
	case "assistTime":
		c.assistTime.Store(int64(v))
	case "idleMarkTime":
		c.idleMarkTime.Store(int64(v))
	case "markStartTime":
		c.markStartTime = int64(v)
	default:
		return false
	}
	return true
}

func (h *HeaplabGC) Add(name string, d int64) bool {
	c := &h.c
	switch name {
	case "heapLive":
		c.heapLive.Add(d)
	case "heapScan":
		c.heapScan.Add(d)
	case "heapScanWork":
		c.heapScanWork.Add(d)
	case "stackScanWork":
		c.stackScanWork.Add(d)
	case "globalsScanWork":
		c.globalsScanWork.Add(d)
	case "assistTime":
		c.assistTime.Add(d)
	case "idleMarkTime":
		c.idleMarkTime.Add(d)
	default:
		return false
	}
	return true
}

func (h *HeaplabGC) Commit(sweepDone bool) { h.c.commit(sweepDone) }

// The runtime/debug paths: setGCPercent / setMemoryLimit, then what gcControllerCommit
// does to this controller (commit; revise while a cycle is running).
func (h *HeaplabGC) SetGCPercent(in int32, sweepDone bool) int32 {
	out := h.c.setGCPercent(in)
	h.c.commit(sweepDone)
	if h.inCycle {
		h.c.revise()
	}
	return out
}

func (h *HeaplabGC) SetMemoryLimit(in int64, sweepDone bool) int64 {
	out := h.c.setMemoryLimit(in)
	if in < 0 || out == in {
		return out
	}
	h.c.commit(sweepDone)
	if h.inCycle {
		h.c.revise()
	}
	return out
}

func (h *HeaplabGC) StartCycle(markStartTime int64, procs int, periodic bool) {
	kind := gcTriggerHeap
	if periodic {
		kind = gcTriggerTime
	}
	h.c.startCycle(markStartTime, procs, gcTrigger{kind: kind})
	h.inCycle = true
}

func (h *HeaplabGC) Revise()                       { h.c.revise() }
func (h *HeaplabGC) EndCycle(now int64, procs int) { h.c.endCycle(now, procs) }
func (h *HeaplabGC) ResetLive(bytesMarked uint64) {
	h.c.resetLive(bytesMarked)
	h.inCycle = false
}

func (h *HeaplabGC) State() map[string]any {
	c := &h.c
	goal, minTrigger := c.heapGoalInternal()
	trigger, tgoal := c.trigger()
	var lcm [4]uint64
	for i, v := range c.lastConsMark {
		lcm[i] = float64bits(v)
	}
	return map[string]any{
		"goal":                  goal,
		"min_trigger":           minTrigger,
		"heap_goal":             c.heapGoal(),
		"mem_limit_goal":        c.memoryLimitHeapGoal(),
		"trigger":               trigger,
		"trigger_goal":          tgoal,
		"gc_percent":            c.gcPercent.Load(),
		"memory_limit":          c.memoryLimit.Load(),
		"heap_minimum":          c.heapMinimum,
		"gc_percent_heap_goal":  c.gcPercentHeapGoal.Load(),
		"sweep_dist_min":        c.sweepDistMinTrigger.Load(),
		"runway":                c.runway.Load(),
		"triggered":             c.triggered,
		"heap_marked":           c.heapMarked,
		"heap_live":             c.heapLive.Load(),
		"heap_scan":             c.heapScan.Load(),
		"last_heap_scan":        c.lastHeapScan,
		"last_stack_scan":       c.lastStackScan.Load(),
		"cons_mark":             float64bits(c.consMark),
		"last_cons_mark":        lcm,
		"assist_work_per_byte":  float64bits(c.assistWorkPerByte.Load()),
		"assist_bytes_per_work": float64bits(c.assistBytesPerWork.Load()),
		"dedicated":             c.dedicatedMarkWorkersNeeded.Load(),
		"fractional":            float64bits(c.fractionalUtilizationGoal),
		"idle_max":              int32(c.idleMarkWorkers.Load() >> 32),
	}
}

// HeaplabReadGOGC runs readGOGC with only GOGC=val in the environment (or nothing).
func HeaplabReadGOGC(val string, set bool) int32 {
	old := envs
	defer func() { envs = old }()
	envs = []string{}
	if set {
		envs = []string{"GOGC=" + val}
	}
	return readGOGC()
}

// HeaplabReadGOMEMLIMIT runs readGOMEMLIMIT likewise; ok is false where it would throw
// (decided by parseByteCount first, since a throw cannot be recovered).
func HeaplabReadGOMEMLIMIT(val string, set bool) (int64, bool) {
	if set && val != "" && val != "off" {
		if _, ok := parseByteCount(val); !ok {
			return 0, false
		}
	}
	old := envs
	defer func() { envs = old }()
	envs = []string{}
	if set {
		envs = []string{"GOMEMLIMIT=" + val}
	}
	return readGOMEMLIMIT(), true
}
"""

_GO_TEST = r"""
package runtime_test

import (
	"bufio"
	"encoding/hex"
	"encoding/json"
	"math"
	"os"
	. "runtime"
	"strconv"
	"strings"
	"testing"
)

// TestHeaplabPacerReplay runs the script in HEAPLAB_PACER_OPS on Go's gcControllerState
// and writes one JSON object per query to HEAPLAB_PACER_OUT.
func TestHeaplabPacerReplay(t *testing.T) {
	in, err := os.Open(os.Getenv("HEAPLAB_PACER_OPS"))
	if err != nil {
		t.Skip("no HEAPLAB_PACER_OPS")
	}
	defer in.Close()
	outF, err := os.Create(os.Getenv("HEAPLAB_PACER_OUT"))
	if err != nil {
		t.Fatal(err)
	}
	defer outF.Close()
	out := bufio.NewWriter(outF)
	defer out.Flush()
	enc := json.NewEncoder(out)
	emit := func(v map[string]any) {
		if err := enc.Encode(v); err != nil {
			t.Fatal(err)
		}
	}
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 1<<20), 1<<26)
	var h *HeaplabGC
	var g *GCController
	line := 0
	u := func(s string) uint64 {
		v, err := strconv.ParseUint(s, 0, 64)
		if err != nil {
			t.Fatalf("line %d: %v", line, err)
		}
		return v
	}
	i := func(s string) int64 {
		v, err := strconv.ParseInt(s, 0, 64)
		if err != nil {
			t.Fatalf("line %d: %v", line, err)
		}
		return v
	}
	str := func(s string) string {
		b, err := hex.DecodeString(strings.TrimPrefix(s, "x"))
		if err != nil {
			t.Fatalf("line %d: %v", line, err)
		}
		return string(b)
	}
	for sc.Scan() {
		line++
		f := strings.Fields(sc.Text())
		if len(f) == 0 {
			continue
		}
		switch f[0] {
		case "new":
			h = NewHeaplabGC(int32(i(f[1])), i(f[2]))
		case "set":
			if !h.Set(f[1], u(f[2])) {
				t.Fatalf("line %d: unknown field %q", line, f[1])
			}
		case "add":
			if !h.Add(f[1], i(f[2])) {
				t.Fatalf("line %d: unknown field %q", line, f[1])
			}
		case "commit":
			h.Commit(f[1] == "1")
		case "gcpercent":
			emit(map[string]any{"op": "gcpercent", "old": h.SetGCPercent(int32(i(f[1])), f[2] == "1")})
		case "memlimit":
			emit(map[string]any{"op": "memlimit", "old": h.SetMemoryLimit(i(f[1]), f[2] == "1")})
		case "start":
			h.StartCycle(i(f[1]), int(i(f[2])), f[3] == "1")
		case "revise":
			h.Revise()
		case "end":
			h.EndCycle(i(f[1]), int(i(f[2])))
		case "reset":
			h.ResetLive(u(f[1]))
		case "q":
			s := h.State()
			s["op"] = "q"
			emit(s)
		case "gogc":
			val := ""
			if f[1] == "1" {
				val = str(f[2])
			}
			emit(map[string]any{"op": "gogc", "v": HeaplabReadGOGC(val, f[1] == "1")})
		case "gomemlimit":
			val := ""
			if f[1] == "1" {
				val = str(f[2])
			}
			v, ok := HeaplabReadGOMEMLIMIT(val, f[1] == "1")
			emit(map[string]any{"op": "gomemlimit", "v": v, "ok": ok})
		// The runtime's own test hooks (export_test.go), as TestGcPacer drives them.
		case "xnew":
			g = NewGCController(int(i(f[1])), i(f[2]))
		case "xstart":
			g.StartCycle(u(f[1]), u(f[2]), math.Float64frombits(u(f[3])), int(i(f[4])))
		case "xrevise":
			g.Revise(GCControllerReviseDelta{
				HeapLive: i(f[1]), HeapScan: i(f[2]),
				HeapScanWork: i(f[3]), StackScanWork: i(f[4]), GlobalsScanWork: i(f[5]),
			})
		case "xend":
			g.EndCycle(u(f[1]), i(f[2]), i(f[3]), int(i(f[4])))
		case "xq":
			emit(map[string]any{
				"op": "xq", "goal": g.HeapGoal(), "live": g.HeapLive(), "marked": g.HeapMarked(),
				"triggered": g.Triggered(), "awpb": math.Float64bits(g.AssistWorkPerByte()),
			})
		default:
			t.Fatalf("line %d: unknown op %q", line, f[0])
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
}
"""

# Script field names (Go's) → (attribute, kind) on GCController.
_FIELDS = {
    "heapMarked": ("heap_marked", "u"), "heapLive": ("heap_live", "u"), "heapScan": ("heap_scan", "u"),
    "lastHeapScan": ("last_heap_scan", "u"), "lastStackScan": ("last_stack_scan", "u"),
    "maxStackScan": ("max_stack_scan", "u"), "globalsScan": ("globals_scan", "u"),
    "triggered": ("triggered", "u"), "runway": ("runway", "u"), "consMark": ("cons_mark", "f"),
    "heapFree": ("heap_free", "u"), "totalAlloc": ("total_alloc", "u"), "totalFree": ("total_free", "u"),
    "mappedReady": ("mapped_ready", "u"), "heapScanWork": ("heap_scan_work", "i"),
    "stackScanWork": ("stack_scan_work", "i"), "globalsScanWork": ("globals_scan_work", "i"),
    "assistTime": ("assist_time", "i"), "idleMarkTime": ("idle_mark_time", "i"),
    "markStartTime": ("mark_start_time", "i"),
}


def py_state(c: GCController) -> dict:
    goal, min_trigger = c.heap_goal_internal()
    trig, tgoal = c.trigger()
    return {
        "op": "q", "goal": goal, "min_trigger": min_trigger, "heap_goal": c.heap_goal(),
        "mem_limit_goal": c.memory_limit_heap_goal(), "trigger": trig, "trigger_goal": tgoal,
        "gc_percent": c.gc_percent, "memory_limit": c.memory_limit, "heap_minimum": c.heap_minimum,
        "gc_percent_heap_goal": c.gc_percent_heap_goal, "sweep_dist_min": c.sweep_dist_min_trigger,
        "runway": c.runway, "triggered": c.triggered, "heap_marked": c.heap_marked, "heap_live": c.heap_live,
        "heap_scan": c.heap_scan, "last_heap_scan": c.last_heap_scan, "last_stack_scan": c.last_stack_scan,
        "cons_mark": bits(c.cons_mark), "last_cons_mark": [bits(v) for v in c.last_cons_mark],
        "assist_work_per_byte": bits(c.assist_work_per_byte), "assist_bytes_per_work": bits(c.assist_bytes_per_work),
        "dedicated": c.dedicated_mark_workers_needed, "fractional": bits(c.fractional_utilization_goal),
        "idle_max": c.max_idle_mark_workers,
    }


def run_py(script: list[str]) -> list[dict]:
    """heaplab's answers to a replay script (the same queries the Go side answers)."""
    out: list[dict] = []
    c: GCController | None = None
    g: GCController | None = None
    for line in script:
        f = line.split()
        op = f[0]
        if op == "new":
            c = GCController(int(f[1]), int(f[2]))
        elif op == "set" and f[1].startswith("lastConsMark"):
            c.last_cons_mark[int(f[1][-1])] = unbits(int(f[2], 0))
        elif op == "set":
            attr, kind = _FIELDS[f[1]]
            v = int(f[2], 0)
            setattr(c, attr, unbits(v) if kind == "f" else _i64(v) if kind == "i" else v)
        elif op == "add":
            attr, kind = _FIELDS[f[1]]
            v = getattr(c, attr) + int(f[2], 0)
            setattr(c, attr, _i64(v) if kind == "i" else _u64(v))
        elif op == "commit":
            c.commit(f[1] == "1")
        elif op == "gcpercent":
            out.append({"op": "gcpercent", "old": c.set_gc_percent(int(f[1]), is_sweep_done=f[2] == "1")})
        elif op == "memlimit":
            out.append({"op": "memlimit", "old": c.set_memory_limit(int(f[1]), is_sweep_done=f[2] == "1")})
        elif op == "start":
            c.start_cycle(int(f[1]), int(f[2]), periodic=f[3] == "1")
        elif op == "revise":
            c.revise()
        elif op == "end":
            c.end_cycle(int(f[1]), int(f[2]))
        elif op == "reset":
            c.reset_live(int(f[1], 0))
        elif op == "q":
            out.append(py_state(c))
        elif op == "gogc":
            env = {"GOGC": bytes.fromhex(f[2][1:]).decode()} if f[1] == "1" else {}
            out.append({"op": "gogc", "v": read_gogc(env)})
        elif op == "gomemlimit":
            env = {"GOMEMLIMIT": bytes.fromhex(f[2][1:]).decode()} if f[1] == "1" else {}
            try:
                out.append({"op": "gomemlimit", "v": read_gomemlimit(env), "ok": True})
            except MalformedMemoryLimitError:
                out.append({"op": "gomemlimit", "v": 0, "ok": False})
        elif op == "xnew":
            g = GCController(int(f[1]), int(f[2]))
        elif op == "xstart":
            x_start(g, int(f[1]), int(f[2]), unbits(int(f[3], 0)), int(f[4]))
        elif op == "xrevise":
            x_revise(g, *map(int, f[1:6]))
        elif op == "xend":
            x_end(g, int(f[1]), int(f[2]), int(f[3]), int(f[4]))
        elif op == "xq":
            out.append(x_query(g))
        else:
            raise AssertionError(f"unknown op {op!r}")
    return out


def table_script() -> list[str]:
    """Layer 1's tables as replay scripts."""
    s: list[str] = []
    for gogc, marked, stack, globals_, _, _ in GC_PERCENT_GOALS:
        s += [f"new {gogc} {MAX_INT64}", f"set heapMarked {marked}", f"set lastStackScan {stack}",
              f"set globalsScan {globals_}", "commit 1", "q"]
    s += [f"new -1 {MAX_INT64}", f"set heapMarked {100 * MiB}", "commit 1", "q", f"new -57 {MAX_INT64}", "q"]
    for _, limit, mapped, free, alloc, marked, _ in MEMORY_LIMIT_GOALS:
        s += [f"new 100 {limit}", f"set mappedReady {mapped}", f"set heapFree {free}",
              f"set totalAlloc {alloc + 12345}", "set totalFree 12345", f"set heapMarked {marked}", "commit 1", "q"]
    for _, gogc, marked, runway, _ in TRIGGERS:
        s += [f"new {gogc} {MAX_INT64}", f"set heapMarked {marked}", "commit 1", f"set runway {runway}", "q"]
    for cons, heap_scan, stack, globals_, _ in RUNWAYS:
        s += [f"new 100 {MAX_INT64}", f"set consMark {bits(cons):#x}", f"set lastHeapScan {heap_scan}",
              f"set lastStackScan {stack}", f"set globalsScan {globals_}", "commit 1", "q"]
    # heapGoalInternal regimes (test_heap_goal_internal_regimes).
    s += [f"new 100 {20 * MiB}", f"set heapMarked {10 * MiB}", f"set heapLive {30 * MiB}", "commit 0",
          f"set triggered {18 * MiB}", "q",
          f"new 100 {MAX_INT64}", f"set heapMarked {10 * MiB}", f"set heapLive {25 * MiB}", "commit 0", "q",
          "commit 1", f"set triggered {20 * MiB - 10}", "q", f"set triggered {19 * MiB}", "q"]
    # debug setters (test_set_gc_percent_like_debug / test_set_memory_limit_like_debug).
    s += [f"new 100 {MAX_INT64}", "gcpercent 50 1", "q", "gcpercent -20 1", "gcpercent 200 1",
          f"gcpercent {(1 << 32) + 150} 1", "q", f"gcpercent {2 ** 31} 1", "q", "gcpercent 100 1",
          "memlimit -1 1", f"memlimit {64 * MiB} 1", "q", "memlimit -5 1", "memlimit 0 1", "q",
          f"new 100 {64 * MiB}", f"set heapLive {10 * MiB}", f"memlimit {64 * MiB} 0", "q",
          f"memlimit {65 * MiB} 0", "q",
          "new 100 -1", "q"]
    # endCycle (test_end_cycle_cons_mark).
    s += [f"new 100 {MAX_INT64}", f"set heapMarked {10 * MiB}", "commit 1", f"set heapLive {12 * MiB}",
          "start 1000 4 0", "q", f"add heapLive {MiB}", f"set heapScanWork {4 * MiB}", "end 1001000 4", "q",
          f"reset {11 * MiB}", "commit 0", "q", f"set heapLive {12 * MiB}", "start 0 4 0", f"add heapLive {2 * MiB}",
          f"set heapScanWork {8 * MiB}", "set assistTime 1000000", "set idleMarkTime 2000000", "end 1000000 4", "q"]
    for procs in (0, 1, 2, 3, 4, 5, 6, 7, 8, 12, 64, 1000):
        s += [f"new 100 {MAX_INT64}", f"start 0 {procs} 0", "q", "reset 0", f"start 0 {procs} 1", "q"]
    return s


def env_script() -> list[str]:
    s = []
    for v, _ in GOGC_CASES:
        s.append("gogc 0" if v is None else f"gogc 1 x{v.encode().hex()}")
    for v, _ in GOMEMLIMIT_OK:
        s.append("gomemlimit 0" if v is None else f"gomemlimit 1 x{v.encode().hex()}")
    for v in GOMEMLIMIT_BAD:
        s.append(f"gomemlimit 1 x{v.encode().hex()}")
    return s


def _rand_size(r: random.Random) -> int:
    k = r.random()
    if k < 0.08:
        return 0
    if k < 0.45:
        return r.randrange(1, 64 * MiB)
    if k < 0.75:
        return r.randrange(1, 1 << 40)
    if k < 0.85:
        return r.choice([4 * MiB, 4 * MiB - 1, 4 * MiB + 1, MiB, 64 * KiB, 2 * MiB, 1 << 63, (1 << 63) - 1])
    return r.randrange(1 << 60, 1 << 64)  # where 64-bit sums and products wrap


def _rand_float(r: random.Random) -> float:
    k = r.random()
    if k < 0.1:
        return 0.0
    if k < 0.6:
        return r.random() * r.choice([0.1, 1, 3, 10])
    if k < 0.7:
        return r.choice([math.inf, -math.inf, math.nan, -0.0, 1e300, -1.5, 5e-324])
    return r.expovariate(1.0) * 10 ** r.randint(-5, 5)


def random_script(seed: int, n: int) -> list[str]:
    """Random controller states and operation sequences, consistent only where Go needs it
    (heap_free + heap_alloc <= mapped_ready, or Go's memoryLimitHeapGoal spins forever)."""
    r = random.Random(seed)
    s: list[str] = []
    for _ in range(n):
        gogc = r.choice([100, 100, 50, 200, 0, 1, -1, -7, 1500, 2**31 - 1, r.randint(-(2**40), 2**40),
                         r.randint(0, 1000)])
        limit = r.choice([MAX_INT64] * 6 + [0, -1, 512 * MiB, r.randrange(0, 1 << 63), r.randrange(0, 1 << 40),
                                            r.randrange(0, 256 * MiB), r.randrange(0, 4 * MiB)])
        s.append(f"new {gogc} {limit}")
        mapped = r.choice([0, 0, r.randrange(0, 1 << 30), r.randrange(0, 1 << 30), r.randrange(0, 1 << 44),
                           r.randrange(0, 1 << 64)])
        free = r.randrange(0, mapped + 1)
        alloc = r.randrange(0, mapped - free + 1)
        total_free = r.choice([0, r.randrange(0, 1 << 64)])
        s += [f"set mappedReady {mapped}", f"set heapFree {free}", f"set totalFree {total_free}",
              f"set totalAlloc {_u64(total_free + alloc)}"]
        marked = _rand_size(r)
        for name, v in [("heapMarked", marked), ("lastStackScan", _rand_size(r) if r.random() < 0.5 else 0),
                        ("globalsScan", _rand_size(r) if r.random() < 0.5 else 0), ("lastHeapScan", _rand_size(r)),
                        ("heapLive", marked + r.randrange(0, 1 << 30) if r.random() < 0.8 else _rand_size(r)),
                        ("consMark", bits(_rand_float(r)))]:
            s.append(f"set {name} {v}")
        for k in range(4):
            if r.random() < 0.3:
                s.append(f"set lastConsMark{k} {bits(_rand_float(r))}")
        s += [f"commit {r.randint(0, 1)}", "q"]
        if r.random() < 0.3:
            t = r.choice([_rand_size(r), marked + r.randrange(0, 1 << 24), NO_GOAL - r.randrange(0, 1 << 17)])
            s += [f"set triggered {t}", "q"]
        if r.random() < 0.3:
            s += [f"set runway {_rand_size(r)}", "q"]
        for _ in range(r.randint(0, 3)):
            k = r.random()
            if k < 0.35:
                p = r.choice([100, -1, 0, 30, 2**31 + 5, r.randint(-(2**40), 2**40)])
                s += [f"gcpercent {p} {r.randint(0, 1)}", "q"]
            elif k < 0.7:
                s += [f"memlimit {r.choice([-1, 0, MAX_INT64, r.randrange(0, 1 << 40), limit])} {r.randint(0, 1)}", "q"]
            else:
                # a cycle: start, allocation and scan work with revisions, end, reset, commit
                procs = r.choice([1, 2, 3, 4, 6, 8, 16, 0])
                start_t = r.randrange(0, 1 << 40)
                s += [f"set maxStackScan {_rand_size(r) if r.random() < 0.3 else r.randrange(0, 1 << 20)}",
                      f"start {start_t} {procs} {int(r.random() < 0.2)}", "q"]
                for _ in range(r.randint(0, 4)):
                    s += [f"add heapLive {r.randrange(0, 1 << 26)}", f"add heapScanWork {r.randrange(0, 1 << 26)}",
                          f"add stackScanWork {r.randrange(0, 1 << 16)}",
                          f"add globalsScanWork {r.randrange(0, 1 << 16)}",
                          "revise", "q"]
                if r.random() < 0.5:
                    s += [f"set assistTime {r.randrange(0, 1 << 30)}", f"set idleMarkTime {r.randrange(0, 1 << 30)}"]
                now = start_t + r.choice([0, 1, r.randrange(0, 1 << 32), -r.randrange(0, 1 << 20)])
                s += [f"end {now} {procs}", "q",
                      f"reset {r.randrange(0, 1 << 40)}", f"commit {r.randint(0, 1)}", "q"]
    return s


@pytest.fixture(scope="module")
def go_pacer(tmp_path_factory):
    go = require_go()
    d = tmp_path_factory.mktemp("pacer_vs_go")
    binary = build_runtime_test(go, {"heaplab_pacer_export_test.go": _GO_EXPORT,
                                     "heaplab_pacer_replay_test.go": _GO_TEST}, d)

    def replay(script: list[str]) -> list[dict]:
        ops, out = d / "ops.txt", d / "out.jsonl"
        ops.write_text("\n".join(script) + "\n")
        run_go_test(binary, "TestHeaplabPacerReplay", {"HEAPLAB_PACER_OPS": str(ops), "HEAPLAB_PACER_OUT": str(out)})
        return [json.loads(x) for x in out.read_text().splitlines()]

    return replay


def _compare(script: list[str], go_out: list[dict], ours: list[dict]) -> None:
    assert len(go_out) == len(ours), (len(go_out), len(ours))
    for k, (a, b) in enumerate(zip(ours, go_out)):
        if a != b:
            diff = {key: (a.get(key), b.get(key)) for key in set(a) | set(b) if a.get(key) != b.get(key)}
            pytest.fail(f"query {k} differs (heaplab, Go): {diff}\nheaplab {a}\nGo      {b}")


@pytest.mark.go
def test_tables_match_go(go_pacer):
    script = table_script() + env_script()
    ours = run_py(script)
    _compare(script, go_pacer(script), ours)


@pytest.mark.go
@pytest.mark.parametrize("seed", range(4))
def test_random_states_match_go(go_pacer, seed):
    script = random_script(seed, 600)
    ours = run_py(script)
    _compare(script, go_pacer(script), ours)


@pytest.mark.go
def test_gc_pacer_cases_match_go(go_pacer):
    """All 20 TestGcPacer cases through Go's exported GCController hooks: every
    StartCycle/Revise/EndCycle is followed by a query of goal, live, marked, triggered
    and the assist ratio's bits."""
    script: list[str] = []
    for e in exec_tests():
        _, errors = run_exec_test(e, script)
        if e.name not in RANDOM_STREAM_CASES:
            assert errors == [], e.name
    ours = run_py(script)
    _compare(script, go_pacer(script), ours)
