"""The collector's behaviour piece by piece: roots, precise marking, sweeping into the
page allocator, the allocation trigger, free_os_memory, metrics and gctrace."""

from __future__ import annotations

import numpy as np
import pytest

from heap import Heap, RootNotFoundError
from heap.metrics import fmt_ns_as_ms
from heap_backends import BACKENDS, heap_sm, make_heap, backend_name  # noqa: F401


def test_roots_interior_and_junk(make_heap):
    h = make_heap(gogc="off")
    a = h.alloc(64, True)
    b = h.alloc(2000, [3])  # header-carrying scan object
    c = h.alloc(100_000, [0, 5])  # large
    d = h.alloc(24)  # noscan: never scanned
    h.write_pointer(a, 0, b + 100)  # interior pointer
    h.write_pointer(b, 3, c + 8 * 1000)
    h.words(a)[1] = 0xDEAD_BEEF  # junk in a pointer word: ignored
    h.write_word(d, a)  # a "pointer" in a noscan object: not a reference
    h.add_root(a + 63)
    h.add_root(12345)  # not a heap address: ignored
    st = h.gc()
    assert st.marked_objects == 3 and st.freed_objects == 1
    assert h.lookup(d) is None and h.lookup(c).base == c
    h.remove_root(a + 63)
    h.add_root(c)
    h.gc()
    assert h.lookup(a) is None and h.lookup(b) is None and h.lookup(c) is not None
    h.check()
    with pytest.raises(RootNotFoundError):
        h.remove_root(a)


def test_cycles_and_root_slots(make_heap):
    h = make_heap(gogc="off")
    slots = h.root_slots(3)
    ring = h.alloc_many(48, 1000, [0])
    for i in range(1000):
        h.words(int(ring[i]))[0] = ring[(i + 1) % 1000]
    slots[1] = ring[500]
    assert h.gc().marked_objects == 1000
    slots[1] = 0  # the cycle is garbage now
    st = h.gc()
    assert st.marked_objects == 0 and st.freed_objects == 1000
    assert h.stats()["HeapObjects"] == 0
    h.release_root_slots(slots)
    with pytest.raises(RootNotFoundError):
        h.release_root_slots(slots)
    h.check()


def test_long_chain_marks_quickly(make_heap):
    h = make_heap(gogc="off")
    n = 20_000
    nodes = h.alloc_many(16, n, [0])
    words = [h.words(int(x)) for x in nodes[:-1]]
    for w, nxt in zip(words, nodes[1:]):
        w[0] = nxt
    del words
    h.add_root(int(nodes[0]))
    st = h.gc()
    assert st.marked_objects == n and st.freed_objects == 0


def test_sweep_returns_empty_spans_without_sys_calls(make_heap):
    h = make_heap(gogc="off")
    keep = h.alloc(64, True)
    h.add_root(keep)
    h.alloc_many(64, 5000, True)
    h.alloc_many(1 << 20, 3)  # large noscan
    sm = h.sm
    before_ready, before_in_use = sm.mapped_ready, h.mheap.heap_in_use.load()
    free_before = h.mheap.heap_free.load()
    st = h.gc()
    assert st.freed_objects == 5003 and st.freed_spans > 0
    assert sm.mapped_ready == before_ready  # pages stay Ready: no sys call
    freed = before_in_use - h.mheap.heap_in_use.load()
    assert freed > 3 << 20 and h.mheap.heap_free.load() == free_before + freed
    span = h.mheap.span_of(keep)
    assert span.needzero and span.alloc_count == 1
    # reused slots come back zeroed
    x = h.alloc(64, True)
    assert not h.words(x).any()
    h.check()


def test_free_os_memory_releases_everything(make_heap):
    h = make_heap(gogc="off")
    h.alloc_many(4096, 2000)
    released = h.free_os_memory()
    assert released > 0 and h.mheap.heap_free.load() == 0
    m = h.metrics()
    assert m["/memory/classes/heap/free:bytes"] == 0
    assert m["/gc/cycles/forced:gc-cycles"] == 1
    h.check()


def test_allocation_triggers_gc(make_heap):
    h = make_heap(gogc=100)
    slots = h.root_slots(1)
    keep = h.alloc_many(1024, 1024)  # 1 MiB live (noscan)
    holder = h.alloc(8 * 1024, True)
    slots[0] = holder
    h.words(holder)[:1024] = keep
    goal0 = h.metrics()["/gc/heap/goal:bytes"]
    assert goal0 == 4 << 20  # the heap minimum
    for _ in range(60):
        h.alloc_many(4096, 256)  # 1 MiB of garbage per step
    m = h.metrics()
    assert m["/gc/cycles/automatic:gc-cycles"] >= 10
    assert m["/gc/heap/live:bytes"] >= (1 << 20) and h.lookup(int(keep[-1])) is not None
    assert h.mheap.heap_in_use.load() < 2 * goal0
    h.check()


def test_gc_end_hooks_see_every_cycle(make_heap):
    """on_gc_end is where the scavenger will pace itself, as Go's does after each cycle."""
    h = make_heap(gogc=100)
    seen = []
    h.on_gc_end.append(seen.append)
    for _ in range(20):
        h.alloc_many(4096, 256)  # garbage: cycles start at the trigger
    h.gc()
    assert [st.number for st in seen] == list(range(1, h.num_gc + 1))
    assert seen[-1] is h.gc_cycles[-1]


