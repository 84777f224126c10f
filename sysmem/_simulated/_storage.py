"""Where :mod:`._space` keeps the simulated contents: host memory behind the views.

On Linux one sparse memfd stands for the whole simulated space (file offset = simulated
address). Each touched ``segment_size`` window gets a ``MAP_SHARED`` mapping of its part
of the file, which serves every view inside the window; a view that crosses windows maps
its own piece of the file on demand. All mappings share the file's pages, so a write
through one view is seen through every other, and punching a hole (``MADV_REMOVE``)
zeroes the pages in all of them and gives their host memory back. The file is sparse:
host memory is committed only where something was touched.

Hosts without ``memfd_create`` keep one private anonymous mapping per window (or a numpy
array), as before; there a view cannot cross windows.
"""

from __future__ import annotations

import mmap
import os
import weakref

import numpy as np

from ..errors import InaccessibleMemoryError, SysOutOfMemoryError
from ._align import _down, _up

_HOST_PAGE = mmap.PAGESIZE
# mmap offsets must be multiples of this (the host page on Linux).
_GRANULE = mmap.ALLOCATIONGRANULARITY
_USE_MEMFD = hasattr(os, "memfd_create") and hasattr(mmap, "MADV_REMOVE")
_CAN_DROP_HOST_PAGES = hasattr(mmap, "MADV_DONTNEED") and hasattr(mmap.mmap, "madvise")
# A tmpfs file ends below 2**63 (the kernel's MAX_LFS_FILESIZE); windows above this
# offset get private segments, which views cannot cross.
_MAX_FILE = 1 << 62
# Zeroing fewer bytes than this writes zeros (cheaper than a system call); the host pages
# go back when their segment is released.
_HOLE_MIN = 16 * _HOST_PAGE
_RW = mmap.PROT_READ | mmap.PROT_WRITE

try:  # raw mmap(MAP_FIXED), to give a forked child its own copy of the contents
    from .._libc import MAP_ANONYMOUS as _MAP_ANONYMOUS
    from .._libc import MAP_FIXED as _MAP_FIXED
    from .._libc import MAP_PRIVATE as _MAP_PRIVATE
    from .._libc import libc as _libc
except (ImportError, OSError):  # pragma: no cover - hosts without cffi's libc
    _libc = None


def _address(mm: mmap.mmap) -> int:
    return np.frombuffer(mm, dtype=np.uint8).__array_interface__["data"][0]


def _no_huge_pages(mm: mmap.mmap) -> None:
    # One touched simulated page should cost one host page, not a host huge page.
    if hasattr(mmap, "MADV_NOHUGEPAGE"):
        try:
            mm.madvise(mmap.MADV_NOHUGEPAGE)
        except OSError:
            pass


class _HostFile:
    """A sparse memfd ``size`` bytes long; closed by :meth:`close` or when collected."""

    def __init__(self, size: int) -> None:
        fd = os.memfd_create("heaplab-simulated", os.MFD_CLOEXEC)
        try:
            os.ftruncate(fd, size)
        except OSError:
            os.close(fd)
            raise
        self.fd = fd
        self.size = size
        self._closer = weakref.finalize(self, os.close, fd)

    def map(self, offset: int, length: int) -> mmap.mmap:
        """A shared read-write mapping of [offset, offset+length) of the file."""
        try:
            mm = mmap.mmap(self.fd, length, flags=mmap.MAP_SHARED, prot=_RW, offset=offset)
        except (OSError, ValueError) as e:
            raise SysOutOfMemoryError(
                f"the host refused to map {length} bytes of the simulation's storage at "
                f"0x{offset:x}: {e}") from e
        _no_huge_pages(mm)
        return mm

    def close(self) -> None:
        """Close the descriptor (mappings keep the file's memory until they go)."""
        self._closer()


