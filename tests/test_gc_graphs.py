"""Hypothesis: random object graphs survive collection exactly as reachability says.

Each example builds objects of random sizes (small, header-carrying, large; scan and
noscan) with random pointer masks, links them (cycles, self loops, interior pointers,
junk values in pointer words), and between cycles adds and removes roots (single roots
and a root slot array) and allocates more. After every cycle: every object reachable
from the roots (computed here, independently, by a Python BFS over the model) is still
allocated with its words intact; every other object is gone; statistics agree with the
model and with sysmem's ledger (``heap.check``).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from heap import Heap
from heap_backends import new_sysmem, _Made

SIZES = [8, 16, 24, 48, 64, 128, 520, 1024, 4000, 33000, 70000]
GRAPH_BACKENDS = ["linux", "simulated-windows"]


class Model:
    """What the test believes: per object its size, pointer word indices and words."""

    def __init__(self, heap: Heap) -> None:
        self.h = heap
        self.objs: dict[int, dict] = {}  # base -> {"size", "ptrs", "words"}
        self.slots = heap.root_slots(8)

    def alloc(self, size: int, ptrs: list[int] | None, data: int) -> int:
        a = self.h.alloc(size, ptrs if ptrs else None)
        nw = size // 8
        words = [(data * 7919 + i * 104729) & 0xFFFF_FFFF for i in range(nw)]
        ps = set(ptrs or ())
        for i, w in enumerate(words):
            if i not in ps:
                self.h.write_word(a + 8 * i, w)
            else:
                words[i] = 0
        # A pointer anywhere in a small object's slot (its malloc header and the
        # padding after it too) keeps it alive, as Go's findObject resolves it; a large
        # object ends at the size asked for (Go's s.limit). The slot's bounds are fixed
        # by the size classes, so they are read once, here.
        info = self.h.lookup(a)
        lo = info.slot_base
        hi = a + size if info.is_large else lo + self.h.mheap.span_of(a).elemsize
        self.objs[a] = {"size": size, "ptrs": sorted(ps), "words": words, "slot": (lo, hi)}
        return a

    def link(self, src: int, k: int, dst: int | None, interior: int) -> None:
        o = self.objs[src]
        if not o["ptrs"]:
            return
        w = o["ptrs"][k % len(o["ptrs"])]
        if dst is None:
            val = 0
        else:
            lo, hi = self.objs[dst]["slot"]
            val = lo + interior % (hi - lo)  # anywhere in the slot, header included
        # raw store: pointer words may also hold junk (non-heap values) the GC ignores
        self.h.words(src)[w] = val
        o["words"][w] = val

    def junk(self, src: int, k: int, value: int) -> None:
        o = self.objs[src]
        if o["ptrs"]:
            w = o["ptrs"][k % len(o["ptrs"])]
            self.h.words(src)[w] = value
            o["words"][w] = value

    def target(self, v: int) -> int | None:
        for base, o in self.objs.items():
            lo, hi = o["slot"]
            if lo <= v < hi:
                return base
        return None

    def reachable(self) -> set[int]:
        seen: set[int] = set()
        todo = [t for r in list(self.h.roots) + self.slots.tolist() if (t := self.target(r)) is not None]
        while todo:
            b = todo.pop()
            if b in seen:
                continue
            seen.add(b)
            o = self.objs[b]
            for w in o["ptrs"]:
                t = self.target(o["words"][w])
                if t is not None and t not in seen:
                    todo.append(t)
        return seen

    def collect_and_check(self) -> None:
        live = self.reachable()
        before = self.h.stats()["HeapObjects"]
        self.h.gc()
        for b in list(self.objs):
            info = self.h.lookup(b)
            if b in live:
                assert info is not None and info.base == b, f"reachable {b:#x} was freed"
                got = self.h.words(b)[: self.objs[b]["size"] // 8].tolist()
                assert got == self.objs[b]["words"], f"contents of {b:#x} changed"
            else:
                assert info is None or info.base != b, f"unreachable {b:#x} survived"
                del self.objs[b]
        st = self.h.stats()
        assert st["HeapObjects"] == len(self.objs) <= before
        m = self.h.metrics()
        assert m["/gc/heap/objects:objects"] == len(self.objs)
        assert m["mapped_ready"] == m["/memory/classes/total:bytes"] - m["/memory/classes/heap/released:bytes"]
        assert m["mapped_ready"] == self.h.sm.mapped_ready
        self.h.check(os=False)


op = st.one_of(
    st.tuples(st.just("alloc"), st.sampled_from(SIZES), st.lists(st.integers(0, 40), max_size=6),
              st.booleans(), st.integers(0, 1 << 20)),
    st.tuples(st.just("link"), st.integers(0, 10**6), st.integers(0, 50), st.integers(0, 10**6),
              st.integers(0, 200)),
    st.tuples(st.just("nil"), st.integers(0, 10**6), st.integers(0, 50)),
    st.tuples(st.just("junk"), st.integers(0, 10**6), st.integers(0, 50),
              st.sampled_from([1, 7, 0xDEAD_BEEF, 0xC000_0000_00, (1 << 64) - 1])),
    st.tuples(st.just("root"), st.integers(0, 10**6), st.integers(0, 100)),
    st.tuples(st.just("unroot"), st.integers(0, 10**6)),
    st.tuples(st.just("slot"), st.integers(0, 7), st.integers(0, 10**6)),
    st.tuples(st.just("gc"),),
)


@pytest.mark.parametrize("backend", GRAPH_BACKENDS)
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(ops=st.lists(op, min_size=5, max_size=60))
def test_random_graphs(backend, ops):
    made = _Made()
    sm = new_sysmem(backend)
    made.sysmems.append(sm)
    # GOGC=off: cycles happen exactly where the test says (each op may leave objects
    # unrooted until linked).
    h = Heap(sm, gogc="off")
    try:
        model = Model(h)
        for o in ops:
            kind = o[0]
            bases = sorted(model.objs)
            pick = (lambda i: bases[i % len(bases)]) if bases else None
            if kind == "alloc":
                _, size, ptrs, allp, data = o
                nw = size // 8
                ptrs = list(range(nw)) if allp and nw <= 64 else sorted({p % nw for p in ptrs})
                model.alloc(size, ptrs, data)
            elif kind == "link" and bases:
                model.link(pick(o[1]), o[2], pick(o[3]), o[4])
            elif kind == "nil" and bases:
                model.link(pick(o[1]), o[2], None, 0)
            elif kind == "junk" and bases:
                model.junk(pick(o[1]), o[2], o[3])
            elif kind == "root" and bases:
                b = pick(o[1])
                h.add_root(b + min(o[2], model.objs[b]["size"] - 1))
            elif kind == "unroot" and h.roots:
                r = h.roots
                h.remove_root(r[o[1] % len(r)])
            elif kind == "slot":
                model.slots[o[1]] = pick(o[2]) if bases else 0
            elif kind == "gc":
                model.collect_and_check()
        model.collect_and_check()
        # every root gone: the heap empties and its spans go back to the page allocator
        for r in h.roots:
            while True:
                try:
                    h.remove_root(r)
                except KeyError:
                    break
        model.slots[:] = 0
        model.collect_and_check()
        assert h.stats()["HeapObjects"] == 0 and h.mheap.heap_in_use.load() == 0
        h.check()  # and sysmem's states against the kernel's
    finally:
        h.close()
        made.release()
