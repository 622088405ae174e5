package decompressor_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http2"

	"github.com/outrider-proxy/outrider/filters/http/internal/filtertest"
	"github.com/outrider-proxy/outrider/proxy/server/servertest"
)

// filter is a decompressor filter with library name and typ (type and
// fields) and extra Decompressor fields.
func filter(name, typ, extra string) string {
	return fmt.Sprintf(`
- name: envoy.filters.http.decompressor
  typed_config:
    "@type": type.googleapis.com/envoy.extensions.filters.http.decompressor.v3.Decompressor
    decompressor_library:
      name: %s
      typed_config: {"@type": type.googleapis.com/envoy.extensions.compression.%s}
%s`, name, typ, extra)
}

func config(upPort int) string {
	return filtertest.Config(upPort,
		filtertest.Listener("gz", "", filter("up", "gzip.decompressor.v3.Gzip, window_bits: 15, chunk_size: 8192, max_inflate_ratio: 1000", "")),
		filtertest.Listener("br", "", filter("text", "brotli.decompressor.v3.Brotli, chunk_size: 8192", "")),
		filtertest.Listener("zs", "", filter("text", "zstd.decompressor.v3.Zstd", "")),
		filtertest.Listener("reqonly", "", filter("small", "gzip.decompressor.v3.Gzip", `    response_direction_config:
      common_config: {enabled: {default_value: false, runtime_key: response_decompressor_enabled}}`)),
		filtertest.Listener("noadv", "", filter("g", "gzip.decompressor.v3.Gzip", `    request_direction_config:
      advertise_accept_encoding: false
      common_config: {enabled: {default_value: false, runtime_key: request_decompressor_enabled}}
    response_direction_config:
      common_config: {ignore_no_transform_header: true}`)),
	)
}

// upstream answers /echo with the request body as it arrived and how
// (X-Content-Encoding, X-Content-Length, X-Accept-Encoding), /resp with
// text compressed by ?enc= under Content-Encoding ?ce= (Cache-Control ?cc=),
// /slow with a compressed first piece, then the rest after release, and
// /corrupt with a body that is not gzip.
type upstream struct {
	t       testing.TB
	release chan struct{}
}

func (u *upstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	q := r.URL.Query()
	switch r.URL.Path {
	case "/echo":
		h.Set("X-Content-Encoding", strings.Join(r.Header.Values("Content-Encoding"), "|"))
		h.Set("X-Content-Length", fmt.Sprint(r.ContentLength))
		h.Set("X-Accept-Encoding", strings.Join(r.Header.Values("Accept-Encoding"), "|"))
		b, _ := io.ReadAll(r.Body)
		w.Write(b)
	case "/resp":
		z := compress(u.t, q.Get("enc"), text)
		h.Set("Content-Encoding", q.Get("ce"))
		if cc := q.Get("cc"); cc != "" {
			h.Set("Cache-Control", cc)
		}
		h.Set("Content-Length", fmt.Sprint(len(z)))
		w.Write(z)
	case "/slow":
		h.Set("Content-Encoding", q.Get("enc"))
		w.WriteHeader(200)
		sw := newWriter(q.Get("enc"), w)
		io.WriteString(sw, "first piece of a slow body;")
		sw.Flush()
		w.(http.Flusher).Flush()
		select {
		case <-u.release:
		case <-time.After(5 * time.Second):
		}
		io.WriteString(sw, text)
		sw.Close()
	case "/corrupt":
		h.Set("Content-Encoding", "gzip")
		io.WriteString(w, "\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xffthis is not deflate data at all")
	}
}

func start(t *testing.T) (*servertest.Proxy, *upstream) {
	t.Helper()
	u := &upstream{t: t, release: make(chan struct{})}
	return filtertest.Start(t, u, config), u
}

