package http1

import (
	"errors"
	"io"
	"os"
	"strings"
	"testing"

	"github.com/outrider-proxy/outrider/proxy/headers"
)

func TestDecodeRequest(t *testing.T) {
	tests := []struct {
		name, req string
		lim       Limits
		want      Message
		fields    string
		body      string
		trailers  string
	}{
		{
			name:   "simple get",
			req:    "GET /a?b=c HTTP/1.1\r\nHost: Example.com\r\nUser-Agent: x\r\nACCEPT:  */*  \r\n\r\n",
			want:   Message{Major: 1, Minor: 1, ContentLength: -1, KeepAlive: true, NoBody: true},
			fields: ":method: GET\n:path: /a?b=c\n:authority: Example.com\nuser-agent: x\naccept: */*\n",
		},
		{
			name:   "content length body",
			req:    "POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello",
			want:   Message{Major: 1, Minor: 1, ContentLength: 5, KeepAlive: true},
			fields: ":method: POST\n:path: /p\n:authority: h\ncontent-length: 5\n",
			body:   "hello",
		},
		{
			name:   "content length zero",
			req:    "POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n",
			want:   Message{Major: 1, Minor: 1, ContentLength: 0, KeepAlive: true, NoBody: true},
			fields: ":method: POST\n:path: /p\n:authority: h\ncontent-length: 0\n",
		},
		{
			name:     "chunked with extensions and trailers",
			req:      "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: Chunked\r\n\r\n5;ext=1\r\nhello\r\nA;x\r\n0123456789\r\n0\r\nX-Sum: abc\r\nX-Other: d \r\n\r\n",
			want:     Message{Major: 1, Minor: 1, ContentLength: -1, Chunked: true, KeepAlive: true},
			fields:   ":method: POST\n:path: /\n:authority: h\ntransfer-encoding: Chunked\n",
			body:     "hello0123456789",
			trailers: "x-sum: abc\nx-other: d\n",
		},
		{
			name:   "connection close",
			req:    "GET / HTTP/1.1\r\nHost: h\r\nConnection: foo, Close\r\n\r\n",
			want:   Message{Major: 1, Minor: 1, ContentLength: -1, NoBody: true},
			fields: ":method: GET\n:path: /\n:authority: h\nconnection: foo, Close\n",
		},
		{
			name:   "http10 default close",
			req:    "GET / HTTP/1.0\r\n\r\n",
			lim:    Limits{AcceptHTTP10: true},
			want:   Message{Major: 1, Minor: 0, ContentLength: -1, NoBody: true},
			fields: ":method: GET\n:path: /\n",
		},
		{
			name:   "http10 keep alive",
			req:    "GET / HTTP/1.0\r\nConnection: keep-alive\r\nHost: h\r\n\r\n",
			lim:    Limits{AcceptHTTP10: true},
			want:   Message{Major: 1, Minor: 0, ContentLength: -1, NoBody: true, KeepAlive: true},
			fields: ":method: GET\n:path: /\n:authority: h\nconnection: keep-alive\n",
		},
		{
			name:   "expect 100",
			req:    "PUT / HTTP/1.1\r\nHost: h\r\nExpect: 100-Continue\r\nContent-Length: 1\r\n\r\nx",
			want:   Message{Major: 1, Minor: 1, ContentLength: 1, KeepAlive: true, Expect100: true},
			fields: ":method: PUT\n:path: /\n:authority: h\nexpect: 100-Continue\ncontent-length: 1\n",
			body:   "x",
		},
		{
			name:   "absolute form",
			req:    "GET HTTP://proxy.example:8080/x?y HTTP/1.1\r\nHost: ignored\r\n\r\n",
			want:   Message{Major: 1, Minor: 1, ContentLength: -1, KeepAlive: true, NoBody: true},
			fields: ":method: GET\n:scheme: http\n:path: /x?y\n:authority: proxy.example:8080\n",
		},
		{
			name:   "absolute form no path",
			req:    "GET https://a.b HTTP/1.1\r\n\r\n",
			want:   Message{Major: 1, Minor: 1, ContentLength: -1, KeepAlive: true, NoBody: true},
			fields: ":method: GET\n:scheme: https\n:path: /\n:authority: a.b\n",
		},
		{
			name:   "options star",
			req:    "OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n",
			want:   Message{Major: 1, Minor: 1, ContentLength: -1, KeepAlive: true, NoBody: true},
			fields: ":method: OPTIONS\n:path: *\n:authority: h\n",
		},
		{
			name:   "connect tunnel",
			req:    "CONNECT a.b:443 HTTP/1.1\r\nHost: a.b:443\r\nContent-Length: 0\r\n\r\nTLS bytes",
			want:   Message{Major: 1, Minor: 1, ContentLength: -1, KeepAlive: true, Tunnel: true, Connect: true},
			fields: ":method: CONNECT\n:authority: a.b:443\n",
			body:   "TLS bytes",
		},
		{
			name:   "websocket upgrade",
			req:    "GET /ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\nframes",
			want:   Message{Major: 1, Minor: 1, ContentLength: -1, KeepAlive: true, Upgrade: true, Tunnel: true},
			fields: ":method: GET\n:path: /ws\n:authority: h\nconnection: Upgrade\nupgrade: websocket\n",
			body:   "frames",
		},
		{
			name:   "h2c upgrade removed",
			req:    "GET / HTTP/1.1\r\nHost: h\r\nConnection: Upgrade, HTTP2-Settings, keep-alive\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n",
			want:   Message{Major: 1, Minor: 1, ContentLength: -1, KeepAlive: true, NoBody: true, H2CUpgrade: true},
			fields: ":method: GET\n:path: /\n:authority: h\nconnection: keep-alive\n",
		},
		{
			name:   "h2c upgrade only token",
			req:    "GET / HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n",
			want:   Message{Major: 1, Minor: 1, ContentLength: -1, KeepAlive: true, NoBody: true, H2CUpgrade: true},
			fields: ":method: GET\n:path: /\n:authority: h\n",
		},
		{
			name:   "custom method",
			req:    "FROB / HTTP/1.1\r\nHost: h\r\n\r\n",
			lim:    Limits{AllowCustomMethods: true},
			want:   Message{Major: 1, Minor: 1, ContentLength: -1, KeepAlive: true, NoBody: true},
			fields: ":method: FROB\n:path: /\n:authority: h\n",
		},
		{
			name:   "empty value and obs-text",
			req:    "GET / HTTP/1.1\r\nHost: h\r\nX-Empty:\r\nX-Latin: caf\xe9\r\n\r\n",
			want:   Message{Major: 1, Minor: 1, ContentLength: -1, KeepAlive: true, NoBody: true},
			fields: ":method: GET\n:path: /\n:authority: h\nx-empty: \nx-latin: caf\xe9\n",
		},
	}
	for _, tt := range tests {
		for _, slow := range []bool{false, true} {
			t.Run(tt.name, func(t *testing.T) {
				var d *Decoder
				if slow {
					d = NewDecoder(oneByteReader{strings.NewReader(tt.req)}, tt.lim)
				} else {
					d = NewDecoder(strings.NewReader(tt.req), tt.lim)
				}
				defer d.Release()
				p, err := readAll(d, "")
				if err != nil {
					t.Fatal(err)
				}
				if p.msg != tt.want {
					t.Errorf("message\n got %+v\nwant %+v", p.msg, tt.want)
				}
				if p.fields != tt.fields {
					t.Errorf("fields\n got %q\nwant %q", p.fields, tt.fields)
				}
				if p.body != tt.body || p.trailers != tt.trailers {
					t.Errorf("body %q trailers %q, want %q %q", p.body, p.trailers, tt.body, tt.trailers)
				}
			})
		}
	}
}

