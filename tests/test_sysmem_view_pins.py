"""The live-view index of sysmem/access.py: pin counts over addresses answer "is anything
in [a, b) pinned?" without walking every view, and must always agree with the views
that are really alive (including views that die in the collector or in other threads)."""

from __future__ import annotations

import gc
import threading

from hypothesis import given, settings
from hypothesis import strategies as st

from sysmem.access import AccessMap

PAGE = 4096
SPACE = 64 * PAGE


class _Owner:
    """Stands in for a view's owner (what SysMem pins is an object the view keeps)."""


def _brute(live: dict[int, tuple[int, int]], a: int, b: int) -> list[tuple[int, int]]:
    return sorted(r for r in live.values() if r[0] < b and a < r[1])


ranges = st.tuples(st.integers(0, 63), st.integers(1, 16)).map(
    lambda t: (t[0] * PAGE, min(SPACE, (t[0] + t[1]) * PAGE)))
steps = st.lists(st.one_of(st.tuples(st.just("pin"), ranges),
                           st.tuples(st.just("drop"), st.integers(0, 200)),
                           st.tuples(st.just("cycle"), ranges)), max_size=60)


@settings(max_examples=150, deadline=None)
@given(steps=steps, queries=st.lists(ranges, min_size=1, max_size=10))
def test_pin_index_agrees_with_the_live_views(steps, queries):
    m = AccessMap()
    m.add(0, SPACE)
    owners: dict[int, _Owner] = {}
    live: dict[int, tuple[int, int]] = {}
    for kind, arg in steps:
        if kind == "pin":
            o = _Owner()
            m.pin(*arg, o)
            owners[id(o)] = o
            live[id(o)] = arg
            del o
        elif kind == "cycle":
            # kept only by a reference cycle: dies in the collector, not at once
            o = _Owner()
            o.me = o
            m.pin(*arg, o)
            del o
            gc.collect()
        elif owners:
            k = list(owners)[arg % len(owners)]
            del owners[k], live[k]
    for a, b in queries:
        want = _brute(live, a, b)
        assert sorted(m.live_views(a, b)) == want
        assert m.any_pinned(a, b) == bool(want)
    owners.clear()
    assert not m.any_pinned(0, SPACE) and m.live_views(0, SPACE) == []


def test_views_dying_in_another_thread_while_checking():
    m = AccessMap()
    m.add(0, SPACE)
    stop = threading.Event()
    errors: list[BaseException] = []

    def churn() -> None:
        try:
            while not stop.is_set():
                batch = [_Owner() for _ in range(50)]
                for i, o in enumerate(batch):
                    m.pin((i % 60) * PAGE, (i % 60 + 4) * PAGE, o)
                del batch  # all die here, on this thread
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    keep = _Owner()
    m.pin(10 * PAGE, 11 * PAGE, keep)
    t = threading.Thread(target=churn)
    t.start()
    try:
        for _ in range(2000):
            assert (10 * PAGE, 11 * PAGE) in m.live_views(10 * PAGE, 11 * PAGE)
    finally:
        stop.set()
        t.join()
    assert not errors
    assert m.live_views(0, SPACE) == [(10 * PAGE, 11 * PAGE)]
    del keep
    assert not m.any_pinned(0, SPACE)
