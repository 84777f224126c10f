"""Property test: PageAlloc against a plain reference model.

The model keeps, per grown chunk, one byte per page for "allocated" and one for
"scavenged", and allocates by searching the address-ordered free pages for the lowest
run that fits (runs never cross a gap between grown ranges). After every step the
allocator's bitmaps must equal the model's bit for bit, its returned addresses and
scavenged byte counts must be the model's, and its own invariants must hold.
Scavenging is checked through the ``sys_unused`` calls it makes: each releases free,
unscavenged pages of one chunk, they add up to the returned count, and (until a
background pass has run) a forced unlimited scavenge leaves no free page unscavenged.
"""

from __future__ import annotations

from bisect import bisect_right

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from heap.constants import PAGE_SIZE, PALLOC_CHUNK_PAGES
from heap.pagealloc import BASE_CHUNK_IDX, PageAlloc, chunk_index, chunk_page_index, page_base

P = PALLOC_CHUNK_PAGES
PS = PAGE_SIZE
B = BASE_CHUNK_IDX
MAXU = (1 << 64) - 1
FAR = 0x100000  # a TiB away: exercises discontiguous summaries
_INVERT = bytes.maketrans(b"\x00\x01", b"\x01\x00")


class Model:
    def __init__(self) -> None:
        self.alloc: dict[int, bytearray] = {}
        self.scav: dict[int, bytearray] = {}

    def grow(self, ci: int, n: int) -> None:
        for c in range(ci, ci + n):
            self.alloc[c] = bytearray(P)
            self.scav[c] = bytearray(b"\x01" * P)  # new memory is released memory

    def _flat_free(self):
        """Free pages of all chunks in address order, a 0 byte between gaps."""
        parts, starts, order = [], [], sorted(self.alloc)
        pos = 0
        prev = None
        for c in order:
            if prev is not None and c != prev + 1:
                parts.append(b"\x00")
                pos += 1
            starts.append(pos)
            parts.append(bytes(self.alloc[c]).translate(_INVERT))
            pos += P
            prev = c
        return b"".join(parts), starts, order

    def first_fit(self, npages: int) -> int | None:
        flat, starts, order = self._flat_free()
        pos = flat.find(b"\x01" * npages)
        if pos < 0:
            return None
        k = bisect_right(starts, pos) - 1
        return page_base(order[k], pos - starts[k])

    def pages(self, addr: int, npages: int):
        ci, pi = chunk_index(addr), chunk_page_index(addr)
        for _ in range(npages):
            yield ci, pi
            pi += 1
            if pi == P:
                ci, pi = ci + 1, 0

    def do_alloc(self, addr: int, npages: int) -> int:
        scav = 0
        for ci, pi in self.pages(addr, npages):
            assert not self.alloc[ci][pi]
            scav += self.scav[ci][pi]
            self.alloc[ci][pi] = 1
            self.scav[ci][pi] = 0
        return scav * PS

    def do_free(self, addr: int, npages: int) -> None:
        for ci, pi in self.pages(addr, npages):
            assert self.alloc[ci][pi]
            self.alloc[ci][pi] = 0

    def free_unscavenged(self) -> int:
        return sum(
            1 for c in self.alloc for a, s in zip(self.alloc[c], self.scav[c]) if not a and not s
        )


_DIGITS = bytes.maketrans(b"\x00\x01", b"01")


def bits_int(b: bytearray) -> int:
    """The 0/1 bytes of a chunk as a bitmap int, page i = bit i."""
    return int(bytes(reversed(b)).translate(_DIGITS), 2)


def assert_same(p: PageAlloc, m: Model) -> None:
    for ci in m.alloc:
        d = p.palloc_data(ci)
        assert d.palloc_bits.to_int() == bits_int(m.alloc[ci]), f"alloc bits of chunk {ci:#x}"
        assert d.scavenged.to_int() == bits_int(m.scav[ci]), f"scavenged bits of chunk {ci:#x}"
    p.check()


grow_op = st.tuples(
    st.just("grow"),
    st.one_of(st.integers(0, 24), st.integers(FAR, FAR + 4), st.integers(0, 3).map(lambda k: -8 * (k + 1))),
    st.integers(1, 4),
)
alloc_op = st.tuples(
    st.just("alloc"),
    st.one_of(
        st.integers(1, 8),
        st.integers(1, 700),
        st.sampled_from([64, 65, 511, 512, 513, 1024, 1100, 2049]),
    ),
)
free_op = st.tuples(st.just("free"), st.integers(0, 10_000), st.integers(0, 10_000), st.integers(0, 10_000))
scav_op = st.tuples(
    st.just("scav"),
    st.one_of(st.just(MAXU), st.integers(1, 600).map(lambda n: n * PS), st.integers(1, 100_000)),
    st.booleans(),
)
gen_op = st.tuples(st.just("nextgen"))
ops = st.lists(
    st.one_of(grow_op, alloc_op, alloc_op, alloc_op, free_op, free_op, scav_op, gen_op),
    min_size=8,
    max_size=60,
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(start=st.integers(1, 3), seq=ops)
def test_page_alloc_matches_reference_model(start, seq):
    calls: list[tuple[int, int]] = []
    p = PageAlloc(sys_unused=lambda a, n: calls.append((a, n)))
    m = Model()
    p.grow(page_base(B, 0), start * P * PS)
    m.grow(B, start)
    live: list[tuple[int, int]] = []  # (addr, npages) runs that are allocated
    bg_scavenged = False

    for op in seq:
        kind = op[0]
        if kind == "grow":
            ci, n = B + op[1], op[2]
            if any(c in m.alloc for c in range(ci, ci + n)):
                continue
            p.grow(page_base(ci, 0), n * P * PS)
            m.grow(ci, n)
        elif kind == "alloc":
            npages = op[1]
            want = m.first_fit(npages)
            addr, scav = p.alloc(npages)
            assert addr == want, f"alloc({npages})"
            if want is None:
                assert scav == 0
            else:
                assert scav == m.do_alloc(addr, npages)
                live.append((addr, npages))
        elif kind == "free":
            if not live:
                continue
            addr, npages = live.pop(op[1] % len(live))
            # Free all of the run or a piece of it (the rest stays allocated).
            lo = op[2] % npages
            n = 1 + op[3] % (npages - lo)
            start_addr = addr + lo * PS
            p.free(start_addr, n)
            m.do_free(start_addr, n)
            if lo:
                live.append((addr, lo))
            if lo + n < npages:
                live.append((start_addr + n * PS, npages - lo - n))
        elif kind == "scav":
            nbytes, force = op[1], op[2]
            before = m.free_unscavenged()
            calls.clear()
            released = p.scavenge(nbytes, force=force)
            assert released == sum(n for _, n in calls)
            for a, n in calls:
                assert n % PS == 0 and n > 0
                assert chunk_index(a) == chunk_index(a + n - 1), "a release crosses a chunk"
                for ci, pi in m.pages(a, n // PS):
                    assert not m.alloc[ci][pi] and not m.scav[ci][pi], "released a used or released page"
                    m.scav[ci][pi] = 1
            if not force:
                bg_scavenged = True
            elif not bg_scavenged:
                # Forced scavenging finds all free, unscavenged memory, unless a
                # background pass has marked a chunk empty after searching only below
                # its stale cursor (Go does the same; see
                # test_background_pass_can_hide_pages_from_forced_scavenge).
                assert released >= min(nbytes, before * PS)
                if nbytes == MAXU:
                    assert m.free_unscavenged() == 0
        else:
            p.scav_index.next_gen()
        assert_same(p, m)
