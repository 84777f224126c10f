/*
 * sysmem_ops.c: the system calls of Go's mem_linux.go, timed in C, as the baseline for
 * benchmarks/sysmem_vs_c.py. Built by that script with `cc -O2`.
 *
 *   sysmem_ops OP SIZE COUNT ROUNDS [--names]   run ROUNDS rounds, print one JSON object
 *   sysmem_ops --serve [--names]                read "OP SIZE COUNT ROUNDS" lines from
 *                                               stdin, answer each with one JSON line
 *
 * Built with -shared -fPIC -DSYSMEM_OPS_LIB it is instead a library exporting
 *   long long sysmem_ops_round(const char *op, size_t size, size_t count, int names)
 * (the nanoseconds of one round, or -1 with errno set), so the same rounds can run
 * inside the Python process, on the same address space as the Python side.
 *
 * OP is one of
 *   unused      timed: madvise(MADV_DONTNEED) on COUNT dirty Ready ranges
 *               (sysUnusedOS with Go's Linux default madvdontneed=1)
 *   used        timed: nothing per range (sysUsedOS with Go's defaults makes no call);
 *               an empty loop the compiler may not remove
 *   used_hd     timed: mmap(v, n, RW, ANON|FIXED|PRIVATE) [+ prctl name "used"] on COUNT
 *               ranges that sysUnused left PROT_NONE (GODEBUG=harddecommit=1)
 *   map         timed: mmap(v, n, RW, ANON|FIXED|PRIVATE) on COUNT Reserved (PROT_NONE)
 *               ranges (sysMapOS with no VMA name and disablethp=0)
 *
 * Every round builds its ranges from scratch, untimed, with the same calls in the same
 * order as the Python side (SysMem) makes: one reservation of COUNT*SIZE bytes holding
 * the COUNT ranges back to back, made Ready, every page written, and for used/used_hd
 * released per range; afterwards the region is brought back to Ready and unmapped.
 * --names mirrors heaplab's setVMAName: prctl(PR_SET_VMA_ANON_NAME, " Go: <name>")
 * wherever SysMem makes that call (only with harddecommit here, after each remap), and
 * stops naming after the first EINVAL, as Go and heaplab do.
 * Only the loop over the COUNT ranges is timed, with clock_gettime(CLOCK_MONOTONIC);
 * the thread's CPU time over the same loop is reported too ("cpu_ns"), so a caller can
 * reject rounds in which the thread was preempted.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>

#ifndef PR_SET_VMA
#define PR_SET_VMA 0x53564d41
#endif
#ifndef PR_SET_VMA_ANON_NAME
#define PR_SET_VMA_ANON_NAME 0
#endif

#define RW (PROT_READ | PROT_WRITE)
#define ANON (MAP_ANONYMOUS | MAP_PRIVATE)
#define ANON_FIXED (MAP_ANONYMOUS | MAP_FIXED | MAP_PRIVATE)

static int names;            /* --names: mirror setVMAName */
static int names_unsupported;
static size_t page;

/* Errors unwind to round_once's caller (a library must not exit its host process). */
#define FAIL(what) do { fail_what = (what); goto fail; } while (0)
static const char *fail_what;

/* heaplab's LinuxBackend._set_vma_name (Go's setVMAName). */
static void set_vma_name(char *p, size_t n, const char *name) {
    char buf[80];
    if (!names || names_unsupported || !name[0]) return;
    snprintf(buf, sizeof buf, " Go: %s", name);
    if (prctl(PR_SET_VMA, PR_SET_VMA_ANON_NAME, (unsigned long)p, n, (unsigned long)buf) != 0 &&
        errno == EINVAL)
        names_unsupported = 1;
}

static int mmap_fixed(char *v, size_t n, int prot) {
    return mmap(v, n, prot, ANON_FIXED, -1, 0) == v ? 0 : -1;
}

