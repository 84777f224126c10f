"""Bad arguments at every public entry point of sysmem: a clear exception that names the
argument, and nothing changed; numpy integers accepted and turned into plain ints.

Every address, size, hint, ``align`` and ``prepared`` count goes through one validator
(``SysMem._aligned`` on :func:`sysmem._ints.as_int`): bool, float and None are not
integers (TypeError), values outside [0, 2**64) are ValueError, never a raw cffi
OverflowError, a numpy float in the counters or a format error.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest

import sysmem
from sysmem import DebugSettings, NotReservedError, StatOverflowError, SysMem, SysMemStat

P = 4096
U64 = 1 << 64

BACKENDS = ["linux", "simulated-linux", "simulated-windows", "simulated-sbrk"]


@pytest.fixture(params=BACKENDS)
def sm(request, make_sm_any):
    return make_sm_any(request.param)


@pytest.fixture
def make_sm_any(request):
    """``make(kind, ledger=True) -> SysMem`` for "linux" or "simulated-<personality>"."""
    made: list[SysMem] = []

    def make(kind: str, ledger: bool = True) -> SysMem:
        if kind == "linux":
            if not sys.platform.startswith("linux"):
                pytest.skip("needs the real Linux backend")
            make_sm = request.getfixturevalue("make_sm")
            return make_sm("", ledger=ledger)
        s = SysMem("simulated", personality=kind.split("-")[1], ledger=ledger, godebug="")
        made.append(s)
        return s

    yield make
    for s in made:
        s.close()


def state_of(sm: SysMem, *stats: SysMemStat) -> tuple:
    """Everything a refused call must leave alone (the kernel side is tested elsewhere)."""
    return (
        sm.mapped_ready,
        sorted((s.name, s.load()) for s in [*sm.stats.values(), *stats]),
        sm.root_regions.regions(),
        sm.runs() if sm.ledger is not None else None,
        sm.accessible_ranges(),
        sm.live_views(0, U64 - 1),
    )


# (exception, words the message must contain, call(sm, stat, p, q)): p is a Ready
# (sys_alloc'd) page, q a 4-page reservation.
BAD = {
    # sizes
    "alloc size bool": (TypeError, "size.*bool", lambda sm, st, p, q: sm.sys_alloc(True, st)),
    "alloc size float": (TypeError, "size.*float", lambda sm, st, p, q: sm.sys_alloc(4096.0, st)),
    "alloc size None": (TypeError, "size.*NoneType", lambda sm, st, p, q: sm.sys_alloc(None, st)),
    "alloc size str": (TypeError, "size.*str", lambda sm, st, p, q: sm.sys_alloc("4096", st)),
    "alloc size 2**64": (ValueError, "size", lambda sm, st, p, q: sm.sys_alloc(U64, st)),
    "alloc size np uint64 max": (ValueError, "unaligned", lambda sm, st, p, q: sm.sys_alloc(np.uint64(U64 - 1), st)),
    "alloc size negative": (ValueError, "size", lambda sm, st, p, q: sm.sys_alloc(-P, st)),
    "alloc size np float": (TypeError, "size.*float", lambda sm, st, p, q: sm.sys_alloc(np.float64(P), st)),
    "alloc size np bool": (TypeError, "size", lambda sm, st, p, q: sm.sys_alloc(np.True_, st)),
    "reserve size 2**64": (ValueError, "size", lambda sm, st, p, q: sm.sys_reserve(None, U64)),
    "reserve size 2**64 - page": (None, "", lambda sm, st, p, q: sm.sys_reserve(None, U64 - P)),
    "free size bool": (TypeError, "size.*bool", lambda sm, st, p, q: sm.sys_free(p, True, st)),
    "free size float": (TypeError, "size.*float", lambda sm, st, p, q: sm.sys_free(p, float(P), st)),
    "unreserve size 2**64": (ValueError, "size", lambda sm, st, p, q: sm.sys_unreserve(q, U64)),
    "map size float": (TypeError, "size.*float", lambda sm, st, p, q: sm.sys_map(q, 4096.0, st)),
    "map size bool": (TypeError, "size.*bool", lambda sm, st, p, q: sm.sys_map(q, True, st)),
    "unused size float": (TypeError, "size.*float", lambda sm, st, p, q: sm.sys_unused(p, 4096.0)),
    "fault size None": (TypeError, "size.*NoneType", lambda sm, st, p, q: sm.sys_fault(p, None)),
    # addresses
    "map address 2**64": (ValueError, "address", lambda sm, st, p, q: sm.sys_map(U64, P, st)),
    "map address negative": (ValueError, "address", lambda sm, st, p, q: sm.sys_map(-P, P, st)),
    "map range past 2**64": (ValueError, "64-bit address space", lambda sm, st, p, q: sm.sys_map(U64 - P, 2 * P, st)),
    "map address float": (TypeError, "address.*float", lambda sm, st, p, q: sm.sys_map(float(q), P, st)),
    "used address bool": (TypeError, "address.*bool", lambda sm, st, p, q: sm.sys_used(True, P, 0)),
    "unused address float": (TypeError, "address.*float", lambda sm, st, p, q: sm.sys_unused(4096.0, P)),
    "unused address 2**64": (ValueError, "address", lambda sm, st, p, q: sm.sys_unused(U64, P)),
    "fault address None": (TypeError, "address.*NoneType", lambda sm, st, p, q: sm.sys_fault(None, P)),
    "free address np float": (TypeError, "address.*float", lambda sm, st, p, q: sm.sys_free(np.float64(p), P, st)),
    "unreserve address negative": (ValueError, "address", lambda sm, st, p, q: sm.sys_unreserve(-P, P)),
    # sys_used's prepared
    "used prepared float": (TypeError, "prepared.*float", lambda sm, st, p, q: sm.sys_used(p, P, 4096.0)),
    "used prepared bool": (TypeError, "prepared.*bool", lambda sm, st, p, q: sm.sys_used(p, P, True)),
    "used prepared None": (TypeError, "prepared.*NoneType", lambda sm, st, p, q: sm.sys_used(p, P, None)),
    # hints of sys_reserve / sys_reserve_aligned
    "reserve hint negative": (ValueError, "hint", lambda sm, st, p, q: sm.sys_reserve(-P, P)),
    "reserve hint 2**64": (ValueError, "hint", lambda sm, st, p, q: sm.sys_reserve(U64, P)),
    "reserve hint float": (TypeError, "hint.*float", lambda sm, st, p, q: sm.sys_reserve(4096.0, P)),
    "reserve hint bool": (TypeError, "hint.*bool", lambda sm, st, p, q: sm.sys_reserve(True, P)),
    "reserve hint str": (TypeError, "hint.*str", lambda sm, st, p, q: sm.sys_reserve("x", P)),
    "aligned hint negative": (ValueError, "hint", lambda sm, st, p, q: sm.sys_reserve_aligned(-P, 1 << 20, 1 << 21)),
    "aligned hint 2**64": (ValueError, "hint", lambda sm, st, p, q: sm.sys_reserve_aligned(U64, 1 << 20, 1 << 21)),
    "aligned hint float": (TypeError, "hint.*float", lambda sm, st, p, q: sm.sys_reserve_aligned(4096.0, 1 << 20, 1 << 21)),
    "aligned size 2**64": (ValueError, "size", lambda sm, st, p, q: sm.sys_reserve_aligned(None, U64, P)),
    "aligned size bool": (TypeError, "size.*bool", lambda sm, st, p, q: sm.sys_reserve_aligned(None, True, P)),
    "aligned align float": (TypeError, "align.*float", lambda sm, st, p, q: sm.sys_reserve_aligned(None, P, 4096.0)),
    "aligned align bool": (TypeError, "align.*bool", lambda sm, st, p, q: sm.sys_reserve_aligned(None, P, True)),
    "aligned align 2**64": (ValueError, "align", lambda sm, st, p, q: sm.sys_reserve_aligned(None, P, U64)),
    # the hint operations
    "huge_page address float": (TypeError, "address.*float", lambda sm, st, p, q: sm.sys_huge_page(1.5, P)),
    "huge_page address 2**70": (ValueError, "address", lambda sm, st, p, q: sm.sys_huge_page(1 << 70, P)),
    "huge_page size negative": (ValueError, "size", lambda sm, st, p, q: sm.sys_huge_page(p, -1)),
    "no_huge_page address float": (TypeError, "address.*float", lambda sm, st, p, q: sm.sys_no_huge_page(0.0, P)),
    "collapse size bool": (TypeError, "size.*bool", lambda sm, st, p, q: sm.sys_huge_page_collapse(p, True)),
    # views and inspection
    "view address float": (TypeError, "address.*float", lambda sm, st, p, q: sm.view(0.5, P)),
    "view address None": (TypeError, "address.*NoneType", lambda sm, st, p, q: sm.view(None, P)),
    "view size float": (TypeError, "size.*float", lambda sm, st, p, q: sm.view(p, 4096.0)),
    "view address 2**64": (ValueError, "address", lambda sm, st, p, q: sm.view(U64, P)),
    "view dtype V0": (ValueError, "itemsize 0", lambda sm, st, p, q: sm.view(p, P, "V0")),
    "view dtype object": (TypeError, "object", lambda sm, st, p, q: sm.view(p, P, object)),
    "live_views address float": (TypeError, "address.*float", lambda sm, st, p, q: sm.live_views(1.5, P)),
    "os_pages address negative": (ValueError, "address", lambda sm, st, p, q: sm.os_pages(-P, P)),
    # the stat argument and the stats themselves
    "free stat by name": (TypeError, "SysMemStat", lambda sm, st, p, q: sm.sys_free(p, P, "other_sys")),
    "stat add float": (TypeError, "add.*float", lambda sm, st, p, q: st.add(0.5)),
    "stat add bool": (TypeError, "add.*bool", lambda sm, st, p, q: st.add(True)),
    "stat check_add float": (TypeError, "check_add.*float", lambda sm, st, p, q: st.check_add(0.5)),
    "stat add past 2**64": (StatOverflowError, "overflow", lambda sm, st, p, q: st.add(U64)),
    "stat value float": (TypeError, "value.*float", lambda sm, st, p, q: SysMemStat("x", value=1.5)),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_argument_raises_a_clear_error_and_changes_nothing(sm, case):
    exc, words, call = BAD[case]
    st = sm.stat("other_sys")
    p = sm.sys_alloc(P, st)
    q = sm.sys_reserve(None, 4 * P)
    before = state_of(sm, st)
    if exc is None:  # a legal extreme: the OS may say no, but no error escapes
        r = call(sm, st, p, q)
        if r is not None:
            sm.sys_unreserve(r, U64 - P)
        assert state_of(sm, st) == before
        return
    with pytest.raises(exc, match=words) as info:
        call(sm, st, p, q)
    if exc is not StatOverflowError:
        assert not isinstance(info.value, OverflowError), f"raw {type(info.value).__name__}: {info.value}"
    assert state_of(sm, st) == before


def test_godebug_of_the_wrong_type_is_refused():
    with pytest.raises(TypeError, match="godebug"):
        SysMem("simulated", godebug=5)
    with pytest.raises(TypeError, match="godebug"):
        DebugSettings().apply(None)


# -- numpy integers become plain ints -----------------------------------------------------


def _plain(*values) -> bool:
    return all(type(v) is int for v in values)


@pytest.mark.parametrize("kind", BACKENDS)
def test_numpy_sizes_and_addresses_leave_plain_ints_in_the_accounting(make_sm_any, kind):
    """Regression: np.uint64 + np.int64 sizes made stat and mapped_ready np.float64, and
    np.uint64 then made sys_free raise a raw OverflowError and strand the region."""
    sm = make_sm_any(kind)
    st = sm.stat("other_sys")
    a = sm.sys_alloc(np.uint64(4 * P), st)
    b = sm.sys_alloc(np.int64(4 * P), st)
    assert _plain(a, b, st.load(), sm.mapped_ready) and st.load() == sm.mapped_ready == 8 * P
    q = sm.sys_reserve(np.uint64(0), np.int32(8 * P))
    sm.sys_map(np.uint64(q), np.int64(8 * P), st)
    sm.sys_used(np.int64(q), np.uint64(8 * P), np.uint64(8 * P))
    sm.sys_unused(np.uint64(q), np.uint16(P))
    sm.sys_used(q, P, np.int64(P))
    assert _plain(st.load(), sm.mapped_ready) and sm.mapped_ready == 16 * P
    assert all(_plain(base, size) for base, size in sm.root_regions.regions())
    assert sm.view(np.uint64(a), np.int64(P)).nbytes == P
    sm.sys_free(np.uint64(a), np.uint64(4 * P), st)  # uint64 arithmetic used to overflow
    sm.sys_free(b, 4 * P, st)
    assert _plain(st.load(), sm.mapped_ready) and st.load() == 8 * P and sm.mapped_ready == 8 * P
    sm.check()


def test_stat_deltas_become_plain_ints():
    st = SysMemStat("s", value=np.uint64(10))
    st.add(np.uint64(5))
    st.add(np.int64(-3))
    st.check_add(np.int8(-12))
    assert st.load() == 12 and _plain(st.load())
    st.add((1 << 60) + 1)
    st.add(np.uint64(0))  # would have turned the counter into an inexact float
    assert st.load() == (1 << 60) + 13 and _plain(st.load())


def test_values_that_reach_the_end_of_the_address_space_are_refused_by_ownership():
    """[2**64 - page, 2**64) is a valid range, so the error is about ownership."""
    sm = SysMem("simulated", godebug="")
    try:
        with pytest.raises(NotReservedError):
            sm.sys_map(U64 - P, P, sm.stat("other_sys"))
        with pytest.raises(NotReservedError):
            sm.sys_no_huge_page(U64 - P, P)
    finally:
        sm.close()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the default SysMem is Linux")
def test_the_module_functions_validate_too():
    with pytest.raises(TypeError, match="size.*float"):
        sysmem.sys_reserve(None, 4096.0)
    with pytest.raises(ValueError, match="hint"):
        sysmem.sys_reserve_aligned(-P, P, P)
