"""libc through cffi in ABI mode (no compiler needed at install time).

Pointer arguments and results are declared as ``uintptr_t``: on the 64-bit Linux ABIs
heaplab supports (x86-64 System V, AArch64) a pointer and a ``uintptr_t`` travel in the
same register, and passing addresses as plain integers saves a ``ffi.cast`` per call on
the hot path. Constants are numbers (Linux's generic values, as in Go's
``defs_linux_amd64.go``), not read from headers.
"""

from __future__ import annotations

from cffi import FFI

__all__ = ["ffi", "libc"]

ffi = FFI()
ffi.cdef(
    """
    uintptr_t mmap(uintptr_t addr, size_t length, int prot, int flags, int fd, long offset);
    int munmap(uintptr_t addr, size_t length);
    int mprotect(uintptr_t addr, size_t length, int prot);
    int madvise(uintptr_t addr, size_t length, int advice);
    int mincore(uintptr_t addr, size_t length, unsigned char *vec);
    int prctl(int option, unsigned long arg2, unsigned long arg3, unsigned long arg4,
              unsigned long arg5);
    long sysconf(int name);
    """
)
libc = ffi.dlopen(None)

PROT_NONE = 0
PROT_READ = 1
PROT_WRITE = 2
MAP_PRIVATE = 0x2
MAP_FIXED = 0x10
MAP_ANONYMOUS = 0x20
MAP_FAILED = (1 << 64) - 1
MADV_DONTNEED = 4
MADV_FREE = 8
MADV_HUGEPAGE = 14
MADV_NOHUGEPAGE = 15
MADV_COLLAPSE = 25
PR_SET_VMA = 0x53564D41
PR_SET_VMA_ANON_NAME = 0
SC_PAGESIZE = 30
EACCES = 13
EAGAIN = 11
EINVAL = 22
ENOMEM = 12
EOVERFLOW = 75

MADVICE_NAMES = {
    MADV_DONTNEED: "MADV_DONTNEED",
    MADV_FREE: "MADV_FREE",
    MADV_HUGEPAGE: "MADV_HUGEPAGE",
    MADV_NOHUGEPAGE: "MADV_NOHUGEPAGE",
    MADV_COLLAPSE: "MADV_COLLAPSE",
}
