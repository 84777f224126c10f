"""The user-facing Heap: size classes and headers, pointer masks, zeroing, frees and their
errors, memory access, statistics, out-of-memory, and alloc_many's placement.

Every test that takes ``make_heap`` or ``heap_sm`` runs once per backend of
``heap_backends`` (real Linux memory and the simulated linux / windows / sbrk
personalities).
"""

from __future__ import annotations

import gc

import numpy as np
import pytest

from heap import (
    DoubleFreeError,
    Heap,
    HeapError,
    HeapInvariantError,
    HeapOutOfMemoryError,
    InvalidFreeError,
    InvalidPointerError,
    InvalidSizeError,
    ObjectBoundsError,
    PointerSlotError,
)
from heap.heap import _size_tables
from heap.sizeclasses import (
    CLASS_TO_NPAGES,
    CLASS_TO_SIZE,
    MAX_SMALL_SIZE_NO_HEADER,
    alloc_size_class,
    make_span_class,
)
from heap_backends import backend_name, heap_sm, make_heap, new_sysmem  # noqa: F401 (fixtures)
from sysmem.errors import HeaplabError

PAGE = 8192


def span_of(h: Heap, addr: int):
    return h.mheap.span_of(addr)


# -- construction ---------------------------------------------------------------------------
def test_heap_makes_its_own_sysmem():
    h = Heap(backend="simulated", personality="windows", arena_bytes=4 << 20)
    assert h.owns_sysmem and h.sm.backend.name == "simulated-windows"
    assert h.mheap.arena_bytes == 4 << 20
    a = h.alloc(100)
    h.write_word(a, 5)
    h.check()
    h.close()


@pytest.mark.skipif("not __import__('sys').platform.startswith('linux')")
def test_default_heap_is_real_linux_memory():
    with Heap() as h:
        assert h.sm.backend.name == "linux"
        a = h.alloc(24)
        h.write_word(a + 8, 0xDEADBEEF)
        assert h.read_word(a + 8) == 0xDEADBEEF
        h.check()


def test_given_sysmem_refuses_sysmem_options(heap_sm):
    with pytest.raises(TypeError):
        Heap(heap_sm, backend="simulated")
    h = Heap(heap_sm)
    with pytest.raises(HeapError):
        Heap(heap_sm)  # one heap per SysMem: they share its heap stats
    h.close()


# -- size classes, headers, large objects ---------------------------------------------------
def test_size_tables_follow_alloc_size_class():
    noscan, scan = _size_tables()
    for size in range(1, MAX_SMALL_SIZE_NO_HEADER + 1):
        c, _ = alloc_size_class(size, False)
        assert noscan[size] == make_span_class(c, True)
        c, hdr = alloc_size_class(size, True)
        assert scan[size] == (make_span_class(c, False), hdr)


@pytest.mark.parametrize("size", [1, 8, 9, 16, 24, 500, 512, 513, 1024, 4000, 32760])
@pytest.mark.parametrize("pointers", [None, True])
def test_objects_land_in_go_size_class(make_heap, size, pointers):
    h = make_heap()
    addrs = [h.alloc(size, pointers) for _ in range(3)]
    c, hdr = alloc_size_class(size, bool(pointers))
    spc = make_span_class(c, not pointers)
    for a in addrs:
        info = h.lookup(a)
        assert info.base == a and info.span_class == spc and info.header_bytes == hdr
        assert info.size == CLASS_TO_SIZE[c] - hdr >= size
        assert info.has_pointers == bool(pointers)
        s = span_of(h, a)
        assert (a - s.base - hdr) % s.elemsize == 0 and a % 8 == 0
        assert s.npages == CLASS_TO_NPAGES[c]
    assert len({a - h.lookup(a).header_bytes for a in addrs}) == 3
    h.check()


