"""Heap arenas: where the heap's address space comes from (Go's ``mallocinit`` hints and
``(*mheap).sysAlloc`` in ``malloc.go``, ``heapArena`` in ``mheap.go``).

The heap's address space is reserved in *arenas*: aligned units of ``arena_bytes``
(64 MiB on linux/amd64; configurable here: 4 MiB, 64 MiB, 1 GiB, ...). Reservations
are never given back; the heap maps them bit by bit as it grows.

Where to reserve is steered by a list of *hints*. Go starts with hints at
``0x00c000000000``, ``0x01c000000000``, ... (or, with the randomized layout, at a
random arena-aligned base and 63 neighbours differing in the top byte), so the heap is
easy to recognise in a debugger and grows upward contiguously. Each reservation is
tried at the first hint; a miss (the OS put it elsewhere) gives the memory back and
drops the hint. When no hint is left, any aligned address the OS likes is taken and two
new hints (just below and just above it) are pushed. sbrk platforms start without
hints, so their first arena always comes from that fallback.

Per arena the heap keeps a :class:`HeapArena`: the span map (page -> span id, a numpy
int32 array) and ``zeroed_base``, the watermark below which the arena's memory has
been handed out before and may be dirty. Go allocates this metadata off-heap
(``persistentalloc`` -> ``sysAlloc(..., &memstats.gcMiscSys, "immortal metadata")``,
69,648 bytes for a 64 MiB arena); heaplab does the same by default (``metadata=True``):
it ``sys_alloc``s Go's byte count (rounded up to whole pages) for ``gc_misc_sys`` and
keeps the span map in that memory, so the accounting shows what Go's shows. Go's arena
L2 index (32 MiB of demand-paged, untracked memory) is a Python dict here and is not
modelled as mapped memory.
"""

from __future__ import annotations

import random
from typing import Iterator

import numpy as np

from sysmem import SysMem
from sysmem.errors import HeapThrowError

from .constants import (
    ARENA_BASE_OFFSET,
    HEAP_ADDR_BITS,
    HEAP_ARENA_BYTES,
    MASK64,
    PAGE_SHIFT,
    PALLOC_CHUNK_BYTES,
    PTR_SIZE,
)

__all__ = [
    "ArenaHint",
    "HeapArena",
    "HeapRand",
    "Arenas",
    "heap_arena_metadata_bytes",
    "default_arena_hints",
    "randomized_arena_hints",
]

# Heap hint i (0..0x3f) of Go's fixed 64-bit layout is i<<40 | 0x00c0<<32; hints
# 0x40..0x7f go to the separate user-arena list (GOEXPERIMENT=arenas).
_HINT_COUNT = 0x80
_HEAP_HINTS = 0x40
# Go's randomized layout uses 46 of amd64's 48 address bits (one for the sign
# extension, one spare so the heap can grow contiguously).
RAND_HEAP_ADDR_BITS = HEAP_ADDR_BITS - 1 - 1
# Go masks the top byte of the 48-bit address (quirk: the prefix itself sits 2 bits
# lower, so two bits of the random base overlap it).
_RAND_PREFIX_MASK = MASK64 & ~(0xFF << (HEAP_ADDR_BITS - 8))