func TestPipelined(t *testing.T) {
	raw := "GET /1 HTTP/1.1\r\nHost: h\r\n\r\n" +
		"POST /2 HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc" +
		"POST /3 HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nde\r\n0\r\n\r\n" +
		"GET /4 HTTP/1.1\r\nHost: h\r\n\r\n"
	for _, slow := range []bool{false, true} {
		var d *Decoder
		if slow {
			d = NewDecoder(oneByteReader{strings.NewReader(raw)}, Limits{})
		} else {
			d = NewDecoder(strings.NewReader(raw), Limits{})
		}
		var paths, bodies []string
		for range 10 {
			p, err := readAll(d, "")
			if err != nil {
				if err.Error() != "EOF" {
					t.Fatal(err)
				}
				break
			}
			paths = append(paths, strings.Split(p.fields, "\n")[1])
			bodies = append(bodies, p.body)
		}
		if got := strings.Join(paths, ","); got != ":path: /1,:path: /2,:path: /3,:path: /4" {
			t.Errorf("slow=%v paths %s", slow, got)
		}
		if got := strings.Join(bodies, ","); got != ",abc,de," {
			t.Errorf("slow=%v bodies %q", slow, got)
		}
		if !slow && d.Buffered() != 0 {
			t.Errorf("buffered %d after all", d.Buffered())
		}
		d.Release()
	}
}

