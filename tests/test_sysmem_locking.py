"""SysMem's lock: no deadlock through finalizers, no lost mapping through stat races.

* The garbage collector runs finalizers; one that releases memory through the same
  SysMem must never wait for a lock its own thread holds. Collecting before the lock
  (to drop views kept only by cycles) makes the common case work; a finalizer that the
  collector still runs mid-operation gets ReentrantCallError instead of a hang.
* A SysMemStat is shared by every SysMem (and the heap): its overflow check and the
  addition are one step before the OS call, so another user filling or draining it
  meanwhile can no longer leave a mapping the accounting does not know about.

Tests that used to hang run in a forked child with a time limit.
"""

from __future__ import annotations

import gc
import multiprocessing
import os
import sys

import pytest

from sysmem import (
    DebugSettings,
    LiveViewError,
    ReentrantCallError,
    State,
    StatOverflowError,
    SysMem,
    SysMemStat,
)
from sysmem._simulated import SimulatedBackend

P = 4096
U64_MAX = (1 << 64) - 1
needs_fork = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="fork")


def _in_child(target, timeout: float = 60) -> int:
    """Run ``target`` in a forked child; its exit code (the test fails if it hangs)."""
    proc = multiprocessing.get_context("fork").Process(target=target)
    proc.start()
    proc.join(timeout)
    if proc.exitcode is None:
        proc.kill()
        proc.join()
        pytest.fail("the child hung (a deadlock)")
    return proc.exitcode


# -- finalizers -------------------------------------------------------------------------


def _finalizer_frees_during_live_view_check() -> None:  # runs in a forked child
    sm = SysMem("simulated", godebug="")
    st = sm.stat("other_sys")

    class Buffer:  # frees its memory when collected; kept alive only by a cycle
        def __init__(self) -> None:
            self.p = sm.sys_alloc(P, st)
            self.me = self

        def __del__(self) -> None:
            sm.sys_free(self.p, P, st)

    gc.disable()
    Buffer()
    q = sm.sys_alloc(P, st)
    v = sm.view(q, P)
    try:
        sm.sys_free(q, P, st)  # collects first, outside the lock: the finalizer runs
    except LiveViewError:
        pass
    else:
        os._exit(2)
    del v
    # the finalizer's sys_free went through; only q is left
    os._exit(0 if sm.root_regions.regions() == [(q, P)] and st.load() == P else 3)


@needs_fork
def test_a_finalizer_releasing_memory_during_a_live_view_check_does_not_deadlock():
    """Regression: check_unpinned ran gc.collect() holding SysMem's (non-reentrant) lock,
    so a finalizer calling sys_free on the same SysMem hung forever."""
    assert _in_child(_finalizer_frees_during_live_view_check) == 0


class _CollectingBackend(SimulatedBackend):
    """A simulated OS whose ``used`` runs the garbage collector first, as any allocation
    the real call makes might: finalizers then run in the middle of ``sys_used``."""

    def used(self, v: int, n: int) -> None:
        gc.collect()
        super().used(v, n)


def _finalizer_mid_operation() -> None:  # runs in a forked child
    sm = SysMem(_CollectingBackend(DebugSettings()), godebug=None)
    st = sm.stat("other_sys")
    raised: list[BaseException] = []
    sys.unraisablehook = lambda u: raised.append(u.exc_value)

    class Buffer:
        def __init__(self) -> None:
            self.p = sm.sys_alloc(P, st)
            self.me = self

        def __del__(self) -> None:
            sm.sys_free(self.p, P, st)

    gc.disable()
    Buffer()
    q = sm.sys_reserve(None, 4 * P)
    sm.sys_map(q, 4 * P, st)
    sm.sys_used(q, 4 * P, 4 * P)  # the finalizer runs inside, holding nothing back
    ok = (
        len(raised) == 1 and isinstance(raised[0], ReentrantCallError)
        and sm.mapped_ready == 5 * P and st.load() == 5 * P  # the finalizer freed nothing
        and not sm.accounting_problems() and not sm.os_problems()
    )
    sm.sys_unused(q, P)  # and the SysMem still works
    os._exit(0 if ok and sm.mapped_ready == 4 * P else 2)


@needs_fork
def test_a_finalizer_run_mid_operation_gets_reentrant_call_error_not_a_deadlock():
    assert _in_child(_finalizer_mid_operation) == 0


