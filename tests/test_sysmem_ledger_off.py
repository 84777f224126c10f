"""``SysMem(ledger=False)`` still refuses memory it does not own.

Without the ledger there are no page states to check, but every operation on an existing
range must still lie in regions this SysMem reserved or allocated (the root-region
registry, always kept): otherwise ``sys_fault`` or ``sys_unused`` on a page of a numpy
array would protect or zero memory Python owns and crash the interpreter. The calls that
used to crash run in a forked child, so a regression fails the test instead of killing
the run.
"""

from __future__ import annotations

import multiprocessing
import os
import sys

import numpy as np
import pytest

from sysmem import LiveViewError, NotReservedError, RootRegionError, SysMem

P = 4096
MiB = 1 << 20

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="real memory, fork")

# child exit codes
REFUSED, OTHER_ERROR, ACCEPTED, VICTIM_CHANGED, STATE_CHANGED = 0, 1, 2, 3, 4

#: op → call(sm, stat, address of a page inside Python's numpy array)
FOREIGN_OPS = {
    "fault": lambda sm, st, a: sm.sys_fault(a, P),
    "unused": lambda sm, st, a: sm.sys_unused(a, P),
    "map": lambda sm, st, a: sm.sys_map(a, P, st),
    "used": lambda sm, st, a: sm.sys_used(a, P, P),
    "free": lambda sm, st, a: sm.sys_free(a, P, st),
    "unreserve": lambda sm, st, a: sm.sys_unreserve(a, P),
    "huge_page": lambda sm, st, a: sm.sys_huge_page(a, 2 * MiB),
    "no_huge_page": lambda sm, st, a: sm.sys_no_huge_page(a, P),
    "huge_page_collapse": lambda sm, st, a: sm.sys_huge_page_collapse(a, P),
    # a range that starts in the SysMem's region and runs on into foreign memory
    "unused straddling": None,
}


def _foreign_op_child(op: str, godebug: str) -> None:  # runs in a forked child
    import faulthandler
    import resource

    faulthandler.disable()  # die of the signal itself, quietly
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    sm = SysMem("linux", ledger=False, godebug=godebug)
    st = sm.stat("other_sys")
    p = sm.sys_alloc(1 * MiB, st)  # mapped_ready = 1 MiB, so that check alone passes
    victim = np.full(4 * MiB, 7, dtype=np.uint8)  # Python-owned memory (numpy's heap)
    a = (victim.ctypes.data + P - 1) & -P
    before = (sm.mapped_ready, st.load(), sm.root_regions.regions(), sm.accessible_ranges())
    try:
        if op == "unused straddling":  # the region's last page and whatever lies after it
            sm.sys_unused(p + 1 * MiB - P, 2 * P)
        else:
            FOREIGN_OPS[op](sm, st, a)
    except NotReservedError:
        code = REFUSED
    except Exception:  # noqa: BLE001 - reported through the exit code
        code = OTHER_ERROR
    else:
        code = ACCEPTED
    victim[:] = 9  # faults here if the call protected or unmapped Python's memory
    if not (victim == 9).all():
        code = VICTIM_CHANGED
    if (sm.mapped_ready, st.load(), sm.root_regions.regions(), sm.accessible_ranges()) != before:
        code = max(code, STATE_CHANGED)
    os._exit(code)


@linux_only
@pytest.mark.parametrize("godebug", ["", "harddecommit=1"])
@pytest.mark.parametrize("op", list(FOREIGN_OPS))
def test_ledger_off_refuses_memory_python_owns(op, godebug):
    """Regression: with the ledger off, sys_fault (or sys_unused under harddecommit) of a
    numpy array's page segfaulted, sys_unused zeroed it, sys_map replaced it."""
    proc = multiprocessing.get_context("fork").Process(target=_foreign_op_child, args=(op, godebug))
    proc.start()
    proc.join(60)
    assert proc.exitcode is not None, "the child hung"
    assert proc.exitcode == REFUSED, {
        OTHER_ERROR: "raised something other than NotReservedError",
        ACCEPTED: "accepted memory this SysMem does not own",
        VICTIM_CHANGED: "changed Python's memory",
        STATE_CHANGED: "refused, but changed the accounting",
    }.get(proc.exitcode, f"the child died of signal {-proc.exitcode}")


# -- the same rule on the simulated OS (no crash possible, so in-process) ----------------


@pytest.fixture(params=["linux", "windows", "sbrk"])
def sim(request):
    sm = SysMem("simulated", personality=request.param, ledger=False, godebug="")
    yield sm
    sm.close()


