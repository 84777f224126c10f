"""Go's runtime memory constants for linux/amd64, in one place.

Every value below is the one Go 1.27.3 uses on linux/amd64; the comment after each
names the Go constant (and the file that defines it) so the two can be checked side by
side. Values that Go discovers at start-up (``physPageSize``, ``physHugePageSize``) are
given their usual linux/amd64 values here; code that must follow the real machine takes
them as parameters and uses these as defaults.

Derived values are computed from the base ones rather than typed in, so that the
relations Go relies on (for instance ``summaryL0Bits + 4*summaryLevelBits +
logPallocChunkBytes == heapAddrBits``) hold by construction.
"""

from __future__ import annotations

# --- machine word -------------------------------------------------------------------

PTR_SIZE = 8  # goarch.PtrSize
PTR_BITS = 64
UINTPTR_MASK = (1 << PTR_BITS) - 1  # uintptrMask; Go's uintptr arithmetic wraps here
MASK64 = UINTPTR_MASK

# --- pages --------------------------------------------------------------------------

PAGE_SHIFT = 13  # gc.PageShift (internal/runtime/gc/sizeclasses.go)
PAGE_SIZE = 1 << PAGE_SHIFT  # pageSize (malloc.go): 8 KiB
PAGE_MASK = PAGE_SIZE - 1  # pageMask

PHYS_PAGE_SIZE = 4096  # physPageSize: discovered at start-up, 4 KiB on linux/amd64
PHYS_HUGE_PAGE_SIZE = 2 << 20  # physHugePageSize: THP size read from sysfs, 2 MiB
MAX_PHYS_PAGE_SIZE = 512 << 10  # maxPhysPageSize (mheap.go)
MAX_PHYS_HUGE_PAGE_SIZE = 4 << 20  # maxPhysHugePageSize (mheap.go) = pallocChunkBytes
MIN_PHYS_PAGE_SIZE = 4096  # minPhysPageSize (mheap.go)

# --- address space and arenas (malloc.go) --------------------------------------------

HEAP_ADDR_BITS = 48  # heapAddrBits
MAX_ALLOC = 1 << HEAP_ADDR_BITS  # maxAlloc
MIN_LEGAL_POINTER = 4096  # minLegalPointer

LOG_HEAP_ARENA_BYTES = 26  # logHeapArenaBytes
HEAP_ARENA_BYTES = 1 << LOG_HEAP_ARENA_BYTES  # heapArenaBytes: 64 MiB
PAGES_PER_ARENA = HEAP_ARENA_BYTES // PAGE_SIZE  # pagesPerArena: 8192
ARENA_L1_BITS = 0  # arenaL1Bits
ARENA_L2_BITS = HEAP_ADDR_BITS - LOG_HEAP_ARENA_BYTES - ARENA_L1_BITS  # arenaL2Bits: 22
ARENA_L1_SHIFT = ARENA_L2_BITS  # arenaL1Shift
ARENA_BITS = ARENA_L1_BITS + ARENA_L2_BITS  # arenaBits

# On amd64 the hardware address space has a hole in the middle; Go linearises it by
# subtracting this offset (with wrap-around) before indexing any address-space map.
ARENA_BASE_OFFSET = 0xFFFF800000000000  # arenaBaseOffset

MIN_HEAP_FOR_METADATA_HUGE_PAGES = 1 << 30  # minHeapForMetadataHugePages

# --- page allocator (mpagealloc.go, mpagealloc_64bit.go, mpagecache.go) --------------

LOG_PALLOC_CHUNK_PAGES = 9  # logPallocChunkPages
PALLOC_CHUNK_PAGES = 1 << LOG_PALLOC_CHUNK_PAGES  # pallocChunkPages: 512
PALLOC_CHUNK_BYTES = PALLOC_CHUNK_PAGES * PAGE_SIZE  # pallocChunkBytes: 4 MiB
LOG_PALLOC_CHUNK_BYTES = LOG_PALLOC_CHUNK_PAGES + PAGE_SHIFT  # logPallocChunkBytes: 22

SUMMARY_LEVELS = 5  # summaryLevels
SUMMARY_LEVEL_BITS = 3  # summaryLevelBits
SUMMARY_L0_BITS = (  # summaryL0Bits: 14
    HEAP_ADDR_BITS - LOG_PALLOC_CHUNK_BYTES - (SUMMARY_LEVELS - 1) * SUMMARY_LEVEL_BITS
)