class _HookBackend(SimulatedBackend):
    """A simulated OS that runs ``hooks[op]()`` once, just before the system call ``op``:
    what another thread might do in the middle of a SysMem operation."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.hooks: dict = {}

    def _run_hook(self, op: str) -> None:
        hook = self.hooks.pop(op, None)
        if hook is not None:
            hook()

    def alloc(self, n, vma_name=""):
        self._run_hook("alloc")
        return super().alloc(n, vma_name)

    def map(self, v, n, vma_name=""):
        self._run_hook("map")
        super().map(v, n, vma_name)

    def free(self, v, n):
        self._run_hook("free")
        super().free(v, n)


def _reentrant_call_from_a_hook() -> None:  # runs in a forked child
    backend = _HookBackend(DebugSettings())
    sm = SysMem(backend)
    st = sm.stat("other_sys")
    errors = []

    def reenter():
        try:
            sm.sys_alloc(P, st)
        except ReentrantCallError as e:
            errors.append(e)

    backend.hooks["map"] = reenter
    q = sm.sys_reserve(None, 4 * P)
    sm.sys_map(q, 4 * P, st)
    ok = (len(errors) == 1 and "inside another operation" in str(errors[0])
          and st.load() == 4 * P and sm.mapped_ready == 0 and not sm.accounting_problems()
          and not sm.os_problems())
    ok = ok and sm.sys_alloc(P, st) is not None  # the lock was left free
    os._exit(0 if ok else 2)


@needs_fork
def test_reentrant_call_from_inside_an_operation_is_refused_and_changes_nothing():
    assert _in_child(_reentrant_call_from_a_hook) == 0


# -- stat races -------------------------------------------------------------------------


def _two_sysmems(full_after: int):
    """A hooked SysMem and a plain one sharing a stat that has room for ``full_after``."""
    backend = _HookBackend(DebugSettings())
    sm1, sm2 = SysMem(backend), SysMem("simulated", godebug="")
    st = SysMemStat("shared", value=U64_MAX - full_after)
    return backend, sm1, sm2, st


def _os_agrees(sm: SysMem) -> None:
    """Ledger = OS, and mapped_ready = Ready bytes (the shared stat starts near full, so
    its group cannot match the ledger: check() as a whole does not apply)."""
    assert sm.os_problems() == []
    assert sm.state_bytes()[State.READY] == sm.mapped_ready
    assert [(r.base, r.size) for r in sm.ledger.regions()] == sm.root_regions.regions()


def test_stat_filled_by_another_user_during_sys_alloc_leaves_no_mapping_behind():
    """Regression: sys_alloc checked the stat, then mapped, then added; another thread
    filling the stat in between made the add fail with the mapping already made."""
    n = 16 * P
    backend, sm1, sm2, st = _two_sysmems(n + n // 2)  # room for one n, not two
    other = []
    backend.hooks["alloc"] = lambda: other.append(_try(sm2.sys_alloc, n, st))
    p = sm1.sys_alloc(n, st)
    # the first caller counted first and got the memory; the other one was refused
    assert p is not None and isinstance(other[0], StatOverflowError)
    assert st.load() == U64_MAX - n // 2 and sm1.mapped_ready == n and sm2.mapped_ready == 0
    _os_agrees(sm1)
    _os_agrees(sm2)
    # no mapping the accounting does not know of (the OS part above sees ledger regions only)
    assert sm1.backend.committed_bytes() == n and sm2.backend.committed_bytes() == 0


def test_stat_filled_by_another_user_during_sys_map_leaves_no_mapping_behind():
    n = 16 * P
    backend, sm1, sm2, st = _two_sysmems(n + n // 2)
    q1, q2 = sm1.sys_reserve(None, n), sm2.sys_reserve(None, n)
    other = []
    backend.hooks["map"] = lambda: other.append(_try(sm2.sys_map, q2, n, st))
    sm1.sys_map(q1, n, st)
    assert isinstance(other[0], StatOverflowError)
    assert [r.stat for r in sm1.runs()] == [st] and [r.stat for r in sm2.runs()] == [None]
    assert st.load() == U64_MAX - n // 2
    _os_agrees(sm1)
    _os_agrees(sm2)


def test_stat_drained_by_another_user_during_sys_free_keeps_ledger_and_os_agreeing():
    """Regression: sys_free unmapped, then subtracted; a stat drained in between (the
    heap moving bytes to another of its stats) made the subtraction fail after munmap,
    leaving a region the ledger still had and the OS no longer did."""
    backend = _HookBackend(DebugSettings())
    sm = SysMem(backend)
    hin, hrel = sm.stat("heap_in_use"), sm.stat("heap_released")
    p = sm.sys_alloc(16 * P, hin)
    moved = []
    backend.hooks["free"] = lambda: moved.append(_try(_move, hin, hrel, 16 * P))
    sm.sys_free(p, 16 * P, hin)
    assert isinstance(moved[0], StatOverflowError)  # the bytes were no longer there
    assert sm.root_regions.regions() == [] and hin.load() == hrel.load() == sm.mapped_ready == 0
    _os_agrees(sm)


def test_a_failing_os_call_takes_its_stat_addition_back():
    sm = SysMem("simulated", godebug="")
    st = sm.stat("other_sys")
    sm.backend.fail_next("alloc")
    assert sm.sys_alloc(P, st) is None and st.load() == 0
    q = sm.sys_reserve(None, 4 * P)
    sm.backend.fail_next("map")
    with pytest.raises(MemoryError):
        sm.sys_map(q, 4 * P, st)
    assert st.load() == 0 and sm.runs()[0].stat is None
    sm.check()


def _move(src: SysMemStat, dst: SysMemStat, n: int) -> None:
    src.add(-n)
    dst.add(n)


def _try(fn, *args):
    try:
        return fn(*args)
    except Exception as e:  # noqa: BLE001 - the test looks at what came back
        return e
