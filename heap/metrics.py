"""Reporting: a runtime/metrics-style snapshot and the ``GODEBUG=gctrace=1`` line.

:func:`snapshot` returns a dict keyed by Go's ``runtime/metrics`` names for the
quantities heaplab has (Go 1.27, ``metrics.go``), computed from counters only (no
per-object or per-span work), so it can be taken after every allocation step of an
experiment. The memory classes partition all memory the heap's SysMem maps for reading
and writing, as Go's do::

    /memory/classes/total:bytes = heap/objects + heap/unused + heap/free
        + heap/released + heap/stacks + os-stacks + metadata/mspan/{inuse,free}
        + metadata/mcache/{inuse,free} + metadata/other + profiling/buckets + other

``mapped_ready`` (Go's ``gcController.mappedReady``; Go keeps it but does not export it)
is added under that name; it equals ``total − heap/released`` whenever every
non-heap stat's memory is Ready, which is how heaplab maps metadata.

What has no heaplab counterpart is reported as Go would report an idle piece: goroutine
stacks (0), the tiny allocator (0 objects), the CPU limiter (never enabled).
SysMem stats outside Go's standard set are counted in ``/memory/classes/other:bytes``
so the classes still add up to the total.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from sysmem.stats import STANDARD_STATS

if TYPE_CHECKING:  # pragma: no cover
    from .gc import CycleStats
    from .heap import Heap

__all__ = ["snapshot", "gctrace_line", "fmt_ns_as_ms", "itoa_div"]

_U64 = (1 << 64) - 1
_HEAP_STATS = ("heap_in_use", "heap_free", "heap_released")


def snapshot(heap: Heap) -> dict:
    """The metrics of ``heap`` now (its allocations must be settled: Heap.metrics does)."""
    sm = heap.sm
    mh = heap.mheap
    mc = heap.mcache
    p = heap.pacer
    in_use, free, released = mh.heap_in_use.load(), mh.heap_free.load(), mh.heap_released.load()
    total_alloc = mc.alloc_bytes
    total_free = heap._free_bytes
    objects = total_alloc - total_free
    mallocs = sum(mc.nmalloc)
    frees = sum(heap._nfree)

    def stat(name: str) -> int:
        s = sm.stats.get(name)
        return s.load() if s is not None else 0

    # Non-standard stats still count against the total: file them under "other".
    extra = sum(s.load() for n, s in sm.stats.items() if n not in STANDARD_STATS)
    m = {
        "/memory/classes/heap/objects:bytes": objects,
        "/memory/classes/heap/unused:bytes": in_use - objects,
        "/memory/classes/heap/free:bytes": free,
        "/memory/classes/heap/released:bytes": released,
        "/memory/classes/heap/stacks:bytes": 0,
        "/memory/classes/os-stacks:bytes": stat("stacks_sys"),
        # heaplab's span and mcache structures are Python objects; whatever sysmem
        # accounts for them is all "in use".
        "/memory/classes/metadata/mspan/inuse:bytes": stat("mspan_sys"),
        "/memory/classes/metadata/mspan/free:bytes": 0,
        "/memory/classes/metadata/mcache/inuse:bytes": stat("mcache_sys"),
        "/memory/classes/metadata/mcache/free:bytes": 0,
        "/memory/classes/metadata/other:bytes": stat("gc_misc_sys"),
        "/memory/classes/profiling/buckets:bytes": stat("buckhash_sys"),
        "/memory/classes/other:bytes": stat("other_sys") + extra,
    }
    # As Go does, the total is every byte the runtime mapped (each sys stat once),
    # not the sum of the classes, so a class that misses or double-counts shows.
    m["/memory/classes/total:bytes"] = sum(s.load() for s in sm.stats.values())
    trig, goal = p.trigger()
    gc_cpu = heap.gc_pause_total_ns / 1e9
    m.update({
        "/gc/heap/goal:bytes": goal,
        "/gc/heap/live:bytes": p.heap_marked,
        "/gc/heap/allocs:bytes": total_alloc,
        "/gc/heap/allocs:objects": mallocs,
        "/gc/heap/frees:bytes": total_free,
        "/gc/heap/frees:objects": frees,
        "/gc/heap/objects:objects": mallocs - frees,
        "/gc/heap/tiny/allocs:objects": 0,
        "/gc/cycles/total:gc-cycles": heap.num_gc,
        "/gc/cycles/forced:gc-cycles": heap.num_forced_gc,
        "/gc/cycles/automatic:gc-cycles": heap.num_gc - heap.num_forced_gc,
        # Go reports the int32 setting as a uint64, so GOGC=off reads 2**64-1.
        "/gc/gogc:percent": p.gc_percent & _U64,
        "/gc/gomemlimit:bytes": p.memory_limit,
        # The scannable heap: the last cycle's scan work plus the scannable bytes
        # allocated since (Go's gcController.heapScan).
        "/gc/scan/heap:bytes": p.heap_scan,
        "/gc/scan/globals:bytes": p.globals_scan,
        "/gc/scan/stack:bytes": p.last_stack_scan,
        "/gc/scan/total:bytes": p.heap_scan + p.globals_scan + p.last_stack_scan,
        "/gc/limiter/last-enabled:gc-cycle": 0,
        # Every heaplab cycle stops the world and runs on the caller's thread: GC CPU
        # time is pause time.
        "/cpu/classes/gc/total:cpu-seconds": gc_cpu,
        "/cpu/classes/gc/pause:cpu-seconds": gc_cpu,
        "/sched/pauses/total/gc:seconds-total": gc_cpu,  # heaplab extra: Go has a histogram
        "mapped_ready": sm.mapped_ready,
        "gc_trigger": trig,  # heaplab extra: Go's trigger(), not a Go metric
        "heap_live": heap._heap_live(),  # heaplab extra: Go's gcController.heapLive, now
    })
    return m


def itoa_div(v: int, dec: int) -> str:
    """``v`` with a decimal point ``dec`` digits from the right (Go's ``itoaDiv``)."""
    s = str(v)
    if dec <= 0:
        return s
    s = s.rjust(dec + 1, "0")
    return s[:-dec] + "." + s[-dec:]


def fmt_ns_as_ms(ns: int) -> str:
    """Nanoseconds as gctrace prints milliseconds (Go's ``fmtNSAsMS``): whole ms from
    10 ms up, else two significant digits with at most three decimals."""
    if ns >= 10_000_000:
        return itoa_div(ns // 1_000_000, 0)
    x = ns // 1000
    if x == 0:
        return "0"
    dec = 3
    while x >= 100:
        x //= 10
        dec -= 1
    return itoa_div(x, dec)


def gctrace_line(heap: Heap, st: CycleStats) -> str:
    """The line Go's ``GODEBUG=gctrace=1`` prints for cycle ``st``.

    Mapping onto a stop-the-world collector on one P: *sweep termination* is the
    mcache flush, *mark* is the whole mark (root and pointer gathering included, all
    of it "dedicated" worker time; no assists, no idle workers), *mark termination* is
    the eager sweep plus the pacer update (Go sweeps after the cycle, concurrently).
    Stacks are 0 MB (no goroutines); globals are the root slots.
    """
    now = time.perf_counter_ns()
    since_init = st.t_start - heap._t_init
    elapsed = max(now - heap._t_init, 1)
    util = int(heap.gc_pause_total_ns / elapsed * 100)
    clock = "+".join(fmt_ns_as_ms(d) for d in (st.t_mark - st.t_start, st.t_mark_term - st.t_mark,
                                                  st.t_end - st.t_mark_term))
    stw_in = st.t_mark - st.t_start
    stw_out = st.t_end - st.t_mark_term
    cpu = (f"{fmt_ns_as_ms(stw_in)}+{fmt_ns_as_ms(0)}/{fmt_ns_as_ms(st.mark_ns)}/"
           f"{fmt_ns_as_ms(0)}+{fmt_ns_as_ms(stw_out)}")
    p = heap.pacer
    line = (f"gc {st.number} @{itoa_div(since_init // 1_000_000, 3)}s {util}%: {clock} ms clock, "
            f"{cpu} ms cpu, {st.heap0 >> 20}->{st.heap1 >> 20}->{st.heap2 >> 20} MB, "
            f"{st.goal >> 20} MB goal, {p.last_stack_scan >> 20} MB stacks, "
            f"{p.globals_scan >> 20} MB globals, 1 P")
    if st.forced:
        line += " (forced)"
    return line