def test_malloc_header_precedes_big_scan_objects(make_heap):
    h = make_heap()
    a = h.alloc(1000, pointers=[0, 5])
    info = h.lookup(a)
    assert info.header_bytes == 8 and info.slot_base == a - 8
    s = span_of(h, a)
    layout_id = int(s.words[(a - 8 - s.base) >> 3])
    assert h.types[layout_id].nwords == 125 and list(h.types[layout_id].offsets) == [0, 5]
    assert h.lookup(a - 8).base == a  # the header belongs to the object
    assert h.lookup(a + 999).base == a  # interior
    with pytest.raises(ObjectBoundsError):
        h.read_word(a - 8)
    with pytest.raises(ObjectBoundsError):
        h.write_word(a - 8, 1)
    with pytest.raises(InvalidFreeError):
        h.free(a - 8)
    b = h.alloc(1000, pointers=[0, 5])  # same layout, same id
    assert int(s.words[(b - 8 - s.base) >> 3]) == layout_id
    assert h.alloc(512, pointers=True) % 512 == 0 or h.lookup(h.alloc(512, True)).header_bytes == 0
    h.check()


@pytest.mark.parametrize("size,pointers", [(32761, None), (32768, None), (32769, None), (40000, True),
                                           (5 * PAGE + 1, None), (200_000, [1, 7])])
