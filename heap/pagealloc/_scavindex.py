"""Which chunks are worth scavenging (Go's ``scavengeIndex`` and ``scavChunkData``).

Per chunk the index keeps one packed uint64: how many pages are in use now
(``in_use``), how many were in use when the previous GC generation ended
(``last_in_use``), the generation of the last update (``gen``) and a flag saying the
chunk may hold free, unscavenged pages (``HasFree``). All zeros is a freshly grown
chunk: nothing in use and nothing to scavenge, since new memory arrives scavenged.

Two cursors remember the highest address that may still have work: the *force* cursor
follows every free at once, the *background* one only catches up when a GC generation
ends (``next_gen``), so memory freed during a cycle waits a cycle before the background
scavenger touches it. Chunks are visited highest address first.
"""

from __future__ import annotations

from bisect import bisect_right, insort

from ..constants import (
    LOG_SCAV_CHUNK_IN_USE_MAX,
    MASK64,
    MIN_OFF_ADDR,
    PAGE_SIZE,
    PALLOC_CHUNK_BYTES,
    PALLOC_CHUNK_PAGES,
    SCAV_CHUNK_FLAGS_MASK,
    SCAV_CHUNK_HAS_FREE,
    SCAV_CHUNK_HI_OCC_PAGES,
    SCAV_CHUNK_IN_USE_MASK,
)
from ._addr import chunk_base, chunk_index, chunk_page_index, off
from sysmem.errors import PageAllocError
from ._ranges import AtomicOffAddr

_U16 = 0xFFFF
_U32 = 0xFFFFFFFF
_FLAG_SHIFT = 16 + LOG_SCAV_CHUNK_IN_USE_MAX
_FLAGS_IN_PLACE = SCAV_CHUNK_FLAGS_MASK << _FLAG_SHIFT
_HAS_FREE_IN_PLACE = SCAV_CHUNK_HAS_FREE << _FLAG_SHIFT


class ScavChunkData:
    """One chunk's scavenging state, unpacked (Go's ``scavChunkData``).

    Field widths are Go's: ``in_use`` and ``last_in_use`` are uint16 (only 10 bits
    survive packing for ``last_in_use``), ``gen`` uint32, ``flags`` uint8 (6 bits kept).
    """

    __slots__ = ("in_use", "last_in_use", "gen", "flags")

    def __init__(self, gen: int = 0, in_use: int = 0, last_in_use: int = 0, flags: int = 0) -> None:
        self.gen = gen & _U32
        self.in_use = in_use & _U16
        self.last_in_use = last_in_use & _U16
        self.flags = flags & 0xFF

    @classmethod
    def unpack(cls, sc: int) -> "ScavChunkData":
        """Go's ``unpackScavChunkData``."""
        return cls(
            gen=sc >> 32,
            in_use=sc & _U16,
            last_in_use=(sc >> 16) & SCAV_CHUNK_IN_USE_MASK,
            flags=(sc >> _FLAG_SHIFT) & SCAV_CHUNK_FLAGS_MASK,
        )

    def pack(self) -> int:
        """Go's ``pack``: in_use | last_in_use<<16 | flags<<26 | gen<<32."""
        return (self.in_use | (self.last_in_use << 16) | (self.flags << _FLAG_SHIFT) | (self.gen << 32)) & MASK64

    def __eq__(self, other: object) -> bool:
        if isinstance(other, ScavChunkData):
            return (self.in_use, self.last_in_use, self.gen, self.flags) == (
                other.in_use,
                other.last_in_use,
                other.gen,
                other.flags,
            )
        return NotImplemented

    __hash__ = None

    def __repr__(self) -> str:
        return (
            f"ScavChunkData(gen={self.gen}, in_use={self.in_use}, "
            f"last_in_use={self.last_in_use}, flags={self.flags:#b})"
        )

    def is_empty(self) -> bool:
        return not self.flags & SCAV_CHUNK_HAS_FREE

    def set_empty(self) -> None:
        self.flags &= ~SCAV_CHUNK_HAS_FREE

    def set_non_empty(self) -> None:
        self.flags |= SCAV_CHUNK_HAS_FREE

    def should_scavenge(self, curr_gen: int, force: bool) -> bool:
        """Worth a look by the scavenger? Never without HasFree; always when forced;
        otherwise only if the chunk was not dense (>= 496 of 512 pages in use) this
        generation, nor, when updated this generation, at the end of the previous one."""
        if self.is_empty():
            return False
        if force:
            return True
        if self.gen == curr_gen:
            return self.in_use < SCAV_CHUNK_HI_OCC_PAGES and self.last_in_use < SCAV_CHUNK_HI_OCC_PAGES
        return self.in_use < SCAV_CHUNK_HI_OCC_PAGES

    def _roll(self, new_gen: int) -> None:
        # First touch in a new generation: what was in use becomes "last generation's".
        if self.gen != new_gen:
            self.last_in_use = self.in_use
            self.gen = new_gen & _U32

    def alloc(self, npages: int, new_gen: int) -> None:
        if self.in_use + npages > PALLOC_CHUNK_PAGES:
            raise PageAllocError("too many pages allocated in chunk?", f"inUse={self.in_use} npages={npages}")
        self._roll(new_gen)
        self.in_use = (self.in_use + npages) & _U16
        if self.in_use == PALLOC_CHUNK_PAGES:
            self.set_empty()  # nothing left for the scavenger here

    def free(self, npages: int, new_gen: int) -> None:
        if self.in_use < npages:
            raise PageAllocError("allocated pages below zero?", f"inUse={self.in_use} npages={npages}")
        self._roll(new_gen)
        self.in_use -= npages
        self.set_non_empty()


