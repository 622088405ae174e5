package bench

import (
	"fmt"
	"net"
	"os"
	"runtime"
	"runtime/metrics"
	"runtime/pprof"
	"testing"
	"time"
)

// idleConns is how many connections BenchmarkIdleHTTP1Conns holds; each
// costs the process two sockets (client and proxy side).
const idleConns = 2000

// memSample is the process's memory after two collections (so sync.Pool
// victims are gone): live heap objects, goroutine stacks, and everything the
// runtime holds mapped and not free (heap, stacks, metadata: close to RSS).
type memSample struct{ heap, stacks, inUse, goroutines float64 }

var memMetrics = []string{
	"/memory/classes/heap/objects:bytes",
	"/memory/classes/heap/stacks:bytes",
	"/memory/classes/total:bytes",
	"/memory/classes/heap/released:bytes",
	"/memory/classes/heap/free:bytes",
	"/sched/goroutines:goroutines",
}

var gcs = 2

func init() {
	if v := os.Getenv("IDLE_GCS"); v != "" {
		fmt.Sscan(v, &gcs)
	}
}

func sampleMem() memSample {
	for range gcs {
		runtime.GC()
	}
	s := make([]metrics.Sample, len(memMetrics))
	for i, name := range memMetrics {
		s[i].Name = name
	}
	metrics.Read(s)
	v := func(i int) float64 {
		if s[i].Value.Kind() == metrics.KindUint64 {
			return float64(s[i].Value.Uint64())
		}
		return 0
	}
	return memSample{heap: v(0), stacks: v(1), inUse: v(2) - v(3) - v(4), goroutines: v(5)}
}

// holdIdle dials n connections to addr; when get is true each completes one
// keep-alive GET first (served, then idle, as bench/idleconns does).
func holdIdle(tb testing.TB, addr string, n int, get bool) []net.Conn {
	tb.Helper()
	req := []byte("GET / HTTP/1.1\r\nHost: bench\r\n\r\n")
	var buf [4096]byte
	conns := make([]net.Conn, 0, n)
	for range n {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			tb.Fatalf("dial %d: %v", len(conns), err)
		}
		conns = append(conns, c)
		if !get {
			continue
		}
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := c.Write(req); err != nil {
			tb.Fatal(err)
		}
		// The fixed upstream answers "ok" with content-length 2: the
		// response ends with "\r\n\r\nok".
		got := 0
		for got < 6 || string(buf[got-6:got]) != "\r\n\r\nok" {
			if got == len(buf) {
				tb.Fatalf("response over %d bytes: %q", len(buf), buf[:got])
			}
			m, err := c.Read(buf[got:])
			if err != nil {
				tb.Fatalf("conn %d: read: %v (got %q)", len(conns), err, buf[:got])
			}
			got += m
		}
		_ = c.SetDeadline(time.Time{})
	}
	return conns
}

// BenchmarkIdleHTTP1Conns measures what one idle HTTP/1.1 keep-alive
// connection costs the proxy: it holds idleConns connections, each served
// one GET through listener, connection manager and router, and reports the
// growth per connection of the heap, the goroutine stacks and the runtime's
// in-use memory, minus the same for bare connections to a listener that
// parks them without a goroutine (the client socket and the kernel-facing
// netFD of the accepted side are counted in that baseline: what remains is
// the proxy's own cost). It measures once whatever b.N: use -benchtime=1x.
// IDLE_HEAPPROFILE=file writes a heap profile while the connections are held.
func BenchmarkIdleHTTP1Conns(b *testing.B) {
	if os.Getenv("IDLE_HEAPPROFILE") != "" {
		old := runtime.MemProfileRate
		runtime.MemProfileRate = 1 // every allocation, for exact bytes per connection
		defer func() { runtime.MemProfileRate = old }()
	}
	p := startServer(b)
	addr := p.Addr("front")
	holdIdle(b, addr, 64, true) // warm the upstream pool and the buffer pools
	measureIdle(b, func(n int) []net.Conn { return holdIdle(b, addr, n, true) }, 50*time.Millisecond)
}

// measureIdle reports, once whatever b.N, what each of idleConns connections
// made by hold costs the process once idle (after settle), over the
// baseline of as many bare connections to a listener that parks them
// without a goroutine: heap, goroutine stacks, runtime in-use memory and
// goroutines per connection, and the bare pair's own cost.
// IDLE_HEAPPROFILE=file writes a heap profile while the connections are held.
func measureIdle(b *testing.B, hold func(n int) []net.Conn, settle time.Duration) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan []net.Conn, 1)
	go func() {
		var held []net.Conn
		for range idleConns {
			c, err := ln.Accept()
			if err != nil {
				break
			}
			held = append(held, c)
		}
		accepted <- held
	}()

	before := sampleMem()
	bare := holdIdle(b, ln.Addr().String(), idleConns, false)
	held := <-accepted
	mid := sampleMem()
	for _, c := range append(bare, held...) {
		c.Close()
	}
	time.Sleep(50 * time.Millisecond)
	base := sampleMem()
	conns := hold(idleConns)
	time.Sleep(settle) // let the proxy goroutines park
	after := sampleMem()
	if path := os.Getenv("IDLE_HEAPPROFILE"); path != "" {
		writeHeapProfile(b, path)
	}
	n := float64(idleConns)
	bareHeap := (mid.heap - before.heap) / n
	bareInUse := (mid.inUse - before.inUse) / n
	b.ReportMetric((after.heap-base.heap)/n-bareHeap, "heap-B/conn")
	b.ReportMetric((after.stacks-base.stacks)/n, "stack-B/conn")
	b.ReportMetric((after.inUse-base.inUse)/n-bareInUse, "inuse-B/conn")
	b.ReportMetric((after.goroutines-base.goroutines)/n, "goroutines/conn")
	b.ReportMetric(bareInUse, "bare-pair-B")
	for _, c := range conns {
		c.Close()
	}
}

// writeHeapProfile writes the in-use heap profile (go tool pprof
// -sample_index=inuse_space) while the connections are held.
func writeHeapProfile(tb testing.TB, path string) {
	f, err := os.Create(path)
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	if err := pprof.Lookup("heap").WriteTo(f, 0); err != nil {
		tb.Fatal(err)
	}
}
