#!/usr/bin/env python3
"""sysmem vs C: sys_unused / sys_used / sys_map on 64 KiB and 2 MiB dirty ranges.

Compiles ``benchmarks/sysmem_ops.c`` with the system C compiler (``cc -O2``, into
``benchmarks/_build/``) and times, in one run, the same system calls made by C and by
``sysmem.SysMem("linux")`` with the ledger on and off:

* ``sys_unused``: madvise(MADV_DONTNEED) on dirty Ready ranges (Go's ``madvdontneed=1``).
* ``sys_used``: with Go's defaults ``sysUsedOS`` makes no system call, so C runs an empty
  loop and the row reports Python's absolute per-call cost instead of a ratio.
* ``sys_used`` with ``GODEBUG=harddecommit=1``: mmap(RW, MAP_FIXED) (+ the VMA-naming
  prctl heaplab makes, if the kernel supports it, mirrored in C) over ranges that
  ``sys_unused`` left PROT_NONE after they were dirtied.
* ``sys_map``: mmap(RW, MAP_FIXED) over Reserved (PROT_NONE) ranges.

Each round builds fresh ranges untimed (one reservation of COUNT ranges back to back,
made Ready, every page written, released per range where the op needs it), then times
one loop over the COUNT ranges (``time.perf_counter_ns`` in Python, with the garbage
collector paused as timeit does; ``clock_gettime(CLOCK_MONOTONIC)`` in C). Rounds
interleave, order rotated each round: C in this process, the C program, ledger on,
ledger off, raw cffi. The table shows the median per-operation time of each and Python/C.

The C rounds run twice: as the ``sysmem_ops`` program (a persistent child process), and
from the same source built as a shared library and called once per round inside this
process. Ratios divide by the in-process run by default (``--baseline process`` for the
program): the kernel's cost for the same mmap depends on the process's address space
(an mmap(MAP_FIXED) in a small C process measured up to 2× slower than in the Python
process, which would flatter Python), so only the in-process run compares like with
like. The "cffi" columns time the same calls made from Python straight through
``sysmem._libc`` (no sysmem layer), to separate the FFI's cost from sysmem's. All of it
is pinned to one CPU (``--cpu``), since a VM's CPUs can differ by tens of percent.

Usage: python benchmarks/sysmem_vs_c.py [--rounds 21] [--json out.json] [--quick]
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
SRC = HERE / "sysmem_ops.c"
BUILD = HERE / "_build"
KiB, MiB = 1 << 10, 1 << 20

#: (op key, label, GODEBUG of the Python SysMem)
OPS = [
    ("unused", "sys_unused", ""),
    ("used", "sys_used (default: no syscall)", ""),
    ("used_hd", "sys_used harddecommit=1", "harddecommit=1"),
    ("map", "sys_map", ""),
]
#: A round is measured again (up to MAX_ATTEMPTS times) when its wall time exceeds the
#: thread's CPU time over the same loop by this much: the thread was preempted (other
#: processes on the CPU), so the wall time measures them too.
DISTURBED_FRACTION, DISTURBED_MIN_NS, MAX_ATTEMPTS = 0.05, 20_000, 8


def disturbed(wall_ns: int, cpu_ns: int) -> bool:
    return wall_ns - cpu_ns > max(DISTURBED_FRACTION * wall_ns, DISTURBED_MIN_NS)


#: Targets at 64 KiB: Python / C at most this much.
TARGET_OFF, TARGET_ON, TARGET_SIZE = 1.3, 2.0, 64 * KiB


# -- the C side --------------------------------------------------------------------------
def build_c(cc: str) -> tuple[Path, Path]:
    """Compile sysmem_ops.c into the program and the library (again if the source is
    newer); return both paths."""
    BUILD.mkdir(exist_ok=True)
    exe, lib = BUILD / "sysmem_ops", BUILD / "sysmem_ops.so"
    for out, extra in ((exe, []), (lib, ["-shared", "-fPIC", "-DSYSMEM_OPS_LIB"])):
        if not out.exists() or out.stat().st_mtime < SRC.stat().st_mtime:
            tmp = out.with_name(f"{out.name}.{os.getpid()}.tmp")
            subprocess.run([cc, "-O2", "-Wall", *extra, "-o", str(tmp), str(SRC)], check=True)
            os.replace(tmp, out)  # never rewrite a library another run has loaded
    return exe, lib


class CLibrary:
    """The same C rounds, run inside this process (same address space as the Python side)."""

    def __init__(self, lib: Path, names: bool) -> None:
        from cffi import FFI

        self.ffi = FFI()
        self.ffi.cdef(
            "long long sysmem_ops_round(const char *op, size_t size, size_t count, int names,"
            " long long *cpu_ns);"
        )
        self.lib = self.ffi.dlopen(str(lib))
        self.names = int(names)
        self.cpu = self.ffi.new("long long *")

    def round(self, op: str, size: int, count: int) -> tuple[int, int]:
        """(wall ns, thread CPU ns) of one round's timed loop."""
        ns = self.lib.sysmem_ops_round(op.encode(), size, count, self.names, self.cpu)
        if ns < 0:
            raise OSError(self.ffi.errno, f"sysmem_ops_round({op}, {size}, {count}) failed")
        return ns, self.cpu[0]


