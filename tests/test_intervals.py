"""IntervalMap, the run-length structure under the ledger, the view map and the simulation."""

from hypothesis import given, settings
from hypothesis import strategies as st

from sysmem.intervals import IntervalMap


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 127), st.integers(1, 64), st.integers(0, 3)), max_size=40))
def test_interval_map_matches_array(ops):
    m = IntervalMap(0)
    ref = [0] * 192
    for lo, n, val in ops:
        hi = lo + n
        old = m.exchange(lo, hi, val)
        assert [x for s, e, v in old for x in [v] * (e - s)] == ref[lo:hi]
        ref[lo:hi] = [val] * (hi - lo)
        assert [x for s, e, v in m.runs(0, 192) for x in [v] * (e - s)] == ref
        assert all(a != b for a, b in zip(m.vals, m.vals[1:]))  # runs are maximal
        assert m.starts == sorted(set(m.starts))
        for x in (lo, hi - 1, hi):
            s, e, v = m.run_at(x)
            assert s <= x < e and v == ref[x] and m.value_at(x) == ref[x]
            assert all(ref[k] == v for k in range(s, int(min(e, 192))))


def test_empty_assign_is_a_no_op():
    m = IntervalMap("x")
    m.assign(5, 5, "y")
    assert m.runs(0, 10) == [(0, 10, "x")]
    assert m.run_at(1 << 60) == (0, float("inf"), "x")
