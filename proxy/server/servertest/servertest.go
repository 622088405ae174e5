// Package servertest starts a real outrider server in-process for tests and
// benchmarks, with every socket on a kernel-chosen loopback port. It also has
// the small TCP fixtures those tests put behind the proxy.
package servertest

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	_ "github.com/outrider-proxy/outrider/filters/all" // every built-in extension
	"github.com/outrider-proxy/outrider/proxy/server"
	"github.com/outrider-proxy/outrider/xds/bootstrap"
)

// Proxy is a started server; it shuts down when the test ends.
type Proxy struct {
	tb  testing.TB
	Srv *server.Server
}

// Start loads yaml (a whole bootstrap, listener ports 0) and starts it, with
// an immediate 2 s drain and logs discarded.
func Start(tb testing.TB, yaml string) *Proxy {
	tb.Helper()
	return StartOpts(tb, yaml, server.Options{DrainTime: 2 * time.Second, DrainImmediate: true})
}

// StartOpts is Start with the server options given (Bootstrap and, when
// nil, Log are filled in).
func StartOpts(tb testing.TB, yaml string, opts server.Options) *Proxy {
	tb.Helper()
	b, err := bootstrap.LoadBytes("test.yaml", []byte(yaml))
	if err != nil {
		tb.Fatalf("load: %v", err)
	}
	opts.Bootstrap = b
	if opts.Log == nil {
		opts.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	srv, err := server.New(opts)
	if err != nil {
		tb.Fatalf("server.New: %v", err)
	}
	if err := srv.Start(context.Background()); err != nil {
		tb.Fatalf("start: %v", err)
	}
	tb.Cleanup(srv.Shutdown)
	return &Proxy{tb: tb, Srv: srv}
}

// Addr is the bound address of the named listener.
func (p *Proxy) Addr(listener string) string {
	for _, l := range p.Srv.Listeners() {
		if l.Name == listener {
			return l.Addr().String()
		}
	}
	p.tb.Fatalf("no listener %q", listener)
	return ""
}

// URL is "http://" + Addr(listener) + path.
func (p *Proxy) URL(listener, path string) string { return "http://" + p.Addr(listener) + path }

// Stat is the value of the counter or gauge with the full name; it fails the
// test when there is none.
func (p *Proxy) Stat(name string) int64 {
	p.tb.Helper()
	v, ok := p.lookup(name)
	if !ok {
		p.tb.Fatalf("no stat %q", name)
	}
	return v
}

func (p *Proxy) lookup(name string) (int64, bool) { return p.Srv.Stats().Value(name) }

// WaitStat polls until the stat exists and equals want (stats are updated
// after the response is written; some are created on first use), for at
// most 3 s.
func (p *Proxy) WaitStat(name string, want int64) {
	p.tb.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for {
		got, ok := p.lookup(name)
		if ok && got == want {
			return
		}
		if time.Now().After(deadline) {
			p.tb.Fatalf("stat %s = %d (exists: %v), want %d", name, got, ok, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Admin sends method to the admin path and returns status and body.
func (p *Proxy) Admin(method, path string) (int, string) {
	p.tb.Helper()
	req, _ := http.NewRequest(method, "http://"+p.Srv.AdminAddr().String()+path, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		p.tb.Fatalf("admin %s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// Get sends a GET to url with the header pairs hdr (name, value, ...), reads
// the body to its end and returns the response (its Body closed). A
// transport error fails the test.
func Get(tb testing.TB, url string, hdr ...string) *http.Response {
	tb.Helper()
	req, err := http.NewRequest("GET", url, nil)
	if err != nil {
		tb.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		tb.Fatalf("GET %s: %v", url, err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp
}

// ServeTCP accepts on 127.0.0.1:0 until the test ends, running handle on
// its own goroutine for each connection (which it closes afterwards), and
// returns the port.
func ServeTCP(tb testing.TB, handle func(net.Conn)) int {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				handle(c)
			}()
		}
	}()
	return ln.Addr().(*net.TCPAddr).Port
}

// DeadPort is a loopback port with nothing listening on it, for a listener
// the test configures later (xDS listeners name their port in advance). It
// is picked below the kernel's ephemeral range (ip_local_port_range), which
// port-0 binds and outgoing connections of every other process draw from,
// so none of them can take it between this call and the proxy's bind; a
// bind proves it free. It falls back to a kernel-picked port.
func DeadPort(tb testing.TB) int {
	lo := 32768
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if n, err := strconv.Atoi(f[0]); err == nil {
				lo = n
			}
		}
	}
	if lo > 11000 {
		for range 100 {
			port := 10000 + rand.IntN(lo-11000)
			if ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port)); err == nil {
				ln.Close()
				return port
			}
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	return port
}
