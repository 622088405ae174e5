// Command idleconns opens many HTTP/1.1 keep-alive connections, sends one
// GET on each so the proxy has served it, holds them idle for a fixed time
// and then closes them and exits. It prints "ready N" once all N are open,
// so a script can read the proxy's RSS while they are held.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sync"
	"time"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:18081", "proxy address")
	n := flag.Int("n", 10000, "connections")
	par := flag.Int("p", 64, "connections opened in parallel")
	hold := flag.Duration("hold", 5*time.Second, "how long to hold them once open")
	timeout := flag.Duration("timeout", 60*time.Second, "give up opening after this long")
	flag.Parse()
	conns, err := open(*addr, *n, *par, *timeout)
	fmt.Printf("ready %d\n", len(conns))
	if err != nil {
		fmt.Fprintln(os.Stderr, "idleconns:", err)
	}
	time.Sleep(*hold)
	for _, c := range conns {
		c.Close()
	}
	if err != nil {
		os.Exit(1)
	}
}

// open dials n connections, p at a time, each served one GET; it returns
// those that succeeded and the first error.
func open(addr string, n, p int, timeout time.Duration) ([]net.Conn, error) {
	deadline := time.Now().Add(timeout)
	var (
		mu       sync.Mutex
		conns    = make([]net.Conn, 0, n)
		firstErr error
	)
	next := make(chan struct{}, n)
	for range n {
		next <- struct{}{}
	}
	close(next)
	var wg sync.WaitGroup
	for range p {
		wg.Go(func() {
			for range next {
				c, err := prime(addr, deadline)
				mu.Lock()
				if err != nil {
					if firstErr == nil {
						firstErr = err
					}
				} else {
					conns = append(conns, c)
				}
				stop := firstErr != nil
				mu.Unlock()
				if stop {
					return
				}
			}
		})
	}
	wg.Wait()
	return conns, firstErr
}

// prime dials addr and completes one keep-alive GET on the connection.
func prime(addr string, deadline time.Time) (net.Conn, error) {
	c, err := net.DialTimeout("tcp", addr, time.Until(deadline))
	if err != nil {
		return nil, fmt.Errorf("addr %q: %w", addr, err)
	}
	c.SetDeadline(deadline)
	if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: bench\r\n\r\n"); err != nil {
		c.Close()
		return nil, fmt.Errorf("addr %q: write: %w", addr, err)
	}
	resp, err := http.ReadResponse(bufio.NewReaderSize(c, 4096), nil)
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("addr %q: response: %w", addr, err)
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK || resp.Close {
		c.Close()
		return nil, fmt.Errorf("addr %q: status %d close %v: %v", addr, resp.StatusCode, resp.Close, err)
	}
	c.SetDeadline(time.Time{})
	return c, nil
}
