// Command bulk measures TCP throughput through a proxy to bench/upstream's
// bulk server: it sends the one-byte mode ('u' upload or 'd' download) and
// then writes or reads 256 KiB chunks for a fixed time on each connection.
// It prints one line with the bytes moved and Gbit/s.
package main

import (
	"flag"
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:18091", "address to connect to")
	dir := flag.String("dir", "up", "up (client sends) or down (client receives)")
	dur := flag.Duration("d", 5*time.Second, "duration")
	conns := flag.Int("c", 1, "parallel connections")
	flag.Parse()
	n, elapsed, err := run(*addr, *dir, *dur, *conns)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bulk:", err)
		os.Exit(1)
	}
	fmt.Printf("dir=%s bytes=%d secs=%.3f gbps=%.3f\n", *dir, n, elapsed.Seconds(), gbps(n, elapsed))
}

// gbps converts n bytes in d to gigabits per second (0 for a zero d).
func gbps(n int64, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(n) * 8 / d.Seconds() / 1e9
}

// run moves bytes on conns connections for dur and returns the total count
// and the time actually spent.
func run(addr, dir string, dur time.Duration, conns int) (int64, time.Duration, error) {
	var mode byte
	switch dir {
	case "up":
		mode = 'u'
	case "down":
		mode = 'd'
	default:
		return 0, 0, fmt.Errorf("dir %q: want up or down", dir)
	}
	cs := make([]net.Conn, 0, conns)
	defer func() {
		for _, c := range cs {
			c.Close()
		}
	}()
	for range conns {
		c, err := net.DialTimeout("tcp", addr, 2*time.Second)
		if err != nil {
			return 0, 0, fmt.Errorf("addr %q: %w", addr, err)
		}
		cs = append(cs, c)
		if _, err := c.Write([]byte{mode}); err != nil {
			return 0, 0, fmt.Errorf("addr %q: mode: %w", addr, err)
		}
	}
	var total atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	deadline := start.Add(dur)
	for _, c := range cs {
		c.SetDeadline(deadline)
		wg.Go(func() {
			buf := make([]byte, 256<<10)
			for {
				var n int
				var err error
				if mode == 'u' {
					n, err = c.Write(buf)
				} else {
					n, err = c.Read(buf)
				}
				total.Add(int64(n))
				if err != nil {
					return
				}
			}
		})
	}
	wg.Wait()
	return total.Load(), time.Since(start), nil
}
