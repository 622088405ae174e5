package http1

import (
	"bytes"
	"strings"
	"testing"

	"github.com/outrider-proxy/outrider/proxy/headers"
)

func mapOf(kv ...string) *headers.Map {
	var h headers.Map
	for i := 0; i < len(kv); i += 2 {
		h.Add(kv[i], kv[i+1])
	}
	return &h
}

func TestEncodeRequest(t *testing.T) {
	tests := []struct {
		name      string
		h         *headers.Map
		endStream bool
		body      []string
		trailers  *headers.Map
		want      string
	}{
		{"get headers only", mapOf(":method", "GET", ":path", "/x", ":authority", "h", "accept", "*/*"), true, nil, nil,
			"GET /x HTTP/1.1\r\nhost: h\r\naccept: */*\r\n\r\n"},
		{"post headers only adds cl 0", mapOf(":method", "POST", ":path", "/", ":authority", "h"), true, nil, nil,
			"POST / HTTP/1.1\r\nhost: h\r\ncontent-length: 0\r\n\r\n"},
		{"chunked with trailers", mapOf(":method", "POST", ":path", "/", ":authority", "h", "transfer-encoding", "gzip"), false,
			[]string{"abc", "defghijklmnopqrstu"}, mapOf("x-t", "1"),
			"POST / HTTP/1.1\r\nhost: h\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n12\r\ndefghijklmnopqrstu\r\n0\r\nx-t: 1\r\n\r\n"},
		{"content length body", mapOf(":method", "PUT", ":path", "/", ":authority", "h", "content-length", "3"), false,
			[]string{"abc"}, nil, "PUT / HTTP/1.1\r\nhost: h\r\ncontent-length: 3\r\n\r\nabc"},
		{"connect", mapOf(":method", "CONNECT", ":authority", "a:443"), false, []string{"raw"}, nil,
			"CONNECT a:443 HTTP/1.1\r\nhost: a:443\r\n\r\nraw"},
		{"upgrade not chunked", mapOf(":method", "GET", ":path", "/ws", ":authority", "h", "connection", "upgrade", "upgrade", "websocket"), false,
			[]string{"frame"}, nil, "GET /ws HTTP/1.1\r\nhost: h\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\nframe"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			e := NewEncoder(&out)
			defer e.Release()
			if err := e.WriteRequestHeaders(tt.h, tt.endStream); err != nil {
				t.Fatal(err)
			}
			for _, b := range tt.body {
				if err := e.WriteData([]byte(b), false); err != nil {
					t.Fatal(err)
				}
			}
			if tt.trailers != nil {
				if err := e.WriteTrailers(tt.trailers); err != nil {
					t.Fatal(err)
				}
			}
			if err := e.Flush(); err != nil {
				t.Fatal(err)
			}
			if out.String() != tt.want {
				t.Fatalf("got\n%q\nwant\n%q", out.String(), tt.want)
			}
		})
	}
}

func TestEncodeResponse(t *testing.T) {
	v11 := Message{Major: 1, Minor: 1, KeepAlive: true}
	tests := []struct {
		name      string
		h         *headers.Map
		endStream bool
		req       Message
		method    string
		body      string
		want      string
		close     bool
	}{
		{"headers only", mapOf(":status", "200"), true, v11, "GET", "", "HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n", false},
		{"chunked", mapOf(":status", "200", "content-type", "text/plain"), false, v11, "GET", "hello",
			"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", false},
		{"content length", mapOf(":status", "404", "content-length", "2"), false, v11, "GET", "no",
			"HTTP/1.1 404 Not Found\r\ncontent-length: 2\r\n\r\nno", false},
		{"head suppresses body", mapOf(":status", "200", "content-length", "5"), false, v11, "HEAD", "hello",
			"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n", false},
		{"head without length", mapOf(":status", "200"), true, v11, "HEAD", "",
			"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n", false},
		{"204", mapOf(":status", "204"), false, v11, "GET", "ignored", "HTTP/1.1 204 No Content\r\n\r\n", false},
		{"304", mapOf(":status", "304", "etag", "x"), false, v11, "GET", "ignored", "HTTP/1.1 304 Not Modified\r\netag: x\r\n\r\n", false},
		{"http10 close delimited", mapOf(":status", "200"), false, Message{Major: 1, Minor: 0}, "GET", "old",
			"HTTP/1.0 200 OK\r\nconnection: close\r\n\r\nold", true},
		{"http10 keep alive", mapOf(":status", "200", "content-length", "1"), false, Message{Major: 1, Minor: 0, KeepAlive: true}, "GET", "x",
			"HTTP/1.0 200 OK\r\ncontent-length: 1\r\nconnection: keep-alive\r\n\r\nx", false},
		{"request asked close", mapOf(":status", "200"), true, Message{Major: 1, Minor: 1}, "GET", "",
			"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n", true},
		{"caller set close", mapOf(":status", "503", "connection", "close"), true, v11, "GET", "",
			"HTTP/1.1 503 Service Unavailable\r\nconnection: close\r\ncontent-length: 0\r\n\r\n", true},
		{"transfer-encoding regenerated", mapOf(":status", "200", "transfer-encoding", "chunked"), false, v11, "GET", "",
			"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n", false},
		{"unknown code", mapOf(":status", "299"), true, v11, "GET", "", "HTTP/1.1 299 Unknown\r\ncontent-length: 0\r\n\r\n", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			e := NewEncoder(&out)
			defer e.Release()
			if err := e.WriteResponseHeaders(tt.h, tt.endStream, tt.req, []byte(tt.method)); err != nil {
				t.Fatal(err)
			}
			if !tt.endStream {
				if err := e.WriteData([]byte(tt.body), true); err != nil {
					t.Fatal(err)
				}
			}
			if err := e.Flush(); err != nil {
				t.Fatal(err)
			}
			if out.String() != tt.want || e.MustClose() != tt.close {
				t.Fatalf("got\n%q close=%v\nwant\n%q close=%v", out.String(), e.MustClose(), tt.want, tt.close)
			}
		})
	}
}

