"""Per-chunk bitmaps: Go's ``pageBits``, ``pallocBits`` and ``pallocData``.

One chunk is 512 pages, so one bitmap is 512 bits: 8 uint64 words held in numpy
(``bits``), bit ``i`` of the chunk being bit ``i % 64`` of word ``i // 64``. In the
allocation bitmap 1 means allocated; in the scavenged bitmap 1 means released to the OS.

The words may be a standalone ``numpy.uint64[8]`` or one row of the page allocator's
per-block 2-D arrays; either way the object keeps flat memoryviews of the storage, so a
single word is read or written at memoryview speed and the whole chunk is loaded as one
512-bit Python int (``to_int``) when a scan over all of it is cheaper that way.
"""

from __future__ import annotations

import sys
from typing import Iterable

import numpy as np

from ..constants import MAX_PAGES_PER_PHYS_PAGE, PAGE_SIZE, PHYS_HUGE_PAGE_SIZE, PHYS_PAGE_SIZE
from ._bits import (
    CHUNK_BITS,
    CHUNK_MASK,
    WORD_MASK,
    WORDS_PER_CHUNK,
    fill_aligned_wide,
    first_run,
    longest_run,
)
from sysmem.errors import PageAllocError
from ._summary import FREE_CHUNK_SUM, PallocSum, pack_palloc_sum

_CHUNK_BYTES_OF_BITS = CHUNK_BITS // 8
_LITTLE_ENDIAN = sys.byteorder == "little"


def _flat_views(arr: np.ndarray) -> tuple[memoryview, memoryview]:
    """Byte and uint64 memoryviews over a C-contiguous uint64 array."""
    raw = memoryview(arr).cast("B")
    return raw, raw.cast("Q")