func TestResponses(t *testing.T) {
	p, _ := start(t)
	for _, tc := range []struct {
		name, listener, query string
		decoded               bool
		encoding              string // content-encoding the client sees
	}{
		{"gzip", "gz", "enc=gzip&ce=gzip", true, ""},
		{"brotli", "br", "enc=br&ce=br", true, ""},
		{"zstd", "zs", "enc=zstd&ce=zstd", true, ""},
		{"coding matched ignoring case and spaces", "gz", "enc=gzip&ce=+GZip+", true, ""},
		{"only the first coding is undone", "gz", "enc=gzip&ce=gzip,+br", true, "br"},
		{"first coding not the library's", "gz", "enc=gzip&ce=br,+gzip", false, "br, gzip"},
		{"other coding", "br", "enc=gzip&ce=gzip", false, "gzip"},
		{"cache-control no-transform", "gz", "enc=gzip&ce=gzip&cc=public,+No-Transform", false, "gzip"},
		{"ignore_no_transform_header", "noadv", "enc=gzip&ce=gzip&cc=no-transform", true, ""},
		{"response direction disabled", "reqonly", "enc=gzip&ce=gzip", false, "gzip"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest("GET", p.URL(tc.listener, "/resp?"+tc.query), nil)
			resp, body := filtertest.Do(t, nil, req)
			if got := resp.Header.Get("Content-Encoding"); got != tc.encoding {
				t.Errorf("content-encoding %q, want %q", got, tc.encoding)
			}
			if tc.decoded {
				if body != text {
					t.Fatalf("body of %d bytes, want the %d decoded", len(body), len(text))
				}
				if resp.ContentLength != -1 {
					t.Errorf("decoded response has content-length %d", resp.ContentLength)
				}
			} else if body == text || resp.ContentLength != int64(len(body)) {
				t.Errorf("body decoded (%d bytes, content-length %d)", len(body), resp.ContentLength)
			}
		})
	}
}

func TestRequests(t *testing.T) {
	p, _ := start(t)
	for _, tc := range []struct {
		name, listener, enc, ce string
		chunked                 bool
		wantCE                  string // what the upstream sees
		decoded                 bool
	}{
		{"gzip", "gz", "gzip", "gzip", false, "", true},
		{"gzip chunked", "gz", "gzip", "gzip", true, "", true},
		{"brotli", "br", "br", "br", false, "", true},
		{"zstd", "zs", "zstd", "zstd", true, "", true},
		{"several codings", "gz", "gzip", "gzip, br", false, "br", true},
		{"other coding", "zs", "gzip", "gzip", false, "gzip", false},
		{"request direction disabled", "noadv", "gzip", "gzip", false, "gzip", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			z := compress(t, tc.enc, text)
			var body io.Reader = strings.NewReader(string(z))
			if tc.chunked {
				body = io.MultiReader(strings.NewReader(string(z[:10])), strings.NewReader(string(z[10:])))
			}
			req, _ := http.NewRequest("POST", p.URL(tc.listener, "/echo"), body)
			req.Header.Set("Content-Encoding", tc.ce)
			resp, got := filtertest.Do(t, nil, req)
			if ce := resp.Header.Get("X-Content-Encoding"); ce != tc.wantCE {
				t.Errorf("upstream saw content-encoding %q, want %q", ce, tc.wantCE)
			}
			if tc.decoded {
				if got != text {
					t.Fatalf("upstream got %d bytes, want the %d decoded", len(got), len(text))
				}
				if cl := resp.Header.Get("X-Content-Length"); cl != "-1" {
					t.Errorf("upstream saw content-length %s", cl)
				}
			} else if got != string(z) {
				t.Errorf("upstream got %d bytes, want the %d sent", len(got), len(z))
			}
		})
	}
}

// With response decompression on, the library's encoding is advertised
// upstream: appended, or moved last without its q-value.
func TestAdvertiseAcceptEncoding(t *testing.T) {
	p, _ := start(t)
	for _, tc := range []struct{ listener, accept, want string }{
		{"gz", "", "gzip"},
		{"gz", "br;q=0.5, deflate", "br;q=0.5,deflate,gzip"},
		{"gz", "gzip;q=0.1, br", "br,gzip"},
		{"zs", "gzip", "gzip,zstd"},
		{"reqonly", "br", "br"}, // response decompression off
		{"noadv", "br", "br"},   // advertise_accept_encoding: false
	} {
		req, _ := http.NewRequest("GET", p.URL(tc.listener, "/echo"), nil)
		if tc.accept != "" {
			req.Header.Set("Accept-Encoding", tc.accept)
		}
		resp, _ := filtertest.Do(t, nil, req)
		if got := resp.Header.Get("X-Accept-Encoding"); got != tc.want {
			t.Errorf("%s, %q: upstream saw accept-encoding %q, want %q", tc.listener, tc.accept, got, tc.want)
		}
	}
}

// A slow compressed response reaches the client decoded piece by piece: the
// first piece arrives before the upstream has sent the rest.
func TestStreaming(t *testing.T) {
	p, u := start(t)
	for _, tc := range []struct{ listener, enc string }{{"gz", "gzip"}, {"br", "br"}, {"zs", "zstd"}} {
		t.Run(tc.enc, func(t *testing.T) {
			req, _ := http.NewRequest("GET", p.URL(tc.listener, "/slow?enc="+tc.enc), nil)
			resp, err := filtertest.Client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if resp.Header.Get("Content-Encoding") != "" {
				t.Fatalf("content-encoding %q", resp.Header.Get("Content-Encoding"))
			}
			filtertest.ReadPiece(t, resp.Body, "first piece of a slow body;")
			u.release <- struct{}{}
			rest, err := io.ReadAll(resp.Body)
			if err != nil || string(rest) != text {
				t.Fatalf("rest: %d bytes, %v", len(rest), err)
			}
		})
	}
}