func TestEncodeBigDataWritev(t *testing.T) {
	var out bytes.Buffer
	e := NewEncoder(&out)
	defer e.Release()
	big := bytes.Repeat([]byte("z"), 10000)
	if err := e.WriteResponseHeaders(mapOf(":status", "200"), false, Message{Major: 1, Minor: 1, KeepAlive: true}, []byte("GET")); err != nil {
		t.Fatal(err)
	}
	if err := e.WriteData(big, true); err != nil {
		t.Fatal(err)
	}
	if err := e.Flush(); err != nil {
		t.Fatal(err)
	}
	want := "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2710\r\n" + string(big) + "\r\n0\r\n\r\n"
	if out.String() != want {
		t.Fatalf("got %d bytes, want %d", out.Len(), len(want))
	}
	// p is not retained: changing it after WriteData changes nothing.
	big[0] = 'X'
	if strings.Contains(out.String(), "X") {
		t.Fatal("encoder kept a reference to p")
	}
}

func TestEncodeRejectsInjection(t *testing.T) {
	e := NewEncoder(&bytes.Buffer{})
	defer e.Release()
	if err := e.WriteRequestHeaders(mapOf(":method", "GET", ":path", "/", ":authority", "h", "x", "a\r\nInjected: 1"), true); err == nil {
		t.Fatal("CRLF in value accepted")
	}
	if err := e.WriteRequestHeaders(mapOf(":method", "GET", ":path", "/ HTTP/1.1\r\nX: y", ":authority", "h"), true); err == nil {
		t.Fatal("CRLF in path accepted")
	}
	if err := e.WriteResponseHeaders(mapOf(":status", "20"), true, Message{}, nil); err == nil {
		t.Fatal("bad status accepted")
	}
}

func TestWrite100Continue(t *testing.T) {
	var out bytes.Buffer
	e := NewEncoder(&out)
	defer e.Release()
	if err := e.Write100Continue(); err != nil {
		t.Fatal(err)
	}
	if out.Len() != 0 {
		t.Fatal("written before Flush")
	}
	if err := e.Flush(); err != nil || out.String() != "HTTP/1.1 100 Continue\r\n\r\n" {
		t.Fatalf("%q %v", out.String(), err)
	}
}

func TestStripHopByHop(t *testing.T) {
	tests := []struct {
		name        string
		in          *headers.Map
		keepUpgrade bool
		want        string
	}{
		{"all hop by hop", mapOf(":method", "GET", "connection", "keep-alive, X-Foo", "keep-alive", "timeout=5", "proxy-connection", "x",
			"transfer-encoding", "chunked", "upgrade", "websocket", "te", "gzip", "x-foo", "gone", "x-bar", "kept"), false,
			":method: GET\nx-bar: kept\n"},
		{"te trailers kept", mapOf("te", "trailers, deflate", "a", "b"), false, "a: b\nte: trailers\n"},
		{"keep upgrade", mapOf("connection", "Upgrade", "upgrade", "websocket", "a", "b"), true, "upgrade: websocket\na: b\nconnection: upgrade\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			StripHopByHop(tt.in, tt.keepUpgrade)
			if got := dump(tt.in); got != tt.want {
				t.Fatalf("got %q want %q", got, tt.want)
			}
		})
	}
}
