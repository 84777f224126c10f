"""``heaplab``: walk a region through Go's four memory states and show the kernel agreeing.

Each step makes one ``mem.go`` call on real memory and prints what heaplab's ledger
says (state of the region, ``mapped_ready``, the stat) next to what the kernel says
(protection from ``/proc/self/smaps``, resident and lazily-freeable bytes from
``mincore`` and smaps). Run ``heaplab`` (or ``python -m sysmem.demo``); ``--size`` sets
the region size, ``--madvdontneed 0`` shows ``MADV_FREE`` instead of Go's default.
"""

from __future__ import annotations

import argparse
import sys

from .core import SysMem
from .states import State

_MiB = 1 << 20


def _kernel_row(sm: SysMem, base: int, size: int) -> tuple[str, int, int]:
    """(protections seen, resident bytes, LazyFree bytes) for [base, base+size)."""
    if sm.ledger is not None and not any(r.base == base for r in sm.ledger.regions()):
        return "unmapped", 0, 0
    pages = sm.os_pages(base, size)
    if not pages.mapped.any():
        return "unmapped", 0, 0
    prot = sorted({"rw-" if a else "---" for a, m in zip(pages.accessible, pages.mapped) if m})
    return "/".join(prot), int(pages.resident.sum()) * pages.page_size, pages.lazyfree_bytes


def _states(sm: SysMem, base: int, size: int) -> str:
    runs = [r for r in sm.runs() if base <= r.start < base + size]
    if not runs:
        return "None"
    out = {}
    for r in runs:
        out[r.state.name.capitalize()] = out.get(r.state.name.capitalize(), 0) + r.size
    return " + ".join(f"{name} {n // _MiB} MiB" if n >= _MiB else f"{name} {n // 1024} KiB"
                      for name, n in out.items())


def run_demo(size: int = 8 * _MiB, madvdontneed: int = 1, out=None) -> None:
    """Print the walk through the states for a region of ``size`` bytes (to ``out``, default stdout)."""
    out = out or sys.stdout
    sm = SysMem("linux", godebug=f"madvdontneed={madvdontneed}")
    stat = sm.stat("other_sys")
    half = size // 2
    header = f"{'step':<44} {'heaplab state':<34} {'mapped_ready':>12} {'stat':>9} | {'kernel prot':<11} {'RSS':>9} {'LazyFree':>9}"
    print(f"heaplab sysmem demo — Go's mem.go on real memory ({sm.backend.name}, "
          f"page {sm.page_size} B, huge page {sm.backend.huge_page_size // 1024} KiB, "
          f"GODEBUG madvdontneed={madvdontneed})", file=out)
    print(header, file=out)
    print("-" * len(header), file=out)

    base = None

    def show(step: str) -> None:
        prot, rss, lazy = _kernel_row(sm, base, size)
        print(
            f"{step:<44} {_states(sm, base, size):<34} {sm.mapped_ready // 1024:>9} KiB"
            f" {stat.load() // 1024:>5} KiB | {prot:<11} {rss // 1024:>5} KiB {lazy // 1024:>5} KiB",
            file=out,
        )
        sm.check()  # the ledger, the accounting and the kernel must agree at every step

    base = sm.sys_reserve(None, size, "demo")
    show(f"sys_reserve(nil, {size // _MiB} MiB)")
    sm.sys_map(base, size, stat, "demo")
    show("sys_map(p, n, other_sys)")
    sm.sys_used(base, size, size)
    show("sys_used(p, n, prepared=n)")
    view = sm.view(base, size)
    view[:: sm.page_size] = 1
    del view
    show("write one byte per page")
    sm.sys_unused(base, half)
    show(f"sys_unused(p, n/2)  [{'MADV_DONTNEED' if madvdontneed else 'MADV_FREE'}]")
    sm.sys_used(base, half, half)
    first = sm.view(base, sm.page_size)
    stale = int(first[0])
    del first
    show(f"sys_used(p, n/2, n/2): first byte reads {stale}")
    sm.sys_fault(base + half, half)
    stat.add(-half)  # as Go's arena.go does: faulted memory is no longer counted
    show("sys_fault(p+n/2, n/2)")
    sm.sys_unused(base, half)
    show("sys_unused(p, n/2)")
    sm.sys_used(base, half, half)
    sm.sys_fault(base, half)
    stat.add(-half)
    sm.sys_unreserve(base, size)
    print(f"{'sys_used + sys_fault + sys_unreserve(p, n)':<44} {'None':<34} "
          f"{sm.mapped_ready // 1024:>9} KiB {stat.load() // 1024:>5} KiB | unmapped", file=out)
    sm.check()
    need = sm.need_zero_after_sys_unused()
    print(f"\nneed_zero_after_sys_unused() = {need}: released memory "
          f"{'may keep old data (MADV_FREE)' if need else 'comes back zeroed (MADV_DONTNEED)'}",
          file=out)
    print(f"The ledger, accounting and kernel agreed at every step ({State.RESERVED.name} → "
          f"{State.PREPARED.name} → {State.READY.name} and back).", file=out)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``heaplab`` command."""
    parser = argparse.ArgumentParser(prog="heaplab", description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=8 * _MiB, help="region size in bytes (default 8 MiB)")
    parser.add_argument("--madvdontneed", type=int, choices=(0, 1), default=1,
                        help="Go's GODEBUG madvdontneed: 1 = MADV_DONTNEED (Linux default), 0 = MADV_FREE")
    args = parser.parse_args(argv)
    if args.size <= 0 or args.size % (2 * 4096):
        parser.error("--size must be a positive multiple of 8192")
    run_demo(args.size, args.madvdontneed)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
