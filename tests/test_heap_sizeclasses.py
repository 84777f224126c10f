"""Go's size-class table and the allocation choices made from it (heap/sizeclasses.py)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from heap.sizeclasses import (
    CLASS_TO_NPAGES,
    CLASS_TO_SIZE,
    LARGE_SIZE_DIV,
    MALLOC_HEADER_SIZE,
    MAX_SMALL_SIZE,
    MAX_SMALL_SIZE_NO_HEADER,
    MIN_SIZE_FOR_MALLOC_HEADER,
    NUM_SIZE_CLASSES,
    SIZE_TO_CLASS8,
    SIZE_TO_CLASS128,
    SMALL_SIZE_DIV,
    SMALL_SIZE_MAX,
    TINY_SIZE,
    TINY_SIZE_CLASS,
    TINY_SPAN_CLASS,
    alloc_size_class,
    make_span_class,
    size_to_class,
    span_nelems,
    spanclass_noscan,
    spanclass_sizeclass,
)

# The table of go-runtime-memory.md §6 (Go 1.27, linux/amd64, Green Tea GC).
_GO_TABLE = (
    # class, bytes/obj, pages, bytes/span, objects, tail waste, nelems noscan, nelems scan
    (1, 8, 1, 8192, 1024, 0, 1024, 1008),
    (2, 16, 1, 8192, 512, 0, 504, 496),
    (3, 24, 1, 8192, 341, 8, 336, 330),
    (4, 32, 1, 8192, 256, 0, 252, 248),
    (5, 48, 1, 8192, 170, 32, 168, 165),
    (6, 64, 1, 8192, 128, 0, 126, 124),
    (7, 80, 1, 8192, 102, 32, 100, 99),
    (8, 96, 1, 8192, 85, 32, 84, 82),
    (9, 112, 1, 8192, 73, 16, 72, 70),
    (10, 128, 1, 8192, 64, 0, 63, 62),
    (11, 144, 1, 8192, 56, 128, 56, 55),
    (12, 160, 1, 8192, 51, 32, 50, 49),
    (13, 176, 1, 8192, 46, 96, 45, 45),
    (14, 192, 1, 8192, 42, 128, 42, 41),
    (15, 208, 1, 8192, 39, 80, 38, 38),
    (16, 224, 1, 8192, 36, 128, 36, 35),
    (17, 240, 1, 8192, 34, 32, 33, 33),
    (18, 256, 1, 8192, 32, 0, 31, 31),
    (19, 288, 1, 8192, 28, 128, 28, 27),
    (20, 320, 1, 8192, 25, 192, 25, 24),
    (21, 352, 1, 8192, 23, 96, 22, 22),
    (22, 384, 1, 8192, 21, 128, 21, 20),
    (23, 416, 1, 8192, 19, 288, 19, 19),
    (24, 448, 1, 8192, 18, 128, 18, 17),
    (25, 480, 1, 8192, 17, 32, 16, 16),
    (26, 512, 1, 8192, 16, 0, 15, 15),
    (27, 576, 1, 8192, 14, 128, 14, 14),
    (28, 640, 1, 8192, 12, 512, 12, 12),
    (29, 704, 1, 8192, 11, 448, 11, 11),
    (30, 768, 1, 8192, 10, 512, 10, 10),
    (31, 896, 1, 8192, 9, 128, 9, 9),
    (32, 1024, 1, 8192, 8, 0, 8, 8),
    (33, 1152, 1, 8192, 7, 128, 7, 7),
    (34, 1280, 1, 8192, 6, 512, 6, 6),
    (35, 1408, 2, 16384, 11, 896, 11, 11),
    (36, 1536, 1, 8192, 5, 512, 5, 5),
    (37, 1792, 2, 16384, 9, 256, 9, 9),
    (38, 2048, 1, 8192, 4, 0, 4, 4),
    (39, 2304, 2, 16384, 7, 256, 7, 7),
    (40, 2688, 1, 8192, 3, 128, 3, 3),
    (41, 3072, 3, 24576, 8, 0, 8, 8),
    (42, 3200, 2, 16384, 5, 384, 5, 5),
    (43, 3456, 3, 24576, 7, 384, 7, 7),
    (44, 4096, 1, 8192, 2, 0, 2, 2),
    (45, 4864, 3, 24576, 5, 256, 5, 5),
    (46, 5376, 2, 16384, 3, 256, 3, 3),
    (47, 6144, 3, 24576, 4, 0, 4, 4),
    (48, 6528, 4, 32768, 5, 128, 5, 5),
    (49, 6784, 5, 40960, 6, 256, 6, 6),
    (50, 6912, 6, 49152, 7, 768, 7, 7),
    (51, 8192, 1, 8192, 1, 0, 1, 1),
    (52, 9472, 7, 57344, 6, 512, 6, 6),
    (53, 9728, 6, 49152, 5, 512, 5, 5),
    (54, 10240, 5, 40960, 4, 0, 4, 4),
    (55, 10880, 4, 32768, 3, 128, 3, 3),
    (56, 12288, 3, 24576, 2, 0, 2, 2),
    (57, 13568, 5, 40960, 3, 256, 3, 3),
    (58, 14336, 7, 57344, 4, 0, 4, 4),
    (59, 16384, 2, 16384, 1, 0, 1, 1),
    (60, 18432, 9, 73728, 4, 0, 4, 4),
    (61, 19072, 7, 57344, 3, 128, 3, 3),
    (62, 20480, 5, 40960, 2, 0, 2, 2),
    (63, 21760, 8, 65536, 3, 256, 3, 3),
    (64, 24576, 3, 24576, 1, 0, 1, 1),
    (65, 27264, 10, 81920, 3, 128, 3, 3),
    (66, 28672, 7, 57344, 2, 0, 2, 2),
    (67, 32768, 4, 32768, 1, 0, 1, 1),
)


def test_constants():
    assert (NUM_SIZE_CLASSES, MAX_SMALL_SIZE, SMALL_SIZE_DIV, SMALL_SIZE_MAX, LARGE_SIZE_DIV) == (68, 32768, 8, 1024, 128)
    assert (MALLOC_HEADER_SIZE, MIN_SIZE_FOR_MALLOC_HEADER, MAX_SMALL_SIZE_NO_HEADER) == (8, 512, 32760)
    assert CLASS_TO_SIZE[TINY_SIZE_CLASS] == TINY_SIZE
    assert TINY_SPAN_CLASS == 5
    assert len(CLASS_TO_SIZE) == len(CLASS_TO_NPAGES) == NUM_SIZE_CLASSES
    assert CLASS_TO_SIZE[0] == CLASS_TO_NPAGES[0] == 0


@pytest.mark.parametrize("row", _GO_TABLE, ids=lambda r: f"class{r[0]}")
def test_class_table_matches_reference(row):
    c, size, npages, span_bytes, objects, waste, nelems_noscan, nelems_scan = row
    assert CLASS_TO_SIZE[c] == size
    assert CLASS_TO_NPAGES[c] == npages
    assert npages * 8192 == span_bytes
    assert span_bytes // size == objects and span_bytes % size == waste
    assert span_nelems(c, noscan=True) == nelems_noscan
    assert span_nelems(c, noscan=False) == nelems_scan


def test_table_is_complete_and_increasing():
    assert [r[0] for r in _GO_TABLE] == list(range(1, NUM_SIZE_CLASSES))
    assert all(a < b for a, b in zip(CLASS_TO_SIZE, CLASS_TO_SIZE[1:]))
    assert CLASS_TO_SIZE[-1] == MAX_SMALL_SIZE


def test_nelems_without_greentea_only_reserves_the_pointer_bitmap():
    for c in range(1, NUM_SIZE_CLASSES):
        size, nbytes = CLASS_TO_SIZE[c], CLASS_TO_NPAGES[c] * 8192
        assert span_nelems(c, noscan=True, greentea=False) == nbytes // size
        bitmap = nbytes // 64 if size <= 512 else 0
        assert span_nelems(c, noscan=False, greentea=False) == (nbytes - bitmap) // size
    assert span_nelems(0, True) == span_nelems(0, False) == 1  # large spans: one object


def test_size_to_class_every_size_is_the_smallest_fitting_class():
    c = 1
    for size in range(1, MAX_SMALL_SIZE + 1):
        while CLASS_TO_SIZE[c] < size:
            c += 1
        assert size_to_class(size) == c, size


@pytest.mark.parametrize("size,cls", [(1, 1), (8, 1), (9, 2), (16, 2), (17, 3), (1016, 32), (1017, 32), (1024, 32),
                                      (1025, 33), (1152, 33), (1153, 34), (32767, 67), (32768, 67)])
def test_size_to_class_boundaries(size, cls):
    assert size_to_class(size) == cls


@pytest.mark.parametrize("size", [0, -1, MAX_SMALL_SIZE + 1])
def test_size_to_class_rejects_non_small_sizes(size):
    with pytest.raises(ValueError):
        size_to_class(size)


def test_lookup_tables_match_go_source_when_available():
    candidates = list(Path("/root/.pyenv/versions").glob("*/lib/python*/site-packages/go/src/internal/runtime/gc/sizeclasses.go"))
    if not candidates:
        pytest.skip("Go's sizeclasses.go is not installed here")
    text = candidates[0].read_text()

    def arr(name):
        m = re.search(r"var " + name + r" = \[[^\]]*\]\w+\{([^}]*)\}", text)
        return tuple(int(x) for x in m.group(1).split(","))

    assert arr("SizeClassToSize") == CLASS_TO_SIZE
    assert arr("SizeClassToNPages") == CLASS_TO_NPAGES
    assert arr("SizeToSizeClass8") == SIZE_TO_CLASS8
    assert arr("SizeToSizeClass128") == SIZE_TO_CLASS128


def test_span_class_packing():
    for c in range(NUM_SIZE_CLASSES):
        for noscan in (False, True):
            sc = make_span_class(c, noscan)
            assert sc == c << 1 | noscan
            assert spanclass_sizeclass(sc) == c and spanclass_noscan(sc) is noscan
    assert make_span_class(TINY_SIZE_CLASS, True) == TINY_SPAN_CLASS


def test_alloc_size_class_noscan_uses_the_plain_class():
    for size in (1, 8, 15, 16, 511, 512, 513, 1024, 4096, 32760):
        assert alloc_size_class(size, False) == (size_to_class(size), 0)


def test_alloc_size_class_small_scan_objects_have_no_header():
    for size in (1, 8, 24, 100, 505, 512):
        assert alloc_size_class(size, True) == (size_to_class(size), 0)


def test_alloc_size_class_header_above_512():
    # 513..: 8-byte malloc header, class chosen for size + 8.
    assert alloc_size_class(513, True) == (size_to_class(521), 8)
    assert alloc_size_class(513, True)[0] == 27  # 576-byte class
    assert alloc_size_class(568, True) == (27, 8)  # 568 + 8 = 576 fits exactly
    assert alloc_size_class(569, True) == (28, 8)  # 577 spills into the 640-byte class
    assert alloc_size_class(1024, True) == (33, 8)  # 1032 > 1024
    assert alloc_size_class(32760, True) == (67, 8)  # 32768 exactly
    for size in range(513, MAX_SMALL_SIZE_NO_HEADER + 1, 97):
        c, hdr = alloc_size_class(size, True)
        assert hdr == 8 and CLASS_TO_SIZE[c] >= size + 8 and CLASS_TO_SIZE[c - 1] < size + 8


@pytest.mark.parametrize("has_pointers", [False, True])
def test_alloc_size_class_large(has_pointers):
    for size in (32761, 32768, 32769, 1 << 20):
        assert alloc_size_class(size, has_pointers) == (0, 0)


def test_alloc_size_class_rejects_zero():
    with pytest.raises(ValueError):
        alloc_size_class(0, False)
