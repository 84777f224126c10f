"""Shared fixtures: fresh Linux ``SysMem`` objects that give back all their memory.

``linux_sm`` is a ``SysMem("linux")`` with Go's defaults (GODEBUG from the environment is
ignored, so runs are reproducible). ``make_sm("madvdontneed=0", ledger=False, ...)`` builds
others. At teardown every region a SysMem still owns is released: through the public
API where its states allow (``sys_free`` / ``sys_unreserve``), otherwise straight to the
backend. A region that a live view still exposes is left mapped rather than unmapped
under the view (which could crash the interpreter later).
"""

from __future__ import annotations

import gc
import sys

import pytest

from sysmem import State, SysMem, SysMemStat


def _release_all(sm: SysMem) -> None:
    if sm.ledger is not None:
        regions = [(r.base, r.size, sm.ledger.runs(r)) for r in sm.ledger.regions()]
    else:
        regions = [(base, size, None) for base, size in sm.root_regions.regions()]
    if any(sm.live_views(base, size) for base, size, _ in regions):
        gc.collect()  # views that only a finished test's frames or cycles kept alive
    for base, size, runs in regions:
        if sm.live_views(base, size):
            continue  # never unmap under a live view
        try:
            if runs and all(r.state is State.READY for r in runs) and len({id(r.stat) for r in runs}) == 1:
                stat = runs[0].stat
                if stat.load() >= size:
                    sm.sys_free(base, size, stat)
                    continue
            if runs and all(r.state is State.RESERVED for r in runs):
                sm.sys_unreserve(base, size)
                continue
        except Exception:  # noqa: BLE001 - fall back to the raw release below
            pass
        sm.backend.free(base, size)
    sm.close()


@pytest.fixture
def make_sm():
    """Factory: ``make_sm(godebug="", backend="linux", ledger=True, **options) -> SysMem``.

    ``godebug`` is a GODEBUG string or a ``DebugSettings``; ``backend`` may be a backend
    instance (e.g. ``LinuxBackend(debug, syscalls=fake)``; pass the same ``debug``).
    """
    if not sys.platform.startswith("linux"):
        pytest.skip("needs the real Linux backend")
    made: list[SysMem] = []

    def make(godebug="", *, backend="linux", ledger: bool = True, **options) -> SysMem:
        sm = SysMem(backend, ledger=ledger, godebug=godebug, **options)
        made.append(sm)
        return sm

    yield make
    for sm in reversed(made):
        _release_all(sm)


@pytest.fixture
def linux_sm(make_sm) -> SysMem:
    """A fresh ``SysMem("linux")`` with Go's Linux defaults (madvdontneed=1)."""
    return make_sm("")


def pytest_collection_modifyitems(config, items):
    """``slow`` cases and ``go`` comparisons with Go's own runtime stay out of the default
    run (which still covers every feature); ``-m slow`` / ``-m go`` run them."""
    expr = config.getoption("markexpr") or ""
    for mark in ("slow", "go"):
        if mark in expr:
            continue
        skip = pytest.mark.skip(reason=f"{mark}: run with -m {mark}")
        for item in items:
            if item.get_closest_marker(mark):
                item.add_marker(skip)


def _check_transitions_table(sm: SysMem) -> None:
    """Run every operation of ``sysmem.TRANSITIONS`` once on ``sm`` (ledger on) and compare
    the table with what happened: the states the range was in and ends in, the change of
    the stat passed in (``stat_delta``) and of ``mapped_ready`` (``mapped_ready_delta``).
    Leaves no region behind."""
    from sysmem import TRANSITIONS

    ps, st = sm.page_size, SysMemStat("transitions")
    n = 16 * ps

    def states(v: int, size: int) -> set:
        got = {r.state for r in sm.runs() if r.start < v + size and v < r.end}
        return got or {State.NONE}

    def run(op: str, call, v, size: int, prepared: int = 0):
        t = TRANSITIONS[op]
        amount = {"": 0, "+n": size, "-n": -size, "+prepared": prepared}
        if v is not None:
            assert states(v, size) <= set(t.from_states), (op, states(v, size))
            before = states(v, size)
        s0, m0 = st.load(), sm.mapped_ready
        out = call()
        if v is None:  # the operation chose the address
            v = out[0] if isinstance(out, tuple) else out
            size = out[1] if isinstance(out, tuple) else size
            assert {State.NONE} <= set(t.from_states), op
        assert states(v, size) == ({t.to_state} if t.to_state is not None else before), op
        assert st.load() - s0 == amount[t.stat_delta], (op, "stat", st.load() - s0)
        assert sm.mapped_ready - m0 == amount[t.mapped_ready_delta], (op, "mapped_ready")
        return out

    a = run("sys_alloc", lambda: sm.sys_alloc(n, st), None, n)
    q = run("sys_reserve", lambda: sm.sys_reserve(None, n), None, n)
    r, rsize = run("sys_reserve_aligned", lambda: sm.sys_reserve_aligned(None, n, 16 * ps), None, n)
    run("sys_map", lambda: sm.sys_map(q, n, st), q, n)
    run("sys_used", lambda: sm.sys_used(q, n // 2, n // 2), q, n // 2, prepared=n // 2)
    run("sys_used", lambda: sm.sys_used(q, n, n // 2), q, n, prepared=n // 2)  # Prepared + Ready
    run("sys_unused", lambda: sm.sys_unused(q, n), q, n)
    run("sys_used", lambda: sm.sys_used(q, n, n), q, n, prepared=n)
    for hint in ("sys_huge_page", "sys_no_huge_page", "sys_huge_page_collapse"):
        run(hint, lambda hint=hint: getattr(sm, hint)(q, n), q, n)
    s0, m0 = st.load(), sm.mapped_ready
    sm.need_zero_after_sys_unused()
    assert (st.load(), sm.mapped_ready) == (s0, m0) and TRANSITIONS["need_zero_after_sys_unused"][3:] == ("", "")
    run("sys_fault", lambda: sm.sys_fault(q, n), q, n)
    st.add(-n)  # as Go's callers do after sysFault
    run("sys_free", lambda: sm.sys_free(a, n, st), a, n)
    run("sys_unreserve", lambda: sm.sys_unreserve(q, n), q, n)
    run("sys_unreserve", lambda: sm.sys_unreserve(r, rsize), r, rsize)
    assert sm.runs() == [] and st.load() == 0 and sm.mapped_ready == 0
    sm.check()


@pytest.fixture
def check_transitions_table():
    """``check(sm)``: run each operation once on ``sm`` and compare with
    ``sysmem.TRANSITIONS`` (states, ``stat_delta``, ``mapped_ready_delta``)."""
    return _check_transitions_table
