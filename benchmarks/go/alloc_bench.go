// Command alloc_bench times Go's own allocator on the loop that
// benchmarks/heap_alloc_vs_go.py runs on heaplab, so the two can be compared per object.
//
// It reads requests from standard input, one per line:
//
//	SIZE COUNT SCAN
//
// and for each one allocates COUNT objects of SIZE bytes (SIZE is 16, 64, 1024 or 65536;
// SCAN is 0 for pointer-free objects, 1 for objects made only of pointers) into a slice
// that stays reachable, then answers with one line:
//
//	WALL_NS CPU_NS
//
// the wall-clock and process CPU time of the allocation loop alone (the slice that holds
// the results is made before the clock starts). The collector is off
// (debug.SetGCPercent(-1)), as on heaplab's side: this measures allocation alone; every object stays
// reachable until the program exits, so each request is served from fresh memory the
// way a fresh heaplab heap serves it. A request "version" prints runtime.Version().
//
// Only the standard library is used, so `go build alloc_bench.go` needs no network.
package main

import (
	"bufio"
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// One concrete type per size and kind: `new` of a fixed-size array is a plain mallocgc
// call with a static type, just like the objects of the heaplab loop.
type (
	noscan16    [16]byte
	noscan64    [64]byte
	noscan1024  [1024]byte
	noscan65536 [65536]byte
	scan16      [16 / 8]*byte
	scan64      [64 / 8]*byte
	scan1024    [1024 / 8]*byte
	scan65536   [65536 / 8]*byte
)

// kept holds every batch ever allocated, so nothing becomes garbage and the compiler
// cannot prove the allocations dead.
var kept []any

func fill[T any](n int) (time.Duration, time.Duration) {
	objs := make([]*T, n)
	cpu0 := cpuTime()
	t0 := time.Now()
	for i := range objs {
		objs[i] = new(T)
	}
	wall := time.Since(t0)
	cpu := cpuTime() - cpu0
	kept = append(kept, objs)
	return wall, cpu
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func request(size, n int, scan bool) (time.Duration, time.Duration, error) {
	switch {
	case size == 16 && !scan:
		w, c := fill[noscan16](n)
		return w, c, nil
	case size == 64 && !scan:
		w, c := fill[noscan64](n)
		return w, c, nil
	case size == 1024 && !scan:
		w, c := fill[noscan1024](n)
		return w, c, nil
	case size == 65536 && !scan:
		w, c := fill[noscan65536](n)
		return w, c, nil
	case size == 16 && scan:
		w, c := fill[scan16](n)
		return w, c, nil
	case size == 64 && scan:
		w, c := fill[scan64](n)
		return w, c, nil
	case size == 1024 && scan:
		w, c := fill[scan1024](n)
		return w, c, nil
	case size == 65536 && scan:
		w, c := fill[scan65536](n)
		return w, c, nil
	}
	return 0, 0, fmt.Errorf("unsupported size %d (scan=%v)", size, scan)
}

func main() {
	debug.SetGCPercent(-1)
	// One OS thread does all the work, as the single Python thread does.
	runtime.LockOSThread()
	in := bufio.NewScanner(os.Stdin)
	out := bufio.NewWriter(os.Stdout)
	defer out.Flush()
	for in.Scan() {
		line := strings.TrimSpace(in.Text())
		if line == "" {
			continue
		}
		if line == "version" {
			fmt.Fprintln(out, runtime.Version())
			out.Flush()
			continue
		}
		f := strings.Fields(line)
		if len(f) != 3 {
			fmt.Fprintf(out, "error: want SIZE COUNT SCAN, got %q\n", line)
			out.Flush()
			continue
		}
		size, err1 := strconv.Atoi(f[0])
		n, err2 := strconv.Atoi(f[1])
		if err1 != nil || err2 != nil || n <= 0 {
			fmt.Fprintf(out, "error: bad request %q\n", line)
			out.Flush()
			continue
		}
		wall, cpu, err := request(size, n, f[2] == "1")
		if err != nil {
			fmt.Fprintf(out, "error: %v\n", err)
		} else {
			fmt.Fprintf(out, "%d %d\n", wall.Nanoseconds(), cpu.Nanoseconds())
		}
		out.Flush()
	}
}
