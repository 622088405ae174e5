package h2

import (
	"io"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/outrider-proxy/outrider/proxy/headers"
)

// startServer serves HTTP/2 with h on 127.0.0.1:0 until the test ends and
// returns the address.
func startServer(tb testing.TB, cfg *ServerConfig, h Handler) string {
	return serveTCP(tb, func(nc net.Conn) { _ = Serve(nc, cfg, h) })
}

// serveTCP runs serve on each connection accepted on 127.0.0.1:0 until the
// test ends, then closes the connections still open and waits for every
// serve to return; it returns the address.
func serveTCP(tb testing.TB, serve func(nc net.Conn)) string {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	conns := map[net.Conn]bool{}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns[nc] = true
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				serve(nc)
				mu.Lock()
				delete(conns, nc)
				mu.Unlock()
			}()
		}
	}()
	tb.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for nc := range conns {
			nc.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().String()
}

// echo answers 200 with the request body, x-method and x-path, copying
// request trailers to response trailers; "x-status" picks the status and
// "x-continue" sends 100 Continue first.
func echo(s *Stream) {
	req := s.Request()
	if req.Has("x-continue") {
		var h headers.Map
		h.Set(":status", "100")
		if s.WriteHeaders(&h, false) != nil {
			return
		}
	}
	var body []byte
	for range 1 << 20 {
		p, err := s.ReadData(time.Now().Add(10 * time.Second))
		if err == io.EOF {
			break
		}
		if err != nil {
			return
		}
		body = append(body, p...)
	}
	var h headers.Map
	status := "200"
	if v, ok := req.Get("x-status"); ok {
		status = string(v)
	}
	h.Set(":status", status)
	m, _ := req.Get(":method")
	h.SetBytes("x-method", m)
	p, _ := req.Get(":path")
	h.SetBytes("x-path", p)
	if c, ok := req.Get("cookie"); ok {
		h.SetBytes("x-cookie", c)
	}
	h.Set("x-body-len", strconv.Itoa(len(body)))
	tr := s.Trailers()
	if len(body) == 0 && tr.Len() == 0 {
		_ = s.WriteHeaders(&h, true)
		return
	}
	if s.WriteHeaders(&h, false) != nil {
		return
	}
	if s.WriteData(body, tr.Len() == 0) != nil || tr.Len() == 0 {
		return
	}
	var t headers.Map
	t.CopyFrom(tr)
	_ = s.WriteTrailers(&t)
}
