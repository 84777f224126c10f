"""Go's page-allocator test helpers (``export_test.go``), so Go's table-driven runtime
tests can be written against this package: ``BitRange``, ``new_page_alloc``,
``BASE_CHUNK_IDX``, ``page_base`` and bitmap diff/print helpers."""

from __future__ import annotations

from typing import Iterable, Mapping, NamedTuple

from ..constants import PALLOC_CHUNK_BYTES, PALLOC_CHUNK_PAGES
from ._addr import chunk_base, chunk_index
from ._pagealloc import PageAlloc
from ._pallocbits import PageBits, PallocBits, PallocData


class BitRange(NamedTuple):
    """Bits [i, i+n) of a chunk bitmap (Go's ``BitRange{I, N}``); plain ``(i, n)``
    tuples work wherever a BitRange is expected."""

    i: int
    n: int


# Chunk index of address 0xc000 * 4 MiB, the chunk Go's 64-bit tests build around.
BASE_CHUNK_IDX = chunk_index(0xC000 * PALLOC_CHUNK_BYTES)


def new_page_alloc(
    chunks: Mapping[int, Iterable[tuple[int, int]]],
    scav: Mapping[int, Iterable[tuple[int, int]]] | None = None,
    **kwargs,
) -> PageAlloc:
    """Go's ``NewPageAlloc(chunks, scav)``: a test allocator that has grown exactly the
    chunks keyed in ``chunks``.

    Each chunk starts with no page scavenged, is registered with the scavenge index as
    entirely freed (so the scavenger may look at it), then gets the scavenged ranges
    from ``scav[ci]`` and finally the allocated ranges from ``chunks[ci]`` (allocating
    clears scavenged bits, keeping "never both"). Chunks are set up in ascending order
    (Go's map order is random; the result does not depend on it). ``kwargs`` go to
    :class:`PageAlloc` (default: no ``sys_unused``, i.e. Go's test mode).
    """
    p = PageAlloc(**kwargs)
    for ci in sorted(chunks):
        addr = chunk_base(ci)
        p.grow(addr, PALLOC_CHUNK_BYTES)
        chunk = p.chunk_of(ci)
        chunk.scavenged.clear_range(0, PALLOC_CHUNK_PAGES)
        p.scav_index.alloc(ci, PALLOC_CHUNK_PAGES)
        p.scav_index.free(ci, 0, PALLOC_CHUNK_PAGES)
        if scav is not None:
            for i, n in scav.get(ci, ()):
                if n:
                    chunk.scavenged.set_range(i, n)
        for i, n in chunks[ci]:
            if n:
                chunk.alloc_range(i, n)
                p.scav_index.alloc(ci, n)
        p.update(addr, PALLOC_CHUNK_PAGES, False, False)
    return p


def make_palloc_bits(ranges: Iterable[tuple[int, int]]) -> PallocBits:
    """A bitmap with the given ranges set (Go tests' ``makePallocBits``)."""
    b = PallocBits()
    for i, n in ranges:
        if n:
            b.alloc_range(i, n)
    return b


def make_palloc_data(alloc: Iterable[tuple[int, int]], scavenged: Iterable[tuple[int, int]]) -> PallocData:
    """Bitmaps with the given allocated and scavenged ranges (Go's ``makePallocData``)."""
    # Allocating clears scavenged bits, so with the scavenged ranges applied after the
    # allocated ones the two bitmaps are simply the two sets of ranges.
    return PallocData(make_palloc_bits(alloc), make_palloc_bits(scavenged))


def diff_palloc_bits(a: PageBits, b: PageBits) -> list[BitRange]:
    """Ranges of bits where ``a`` and ``b`` differ (Go's ``DiffPallocBits``)."""
    d = a.to_int() ^ b.to_int()
    out: list[BitRange] = []
    i = 0
    while d >> i:
        rest = d >> i
        start = i + ((rest & -rest).bit_length() - 1)
        run = ~(d >> start)
        length = (run & -run).bit_length() - 1
        out.append(BitRange(start, length))
        i = start + length
    return out


def stringify_palloc_bits(b: PageBits, r: tuple[int, int]) -> str:
    """The bits of ``r`` as '0'/'1' characters, lowest first (Go's ``StringifyPallocBits``)."""
    i, n = r
    return "".join(str(b.get(j)) for j in range(i, i + n))
