"""Go's size classes (``internal/runtime/gc/sizeclasses.go``) and the choices made from them.

A small object (at most 32 KiB) is rounded up to one of 67 object sizes, its *size
class*; class 0 stands for "large": an object with a span of its own. Every span of a
class has the same number of pages, so the objects of a span are one array.

The two size-to-class lookup tables Go generates (``SizeToSizeClass8`` for sizes up to
1 KiB in 8-byte steps, ``SizeToSizeClass128`` above it in 128-byte steps) are derived
here from the class sizes instead of being copied: each entry is the smallest class
whose objects fit the largest size the entry stands for. The tests compare them with
Go's tables.

A *span class* adds one bit to the size class: whether the objects hold pointers
("scan") or not ("noscan"); the collector only scans the former.

How many objects a span really holds depends on what the span keeps at its end
(``mheap.go initSpan``): the pointer bitmap for small scan objects (one bit per
8-byte word) and, with the Green Tea collector (Go's default), 128 bytes of inline
mark bits for objects of 16..512 bytes.
"""

from __future__ import annotations

from .constants import PAGE_SHIFT, PAGE_SIZE, PTR_SIZE

__all__ = [
    "NUM_SIZE_CLASSES",
    "MAX_SMALL_SIZE",
    "SMALL_SIZE_DIV",
    "SMALL_SIZE_MAX",
    "LARGE_SIZE_DIV",
    "MAX_OBJS_PER_SPAN",
    "MAX_SIZE_CLASS_NPAGES",
    "TINY_SIZE",
    "TINY_SIZE_CLASS",
    "MIN_HEAP_ALIGN",
    "MALLOC_HEADER_SIZE",
    "MIN_SIZE_FOR_MALLOC_HEADER",
    "MAX_SMALL_SIZE_NO_HEADER",
    "SPAN_INLINE_MARK_BITS_BYTES",
    "NUM_SPAN_CLASSES",
    "TINY_SPAN_CLASS",
    "CLASS_TO_SIZE",
    "CLASS_TO_NPAGES",
    "SIZE_TO_CLASS8",
    "SIZE_TO_CLASS128",
    "size_to_class",
    "make_span_class",
    "spanclass_sizeclass",
    "spanclass_noscan",
    "heap_bits_in_span",
    "uses_inline_mark_bits",
    "span_nelems",
    "alloc_size_class",
    "class_span_bytes",
]

NUM_SIZE_CLASSES = 68  # gc.NumSizeClasses (class 0 = large objects)
MAX_SMALL_SIZE = 32768  # gc.MaxSmallSize
SMALL_SIZE_DIV = 8  # gc.SmallSizeDiv
SMALL_SIZE_MAX = 1024  # gc.SmallSizeMax
LARGE_SIZE_DIV = 128  # gc.LargeSizeDiv
MAX_OBJS_PER_SPAN = 1024  # gc.MaxObjsPerSpan
MAX_SIZE_CLASS_NPAGES = 10  # gc.MaxSizeClassNPages
TINY_SIZE = 16  # gc.TinySize (maxTinySize in malloc.go)
TINY_SIZE_CLASS = 2  # gc.TinySizeClass
MIN_HEAP_ALIGN = 8  # gc.MinHeapAlign

MALLOC_HEADER_SIZE = 8  # gc.MallocHeaderSize: the type pointer in front of big scan objects
MIN_SIZE_FOR_MALLOC_HEADER = PTR_SIZE * 64  # gc.MinSizeForMallocHeader (exclusive): 512
# Largest size still allocated from a size class (mallocgc); anything bigger is large,
# with or without pointers, so a header never pushes an object past 32 KiB.
MAX_SMALL_SIZE_NO_HEADER = MAX_SMALL_SIZE - MALLOC_HEADER_SIZE  # 32760

SPAN_INLINE_MARK_BITS_BYTES = 128  # unsafe.Sizeof(spanInlineMarkBits{}) (mgcmark_greenteagc.go)
NUM_SPAN_CLASSES = NUM_SIZE_CLASSES << 1  # numSpanClasses (mheap.go): 136
TINY_SPAN_CLASS = TINY_SIZE_CLASS << 1 | 1  # tinySpanClass: 5

# gc.SizeClassToSize: object bytes per class.
CLASS_TO_SIZE: tuple[int, ...] = (
    0, 8, 16, 24, 32, 48, 64, 80, 96, 112, 128, 144, 160, 176, 192, 208, 224, 240, 256,
    288, 320, 352, 384, 416, 448, 480, 512, 576, 640, 704, 768, 896, 1024, 1152, 1280,
    1408, 1536, 1792, 2048, 2304, 2688, 3072, 3200, 3456, 4096, 4864, 5376, 6144, 6528,
    6784, 6912, 8192, 9472, 9728, 10240, 10880, 12288, 13568, 14336, 16384, 18432, 19072,
    20480, 21760, 24576, 27264, 28672, 32768,
)
# gc.SizeClassToNPages: pages per span of each class.
CLASS_TO_NPAGES: tuple[int, ...] = (
    0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    1, 1, 1, 1, 1, 1, 2, 1, 2, 1, 2, 1, 3, 2, 3, 1, 3, 2, 3, 4, 5, 6, 1, 7, 6, 5, 4, 3, 5,
    7, 2, 9, 7, 5, 8, 3, 10, 7, 4,
)
assert len(CLASS_TO_SIZE) == len(CLASS_TO_NPAGES) == NUM_SIZE_CLASSES