// A corrupt body is passed on as far as it decoded (nothing here) and the
// library counts the error; the stream itself completes, as Envoy's.
func TestCorrupt(t *testing.T) {
	p, _ := start(t)
	req, _ := http.NewRequest("GET", p.URL("gz", "/corrupt"), nil)
	resp, body := filtertest.Do(t, nil, req)
	if resp.StatusCode != 200 || body != "" || resp.Header.Get("Content-Encoding") != "" {
		t.Fatalf("status %d, content-encoding %q, %d bytes", resp.StatusCode, resp.Header.Get("Content-Encoding"), len(body))
	}
	p.WaitStat("http.gz.decompressor.up.gzip.decompressor_library.zlib_data_error", 1)
	p.WaitStat("http.gz.decompressor.up.gzip.response.decompressed", 1)
}

func TestStats(t *testing.T) {
	p, _ := start(t)
	for _, q := range []string{"enc=gzip&ce=gzip", "enc=gzip&ce=gzip", "enc=br&ce=br"} {
		req, _ := http.NewRequest("GET", p.URL("gz", "/resp?"+q), nil)
		filtertest.Do(t, nil, req)
	}
	z := compress(t, "gzip", text)
	req, _ := http.NewRequest("POST", p.URL("gz", "/echo"), strings.NewReader(string(z)))
	req.Header.Set("Content-Encoding", "gzip")
	filtertest.Do(t, nil, req)
	pre := "http.gz.decompressor.up.gzip."
	for name, want := range map[string]int64{
		pre + "response.decompressed":                2,
		pre + "response.not_decompressed":            2, // the br response and the echo
		pre + "response.total_uncompressed_bytes":    2 * int64(len(text)),
		pre + "response.total_compressed_bytes":      2 * int64(len(z)),
		pre + "request.decompressed":                 1,
		pre + "request.not_decompressed":             0, // GETs have no body: not counted
		pre + "request.total_uncompressed_bytes":     int64(len(text)),
		pre + "request.total_compressed_bytes":       int64(len(z)),
		pre + "decompressor_library.zlib_data_error": 0,
	} {
		p.WaitStat(name, want)
	}
}

// Over HTTP/2 (h2c) a compressed request body in DATA frames is decoded.
func TestHTTP2(t *testing.T) {
	p, _ := start(t)
	h2 := &http.Client{Timeout: 10 * time.Second, Transport: &http2.Transport{AllowHTTP: true, DisableCompression: true,
		DialTLSContext: func(ctx context.Context, network, addr string, _ *tls.Config) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, addr)
		}}}
	req, _ := http.NewRequest("POST", p.URL("zs", "/echo"), strings.NewReader(string(compress(t, "zstd", text))))
	req.Header.Set("Content-Encoding", "zstd")
	resp, err := h2.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.ProtoMajor != 2 || string(b) != text {
		t.Fatalf("HTTP/%d, %d bytes, %v", resp.ProtoMajor, len(b), err)
	}
}

// decoders counts the goroutines decoding a body.
func decoders() int {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	return strings.Count(string(buf), "decompressor.(*Stream).run(")
}

// waitDecoders polls, for at most 3 s, until want decoder goroutines run.
func waitDecoders(t *testing.T, want int) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for decoders() != want {
		if time.Now().After(deadline) {
			t.Fatalf("%d decoder goroutines, want %d", decoders(), want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A body cut short in either direction ends its decoder's goroutine with
// the stream.
func TestCutShort(t *testing.T) {
	p, u := start(t)
	waitDecoders(t, 0)

	// Request: half a gzip body, then the client goes away.
	c, err := net.Dial("tcp", p.Addr("gz"))
	if err != nil {
		t.Fatal(err)
	}
	z := compress(t, "gzip", text)
	fmt.Fprintf(c, "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n",
		len(z)/2, z[:len(z)/2])
	waitDecoders(t, 1)
	c.Close()
	waitDecoders(t, 0)

	// Response: the client leaves after the first piece.
	resp, err := filtertest.Client.Get(p.URL("zs", "/slow?enc=zstd"))
	if err != nil {
		t.Fatal(err)
	}
	first := make([]byte, 5)
	if _, err := io.ReadFull(resp.Body, first); err != nil {
		t.Fatal(err)
	}
	waitDecoders(t, 1)
	resp.Body.Close()
	u.release <- struct{}{}
	waitDecoders(t, 0)
}
