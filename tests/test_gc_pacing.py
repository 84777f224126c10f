"""Pacing: a program allocating steadily over a fixed live set settles where the pacer
says — near live × (1 + GOGC/100) — and under a tighter memory limit the goal follows
the memory-limit formula and cycles come more often. Expected values come from the
pacer's formulas (heap.pacer), not from constants."""

from __future__ import annotations

import pytest

from heap import Heap
from heap.pacer import MEMORY_LIMIT_HEAP_GOAL_HEADROOM_PERCENT, MEMORY_LIMIT_MIN_HEAP_GOAL_HEADROOM
from heap_backends import new_sysmem, _Made

LIVE_OBJS = 2048
OBJ = 4096  # 8 MiB live


def run(backend: str, gogc: int, limit: int | None, steps: int = 160):
    made = _Made()
    sm = new_sysmem(backend)
    made.sysmems.append(sm)
    h = Heap(sm, gogc=gogc, memory_limit=limit if limit is not None else "off")
    slots = h.root_slots(LIVE_OBJS)
    for i in range(0, LIVE_OBJS, 256):  # rooted as soon as allocated
        slots[i:i + 256] = h.alloc_many(OBJ, 256)
    peaks, cycles = [], []
    last = h.num_gc
    peak = 0
    for _ in range(steps):
        h.alloc_many(OBJ, 64)  # 256 KiB of garbage per step
        peak = max(peak, h.mheap.heap_in_use.load())
        if h.num_gc != last:
            last = h.num_gc
            peaks.append(peak)
            cycles.append(h.gc_cycles[-1])
            peak = 0
    m = h.metrics()
    h.check()
    return h, made, peaks, cycles, m


def gogc_goal(live: int, globals_scan: int, gogc: int) -> int:
    # the pacer's GOGC goal (commit): marked + (marked + stacks + globals) × GOGC/100
    return live + (live + globals_scan) * gogc // 100


@pytest.mark.parametrize("backend", ["linux", "simulated-windows"])
@pytest.mark.parametrize("gogc", [50, 100])
def test_heap_settles_near_gogc_goal(backend, gogc):
    h, made, peaks, cycles, m = run(backend, gogc, None)
    try:
        live = LIVE_OBJS * OBJ
        assert len(cycles) >= 4
        for c in cycles[1:]:
            assert c.heap2 == live  # exactly the live set survives every cycle
        goal = gogc_goal(live, 8 * LIVE_OBJS, gogc)
        assert m["/gc/heap/goal:bytes"] == max(goal, h.pacer.heap_minimum)
        trig, g = h.pacer.trigger()
        for c in cycles[1:]:
            # each cycle starts once heap_live reaches the trigger, before the goal
            assert trig <= c.heap0 <= g
        for p in peaks[1:]:
            # the heap (in-use spans, so slack per size class) stays near the goal
            assert live < p <= goal * 1.05
            assert p >= trig * 0.95
    finally:
        h.close()
        made.release()


@pytest.mark.parametrize("backend", ["linux", "simulated-windows"])
def test_memory_limit_goal_and_more_cycles(backend):
    live = LIVE_OBJS * OBJ
    gogc = 100
    free_h, made1, _, free_cycles, _ = run(backend, gogc, None)
    free_h.close()
    made1.release()
    limit = live + (live * gogc // 100) // 4 + (2 << 20)  # well below live × 2 + overheads
    h, made, peaks, cycles, m = run(backend, gogc, limit)
    try:
        # the memory-limit formula, recomputed here from the metrics it reads
        mapped = m["mapped_ready"]
        heap_free = m["/memory/classes/heap/free:bytes"]
        heap_alloc = m["/memory/classes/heap/objects:bytes"]
        non_heap = mapped - heap_free - heap_alloc
        overage = max(mapped - limit, 0)
        goal = limit - (non_heap + overage)
        headroom = max(goal // 100 * MEMORY_LIMIT_HEAP_GOAL_HEADROOM_PERCENT, MEMORY_LIMIT_MIN_HEAP_GOAL_HEADROOM)
        goal = headroom if goal < headroom or goal - headroom < headroom else goal - headroom
        goal = max(goal, m["/gc/heap/live:bytes"])
        assert goal < gogc_goal(live, 8 * LIVE_OBJS, gogc)
        assert m["/gc/heap/goal:bytes"] == goal == h.pacer.memory_limit_heap_goal()
        assert len(cycles) > len(free_cycles)
        # Ready memory stays under the limit once the heap has settled
        assert m["mapped_ready"] <= limit
        for p in peaks[1:]:
            assert p <= goal * 1.05
    finally:
        h.close()
        made.release()
