"""A hypothesis state machine drives a Heap with alloc / alloc_many / free / free_many /
grow / scavenge / mcache release / rewrite / collect steps, against a plain reference
model (the live objects, each rooted, and the pattern each one holds), once per backend,
with the pacer on (so collections also start on their own).

After every step it checks:

* no two live objects overlap, and every model object is live where the heap says;
* every live object's contents are intact (a pattern unique to the object in its
  scalar words, the object's own address in its pointer words);
* the heap's bytes add up: in use + free + released = what the heap mapped, and
  released = pages the page allocator marks scavenged (``MHeap.check``);
* sysmem's ``mapped_ready`` equals the heap's Ready pages (in use + free) plus what
  sysmem holds Ready for other purposes (per the ledger);
* the heap's own invariants (``Heap.check``, the OS comparison at teardown).

Scavenge steps release free pages, so later steps reuse released pages (made Ready
again with ``sys_used``; on the simulated Windows personality any touch of a page the
heap did not make Ready again would fault the test).
"""

from __future__ import annotations

import gc

import numpy as np
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from heap import Heap, HeapOutOfMemoryError
from heap.heap import release_sysmem
from heap_backends import NAMES, new_sysmem
from sysmem import State

# Sizes around the interesting boundaries: tiny, class edges, the 512-byte header
# threshold, multi-page classes, the small/large edge, and large objects.
SIZES = st.sampled_from([1, 8, 16, 17, 48, 100, 256, 511, 512, 513, 1024, 1500, 3000, 9000,
                         32760, 32761, 40000, 70000])
POINTERS = st.sampled_from([None, True, "first"])
MASK64 = (1 << 64) - 1


