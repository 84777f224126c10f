"""Several SysMems on one backend share its one DebugSettings; nothing can swap it.

A SysMem freezes ``harddecommit`` and ``madvdontneed`` and caches what they imply (which
transitions must respect live views). A second SysMem built on the same backend used to
*replace* the backend's settings with a fresh, unfrozen copy: the first SysMem's cached
beliefs then lied, and a live view segfaulted. Now a GODEBUG string is applied to the
backend's own settings through their setters (frozen ones refuse), a DebugSettings must
be that very object, and the backend's ``debug`` cannot be rebound.
"""

from __future__ import annotations

import multiprocessing
import os
import sys

import pytest

from sysmem import DebugSettings, FrozenSettingError, SysMem
from sysmem._simulated import SimulatedBackend

P = 4096


@pytest.fixture
def backend():
    b = SimulatedBackend(DebugSettings())
    yield b
    b.close()


def test_a_godebug_string_is_applied_to_the_backends_own_settings(backend):
    debug = backend.debug
    sm = SysMem(backend, godebug="madvdontneed=0,disablethp=1")
    assert sm.debug is debug is backend.debug
    assert (debug.madvdontneed, debug.disablethp) == (0, 1)
    assert sm.need_zero_after_sys_unused()


def test_a_second_sysmem_cannot_change_what_the_first_froze(backend):
    sm1 = SysMem(backend, godebug="")
    debug = backend.debug
    for godebug in ("harddecommit=1", "madvdontneed=0", "disablethp=1,harddecommit=1"):
        with pytest.raises(FrozenSettingError, match="harddecommit|madvdontneed"):
            SysMem(backend, godebug=godebug)
        # all or nothing: disablethp did not change either, and nothing was replaced
        assert backend.debug is debug is sm1.debug
        assert (debug.harddecommit, debug.madvdontneed, debug.disablethp) == (0, 1, 0)
    with pytest.raises(FrozenSettingError):
        debug.harddecommit = 1  # still frozen
    # settings no SysMem depends on may still change, through the same object
    sm2 = SysMem(backend, godebug="disablethp=1,harddecommit=0")
    assert sm2.debug is debug and debug.disablethp == 1


def test_a_different_debugsettings_object_is_refused(backend):
    SysMem(backend, godebug="")
    with pytest.raises(ValueError, match="own DebugSettings"):
        SysMem(backend, godebug=DebugSettings(harddecommit=1))
    with pytest.raises(ValueError, match="own DebugSettings"):
        SysMem(backend, godebug=DebugSettings())  # even with equal values
    assert SysMem(backend, godebug=backend.debug).debug is backend.debug


def test_a_fresh_backend_refuses_a_foreign_debugsettings_too():
    """No SysMem froze anything yet, but the backend already reads its own object."""
    b = SimulatedBackend(DebugSettings())
    with pytest.raises(ValueError):
        SysMem(b, godebug=DebugSettings(madvdontneed=0))
    b.close()


def test_a_backends_settings_cannot_be_rebound(backend):
    SysMem(backend, godebug="")
    with pytest.raises(AttributeError, match="cannot be replaced"):
        backend.debug = DebugSettings(harddecommit=1)
    assert backend.debug.harddecommit == 0


def _shared_backend_route() -> None:  # runs in a forked child
    import faulthandler

    from sysmem._linux import LinuxBackend

    faulthandler.disable()
    b = LinuxBackend(DebugSettings())
    sm1 = SysMem(b)
    st = sm1.stat("other_sys")
    p = sm1.sys_alloc(1 << 16, st)
    v = sm1.view(p, P)
    try:
        SysMem(b, godebug="harddecommit=1")
    except FrozenSettingError:
        pass
    else:
        sm1.sys_unused(p, 1 << 16)  # the old bug: PROT_NONE under the live view
        v[0] = 1  # segfaults if the view's memory was protected
        os._exit(2)
    sm1.sys_unused(p, 1 << 16)  # harddecommit=0: the memory stays accessible
    v[0] = 1
    os._exit(0)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="real memory, fork")
def test_shared_backend_godebug_cannot_make_a_live_view_fault():
    """Regression: SysMem(backend, godebug="harddecommit=1") replaced the settings a
    running SysMem had frozen; its next sys_unused protected memory under a live view."""
    proc = multiprocessing.get_context("fork").Process(target=_shared_backend_route)
    proc.start()
    proc.join(60)
    assert proc.exitcode == 0, f"exit code {proc.exitcode} (negative: killed by that signal)"
