"""The collector: a stop-the-world, precise mark-sweep over a :class:`~heap.heap.Heap`.

What it follows from Go (``mgc.go``, ``mgcmark.go``, ``mgcsweep.go``):

* **Roots** are the heap's explicit root set (single roots and root-slot arrays; they
  play the part of Go's globals, so their size is the pacer's ``globals_scan``). A root
  or pointer word holding something that is not an address inside an allocated object
  is ignored, as Go's conservative-free ``findObject`` ignores non-heap words.
* **Precise marking** through pointer words only (the per-object pointer masks written
  at allocation); noscan spans are never read. An interior pointer (anywhere in the
  object's slot, malloc header included) keeps its object alive, as Go's
  ``findObject`` maps any address in a slot to the slot.
* **Sweep** as Go's ``sweepLocked.sweep`` does it: the mark bits become the alloc
  bits, freed objects are counted (Frees / HeapObjects / HeapAlloc), a span with freed
  slots is dirty (``needzero``), an empty span (and an unmarked large object's span)
  goes back to the page allocator with ``mheap.free_span`` (pages stay Ready, counted
  as free). Sweeping is eager, at the end of the cycle (Go sweeps lazily and in the
  background; the statistics at the end are the same as after Go's full sweep).
* The mcache's spans are released first (Go flushes every P's mcache at GC start), so
  every in-use span sits in an mcentral set while it is swept.

How marking is made fast in Python. A per-object loop would cost microseconds per
object; instead, once per cycle:

1. *span table*: every in-use span's base, elemsize, nelems, and a global object
   number ``gid = first_gid[span] + slot`` (spans ordered by span class, so that the
   pointer words gathered below come out sorted by source object);
2. *gather*: for each scan span class, the spans' memory, pointer masks and alloc bits
   are stacked (in bounded chunks) into 3-D arrays and the pointer words of allocated
   objects extracted with one ``flatnonzero``; every pointer value is resolved to a
   target gid at once (page table over the heap's address range → span → slot index
   → allocated?). Pointers to nothing become dropped edges;
3. *mark*: the edges form a CSR graph (``edge_start[gid] .. edge_start[gid+1]``), and
   the mark is a frontier BFS: each round expands all newly marked objects' edges with
   a handful of numpy operations. Long thin structures (linked lists) would make that
   one round per object, so while the frontier is small a plain Python depth-first
   loop over the same arrays (memoryviews: cheap scalar access) takes over, handing
   back to numpy as soon as the work widens.

The cost per cycle is proportional to the pointer words of *allocated* scan objects
(dead ones are gathered too, as a sweep reads every span), plus a small per-span
overhead; nothing is per object in Python.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from .constants import PAGE_SHIFT
from .mcache import slot_header

if TYPE_CHECKING:  # pragma: no cover
    from .heap import Heap

__all__ = ["CycleStats", "collect", "mark", "MarkResult"]

_U64 = np.uint64
#: words gathered per chunk when stacking spans (bounds the temporary copies: 32 MiB)
_CHUNK_WORDS = 4 << 20
#: a page table is built when the heap's address range is at most this many pages
#: (64 MiB of int32); beyond it, span lookup falls back to a binary search
_MAX_TABLE_PAGES = 16 << 20
#: below this frontier size the Python depth-first loop is cheaper than numpy rounds
_SMALL_FRONTIER = 48
#: ... and it hands back to numpy when its stack grows past this, or meets an object
#: with more pointers than _BIG_OBJECT (a Python loop over them would be slow)
_BIG_STACK = 4096
_BIG_OBJECT = 512
#: pointer values resolved per piece (temporaries of 8 MiB each)
_RESOLVE_CHUNK = 1 << 20
#: worker threads for the big numpy passes (numpy releases the GIL in them)
_THREADS = min(2, os.cpu_count() or 1)
_POOL = None


def _pool():
    global _POOL
    if _POOL is None:
        from concurrent.futures import ThreadPoolExecutor

        _POOL = ThreadPoolExecutor(max_workers=_THREADS, thread_name_prefix="heaplab-gc")
    return _POOL


@dataclass
class CycleStats:
    """What one cycle did and how long its phases took (nanoseconds)."""

    number: int = 0
    forced: bool = False
    heap0: int = 0  # heap_live when the cycle started
    heap1: int = 0  # heap_live at mark termination (= heap0: the world is stopped)
    heap2: int = 0  # bytes marked live
    goal: int = 0  # the heap goal the cycle ran against (pacer.last_heap_goal)
    marked_objects: int = 0
    scanned_pointers: int = 0  # pointer words read in marked objects (nil ones included)
    scan_bytes: int = 0  # bytes of marked scan objects (Go's heapScanWork, roughly)
    root_words: int = 0
    freed_objects: int = 0
    freed_bytes: int = 0
    freed_spans: int = 0
    t_start: int = 0  # perf_counter_ns at the start (Go's tSweepTerm)
    t_mark: int = 0  # mark begins (mcaches flushed, spans tabled)
    t_mark_term: int = 0  # mark done
    t_end: int = 0  # sweep and pacer done
    gather_ns: int = 0  # part of the mark spent gathering pointer words
    rounds: int = 0  # numpy frontier rounds
    extra: dict = field(default_factory=dict)

    @property
    def mark_ns(self) -> int:
        return self.t_mark_term - self.t_mark

    @property
    def total_ns(self) -> int:
        return self.t_end - self.t_start


class _SpanTable:
    """Per-cycle arrays describing every in-use span, ordered by span class."""

    def __init__(self, spans: list) -> None:
        spans.sort(key=_spanclass_key)
        self.spans = spans
        n = len(spans)
        self.n = n
        self.base = np.fromiter((s.base for s in spans), _U64, n)
        self.npages = np.fromiter((s.npages for s in spans), np.int64, n)
        self.elemsize = np.fromiter((s.elemsize for s in spans), _U64, n)
        self.nelems = np.fromiter((s.nelems for s in spans), np.int64, n)
        self.spc = np.fromiter((s.spanclass for s in spans), np.int64, n)
        self.first_gid = np.zeros(n + 1, np.int64)
        np.cumsum(self.nelems, out=self.first_gid[1:])
        self.nobjs = int(self.first_gid[-1])
        # alloc bits of every object, in gid order (one concatenation, no per-object work)
        self.allocated = np.concatenate([s.alloc_bits for s in spans]) if n else np.zeros(0, bool)
        self.objbytes = self.elemsize  # a large span's elemsize is its whole size
        if n:
            ends = self.base + (self.npages.astype(_U64) << _U64(PAGE_SHIFT))
            self.lo = int(self.base.min())
            self.hi = int(ends.max())
        else:
            self.lo = self.hi = 0
        # object area length: the slots, or a large object's requested size (s.limit)
        self.limit_off = np.fromiter((s.limit - s.base for s in spans), _U64, n)
        npages_range = (self.hi - self.lo) >> PAGE_SHIFT
        self.table = None
        if n and npages_range <= _MAX_TABLE_PAGES:
            # page -> span index, for every page of every span
            table = np.full(npages_range, -1, np.int32)
            first_page = ((self.base - _U64(self.lo)) >> _U64(PAGE_SHIFT)).astype(np.int64)
            total = int(self.npages.sum())
            starts_in_run = np.repeat(np.cumsum(self.npages) - self.npages, self.npages)
            pages = np.arange(total, dtype=np.int64) - starts_in_run + np.repeat(first_page, self.npages)
            table[pages] = np.repeat(np.arange(n, dtype=np.int32), self.npages)
            self.table = table
            self._build_direct(table)
        else:
            self._order = np.argsort(self.base)
            self._sorted_base = self.base[self._order]

    def _build_direct(self, table: np.ndarray) -> None:
        """Arrays for the branch-free page-table resolve: every per-span array gets a
        sentinel entry ``n`` (no span: zero object area), the page table one extra
        page (index ``npages_range``, where out-of-range addresses are clamped) holding
        the sentinel, and the alloc bits a sentinel object ``nobjs`` (never allocated).
        Slot indices use Go's ``divMagic`` multiply-shift where it is exact for every
        offset in the span (checked here per span shape), else a division."""
        n = self.n
        tx = np.empty(len(table) + 1, np.intp if len(table) <= (4 << 20) else np.int32)
        tx[:-1] = table
        tx[-1] = n
        tx[tx < 0] = n
        self._tx = tx
        self._npr = _U64(len(table))
        self._base_x = np.append(self.base, _U64(0))
        self._limit_x = np.append(self.limit_off, _U64(0))
        self._fgid_x = np.append(self.first_gid[:-1], np.int64(0))
        self._alloc_x = np.append(self.allocated, False)
        # magic multipliers per span shape (elemsize, nelems)
        divmul = np.zeros(n + 1, _U64)
        exact = True
        small = np.flatnonzero(self.nelems > 1)
        if len(small):
            es = self.elemsize[small]
            ne = self.nelems[small]
            key = es * _U64(1 << 24) + ne.astype(_U64)
            ukey, inv = np.unique(key, return_inverse=True)
            mags = np.zeros(len(ukey), _U64)
            for j, k in enumerate(ukey.tolist()):
                e, ne_j = k >> 24, k & ((1 << 24) - 1)
                if e >= (1 << 32) or e * ne_j >= (1 << 31):
                    exact = False
                    break
                m = ((1 << 32) - 1) // e + 1
                offs = np.arange(e * ne_j, dtype=_U64)
                if not np.array_equal((offs * _U64(m)) >> _U64(32), offs // _U64(e)):
                    exact = False
                    break
                mags[j] = m
            divmul[small] = mags[inv.ravel()]
        self._divmul_x = divmul if exact else None
        self._elem_x = np.append(self.elemsize, _U64(1))

    def _resolve_direct(self, vals: np.ndarray, threads: bool = True) -> np.ndarray:
        nv = len(vals)
        if nv <= _RESOLVE_CHUNK:
            return self._resolve_chunk(vals)
        # in cache-sized pieces (temporaries are reused, not page-faulted in afresh),
        # split over two threads: numpy releases the GIL for these operations
        out = np.empty(nv, np.int64)
        bounds = list(range(0, nv, _RESOLVE_CHUNK))

        def work(a: int) -> None:
            b = min(nv, a + _RESOLVE_CHUNK)
            out[a:b] = self._resolve_chunk(vals[a:b])

        if threads and _THREADS > 1 and len(bounds) > 1:
            list(_pool().map(work, bounds))
        else:
            for a in bounds:
                work(a)
        return out

    def _resolve_chunk(self, vals: np.ndarray) -> np.ndarray:
        page = vals - _U64(self.lo)  # wraps below lo: clamped next
        page >>= _U64(PAGE_SHIFT)
        np.minimum(page, self._npr, out=page)
        s = self._tx[page.view(np.int64)]
        del page
        off = vals - self._base_x[s]
        inside = off < self._limit_x[s]
        if self._divmul_x is not None:
            off *= self._divmul_x[s]
            off >>= _U64(32)
        else:
            off //= self._elem_x[s]
        gid = off.view(np.int64)
        gid += self._fgid_x[s]
        del s
        np.putmask(gid, ~inside, self.nobjs)
        ok = self._alloc_x[gid]
        np.putmask(gid, ~ok, -1)
        return gid

    def resolve(self, vals: np.ndarray, threads: bool = True) -> np.ndarray:
        """gid of the allocated object whose slot holds each address in ``vals``
        (uint64), or -1 where there is none (nil, not a heap address, a free slot, a
        span's tail past its last object)."""
        if self.n and len(vals) and self.table is not None:
            return self._resolve_direct(np.asarray(vals).astype(_U64, copy=False), threads)
        out = np.full(len(vals), -1, np.int64)
        if not self.n or not len(vals):
            return out
        lo = _U64(self.lo)
        idx = np.flatnonzero((vals >= lo) & (vals < _U64(self.hi)))
        if not len(idx):
            return out
        v = vals[idx]
        if self.table is not None:
            s = self.table[((v - lo) >> _U64(PAGE_SHIFT)).astype(np.intp)].astype(np.intp)
            ok = s >= 0
        else:
            k = np.searchsorted(self._sorted_base, v, side="right") - 1
            ok = k >= 0
            s = self._order[np.maximum(k, 0)]
            ends = self.base[s] + (self.npages[s].astype(_U64) << _U64(PAGE_SHIFT))
            ok &= v < ends
        if not ok.all():
            idx, v, s = idx[ok], v[ok], s[ok]
        off = v - self.base[s]
        inside = off < self.limit_off[s]
        slot = (off // self.elemsize[s]).astype(np.int64)
        gid = self.first_gid[s] + slot
        gid[~inside] = -1
        good = gid >= 0
        good[good] = self.allocated[gid[good]]
        out[idx[good]] = gid[good]
        return out


def _spanclass_key(s) -> int:
    return s.spanclass


@dataclass
class MarkResult:
    """The outcome of :func:`mark`: the span table and the cycle's mark bitmap
    (``marked[gid]``; span ``i``'s mark bits are ``marked[first_gid[i]:first_gid[i+1]]``)."""

    table: _SpanTable
    marked: np.ndarray
    scanned_pointers: int
    scan_bytes: int
    root_words: int
    gather_ns: int
    rounds: int


def _gather(tab: _SpanTable) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every pointer word of every allocated object in a scan span, resolved: (target
    gids of the non-dropped edges, in source-gid order; their count per source gid;
    the pointer-word count per gid, dropped ones included)."""
    spans = tab.spans
    spc = tab.spc
    nobjs = tab.nobjs
    raw_counts = np.zeros(nobjs, np.int64)
    kept_counts = np.zeros(nobjs, np.int64)
    if not tab.n:
        return np.zeros(0, np.int64), kept_counts, raw_counts
    # spans are sorted by span class: find each class's run
    bounds = np.flatnonzero(np.diff(spc)) + 1
    starts = np.concatenate(([0], bounds)).tolist()
    stops = np.concatenate((bounds, [tab.n])).tolist()
    first_gid = tab.first_gid
    jobs: list[tuple] = []
    for a, b in zip(starts, stops):
        c = int(spc[a])
        if c & 1:
            continue  # noscan: never scanned
        if c >> 1 == 0:
            jobs.append((a, b, 0, 0, 0))  # large scan objects: one per span
            continue
        nel = int(tab.nelems[a])
        wpe = int(tab.elemsize[a]) >> 3
        sw = nel * wpe
        per = max(1, _CHUNK_WORDS // sw)
        for c0 in range(a, b, per):
            jobs.append((c0, min(b, c0 + per), nel, wpe, sw))

    def job(j: tuple) -> np.ndarray | None:
        c0, c1, nel, wpe, sw = j
        if not nel:
            srcs, vals = [], []
            for i in range(c0, c1):
                sp = spans[i]
                if not sp.alloc_count:
                    continue
                pos = np.flatnonzero(sp.ptr_mask)
                if len(pos):
                    vals.append(sp.words[pos])
                    srcs.append(np.full(len(pos), first_gid[i], np.int64))
            if not srcs:
                return None
            src = np.concatenate(srcs)
            val = np.concatenate(vals)
        else:
            idx = [i for i in range(c0, c1) if spans[i].alloc_count]
            if not idx:
                return None
            group = [spans[i] for i in idx]
            gids = first_gid[idx]
            m = len(group)
            mask = np.stack([sp.ptr_mask[:sw] for sp in group]).reshape(m, nel, wpe)
            mask &= np.stack([sp.alloc_bits for sp in group])[:, :, None]
            pos = np.flatnonzero(mask)
            del mask
            if not len(pos):
                return None
            words = np.stack([sp.words[:sw] for sp in group]).reshape(-1)
            val = words[pos]
            del words
            src = gids[pos // sw] + (pos % sw) // wpe
            del pos
        g0, g1 = int(first_gid[c0]), int(first_gid[c1])
        raw_counts[g0:g1] = np.bincount(src - g0, minlength=g1 - g0)
        tgt = tab.resolve(val, threads=False)
        keep = tgt >= 0
        if not keep.all():
            tgt = tgt[keep]
            src = src[keep]
        kept_counts[g0:g1] = np.bincount(src - g0, minlength=g1 - g0)
        return tgt

    if _THREADS > 1 and len(jobs) > 1:
        parts = list(_pool().map(job, jobs))
    else:
        parts = [job(j) for j in jobs]
    parts = [p for p in parts if p is not None and len(p)]
    tgt = np.concatenate(parts) if parts else np.zeros(0, np.int64)
    return tgt, kept_counts, raw_counts


def mark(heap: Heap, spans: list) -> MarkResult:
    """Mark everything reachable from ``heap``'s roots among ``spans`` (every in-use
    span, mcaches already flushed)."""
    tab = _SpanTable(spans)
    t0 = time.perf_counter_ns()
    tgt, kept_counts, raw_counts = _gather(tab)
    # CSR: the edges of object g are tgt[edge_start[g]:edge_start[g+1]]
    edge_start = np.zeros(tab.nobjs + 1, np.int64)
    np.cumsum(kept_counts, out=edge_start[1:])
    del kept_counts
    gather_ns = time.perf_counter_ns() - t0

    roots = heap._root_values()
    root_words = len(roots)
    marked = np.zeros(tab.nobjs, bool)
    frontier = tab.resolve(roots)
    frontier = frontier[frontier >= 0]
    if len(frontier):
        # de-duplicate through the mark bitmap (sorted, like np.unique, without a sort)
        marked[frontier] = True
        frontier = np.flatnonzero(marked)
    rounds = _propagate(frontier, edge_start, tgt, marked)

    scanned = int(raw_counts[marked].sum()) if tab.nobjs else 0
    # bytes of marked objects in scan spans (Go counts scan work per object scanned)
    per_span = np.add.reduceat(marked, tab.first_gid[:-1], dtype=np.int64) if tab.n else np.zeros(0, np.int64)
    scan_spans = (tab.spc & 1) == 0
    scan_bytes = int((per_span[scan_spans] * tab.elemsize[scan_spans].astype(np.int64)).sum())
    tab.marked_per_span = per_span
    return MarkResult(tab, marked, scanned, scan_bytes, root_words, gather_ns, rounds)


def _propagate(frontier: np.ndarray, edge_start: np.ndarray, tgt: np.ndarray, marked: np.ndarray) -> int:
    """Mark everything reachable from ``frontier`` (already marked). Returns the number
    of numpy rounds."""
    rounds = 0
    n = len(marked)
    stamp = None  # scratch for de-duplicating a round's new objects without sorting
    es_mv = memoryview(edge_start)
    tg_mv = memoryview(tgt)
    mk_mv = memoryview(marked.view(np.uint8))
    from_dfs = False
    while len(frontier):
        if len(frontier) < _SMALL_FRONTIER and not from_dfs:
            # (what the depth-first loop hands back is expanded by numpy at least once:
            # it stopped because the work widened, e.g. at an object with many pointers)
            frontier = _dfs(frontier.tolist(), es_mv, tg_mv, mk_mv)
            from_dfs = True
            continue
        from_dfs = False
        rounds += 1
        s = edge_start[frontier]
        cnt = edge_start[frontier + 1] - s
        total = int(cnt.sum())
        if not total:
            break
        # positions s[i] .. s[i]+cnt[i]-1 for every frontier object, flattened
        shift = np.repeat(s - (np.cumsum(cnt) - cnt), cnt)
        t = tgt[shift + np.arange(total, dtype=np.int64)]
        t = t[~marked[t]]
        if not len(t):
            break
        marked[t] = True
        if stamp is None:
            stamp = np.empty(n, np.int64)
        order = np.arange(len(t), dtype=np.int64)
        stamp[t] = order
        frontier = t[stamp[t] == order]  # one copy of each (the last one written)
    return rounds


def _dfs(stack: list, es, tg, mk) -> np.ndarray:
    """Depth-first marking in plain Python while the work is narrow; returns the
    objects still to expand when it widens (or an empty array when done)."""
    pop, push = stack.pop, stack.append
    wide: list = []
    while stack:
        if len(stack) > _BIG_STACK:
            break
        g = pop()
        a, b = es[g], es[g + 1]
        if b - a > _BIG_OBJECT:
            wide.append(g)
            break
        for k in range(a, b):
            t = tg[k]
            if not mk[t]:
                mk[t] = 1
                push(t)
    stack += wide
    return np.array(stack, dtype=np.int64)


def collect(heap: Heap, forced: bool) -> CycleStats:
    """One full stop-the-world cycle on ``heap``: flush the mcache, mark, sweep, feed
    the pacer. Called by :meth:`Heap.gc` and the allocation trigger."""
    st = CycleStats(forced=forced)
    st.t_start = time.perf_counter_ns()
    pacer = heap.pacer
    heap._flush()
    st.heap0 = heap._heap_live()
    # Go's gcStart: every mcache is flushed, so all spans sit in mcentral sets.
    heap.mcache.release_all()
    spans = list(heap.mheap.in_use_spans())
    st.t_mark = time.perf_counter_ns()
    res = mark(heap, spans)
    st.t_mark_term = time.perf_counter_ns()
    st.heap1 = heap._heap_live()
    tab = res.table
    st.marked_objects = int(res.table.marked_per_span.sum()) if tab.n else 0
    st.heap2 = int((tab.marked_per_span * tab.objbytes.astype(np.int64)).sum()) if tab.n else 0
    st.scanned_pointers = res.scanned_pointers
    st.scan_bytes = res.scan_bytes
    st.root_words = res.root_words
    st.gather_ns = res.gather_ns
    st.rounds = res.rounds
    _sweep(heap, res, st)
    # Go's end of mark: the pacer learns the live heap and re-paces (stw_cycle runs
    # start_cycle → end_cycle → reset_live → commit with nothing allocated meanwhile).
    pacer.globals_scan = 8 * res.root_words
    pacer.heap_live = st.heap1
    pacer.stw_cycle(st.heap2, heap_scan_work=st.scan_bytes, globals_scan_work=8 * res.root_words)
    st.goal = pacer.last_heap_goal
    heap._alloc_at_mark = heap.mcache.alloc_bytes
    st.t_end = time.perf_counter_ns()
    return st


def _sweep(heap: Heap, res: MarkResult, st: CycleStats) -> None:
    """Go's sweep, for every span at once: marked objects are the allocated ones now."""
    tab = res.table
    if not tab.n:
        return
    alloc_counts = np.fromiter((s.alloc_count for s in tab.spans), np.int64, tab.n)
    freed = alloc_counts - tab.marked_per_span
    which = np.flatnonzero(freed).tolist()
    marked = res.marked
    first_gid = tab.first_gid
    centrals = heap.centrals
    nfree = heap._nfree
    freed_objs = freed_bytes = freed_spans = 0
    for i in which:
        sp = tab.spans[i]
        k = int(freed[i])
        central = centrals[sp.spanclass]
        if sp.spanclass >> 1 == 0:
            # a large object nobody reaches: its whole span goes back
            sp.alloc_bits[0] = False
            sp.alloc_count = 0
            nb = sp.npages << PAGE_SHIFT
            nfree[0] += 1
            freed_objs += 1
            freed_bytes += nb
            central.release(sp)
            freed_spans += 1
            continue
        lo = int(first_gid[i])
        sp.alloc_bits[:] = marked[lo:lo + sp.nelems]
        sp.alloc_count -= k
        sp.freeindex = 0  # Go restarts the free-slot search at 0 after a sweep
        sp.needzero = True  # the freed slots hold old data
        nfree[sp.spanclass >> 1] += k
        freed_objs += k
        freed_bytes += k * sp.elemsize
        if sp.alloc_count == 0:
            central.release(sp)  # empty: back to the page allocator (Go's freeSpan)
            freed_spans += 1
        elif sp.base in central.full:
            del central.full[sp.base]
            central.partial[sp.base] = sp
    heap._free_bytes += freed_bytes
    st.freed_objects = freed_objs
    st.freed_bytes = freed_bytes
    st.freed_spans = freed_spans


def header_bytes(span) -> int:
    """Malloc header bytes at the start of each slot of ``span`` (re-exported helper)."""
    return slot_header(span)