class PageBits:
    """A 512-bit bitmap over the pages of one chunk (Go's ``pageBits``).

    ``PageBits()`` is all zeros; ``PageBits(words)`` wraps a ``numpy.uint64[8]`` array
    (shared, not copied) or copies any 8 integers. Indexing reads and writes whole
    64-bit words as Python ints, like Go's ``b[i]``.
    """

    __slots__ = ("_arr", "_raw", "_w", "_o", "_ob")

    def __init__(self, words: np.ndarray | Iterable[int] | None = None) -> None:
        if words is None:
            arr = np.zeros(WORDS_PER_CHUNK, dtype=np.uint64)
        elif isinstance(words, np.ndarray):
            if words.dtype != np.uint64 or words.shape != (WORDS_PER_CHUNK,) or not words.flags.c_contiguous:
                raise ValueError("a chunk bitmap must be a C-contiguous numpy.uint64[8] array")
            arr = words
        else:
            vals = [int(w) & WORD_MASK for w in words]
            if len(vals) != WORDS_PER_CHUNK:
                raise ValueError(f"a chunk bitmap has {WORDS_PER_CHUNK} words, got {len(vals)}")
            arr = np.array(vals, dtype=np.uint64)
        raw, w = _flat_views(arr)
        self._arr, self._raw, self._w, self._o, self._ob = arr, raw, w, 0, 0

    @classmethod
    def _over(cls, flat: np.ndarray, raw: memoryview, w: memoryview, word_offset: int) -> "PageBits":
        """A bitmap living at ``word_offset`` inside shared storage (no copy)."""
        self = cls.__new__(cls)
        self._arr, self._raw, self._w, self._o, self._ob = flat, raw, w, word_offset, word_offset * 8
        return self

    # --- whole-bitmap access ----------------------------------------------------------

    @property
    def bits(self) -> np.ndarray:
        """The 8 words as a numpy view (writes go to the bitmap)."""
        return self._arr[self._o : self._o + WORDS_PER_CHUNK]

    def to_int(self) -> int:
        """The bitmap as one 512-bit int, bit i = page i."""
        if _LITTLE_ENDIAN:
            return int.from_bytes(self._raw[self._ob : self._ob + _CHUNK_BYTES_OF_BITS], "little")
        w, o = self._w, self._o
        return sum(w[o + k] << (64 * k) for k in range(WORDS_PER_CHUNK))

    def from_int(self, x: int) -> None:
        """Overwrite the bitmap with the low 512 bits of ``x``."""
        x &= CHUNK_MASK
        if _LITTLE_ENDIAN:
            self._raw[self._ob : self._ob + _CHUNK_BYTES_OF_BITS] = x.to_bytes(_CHUNK_BYTES_OF_BITS, "little")
        else:
            w, o = self._w, self._o
            for k in range(WORDS_PER_CHUNK):
                w[o + k] = (x >> (64 * k)) & WORD_MASK

    def copy(self) -> "PageBits":
        return type(self)(self.bits.copy())

    def __len__(self) -> int:
        return WORDS_PER_CHUNK

    def __getitem__(self, k: int) -> int:
        if not 0 <= k < WORDS_PER_CHUNK:
            raise IndexError(k)
        return self._w[self._o + k]

    def __setitem__(self, k: int, v: int) -> None:
        if not 0 <= k < WORDS_PER_CHUNK:
            raise IndexError(k)
        self._w[self._o + k] = v & WORD_MASK

    def __eq__(self, other: object) -> bool:
        if isinstance(other, PageBits):
            return self.to_int() == other.to_int()
        return NotImplemented

    __hash__ = None  # mutable

    def __repr__(self) -> str:
        return f"{type(self).__name__}([{', '.join(hex(self._w[self._o + k]) for k in range(WORDS_PER_CHUNK))}])"

    # --- single bits and ranges (Go's pageBits methods) ---------------------------------

    @staticmethod
    def _check_range(i: int, n: int) -> None:
        if i < 0 or n < 0 or i + n > CHUNK_BITS:
            raise IndexError(f"bit range [{i}, {i}+{n}) outside a {CHUNK_BITS}-bit chunk bitmap")

    def get(self, i: int) -> int:
        self._check_range(i, 1)
        return (self._w[self._o + (i >> 6)] >> (i & 63)) & 1

    def block64(self, i: int) -> int:
        """The aligned 64-bit word containing bit ``i``."""
        self._check_range(i, 1)
        return self._w[self._o + (i >> 6)]

    def set(self, i: int) -> None:
        self._check_range(i, 1)
        k = self._o + (i >> 6)
        self._w[k] = self._w[k] | (1 << (i & 63))

    def clear(self, i: int) -> None:
        self._check_range(i, 1)
        k = self._o + (i >> 6)
        self._w[k] = self._w[k] & ~(1 << (i & 63)) & WORD_MASK

    def set_range(self, i: int, n: int) -> None:
        """Set bits [i, i+n). ``n == 0`` does nothing (Go's callers never pass it)."""
        self._check_range(i, n)
        if n == 0:
            return
        if (i >> 6) == ((i + n - 1) >> 6):  # within one word: no need to touch the rest
            k = self._o + (i >> 6)
            self._w[k] = self._w[k] | (((1 << n) - 1) << (i & 63))
            return
        self.from_int(self.to_int() | (((1 << n) - 1) << i))

    def clear_range(self, i: int, n: int) -> None:
        """Clear bits [i, i+n). ``n == 0`` does nothing."""
        self._check_range(i, n)
        if n == 0:
            return
        if (i >> 6) == ((i + n - 1) >> 6):
            k = self._o + (i >> 6)
            self._w[k] = self._w[k] & ~(((1 << n) - 1) << (i & 63)) & WORD_MASK
            return
        self.from_int(self.to_int() & ~(((1 << n) - 1) << i))

    def set_all(self) -> None:
        self.from_int(CHUNK_MASK)

    def clear_all(self) -> None:
        self.from_int(0)

    def set_block64(self, i: int, v: int) -> None:
        """OR ``v`` into the aligned word containing bit ``i``."""
        self._check_range(i, 1)
        k = self._o + (i >> 6)
        self._w[k] = self._w[k] | (v & WORD_MASK)

    def clear_block64(self, i: int, v: int) -> None:
        """Clear the bits of ``v`` in the aligned word containing bit ``i``."""
        self._check_range(i, 1)
        k = self._o + (i >> 6)
        self._w[k] = self._w[k] & ~v & WORD_MASK

    def popcnt_range(self, i: int, n: int) -> int:
        """Number of set bits in [i, i+n)."""
        self._check_range(i, n)
        if n == 0:
            return 0
        if (i >> 6) == ((i + n - 1) >> 6):
            return ((self._w[self._o + (i >> 6)] >> (i & 63)) & ((1 << n) - 1)).bit_count()
        return ((self.to_int() >> i) & ((1 << n) - 1)).bit_count()

    def count(self) -> int:
        """Number of set bits in the whole bitmap."""
        return self.to_int().bit_count()


