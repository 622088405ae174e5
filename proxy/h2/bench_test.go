package h2

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"net/http"
	"testing"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/outrider-proxy/outrider/proxy/headers"
)

// The benchmark's raw client sends GETs with END_STREAM in batches from
// pre-encoded HPACK blocks and counts the responses' END_STREAM frames,
// allocating nothing per stream, so allocs/op is the server's.

var (
	okHeaders = func() *headers.Map {
		var h headers.Map
		h.Set(":status", "200")
		h.Set("content-length", "2")
		return &h
	}()
	okBody = []byte("ok")
)

// okStream answers every request 200 "ok" (a shared, read-only header map).
func okStream(s *Stream) {
	if s.WriteHeaders(okHeaders, false) == nil {
		_ = s.WriteData(okBody, true)
	}
}

var xnetCL = []string{"2"}

func okXNet(w http.ResponseWriter, _ *http.Request) {
	w.Header()["Content-Length"] = xnetCL
	w.WriteHeader(200)
	_, _ = w.Write(okBody)
}

// rawClient is an HTTP/2 client of pre-encoded frames.
type rawClient struct {
	c     net.Conn
	br    *bufio.Reader
	hdr   [9]byte
	buf   []byte
	out   []byte
	first []byte // the request block, adding its fields to the table
	again []byte // the same request from the table
	next  uint32
}

func newRawClient(tb testing.TB, addr string) *rawClient {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		tb.Fatal(err)
	}
	var blk bytes.Buffer
	enc := hpack.NewEncoder(&blk)
	fields := []hpack.HeaderField{{Name: ":method", Value: "GET"}, {Name: ":scheme", Value: "http"},
		{Name: ":path", Value: "/bench/path"}, {Name: ":authority", Value: "bench.example.com"},
		{Name: "user-agent", Value: "h2-bench"}, {Name: "accept", Value: "*/*"}}
	write := func() []byte {
		blk.Reset()
		for _, f := range fields {
			_ = enc.WriteField(f)
		}
		return append([]byte(nil), blk.Bytes()...)
	}
	rc := &rawClient{c: c, br: bufio.NewReaderSize(c, 64<<10), buf: make([]byte, 1<<16), next: 1}
	rc.first, rc.again = write(), write()
	out := []byte(http2.ClientPreface)
	out = appendFrame(out, frameSettings, 0, 0, nil)
	out = appendWindowUpdate(out, 0, 1<<30)
	if _, err := c.Write(out); err != nil {
		tb.Fatal(err)
	}
	return rc
}

// roundTrips sends n GETs at once and waits for their n responses.
func (rc *rawClient) roundTrips(n int) error {
	rc.out = rc.out[:0]
	for range n {
		blk := rc.again
		if rc.next == 1 {
			blk = rc.first
		}
		rc.out = appendFrame(rc.out, frameHeaders, flagEndHeaders|flagEndStream, rc.next, blk)
		rc.next += 2
	}
	if _, err := rc.c.Write(rc.out); err != nil {
		return err
	}
	for done := 0; done < n; {
		if _, err := io.ReadFull(rc.br, rc.hdr[:]); err != nil {
			return err
		}
		l := int(rc.hdr[0])<<16 | int(rc.hdr[1])<<8 | int(rc.hdr[2])
		p := rc.buf[:l]
		if _, err := io.ReadFull(rc.br, p); err != nil {
			return err
		}
		typ, flags := rc.hdr[3], rc.hdr[4]
		switch {
		case typ == frameSettings && flags&flagAck == 0:
			if _, err := rc.c.Write(appendFrame(rc.out[:0], frameSettings, flagAck, 0, nil)); err != nil {
				return err
			}
		case (typ == frameData || typ == frameHeaders) && flags&flagEndStream != 0:
			done++
		case typ == frameRSTStream:
			return io.ErrUnexpectedEOF
		case typ == frameGoAway:
			return io.EOF
		}
	}
	return nil
}

// BenchmarkServer: one connection, GETs with END_STREAM in batches of 32,
// 200 with a 2-byte body; per stream. "own" is this package, "xnet" x/net's
// http2.Server under the same client.
func BenchmarkServer(b *testing.B) {
	run := func(b *testing.B, addr string) {
		rc := newRawClient(b, addr)
		defer rc.c.Close()
		if err := rc.roundTrips(32); err != nil { // warm up: pools, tables
			b.Fatal(err)
		}
		b.ReportAllocs()
		b.ResetTimer()
		const batch = 32
		for i := 0; i < b.N; i += batch {
			if err := rc.roundTrips(min(batch, b.N-i)); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.Run("own", func(b *testing.B) {
		run(b, startServer(b, nil, HandlerFunc(okStream)))
	})
	b.Run("xnet", func(b *testing.B) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		defer ln.Close()
		srv := &http2.Server{}
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				go srv.ServeConn(c, &http2.ServeConnOpts{Handler: http.HandlerFunc(okXNet)})
			}
		}()
		run(b, ln.Addr().String())
	})
}
