"""The page heap (heap/mheap.py, heap/arena.py, heap/mspan.py) on every sysmem backend.

Each test runs on real Linux memory and on the simulated linux, windows and sbrk
personalities unless it needs a simulated-only hook (failure injection). After every
step ``checked`` asserts the heap's invariants (MHeap.check) and sysmem's (ledger =
accounting, ledger = what the OS reports).
"""

from __future__ import annotations

import pytest

from heap.arena import RAND_HEAP_ADDR_BITS, heap_arena_metadata_bytes
from heap.constants import PAGE_SIZE, PALLOC_CHUNK_BYTES
from heap.mheap import MHeap
from heap.mspan import MSpan
from heap.sizeclasses import CLASS_TO_NPAGES, make_span_class, span_nelems
from sysmem import State, SysMem
from sysmem.errors import (
    HeapError,
    HeapInvariantError,
    HeapOutOfMemoryError,
    InvalidSpanFreeError,
)

MiB = 1 << 20
GiB = 1 << 30
CHUNK = PALLOC_CHUNK_BYTES
ARENA = 64 * MiB
FIRST_HINT = 0x00C000000000
SECOND_HINT = 0x01C000000000
KINDS = ["linux", "sim-linux", "sim-windows", "sim-sbrk"]
SIM_KINDS = KINDS[1:]
SC_SMALL = make_span_class(5, False)  # 48-byte scan objects, 1 page
SC_NOSCAN = make_span_class(1, True)
SC_LARGE = make_span_class(0, True)
SYS_OPS = ("sys_alloc", "sys_free", "sys_reserve", "sys_reserve_aligned", "sys_unreserve",
           "sys_map", "sys_used", "sys_unused", "sys_fault")


@pytest.fixture
def new_sm(request):
    """``new_sm(kind, godebug="", **backend_options)``: a fresh SysMem of that kind,
    given back at teardown."""
    made: list[SysMem] = []

    def make(kind: str, godebug: str = "", **opts) -> SysMem:
        if kind == "linux":
            return request.getfixturevalue("make_sm")(godebug, **opts)
        sm = SysMem("simulated", personality=kind[len("sim-"):], godebug=godebug, **opts)
        made.append(sm)
        return sm

    yield make
    for sm in made:
        sm.close()


@pytest.fixture(params=KINDS)
def kind(request):
    return request.param


@pytest.fixture(params=SIM_KINDS)
def sim_kind(request):
    return request.param


def checked(h: MHeap) -> None:
    h.check()
    h.sm.check()


def spy(monkeypatch, sm: SysMem, *names: str) -> list[tuple]:
    """Record every call of the named SysMem methods as (name, *args)."""
    calls: list[tuple] = []
    for name in names:
        orig = getattr(sm, name)

        def wrapper(*args, _orig=orig, _name=name, **kw):
            calls.append((_name, *args, *kw.values()))
            return _orig(*args, **kw)

        monkeypatch.setattr(sm, name, wrapper)
    return calls


def stats(h: MHeap) -> tuple[int, int, int, int]:
    return h.heap_in_use.load(), h.heap_free.load(), h.heap_released.load(), h.sm.mapped_ready


def heap_states(sm: SysMem, lo: int, hi: int) -> list[tuple[int, int, State]]:
    """(start, end, state) runs of the ledger clipped to [lo, hi), adjacent equal merged."""
    out: list[list] = []
    for r in sm.runs():
        s, e = max(r.start, lo), min(r.end, hi)
        if s >= e:
            continue
        if out and out[-1][1] == s and out[-1][2] is r.state:
            out[-1][1] = e
        else:
            out.append([s, e, r.state])
    return [tuple(x) for x in out]


# --- growth, arenas, hints ---------------------------------------------------------------

