"""What the heap knows about its objects: :class:`ObjectInfo` (what ``Heap.lookup``
returns) and pointer layouts (:class:`PointerLayout`, Go's type pointer bitmaps, made
once per shape by a :class:`LayoutTable`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sysmem.errors import InvalidSizeError

__all__ = ["ObjectInfo", "PointerLayout", "LayoutTable"]


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """What the heap knows about one live object.

    ``base``: the object's address (what ``alloc`` returned); ``size``: its usable
    bytes (the slot minus any malloc header; for a large object the size asked for,
    rounded up to whole words: Go's ``s.limit``, past which a pointer refers to nothing);
    ``span_class``: ``sizeclass << 1 | noscan``; ``has_pointers``: it lives in a scan
    span; ``pointer_words``: indices (from ``base``) of the words that hold pointers;
    ``header_bytes``: 8 when a malloc header precedes ``base``, else 0.
    """

    base: int
    size: int
    span_class: int
    has_pointers: bool
    pointer_words: tuple[int, ...]
    header_bytes: int = 0

    @property
    def size_class(self) -> int:
        return self.span_class >> 1

    @property
    def is_large(self) -> bool:
        return self.span_class >> 1 == 0

    @property
    def slot_base(self) -> int:
        """Start of the object's slot (the header, if it has one)."""
        return self.base - self.header_bytes

    @property
    def end(self) -> int:
        return self.base + self.size


class PointerLayout:
    """A pointer layout ("type"): which of an object's ``nwords`` words hold pointers.

    ``id`` is what the malloc header of a big scan object holds (Go stores a type
    pointer there). ``offsets``: the pointer word indices (read-only array).
    """

    __slots__ = ("id", "nwords", "offsets", "all_pointers", "ptr_bytes")

    def __init__(self, id: int, nwords: int, offsets: np.ndarray) -> None:  # noqa: A002
        self.id = id
        self.nwords = nwords
        offsets = np.ascontiguousarray(offsets, dtype=np.intp)
        offsets.flags.writeable = False
        self.offsets = offsets
        self.all_pointers = len(offsets) == nwords
        #: bytes up to and including the last pointer word (Go's ``typ.PtrBytes``)
        self.ptr_bytes = (int(offsets.max()) + 1) * 8 if len(offsets) else 0

    def scan_bytes(self, elemsize: int, header: int) -> int:
        """What one object of this layout adds to the scannable heap (Go's
        ``scanAlloc``, as ``heapSetType`` returns it): the whole slot for an object with
        a malloc header or a span of its own, else the bytes up to its last pointer."""
        return elemsize if header else self.ptr_bytes

    def __repr__(self) -> str:
        what = "all" if self.all_pointers else list(self.offsets[:8]) + (["..."] if len(self.offsets) > 8 else [])
        return f"PointerLayout(id={self.id}, nwords={self.nwords}, pointers={what})"


class LayoutTable:
    """The heap's pointer layouts, each made once and numbered from 1 (id 0 means "no
    layout" in a malloc header): ``types[id]`` is the layout with that id."""

    def __init__(self) -> None:
        #: layouts by id (index 0 unused)
        self.types: list[PointerLayout | None] = [None]
        self._by_key: dict[tuple, PointerLayout] = {}

    def layout_for(self, size: int, pointers) -> PointerLayout | None:
        """The layout of a ``size``-byte object whose pointer words ``pointers`` names
        (see :meth:`heap.Heap.alloc`), or None for a pointer-free object. Raises
        :class:`~sysmem.errors.InvalidSizeError` for a mask that does not fit."""
        if pointers is None or pointers is False:
            return None
        nwords = (size + 7) >> 3
        if pointers is True or (isinstance(pointers, np.bool_) and pointers):
            key: tuple = (nwords, True)
            offsets = None
        else:
            if isinstance(pointers, np.bool_):
                return None
            arr = np.asarray(pointers)
            if arr.dtype == bool:
                if arr.ndim != 1 or len(arr) > nwords:
                    raise InvalidSizeError(
                        f"pointer mask has {arr.size} entries, the {size}-byte object {nwords} words")
                offsets = np.flatnonzero(arr)
            elif arr.ndim == 0:
                raise InvalidSizeError(
                    f"pointers={pointers!r}: give pointer words as a sequence ([{pointers!r}]), "
                    "True for all words, or None/False for none")
            elif arr.dtype.kind in "iu" or arr.size == 0:
                offsets = np.unique(arr.ravel())  # in the given dtype: no wrap-around
                if len(offsets) and (offsets[0] < 0 or offsets[-1] >= nwords):
                    raise InvalidSizeError(
                        f"pointer word {int(offsets[0] if offsets[0] < 0 else offsets[-1])} is "
                        f"outside the {size}-byte object (words 0..{nwords - 1})")
                offsets = offsets.astype(np.int64)
            else:
                raise InvalidSizeError(
                    f"pointers must be None, a bool, word indices or a bool mask, not {arr.dtype} data")
            if len(offsets) == 0:
                return None  # no pointer words: a noscan object, as in Go
            key = (nwords, True) if len(offsets) == nwords else (nwords, offsets.tobytes())
        layout = self._by_key.get(key)
        if layout is None:
            if offsets is None or len(offsets) == nwords:
                offsets = np.arange(nwords)
            layout = PointerLayout(len(self.types), nwords, offsets)
            self.types.append(layout)
            self._by_key[key] = layout
        return layout
