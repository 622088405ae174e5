package upstream

import (
	"bufio"
	"context"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	"golang.org/x/net/http2"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/outrider-proxy/outrider/proxy/headers"
	"github.com/outrider-proxy/outrider/telemetry/stats"
)

// parseCluster decodes a Cluster from proto JSON.
func parseCluster(t testing.TB, js string) *clusterv3.Cluster {
	t.Helper()
	c := &clusterv3.Cluster{}
	if err := protojson.Unmarshal([]byte(js), c); err != nil {
		t.Fatalf("bad test cluster JSON: %v\n%s", err, js)
	}
	return c
}

func newTestManager(t testing.TB) (*Manager, *stats.Store) {
	t.Helper()
	st := stats.NewStore()
	m := NewManager(st.Root())
	t.Cleanup(m.Close)
	return m, st
}

func mustAdd(t testing.TB, m *Manager, js string) *Cluster {
	t.Helper()
	cfg := parseCluster(t, js)
	if err := m.AddOrUpdate(cfg); err != nil {
		t.Fatalf("AddOrUpdate: %v", err)
	}
	return m.Get(cfg.GetName())
}

// waitFor polls cond every 5ms for up to 5s.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second) // generous: CI runs the race detector on two cores
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func hostStrings(hs []*Host) []string {
	out := make([]string, len(hs))
	for i, h := range hs {
		out[i] = h.String()
	}
	return out
}

// lineServer answers every line it reads with "ok\n". It counts accepted
// connections; with closeAfter > 0 it closes a connection after that many
// answers.
type lineServer struct {
	ln         net.Listener
	accepts    atomic.Int64
	closeAfter int
	closed     chan struct{} // receives after each server-side close
	wg         sync.WaitGroup
	mu         sync.Mutex
	conns      []net.Conn
}

func newLineServer(t testing.TB, closeAfter int) *lineServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &lineServer{ln: ln, closeAfter: closeAfter, closed: make(chan struct{}, 100)}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.accepts.Add(1)
			s.mu.Lock()
			s.conns = append(s.conns, c)
			s.mu.Unlock()
			s.wg.Add(1)
			go s.serve(c)
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		s.mu.Lock()
		for _, c := range s.conns {
			c.Close()
		}
		s.mu.Unlock()
		s.wg.Wait()
	})
	return s
}

func (s *lineServer) serve(c net.Conn) {
	defer s.wg.Done()
	r := bufio.NewReader(c)
	for n := 1; ; n++ {
		if _, err := r.ReadString('\n'); err != nil {
			c.Close()
			return
		}
		if _, err := c.Write([]byte("ok\n")); err != nil {
			c.Close()
			return
		}
		if s.closeAfter > 0 && n >= s.closeAfter {
			c.Close()
			s.closed <- struct{}{}
			return
		}
	}
}

func (s *lineServer) addrPort() netip.AddrPort {
	return s.ln.Addr().(*net.TCPAddr).AddrPort()
}

// roundTrip sends one line on conn and reads the answer.
func roundTrip(t testing.TB, conn net.Conn) {
	t.Helper()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := conn.Write([]byte("hi\n")); err != nil {
		t.Fatalf("write: %v", err)
	}
	var buf [3]byte
	n := 0
	for n < 3 {
		m, err := conn.Read(buf[n:])
		if err != nil {
			t.Fatalf("read: %v", err)
		}
		n += m
	}
	if string(buf[:]) != "ok\n" {
		t.Fatalf("got %q", buf[:])
	}
}

// fakeResolver answers from a table keyed by host then network ("ip4",
// "ip6"); "ip" returns both. err, when set, fails every lookup.
type fakeResolver struct {
	mu    sync.Mutex
	addrs map[string][]netip.Addr
	err   error
	calls atomic.Int64
}

func (f *fakeResolver) set(host string, addrs ...string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.addrs == nil {
		f.addrs = map[string][]netip.Addr{}
	}
	f.addrs[host] = nil
	for _, a := range addrs {
		f.addrs[host] = append(f.addrs[host], netip.MustParseAddr(a))
	}
}

func (f *fakeResolver) setErr(err error) {
	f.mu.Lock()
	f.err = err
	f.mu.Unlock()
}

func (f *fakeResolver) LookupNetIP(_ context.Context, network, host string) ([]netip.Addr, error) {
	f.calls.Add(1)
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return nil, f.err
	}
	var out []netip.Addr
	for _, a := range f.addrs[host] {
		if network == "ip" || (network == "ip4") == a.Is4() {
			out = append(out, a)
		}
	}
	if len(out) == 0 {
		return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
	}
	return out, nil
}

func netip4(last byte) netip.AddrPort {
	return netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 9, 9, last}), 80)
}

// startH2C serves h2c (prior knowledge) on 127.0.0.1:0 until the test ends,
// answering every request 204; it returns the address and the count of
// accepted connections.
func startH2C(t *testing.T) (string, *atomic.Int64) {
	return serveH2C(t, func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(204) })
}

// serveH2C serves h2c with x/net's server and handler h on 127.0.0.1:0
// until the test ends; it returns the address and the count of accepted
// connections.
func serveH2C(t *testing.T, h http.HandlerFunc) (string, *atomic.Int64) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	accepts := new(atomic.Int64)
	srv := &http2.Server{}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepts.Add(1)
			go srv.ServeConn(c, &http2.ServeConnOpts{Handler: h})
		}
	}()
	return ln.Addr().String(), accepts
}

// getRequest is a GET / for authority x over h2c.
func getRequest() *headers.Map {
	req := new(headers.Map)
	for _, f := range [][2]string{{":method", "GET"}, {":scheme", "http"}, {":authority", "x"}, {":path", "/"}} {
		req.Set(f[0], f[1])
	}
	return req
}

// h2Get sends a GET through p, reads the response and ends the stream; it
// returns the response status.
func h2Get(t *testing.T, p *H2Pool) int {
	t.Helper()
	ctx := context.Background()
	s, err := p.OpenStream(ctx, getRequest(), true)
	if err != nil {
		t.Fatal(err)
	}
	h, err := s.ReadHeaders(time.Now().Add(5 * time.Second))
	if err != nil {
		t.Fatal(err)
	}
	status := h.StatusCode()
	for range 1000 {
		if _, err := s.ReadData(time.Now().Add(5 * time.Second)); err != nil {
			break
		}
	}
	p.DoneStream(ctx, s)
	return status
}
