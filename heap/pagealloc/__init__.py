"""Go's page allocator (``mpagealloc.go``, ``mpallocbits.go``, the page side of
``mgcscavenge.go`` and ``mranges.go``), with Go's semantics bit for bit.

The heap is divided into 8 KiB pages, grouped in 4 MiB chunks of 512 pages. Per chunk
an allocation bitmap and a scavenged bitmap (numpy ``uint64[8]`` each); over the chunks
a radix tree of (start, max, end) free-run summaries, searched for the lowest-addressed
run that fits. Freed memory stays mapped until the scavenger releases it through the
``sys_unused`` callback, highest address first.

Go's names map to Python ones in snake_case: ``pallocBits`` → :class:`PallocBits`,
``pallocData.findScavengeCandidate`` → :meth:`PallocData.find_scavenge_candidate`,
``pageAlloc`` → :class:`PageAlloc`, ``pageCache`` → :class:`PageCache` (``mpagecache.go``),
``NewPageAlloc`` → :func:`new_page_alloc`, and so on.
Where Go returns an all-ones "not found" index or a 0 address, Python returns ``None``;
where Go throws, :class:`PageAllocError` is raised.
"""

from ._addr import (
    addrs_to_summary_range,
    block_align_summary_range,
    chunk_base,
    chunk_index,
    chunk_page_index,
    level_index_to_off_addr,
    off_addr_to_level_index,
    page_base,
)
from ._bits import fill_aligned, find_bit_range64
from sysmem.errors import PageAllocError
from ._pagealloc import PageAlloc
from ._pagecache import PAGE_CACHE_PAGES, PageCache
from ._pallocbits import PageBits, PallocBits, PallocData
from ._ranges import AddrRange, AddrRanges, AtomicOffAddr
from ._scavindex import ScavChunkData, ScavengeIndex, new_scavenge_index
from ._summary import FREE_CHUNK_SUM, PallocSum, merge_summaries, pack_palloc_sum, unpack_palloc_sum
from ._testing import (
    BASE_CHUNK_IDX,
    BitRange,
    diff_palloc_bits,
    make_palloc_bits,
    make_palloc_data,
    new_page_alloc,
    stringify_palloc_bits,
)

__all__ = [
    "AddrRange",
    "AddrRanges",
    "AtomicOffAddr",
    "BASE_CHUNK_IDX",
    "BitRange",
    "FREE_CHUNK_SUM",
    "PAGE_CACHE_PAGES",
    "PageAlloc",
    "PageCache",
    "PageAllocError",
    "PageBits",
    "PallocBits",
    "PallocData",
    "PallocSum",
    "ScavChunkData",
    "ScavengeIndex",
    "addrs_to_summary_range",
    "block_align_summary_range",
    "chunk_base",
    "chunk_index",
    "chunk_page_index",
    "diff_palloc_bits",
    "fill_aligned",
    "find_bit_range64",
    "level_index_to_off_addr",
    "make_palloc_bits",
    "make_palloc_data",
    "merge_summaries",
    "new_page_alloc",
    "new_scavenge_index",
    "off_addr_to_level_index",
    "pack_palloc_sum",
    "page_base",
    "stringify_palloc_bits",
    "unpack_palloc_sum",
]