def _smallest_class_holding(nbytes: int) -> int:
    for c in range(1, NUM_SIZE_CLASSES):
        if CLASS_TO_SIZE[c] >= nbytes:
            return c
    raise ValueError(nbytes)


# Entry i stands for the sizes (8(i-1), 8i]; entry 0 (size 0) maps to class 0 as in Go.
SIZE_TO_CLASS8: tuple[int, ...] = (0,) + tuple(
    _smallest_class_holding(i * SMALL_SIZE_DIV)
    for i in range(1, SMALL_SIZE_MAX // SMALL_SIZE_DIV + 1)
)
# Entry i stands for the sizes (1024 + 128(i-1), 1024 + 128i].
SIZE_TO_CLASS128: tuple[int, ...] = tuple(
    _smallest_class_holding(SMALL_SIZE_MAX + i * LARGE_SIZE_DIV)
    for i in range((MAX_SMALL_SIZE - SMALL_SIZE_MAX) // LARGE_SIZE_DIV + 1)
)


def size_to_class(size: int) -> int:
    """The size class (1..67) of a ``size``-byte object, 1 <= size <= 32768: the smallest
    class whose objects are at least ``size`` bytes, looked up as Go does."""
    if size <= SMALL_SIZE_MAX - 8:
        if size < 1:
            raise ValueError(f"size_to_class: size must be >= 1, got {size}")
        return SIZE_TO_CLASS8[(size + SMALL_SIZE_DIV - 1) >> 3]
    if size > MAX_SMALL_SIZE:
        raise ValueError(f"size_to_class: {size} bytes is a large object (> {MAX_SMALL_SIZE})")
    return SIZE_TO_CLASS128[(size - SMALL_SIZE_MAX + LARGE_SIZE_DIV - 1) >> 7]


def make_span_class(sizeclass: int, noscan: bool) -> int:
    """Go's ``makeSpanClass``: ``sizeclass << 1 | noscan``."""
    return sizeclass << 1 | (1 if noscan else 0)


def spanclass_sizeclass(sc: int) -> int:
    """The size class of span class ``sc``."""
    return sc >> 1


def spanclass_noscan(sc: int) -> bool:
    """Whether span class ``sc`` holds pointer-free objects."""
    return bool(sc & 1)


def heap_bits_in_span(elemsize: int) -> bool:
    """Go's ``heapBitsInSpan``: objects this small keep their pointer bitmap at the end
    of the span; bigger scan objects carry a malloc header (or, when large, the span
    records their type). Invariant under size-class rounding, hence "<=" 512."""
    return elemsize <= MIN_SIZE_FOR_MALLOC_HEADER


def uses_inline_mark_bits(elemsize: int) -> bool:
    """Go's ``gcUsesSpanInlineMarkBits`` (Green Tea): spans of 16..512-byte objects keep
    their mark bits in the last 128 bytes of the span."""
    return 16 <= elemsize <= MIN_SIZE_FOR_MALLOC_HEADER


def _nelems(sizeclass: int, noscan: bool, greentea: bool) -> int:
    if sizeclass == 0:
        return 1
    elemsize = CLASS_TO_SIZE[sizeclass]
    nbytes = CLASS_TO_NPAGES[sizeclass] << PAGE_SHIFT
    reserve = 0
    if greentea and uses_inline_mark_bits(elemsize):
        reserve += SPAN_INLINE_MARK_BITS_BYTES
    if not noscan and heap_bits_in_span(elemsize):
        reserve += nbytes // PTR_SIZE // 8  # one bit per pointer-sized word
    return (nbytes - reserve) // elemsize


# Objects per span, indexed [greentea][noscan][sizeclass]; computed once.
_NELEMS = tuple(
    tuple(tuple(_nelems(c, bool(ns), bool(gt)) for c in range(NUM_SIZE_CLASSES)) for ns in (0, 1))
    for gt in (0, 1)
)


def span_nelems(sizeclass: int, noscan: bool, greentea: bool = True) -> int:
    """Objects per span of ``sizeclass`` as Go's ``initSpan`` computes them: the span's
    bytes minus what it reserves at its end (inline mark bits with Green Tea for
    16..512-byte objects; the pointer bitmap for scan objects up to 512 bytes), divided
    by the object size. Large spans (class 0) hold one object."""
    return _NELEMS[1 if greentea else 0][1 if noscan else 0][sizeclass]


def alloc_size_class(size: int, has_pointers: bool) -> tuple[int, int]:
    """``(sizeclass, header_bytes)`` as Go's ``mallocgc`` chooses them for a ``size``-byte
    object (size >= 1; Go hands size 0 the shared ``zerobase`` before any class).

    * size > 32760: large (class 0), no header: the span itself records the type.
    * scan objects bigger than 512 bytes: an 8-byte malloc header precedes the object,
      so the class is chosen for ``size + 8``.
    * otherwise the class for ``size``. (Noscan objects under 16 bytes are served by
      the tiny allocator from class-2 blocks; that choice is the caller's.)
    """
    if size < 1:
        raise ValueError(f"alloc_size_class: size must be >= 1, got {size}")
    if size > MAX_SMALL_SIZE_NO_HEADER:
        return 0, 0
    if has_pointers and not heap_bits_in_span(size):
        return size_to_class(size + MALLOC_HEADER_SIZE), MALLOC_HEADER_SIZE
    return size_to_class(size), 0


def class_span_bytes(sizeclass: int) -> int:
    """Bytes of one span of ``sizeclass`` (1..67)."""
    return CLASS_TO_NPAGES[sizeclass] * PAGE_SIZE