func TestBufferedAfterMessage(t *testing.T) {
	raw := "GET /1 HTTP/1.1\r\nHost: h\r\n\r\nGET /2 HTTP/1.1\r\n"
	d := NewDecoder(strings.NewReader(raw), Limits{})
	defer d.Release()
	if _, err := readAll(d, ""); err != nil {
		t.Fatal(err)
	}
	if got, want := d.Buffered(), len("GET /2 HTTP/1.1\r\n"); got != want {
		t.Fatalf("Buffered %d, want %d", got, want)
	}
	if _, err := readAll(d, ""); err == nil || err.Error() != "unexpected EOF" {
		t.Fatalf("truncated request: %v", err)
	}
}

func TestUnreadBodyRejected(t *testing.T) {
	d := NewDecoder(strings.NewReader("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabcGET / HTTP/1.1\r\nHost: h\r\n\r\n"), Limits{})
	defer d.Release()
	var h headersMap
	if _, err := d.ReadRequestHeaders(&h); err != nil {
		t.Fatal(err)
	}
	if _, err := d.ReadRequestHeaders(&h); err != errBodyNotConsumed {
		t.Fatalf("got %v", err)
	}
}

func TestBigHeadersAndBody(t *testing.T) {
	// Headers nearly fill the biggest buffer, then a large body must be read
	// without overwriting them (the decoder moves to another slab).
	val := strings.Repeat("v", 50<<10)
	body := strings.Repeat("0123456789abcdef", 20<<10)
	raw := "POST / HTTP/1.1\r\nHost: h\r\nX-Big: " + val + "\r\nContent-Length: " + itoa(len(body)) + "\r\n\r\n" + body
	for _, slow := range []bool{false, true} {
		var d *Decoder
		if slow {
			d = NewDecoder(oneByteReader{strings.NewReader(raw)}, Limits{})
		} else {
			d = NewDecoder(strings.NewReader(raw), Limits{})
		}
		p, err := readAll(d, "")
		if err != nil {
			t.Fatal(err)
		}
		if p.body != body || !strings.Contains(p.fields, val) {
			t.Fatalf("slow=%v body len %d", slow, len(p.body))
		}
		d.Release()
	}
}

func TestChunkedBigBody(t *testing.T) {
	var raw strings.Builder
	raw.WriteString("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n")
	var want strings.Builder
	for i := 1; i < 200; i++ {
		chunk := strings.Repeat(string(rune('a'+i%26)), i*37)
		raw.WriteString(strings.ToUpper(hex(len(chunk))) + "\r\n" + chunk + "\r\n")
		want.WriteString(chunk)
	}
	raw.WriteString("0\r\n\r\n")
	d := NewDecoder(strings.NewReader(raw.String()), Limits{})
	defer d.Release()
	p, err := readAll(d, "")
	if err != nil {
		t.Fatal(err)
	}
	if p.body != want.String() {
		t.Fatalf("body mismatch: %d vs %d bytes", len(p.body), want.Len())
	}
}

