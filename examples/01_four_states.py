"""Example 1 — a region's life through Go's four states, with the kernel as witness.

Run: python examples/01_four_states.py

Each step is one call of Go's mem.go (as heaplab's sysmem); after it we print what the
ledger says and what Linux says about the same addresses: the protection of the mapping
(/proc/self/smaps) and how many pages are resident (mincore).
"""

import sysmem

MiB = 1 << 20
sm = sysmem.SysMem("linux")
stat = sm.stat("other_sys")


def show(step: str, base: int, size: int) -> None:
    pages = sm.os_pages(base, size)
    resident = int(pages.resident.sum()) * pages.page_size
    prot = "rw" if pages.accessible.all() else ("--" if not pages.accessible.any() else "mixed")
    states = ", ".join(f"{r.state.name} {r.size // 1024} KiB" for r in sm.runs() if base <= r.start < base + size)
    print(f"{step:<34} ledger: {states:<40} kernel: {prot}, {resident // 1024:>5} KiB resident, "
          f"mapped_ready {sm.mapped_ready // 1024} KiB")


base = sm.sys_reserve(None, 4 * MiB, "example")      # mmap(PROT_NONE): address space only
show("sys_reserve", base, 4 * MiB)
sm.sys_map(base, 4 * MiB, stat, "example")           # mmap(MAP_FIXED, rw): Prepared
show("sys_map", base, 4 * MiB)
sm.sys_used(base, 4 * MiB, prepared=4 * MiB)         # nothing to do on Linux: Ready
show("sys_used", base, 4 * MiB)
view = sm.view(base, 4 * MiB)
view[:: sm.page_size] = 1                            # first touch: the kernel backs the pages
del view                                             # views pin memory; drop them when done
show("touch every page", base, 4 * MiB)
sm.sys_unused(base + 2 * MiB, 2 * MiB)               # madvise(MADV_DONTNEED): RSS falls
show("sys_unused upper half", base, 4 * MiB)
sm.check()                                           # ledger = accounting = kernel, or it raises

sm.sys_used(base + 2 * MiB, 2 * MiB, prepared=2 * MiB)
sm.sys_fault(base, 4 * MiB)                          # mprotect(PROT_NONE) + DONTNEED: Reserved
stat.add(-4 * MiB)                                   # Go's callers uncount faulted memory
show("sys_fault", base, 4 * MiB)
sm.sys_unreserve(base, 4 * MiB)                      # munmap
sm.check()
print("back to None; mapped_ready =", sm.mapped_ready)