def test_ledger_off_refuses_unowned_and_straddling_ranges(sim):
    sm, st = sim, sim.stat("other_sys")
    p = sm.sys_alloc(16 * P, st)
    spacer = sm.sys_reserve(None, 16 * P)  # so that p and q are not adjacent
    q = sm.sys_reserve(None, 16 * P)
    sm.sys_unreserve(spacer, 16 * P)
    sm.sys_map(q, 8 * P, st)
    sm.sys_used(q, 8 * P, 8 * P)
    far = 1 << 40
    calls = [
        lambda: sm.sys_fault(far, P),
        lambda: sm.sys_unused(far, P),
        lambda: sm.sys_used(far, P, P),
        lambda: sm.sys_map(far, P, st),
        lambda: sm.sys_free(far, P, st),
        lambda: sm.sys_unreserve(far, P),
        lambda: sm.sys_huge_page(far, P),
        lambda: sm.sys_no_huge_page(far, P),
        lambda: sm.sys_huge_page_collapse(far, P),
        lambda: sm.sys_unused(p + 15 * P, 2 * P),  # runs past the end of p's region
        lambda: sm.sys_fault(p - P, 2 * P),  # starts before it
        lambda: sm.sys_map(q + 15 * P, 2 * P, st),
    ]
    before = (sm.mapped_ready, st.load(), sm.root_regions.regions(), sm.accessible_ranges())
    for call in calls:
        with pytest.raises(NotReservedError, match="not memory this SysMem owns"):
            call()
    assert (sm.mapped_ready, st.load(), sm.root_regions.regions(), sm.accessible_ranges()) == before
    # whole regions only, as the leak checker's registry insists
    with pytest.raises(RootRegionError):
        sm.sys_free(p, 8 * P, st)
    sm.sys_free(p, 16 * P, st)
    with pytest.raises(NotReservedError):  # gone from the index too
        sm.sys_unused(p, P)


def test_ledger_off_accepts_ranges_across_adjacent_regions():
    """The heap maps and commits across arenas that happen to be adjacent; the ledger
    allows that, and so does the ledger-off check."""
    for ledger in (True, False):
        sm = SysMem("simulated", ledger=ledger, godebug="")
        st = sm.stat("other_sys")
        b = sm.sys_reserve(None, 8 * P)
        a = sm.sys_reserve(b - 8 * P, 8 * P)
        assert a == b - 8 * P, "the simulated OS ignored a free hint"
        sm.sys_map(a + 4 * P, 8 * P, st)
        sm.sys_used(a + 4 * P, 8 * P, 8 * P)
        sm.sys_unused(a + 6 * P, 4 * P)
        with pytest.raises(NotReservedError):
            sm.sys_map(b + 4 * P, 8 * P, st)  # runs past the second region
        assert sm.mapped_ready == 4 * P
        sm.close()


def test_ledger_off_index_follows_reserve_aligned_trimming():
    sm = SysMem("simulated", ledger=False, godebug="")
    st = sm.stat("other_sys")
    align = 64 * P
    sm.sys_alloc(P, st)  # so the over-reservation is unlikely to be aligned by luck
    p, n = sm.sys_reserve_aligned(None, 8 * P, align)
    assert p % align == 0
    sm.sys_map(p, n, st)  # the kept part is owned
    if n == 8 * P:  # trimmed: the head or the tail went back to the OS
        (base, size), = [r for r in sm.root_regions.regions() if r[0] == p]
        assert size == 8 * P
        with pytest.raises(NotReservedError):
            sm.sys_map(p + 8 * P, P, st)
    sm.close()


def test_ledger_off_sys_map_refuses_to_map_fresh_pages_under_a_live_view():
    """Without the ledger nothing says the range is still Reserved; sys_map over viewed
    (Ready) memory would have silently zeroed what the view holds."""
    sm = SysMem("simulated", ledger=False, godebug="")
    st = sm.stat("other_sys")
    q = sm.sys_reserve(None, 8 * P)
    sm.sys_map(q, 8 * P, st)
    sm.sys_used(q, 8 * P, 8 * P)
    v = sm.view(q + 2 * P, P)
    v[:] = 5
    with pytest.raises(LiveViewError):
        sm.sys_map(q, 4 * P, st)
    assert (v == 5).all() and st.load() == 8 * P
    sm.sys_map(q + 4 * P, 4 * P, st)  # no view there: the ledger is off, so no state check
    assert st.load() == 12 * P
    sm.close()
