package http1

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
)

// FuzzDecodeRequest: decoding never panics, and a request that parses must
// re-encode and re-parse to the same method, path, authority, headers,
// body and trailers.
func FuzzDecodeRequest(f *testing.F) {
	f.Add([]byte("GET / HTTP/1.1\r\nHost: a\r\n\r\n"))
	f.Fuzz(func(t *testing.T, raw []byte) {
		if len(raw) > 1<<16 {
			return
		}
		lim := Limits{AcceptHTTP10: true, AllowCustomMethods: true, MaxHeaderBytes: 8 << 10, MaxHeaders: 20}
		p1, enc, err := reencodeRequest(raw, lim)
		if err != nil {
			var e *Error
			if errors.As(err, &e) && (e.Status < 400 || e.Details == "") {
				t.Fatalf("bad error %+v", e)
			}
			return
		}
		if !strings.Contains(p1.fields, "\n:authority: ") {
			return // HTTP/1.0 without Host: Envoy's HCM answers 400, never forwards it
		}
		p2, _, err := reencodeRequest(enc, lim)
		if err != nil {
			t.Fatalf("re-parse of %q (from %q): %v", enc, raw, err)
		}
		if normalize(p1.fields) != normalize(p2.fields) || p1.body != p2.body || p1.trailers != p2.trailers {
			t.Fatalf("round trip changed the request %q:\n%q %q %q\n%q %q %q", raw, p1.fields, p1.body, p1.trailers, p2.fields, p2.body, p2.trailers)
		}
		// The same bytes read one at a time give the same result.
		d := NewDecoder(oneByteReader{bytes.NewReader(raw)}, lim)
		defer d.Release()
		p3, err := readAll(d, "")
		if err != nil && !errors.Is(err, io.EOF) {
			if _, ok := err.(*Error); ok || p1.msg.Tunnel {
				t.Fatalf("slow read of %q failed: %v", raw, err)
			}
		}
		if err == nil && (p3.fields != p1.fields || p3.body != p1.body) {
			t.Fatalf("slow read differs for %q", raw)
		}
	})
}

// FuzzDecodeResponse: decoding a response never panics or loops.
func FuzzDecodeResponse(f *testing.F) {
	f.Add([]byte("HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx"), "GET")
	f.Fuzz(func(t *testing.T, raw []byte, method string) {
		if len(raw) > 1<<16 {
			return
		}
		if method == "" {
			method = "GET" // readAll treats "" as a request
		}
		d := NewDecoder(bytes.NewReader(raw), Limits{MaxHeaderBytes: 8 << 10, MaxHeaders: 20})
		defer d.Release()
		for range 8 {
			p, err := readAll(d, method)
			if err != nil {
				var e *Error
				if errors.As(err, &e) && e.Status != 502 {
					t.Fatalf("response error with status %d", e.Status)
				}
				return
			}
			if p.msg.Status < 100 {
				t.Fatalf("status %d", p.msg.Status)
			}
		}
	})
}
