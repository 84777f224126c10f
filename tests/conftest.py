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

from sysmem import State, SysMem


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
