"""Reading the kernel's view of this process's memory: ``/proc/self/smaps`` and ``mincore``.

Linux only. Used by the Linux backend's ``inspect`` (the evidence the ledger is checked
against) and by tests and examples that quote the kernel's numbers.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ._libc import ENOMEM, ffi, libc

__all__ = ["Vma", "smaps", "mincore"]


@dataclass
class Vma:
    """One mapping of ``/proc/self/smaps``, with sizes in bytes."""

    start: int
    end: int
    perms: str
    name: str
    fields: dict[str, int] = field(default_factory=dict)
    vmflags: frozenset[str] = frozenset()

    @property
    def accessible(self) -> bool:
        """Readable and writable."""
        return self.perms[0] == "r" and self.perms[1] == "w"

    @property
    def rss(self) -> int:
        """Resident bytes of the whole mapping (``Rss``)."""
        return self.fields.get("Rss", 0)

    @property
    def lazyfree(self) -> int:
        """Bytes ``MADV_FREE``d and not yet reclaimed (``LazyFree``)."""
        return self.fields.get("LazyFree", 0)

    @property
    def anon_huge(self) -> int:
        """Bytes backed by transparent huge pages (``AnonHugePages``)."""
        return self.fields.get("AnonHugePages", 0)


def smaps(v: int = 0, n: int = 1 << 64) -> list[Vma]:
    """The mappings of this process overlapping [v, v+n), from ``/proc/self/smaps``."""
    out: list[Vma] = []
    cur: Vma | None = None
    end_of_range = v + n
    with open("/proc/self/smaps", "rb") as f:
        data = f.read().decode("ascii", "replace")
    for line in data.splitlines():
        head, _, rest = line.partition(" ")
        if "-" in head and ":" not in head:
            lo, _, hi = head.partition("-")
            start, end = int(lo, 16), int(hi, 16)
            if start < end_of_range and v < end:
                parts = rest.split(None, 4)
                cur = Vma(start, end, parts[0], parts[4] if len(parts) > 4 else "")
                out.append(cur)
            else:
                cur = None
        elif cur is not None:
            if head == "VmFlags:":
                cur.vmflags = frozenset(rest.split())
            elif head.endswith(":"):
                value = rest.split()
                if value and value[0].isdigit():
                    kb = len(value) > 1 and value[1] == "kB"
                    cur.fields[head[:-1]] = int(value[0]) * (1024 if kb else 1)
    return out


def mincore(v: int, n: int, page_size: int) -> np.ndarray:
    """Residency of each page of [v, v+n) (``mincore``); unmapped pages read as False."""
    pages = (n + page_size - 1) // page_size
    out = np.zeros(pages, dtype=bool)
    vec = ffi.new("unsigned char[]", max(pages, 1))
    if libc.mincore(v, n, vec) == 0:
        out[:] = np.frombuffer(ffi.buffer(vec, pages), dtype=np.uint8) & 1
        return out
    if ffi.errno != ENOMEM:
        raise OSError(ffi.errno, f"mincore({v:#x}, {n:#x}) failed")
    # Part of the range is unmapped: ask mapping by mapping.
    for vma in smaps(v, n):
        a, b = max(vma.start, v), min(vma.end, v + n)
        k = (b - a) // page_size
        if libc.mincore(a, b - a, vec) == 0:
            i = (a - v) // page_size
            out[i : i + k] = np.frombuffer(ffi.buffer(vec, k), dtype=np.uint8) & 1
    return out