static int64_t clock_ns(clockid_t clock) {
    struct timespec ts;
    clock_gettime(clock, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* The timer: CLOCK_MONOTONIC. The thread's CPU time is read around it only so the
 * caller can tell a round this thread was preempted in (wall time >> CPU time). */
static int64_t cpu0, cpu_ns;

static inline int64_t start_clock(void) {
    cpu0 = clock_ns(CLOCK_THREAD_CPUTIME_ID);
    return clock_ns(CLOCK_MONOTONIC);
}

static inline int64_t stop_clock(void) {
    int64_t t = clock_ns(CLOCK_MONOTONIC);
    cpu_ns = clock_ns(CLOCK_THREAD_CPUTIME_ID) - cpu0;
    return t;
}

static void dirty(char *base, size_t len) {
    for (size_t off = 0; off < len; off += page) ((volatile char *)base)[off] = 1;
}

/* One round of OP; returns the nanoseconds of the timed loop (its CPU time in cpu_ns),
 * or -1 (fail_what, errno). */
static int64_t round_once(const char *op, size_t size, size_t count) {
    size_t len = size * count;
    int hd = strcmp(op, "used_hd") == 0;
    int64_t t0, t1;
    char *base;

    if (!page) page = (size_t)sysconf(_SC_PAGESIZE);
    if (size == 0 || size % page || count == 0) {
        errno = EINVAL;
        fail_what = "bad size or count";
        return -1;
    }
    if (strcmp(op, "unused") && strcmp(op, "used") && strcmp(op, "used_hd") && strcmp(op, "map")) {
        errno = EINVAL;
        fail_what = "unknown op";
        return -1;
    }
    /* sys_reserve(None, len): mmap(NULL, PROT_NONE); no name (vma_name ""). */
    base = mmap(NULL, len, PROT_NONE, ANON, -1, 0);
    if (base == MAP_FAILED) {
        fail_what = "mmap(PROT_NONE)";
        return -1;
    }

    if (strcmp(op, "map") == 0) {
        t0 = start_clock();
        for (size_t i = 0; i < count; i++) {
            char *v = base + i * size;
            if (mmap(v, size, RW, ANON_FIXED, -1, 0) != v) FAIL("mmap(MAP_FIXED)");
        }
        t1 = stop_clock();
        /* teardown as SysMem: sys_used(whole) makes no call by default; sys_free = munmap */
        goto done;
    }

    /* sys_map(base, len): mmap RW FIXED (no name); sys_used(base, len): with harddecommit
     * mmap RW FIXED again + name "used", else nothing. */
    if (mmap_fixed(base, len, RW)) FAIL("mmap(MAP_FIXED)");
    if (hd) {
        if (mmap_fixed(base, len, RW)) FAIL("mmap(MAP_FIXED)");
        set_vma_name(base, len, "used");
    }
    dirty(base, len);

    if (strcmp(op, "unused") == 0) {
        t0 = start_clock();
        for (size_t i = 0; i < count; i++) {
            char *v = base + i * size;
            if (madvise(v, size, MADV_DONTNEED) != 0) FAIL("madvise");
        }
        t1 = stop_clock();
        goto done;
    }
    /* sys_unused per range, untimed: madvise(DONTNEED), and with harddecommit
     * mmap(PROT_NONE) + name "unused". */
    for (size_t i = 0; i < count; i++) {
        char *v = base + i * size;
        if (madvise(v, size, MADV_DONTNEED) != 0) FAIL("madvise");
        if (hd) {
            if (mmap_fixed(v, size, PROT_NONE)) FAIL("mmap(PROT_NONE, MAP_FIXED)");
            set_vma_name(v, size, "unused");
        }
    }
    if (hd) {
        t0 = start_clock();
        for (size_t i = 0; i < count; i++) {
            char *v = base + i * size;
            if (mmap(v, size, RW, ANON_FIXED, -1, 0) != v) FAIL("mmap(MAP_FIXED)");
            set_vma_name(v, size, "used");
        }
        t1 = stop_clock();
    } else {
        t0 = start_clock();
        for (size_t i = 0; i < count; i++) {
            char *v = base + i * size;
            __asm__ __volatile__("" : : "r"(v) : "memory"); /* keep the loop */
        }
        t1 = stop_clock();
    }
done:
    if (munmap(base, len) != 0) {
        fail_what = "munmap";
        return -1;
    }
    return t1 - t0;
fail: {
        int e = errno;
        munmap(base, len);
        errno = e;
        return -1;
    }
}

#ifdef SYSMEM_OPS_LIB
long long sysmem_ops_round(const char *op, size_t size, size_t count, int with_names,
                           long long *cpu) {
    long long ns;
    names = with_names;
    ns = round_once(op, size, count);
    *cpu = cpu_ns;
    return ns;
}
#else
static void die(const char *what) {
    fprintf(stderr, "sysmem_ops: %s: %s\n", what, strerror(errno));
    exit(2);
}

static void run(const char *op, size_t size, size_t count, long rounds) {
    int64_t *ns = calloc(rounds > 0 ? 2 * (size_t)rounds : 1, sizeof *ns), *cpu = ns + rounds;
    if (rounds <= 0) {
        errno = EINVAL;
        die("bad rounds");
    }
    for (long r = 0; r < rounds; r++) {
        if ((ns[r] = round_once(op, size, count)) < 0) die(fail_what);
        cpu[r] = cpu_ns;
    }
    printf("{\"op\": \"%s\", \"size\": %zu, \"count\": %zu, \"ns\": [", op, size, count);
    for (long r = 0; r < rounds; r++) printf("%s%lld", r ? ", " : "", (long long)ns[r]);
    printf("], \"cpu_ns\": [");
    for (long r = 0; r < rounds; r++) printf("%s%lld", r ? ", " : "", (long long)cpu[r]);
    printf("]}\n");
    fflush(stdout);
    free(ns);
}

int main(int argc, char **argv) {
    int serve = 0, npos = 0;
    char *pos[4];
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--names") == 0) names = 1;
        else if (strcmp(argv[i], "--serve") == 0) serve = 1;
        else if (npos < 4) pos[npos++] = argv[i];
        else npos = 5;
    }
    if (serve) {
        char line[256], op[32];
        size_t size, count;
        long rounds;
        while (fgets(line, sizeof line, stdin)) {
            if (sscanf(line, "%31s %zu %zu %ld", op, &size, &count, &rounds) != 4) {
                fprintf(stderr, "sysmem_ops: bad request: %s", line);
                return 2;
            }
            run(op, size, count, rounds);
        }
        return 0;
    }
    if (npos != 4) {
        fprintf(stderr, "usage: %s OP SIZE COUNT ROUNDS [--names] | --serve [--names]\n", argv[0]);
        return 2;
    }
    run(pos[0], strtoull(pos[1], NULL, 0), strtoull(pos[2], NULL, 0), strtol(pos[3], NULL, 0));
    return 0;
}
#endif /* SYSMEM_OPS_LIB */
