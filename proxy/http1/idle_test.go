package http1

import (
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/outrider-proxy/outrider/proxy/headers"
)

// tcpPair returns both ends of a loopback TCP connection, closed at the end
// of the test, with a 5 s deadline on each.
func tcpPair(t *testing.T) (client, server *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(); s.Close() })
	for _, x := range []net.Conn{c, s} {
		_ = x.SetDeadline(time.Now().Add(5 * time.Second))
	}
	return c.(*net.TCPConn), s.(*net.TCPConn)
}

// spyConn is a RawConner over a TCP connection whose raw reads record
// whether the decoder still held a buffer when it started waiting.
type spyConn struct {
	*net.TCPConn
	d       **Decoder
	waits   int
	holding int
}

func (s *spyConn) RawConn() syscall.RawConn {
	rc, err := s.TCPConn.SyscallConn()
	if err != nil {
		return nil
	}
	return spyRaw{rc, s}
}

type spyRaw struct {
	syscall.RawConn
	s *spyConn
}

func (r spyRaw) Read(f func(uintptr) bool) error {
	r.s.waits++
	if (*r.s.d).slab != nil || (*r.s.d).buf != nil {
		r.s.holding++
	}
	return r.RawConn.Read(f)
}

// A decoder waiting for the next request on a socket holds no buffer, and
// the request that arrives then decodes whole, whatever its size.
func TestIdleWaitHoldsNoBuffer(t *testing.T) {
	big := strings.Repeat("v", 6000) // past the first buffer: makeRoom after a raw read
	for _, tc := range []struct {
		name   string
		second string
		paths  []string
	}{
		{"small", "GET /2 HTTP/1.1\r\nHost: h\r\n\r\n", []string{"/2"}},
		{"big headers", "GET /big HTTP/1.1\r\nHost: h\r\nX-Big: " + big + "\r\n\r\n", []string{"/big"}},
		{"pipelined", "GET /a HTTP/1.1\r\nHost: h\r\n\r\nPOST /b HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\nhi", []string{"/a", "/b"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			client, server := tcpPair(t)
			var d *Decoder
			spy := &spyConn{TCPConn: server, d: &d}
			d = NewDecoder(spy, Limits{})
			defer d.Release()
			var h headers.Map
			serve := func(want string) {
				t.Helper()
				if err := d.WaitData(); err != nil {
					t.Fatal(err)
				}
				m, err := d.ReadRequestHeaders(&h)
				if err != nil {
					t.Fatal(err)
				}
				if p, _ := h.Get(headers.Path); string(p) != want {
					t.Fatalf("path %q, want %q", p, want)
				}
				for range 100 {
					if _, err := d.ReadData(); err == io.EOF {
						break
					} else if err != nil {
						t.Fatal(err)
					}
				}
				if want == "/big" {
					if v, _ := h.Get("x-big"); string(v) != big {
						t.Fatalf("x-big: %d bytes, want %d", len(v), len(big))
					}
				}
				_ = m
			}
			if _, err := io.WriteString(client, "GET /1 HTTP/1.1\r\nHost: h\r\n\r\n"); err != nil {
				t.Fatal(err)
			}
			serve("/1")
			if _, err := io.WriteString(client, tc.second); err != nil {
				t.Fatal(err)
			}
			for _, p := range tc.paths {
				serve(p)
			}
			// The first wait went through Read (a wrapper may hand out its
			// socket only later); every later wait with nothing buffered is
			// a raw one.
			if spy.waits == 0 || spy.holding != 0 {
				t.Fatalf("raw waits %d, holding a buffer in %d", spy.waits, spy.holding)
			}
		})
	}
}

// The idle wait straight on a *net.TCPConn: a deadline is reported and the
// decoder stays usable; the peer's close is io.EOF; nothing allocates.
func TestIdleWaitTCPConn(t *testing.T) {
	client, server := tcpPair(t)
	d := NewDecoder(server, Limits{})
	defer d.Release()
	if d.raw == nil {
		t.Fatal("no raw conn taken from a *net.TCPConn")
	}
	var h headers.Map
	req := []byte("GET /x HTTP/1.1\r\nHost: h\r\n\r\n")
	serve := func() error {
		if err := d.WaitData(); err != nil {
			return err
		}
		if _, err := d.ReadRequestHeaders(&h); err != nil {
			return err
		}
		if p, _ := h.Get(headers.Path); string(p) != "/x" {
			return errors.New("bad path " + string(p))
		}
		return nil
	}
	allocs := testing.AllocsPerRun(100, func() {
		if _, err := client.Write(req); err != nil {
			t.Fatal(err)
		}
		if err := serve(); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Errorf("%v allocs per idle wait and request", allocs)
	}
	_ = server.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	if err := d.WaitData(); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("idle deadline: got %v", err)
	}
	_ = server.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := client.Write(req); err != nil {
		t.Fatal(err)
	}
	if err := serve(); err != nil {
		t.Fatalf("after a deadline: %v", err)
	}
	client.Close()
	if err := d.WaitData(); err != io.EOF {
		t.Fatalf("peer closed: got %v, want io.EOF", err)
	}
	if err := d.WaitData(); err != io.EOF {
		t.Fatalf("EOF is not sticky: %v", err)
	}
}

// The encoder holds a pooled buffer only between a message's first write
// and its Flush.
func TestEncoderBuffersOnlyUntilFlush(t *testing.T) {
	var out strings.Builder
	e := NewEncoder(&out)
	defer e.Release()
	var h headers.Map
	h.Set(":status", "200")
	req := Message{Major: 1, Minor: 1, KeepAlive: true}
	for i, step := range []struct {
		name string
		do   func() error
		want bool
	}{
		{"new", func() error { return nil }, false},
		{"headers", func() error { return e.WriteResponseHeaders(&h, false, req, []byte("GET")) }, true},
		{"data", func() error { return e.WriteData([]byte("abc"), false) }, true},
		{"flush", e.Flush, false},
		{"big data", func() error { return e.WriteData(make([]byte, 3000), true) }, true},
		{"flush again", e.Flush, false},
		{"flush empty", e.Flush, false},
	} {
		if err := step.do(); err != nil {
			t.Fatalf("step %d %s: %v", i, step.name, err)
		}
		if got := e.Buffering(); got != step.want {
			t.Fatalf("step %d %s: buffering %v, want %v", i, step.name, got, step.want)
		}
	}
	want := "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\nbb8\r\n"
	if got := out.String(); !strings.HasPrefix(got, want) || !strings.HasSuffix(got, "\r\n0\r\n\r\n") || len(got) != len(want)+3000+7 {
		t.Fatalf("wrote %d bytes: %q...", len(got), got[:min(len(got), 80)])
	}
}
