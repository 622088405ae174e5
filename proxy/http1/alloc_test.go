package http1

import (
	"bytes"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/outrider-proxy/outrider/proxy/headers"
)

const browserGET = "GET /static/app.js?v=123 HTTP/1.1\r\n" +
	"Host: www.example.com\r\n" +
	"User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36\r\n" +
	"Accept: */*\r\n" +
	"Accept-Language: en-US,en;q=0.9\r\n" +
	"Accept-Encoding: gzip, deflate, br\r\n" +
	"Referer: https://www.example.com/\r\n" +
	"Cookie: session=abcdef0123456789; theme=dark\r\n" +
	"Sec-Fetch-Dest: script\r\n" +
	"Sec-Fetch-Mode: no-cors\r\n" +
	"Connection: keep-alive\r\n\r\n"

// loopReader serves the same bytes forever.
type loopReader struct {
	data []byte
	off  int
}

func (l *loopReader) Read(p []byte) (int, error) {
	n := copy(p, l.data[l.off:])
	l.off = (l.off + n) % len(l.data)
	return n, nil
}

func decodeOne(d *Decoder, h *headers.Map) error {
	if _, err := d.ReadRequestHeaders(h); err != nil {
		return err
	}
	if _, err := d.ReadData(); err != io.EOF {
		return err
	}
	return nil
}

func TestDecodeZeroAllocs(t *testing.T) {
	d := NewDecoder(&loopReader{data: []byte(browserGET)}, Limits{})
	defer d.Release()
	var h headers.Map
	if err := decodeOne(d, &h); err != nil {
		t.Fatal(err)
	}
	allocs := testing.AllocsPerRun(200, func() {
		if err := decodeOne(d, &h); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Fatalf("%v allocs per keep-alive GET, want 0", allocs)
	}
	if v, _ := h.Get(headers.Authority); string(v) != "www.example.com" || h.Len() != 12 {
		t.Fatalf("decoded %q", dump(&h))
	}
}

func encodeOne(e *Encoder, h *headers.Map, body []byte) error {
	if err := e.WriteResponseHeaders(h, false, Message{Major: 1, Minor: 1, KeepAlive: true}, []byte("GET")); err != nil {
		return err
	}
	if err := e.WriteData(body, true); err != nil {
		return err
	}
	return e.Flush()
}

func TestEncodeZeroAllocs(t *testing.T) {
	e := NewEncoder(io.Discard)
	defer e.Release()
	h := mapOf(":status", "200", "content-type", "application/javascript", "content-length", "512", "cache-control", "max-age=3600")
	body := bytes.Repeat([]byte("x"), 512)
	allocs := testing.AllocsPerRun(200, func() {
		if err := encodeOne(e, h, body); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Fatalf("%v allocs per response, want 0", allocs)
	}
}

func BenchmarkDecodeRequest(b *testing.B) {
	d := NewDecoder(&loopReader{data: []byte(browserGET)}, Limits{})
	defer d.Release()
	var h headers.Map
	b.ReportAllocs()
	b.SetBytes(int64(len(browserGET)))
	for b.Loop() {
		if err := decodeOne(d, &h); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkEncodeResponse(b *testing.B) {
	e := NewEncoder(io.Discard)
	defer e.Release()
	h := mapOf(":status", "200", "content-type", "application/javascript", "content-length", "512", "cache-control", "max-age=3600")
	body := bytes.Repeat([]byte("x"), 512)
	b.ReportAllocs()
	for b.Loop() {
		if err := encodeOne(e, h, body); err != nil {
			b.Fatal(err)
		}
	}
}

// TestLoopbackSocket serves keep-alive requests over a real socket: the
// client pipelines a chunked POST and a GET, the server decodes and echoes.
func TestLoopbackSocket(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	done := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			done <- err
			return
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		d := NewDecoder(c, Limits{})
		defer d.Release()
		e := NewEncoder(c)
		defer e.Release()
		var h, resp headers.Map
		for range 10 {
			m, err := d.ReadRequestHeaders(&h)
			if err == io.EOF {
				done <- nil
				return
			}
			if err != nil {
				done <- err
				return
			}
			var body []byte
			for range 1 << 16 {
				p, err := d.ReadData()
				if err == io.EOF {
					break
				}
				if err != nil {
					done <- err
					return
				}
				body = append(body, p...)
			}
			path, _ := h.Get(headers.Path)
			resp.Reset()
			resp.Add(":status", "200")
			resp.SetBytes("x-path", path)
			if err := e.WriteResponseHeaders(&resp, false, m, []byte("POST")); err != nil {
				done <- err
				return
			}
			if err := e.WriteData(body, true); err != nil {
				done <- err
				return
			}
			if err := e.Flush(); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	big := strings.Repeat("B", 9000)
	req := "POST /one HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n" + hex(len(big)) + "\r\n" + big + "\r\n0\r\n\r\n" +
		"POST /two HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\nhi"
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatal(err)
	}
	cd := NewDecoder(c, Limits{})
	defer cd.Release()
	for _, want := range []struct{ path, body string }{{"/one", "abc" + big}, {"/two", "hi"}} {
		p, err := readAll(cd, "POST")
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(p.fields, "x-path: "+want.path+"\n") || p.body != want.body || !p.msg.Chunked {
			t.Fatalf("got %+v %q body %d bytes", p.msg, p.fields, len(p.body))
		}
	}
	c.Close()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