def test_large_objects_get_their_own_span(make_heap, size, pointers):
    h = make_heap()
    a = h.alloc(size, pointers)
    s = span_of(h, a)
    assert s.base == a and s.sizeclass == 0 and s.npages == -(-size // PAGE)
    info = h.lookup(a + size - 1)
    assert info.base == a and info.size == (size + 7) & -8 and info.header_bytes == 0
    # Past the size asked for (Go's s.limit) an address refers to nothing, though the
    # span's page goes on: findObject rejects it, and the collector ignores it.
    assert s.limit == a + size
    assert all(h.lookup(x) is None for x in (a + size, s.end - 1) if x >= a + size)
    assert info.span_class == make_span_class(0, pointers is None)
    if pointers is not None:
        want = list(range((size + 7) // 8)) if pointers is True else pointers
        assert list(info.pointer_words) == want
    h.free(a)
    assert span_of(h, a) is None
    h.check()


# -- pointer masks ----------------------------------------------------------------------------------
def test_pointer_mask_forms(make_heap):
    h = make_heap()
    a = h.alloc(64, pointers=True)
    assert h.lookup(a).pointer_words == tuple(range(8))
    b = h.alloc(64, pointers=[6, 1, 1])
    assert h.lookup(b).pointer_words == (1, 6)
    m = np.zeros(8, bool)
    m[[0, 7]] = True
    c = h.alloc(64, pointers=m)
    assert h.lookup(c).pointer_words == (0, 7)
    assert h.lookup(c).span_class == h.lookup(b).span_class  # one scan class
    d = h.alloc(64, pointers=[])  # no pointer words: noscan, as in Go
    assert not h.lookup(d).has_pointers
    e = h.alloc(64, pointers=np.zeros(8, bool))
    assert not h.lookup(e).has_pointers
    for bad in ([8], [-1], np.ones(9, bool), ["x"]):
        with pytest.raises(InvalidSizeError):
            h.alloc(64, pointers=bad)
    # a reused slot gets the new object's mask, not the old one's
    s = span_of(h, a)
    h.free(a)
    h.release_mcache()
    f = h.alloc(64, pointers=[2])
    assert span_of(h, f) is s
    assert h.lookup(f).pointer_words == (2,)
    h.check()


def test_pointer_masks_in_alloc_many(make_heap):
    h = make_heap()
    addrs = h.alloc_many(1000, 30, pointers=[0, 3])
    for a in addrs:
        info = h.lookup(int(a))
        assert info.pointer_words == (0, 3) and info.header_bytes == 8
    small = h.alloc_many(48, 500, pointers=True)
    assert all(h.lookup(int(a)).pointer_words == tuple(range(6)) for a in small[::37])
    h.check()


# -- zeroing -------------------------------------------------------------------------------------------
def test_reused_slots_are_zeroed_only_when_handed_out(make_heap):
    h = make_heap()
    objs = [h.alloc(64) for _ in range(4)]
    for a in objs:
        h.words(a)[:] = 0xAB
    s = span_of(h, objs[0])
    h.free(objs[0])
    h.free(objs[1])
    assert s.needzero  # dirty after an explicit free
    h.release_mcache()
    again = h.alloc(64)
    assert again == objs[0]  # the lowest free slot
    assert not h.words(again).any()
    # the other freed slot is not zeroed until it is handed out
    w1 = (objs[1] - s.base) >> 3
    assert (s.words[w1:w1 + 8] == 0xAB).all()
    again2 = h.alloc(64)
    assert again2 == objs[1] and not h.words(again2).any()
    h.check()


def test_alloc_many_zeroes_dirty_slots(make_heap):
    h = make_heap()
    addrs = h.alloc_many(128, 200)
    for a in addrs:
        h.words(int(a))[:] = 0x77
    h.free_many(addrs[::2])
    h.release_mcache()
    again = h.alloc_many(128, 100)
    assert set(again.tolist()) == set(addrs[::2].tolist())
    assert all(not h.words(int(a)).any() for a in again)
    assert all(h.words(int(a))[0] == 0x77 for a in addrs[1::2])
    h.check()


def test_released_memory_is_not_zeroed_twice(make_heap):
    h = make_heap()
    big = h.alloc_many(64 << 10, 8)
    for a in big:
        h.words(int(a))[:] = 1
    h.free_many(big)
    assert h.scavenge() > 0
    again = h.alloc_many(64 << 10, 8)
    for a in again:
        assert not h.words(int(a)).any()
        s = span_of(h, int(a))
        if not h.sm.need_zero_after_sys_unused():
            assert not s.needzero  # the OS zeroed it: Go does not zero it again
    fresh = h.alloc(64 << 10)
    assert not span_of(h, fresh).needzero
    h.check()


# -- frees ------------------------------------------------------------------------------------------------
def test_free_errors_change_nothing(make_heap):
    h = make_heap()
    a = h.alloc(48)
    b = h.alloc(48)
    big = h.alloc(100_000)
    before = h.stats()
    for bad in (a + 8, a + 1, 0, -5, 1 << 70, big + 8, 0x1000, "x"):
        with pytest.raises(InvalidFreeError):
            h.free(bad)
    assert h.stats() == before
    h.free(a)
    with pytest.raises(DoubleFreeError):
        h.free(a)
    h.free(big)
    with pytest.raises(DoubleFreeError):
        h.free(big)
    assert issubclass(DoubleFreeError, InvalidFreeError) and issubclass(InvalidFreeError, ValueError)
    assert h.lookup(b) is not None
    h.check()


def test_double_free_after_the_span_went_back(make_heap):
    h = make_heap()
    objs = [h.alloc(2048) for _ in range(4)]  # one 1-page span of 4 slots
    s = span_of(h, objs[0])
    assert all(span_of(h, o) is s for o in objs)
    h.release_mcache()
    inuse = h.stats()["HeapInuse"]
    h.free_many(objs)
    assert s.state == "dead" and h.stats()["HeapInuse"] == inuse - PAGE
    with pytest.raises(DoubleFreeError):
        h.free(objs[2])
    with pytest.raises(InvalidFreeError):
        h.free(objs[2] + 16)
    h.check()


def test_empty_cached_span_goes_back_when_the_mcache_lets_go(make_heap):
    h = make_heap()
    objs = [h.alloc(1024) for _ in range(3)]
    s = span_of(h, objs[0])
    h.free_many(objs)
    assert s.state == "in_use" and s.alloc_count == 0  # still the mcache's
    h.check()
    h.release_mcache()
    assert s.state == "dead"
    h.check()


def test_free_many_is_all_or_nothing(make_heap):
    h = make_heap()
    addrs = h.alloc_many(32, 100)
    big = h.alloc(50_000)
    before = h.stats()
    with pytest.raises(InvalidFreeError):
        h.free_many(np.concatenate([addrs[:10], [addrs[5] + 8], addrs[10:]]))
    with pytest.raises(DoubleFreeError):
        h.free_many([int(addrs[3]), big, int(addrs[3])])
    with pytest.raises(InvalidFreeError):
        h.free_many([big + PAGE])
    with pytest.raises(InvalidFreeError):
        h.free_many([1.5])
    assert h.stats() == before
    h.free_many([])
    h.free_many(np.append(addrs[::-1], big).astype(np.uint64))
    st = h.stats()
    assert st["HeapObjects"] == 0 and st["Frees"] == 101
    with pytest.raises(DoubleFreeError):
        h.free_many(addrs[:1])
    h.check()


# -- memory access ------------------------------------------------------------------------------------
def test_words_read_write(make_heap):
    h = make_heap()
    a = h.alloc(40)  # class 48: 6 usable words
    assert h.object_size(a) == 48
    h.write_word(a, 1)
    h.write_word(a + 40, -1)
    assert h.read_word(a) == 1 and h.read_word(a + 40) == (1 << 64) - 1
    for bad in (a + 48, a + 3, a - 8):
        with pytest.raises(ObjectBoundsError):
            h.write_word(bad, 1)
    with pytest.raises(ObjectBoundsError):
        h.read_word(0x10)
    with pytest.raises(ValueError):
        h.write_word(a, 1 << 64)
    h.write(a + 3, b"hello world")
    assert h.read(a + 3, 11) == b"hello world"
    assert h.read(a, 0) == b""
    with pytest.raises(ObjectBoundsError):
        h.write(a + 40, b"123456789")  # past the end
    with pytest.raises(ObjectBoundsError):
        h.read(a + 47, 2)
    w = h.words(a + 17)
    assert w.dtype == np.uint64 and len(w) == 6 and w[5] == (1 << 64) - 1
    w[5] = 9
    del w
    assert h.read_word(a + 40) == 9
    h.free(a)
    for f, args in ((h.read_word, (a,)), (h.words, (a,)), (h.read, (a, 1)), (h.object_size, (a,))):
        with pytest.raises(ObjectBoundsError):
            f(*args)
    assert h.lookup(a) is None
    h.check()


def test_pointers_must_stay_valid(make_heap):
    h = make_heap()
    obj = h.alloc(32, pointers=[1])
    target = h.alloc(100)
    h.write_pointer(obj, 1, target + 50)  # interior pointers are fine
    assert h.read_word(obj + 8) == target + 50
    h.write_pointer(obj, 1, 0)
    with pytest.raises(PointerSlotError):
        h.write_pointer(obj, 0, target)  # a scalar word
    with pytest.raises(ObjectBoundsError):
        h.write_pointer(obj, 4, target)
    with pytest.raises(InvalidPointerError):
        h.write_pointer(obj, 1, 0x1234)
    with pytest.raises(InvalidPointerError):
        h.write_word(obj + 8, 12345)  # a pointer word takes pointers only
    with pytest.raises(PointerSlotError):
        h.write(obj + 4, b"12345678")
    h.write(obj, b"1234")  # scalar word 0 is fine
    h.write_word(obj + 8, target)
    with pytest.raises(PointerSlotError):
        h.write_pointer(target, 0, obj)  # noscan object
    h.free(target)
    with pytest.raises(InvalidPointerError):
        h.write_pointer(obj, 1, target)  # dangling
    h.check()


def test_lookup_outside_objects(make_heap):
    h = make_heap()
    a = h.alloc(16)
    s = span_of(h, a)
    assert h.lookup(s.limit) is None  # the span's tail holds no object
    assert h.lookup(a + 16) is None  # the next slot is free
    assert h.lookup(0) is None and h.lookup(-1) is None and h.lookup("x") is None
    assert h.lookup(a + 15).base == a


# -- statistics -----------------------------------------------------------------------------------------
def test_stats_use_go_names(make_heap):
    h = make_heap()
    st0 = h.stats()
    assert st0["Mallocs"] == st0["HeapObjects"] == 0
    small = [h.alloc(100) for _ in range(10)]  # class 112
    many = h.alloc_many(8, 2000)  # class 8
    big = h.alloc(40_000)  # 5 pages
    h.free(small[0])
    h.free_many(many[:1000])
    st = h.stats()
    assert st["Mallocs"] == 2011 and st["Frees"] == 1001 and st["HeapObjects"] == 1010
    assert st["TotalAlloc"] == 10 * 112 + 2000 * 8 + 5 * PAGE
    assert st["HeapAlloc"] == 9 * 112 + 1000 * 8 + 5 * PAGE
    assert st["HeapSys"] == st["HeapInuse"] + st["HeapIdle"] == h.mheap.mapped_bytes
    assert st["HeapReleased"] <= st["HeapIdle"]
    by = st["by_size"]
    assert by[1]["Size"] == 8 and by[1]["Mallocs"] == 2000 and by[1]["Frees"] == 1000
    assert by[0]["Mallocs"] == 1 and by[0]["Objects"] == 1 and by[0]["Spans"] == 1
    c112 = alloc_size_class(100, False)[0]
    assert by[c112]["Objects"] == 9 and by[c112]["Spans"] == 1
    assert sum(b["Spans"] for b in by) == sum(1 for _ in h.mheap.in_use_spans())
    h.check()


def test_check_catches_corruption(make_heap):
    h = make_heap()
    a = h.alloc(64)
    h.alloc(64)
    h.check()
    s = span_of(h, a)
    s.alloc_bits[5] = True  # a slot allocated behind the heap's back
    with pytest.raises(HeapInvariantError):
        h.check(os=False)
    s.alloc_bits[5] = False
    h.check()


# -- sizes and counts ----------------------------------------------------------------------------------
def test_bad_sizes(make_heap):
    h = make_heap()
    for bad in (0, -1, 1.5, "8", None):
        with pytest.raises(InvalidSizeError):
            h.alloc(bad)
        with pytest.raises(InvalidSizeError):
            h.alloc_many(bad, 3)
    with pytest.raises(InvalidSizeError):
        h.alloc_many(8, -1)
    assert len(h.alloc_many(8, 0)) == 0
    assert issubclass(InvalidSizeError, ValueError) and issubclass(InvalidSizeError, HeaplabError)
    assert h.alloc(np.int64(24)) % 8 == 0
    h.check()


def test_bad_arguments_name_the_problem(make_heap):
    # Bools are not numbers here, and every refusal is a heaplab error naming the call.
    h = make_heap(gogc="off")
    a = h.alloc(64, True)
    bad = [
        (lambda: h.alloc(True), InvalidSizeError, "size must be an integer, not bool"),
        (lambda: h.alloc_many(8, True), InvalidSizeError, "n must be an integer, not bool"),
        (lambda: h.alloc(16, 0), InvalidSizeError, r"as a sequence \(\[0\]\)"),
        (lambda: h.alloc(16, np.uint64([2**63 + 1])), InvalidSizeError, "pointer word 9223372036854775809"),
        (lambda: h.scavenge(True), InvalidSizeError, "scavenge: nbytes must be an integer, not bool"),
        (lambda: h.scavenge(-1), InvalidSizeError, "scavenge: nbytes must be >= 0"),
        (lambda: h.scavenge(1.5), InvalidSizeError, "not float"),
        (lambda: h.grow(1.5), InvalidSizeError, "grow: npages must be an integer, not float"),
        (lambda: h.write_pointer(a, True, 0), TypeError, "not bool"),
        (lambda: h.set_gc_percent(True), InvalidSizeError, "GOGC must be an integer or a string, not bool"),
        (lambda: h.set_gc_percent("abc"), InvalidSizeError, "malformed GOGC 'abc'"),
        (lambda: h.set_memory_limit(1.5), InvalidSizeError, "memory limit must be an integer"),
        (lambda: h.free_many([-1.0]), InvalidFreeError, "must be 64-bit integers, got float64"),
    ]
    before = (h.stats(), h.gc_percent, h.memory_limit)
    for call, exc, words in bad:
        with pytest.raises(exc, match=words):
            call()
    assert (h.stats(), h.gc_percent, h.memory_limit) == before
    assert h.set_memory_limit(-1) == before[2]  # negative: only reads it, as in Go
    h.check()


@pytest.mark.parametrize("args, words", [
    ({"gogc": "abc"}, "malformed GOGC"), ({"gogc": True}, "not bool"), ({"gogc": 1.5}, "not float"),
    ({"memory_limit": -1}, "memory_limit must be >= 0"), ({"memory_limit": "5XB"}, "malformed memory limit"),
])
def test_bad_constructor_settings_leave_the_sysmem_usable(heap_sm, args, words):
    with pytest.raises(InvalidSizeError, match=words):
        Heap(heap_sm, **args)
    h = Heap(heap_sm, gogc="off")  # no half-made heap holds the SysMem
    h.alloc(64)
    h.check()


def test_a_bad_arena_size_gives_back_the_sysmem_it_made(monkeypatch):
    import sysmem

    closed = []
    real_close = sysmem.SysMem.close
    monkeypatch.setattr(sysmem.SysMem, "close", lambda self: (closed.append(self), real_close(self)))
    with pytest.raises(ValueError, match="arena_bytes must be a power of two"):
        Heap(backend="simulated", arena_bytes=12345)
    assert len(closed) == 1


def test_explicit_godebug_gctrace_wins_over_the_environment(monkeypatch):
    monkeypatch.setenv("GODEBUG", "gctrace=1")
    with Heap(backend="simulated", godebug="gctrace=0", gogc="off") as h:
        assert h.gctrace == 0
    with Heap(backend="simulated", godebug="", gogc="off") as h:
        assert h.gctrace == 1


def test_sizes_beyond_the_address_space_fail_fast(make_heap):
    h = make_heap(gogc="off")
    before = h.stats()
    for call in (lambda: h.alloc(2**49), lambda: h.alloc(2**70), lambda: h.alloc_many(2**49, 10)):
        with pytest.raises(HeapOutOfMemoryError):
            call()
    assert h.grow(2**60) is None
    assert h.stats() == before
    h.check()


# -- alloc_many ---------------------------------------------------------------------------------------
def _workload(h: Heap, use_many: bool) -> list[int]:
    """The same allocations, by alloc_many or one by one, on a heap fragmented first."""
    out: list[int] = []
    pre = [h.alloc(s) for s in (64, 64, 3000, 100_000, 64, 9000, 100_000, 2048)]
    h.free(pre[3])
    h.free(pre[1])
    h.free(pre[5])
    for size, n, ptrs in ((64, 300, None), (64 << 10, 40, None), (3000, 25, True), (16, 1200, None),
                          (100_000, 3, [0]), (1024, 70, None)):
        if use_many:
            out += h.alloc_many(size, n, ptrs).tolist()
        else:
            out += [h.alloc(size, ptrs) for _ in range(n)]
    return out


def test_alloc_many_places_objects_as_alloc_would():
    def run(use_many: bool):
        sm = new_sysmem("simulated-linux")
        h = Heap(sm)
        addrs = _workload(h, use_many)
        st = h.stats()
        h.check()
        return addrs, {k: v for k, v in st.items()}, sm

    one, st_one, _ = run(False)
    many, st_many, _ = run(True)
    assert one == many
    assert st_one == st_many


@pytest.mark.parametrize("seed", range(6))
def test_alloc_many_matches_alloc_on_random_workloads(seed):
    """Random batches, frees, mcache releases and scavenging: alloc_many and alloc give
    the same addresses and the same heap, step for step. (This caught alloc_many
    asking the mheap for too many fresh spans when the cached span had freed slots,
    and filing a used-up last span as full where alloc leaves it cached.)"""
    import random

    def run(many: bool):
        rng = random.Random(seed)
        personality = rng.choice(["linux", "windows", "sbrk"])
        # A malloc/free trace: the objects are never rooted, so no collector (GOGC=off).
        h = Heap(backend="simulated", personality=personality, godebug="",
                 arena_bytes=rng.choice([4 << 20, 64 << 20]), gogc="off")
        live: list[int] = []
        trace = []
        for _ in range(50):
            r = rng.random()
            if r < 0.5:
                size = rng.choice([8, 16, 24, 512, 1024, 3000, 8192, 32761, 40000, 100000, 200000])
                n = rng.randint(0, 12 if size > 32760 else 60)
                ptrs = rng.choice([None, True, [0]])
                got = h.alloc_many(size, n, ptrs).tolist() if many else [h.alloc(size, ptrs) for _ in range(n)]
                live += got
                trace.append(got)
            elif r < 0.7 and live:
                chosen = rng.sample(live, rng.randint(0, min(30, len(live))))
                for a in chosen:
                    live.remove(a)
                h.free_many(np.array(chosen, dtype=np.uint64))
            elif r < 0.8:
                h.release_mcache()
            elif r < 0.9:
                trace.append(h.scavenge(int(h.mheap.heap_sys * rng.choice([0.25, 1.0]))))
            else:
                trace.append(h.scavenge())
            trace.append(h.stats())
        h.check()
        h.close()
        return trace

    assert run(True) == run(False)


def test_alloc_many_covers_cached_partial_and_fresh_spans(make_heap):
    h = make_heap()
    first = [h.alloc(256) for _ in range(5)]  # a cached span with free slots
    addrs = h.alloc_many(256, 500)
    assert len(set(addrs.tolist()) | set(first)) == 505
    h.free_many(addrs[100:400:3])  # holes in full spans -> partial spans
    h.release_mcache()
    again = h.alloc_many(256, 150)
    assert set(addrs[100:400:3].tolist()) <= set(again.tolist())
    live = {int(a) for a in np.concatenate([addrs, again, first]) if h.lookup(int(a))}
    ends = sorted((a, a + 256) for a in live)
    assert all(e <= b for (_, e), (b, _) in zip(ends, ends[1:]))
    h.check()


# -- out of memory -----------------------------------------------------------------------------------
def _simulated(backend_name: str) -> bool:
    return backend_name.startswith("simulated")


@pytest.mark.parametrize("what", ["alloc", "alloc_many", "large", "large_many"])
def test_out_of_address_space(make_heap, what):
    if not _simulated(make_heap.backend):
        pytest.skip("failure injection needs a simulated backend")
    h = make_heap()
    h.sm.backend.fail_next("reserve", 1000)
    before = h.stats()
    call = {
        "alloc": lambda: h.alloc(64),
        "alloc_many": lambda: h.alloc_many(64, 5000),
        "large": lambda: h.alloc(1 << 20),
        "large_many": lambda: h.alloc_many(1 << 20, 3),
    }[what]
    with pytest.raises(HeapOutOfMemoryError) as e:
        call()
    assert isinstance(e.value, MemoryError)
    assert h.stats() == before
    h.check()
    h.sm.backend.fail_next("reserve", 0)
    call()
    h.check()


def test_out_of_memory_part_way_through_alloc_many(make_heap):
    if not _simulated(make_heap.backend):
        pytest.skip("failure injection needs a simulated backend")
    h = make_heap(arena_bytes=4 << 20)
    keep = h.alloc_many(64, 1000)
    h.sm.backend.fail_next("reserve", 1000)
    before = h.stats()
    with pytest.raises(HeapOutOfMemoryError):
        h.alloc_many(4096, 2000)  # needs more than the one 4 MiB arena
    assert h.stats()["HeapObjects"] == before["HeapObjects"]
    h.check()
    more = h.alloc_many(4096, 100)  # what fits still works
    h.sm.backend.fail_next("reserve", 0)
    h.alloc_many(4096, 2000)
    assert h.lookup(int(keep[0])) and h.lookup(int(more[-1]))
    h.check()


@pytest.mark.parametrize("what", ["scan_header", "scan_small", "large_scan", "many_scan",
                                  "many_large_scan", "many_partial", "dirty_noscan"])
def test_out_of_memory_on_first_touch_changes_nothing(make_heap, what):
    # A simulated machine runs out of physical memory when pages are touched (as
    # Linux does), not when they are committed: the allocation that would write to
    # them must fail whole, whichever span it was going to use.
    if make_heap.backend not in ("simulated-linux", "simulated-sbrk"):
        pytest.skip("touch-time exhaustion is modelled where commit does not count")
    h = make_heap(gogc="off")
    backend = h.sm.backend
    h.free(h.alloc(1 << 20))  # 1 MiB of free, dirty, Ready pages: reused spans need zeroing
    if what == "many_partial":
        keep = h.alloc_many(1000, 3, True)  # a partial span (8 slots), touched
        h.release_mcache()
        h.free(int(keep[0]))
    h.release_mcache()
    backend.physical_memory = backend.resident_bytes() + h.sm.page_size  # one more page
    before = h.stats()
    call = {
        "scan_header": lambda: h.alloc(1000, True),
        "scan_small": lambda: h.alloc(64, [0]),
        "large_scan": lambda: h.alloc(100_000, True),
        "many_scan": lambda: h.alloc_many(1000, 10, True),
        "many_large_scan": lambda: h.alloc_many(100_000, 3, True),
        "many_partial": lambda: h.alloc_many(1000, 30, True),
        "dirty_noscan": lambda: h.alloc_many(4096, 100),
    }[what]
    with pytest.raises(HeapOutOfMemoryError):
        call()
    assert h.stats() == before
    h.check()
    backend.physical_memory = None
    call()
    h.check()


def test_windows_commit_failure(make_heap):
    if make_heap.backend != "simulated-windows":
        pytest.skip("commit accounting is a Windows thing")
    h = make_heap(sysmem_options={"physical_memory": 1 << 20})
    addrs = h.alloc_many(4096, 200)  # 800 KiB committed
    with pytest.raises(HeapOutOfMemoryError):
        h.alloc_many(4096, 100)
    with pytest.raises(HeapOutOfMemoryError):
        h.alloc(512 << 10)
    h.check()
    h.free_many(addrs)
    h.release_mcache()
    h.scavenge()
    h.alloc_many(4096, 200)
    h.check()


# -- views and release ---------------------------------------------------------------------------
def test_scavenging_after_frees_with_views_dropped(make_heap):
    h = make_heap()
    addrs = h.alloc_many(8192, 64)
    for a in addrs:
        h.words(int(a))[:3] = 7
    h.free_many(addrs)
    h.release_mcache()  # the span of the last object is still cached, as after alloc
    gc.collect()
    released = h.scavenge()
    assert released >= 64 * 8192
    st = h.stats()
    assert st["HeapReleased"] >= released
    h.check()


def test_close_gives_memory_back(backend_name):
    if backend_name == "simulated-sbrk":
        pytest.skip("sbrk memory is never given back")
    new_sysmem(backend_name).close()  # skips where the backend cannot run
    kind, _, personality = backend_name.partition("-")
    h = Heap(backend=kind, **({"personality": personality} if personality else {}))
    addrs = h.alloc_many(100, 1000)
    a = h.alloc(24)
    arena = max(h.sm.root_regions.regions(), key=lambda r: r[1])
    assert h.sm.backend.inspect(*arena).mapped.all()
    h.close()
    assert not h.sm.backend.inspect(*arena).mapped.any()
    # nothing can touch the memory any more
    for call in (lambda: h.alloc(24), lambda: h.alloc(24, True), lambda: h.alloc_many(8, 10),
                 lambda: h.read_word(a), lambda: h.lookup(int(addrs[0])), lambda: h.free(a),
                 lambda: h.free_many(addrs), lambda: h.stats(), lambda: h.check(),
                 lambda: h.add_root(a), lambda: h.root_slots(1), lambda: h.set_gc_percent(50),
                 lambda: h.set_memory_limit(1 << 30)):
        with pytest.raises(HeapError):
            call()
    h.close()  # again: nothing to do