# Radix bits, shift and log2(pages covered) of each summary level, root first.
LEVEL_BITS = (SUMMARY_L0_BITS,) + (SUMMARY_LEVEL_BITS,) * (SUMMARY_LEVELS - 1)  # levelBits
LEVEL_SHIFT = tuple(  # levelShift: (34, 31, 28, 25, 22)
    HEAP_ADDR_BITS - SUMMARY_L0_BITS - k * SUMMARY_LEVEL_BITS for k in range(SUMMARY_LEVELS)
)
LEVEL_LOG_PAGES = tuple(  # levelLogPages: (21, 18, 15, 12, 9)
    LOG_PALLOC_CHUNK_PAGES + (SUMMARY_LEVELS - 1 - k) * SUMMARY_LEVEL_BITS
    for k in range(SUMMARY_LEVELS)
)

LOG_MAX_PACKED_VALUE = (  # logMaxPackedValue: 21
    LOG_PALLOC_CHUNK_PAGES + (SUMMARY_LEVELS - 1) * SUMMARY_LEVEL_BITS
)
MAX_PACKED_VALUE = 1 << LOG_MAX_PACKED_VALUE  # maxPackedValue
PALLOC_SUM_BYTES = 8  # pallocSumBytes

PALLOC_CHUNKS_L1_BITS = 13  # pallocChunksL1Bits
PALLOC_CHUNKS_L2_BITS = (  # pallocChunksL2Bits: 13
    HEAP_ADDR_BITS - LOG_PALLOC_CHUNK_BYTES - PALLOC_CHUNKS_L1_BITS
)
PALLOC_CHUNKS_L1_SHIFT = PALLOC_CHUNKS_L2_BITS  # pallocChunksL1Shift

PAGE_CACHE_PAGES = 64  # pageCachePages (mpagecache.go): bits in a uint64

# Offset address space (mranges.go): the lowest and highest addresses it can describe.
MIN_OFF_ADDR = ARENA_BASE_OFFSET  # minOffAddr
MAX_OFF_ADDR = (((1 << HEAP_ADDR_BITS) - 1) + ARENA_BASE_OFFSET) & UINTPTR_MASK  # maxOffAddr
MAX_SEARCH_ADDR = MAX_OFF_ADDR  # maxSearchAddr(): "no free memory"

# --- scavenger (mgcscavenge.go) -------------------------------------------------------

SCAVENGE_PERCENT = 1  # scavengePercent
RETAIN_EXTRA_PERCENT = 10  # retainExtraPercent
REDUCE_EXTRA_PERCENT = 5  # reduceExtraPercent
MAX_PAGES_PER_PHYS_PAGE = MAX_PHYS_PAGE_SIZE // PAGE_SIZE  # maxPagesPerPhysPage: 64
SCAVENGE_COST_RATIO = 0.0  # scavengeCostRatio: 0.7 only on darwin/ios
SCAV_CHUNK_HI_OCC_FRAC = 0.96875  # scavChunkHiOccFrac
SCAV_CHUNK_HI_OCC_PAGES = int(SCAV_CHUNK_HI_OCC_FRAC * PALLOC_CHUNK_PAGES)  # ...Pages: 496

# scavChunkData layout: inUse in bits 0-15, lastInUse (10 bits) from bit 16, six flag
# bits above it, the generation in the top 32 bits.
LOG_SCAV_CHUNK_IN_USE_MAX = LOG_PALLOC_CHUNK_PAGES + 1  # logScavChunkInUseMax: 10
SCAV_CHUNK_IN_USE_MASK = (1 << LOG_SCAV_CHUNK_IN_USE_MAX) - 1  # scavChunkInUseMask
SCAV_CHUNK_MAX_FLAGS = 6  # scavChunkMaxFlags
SCAV_CHUNK_FLAGS_MASK = (1 << SCAV_CHUNK_MAX_FLAGS) - 1  # scavChunkFlagsMask
SCAV_CHUNK_HAS_FREE = 1  # scavChunkHasFree

# --- sanity: the relations Go's code depends on ---------------------------------------

assert SUMMARY_L0_BITS + (SUMMARY_LEVELS - 1) * SUMMARY_LEVEL_BITS + LOG_PALLOC_CHUNK_BYTES == HEAP_ADDR_BITS
assert sum(LEVEL_BITS) + LOG_PALLOC_CHUNK_BYTES == HEAP_ADDR_BITS
assert LEVEL_LOG_PAGES[0] <= LOG_MAX_PACKED_VALUE  # the root fits in a packed summary
assert ARENA_BASE_OFFSET % PALLOC_CHUNK_BYTES == 0