class _Segment:
    """Backing bytes for one aligned window of the simulated address space: a shared
    mapping of the host file, else a private anonymous mapping (zero-filled and committed
    only where written), else ``numpy.zeros``."""

    __slots__ = ("array", "view", "_mm", "_shared")

    def __init__(self, size: int, shared: mmap.mmap | None = None) -> None:
        mm = shared
        if mm is None:
            try:
                mm = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE, prot=_RW)
            except (AttributeError, OSError, TypeError, ValueError):
                mm = None
            else:
                _no_huge_pages(mm)
        self._mm = mm
        self._shared = shared is not None
        if mm is None:
            self.array = np.zeros(size, dtype=np.uint8)
        else:
            self.array = np.frombuffer(mm, dtype=np.uint8)
        self.view = memoryview(self.array)

    def zero(self, a: int, b: int) -> None:
        """Zero bytes [a, b) of the segment (in every view of them), giving whole host
        pages back when the range is large."""
        ia, ib = _up(a, _HOST_PAGE), _down(b, _HOST_PAGE)
        if b - a >= _HOLE_MIN and self._drop(ia, ib):
            self.array[a:ia] = 0
            self.array[ib:b] = 0
        else:
            self.array[a:b] = 0

    def release(self) -> None:
        """Give all the segment's host memory back. Its bytes are all zero by now, but a
        shared mapping's pages (zeroed by writing) would stay in the file."""
        if self._shared:
            self._drop(0, len(self.array))

    def _drop(self, a: int, b: int) -> bool:
        # MADV_REMOVE punches a hole in the file: every mapping of it reads zeros there.
        # MADV_DONTNEED only drops this mapping's pages, which is enough for a private one.
        mm = self._mm
        if mm is None or not _CAN_DROP_HOST_PAGES:
            return False
        try:
            mm.madvise(mmap.MADV_REMOVE if self._shared else mmap.MADV_DONTNEED, a, b - a)
        except OSError:
            return False
        return True