class CServer:
    """The C program in --serve mode: one JSON line per "OP SIZE COUNT ROUNDS" request."""

    def __init__(self, exe: Path, names: bool) -> None:
        args = [str(exe), "--serve"] + (["--names"] if names else [])
        self.proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def rounds(self, op: str, size: int, count: int, rounds: int = 1) -> list[tuple[int, int]]:
        """(wall ns, thread CPU ns) of each round's timed loop."""
        self.proc.stdin.write(f"{op} {size} {count} {rounds}\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"sysmem_ops exited with {self.proc.wait()}")
        out = json.loads(line)
        return list(zip(out["ns"], out["cpu_ns"]))

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait()


# -- the Python side ---------------------------------------------------------------------
def _timed(loop, addrs) -> tuple[int, int]:
    """(wall ns, thread CPU ns) of ``loop(addrs)``, as the C side measures its loop."""
    gc.disable()
    try:
        cpu0 = time.thread_time_ns()
        t0 = time.perf_counter_ns()
        loop(addrs)
        t1 = time.perf_counter_ns()
        return t1 - t0, time.thread_time_ns() - cpu0
    finally:
        gc.enable()


def _raw_loop(sm, op: str, size: int, names: bool):
    """The same system calls straight through cffi (sysmem._libc), no sysmem layer: the
    floor any Python wrapper of this FFI pays. Errors are checked as sysmem checks them."""
    from sysmem import _libc as L
    from sysmem import _linux

    libc, ffi = L.libc, L.ffi
    rw, fixed = L.PROT_READ | L.PROT_WRITE, L.MAP_ANONYMOUS | L.MAP_FIXED | L.MAP_PRIVATE
    if op == "unused":
        def loop(addrs, madvise=libc.madvise, advice=L.MADV_DONTNEED):
            for v in addrs:
                if madvise(v, size, advice) != 0:
                    raise OSError(ffi.errno, "madvise")
    elif op == "used":
        def loop(addrs):
            for v in addrs:
                pass
    else:  # map, used_hd: mmap(RW, FIXED) [+ the naming prctl where sysmem makes it]
        name = names and op == "used_hd" and _linux.vma_names_supported()
        buf = ffi.new("char[]", _linux.VMA_NAME_PREFIX + b"used\0")
        pbuf = int(ffi.cast("uintptr_t", buf))

        def loop(addrs, mmap=libc.mmap, prctl=libc.prctl):
            for v in addrs:
                if mmap(v, size, rw, fixed, -1, 0) != v:
                    raise OSError(ffi.errno, "mmap")
                if name:
                    prctl(L.PR_SET_VMA, L.PR_SET_VMA_ANON_NAME, v, size, pbuf)
            buf  # keep the name buffer alive
    return loop


def py_round(sm, stat, op: str, size: int, count: int, raw=None) -> tuple[int, int]:
    """One round of ``op`` on a fresh region; returns (wall ns, thread CPU ns) of the
    timed loop.

    ``raw``: a loop from :func:`_raw_loop` to time instead of the sysmem calls (``sm``
    must then have the ledger off; the untimed setup and teardown stay the same calls).
    """
    length = size * count
    base = sm.sys_reserve(None, length)
    addrs = [base + i * size for i in range(count)]
    if op == "map":
        if raw is not None:
            ns = _timed(raw, addrs)
            sm.sys_unreserve(base, length)  # sysmem never saw the mapping: munmap
            return ns

        def loop(addrs, f=sm.sys_map):
            for v in addrs:
                f(v, size, stat)

        ns = _timed(loop, addrs)
        sm.sys_used(base, length, length)
        sm.sys_free(base, length, stat)
        return ns

    sm.sys_map(base, length, stat)
    sm.sys_used(base, length, length)
    view = sm.view(base, length)
    view[:: sm.page_size] = 1  # dirty every page
    del view
    if op == "unused":
        def loop(addrs, f=sm.sys_unused):
            for v in addrs:
                f(v, size)

        ns = _timed(raw or loop, addrs)
        if raw is None:
            sm.sys_used(base, length, length)
    else:  # used / used_hd: release every range, then time taking them back
        for v in addrs:
            sm.sys_unused(v, size)

        def loop(addrs, f=sm.sys_used):
            for v in addrs:
                f(v, size, size)

        ns = _timed(raw or loop, addrs)
        if raw is not None:
            sm.sys_used(base, length, length)  # the accounting sysmem did not see
    sm.sys_free(base, length, stat)
    return ns


# -- reporting ---------------------------------------------------------------------------
def machine_info(exe_cc: str) -> dict:
    import cffi
    import numpy

    import sysmem
    from sysmem import _linux

    def read(path: str) -> str:
        try:
            return Path(path).read_text().strip()
        except OSError:
            return "?"

    model = "?"
    for line in read("/proc/cpuinfo").splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    try:
        cc_version = subprocess.run(
            [exe_cc, "--version"], capture_output=True, text=True, check=True
        ).stdout.splitlines()[0]
    except (OSError, subprocess.CalledProcessError, IndexError):
        cc_version = "?"
    return {
        "cpu_count": os.cpu_count(),
        "cpu_affinity": sorted(os.sched_getaffinity(0)),
        "cpu_model": model,
        "kernel": f"{platform.system()} {platform.release()} {platform.machine()}",
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "numpy": numpy.__version__,
        "cffi": cffi.__version__,
        "cc": cc_version,
        "page_size": os.sysconf("SC_PAGESIZE"),
        "thp": read("/sys/kernel/mm/transparent_hugepage/enabled"),
        "vma_names_supported": _linux.vma_names_supported(),
        "python_threads": len(os.listdir("/proc/self/task")),
        "loadavg": read("/proc/loadavg"),
        "sysmem": getattr(sysmem, "__file__", "?"),
    }


def fmt_size(n: int) -> str:
    return f"{n // MiB} MiB" if n >= MiB else f"{n // KiB} KiB"


def verdict(ratio: float, limit: float) -> str:
    return f"≤{limit:g}× {'PASS' if ratio <= limit else 'MISS'}"


def print_table(rows: list[dict]) -> None:
    other = "C program ns/op" if rows[0]["baseline"] == "inproc" else "C in-proc ns/op"
    head = ["op", "size", "C ns/op", "Py on ns/op", "on/C", "Py off ns/op", "off/C",
            "target @64 KiB", "cffi ns/op", "cffi/C", other]
    lines = []
    for r in rows:
        c, on, off = r["c_ns_per_op"], r["py_on_ns_per_op"], r["py_off_ns_per_op"]
        if r["op"] == "used":
            ratio_on = ratio_off = ratio_cffi = "n/a"
            target = "n/a (no syscall)"
        else:
            ratio_on, ratio_off = f"{r['ratio_on']:.2f}×", f"{r['ratio_off']:.2f}×"
            ratio_cffi = f"{r['ratio_cffi']:.2f}×"
            target = (
                f"off {verdict(r['ratio_off'], TARGET_OFF)}, on {verdict(r['ratio_on'], TARGET_ON)}"
                if r["size"] == TARGET_SIZE
                else "-"
            )
        lines.append(
            [r["label"], fmt_size(r["size"]), f"{c:,.0f}", f"{on:,.0f}", ratio_on,
             f"{off:,.0f}", ratio_off, target, f"{r['cffi_ns_per_op']:,.0f}", ratio_cffi,
             f"{r['c_process_ns_per_op' if r['baseline'] == 'inproc' else 'c_inproc_ns_per_op']:,.0f}"]
        )
    widths = [max(len(h), *(len(l[i]) for l in lines)) for i, h in enumerate(head)]
    right = {2, 3, 4, 5, 6, 8, 9, 10}

    def out(cells):
        print("  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))))

    out(head)
    print("  ".join("-" * w for w in widths))
    for l in lines:
        out(l)


# -- main --------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=21, help="measured rounds per case (default 21)")
    ap.add_argument("--warmup", type=int, default=2, help="discarded rounds per case (default 2)")
    ap.add_argument("--count-64k", type=int, default=256, help="64 KiB ranges per round")
    ap.add_argument("--count-2m", type=int, default=32, help="2 MiB ranges per round")
    ap.add_argument("--cc", default=os.environ.get("CC", "cc"), help="C compiler (default $CC or cc)")
    ap.add_argument("--cpu", type=int, default=None,
                    help="pin this process (all its threads) and the C child to this CPU "
                         "(default: the lowest allowed CPU; -1: no pinning)")
    ap.add_argument("--baseline", choices=("inproc", "process"), default="inproc",
                    help="which C run the ratios divide by: the C rounds run inside this "
                         "process (default; same address space as the Python side) or the "
                         "separate sysmem_ops program")
    ap.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    ap.add_argument("--quick", action="store_true", help="5 rounds, 1 warm-up (a smoke run)")
    args = ap.parse_args(argv)
    if args.quick:
        args.rounds, args.warmup = 5, 1
    if not sys.platform.startswith("linux"):
        print("sysmem_vs_c: needs Linux")
        return 0
    if shutil.which(args.cc) is None:
        print(f"sysmem_vs_c: no C compiler {args.cc!r}; set --cc or $CC")
        return 0
    if args.cpu is None:
        args.cpu = min(os.sched_getaffinity(0))
    if args.cpu >= 0:
        # Same CPU for both sides: CPUs of a VM can differ by tens of percent, and the
        # scheduler would otherwise tend to put the C child on the other one. Every
        # thread (numpy may have started some), and the C child inherits it.
        for tid in os.listdir("/proc/self/task"):
            os.sched_setaffinity(int(tid), {args.cpu})

    import sysmem

    exe, lib = build_c(args.cc)
    sms = {}
    for key, _label, godebug in OPS:
        for ledger in (True, False, "raw"):
            if (godebug, ledger) not in sms:
                sms[godebug, ledger] = sysmem.SysMem("linux", ledger=ledger is True, godebug=godebug)

    # The C side names mappings exactly where heaplab does: only if decoratemappings is on
    # (Go's default) — it stops by itself, like heaplab, if the kernel refuses.
    names = bool(sms["harddecommit=1", True].debug.decoratemappings)
    server = CServer(exe, names)
    clib = CLibrary(lib, names)
    base_key = "c_lib" if args.baseline == "inproc" else "c_proc"
    info = machine_info(args.cc)
    sizes = [(64 * KiB, args.count_64k), (2 * MiB, args.count_2m)]

    rows = []
    try:
        for key, label, godebug in OPS:
            for size, count in sizes:
                runners = {
                    "c_lib": lambda: clib.round(key, size, count),
                    "c_proc": lambda: server.rounds(key, size, count)[0],
                    "on": lambda: py_round(sms[godebug, True], sms[godebug, True].stat("other_sys"),
                                           key, size, count),
                    "off": lambda: py_round(sms[godebug, False], sms[godebug, False].stat("other_sys"),
                                            key, size, count),
                    "cffi": lambda: py_round(sms[godebug, "raw"], sms[godebug, "raw"].stat("other_sys"),
                                             key, size, count, raw=raw),
                }
                raw = _raw_loop(sms[godebug, "raw"], key, size, names)
                order = list(runners)
                times = {k: [] for k in runners}
                redone = {k: 0 for k in runners}
                for r in range(args.warmup + args.rounds):
                    rot = order[r % len(order):] + order[: r % len(order)]
                    for k in rot:
                        for attempt in range(MAX_ATTEMPTS):
                            ns, cpu = runners[k]()
                            if not disturbed(ns, cpu):
                                break
                            redone[k] += 1
                        if r >= args.warmup:
                            times[k].append(ns)
                med = {k: statistics.median(v) / count for k, v in times.items()}
                c = med[base_key]
                row = {
                    "op": key, "label": label, "godebug": godebug, "size": size, "count": count,
                    "rounds": args.rounds, "baseline": args.baseline,
                    "c_ns_per_op": c, "c_inproc_ns_per_op": med["c_lib"],
                    "c_process_ns_per_op": med["c_proc"],
                    "py_on_ns_per_op": med["on"], "py_off_ns_per_op": med["off"],
                    "ratio_on": med["on"] / c, "ratio_off": med["off"] / c,
                    "cffi_ns_per_op": med["cffi"], "ratio_cffi": med["cffi"] / c,
                    "round_ns": times, "redone_rounds": redone,
                }
                rows.append(row)
                print(f"  measured {label} {fmt_size(size)}", file=sys.stderr, flush=True)
    finally:
        server.close()
    # Check that the kernel's answer about VMA names was the same on both sides.
    info["vma_names_supported"] = sysmem._linux.vma_names_supported()

    print()
    print("sysmem vs C — median per-operation time, Python/C ratios")
    print(
        f"machine: {info['cpu_count']} CPU(s) ({info['cpu_model']}), affinity {info['cpu_affinity']}, "
        f"{info['kernel']}, page {info['page_size']} B, THP {info['thp']}, "
        f"load average {' '.join(info['loadavg'].split()[:3])} at start"
    )
    print(f"python: {info['python']}, numpy {info['numpy']}, cffi {info['cffi']}; C: {info['cc']} -O2")
    print(
        f"rounds: {args.rounds} measured (+{args.warmup} warm-up) per case, interleaved C / C program / "
        f"ledger on / ledger off / cffi; {args.count_64k} × 64 KiB or {args.count_2m} × 2 MiB ranges timed per round; "
        f"VMA naming {'on' if names else 'off'} (kernel supports it: {info['vma_names_supported']})"
    )
    print()
    print_table(rows)
    print()
    used = [r for r in rows if r["op"] == "used"]
    print(
        "sys_used (default): with madvdontneed=1 and harddecommit=0 sysUsedOS makes no system call, "
        "so C is an empty loop and the Python columns are its absolute per-call cost ("
        + ", ".join(f"{fmt_size(r['size'])}: ledger on {r['py_on_ns_per_op']:,.0f} ns, "
                    f"off {r['py_off_ns_per_op']:,.0f} ns" for r in used)
        + "); no ratio or target."
    )
    print(
        f"targets at 64 KiB: Python/C ≤ {TARGET_OFF}× with the ledger off, ≤ {TARGET_ON}× with it on."
    )
    total = len(rows) * len(rows[0]["redone_rounds"]) * (args.rounds + args.warmup)
    redone = sum(sum(r["redone_rounds"].values()) for r in rows)
    print(
        f"preempted rounds (wall time > thread CPU time by >{DISTURBED_FRACTION:.0%}) measured again: "
        f"{redone} re-runs for {total} rounds"
        + (" — the machine was busy; compare with a quieter run" if redone > total // 10 else "")
    )
    if args.baseline == "inproc":
        print(
            "C: sysmem_ops.c's rounds run inside this process (same address space as Python); "
            "C program: the same rounds in the separate sysmem_ops process (not used for ratios: "
            "the kernel's cost depends on the address space)."
        )
    else:
        print("C: the separate sysmem_ops program; C in-proc: the same rounds inside this process.")
    print(
        "cffi: the same system calls made from Python straight through sysmem._libc (cffi ABI "
        "mode), without the sysmem layer — the floor for any Python code on this FFI; "
        "Py off − cffi is what the sysmem layer itself adds."
    )
    if args.json:
        result = {"machine": info, "args": vars(args), "rows": rows}
        Path(args.json).write_text(json.dumps(result, indent=2))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