class PallocBits(PageBits):
    """The allocation bitmap of one chunk (Go's ``pallocBits``): 1 = page in use."""

    __slots__ = ()

    def summarize_packed(self) -> int:
        """The chunk's packed summary (Go's ``summarize``)."""
        x = self.to_int()
        if x == 0:
            return FREE_CHUNK_SUM
        start = (x & -x).bit_length() - 1  # free pages below the first used one
        end = CHUNK_BITS - x.bit_length()  # free pages above the last used one
        return pack_palloc_sum(start, longest_run(~x & CHUNK_MASK), end)

    def summarize(self) -> PallocSum:
        """(start, max, end) free-page counts of the chunk, as Go reads them back."""
        return PallocSum.from_packed(self.summarize_packed())

    def find(self, npages: int, search_idx: int) -> tuple[int | None, int | None]:
        """First fit of ``npages`` free pages: ``(index, new_search_idx)``.

        Like Go, the scan starts at the *word* holding ``search_idx`` (lower bits of
        that word still count), and ``new_search_idx`` is the first free page the scan
        met. ``index`` is None when nothing fits (Go's ``^uint(0)``); then
        ``new_search_idx`` is meaningless (None if the scan saw no free page at all).
        """
        if npages < 1:
            raise ValueError(f"find: npages must be >= 1, got {npages}")
        base = (search_idx >> 6) << 6
        if base >= CHUNK_BITS:
            return None, None
        free = ((~self.to_int() & CHUNK_MASK) >> base) << base
        if free == 0:
            return None, None
        first = (free & -free).bit_length() - 1
        if npages == 1:
            return first, first
        if npages > CHUNK_BITS:
            return None, first
        return first_run(free, npages), first

    def find1(self, search_idx: int) -> int | None:
        """Go's ``find1``: the first free page at or after the word of ``search_idx``."""
        return self.find(1, search_idx)[0]

    def find_small_n(self, npages: int, search_idx: int) -> tuple[int | None, int | None]:
        """Go's ``findSmallN`` (``npages <= 64``)."""
        if not 1 <= npages <= 64:
            raise ValueError(f"find_small_n needs 1 <= npages <= 64, got {npages}")
        return self.find(npages, search_idx)

    def find_large_n(self, npages: int, search_idx: int) -> tuple[int | None, int | None]:
        """Go's ``findLargeN`` (``npages > 64``)."""
        if npages <= 64:
            raise ValueError(f"find_large_n needs npages > 64, got {npages}")
        return self.find(npages, search_idx)

    # Go's allocation-side names for the pageBits operations.
    def alloc_range(self, i: int, n: int) -> None:
        self.set_range(i, n)

    def alloc_all(self) -> None:
        self.set_all()

    def free1(self, i: int) -> None:
        self.clear(i)

    def free(self, i: int, n: int) -> None:
        self.clear_range(i, n)

    def free_all(self) -> None:
        self.clear_all()

    def pages64(self, i: int) -> int:
        """In-use bits of the 64-page aligned block containing page ``i``."""
        return self.block64(i)

    def alloc_pages64(self, i: int, alloc: int) -> None:
        """Mark allocated the pages of ``alloc`` in the 64-page block containing ``i``."""
        self.set_block64(i, alloc)