def test_gogc_off_never_collects(make_heap):
    h = make_heap(gogc="off")
    for _ in range(20):
        h.alloc_many(4096, 256)
    assert h.num_gc == 0
    assert h.set_gc_percent(50) == -1
    h.alloc_many(4096, 256)
    assert h.num_gc == 1


def test_metrics_classes_add_up(make_heap):
    h = make_heap(gogc="off", memory_limit=1 << 30)
    h.add_root(h.alloc(100, True))
    h.alloc_many(300, 1000)
    h.gc()
    h.scavenge(1 << 20)
    m = h.metrics()
    classes = [k for k in m if k.startswith("/memory/classes/") and k != "/memory/classes/total:bytes"]
    assert sum(m[k] for k in classes) == m["/memory/classes/total:bytes"]
    assert m["mapped_ready"] == m["/memory/classes/total:bytes"] - m["/memory/classes/heap/released:bytes"]
    assert m["mapped_ready"] == h.sm.mapped_ready
    st = h.stats()
    assert m["/gc/heap/objects:objects"] == st["HeapObjects"] == 1
    assert m["/memory/classes/heap/objects:bytes"] == st["HeapAlloc"]
    assert m["/gc/heap/allocs:objects"] == st["Mallocs"] and m["/gc/heap/frees:objects"] == st["Frees"]
    assert m["/gc/gogc:percent"] == (1 << 64) - 1 and m["/gc/gomemlimit:bytes"] == 1 << 30
    assert m["/gc/heap/live:bytes"] == 112


def test_scannable_heap_grows_at_allocation_as_in_go(make_heap):
    # Go's gcController.heapScan: last cycle's scan work, plus what heapSetType returns
    # for each scan object allocated since (bytes up to the last pointer for a small
    # object without a header; the whole slot with a header or a span of its own).
    h = make_heap(gogc="off")
    scan = lambda: h.metrics()["/gc/scan/heap:bytes"]  # noqa: E731
    assert scan() == 0
    h.alloc(64, [0, 2])  # pointer words 0 and 2: 24 bytes to scan
    assert scan() == 24
    h.alloc(64, True)  # all pointers: the 64 bytes
    assert scan() == 88
    h.alloc(24)  # noscan: nothing
    assert scan() == 88
    h.alloc(1000, [3])  # malloc header: the 1024-byte slot
    assert scan() == 88 + 1024
    h.alloc(100_000, [0])  # a span of its own: 13 pages
    assert scan() == 88 + 1024 + 13 * 8192
    h.alloc_many(48, 10, [1])  # 10 x 16 bytes
    h.alloc_many(100_000, 2, [0])  # 2 x 13 pages
    h.alloc_many(2000, 3, [0])  # 3 x the 2048-byte slot
    assert scan() == 88 + 1024 + 13 * 8192 + 160 + 26 * 8192 + 3 * 2048
    m = h.metrics()
    assert m["/gc/scan/total:bytes"] == scan() + m["/gc/scan/globals:bytes"] + m["/gc/scan/stack:bytes"]
    slots = h.root_slots(1)
    slots[0] = h.alloc(1000, True)  # 1024-byte slot, kept alive
    h.gc()  # the scannable heap is now what the cycle scanned
    assert scan() == 1024 == h.pacer.last_heap_scan


def test_gctrace_line(make_heap):
    lines: list[str] = []
    h = make_heap(gogc=100, gctrace=lines.append)
    h.add_root(h.alloc(1 << 20, True))
    h.gc()
    import re
    assert re.fullmatch(
        r"gc 1 @\d+\.\d{3}s \d+%: [\d.]+\+[\d.]+\+[\d.]+ ms clock, [\d.]+\+[\d.]+/[\d.]+/[\d.]+\+[\d.]+ ms cpu, "
        r"1->1->1 MB, 4 MB goal, 0 MB stacks, 0 MB globals, 1 P \(forced\)", lines[0]), lines[0]


def test_gctrace_from_godebug(monkeypatch, capsys):
    monkeypatch.setenv("GODEBUG", "madvdontneed=1,gctrace=1")
    h = Heap(backend="simulated", personality="linux", godebug="", gogc="off")
    h.gc()
    h.close()
    assert capsys.readouterr().err.startswith("gc 1 @")


def test_env_defaults(monkeypatch):
    monkeypatch.setenv("GOGC", "off")
    monkeypatch.setenv("GOMEMLIMIT", "64MiB")
    h = Heap(backend="simulated", personality="linux", godebug="")
    assert h.gc_percent == -1 and h.memory_limit == 64 << 20
    assert h.set_memory_limit("off") == 64 << 20
    h.close()


def test_fmt_ns_as_ms():
    assert fmt_ns_as_ms(0) == "0"
    assert fmt_ns_as_ms(123_456) == "0.12"
    assert fmt_ns_as_ms(1_234_567) == "1.2"
    assert fmt_ns_as_ms(12_345_678) == "12"
    assert fmt_ns_as_ms(5_000) == "0.005"


def test_million_root_slots_are_all_read():
    h = Heap(backend="simulated", personality="linux", godebug="", gogc="off")
    objs = h.alloc_many(16, 200_000)
    slots = h.root_slots(2_000_000)
    slots[::10] = objs
    st = h.gc()
    assert st.marked_objects == 200_000 and st.root_words == 2_000_000
    h.close()
