// gc_mark builds the graph benchmarks/gc_mark_vs_go.py builds in heaplab — N nodes of
// 256 bytes, the first K words pointers to random nodes (seeded), every node held by
// one root slice — and times runtime.GC() on it. Standard library only.
//
// Output (one line, key=value): nodes, ptrs, live_bytes, gc_ns (best of R), procs.
package main

import (
	"flag"
	"fmt"
	"runtime"
	"time"
)

type node struct {
	p   [4]*node
	pad [28]uint64 // 4 + 28 words = 256 bytes, pointer-free tail
}

func main() {
	n := flag.Int("n", 4<<20, "nodes")
	reps := flag.Int("reps", 3, "timed GCs")
	seed := flag.Uint64("seed", 1, "xorshift seed")
	flag.Parse()
	nodes := make([]*node, *n)
	for i := range nodes {
		nodes[i] = new(node)
	}
	x := *seed | 1
	next := func() uint64 { // xorshift64: cheap (Python draws its graph with numpy: same shape, not the same graph)
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		return x
	}
	for _, nd := range nodes {
		for k := range nd.p {
			nd.p[k] = nodes[next()%uint64(*n)]
		}
	}
	runtime.GC() // settle: the graph is the only live data now
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	best := time.Duration(1 << 62)
	for r := 0; r < *reps; r++ {
		t := time.Now()
		runtime.GC()
		if d := time.Since(t); d < best {
			best = d
		}
	}
	runtime.KeepAlive(nodes)
	fmt.Printf("nodes=%d ptrs=%d live_bytes=%d gc_ns=%d procs=%d\n",
		*n, *n*4+*n, ms.HeapAlloc, best.Nanoseconds(), runtime.GOMAXPROCS(0))
}