def test_first_span_grows_one_chunk(kind, new_sm, monkeypatch):
    sm = new_sm(kind)
    h = MHeap(sm)
    ready0 = sm.mapped_ready
    calls = spy(monkeypatch, sm, *SYS_OPS)
    s = h.alloc_span(1, SC_SMALL)
    a = h.arenas.arena_of(s.base)
    assert len(h.arenas) == 1 and s.base == a.base  # the heap starts at its first arena
    if kind == "sim-sbrk":
        # No hints on sbrk platforms: the arena comes from the aligned fallback...
        assert [c[:5] for c in calls if c[0].startswith("sys_reserve")] == [
            ("sys_reserve_aligned", None, ARENA, ARENA, "heap")]
        # ...which leaves an up-hint after it and a down-hint at it.
        assert [(x.addr, x.down) for x in h.arenas.hints] == [(a.base + ARENA, False), (a.base, True)]
    else:
        assert calls[0] == ("sys_reserve", FIRST_HINT, ARENA, "heap reservation")
        if kind != "linux":  # the real kernel may have put something at the hint
            assert s.base == FIRST_HINT
    maps = [c for c in calls if c[0] == "sys_map"]
    assert maps == [("sys_map", s.base, CHUNK, h.heap_released, "heap")]
    assert [c for c in calls if c[0] == "sys_used"] == [("sys_used", s.base, PAGE_SIZE, PAGE_SIZE)]
    assert [c[0] for c in calls if c[0] == "sys_alloc"] == ["sys_alloc"]  # the arena metadata
    meta = h.arenas.metadata_bytes
    assert meta == -(-heap_arena_metadata_bytes(8192) // sm.page_size) * sm.page_size
    assert heap_arena_metadata_bytes(8192) == 69648  # Go's heapArena on linux/amd64
    assert sm.stat("gc_misc_sys").load() == meta
    assert stats(h) == (PAGE_SIZE, 0, CHUNK - PAGE_SIZE, ready0 + PAGE_SIZE + meta)
    assert h.heap_sys == h.mapped_bytes == CHUNK
    assert heap_states(sm, a.base, a.base + ARENA) == [
        (a.base, a.base + PAGE_SIZE, State.READY),
        (a.base + PAGE_SIZE, a.base + CHUNK, State.PREPARED),
        (a.base + CHUNK, a.base + ARENA, State.RESERVED),
    ]
    assert s.state == "in_use" and s.npages == 1 and s.elemsize == 48
    assert s.nelems == span_nelems(5, False) == 165 and s.limit == s.base + 165 * 48
    assert s.words.shape == (PAGE_SIZE // 8,) and s.ptr_mask.shape == (PAGE_SIZE // 8,)
    assert not s.needzero
    checked(h)


def test_growth_in_chunk_steps(kind, new_sm, monkeypatch):
    sm = new_sm(kind)
    h = MHeap(sm)
    calls = spy(monkeypatch, sm, "sys_map")
    a = h.alloc_span(600, SC_LARGE)  # 600 pages: two chunks
    base = a.base
    assert calls == [("sys_map", base, 2 * CHUNK, h.heap_released, "heap")]
    assert h.heap_sys == 2 * CHUNK
    checked(h)
    b = h.alloc_span(1, SC_SMALL)  # fits in what is left: no growth
    assert b.base == base + 600 * PAGE_SIZE and len(calls) == 1 and h.heap_sys == 2 * CHUNK
    # b came from the page cache, which took the rest of its 64-page block (pages
    # 601-639); the page allocator has 384 free pages left: grow by one more chunk.
    assert h.page_cache_pages() == (39, 39)
    c = h.alloc_span(512, SC_LARGE)
    assert calls[1:] == [("sys_map", base + 2 * CHUNK, CHUNK, h.heap_released, "heap")]
    assert h.heap_sys == 3 * CHUNK
    assert c.base == base + 640 * PAGE_SIZE  # first fit across the chunk boundary
    # The cached pages are still free, released memory.
    assert stats(h)[:3] == (1113 * PAGE_SIZE, 0, 3 * CHUNK - 1113 * PAGE_SIZE)
    checked(h)


def test_contiguous_arenas_and_spans_across_them(kind, new_sm, monkeypatch):
    sm = new_sm(kind)
    # sbrk: the metadata would be carved from the break between arenas.
    h = MHeap(sm, arena_bytes=4 * MiB, arena_metadata=kind != "sim-sbrk")
    calls = spy(monkeypatch, sm, "sys_reserve", "sys_reserve_aligned", "sys_map")
    s0 = h.alloc_span(1, SC_SMALL)
    a0 = h.arenas.arena_of(s0.base)
    big = h.alloc_span(512, SC_LARGE)  # needs a second arena; lands across the boundary
    a1 = h.arenas.arena_of(a0.base + 4 * MiB)
    assert a1 is not None and len(h.arenas) == 2 and a1.index == a0.index + 1
    assert big.base == s0.base + PAGE_SIZE and big.end == a1.base + PAGE_SIZE
    # The second reservation came from the advanced up-hint, exactly after the first.
    assert ("sys_reserve", a0.base + 4 * MiB, 4 * MiB, "heap reservation") in calls
    assert [c for c in calls if c[0] == "sys_map"][1][1:3] == (a0.base + 4 * MiB, 4 * MiB)
    for addr in (big.base, a0.base + 4 * MiB - 1, a0.base + 4 * MiB, big.end - 1):
        assert h.span_of(addr) is big
    assert h.span_of(big.end) is None
    assert (a0.zeroed_base, a1.zeroed_base) == (4 * MiB, PAGE_SIZE)
    assert h.heap_sys == 8 * MiB
    checked(h)


def test_noncontiguous_arena_maps_the_rest_of_the_old_one_first(kind, new_sm, monkeypatch):
    if kind == "sim-sbrk":
        pytest.skip("sbrk has no hints to collide with (see test_sbrk_arenas)")
    sm = new_sm(kind)
    h = MHeap(sm)
    s0 = h.alloc_span(1, SC_SMALL)
    a0 = h.arenas.arena_of(s0.base).base
    # Something else takes the address the heap would grow into next.
    blocker = sm.sys_reserve(a0 + ARENA, ARENA, "blocker")
    if blocker != a0 + ARENA:
        pytest.skip("the kernel would not place the blocker at the hint")
    calls = spy(monkeypatch, sm, "sys_reserve", "sys_unreserve", "sys_map")
    big = h.alloc_span(ARENA // PAGE_SIZE, SC_LARGE)  # a whole arena: more than is left
    reserves = [c for c in calls if c[0] == "sys_reserve"]
    assert reserves[0] == ("sys_reserve", a0 + ARENA, ARENA, "heap reservation")  # the miss
    assert ("sys_unreserve", reserves[0][1], ARENA) not in calls  # the miss returned elsewhere...
    assert calls[1][0] == "sys_unreserve" and calls[1][2] == ARENA  # ...and was given back
    maps = [c[1:3] for c in calls if c[0] == "sys_map"]
    new = h.arenas.arena_of(big.base).base
    assert new != a0 + ARENA
    if kind != "linux":
        assert new == SECOND_HINT  # the next hint
    # What was left of the old arena first, then the new space.
    assert maps == [(a0 + CHUNK, ARENA - CHUNK), (new, ARENA)]
    assert big.base == new
    assert h.heap_sys == 2 * ARENA
    assert stats(h)[:3] == (PAGE_SIZE + ARENA, 0, ARENA - PAGE_SIZE)
    checked(h)
    # The leftover is usable: it is the lowest free memory.
    s1 = h.alloc_span(4, SC_NOSCAN)
    assert s1.base == s0.base + PAGE_SIZE
    checked(h)


def test_sbrk_arenas(new_sm, monkeypatch):
    sm = new_sm("sim-sbrk")
    h = MHeap(sm, randomize_base=True)  # ignored on sbrk, as in Go
    assert h.arenas.hints == [] and not h.randomize_base
    calls = spy(monkeypatch, sm, "sys_reserve", "sys_reserve_aligned")
    s0 = h.alloc_span(1, SC_SMALL)
    assert calls == [("sys_reserve_aligned", None, ARENA, ARENA, "heap")]
    big = h.alloc_span(ARENA // PAGE_SIZE, SC_LARGE)
    # The up-hint missed (the arena metadata moved the break); the fallback again.
    assert calls[-1][0] == "sys_reserve_aligned"
    assert h.arenas.arena_of(big.base) is not h.arenas.arena_of(s0.base)
    assert h.heap_sys == 2 * ARENA  # the rest of the first arena was mapped too
    checked(h)


@pytest.mark.parametrize("arena_bytes", [4 * MiB, 64 * MiB, 1 * GiB], ids=["4MiB", "64MiB", "1GiB"])
def test_arena_sizes(kind, arena_bytes, new_sm):
    # Simulated storage segments must be larger than the span views here (1 GiB spans).
    sm = new_sm(kind) if kind == "linux" else new_sm(kind, segment_size=1 << 34)
    h = MHeap(sm, arena_bytes=arena_bytes)
    s0 = h.alloc_span(1, SC_SMALL)
    a0 = h.arenas.arena_of(s0.base)
    assert a0.base % arena_bytes == 0 and s0.base == a0.base
    assert a0.spans.shape == (arena_bytes // PAGE_SIZE,)
    assert h.arenas.arena_index(a0.base) == a0.index
    assert h.arenas.arena_base(a0.index) == a0.base
    npages = arena_bytes // PAGE_SIZE  # a whole arena: crosses into a second one
    big = h.alloc_span(npages, SC_LARGE)
    assert big.npages == npages and big.nelems == 1 and big.elemsize == arena_bytes
    assert big.ptr_mask is None and big.words.shape == (arena_bytes // 8,)
    assert len(h.arenas) >= 2
    for addr in (big.base, big.base + arena_bytes // 2, big.end - 1):
        assert h.span_of(addr) is big
    if kind != "sim-sbrk":
        assert big.base == s0.base + PAGE_SIZE and h.heap_sys == CHUNK + arena_bytes
    checked(h)
    h.free_span(big)
    assert h.span_of(big.base) is None
    checked(h)


def test_randomized_base(new_sm):
    made = []
    for seed in (7, 7, 8):
        sm = new_sm("sim-linux")
        h = MHeap(sm, randomize_base=True, seed=seed)
        hints = [x.addr for x in h.arenas.hints]
        assert len(hints) == 64 and all(0 < x < 1 << RAND_HEAP_ADDR_BITS and x % ARENA == 0 for x in hints)
        top = lambda x: (x >> (RAND_HEAP_ADDR_BITS - 8)) & 0xFF  # noqa: E731
        # Hint i steps the top byte by i; Go's mask keeps the base's two lowest prefix
        # bits as well (they OR into every hint), and the low 38 bits are the base's.
        p0 = top(hints[0])
        assert all(top(hints[i]) == ((p0 + i) & 0xFF) | (p0 & 3) for i in range(64))
        assert len({x & ((1 << (RAND_HEAP_ADDR_BITS - 8)) - 1) for x in hints}) == 1
        s = h.alloc_span(1, SC_SMALL)
        a = h.arenas.arena_of(s.base)
        assert a.base == hints[0]
        chunk = s.base & -CHUNK
        assert (chunk - a.base) % CHUNK == 0  # a random chunk of the first arena...
        assert s.base == chunk + h.padding_pages * PAGE_SIZE  # ...and a random page in it
        # The padding is allocated and released; it counts as released memory.
        assert h.heap_released.load() == CHUNK - PAGE_SIZE
        checked(h)
        made.append((s.base, h.padding_pages))
    assert made[0] == made[1] and made[0] != made[2]


# --- allocSpan: commit, stats, needzero ---------------------------------------------------

def test_alloc_span_commits_exactly_the_scavenged_bytes(kind, new_sm, monkeypatch):
    # Spans of 16 pages and more come from the page allocator, smaller ones from the
    # page cache (still empty here: `a` grew the heap, and the span that makes a heap
    # grow comes from the page allocator).
    sm = new_sm(kind)
    h = MHeap(sm)
    a = h.alloc_span(1, SC_SMALL)
    assert h.page_cache_pages() == (0, 0)
    b = h.alloc_span(16, SC_NOSCAN)  # pages 1-16: fresh (released) memory
    assert b.base == a.base + PAGE_SIZE
    h.free_span(b)  # pages 1-16 free but Ready; 17.. still released
    checked(h)
    before = stats(h)
    calls = spy(monkeypatch, sm, "sys_used")
    c = h.alloc_span(32, SC_NOSCAN)  # pages 1-32: 16 Ready + 16 released
    assert c.base == b.base
    n, scav = 32 * PAGE_SIZE, 16 * PAGE_SIZE
    assert calls == [("sys_used", c.base, n, scav)]
    in_use, free, released, ready = before
    assert stats(h) == (in_use + n, free - (n - scav), released - scav, ready + scav)
    assert heap_states(sm, c.base, c.end) == [(c.base, c.end, State.READY)]
    checked(h)
    # No released pages at all: no sys_used.
    h.free_span(c)
    calls.clear()
    d = h.alloc_span(32, SC_NOSCAN)
    assert d.base == c.base and calls == []
    checked(h)


NEEDZERO_CASES = [
    ("linux", "", False), ("linux", "madvdontneed=0", True),
    ("sim-linux", "", False), ("sim-linux", "madvdontneed=0", True),
    ("sim-windows", "", True), ("sim-sbrk", "", True),
]


@pytest.mark.parametrize("kind,godebug,zero_after_unused", NEEDZERO_CASES,
                         ids=[f"{k}-{g or 'default'}" for k, g, _ in NEEDZERO_CASES])
def test_needzero(kind, godebug, zero_after_unused, new_sm):
    sm = new_sm(kind, godebug)
    assert sm.need_zero_after_sys_unused() is zero_after_unused
    h = MHeap(sm)
    h.alloc_span(1, SC_SMALL)
    # Through the page allocator (16 pages and more)...
    b = h.alloc_span(16, SC_NOSCAN)
    assert not b.needzero  # never used before (above the arena's zeroed_base)
    base = b.base
    h.free_span(b)
    b = h.alloc_span(16, SC_NOSCAN)
    assert b.base == base and b.needzero  # reused, not released: dirty
    h.free_span(b)
    assert h.scavenge(1 << 40) >= 16 * PAGE_SIZE
    assert h.heap_free.load() == 0
    checked(h)
    b = h.alloc_span(16, SC_NOSCAN)  # reused, but every page was released
    assert b.base == base and b.needzero is zero_after_unused
    h.free_span(b)
    b = h.alloc_span(32, SC_NOSCAN)  # half Ready (dirty), half released: must zero
    assert b.base == base and b.needzero
    checked(h)
    # ...and through the page cache: the same rule.
    h.free_span(b)  # pages 1-32 free, Ready, dirty
    s = h.alloc_span(4, SC_NOSCAN)  # the page cache takes pages 1-63; s is pages 1-4
    assert s.base == base and s.needzero and h.page_cache_pages() == (59, 31)
    checked(h)
    h.free_span(s)
    h.scavenge_all()  # flushes the page cache first: every free page is released
    assert h.page_cache_pages() == (0, 0) and h.heap_free.load() == 0
    s = h.alloc_span(4, SC_NOSCAN)  # pages 1-4 again, released
    assert s.base == base and s.needzero is zero_after_unused
    checked(h)


# --- freeing -----------------------------------------------------------------------------

def test_free_span_makes_no_sys_call(kind, new_sm, monkeypatch):
    sm = new_sm(kind)
    h = MHeap(sm)
    keep = h.alloc_span(1, SC_SMALL)
    s = h.alloc_span(CLASS_TO_NPAGES[35], make_span_class(35, False))
    checked(h)
    freed = []
    h.on_span_free.append(freed.append)
    before = stats(h)
    calls = spy(monkeypatch, sm, *SYS_OPS)
    h.free_span(s)
    assert calls == []
    n = s.npages * PAGE_SIZE
    assert stats(h) == (before[0] - n, before[1] + n, before[2], before[3])
    assert heap_states(sm, s.base, s.end) == [(s.base, s.end, State.READY)]  # pages stay Ready
    assert s.state == "dead" and s.words is None and s.id == 0
    assert freed == [s]
    assert h.span_of(s.base) is None and h.span_of(keep.base) is keep
    checked(h)


def test_invalid_frees(new_sm):
    sm = new_sm("sim-linux")
    h = MHeap(sm)
    s = h.alloc_span(1, SC_SMALL)
    s.alloc_count = 1
    with pytest.raises(InvalidSpanFreeError, match="mheap.freeSpanLocked - invalid free") as e:
        h.free_span(s)
    assert isinstance(e.value, RuntimeError) and isinstance(e.value, HeapError)
    assert s.state == "in_use"
    checked(h)
    s.alloc_count = 0
    h.free_span(s)
    with pytest.raises(InvalidSpanFreeError, match="invalid span state"):
        h.free_span(s)
    stranger = MSpan(s.base, 1, SC_SMALL, 48, 165)
    with pytest.raises(InvalidSpanFreeError):
        h.free_span(stranger)
    checked(h)


def test_span_of_interior_addresses(kind, new_sm):
    sm = new_sm(kind)
    h = MHeap(sm)
    a = h.alloc_span(1, SC_SMALL)
    sc = make_span_class(35, True)  # 1408-byte objects, 2 pages
    s = h.alloc_span(2, sc)
    assert s.base == a.base + PAGE_SIZE
    for addr in (s.base, s.base + 1, s.base + PAGE_SIZE + 5, s.end - 1):
        assert h.span_of(addr) is s
    assert h.span_of(s.base - 1) is a
    assert h.span_of(s.end) is None  # free page in the heap
    assert h.span_of(a.base + 2 * CHUNK) is None  # Reserved, not yet mapped
    assert h.span_of(0x1000) is None and h.span_of(1 << 47) is None  # not heap at all
    assert s.object_index(s.base + 1410) == 1 and s.object_base(1) == s.base + 1408
    assert s.object_index(s.limit - 1) == s.nelems - 1 == 10
    with pytest.raises(ValueError):
        s.object_index(s.limit)  # tail waste holds no object
    h.free_span(s)
    assert h.span_of(s.base + 1) is None
    checked(h)


# --- scavenging ----------------------------------------------------------------------------

def test_scavenge_releases_free_pages(kind, new_sm):
    sm = new_sm(kind)
    h = MHeap(sm)
    keep = h.alloc_span(1, SC_SMALL)
    spans = [h.alloc_span(16, SC_NOSCAN) for _ in range(8)]
    for s in spans:
        h.free_span(s)
    checked(h)
    in_use, free, released, ready = stats(h)
    assert free == 128 * PAGE_SIZE
    assert h.scavenge(0) == 0
    got = h.scavenge(32 * PAGE_SIZE)
    assert 32 * PAGE_SIZE <= got <= free
    assert stats(h) == (in_use, free - got, released + got, ready - got)
    checked(h)
    rest = h.scavenge(1 << 40)
    assert got + rest == free and h.heap_free.load() == 0
    assert heap_states(sm, keep.end, keep.base + CHUNK) == [(keep.end, keep.base + CHUNK, State.PREPARED)]
    assert h.scavenge(1 << 40) == 0  # nothing left to release
    checked(h)
    s = h.alloc_span(16, SC_NOSCAN)  # released pages come back through sys_used
    assert s.base == keep.end and stats(h)[3] == ready - free + 16 * PAGE_SIZE
    checked(h)


# --- failures ------------------------------------------------------------------------------

def test_reserve_failure_returns_none_and_changes_nothing(sim_kind, new_sm):
    sm = new_sm(sim_kind)
    h = MHeap(sm)
    sm.backend.fail_next("reserve", 1000)
    assert h.alloc_span(1, SC_SMALL) is None
    assert stats(h) == (0, 0, 0, 0) and sm.runs() == [] and len(h.arenas) == 0
    checked(h)
    sm.backend.fail_next("reserve", 0)
    s = h.alloc_span(1, SC_SMALL)
    assert s is not None
    checked(h)


def test_map_failure_returns_none_and_changes_nothing(sim_kind, new_sm):
    sm = new_sm(sim_kind)
    h = MHeap(sm)
    a = h.alloc_span(1, SC_SMALL)
    h.alloc_span(511, SC_NOSCAN)  # the first chunk is full
    before = stats(h)
    sm.backend.fail_next("map", 1)
    assert h.alloc_span(1, SC_SMALL) is None
    assert stats(h) == before and h.heap_sys == CHUNK
    checked(h)
    s = h.alloc_span(1, SC_SMALL)
    assert s.base == a.base + CHUNK
    checked(h)


def test_metadata_failure_undoes_the_reservation(sim_kind, new_sm):
    sm = new_sm(sim_kind)
    h = MHeap(sm)
    sm.backend.fail_next("alloc", 1)
    assert h.alloc_span(1, SC_SMALL) is None
    assert stats(h) == (0, 0, 0, 0) and sm.runs() == [] and len(h.arenas) == 0
    checked(h)
    s = h.alloc_span(1, SC_SMALL)
    if sim_kind != "sim-sbrk":
        assert s.base == FIRST_HINT  # the hint was restored, not lost
    checked(h)


@pytest.mark.parametrize("partly_ready", [False, True])
def test_commit_failure_raises_and_changes_nothing(partly_ready, new_sm):
    sm = new_sm("sim-windows")  # the OS where sys_used commits (and can fail)
    h = MHeap(sm)
    a = h.alloc_span(1, SC_SMALL)
    if partly_ready:
        h.free_span(h.alloc_span(16, SC_NOSCAN))  # pages 1-16 Ready and free
    before = stats(h)
    sm.backend.fail_next("used", 1)
    with pytest.raises(HeapOutOfMemoryError) as e:
        h.alloc_span(32, SC_NOSCAN)
    assert isinstance(e.value, MemoryError)
    assert stats(h) == before
    checked(h)  # scavenged bits restored: released == scavenged pages
    s = h.alloc_span(32, SC_NOSCAN)
    assert s.base == a.base + PAGE_SIZE
    checked(h)


def test_commit_failure_puts_pages_back_into_the_page_cache(new_sm):
    sm = new_sm("sim-windows")
    h = MHeap(sm)
    a = h.alloc_span(1, SC_SMALL)
    h.free_span(h.alloc_span(2, SC_NOSCAN))  # pages 1-2, from the page cache, freed
    h.flush_page_cache()  # to the page allocator
    h.alloc_span(1, SC_SMALL)  # a new block: page 1 taken, 2-63 cached (2 Ready)
    cache = (h.pcache.base, h.pcache.cache, h.pcache.scav)
    before = stats(h)
    sm.backend.fail_next("used", 1)
    with pytest.raises(HeapOutOfMemoryError):
        h.alloc_span(8, SC_NOSCAN)  # pages 2-9: 1 Ready + 7 released
    assert (h.pcache.base, h.pcache.cache, h.pcache.scav) == cache
    assert stats(h) == before
    checked(h)
    s = h.alloc_span(8, SC_NOSCAN)
    assert s.base == a.base + 2 * PAGE_SIZE
    checked(h)


def test_physical_memory_exhaustion(sim_kind, new_sm):
    sm = new_sm(sim_kind)
    h = MHeap(sm)
    a = h.alloc_span(1, SC_SMALL)
    a.words[:] = 1
    b = sm.backend
    used = b.committed_bytes() if sim_kind == "sim-windows" else b.resident_bytes()
    b.physical_memory = used + 16 * PAGE_SIZE
    before = stats(h)
    if sim_kind == "sim-windows":
        # Committing is what needs memory there: alloc_span fails and changes nothing.
        with pytest.raises(HeapOutOfMemoryError):
            h.alloc_span(64, SC_NOSCAN)
        assert stats(h) == before
    else:
        # The OS overcommits: the span is had, touching its pages is what fails (the
        # span's view is made on first use), and nothing changes then either.
        s = h.alloc_span(64, SC_NOSCAN)
        with pytest.raises(HeapOutOfMemoryError):
            s.words
        assert not s.has_view
        checked(h)
        h.free_span(s)
    checked(h)
    s = h.alloc_span(8, SC_NOSCAN)  # fits the budget
    assert s.base == a.base + PAGE_SIZE
    s.words[:] = 2
    checked(h)


# --- checks, hooks, misc ---------------------------------------------------------------------

def test_check_catches_inconsistent_stats(new_sm):
    sm = new_sm("sim-linux")
    h = MHeap(sm)
    h.alloc_span(1, SC_SMALL)
    h.heap_free.add(PAGE_SIZE)
    with pytest.raises(HeapInvariantError) as e:
        h.check()
    assert isinstance(e.value, AssertionError)
    h.heap_free.add(-PAGE_SIZE)
    checked(h)


def test_one_heap_per_sysmem(new_sm):
    sm = new_sm("sim-linux")
    h = MHeap(sm)
    with pytest.raises(HeapError):
        MHeap(sm)
    del h
    import gc

    gc.collect()
    MHeap(sm)  # the first one is gone


def test_hooks(new_sm):
    sm = new_sm("sim-linux")
    h = MHeap(sm)
    grown, commits = [], []
    h.on_grow.append(lambda v, n: grown.append((v, n)))
    h.before_span_commit.append(lambda scav, growth: commits.append((scav, growth)))
    s = h.alloc_span(1, SC_SMALL)
    assert grown == [(s.base, CHUNK)] and commits == [(PAGE_SIZE, CHUNK)]
    h.alloc_span(1, SC_SMALL)
    assert commits[-1] == (PAGE_SIZE, 0)


def test_span_ids_are_reused_and_arguments_checked(new_sm):
    sm = new_sm("sim-linux")
    h = MHeap(sm)
    spans = [h.alloc_span(1, SC_SMALL) for _ in range(10)]
    ids = {s.id for s in spans}
    assert len(ids) == 10 and 0 not in ids and h.nspans == 10
    for s in spans[:5]:
        h.free_span(s)
    h.flush_page_cache()  # else the next spans come from the rest of the cached block
    again = [h.alloc_span(1, SC_NOSCAN) for _ in range(5)]
    assert {s.id for s in again} <= ids and h.nspans == 10
    assert sorted(x.base for x in again) == sorted(x.base for x in spans[:5])
    assert set(h.in_use_spans()) == set(spans[5:] + again)
    with pytest.raises(ValueError):
        h.alloc_span(0, SC_SMALL)
    with pytest.raises(ValueError):
        h.alloc_span(1, 136)
    checked(h)


@pytest.mark.parametrize("godebug", ["", "madvdontneed=0"])
@pytest.mark.parametrize("arena_bytes,randomize", [(4 * MiB, False), (64 * MiB, True)], ids=["4MiB", "64MiB-random"])
def test_random_operations(kind, godebug, arena_bytes, randomize, new_sm):
    """Random span allocs/frees/scavenges (and, simulated, injected OS failures): the
    invariants hold throughout, failures change nothing, and a span that does not need
    zeroing really reads as zeros."""
    import random

    if godebug and kind in ("sim-windows", "sim-sbrk"):
        pytest.skip("madvdontneed only matters on Linux")
    rng = random.Random(f"{kind}{godebug}{arena_bytes}")
    sm = new_sm(kind, godebug)
    h = MHeap(sm, arena_bytes=arena_bytes, randomize_base=randomize, seed=3)
    inject = kind != "linux"
    live: list[MSpan] = []
    for step in range(150):
        if inject and rng.random() < 0.08:
            sm.backend.fail_next(rng.choice(["reserve", "map", "used", "alloc"]), rng.choice([1, 3, 200]))
        r = rng.random()
        if r < 0.55:
            c = rng.randrange(68)
            npages = CLASS_TO_NPAGES[c] if c else rng.choice([1, 3, 100, 513, 1100])
            before = stats(h)
            try:
                s = h.alloc_span(npages, make_span_class(c, rng.random() < 0.5))
            except HeapOutOfMemoryError:
                s = None
            if s is None:
                assert stats(h) == before
            else:
                if not s.needzero:
                    assert not s.words.any(), f"{s!r}: needzero is False but the memory is dirty"
                s.words[:] = 0xDEAD  # dirty it for the next user
                live.append(s)
        elif r < 0.9 and live:
            h.free_span(live.pop(rng.randrange(len(live))))
        else:
            h.scavenge(rng.choice([PAGE_SIZE, MiB, 1 << 40]))
        if inject:
            for op in ("reserve", "map", "used", "alloc"):
                sm.backend.fail_next(op, 0)
        if step % 50 == 49:
            checked(h)
    checked(h)


# --- the page cache ------------------------------------------------------------------------

def test_small_spans_come_from_the_page_cache(kind, new_sm, monkeypatch):
    sm = new_sm(kind)
    h = MHeap(sm)
    a = h.alloc_span(1, SC_SMALL)  # grows the heap: from the page allocator
    assert h.page_cache_pages() == (0, 0)
    calls = spy(monkeypatch, sm, "sys_used")
    b = h.alloc_span(4, SC_NOSCAN)  # refills the cache with pages 1-63 of the block
    assert b.base == a.base + PAGE_SIZE and h.page_cache_pages() == (59, 59)
    assert calls == [("sys_used", b.base, 4 * PAGE_SIZE, 4 * PAGE_SIZE)]
    # The cached pages are allocated to the page allocator, and still free, released
    # memory to the heap's accounting (Go counts them where their scavenged bits say).
    assert stats(h)[:3] == (5 * PAGE_SIZE, 0, CHUNK - 5 * PAGE_SIZE)
    assert h.pages.chunk_of(h.pages.start).palloc_bits.count() == 64
    checked(h)
    h.free_span(b)  # freed pages go to the page allocator, not back to the cache
    c = h.alloc_span(4, SC_NOSCAN)
    assert c.base == b.end and h.page_cache_pages() == (55, 55)
    big = h.alloc_span(16, SC_NOSCAN)  # 16 pages and more: the page allocator, first fit
    assert big.base == b.base - PAGE_SIZE + 64 * PAGE_SIZE or big.base == a.base + 64 * PAGE_SIZE
    checked(h)
    h.flush_page_cache()
    assert h.page_cache_pages() == (0, 0)
    checked(h)
    d = h.alloc_span(4, SC_NOSCAN)  # a refill: the block again, first fit in it
    assert d.base == b.base and d.needzero  # pages b left dirty (and Ready)
    checked(h)


def test_a_span_that_does_not_fit_in_the_cache_comes_from_the_page_allocator(new_sm):
    sm = new_sm("sim-linux")
    h = MHeap(sm)
    a = h.alloc_span(1, SC_SMALL)
    spans = [h.alloc_span(15, SC_NOSCAN) for _ in range(4)]  # cache: pages 1-60
    assert [s.base for s in spans] == [a.base + (1 + 15 * k) * PAGE_SIZE for k in range(4)]
    assert h.page_cache_pages() == (3, 3)
    s = h.alloc_span(4, SC_NOSCAN)  # 3 cached pages are not enough: Go keeps them cached
    assert s.base == a.base + 64 * PAGE_SIZE and h.page_cache_pages() == (3, 3)
    t = h.alloc_span(2, SC_NOSCAN)  # ...and takes from them what fits
    assert t.base == a.base + 61 * PAGE_SIZE and h.page_cache_pages() == (1, 1)
    checked(h)


def test_scavenge_all_flushes_the_page_cache_first(kind, new_sm):
    sm = new_sm(kind)
    h = MHeap(sm)
    h.alloc_span(1, SC_SMALL)
    spans = [h.alloc_span(2, SC_NOSCAN) for _ in range(8)]  # pages 1-16, from the cache
    for s in spans:
        h.free_span(s)
    h.free_span(h.alloc_span(3, SC_NOSCAN))  # pages 17-19: Ready, free... and the rest
    assert h.page_cache_pages() == (44, 44)
    free = h.heap_free.load()
    assert free == 19 * PAGE_SIZE
    # scavenge() leaves the page cache alone (Go's scavenger cannot see its pages)...
    assert h.scavenge(1 << 40) == free and h.page_cache_pages() == (44, 44)
    checked(h)
    # ...and so would it dirty cached pages: make some Ready and free inside the cache.
    h.flush_page_cache()
    x = h.alloc_span(8, SC_NOSCAN)  # pages 1-8 (the rest of the block is cached again)
    h.free_span(x)
    h.flush_page_cache()
    h.alloc_span(1, SC_NOSCAN)  # caches the block again, now with 7 Ready pages in it
    cached, cached_scav = h.page_cache_pages()
    assert cached - cached_scav == 7 and h.heap_free.load() == 7 * PAGE_SIZE
    assert h.scavenge(1 << 40) == 0  # nothing the page allocator has is free and Ready
    assert h.scavenge_all() == 7 * PAGE_SIZE and h.page_cache_pages() == (0, 0)
    assert h.heap_free.load() == 0
    checked(h)


def test_check_sees_the_page_cache(new_sm):
    sm = new_sm("sim-linux")
    h = MHeap(sm)
    h.alloc_span(1, SC_SMALL)
    h.alloc_span(1, SC_SMALL)
    checked(h)
    h.pcache.scav &= ~h.pcache.cache  # forget which cached pages were released
    with pytest.raises(HeapInvariantError, match="page cache"):
        h.check()


# --- batches of spans --------------------------------------------------------------------

def _span_facts(spans):
    return [(s.base, s.npages, s.spanclass, s.id, s.needzero, s.nelems, s.elemsize) for s in spans]


def _heap_facts(h: MHeap):
    c = h.pcache
    return (stats(h)[:3], h.sm.mapped_ready, (c.base, c.cache, c.scav), h.pages.search_addr,
            h.pages_in_use, h.nspans, sorted(_span_facts(h.in_use_spans())))


def _heap_state(h: MHeap):
    # What a failed allocation must leave as it was: the accounting and the spans. (A
    # page-cache refill it made stays, as growth does: its pages are still free.)
    return (stats(h), h.pages_in_use, h.nspans, sorted(_span_facts(h.in_use_spans())),
            [(r.start, r.end, r.state) for r in h.sm.runs()])


@pytest.mark.parametrize("hooks", [False, True], ids=["batched", "with-hooks"])
@pytest.mark.parametrize("skind", SIM_KINDS)
def test_alloc_spans_places_spans_as_alloc_span_would(skind, hooks, new_sm):
    """alloc_spans(n, c, k) == k calls of alloc_span(n, c): same spans (addresses, ids,
    needzero), same heap afterwards (stats, page cache, search address), on a heap
    made ragged by frees, flushes and scavenging; with hooks registered, the hooks see
    the same calls too."""
    import random

    heaps, logs = [], []
    for _ in range(2):
        sm = new_sm(skind)
        h = MHeap(sm, arena_bytes=4 * MiB)
        log: list = []
        if hooks:
            h.on_grow.append(lambda v, n, log=log: log.append(("grow", v, n)))
            h.before_span_commit.append(lambda scav, growth, log=log, h=h: log.append(
                ("commit", scav, growth, stats(h))))
        heaps.append(h)
        logs.append(log)
    rng = random.Random(f"{skind}{hooks}")
    live: list[list[MSpan]] = [[], []]
    for step in range(120):
        r = rng.random()
        if r < 0.5:
            c = rng.randrange(68)
            npages = CLASS_TO_NPAGES[c] if c else rng.choice([1, 2, 3, 5, 8, 15, 16, 17, 40, 600])
            spc = make_span_class(c, rng.random() < 0.5)
            count = rng.randrange(0, 30)
            got = [heaps[0].alloc_spans(npages, spc, count),
                   [heaps[1].alloc_span(npages, spc) for _ in range(count)]]
            assert _span_facts(got[0]) == _span_facts(got[1]), f"step {step}"
            for k in (0, 1):
                live[k] += got[k]
        elif r < 0.8 and live[0]:
            for _ in range(rng.randint(1, 10)):
                if not live[0]:
                    break
                i = rng.randrange(len(live[0]))
                for k in (0, 1):
                    heaps[k].free_span(live[k].pop(i))
        elif r < 0.87:
            for h in heaps:
                h.flush_page_cache()
        elif r < 0.95:
            nbytes = rng.choice([PAGE_SIZE, 64 * PAGE_SIZE, 1 << 40])
            assert heaps[0].scavenge(nbytes) == heaps[1].scavenge(nbytes)
        else:
            assert heaps[0].scavenge_all() == heaps[1].scavenge_all()
        assert _heap_facts(heaps[0]) == _heap_facts(heaps[1]), f"step {step}"
        assert logs[0] == logs[1]
        if step % 20 == 19:
            for h in heaps:
                checked(h)
    for h in heaps:
        checked(h)


def test_alloc_spans_commits_runs_of_spans_at_once(new_sm, monkeypatch):
    sm = new_sm("sim-linux")
    h = MHeap(sm)
    h.alloc_span(1, SC_SMALL)
    calls = spy(monkeypatch, sm, "sys_used")
    spans = h.alloc_spans(1, SC_SMALL, 200)  # pages 1-200 (cache blocks follow each other)
    assert [s.base for s in spans] == [spans[0].base + k * PAGE_SIZE for k in range(200)]
    assert calls == [("sys_used", spans[0].base, 200 * PAGE_SIZE, 200 * PAGE_SIZE)]
    # Pointerful spans are touched at once (headers, masks, the collector's scans);
    # fresh pointer-free ones when first used, as fresh memory on Linux.
    assert all(s.has_view for s in spans)
    assert not any(s.has_view for s in h.alloc_spans(1, SC_NOSCAN, 10))
    checked(h)
    assert h.alloc_spans(3, SC_NOSCAN, 0) == []
    with pytest.raises(ValueError):
        h.alloc_spans(3, SC_NOSCAN, -1)


def test_alloc_spans_is_all_or_nothing(new_sm):
    # Growth that fails part way: the spans already taken go back, as they were.
    sm = new_sm("sim-linux")
    h = MHeap(sm, arena_bytes=4 * MiB)
    keep = h.alloc_span(1, SC_SMALL)
    h.free_span(h.alloc_span(20, SC_NOSCAN))  # some Ready free pages in the way
    h.alloc_span(2, SC_NOSCAN)
    before = _heap_state(h)
    sm.backend.fail_next("reserve", 1000)
    with pytest.raises(HeapOutOfMemoryError):
        h.alloc_spans(8, SC_NOSCAN, 100)  # needs a second arena
    assert _heap_state(h) == before
    checked(h)
    sm.backend.fail_next("reserve", 0)
    spans = h.alloc_spans(8, SC_NOSCAN, 100)
    assert len(spans) == 100 and h.span_of(keep.base) is keep
    checked(h)


def test_alloc_spans_commit_failure_part_way_changes_nothing(new_sm):
    # Windows commits in sys_used: a budget that lets the first runs through only.
    sm = new_sm("sim-windows")
    h = MHeap(sm)
    h.alloc_span(1, SC_SMALL)
    holes = [h.alloc_span(16, SC_NOSCAN) for _ in range(6)]
    for s in holes[::2]:
        h.free_span(s)  # three Ready 16-page holes: the spans come in several runs
    before = _heap_state(h)
    sm.backend.physical_memory = sm.backend.committed_bytes() + 40 * PAGE_SIZE
    with pytest.raises(HeapOutOfMemoryError) as e:
        h.alloc_spans(16, SC_NOSCAN, 8)
    assert isinstance(e.value, MemoryError)
    assert _heap_state(h) == before
    checked(h)
    sm.backend.physical_memory = None
    assert len(h.alloc_spans(16, SC_NOSCAN, 8)) == 8
    checked(h)


def test_alloc_spans_hook_failure_changes_nothing(new_sm):
    sm = new_sm("sim-linux")
    h = MHeap(sm)
    h.alloc_span(1, SC_SMALL)
    before = _heap_state(h)
    n = [0]

    def hook(scav, growth):
        n[0] += 1
        if n[0] == 5:
            raise RuntimeError("policy says no")

    h.before_span_commit.append(hook)
    with pytest.raises(RuntimeError):
        h.alloc_spans(3, SC_NOSCAN, 10)
    assert _heap_state(h) == before
    checked(h)


def test_span_words_are_made_on_first_use(kind, new_sm):
    sm = new_sm(kind)
    h = MHeap(sm)
    s = h.alloc_span(2, SC_NOSCAN)
    assert not s.has_view and s.sm is sm
    assert s.words.shape == (2 * PAGE_SIZE // 8,) and s.has_view
    assert s.words is s.words  # made once
    h.free_span(s)
    assert s.words is None and not s.has_view and s.sm is None
    stranger = MSpan(s.base, 1, SC_SMALL, 48, 165)
    assert stranger.words is None


# --- scavenged-page masks of huge spans ----------------------------------------------------
def test_scavenged_masks_of_any_size_are_split_and_joined_exactly():
    # The masks recording which pages of an allocation were released can cover millions
    # of pages, so they are built, cut per chunk and turned into runs without shifting
    # the whole mask per step; this checks those helpers against the plain definitions.
    import random

    from heap.mheap import _chunk_pieces, _join_bits, _page_number

    rng = random.Random(7)
    for _ in range(500):
        npages = rng.randint(1, 3000)
        base = FIRST_HINT + rng.randint(0, 2000) * PAGE_SIZE
        mask = rng.choice([0, (1 << npages) - 1, rng.getrandbits(npages)])
        p, done, want = _page_number(base), 0, []
        while done < npages:
            n = min(npages - done, 512 - (p & 511))
            want.append((p >> 9, (mask >> done) & ((1 << n) - 1), p & 511, n))
            p, done = p + n, done + n
        assert list(_chunk_pieces(base, npages, mask)) == want
        assert _join_bits([(bits, n) for _, bits, _, n in want]) == mask

    class Recorder:
        def __init__(self) -> None:
            self.calls: list[tuple[int, int]] = []

        def sys_unused(self, addr: int, nbytes: int) -> None:
            self.calls.append((addr // PAGE_SIZE, nbytes // PAGE_SIZE))

    for _ in range(300):
        mask = rng.getrandbits(rng.randint(1, 2000))
        fake = type("FakeHeap", (), {})()
        fake.sm = Recorder()
        MHeap._release_again(fake, 0, mask)
        bits = [(mask >> i) & 1 for i in range(mask.bit_length())]
        runs, i = [], 0
        while i < len(bits):
            if bits[i]:
                j = i
                while j < len(bits) and bits[j]:
                    j += 1
                runs.append((i, j - i))
                i = j
            else:
                i += 1
        assert fake.sm.calls == runs