class PallocData:
    """A chunk's allocation bitmap plus its scavenged bitmap (Go's ``pallocData``).

    Allocating pages clears their scavenged bits (the memory is about to be used), so
    no page is ever both allocated and scavenged. The allocation-side methods of
    :class:`PallocBits` are available here directly, as Go's embedding makes them.
    """

    __slots__ = ("palloc_bits", "scavenged")

    def __init__(self, palloc_bits: PallocBits | None = None, scavenged: PallocBits | None = None) -> None:
        self.palloc_bits = palloc_bits if palloc_bits is not None else PallocBits()
        self.scavenged = scavenged if scavenged is not None else PallocBits()

    def __repr__(self) -> str:
        return f"PallocData(palloc_bits={self.palloc_bits!r}, scavenged={self.scavenged!r})"

    def alloc_range(self, i: int, n: int) -> None:
        self.palloc_bits.set_range(i, n)
        self.scavenged.clear_range(i, n)

    def alloc_all(self) -> None:
        self.palloc_bits.set_all()
        self.scavenged.clear_all()

    def scavenged_set_range(self, i: int, n: int) -> None:
        self.scavenged.set_range(i, n)

    # Delegated allocation-bitmap operations.
    def find(self, npages: int, search_idx: int) -> tuple[int | None, int | None]:
        return self.palloc_bits.find(npages, search_idx)

    def summarize(self) -> PallocSum:
        return self.palloc_bits.summarize()

    def summarize_packed(self) -> int:
        return self.palloc_bits.summarize_packed()

    def free1(self, i: int) -> None:
        self.palloc_bits.clear(i)

    def free(self, i: int, n: int) -> None:
        self.palloc_bits.clear_range(i, n)

    def free_all(self) -> None:
        self.palloc_bits.clear_all()

    def pages64(self, i: int) -> int:
        return self.palloc_bits.block64(i)

    def alloc_pages64(self, i: int, alloc: int) -> None:
        self.palloc_bits.set_block64(i, alloc)

    def find_scavenge_candidate(
        self,
        search_idx: int,
        minimum: int,
        max: int,  # noqa: A002 - Go's parameter name
        *,
        phys_huge_page_size: int = PHYS_HUGE_PAGE_SIZE,
        phys_page_size: int = PHYS_PAGE_SIZE,
    ) -> tuple[int, int]:
        """Go's ``findScavengeCandidate``: ``(start, size)`` in pages of the highest run
        of free, unscavenged pages at or below the word of ``search_idx``; ``(0, 0)``
        if there is none.

        Only ``minimum``-aligned groups of ``minimum`` pages that are entirely free and
        unscavenged count (a physical page is released whole or not at all).
        ``max`` caps the size (rounded up to a multiple of ``minimum``; 0 means
        ``minimum``), taking the top of the run; but if that cut would split a huge
        page that lies wholly inside the free run, the candidate is extended down to
        the huge page's start so the huge page goes back to the OS in one piece.
        """
        if minimum <= 0 or minimum & (minimum - 1):
            raise PageAllocError("min must be a non-zero power of 2", f"min = {minimum}")
        if minimum > MAX_PAGES_PER_PHYS_PAGE:
            raise PageAllocError("min too large", f"min = {minimum}")
        if max == 0:
            max = minimum
        else:
            max = (max + minimum - 1) & ~(minimum - 1)

        # 1 = allocated or scavenged, widened to whole `minimum`-page groups.
        taken = fill_aligned_wide(self.scavenged.to_int() | self.palloc_bits.to_int(), minimum, CHUNK_BITS)
        # Only words up to and including the one holding search_idx are searched.
        limit = min(((search_idx >> 6) + 1) << 6, CHUNK_BITS)
        candidates = ~taken & ((1 << limit) - 1)
        if candidates == 0:
            return 0, 0
        end = candidates.bit_length()  # one past the highest free, unscavenged page
        run = end - (taken & ((1 << end) - 1)).bit_length()  # its free run reaching down
        size = run if run < max else max
        start = end - size

        if phys_huge_page_size > PAGE_SIZE and phys_huge_page_size > phys_page_size:
            pages_per_huge_page = phys_huge_page_size // PAGE_SIZE
            huge_above = -(-start // pages_per_huge_page) * pages_per_huge_page
            if huge_above <= end:
                # The cut at `start` would fall inside a huge page that the candidate
                # also covers part of; if that whole huge page is free, release it all.
                huge_below = start - start % pages_per_huge_page
                if huge_below >= end - run:
                    size += start - huge_below
                    start = huge_below
        return start, size