def heap_arena_metadata_bytes(pages_per_arena: int) -> int:
    """Size of Go's ``heapArena`` struct for an arena of ``pages_per_arena`` pages: the
    span pointers, four one-bit-per-page bitmaps, a pointer and ``zeroedBase``
    (69,648 bytes for a 64 MiB arena)."""
    return pages_per_arena * PTR_SIZE + 4 * (pages_per_arena // 8) + PTR_SIZE + PTR_SIZE


class ArenaHint:
    """Where to try the next reservation (Go's ``arenaHint``): an up-hint reserves at
    ``addr`` and moves up; a down-hint reserves just below ``addr`` and moves down."""

    __slots__ = ("addr", "down")

    def __init__(self, addr: int, down: bool = False) -> None:
        self.addr = addr
        self.down = down

    def __repr__(self) -> str:
        return f"ArenaHint({self.addr:#x}{', down' if self.down else ''})"


class HeapRand:
    """Go's heap-randomization seed: one 64-bit random value, consumed from the top a
    few bits at a time (``nextHeapRandBits``). ``seed`` makes it reproducible."""

    __slots__ = ("_bits", "remaining")

    def __init__(self, seed: int) -> None:
        self._bits = random.Random(seed).getrandbits(64)
        self.remaining = 64

    def next(self, bits: int) -> int:
        if bits > self.remaining:
            raise HeapThrowError("not enough heapRandSeed bits remaining", f"want {bits}, have {self.remaining}")
        r = self._bits >> (64 - bits) if bits else 0
        self._bits = (self._bits << bits) & MASK64
        self.remaining -= bits
        return r

    def state(self) -> tuple[int, int]:
        return self._bits, self.remaining

    def restore(self, state: tuple[int, int]) -> None:
        self._bits, self.remaining = state


def default_arena_hints() -> tuple[list[int], list[int]]:
    """Go's fixed 64-bit hint addresses (amd64/linux): (heap hints in the order they
    are tried, user-arena hints)."""
    heap = [i << 40 | 0x00C0 << 32 for i in range(_HEAP_HINTS)]
    user = [i << 40 | 0x00C0 << 32 for i in range(_HEAP_HINTS, _HINT_COUNT)]
    return heap, user


def randomized_arena_hints(rand: HeapRand, log_arena_bytes: int) -> tuple[list[int], list[int]]:
    """Go's randomized layout (the default since Go 1.26 on 64-bit): a random
    arena-aligned base in the low 46 bits of the address space, and hints that keep its
    low 40 bits but step its top byte by 1 each (mod 256). Consumes
    ``46 - log2(arena_bytes)`` bits of ``rand``."""
    top_bits = RAND_HEAP_ADDR_BITS - log_arena_bytes
    base = rand.next(top_bits) << (RAND_HEAP_ADDR_BITS - top_bits)
    arena_bytes = 1 << log_arena_bytes
    base = (base + arena_bytes - 1) & -arena_bytes
    prefix = (base >> (RAND_HEAP_ADDR_BITS - 8)) & 0xFF

    def hint(i: int) -> int:
        return ((prefix + i) & 0xFF) << (RAND_HEAP_ADDR_BITS - 8) | (base & _RAND_PREFIX_MASK)

    return [hint(i) for i in range(_HEAP_HINTS)], [hint(i) for i in range(_HEAP_HINTS, _HINT_COUNT)]


class HeapArena:
    """Metadata of one arena (Go's ``heapArena``).

    ``spans``: int32 per page, the id of the in-use span holding it (0 = none).
    ``zeroed_base``: offset in the arena of the first byte never handed out; memory
    below it may be dirty. Only grows. ``meta_addr``/``meta_bytes``: where the metadata
    lives in sysmem (0 when not modelled). ``freed_at``: int64 per page, when the page
    last became free (clock nanoseconds: joining the heap on growth, or its span being
    freed), -1 for pages never free; stale while a span holds the page. heaplab's own
    instrumentation for time-based release policies, so not counted as Go metadata.
    """

    __slots__ = ("index", "base", "spans", "zeroed_base", "meta_addr", "meta_bytes", "freed_at")

    def __init__(self, index: int, base: int, spans: np.ndarray, meta_addr: int = 0, meta_bytes: int = 0) -> None:
        self.index = index
        self.base = base
        self.spans = spans
        self.zeroed_base = 0
        self.meta_addr = meta_addr
        self.meta_bytes = meta_bytes
        self.freed_at = np.full(len(spans), -1, dtype=np.int64)

    def __repr__(self) -> str:
        return f"HeapArena(#{self.index:#x} at {self.base:#x}, zeroed_base={self.zeroed_base:#x})"


class Arenas:
    """The heap's arenas, hints and arena map (Go's ``mheap.arenas``, ``arenaHints``,
    ``heapArenas`` and ``(*mheap).sysAlloc``).

    ``arenas[idx]`` / ``get(idx)`` / ``arena_of(addr)`` look arenas up by Go's arena
    index, ``(addr - arenaBaseOffset) mod 2**64 // arena_bytes``. Iterating yields
    the arenas in the order they were created (Go's ``allArenas``).
    """

    def __init__(
        self,
        sm: SysMem,
        arena_bytes: int = HEAP_ARENA_BYTES,
        *,
        randomize_base: bool = False,
        seed: int = 0,
        metadata: bool = True,
    ) -> None:
        if arena_bytes < PALLOC_CHUNK_BYTES or arena_bytes & (arena_bytes - 1):
            raise ValueError(
                f"arena_bytes must be a power of two >= the {PALLOC_CHUNK_BYTES}-byte palloc chunk, got {arena_bytes}"
            )
        if arena_bytes > 1 << (HEAP_ADDR_BITS - 8):
            raise ValueError(f"arena_bytes {arena_bytes:#x} is too large for a {HEAP_ADDR_BITS}-bit heap")
        self.sm = sm
        self.arena_bytes = arena_bytes
        self.log_arena_bytes = arena_bytes.bit_length() - 1
        self.pages_per_arena = arena_bytes >> PAGE_SHIFT
        self.arena_bits = HEAP_ADDR_BITS - self.log_arena_bytes  # arenaBits (L1 + L2)
        self.metadata = metadata
        self.metadata_stat = sm.stat("gc_misc_sys")
        self.metadata_bytes = 0  # sys_alloc'ed for arena metadata so far
        self._map: dict[int, HeapArena] = {}
        self._last: tuple | None = None  # the last reservation, for undo_sys_alloc
        self.all_arenas: list[int] = []  # arena indices, in creation order
        # The random layout does not exist on sbrk platforms (nor under race/msan/asan).
        is_sbrk = bool(getattr(sm.backend, "is_sbrk", False))
        self.rand: HeapRand | None = HeapRand(seed) if randomize_base and not is_sbrk else None
        # Front of the list = next hint tried.
        self.hints: list[ArenaHint] = []
        self.user_arena_hints: list[ArenaHint] = []  # kept for fidelity; unused
        if not is_sbrk:
            if self.rand is not None:
                heap, user = randomized_arena_hints(self.rand, self.log_arena_bytes)
            else:
                heap, user = default_arena_hints()
            self.hints = [ArenaHint(a) for a in heap]
            self.user_arena_hints = [ArenaHint(a) for a in user]

    # --- arena indices ----------------------------------------------------------------
    def arena_index(self, addr: int) -> int:
        """Go's ``arenaIndex`` for this arena size (wrapping subtraction)."""
        return ((addr - ARENA_BASE_OFFSET) & MASK64) >> self.log_arena_bytes

    def arena_base(self, idx: int) -> int:
        """Go's ``arenaBase``: the first address of arena ``idx``."""
        return ((idx << self.log_arena_bytes) + ARENA_BASE_OFFSET) & MASK64

    def arena_of(self, addr: int) -> HeapArena | None:
        return self._map.get(((addr - ARENA_BASE_OFFSET) & MASK64) >> self.log_arena_bytes)

    def get(self, idx: int) -> HeapArena | None:
        return self._map.get(idx)

    def __getitem__(self, idx: int) -> HeapArena:
        return self._map[idx]

    def __contains__(self, idx: object) -> bool:
        return idx in self._map

    def __len__(self) -> int:
        return len(self._map)

    def __iter__(self) -> Iterator[HeapArena]:
        return (self._map[i] for i in self.all_arenas)

    def next_rand_bits(self, bits: int) -> int:
        """Go's ``nextHeapRandBits`` (the randomized layout only)."""
        if self.rand is None:
            raise HeapThrowError("not enough heapRandSeed bits remaining", "heap base is not randomized")
        return self.rand.next(bits)

    # --- reserving -------------------------------------------------------------------
    def sys_alloc(self, n: int) -> tuple[int, int] | None:
        """Reserve at least ``n`` bytes of arena-aligned address space (Go's
        ``(*mheap).sysAlloc``): ``(address, size)`` with ``size`` a multiple of
        ``arena_bytes``, the memory Reserved, and a :class:`HeapArena` for each arena in
        it. None when the OS has no address space (or no memory for the metadata);
        then nothing changed except hints that missed, which are dropped as in Go.
        """
        sm = self.sm
        ab = self.arena_bytes
        n = (n + ab - 1) & -ab
        limit_idx = 1 << self.arena_bits
        v = None
        size = 0
        hints = self.hints
        while hints:
            h = hints[0]
            p = h.addr - n if h.down else h.addr
            if p <= 0 or p + n > MASK64 + 1 or self.arena_index(p + n - 1) >= limit_idx:
                got = None  # would wrap or leave the addressable heap: don't ask
            else:
                got = sm.sys_reserve(p, n, "heap reservation")
            if got == p:
                h.addr = p if h.down else p + n
                v, size = p, n
                break
            if got is not None:
                sm.sys_unreserve(got, n)
            del hints[0]
        fallback = v is None
        if fallback:
            # No hint worked: take any aligned address, then hint just around it.
            v, size = sm.sys_reserve_aligned(None, n, ab, "heap")
            if v is None:
                return None
            hints.insert(0, ArenaHint(v, down=True))
            hints.insert(0, ArenaHint(v + size))
        if v + size > MASK64 + 1 or self.arena_index(v) >= limit_idx or self.arena_index(v + size - 1) >= limit_idx:
            raise HeapThrowError(
                "memory reservation exceeds address space limit",
                f"memory allocated by OS [{v:#x}, {v + size:#x}) not in usable address space",
            )
        if v & (ab - 1):
            raise HeapThrowError("misrounded allocation in sysAlloc", f"{v:#x} is not {ab:#x}-aligned")

        # How to take this reservation back (see undo_sys_alloc).
        self._last = (v, size, None if fallback else hints[0], [])
        try:
            for idx in range(self.arena_index(v), self.arena_index(v + size - 1) + 1):
                self._last[3].append(self._new_arena(idx))
        except MemoryError:
            # Go throws here ("out of memory allocating heap arena metadata"); heaplab
            # gives everything back so the heap stays usable.
            self.undo_sys_alloc(v)
            return None
        return v, size

    def undo_sys_alloc(self, v: int) -> None:
        """Take back the reservation the last :meth:`sys_alloc` made at ``v`` (nothing
        of it may be mapped): its arenas and their metadata, the address space, and the
        hint it moved or pushed. Go never does this (it throws instead); heaplab does so
        that a failed growth leaves the heap as it was."""
        last = self._last
        if last is None or last[0] != v:
            raise HeapThrowError("undo of an arena reservation that is not the last one", f"{v:#x}")
        self._last = None
        _, size, hint, made = last
        for ha in reversed(made):
            self._drop_arena(ha)
        self.sm.sys_unreserve(v, size)
        if hint is None:  # the fallback pushed an up- and a down-hint
            del self.hints[:2]
        else:
            hint.addr = hint.addr + size if hint.down else hint.addr - size

    def _new_arena(self, idx: int) -> HeapArena:
        if idx in self._map:
            raise HeapThrowError("arena already initialized", f"arena index {idx:#x}")
        ppa = self.pages_per_arena
        meta_addr = meta_bytes = 0
        if self.metadata:
            sm = self.sm
            page = sm.page_size
            meta_bytes = (heap_arena_metadata_bytes(ppa) + page - 1) & -page
            p = sm.sys_alloc(meta_bytes, self.metadata_stat, "immortal metadata")
            if p is None:
                raise MemoryError("out of memory allocating heap arena metadata")
            try:
                # The span map lives where Go keeps heapArena.spans.
                spans = sm.view(p, ppa * 4, np.int32)
            except MemoryError:
                sm.sys_free(p, meta_bytes, self.metadata_stat)
                raise
            meta_addr = p
            self.metadata_bytes += meta_bytes
        else:
            spans = np.zeros(ppa, dtype=np.int32)
        ha = HeapArena(idx, self.arena_base(idx), spans, meta_addr, meta_bytes)
        self._map[idx] = ha
        self.all_arenas.append(idx)
        return ha

    def _drop_arena(self, ha: HeapArena) -> None:
        del self._map[ha.index]
        self.all_arenas.remove(ha.index)
        if ha.meta_bytes:
            ha.spans = None  # release the view before freeing its memory
            self.sm.sys_free(ha.meta_addr, ha.meta_bytes, self.metadata_stat)
            self.metadata_bytes -= ha.meta_bytes
