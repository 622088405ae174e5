package grpchttp1bridge

import (
	"testing"

	"github.com/outrider-proxy/outrider/proxy/headers"
	"github.com/outrider-proxy/outrider/proxy/httpfilter"
	"github.com/outrider-proxy/outrider/proxy/streaminfo"
)

// fakeCB is the part of the stream the filter uses; the rest panics.
type fakeCB struct {
	httpfilter.Callbacks
	info         streaminfo.Stream
	dec, enc     []byte
	routeCleared int
}

func (c *fakeCB) Info() *streaminfo.Stream { return &c.info }
func (c *fakeCB) ClearRouteCache()         { c.routeCleared++ }
func (c *fakeCB) DecodingBuffer() *[]byte  { return &c.dec }
func (c *fakeCB) EncodingBuffer() *[]byte  { return &c.enc }

func newFilter(upgrade bool, proto string) (*filter, *fakeCB) {
	cb := &fakeCB{info: streaminfo.Stream{Protocol: proto}}
	return (&config{upgradeProtobuf: upgrade}).New(cb).(*filter), cb
}

func reqHeaders(ct string) *headers.Map {
	h := &headers.Map{}
	h.Set(headers.Method, "POST")
	h.Set(headers.Path, "/s/m")
	h.Set("content-type", ct)
	h.Set("content-length", "2")
	return h
}

// TestDecodeFraming: a protobuf body in one piece is framed through
// Rewritten; in several pieces it is buffered and framed in the buffer.
func TestDecodeFraming(t *testing.T) {
	f, cb := newFilter(true, "HTTP/1.1")
	h := reqHeaders("application/x-protobuf")
	f.DecodeHeaders(h, false)
	if ct := h.GetString("content-type"); ct != "application/grpc" || h.Has("content-length") || cb.routeCleared != 1 {
		t.Fatalf("headers %q %v cleared %d", ct, h.Has("content-length"), cb.routeCleared)
	}
	if st := f.DecodeData([]byte("pb"), true); st != httpfilter.Continue {
		t.Fatalf("status %v", st)
	}
	if p, ok := f.Rewritten(false); !ok || string(p) != "\x00\x00\x00\x00\x02pb" {
		t.Fatalf("rewritten %q %v", p, ok)
	}
	if _, ok := f.Rewritten(false); ok {
		t.Fatal("rewritten twice")
	}

	f.Reset()
	f.DecodeHeaders(reqHeaders("application/x-protobuf"), false)
	if st := f.DecodeData([]byte("ab"), false); st != httpfilter.StopAndBuffer {
		t.Fatalf("status %v", st)
	}
	cb.dec = []byte("abcd") // the manager appends each piece before the call
	if st := f.DecodeData([]byte("cd"), true); st != httpfilter.Continue || string(cb.dec) != "\x00\x00\x00\x00\x04abcd" {
		t.Fatalf("status %v buffer %q", st, cb.dec)
	}
	if _, ok := f.Rewritten(false); ok {
		t.Fatal("rewritten after buffering")
	}
}

func TestNotBridged(t *testing.T) {
	for _, tc := range []struct{ name, proto, ct string }{
		{"http2", "HTTP/2", "application/grpc"},
		{"grpc-web", "HTTP/1.1", "application/grpc-web"},
		{"json", "HTTP/1.1", "application/json"},
	} {
		f, _ := newFilter(false, tc.proto)
		f.DecodeHeaders(reqHeaders(tc.ct), false)
		resp := &headers.Map{}
		resp.SetInt(headers.Status, 200)
		if f.EncodeHeaders(resp, false) != httpfilter.Continue || f.EncodeData([]byte("x"), false) != httpfilter.Continue {
			t.Errorf("%s: held", tc.name)
		}
	}
}

// TestEncode: Envoy's mapping of the trailers onto the held headers.
func TestEncode(t *testing.T) {
	for _, tc := range []struct {
		name       string
		trailers   map[string]string
		wantStatus string
		wantGS     string
	}{
		{"ok", map[string]string{"grpc-status": "0"}, "200", "0"},
		{"error", map[string]string{"grpc-status": "13", "grpc-message": "boom"}, "503", "13"},
		{"not a number", map[string]string{"grpc-status": "abc"}, "503", "abc"},
		{"no status", map[string]string{"x": "y"}, "200", ""},
	} {
		f, cb := newFilter(true, "HTTP/1.1")
		f.DecodeHeaders(reqHeaders("application/x-protobuf"), false)
		resp := &headers.Map{}
		resp.SetInt(headers.Status, 200)
		if f.EncodeHeaders(resp, false) != httpfilter.Stop {
			t.Fatalf("%s: headers not held", tc.name)
		}
		cb.enc = []byte("\x00\x00\x00\x00\x03abc")
		if f.EncodeData(cb.enc, false) != httpfilter.StopAndBuffer || string(cb.enc) != "abc" {
			t.Fatalf("%s: buffer %q", tc.name, cb.enc)
		}
		cb.enc = append(cb.enc, "de"...)
		if f.EncodeData([]byte("de"), false) != httpfilter.StopAndBuffer || string(cb.enc) != "abcde" {
			t.Fatalf("%s: second piece %q", tc.name, cb.enc)
		}
		tr := &headers.Map{}
		for k, v := range tc.trailers {
			tr.Set(k, v)
		}
		if f.EncodeTrailers(tr) != httpfilter.Continue {
			t.Fatalf("%s: trailers held", tc.name)
		}
		if s := resp.GetString(headers.Status); s != tc.wantStatus {
			t.Errorf("%s: status %s, want %s", tc.name, s, tc.wantStatus)
		}
		if gs := resp.GetString("grpc-status"); gs != tc.wantGS {
			t.Errorf("%s: grpc-status %q, want %q", tc.name, gs, tc.wantGS)
		}
		if gm := resp.GetString("grpc-message"); gm != tc.trailers["grpc-message"] {
			t.Errorf("%s: grpc-message %q", tc.name, gm)
		}
		if cl := resp.GetString("content-length"); cl != "5" {
			t.Errorf("%s: content-length %s", tc.name, cl)
		}
	}
}