class HeapMachine(RuleBasedStateMachine):
    backend = "simulated-linux"

    def __init__(self) -> None:
        super().__init__()
        self.sm = new_sysmem(self.backend)
        # The pacer runs (GOGC=100): cycles start on their own as the heap grows.
        self.heap = Heap(self.sm, arena_bytes=8 << 20, gogc=100)
        # addr -> (usable size, pointer word indices, pattern seed)
        self.model: dict[int, tuple[int, tuple[int, ...], int]] = {}
        self.serial = 0

    def teardown(self) -> None:
        try:
            self.heap.check(os=True)
        finally:
            gc.collect()
            release_sysmem(self.sm)

    # -- helpers ---------------------------------------------------------------------------
    def _ptrs(self, size: int, kind) -> object:
        if kind == "first":
            return [0]
        return kind

    def _expected(self, addr: int) -> np.ndarray:
        size, pws, seed = self.model[addr]
        n = size >> 3
        want = (np.arange(n, dtype=np.uint64) * np.uint64(0x9E3779B1) + np.uint64(seed)) & np.uint64(MASK64)
        if pws:
            want[list(pws)] = addr  # a pointer word points at the object itself
        return want

    def _fill(self, addr: int) -> None:
        w = self.heap.words(addr)
        w[:] = self._expected(addr)
        del w

    def _added(self, addr: int) -> None:
        info = self.heap.lookup(addr)
        assert info is not None and info.base == addr
        w = self.heap.words(addr)
        assert not w.any(), f"new object at {addr:#x} is not zeroed"
        del w
        self.serial += 1
        self.model[addr] = (info.size, info.pointer_words, self.serial << 32)
        self._fill(addr)
        # Rooted, so a collection (the pacer's, or a `collect` step) must keep it.
        self.heap.add_root(addr)

    # -- steps ------------------------------------------------------------------------------------
    @initialize()
    def start(self) -> None:
        assert self.heap.stats()["HeapObjects"] == 0

    @rule(size=SIZES, kind=POINTERS)
    def alloc(self, size, kind) -> None:
        self._added(self.heap.alloc(size, self._ptrs(size, kind)))

    @rule(size=SIZES, n=st.integers(0, 40), kind=POINTERS)
    def alloc_many(self, size, n, kind) -> None:
        if size > 32760:
            n = min(n, 4)
        addrs = self.heap.alloc_many(size, n, self._ptrs(size, kind))
        assert len(addrs) == n and len(set(addrs.tolist())) == n
        for a in addrs.tolist():
            assert a not in self.model
            self._added(a)

    @precondition(lambda self: self.backend.startswith("simulated"))
    @rule(size=SIZES, n=st.integers(1, 40), kind=POINTERS, spare=st.integers(0, 24))
    def alloc_many_short_of_memory(self, size, n, kind, spare) -> None:
        # The simulated machine has only `spare` more pages of physical memory: the
        # batch either fits or fails whole (on Windows when committing, elsewhere when
        # its spans are first touched), leaving the heap exactly as it was.
        if size > 32760:
            n = min(n, 4)
        backend = self.sm.backend
        used = backend.committed_bytes() if self.backend == "simulated-windows" else backend.resident_bytes()
        backend.physical_memory = used + spare * self.sm.page_size
        before = self.heap.stats()
        try:
            addrs = self.heap.alloc_many(size, n, self._ptrs(size, kind))
        except HeapOutOfMemoryError:
            # Nothing allocated and nothing committed. What stays: growth the call made
            # (new released memory: Go never shrinks the heap) and the used-up span the
            # mcache handed back first, as alloc's refill does before anything else.
            after = self.heap.stats()
            for k in ("HeapObjects", "HeapAlloc", "Mallocs", "Frees"):
                assert after[k] == before[k], k
            grown = after["HeapSys"] - before["HeapSys"]
            assert grown >= 0 and after["HeapReleased"] - before["HeapReleased"] == grown
            assert after["HeapInuse"] <= before["HeapInuse"]
            return
        finally:
            backend.physical_memory = None
        for a in addrs.tolist():
            self._added(a)

    @precondition(lambda self: self.model)
    @rule(data=st.data())
    def free(self, data) -> None:
        addr = data.draw(st.sampled_from(sorted(self.model)))
        self.heap.remove_root(addr)
        self.heap.free(addr)
        del self.model[addr]

    @precondition(lambda self: self.model)
    @rule(data=st.data())
    def free_many(self, data) -> None:
        live = sorted(self.model)
        chosen = data.draw(st.lists(st.sampled_from(live), unique=True, max_size=30))
        for a in chosen:
            self.heap.remove_root(a)
        self.heap.free_many(np.array(chosen, dtype=np.uint64))
        for a in chosen:
            del self.model[a]

    @rule()
    def collect(self) -> None:
        # Every model object is rooted (and points at itself): a cycle frees nothing
        # of them, only what the model no longer has (nothing: frees are explicit).
        before = self.heap.stats()["HeapObjects"]
        st = self.heap.gc()
        assert st.freed_objects == 0 and self.heap.stats()["HeapObjects"] == before == len(self.model)

    @precondition(lambda self: self.model)
    @rule(data=st.data())
    def rewrite(self, data) -> None:
        addr = data.draw(st.sampled_from(sorted(self.model)))
        size, pws, _ = self.model[addr]
        self.serial += 1
        self.model[addr] = (size, pws, self.serial << 32)
        self._fill(addr)

    @rule(npages=st.integers(1, 700))
    def grow(self, npages) -> None:
        self.heap.grow(npages)

    @rule(frac=st.sampled_from([0.25, 1.0]))
    def scavenge(self, frac) -> None:
        gc.collect()
        self.heap.scavenge(int(self.heap.mheap.heap_sys * frac))

    @rule()
    def release_mcache(self) -> None:
        self.heap.release_mcache()

    # -- checks after every step ------------------------------------------------------------
    @invariant()
    def objects_disjoint_and_intact(self) -> None:
        h = self.heap
        spans = []
        for addr in sorted(self.model):
            info = h.lookup(addr)
            assert info is not None and info.base == addr, f"{addr:#x} is not live"
            spans.append((info.slot_base, info.end))
            got = h.words(addr)
            assert np.array_equal(got, self._expected(addr)), f"contents of {addr:#x} changed"
            del got
        for (_, end), (start, _) in zip(spans, spans[1:]):
            assert end <= start, "live objects overlap"
        assert h.stats()["HeapObjects"] == len(self.model)

    @invariant()
    def accounting(self) -> None:
        mh = self.heap.mheap
        in_use, free, released = mh.heap_in_use.load(), mh.heap_free.load(), mh.heap_released.load()
        assert in_use + free + released == mh.mapped_bytes
        other_ready = sum(r.size for r in self.sm.runs()
                          if r.state is State.READY and (r.stat is None or r.stat.group != "heap"))
        assert self.sm.mapped_ready == in_use + free + other_ready
        self.heap.check(os=False)


SETTINGS = settings(max_examples=12, stateful_step_count=25, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


def _machine(name: str):
    cls = type(f"HeapMachine_{name.replace('-', '_')}", (HeapMachine,), {"backend": name})
    return cls


for _name in NAMES:
    _case = _machine(_name).TestCase
    _case.settings = SETTINGS
    if _name == "linux":
        _case = pytest.mark.skipif("not __import__('sys').platform.startswith('linux')")(_case)
    globals()[f"TestHeapStateMachine_{_name.replace('-', '_')}"] = _case
del _case  # or pytest collects the last machine twice


def test_out_of_memory_steps_leave_a_usable_heap():
    """Out-of-address-space in the middle of a workload: the failing call changes
    nothing, everything before it is intact, and the heap goes on afterwards."""
    sm = new_sysmem("simulated-windows")
    h = Heap(sm, arena_bytes=4 << 20)
    try:
        kept = h.alloc_many(512, 2000)
        for a in kept[::97]:
            h.write_word(int(a), int(a))
        sm.backend.fail_next("reserve", 100)
        for call in (lambda: h.alloc_many(4096, 5000), lambda: h.alloc(8 << 20)):
            before = h.stats()
            with pytest.raises(HeapOutOfMemoryError):
                call()
            assert h.stats() == before
            h.check()
        sm.backend.fail_next("reserve", 0)
        h.alloc_many(4096, 5000)
        assert all(h.read_word(int(a)) == int(a) for a in kept[::97])
        h.check()
    finally:
        gc.collect()
        release_sysmem(sm)