func TestDecodeResponse(t *testing.T) {
	tests := []struct {
		name, resp, method string
		want               Message
		fields, body       string
	}{
		{"content length", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi", "GET",
			Message{Major: 1, Minor: 1, ContentLength: 2, KeepAlive: true, Status: 200}, ":status: 200\ncontent-length: 2\n", "hi"},
		{"close delimited", "HTTP/1.1 200 OK\r\nX: y\r\n\r\nuntil close", "GET",
			Message{Major: 1, Minor: 1, ContentLength: -1, CloseDelimited: true, Status: 200}, ":status: 200\nx: y\n", "until close"},
		{"http10 close delimited", "HTTP/1.0 200 OK\r\n\r\nold", "GET",
			Message{Major: 1, Minor: 0, ContentLength: -1, CloseDelimited: true, Status: 200}, ":status: 200\n", "old"},
		{"head ignores length", "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n", "HEAD",
			Message{Major: 1, Minor: 1, ContentLength: 10, KeepAlive: true, NoBody: true, Status: 200}, ":status: 200\ncontent-length: 10\n", ""},
		{"head chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", "HEAD",
			Message{Major: 1, Minor: 1, ContentLength: -1, Chunked: true, KeepAlive: true, NoBody: true, Status: 200}, ":status: 200\ntransfer-encoding: chunked\n", ""},
		{"204", "HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n", "GET",
			Message{Major: 1, Minor: 1, ContentLength: -1, KeepAlive: true, NoBody: true, Status: 204}, ":status: 204\n", ""},
		{"304", "HTTP/1.1 304 Not Modified\r\nContent-Length: 99\r\n\r\n", "GET",
			Message{Major: 1, Minor: 1, ContentLength: 99, KeepAlive: true, NoBody: true, Status: 304}, ":status: 304\ncontent-length: 99\n", ""},
		{"no reason", "HTTP/1.1 404\r\nContent-Length: 0\r\n\r\n", "GET",
			Message{Major: 1, Minor: 1, ContentLength: 0, KeepAlive: true, NoBody: true, Status: 404}, ":status: 404\ncontent-length: 0\n", ""},
		{"chunked trailers", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nGrpc-Status: 0\r\n\r\n", "POST",
			Message{Major: 1, Minor: 1, ContentLength: -1, Chunked: true, KeepAlive: true, Status: 200}, ":status: 200\ntransfer-encoding: chunked\n", "abc"},
		{"connect established", "HTTP/1.1 200 Connection Established\r\n\r\nraw", "CONNECT",
			Message{Major: 1, Minor: 1, ContentLength: -1, KeepAlive: true, Tunnel: true, Status: 200}, ":status: 200\n", "raw"},
		{"switching protocols", "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\nws", "GET",
			Message{Major: 1, Minor: 1, ContentLength: -1, KeepAlive: true, Upgrade: true, Tunnel: true, Status: 101}, ":status: 101\nupgrade: websocket\nconnection: upgrade\n", "ws"},
	}
	for _, tt := range tests {
		for _, slow := range []bool{false, true} {
			t.Run(tt.name, func(t *testing.T) {
				var d *Decoder
				if slow {
					d = NewDecoder(oneByteReader{strings.NewReader(tt.resp)}, Limits{})
				} else {
					d = NewDecoder(strings.NewReader(tt.resp), Limits{})
				}
				defer d.Release()
				p, err := readAll(d, tt.method)
				if err != nil {
					t.Fatal(err)
				}
				if p.msg != tt.want || p.fields != tt.fields || p.body != tt.body {
					t.Errorf("got %+v %q %q\nwant %+v %q %q", p.msg, p.fields, p.body, tt.want, tt.fields, tt.body)
				}
			})
		}
	}
}

func TestInterimResponses(t *testing.T) {
	raw := "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx"
	d := NewDecoder(oneByteReader{strings.NewReader(raw)}, Limits{})
	defer d.Release()
	var statuses []int
	for range 5 {
		p, err := readAll(d, "GET")
		if err != nil {
			t.Fatal(err)
		}
		statuses = append(statuses, p.msg.Status)
		if p.msg.Status >= 200 {
			if p.body != "x" {
				t.Fatalf("body %q", p.body)
			}
			break
		}
		if !p.msg.NoBody {
			t.Fatalf("1xx with body: %+v", p.msg)
		}
	}
	if len(statuses) != 3 || statuses[0] != 100 || statuses[1] != 103 || statuses[2] != 200 {
		t.Fatalf("statuses %v", statuses)
	}
}

func TestTruncatedBodies(t *testing.T) {
	for _, raw := range []string{
		"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\nabc",
		"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab",
		"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nabcde\r\n",
		"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX: y\r\n",
	} {
		if _, err := decodeString(raw, Limits{}); err == nil || err.Error() != "unexpected EOF" {
			t.Errorf("%q: got %v, want unexpected EOF", raw, err)
		}
	}
}

// deadlineReader returns a deadline error once after its first n bytes, then
// the rest: a read timeout must not end the message.
type deadlineReader struct {
	data  []byte
	n     int
	fired bool
}

func (r *deadlineReader) Read(p []byte) (int, error) {
	if !r.fired && r.n == 0 {
		r.fired = true
		return 0, os.ErrDeadlineExceeded
	}
	if len(r.data) == 0 {
		return 0, io.EOF
	}
	k := len(p)
	if !r.fired && k > r.n {
		k = r.n
	}
	k = min(k, len(r.data))
	copy(p, r.data[:k])
	r.data = r.data[k:]
	if !r.fired {
		r.n -= k
	}
	return k, nil
}

func TestDeadlineResumesHeaders(t *testing.T) {
	r := &deadlineReader{data: []byte("GET /x HTTP/1.1\r\nHost: a\r\n\r\n"), n: 10}
	d := NewDecoder(r, Limits{})
	defer d.Release()
	var h headers.Map
	if err := d.WaitData(); err != nil {
		t.Fatalf("WaitData: %v", err)
	}
	if _, err := d.ReadRequestHeaders(&h); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("first read: %v, want a deadline error", err)
	}
	if _, err := d.ReadRequestHeaders(&h); err != nil {
		t.Fatalf("resumed read: %v", err)
	}
	if got := h.GetString(":path"); got != "/x" {
		t.Fatalf(":path = %q", got)
	}
}