def _should_scavenge_packed(v: int, curr_gen: int, force: bool) -> bool:
    """``ScavChunkData.unpack(v).should_scavenge(curr_gen, force)`` without the object."""
    if not v & _HAS_FREE_IN_PLACE:
        return False
    if force:
        return True
    in_use = v & _U16
    if (v >> 32) == curr_gen:
        return in_use < SCAV_CHUNK_HI_OCC_PAGES and ((v >> 16) & SCAV_CHUNK_IN_USE_MASK) < SCAV_CHUNK_HI_OCC_PAGES
    return in_use < SCAV_CHUNK_HI_OCC_PAGES


class ScavengeIndex:
    """Go's ``scavengeIndex``.

    Chunk data is kept sparsely (a dict of packed values; absent means zero) together
    with the sorted list of chunk indices that have an entry, so ``find`` walks down
    only over chunks that could hold work; skipping the all-zero ones Go steps through
    one by one gives the same answer.
    """

    __slots__ = ("chunks", "_known", "min_heap_idx", "search_addr_bg", "search_addr_force", "free_hwm", "gen")

    def __init__(self, min_heap_idx: int = 0) -> None:
        self.chunks: dict[int, int] = {}
        self._known: list[int] = []
        self.min_heap_idx = min_heap_idx
        self.search_addr_bg = AtomicOffAddr()
        self.search_addr_force = AtomicOffAddr()
        self.free_hwm = MIN_OFF_ADDR  # a virtual address, compared in offset order
        self.gen = 0

    # --- per-chunk data ---------------------------------------------------------------

    def load(self, ci: int) -> ScavChunkData:
        return ScavChunkData.unpack(self.chunks.get(ci, 0))

    def store(self, ci: int, sc: ScavChunkData) -> None:
        if ci not in self.chunks:
            insort(self._known, ci)
        self.chunks[ci] = sc.pack()

    # --- Go's scavengeIndex operations -------------------------------------------------

    def grow(self, base: int, limit: int) -> None:
        """Heap growth over [base, limit): lower the smallest chunk index to search.
        (Go also maps the index's backing store here; a dict needs none.)"""
        base_idx = chunk_index(base)
        if self.min_heap_idx == 0 or base_idx < self.min_heap_idx:
            self.min_heap_idx = base_idx

    def find(self, force: bool) -> tuple[int, int]:
        """The highest chunk that may have pages to scavenge and the page to start the
        search from, as ``(chunk_index, page_index)``; ``(0, 0)`` when there is none
        (chunk 0 is never part of the heap, so Go uses it as "none")."""
        cursor = self.search_addr_force if force else self.search_addr_bg
        search_addr, marked = cursor.load()
        if off(search_addr) == 0:
            return 0, 0  # cleared: the heap was exhausted
        gen = self.gen
        lowest = self.min_heap_idx
        start = chunk_index(search_addr)
        known, chunks = self._known, self.chunks
        k = bisect_right(known, start) - 1
        while k >= 0:
            i = known[k]
            if i < lowest:
                break
            k -= 1
            if not _should_scavenge_packed(chunks[i], gen, force):
                continue
            if i == start:
                return i, chunk_page_index(search_addr)
            # Move the cursor down to this chunk's last page; if it held a raise that
            # we are the first to see, only replace that exact value.
            new_search_addr = (chunk_base(i) + PALLOC_CHUNK_BYTES - PAGE_SIZE) & MASK64
            if marked:
                cursor.store_unmark(search_addr, new_search_addr)
            else:
                cursor.store_min(new_search_addr)
            return i, PALLOC_CHUNK_PAGES - 1
        cursor.clear()
        return 0, 0

    def _rolled(self, ci: int) -> tuple[int, int, int]:
        # Chunk ci's packed word (registering the chunk if new), its in-use count and
        # its last-generation count as of the current generation: the first update in
        # a new generation makes the current count last generation's (Go's alloc and
        # free on scavChunkData), done here on the packed value (this runs on every
        # allocation and free).
        v = self.chunks.get(ci)
        if v is None:
            v = 0
            insort(self._known, ci)
        in_use = v & _U16
        if (v >> 32) != self.gen:
            return v, in_use, in_use & SCAV_CHUNK_IN_USE_MASK
        return v, in_use, (v >> 16) & SCAV_CHUNK_IN_USE_MASK

    def alloc(self, ci: int, npages: int) -> None:
        """``npages`` were allocated in chunk ``ci``."""
        v, in_use, last = self._rolled(ci)
        if in_use + npages > PALLOC_CHUNK_PAGES:
            raise PageAllocError("too many pages allocated in chunk?", f"inUse={in_use} npages={npages}")
        in_use += npages
        flags = (v >> _FLAG_SHIFT) & SCAV_CHUNK_FLAGS_MASK
        if in_use == PALLOC_CHUNK_PAGES:
            flags &= ~SCAV_CHUNK_HAS_FREE
        self.chunks[ci] = in_use | (last << 16) | (flags << _FLAG_SHIFT) | (self.gen << 32)

    def free(self, ci: int, page: int, npages: int) -> None:
        """``npages`` starting at page ``page`` of chunk ``ci`` were freed."""
        v, in_use, last = self._rolled(ci)
        if in_use < npages:
            raise PageAllocError("allocated pages below zero?", f"inUse={in_use} npages={npages}")
        flags = ((v >> _FLAG_SHIFT) & SCAV_CHUNK_FLAGS_MASK) | SCAV_CHUNK_HAS_FREE
        self.chunks[ci] = (in_use - npages) | (last << 16) | (flags << _FLAG_SHIFT) | (self.gen << 32)
        addr = (chunk_base(ci) + (page + npages - 1) * PAGE_SIZE) & MASK64
        if off(self.free_hwm) < off(addr):
            self.free_hwm = addr
        # Raise the force cursor at once (marked, so a concurrent find cannot lower it
        # past this before having seen it).
        search_addr, _ = self.search_addr_force.load()
        if off(search_addr) < off(addr):
            self.search_addr_force.store_marked(addr)

    def next_gen(self) -> None:
        """A GC cycle ended: new generation; the background cursor catches up with
        everything freed during the cycle."""
        self.gen = (self.gen + 1) & _U32
        search_addr, _ = self.search_addr_bg.load()
        if off(search_addr) < off(self.free_hwm):
            self.search_addr_bg.store_marked(self.free_hwm)
        self.free_hwm = MIN_OFF_ADDR

    def set_empty(self, ci: int) -> None:
        """The scavenger found nothing more in chunk ``ci`` for now."""
        sc = self.load(ci)
        sc.set_empty()
        self.store(ci, sc)

    # --- Go's export_test.go helpers ----------------------------------------------------

    def alloc_range(self, base: int, limit: int) -> None:
        """Record an allocation of every page in [base, limit)."""
        for ci, page, n in _chunk_pieces(base, limit):
            self.alloc(ci, n)

    def free_range(self, base: int, limit: int) -> None:
        """Record a free of every page in [base, limit)."""
        for ci, page, n in _chunk_pieces(base, limit):
            self.free(ci, page, n)

    def reset_search_addrs(self) -> None:
        """Unmark and clear both cursors and forget the free high-water mark."""
        for cursor in (self.search_addr_bg, self.search_addr_force):
            addr, marked = cursor.load()
            if marked:
                cursor.store_unmark(addr, addr)
            cursor.clear()
        self.free_hwm = MIN_OFF_ADDR


def _chunk_pieces(base: int, limit: int):
    """(chunk, first page, page count) for each chunk that [base, limit) touches."""
    last = (limit - 1) & MASK64
    sc, ec = chunk_index(base), chunk_index(last)
    si, ei = chunk_page_index(base), chunk_page_index(last)
    if sc == ec:
        yield sc, si, ei + 1 - si
        return
    yield sc, si, PALLOC_CHUNK_PAGES - si
    for c in range(sc + 1, ec):
        yield c, 0, PALLOC_CHUNK_PAGES
    yield ec, 0, ei + 1


def new_scavenge_index(min_idx: int, max_idx: int) -> ScavengeIndex:
    """Go's test helper ``NewScavengeIndex(min, max)``: an index for chunks in
    [min_idx, max_idx) with nothing grown (``max_idx`` only bounds Go's array)."""
    del max_idx
    return ScavengeIndex(min_heap_idx=min_idx)