class _Storage:
    """The contents of the simulated space: lazily created segments of ``1 << seg_shift``
    bytes, and (with a host file) on-demand mappings of ranges that cross them."""

    def __init__(self, seg_shift: int, top: int) -> None:
        self.seg_shift = seg_shift
        self.top = top
        self.segments: dict[int, _Segment] = {}
        self.file: _HostFile | None = None
        self._file_tried = False
        # Every live mapping of the file: address -> (weak reference, length, offset),
        # so a forked child can put its own copy under each one.
        self._mappings: dict[int, tuple[weakref.ref, int, int]] = {}
        # Mappings of files closed since (stale views still use them): a forked child
        # must not share them with the parent either.
        self._retired: dict[int, tuple[weakref.ref, int, int]] = {}
        # Set in a forked child that could not get its own copy of the file: the memory
        # is the parent's, so the child must neither touch nor zero it.
        self.shared_with_parent: str | None = None
        _LIVE.add(self)

    # -- segments --------------------------------------------------------------------------
    def _host_file(self) -> _HostFile | None:
        if not self._file_tried:
            self._file_tried = True
            size = min(self.top, _MAX_FILE)
            if _USE_MEMFD and (1 << self.seg_shift) % _GRANULE == 0:
                try:
                    self.file = _HostFile(size)
                except OSError:  # no memfd here (seccomp, old kernel): private segments
                    self.file = None
        return self.file

    def _in_file(self, end: int) -> bool:
        """Whether [0, end) is backed by the host file."""
        file = self._host_file()
        return file is not None and end <= file.size

    def segment(self, seg: int) -> _Segment:
        """The segment for window ``seg``, created (zero-filled) if needed."""
        segment = self.segments.get(seg)
        if segment is None:
            size = 1 << self.seg_shift
            base = seg << self.seg_shift
            mm = self._map(base, size) if self._in_file(base + size) else None
            segment = self.segments[seg] = _Segment(size, mm)
            # Nothing in the window is resident, so it must read as zero; but a stale
            # view of the window's last segment may have written to the file since.
            segment.release()
        return segment

    def release(self, seg: int) -> None:
        """Drop window ``seg``'s segment and give its host memory back."""
        segment = self.segments.pop(seg, None)
        if segment is not None and self.shared_with_parent is None:
            segment.release()

    def zero(self, seg: int, a: int, b: int) -> None:
        """Zero bytes [a, b) of window ``seg`` (offsets in the window) in every view."""
        segment = self.segments.get(seg)
        if segment is not None and self.shared_with_parent is None:
            segment.zero(a, b)

    # -- views -----------------------------------------------------------------------------
    def buffer(self, v: int, end: int) -> memoryview:
        """One contiguous buffer over [v, end), coherent with every other view."""
        if self.shared_with_parent is not None:
            raise SysOutOfMemoryError(
                f"buffer(0x{v:x}, {end - v}): this forked process could not get its own "
                f"copy of the simulated memory ({self.shared_with_parent}); it is the "
                f"parent's, so the simulated backend refuses to touch it")
        shift = self.seg_shift
        first, last = v >> shift, (end - 1) >> shift
        if first == last:
            base = first << shift
            return self.segment(first).view[v - base:end - base]
        if not self._in_file(end):
            boundary = (first + 1) << shift
            why = (f"it is beyond the simulation's 0x{self.file.size:x}-byte host file"
                   if self.file is not None
                   else "this host has no memfd to back the space with one shared file")
            raise InaccessibleMemoryError(
                f"buffer(0x{v:x}, {end - v}) straddles 0x{boundary:x}, a boundary between "
                f"the simulation's {1 << shift}-byte storage segments, and {why}; the "
                f"simulated backend cannot hand out one contiguous buffer across it")
        # The segments hold the bookkeeping (and zero the pages) for every window touched.
        for seg in range(first, last + 1):
            self.segment(seg)
        lo, hi = _down(v, _GRANULE), _up(end, _GRANULE)
        return memoryview(self._map(lo, hi - lo))[v - lo:end - lo]

    def _map(self, offset: int, length: int) -> mmap.mmap:
        assert self.file is not None
        mm = self.file.map(offset, length)
        addr, mappings = _address(mm), self._mappings

        def forget(ref: weakref.ref, addr: int = addr) -> None:
            if mappings.get(addr, (None,))[0] is ref:
                del mappings[addr]

        mappings[addr] = (weakref.ref(mm, forget), length, offset)
        return mm

    # -- lifetime --------------------------------------------------------------------------
    def close(self) -> None:
        """Drop every segment and close the host file; live views keep their memory.
        The storage starts afresh if touched again."""
        self.segments.clear()
        live = {**self._retired, **self._mappings}
        self._retired = {a: m for a, m in live.items() if m[0]() is not None}
        self._mappings.clear()
        self.shared_with_parent = None
        if self.file is not None:
            self.file.close()
            self.file = None
        self._file_tried = False

    def _copy_for_child(self) -> None:
        """In a forked child: move every mapping onto a private copy of the file, so the
        child's writes and zeroing stay out of the parent's memory (and the parent's out
        of the child's), as a fork's copy-on-write memory would."""
        old = self.file
        if old is None and not self._retired:
            return
        if _libc is None:
            raise OSError("no libc mmap to give the child its own copy")
        # Stale views of dropped contents: the child gets private zero pages under them.
        private = _MAP_PRIVATE | _MAP_ANONYMOUS | _MAP_FIXED
        for addr, (ref, length, _offset) in list(self._retired.items()):
            if ref() is None:
                del self._retired[addr]
            elif _libc.mmap(addr, length, _RW, private, -1, 0) != addr:
                raise OSError(f"cannot remap a closed storage mapping at 0x{addr:x}")
        if old is None:
            return
        new = _HostFile(old.size)
        pos = 0
        while True:
            try:
                pos = os.lseek(old.fd, pos, os.SEEK_DATA)
            except OSError:  # ENXIO: no data after pos
                break
            hole = os.lseek(old.fd, pos, os.SEEK_HOLE)
            while pos < hole:
                chunk = os.pread(old.fd, min(hole - pos, 1 << 24), pos)
                os.pwrite(new.fd, chunk, pos)
                pos += len(chunk)
        fixed = mmap.MAP_SHARED | _MAP_FIXED  # at the same addresses: views stay valid
        for addr, (ref, length, offset) in list(self._mappings.items()):
            if ref() is not None and _libc.mmap(addr, length, _RW, fixed, new.fd, offset) != addr:
                raise OSError(f"cannot remap the simulation's storage at 0x{addr:x}")
        self.file = new
        old.close()


# Every storage that may own a host file, for the fork handler.
_LIVE: "weakref.WeakSet[_Storage]" = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for storage in list(_LIVE):
        try:
            storage._copy_for_child()
        except (OSError, SysOutOfMemoryError) as e:
            # Raising here would break the fork itself; the storage refuses use instead.
            storage.shared_with_parent = str(e) or type(e).__name__


if _USE_MEMFD and hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
