package compressor_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/andybalholm/brotli"
	"github.com/klauspost/compress/zstd"
	"golang.org/x/net/http2"

	"github.com/outrider-proxy/outrider/filters/http/internal/filtertest"
	"github.com/outrider-proxy/outrider/proxy/server/servertest"
)

// routes send /off/ to a route that disables the compressor, /on/ to one
// that overrides its response direction, and the rest to the cluster up.
const routes = `
virtual_hosts:
- name: all
  domains: ["*"]
  routes:
  - match: {prefix: "/off/"}
    route: {cluster: up, prefix_rewrite: "/"}
    typed_per_filter_config:
      envoy.filters.http.compressor:
        "@type": type.googleapis.com/envoy.extensions.filters.http.compressor.v3.CompressorPerRoute
        disabled: true
  - match: {prefix: "/on/"}
    route: {cluster: up, prefix_rewrite: "/"}
    typed_per_filter_config:
      envoy.filters.http.compressor:
        "@type": type.googleapis.com/envoy.extensions.filters.http.compressor.v3.CompressorPerRoute
        overrides: {response_direction_config: {}}
  - match: {prefix: "/"}
    route: {cluster: up}`

// filter is a compressor filter with library lib (name, type, fields) and
// extra Compressor fields.
func filter(lib, typ, libFields, extra string) string {
	return fmt.Sprintf(`          - name: envoy.filters.http.compressor
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.compressor.v3.Compressor
              compressor_library:
                name: %s
                typed_config: {"@type": type.googleapis.com/envoy.extensions.compression.%s, %s}
%s`, lib, typ, libFields, extra)
}

const (
	gzipLib   = "gzip.compressor.v3.Gzip"
	brotliLib = "brotli.compressor.v3.Brotli"
	zstdLib   = "zstd.compressor.v3.Zstd"
)

func config(upPort int) string {
	return filtertest.Config(upPort,
		filtertest.Listener("gz", routes, filter("lib", gzipLib, "memory_level: 3, window_bits: 10, compression_level: BEST_SPEED", `              response_direction_config:
                common_config: {min_content_length: 100}
`)),
		filtertest.Listener("br", routes, filter("text", brotliLib, "quality: 5, window_bits: 12", "")),
		filtertest.Listener("zs", routes, filter("text", zstdLib, "compression_level: 10", "")),
		filtertest.Listener("etag", routes, filter("lib", gzipLib, "", `              response_direction_config:
                disable_on_etag_header: true
                remove_accept_encoding_header: true
                uncompressible_response_codes: [206]
`)),
		filtertest.Listener("weak", routes, filter("lib", gzipLib, "", `              response_direction_config:
                weaken_etag_on_compress: true
                common_config: {content_type: [application/json]}
`)),
		filtertest.Listener("req", routes, filter("lib", gzipLib, "", `              request_direction_config:
                common_config: {enabled: {default_value: true, runtime_key: req_on}}
              response_direction_config:
                common_config: {enabled: {default_value: false, runtime_key: resp_on}}
`)),
		filtertest.Listener("multi", routes, filter("g", gzipLib, "", "")+filter("b", brotliLib, "", "              choose_first: true\n")),
	)
}

// body is compressible text of 4000 bytes.
var body = strings.Repeat("outrider compresses this body piece by piece. ", 87)[:4000]

// upstream answers by path; /slow sends "first" then waits for release
// before the rest. It records the last request's Accept-Encoding.
type upstream struct {
	release    chan struct{}
	lastAccept chan string
}

func (u *upstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	select {
	case u.lastAccept <- r.Header.Get("Accept-Encoding"):
	default:
	}
	h := w.Header()
	h.Set("Content-Type", "text/plain; charset=utf-8")
	b := body
	switch r.URL.Path {
	case "/small":
		b = "short body"
	case "/medium": // above 30, below 100 bytes
		b = body[:60]
	case "/png":
		h.Set("Content-Type", "image/png")
	case "/json":
		h.Set("Content-Type", "application/json")
	case "/none":
		h.Del("Content-Type")
		h["Content-Type"] = nil
	case "/encoded":
		h.Set("Content-Encoding", "identity-but-set")
	case "/strong":
		h.Set("ETag", `"abc"`)
	case "/weak":
		h.Set("ETag", `W/"abc"`)
	case "/strongjson":
		h.Set("Content-Type", "application/json")
		h.Set("ETag", `"abc"`)
	case "/notransform":
		h.Set("Cache-Control", "public, No-Transform")
	case "/vary":
		h.Set("Vary", "Origin")
	case "/echo": // the request body decoded, and how it came
		h.Set("Content-Type", "application/octet-stream")
		h.Set("X-Content-Encoding", r.Header.Get("Content-Encoding"))
		h.Set("X-Content-Length", fmt.Sprint(r.ContentLength))
		var rd io.Reader = r.Body
		if r.Header.Get("Content-Encoding") == "gzip" {
			zr, err := gzip.NewReader(r.Body)
			if err != nil {
				w.WriteHeader(400)
				return
			}
			rd = zr
		}
		got, err := io.ReadAll(rd)
		if err != nil {
			w.WriteHeader(400)
			return
		}
		b = string(got)
	case "/trailers":
		h.Set("Trailer", "X-Checksum")
		w.WriteHeader(200)
		io.WriteString(w, body[:2000])
		w.(http.Flusher).Flush()
		io.WriteString(w, body[2000:])
		h.Set("X-Checksum", "c0ffee")
		return
	case "/partial":
		w.WriteHeader(206)
	case "/slow":
		w.WriteHeader(200)
		io.WriteString(w, "first piece of a slow body;")
		w.(http.Flusher).Flush()
		select {
		case <-u.release:
		case <-time.After(5 * time.Second):
		}
		io.WriteString(w, body)
		return
	}
	if r.URL.Path != "/slow" && r.URL.Path != "/partial" {
		h.Set("Content-Length", fmt.Sprint(len(b)))
	}
	io.WriteString(w, b)
}

func start(t *testing.T) (*servertest.Proxy, *upstream) {
	t.Helper()
	u := &upstream{release: make(chan struct{}), lastAccept: make(chan string, 1)}
	return filtertest.Start(t, u, config), u
}

// get sends a GET to url with Accept-Encoding accept ("": none).
func get(t *testing.T, url, accept string) (*http.Response, []byte) {
	t.Helper()
	var hdr []string
	if accept != "" {
		hdr = []string{"Accept-Encoding", accept}
	}
	resp, b := filtertest.Do(t, nil, filtertest.NewRequest(t, "GET", url, "", hdr...))
	return resp, []byte(b)
}

// decode undoes encoding with Go's own decoders.
func decode(t *testing.T, encoding string, b []byte) string {
	t.Helper()
	var r io.Reader
	switch encoding {
	case "":
		return string(b)
	case "gzip":
		zr, err := gzip.NewReader(bytes.NewReader(b))
		if err != nil {
			t.Fatalf("gzip: %v", err)
		}
		r = zr
	case "br":
		r = brotli.NewReader(bytes.NewReader(b))
	case "zstd":
		zr, err := zstd.NewReader(bytes.NewReader(b))
		if err != nil {
			t.Fatalf("zstd: %v", err)
		}
		defer zr.Close()
		r = zr
	default:
		t.Fatalf("unexpected encoding %q", encoding)
	}
	out, err := io.ReadAll(r)
	if err != nil {
		t.Fatalf("%s decode: %v", encoding, err)
	}
	return string(out)
}

func TestCompressor(t *testing.T) {
	p, _ := start(t)
	tests := []struct {
		name, listener, path, accept string
		status                       int
		encoding                     string // "" for none
		vary, etag                   string
		body                         string
	}{
		{"gzip", "gz", "/", "gzip", 200, "gzip", "Accept-Encoding", "", body},
		{"brotli", "br", "/", "br", 200, "br", "Accept-Encoding", "", body},
		{"zstd", "zs", "/", "zstd", 200, "zstd", "Accept-Encoding", "", body},
		{"q-values choose among several", "gz", "/", "br;q=0.9, gzip;q=0.5", 200, "gzip", "Accept-Encoding", "", body},
		{"q=0 refuses", "gz", "/", "gzip;q=0, identity", 200, "", "Accept-Encoding", "", body},
		{"identity preferred", "gz", "/", "gzip;q=0.2, identity;q=0.8", 200, "", "Accept-Encoding", "", body},
		{"wildcard", "zs", "/", "*", 200, "zstd", "Accept-Encoding", "", body},
		{"wildcard with q=0 on the library", "zs", "/", "zstd;q=0, *", 200, "", "Accept-Encoding", "", body},
		{"unknown encoding only", "gz", "/", "deflate", 200, "", "Accept-Encoding", "", body},
		{"no accept-encoding", "gz", "/", "", 200, "", "Accept-Encoding", "", body},
		{"below min_content_length", "gz", "/medium", "gzip", 200, "", "", "", body[:60]},
		{"default minimum is 30", "br", "/small", "br", 200, "", "", "", "short body"},
		{"default minimum passed", "br", "/medium", "br", 200, "br", "Accept-Encoding", "", body[:60]},
		{"type not in the default list", "gz", "/png", "gzip", 200, "", "", "", body},
		{"no content type is allowed", "gz", "/none", "gzip", 200, "gzip", "Accept-Encoding", "", body},
		{"already encoded", "gz", "/encoded", "gzip", 200, "", "", "", body},
		{"cache-control no-transform", "gz", "/notransform", "gzip", 200, "", "", "", body},
		{"vary appended", "gz", "/vary", "gzip", 200, "gzip", "Origin, Accept-Encoding", "", body},
		{"strong etag removed", "gz", "/strong", "gzip", 200, "gzip", "Accept-Encoding", "", body},
		{"weak etag kept", "gz", "/weak", "gzip", 200, "gzip", "Accept-Encoding", `W/"abc"`, body},
		{"disable_on_etag_header", "etag", "/strong", "gzip", 200, "", "", `"abc"`, body},
		{"disable_on_etag_header, no etag", "etag", "/", "gzip", 200, "gzip", "Accept-Encoding", "", body},
		{"uncompressible status", "etag", "/partial", "gzip", 206, "", "", "", body},
		{"weaken_etag_on_compress", "weak", "/strongjson", "gzip", 200, "gzip", "Accept-Encoding", `W/"abc"`, body},
		{"type list replaces the default", "weak", "/", "gzip", 200, "", "", "", body},
		{"per-route disabled", "gz", "/off/", "gzip", 200, "", "", "", body},
		{"chain: highest q wins", "multi", "/", "gzip;q=1, br;q=0.5", 200, "gzip", "Accept-Encoding", "", body},
		{"chain: tie goes to choose_first", "multi", "/", "gzip, br", 200, "br", "Accept-Encoding", "", body},
		{"chain: wildcard takes the first registered", "multi", "/", "*", 200, "gzip", "Accept-Encoding", "", body},
		{"HEAD is not compressed, but varies", "gz", "/HEAD", "gzip", 200, "", "Accept-Encoding", "", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var resp *http.Response
			var b []byte
			if tc.path == "/HEAD" {
				req, _ := http.NewRequest("HEAD", p.URL(tc.listener, "/"), nil)
				req.Header.Set("Accept-Encoding", tc.accept)
				var err error
				if resp, err = filtertest.Client.Do(req); err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
			} else {
				resp, b = get(t, p.URL(tc.listener, tc.path), tc.accept)
			}
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d", resp.StatusCode, tc.status)
			}
			enc := resp.Header.Get("Content-Encoding")
			if tc.path == "/encoded" {
				enc = ""
			}
			if enc != tc.encoding {
				t.Fatalf("content-encoding %q, want %q", enc, tc.encoding)
			}
			if got := strings.Join(resp.Header.Values("Vary"), ","); got != tc.vary {
				t.Errorf("vary %q, want %q", got, tc.vary)
			}
			if got := resp.Header.Get("ETag"); got != tc.etag {
				t.Errorf("etag %q, want %q", got, tc.etag)
			}
			if tc.encoding != "" && resp.ContentLength != -1 {
				t.Errorf("compressed response has content-length %d", resp.ContentLength)
			}
			if got := decode(t, tc.encoding, b); got != tc.body {
				t.Errorf("body (%d bytes) differs from the upstream's (%d bytes)", len(got), len(tc.body))
			}
			if tc.encoding != "" && len(b) >= len(tc.body) {
				t.Errorf("compressed %d bytes into %d", len(tc.body), len(b))
			}
		})
	}
}

func TestRemoveAcceptEncoding(t *testing.T) {
	p, u := start(t)
	for _, tc := range []struct{ listener, path, want string }{
		{"etag", "/", ""},         // remove_accept_encoding_header
		{"gz", "/", "gzip"},       // kept by default
		{"etag", "/off/", "gzip"}, // compression disabled on the route: kept
	} {
		get(t, p.URL(tc.listener, tc.path), "gzip")
		select {
		case got := <-u.lastAccept:
			if got != tc.want {
				t.Errorf("%s%s: upstream saw accept-encoding %q, want %q", tc.listener, tc.path, got, tc.want)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("upstream saw no request")
		}
	}
}

func TestStats(t *testing.T) {
	p, _ := start(t)
	get(t, p.URL("gz", "/"), "gzip")
	get(t, p.URL("gz", "/"), "gzip")
	get(t, p.URL("gz", "/medium"), "gzip")
	get(t, p.URL("gz", "/"), "")
	get(t, p.URL("gz", "/"), "identity")
	get(t, p.URL("gz", "/"), "deflate")
	get(t, p.URL("gz", "/"), "*")
	get(t, p.URL("etag", "/strong"), "gzip")
	get(t, p.URL("multi", "/"), "gzip, br")

	// response_direction_config set: common stats under "response.".
	gz := "http.gz.compressor.lib.gzip."
	for name, want := range map[string]int64{
		gz + "response.compressed":               3,
		gz + "response.not_compressed":           4,
		gz + "response.content_length_too_small": 1,
		gz + "response.total_uncompressed_bytes": 3 * int64(len(body)),
		gz + "request.not_compressed":            7,
		gz + "request.compressed":                0,
		gz + "no_accept_header":                  1,
		gz + "header_identity":                   1,
		gz + "header_not_valid":                  1,
		gz + "header_wildcard":                   1,
		gz + "header_compressor_used":            2,
		// etag: no response_direction_config common stats, so no "response.".
		"http.etag.compressor.lib.gzip.not_compressed_etag":     1,
		"http.etag.compressor.lib.gzip.response.not_compressed": 1,
		// The brotli filter won the tie; gzip was overshadowed.
		"http.multi.compressor.b.brotli.header_compressor_used":       1,
		"http.multi.compressor.g.gzip.header_compressor_overshadowed": 1,
		"http.multi.compressor.g.gzip.not_compressed":                 1,
		"http.multi.compressor.b.brotli.compressed":                   1,
	} {
		p.WaitStat(name, want)
	}
	if c := p.Stat(gz + "response.total_compressed_bytes"); c <= 0 || c >= 3*int64(len(body)) {
		t.Errorf("total_compressed_bytes %d", c)
	}
}

// A slow upstream body arrives compressed piece by piece: the first piece
// decodes before the upstream has sent the rest.
func TestStreaming(t *testing.T) {
	p, u := start(t)
	for _, enc := range []struct{ listener, encoding string }{{"gz", "gzip"}, {"br", "br"}, {"zs", "zstd"}} {
		t.Run(enc.encoding, func(t *testing.T) {
			req, _ := http.NewRequest("GET", p.URL(enc.listener, "/slow"), nil)
			req.Header.Set("Accept-Encoding", enc.encoding)
			resp, err := filtertest.Client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if resp.Header.Get("Content-Encoding") != enc.encoding {
				t.Fatalf("content-encoding %q", resp.Header.Get("Content-Encoding"))
			}
			var r io.Reader
			switch enc.encoding {
			case "gzip":
				zr, err := gzip.NewReader(resp.Body)
				if err != nil {
					t.Fatal(err)
				}
				r = zr
			case "br":
				r = brotli.NewReader(resp.Body)
			case "zstd":
				zr, err := zstd.NewReader(resp.Body)
				if err != nil {
					t.Fatal(err)
				}
				defer zr.Close()
				r = zr
			}
			filtertest.ReadPiece(t, r, "first piece of a slow body;")
			u.release <- struct{}{}
			rest, err := io.ReadAll(r)
			if err != nil || string(rest) != body {
				t.Fatalf("rest: %d bytes, %v", len(rest), err)
			}
		})
	}
}

// request_direction_config compresses request bodies; a runtime flag
// defaulting to false turns response compression off unless the route's
// overrides turn it on.
func TestRequestDirectionAndOverrides(t *testing.T) {
	p, _ := start(t)
	post := func(ct string, chunked bool) *http.Response {
		t.Helper()
		var rd io.Reader = strings.NewReader(body)
		if chunked {
			rd = io.MultiReader(strings.NewReader(body[:100]), strings.NewReader(body[100:]))
		}
		req, _ := http.NewRequest("POST", p.URL("req", "/echo"), rd)
		req.Header.Set("Content-Type", ct)
		req.Header.Set("Accept-Encoding", "gzip")
		resp, err := filtertest.Client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 || string(b) != body {
			t.Fatalf("status %d, echoed %d bytes", resp.StatusCode, len(b))
		}
		return resp
	}
	for _, tc := range []struct {
		name, ct string
		chunked  bool
		encoding string
		length   string
	}{
		{"content-length body compressed", "text/plain", false, "gzip", "-1"},
		{"chunked body compressed", "text/html; charset=utf-8", true, "gzip", "-1"},
		{"type not allowed", "image/png", false, "", fmt.Sprint(len(body))},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp := post(tc.ct, tc.chunked)
			if got := resp.Header.Get("X-Content-Encoding"); got != tc.encoding {
				t.Errorf("upstream saw content-encoding %q, want %q", got, tc.encoding)
			}
			if got := resp.Header.Get("X-Content-Length"); got != tc.length {
				t.Errorf("upstream saw content-length %s, want %s", got, tc.length)
			}
			if resp.Header.Get("Content-Encoding") != "" {
				t.Error("response compressed with response compression off")
			}
		})
	}
	p.WaitStat("http.req.compressor.lib.gzip.request.compressed", 2)
	p.WaitStat("http.req.compressor.lib.gzip.request.not_compressed", 1)
	p.WaitStat("http.req.compressor.lib.gzip.request.total_uncompressed_bytes", 2*int64(len(body)))

	resp, b := get(t, p.URL("req", "/on/"), "gzip")
	if resp.Header.Get("Content-Encoding") != "gzip" || decode(t, "gzip", b) != body {
		t.Fatalf("overrides.response_direction_config: content-encoding %q", resp.Header.Get("Content-Encoding"))
	}
	if resp, _ := get(t, p.URL("req", "/"), "gzip"); resp.Header.Get("Content-Encoding") != "" {
		t.Fatal("response compressed with enabled default_value false")
	}
}

// Over HTTP/2 (h2c) the compressed body streams the same way and, when the
// upstream sends trailers, ends before them.
func TestHTTP2Trailers(t *testing.T) {
	p, _ := start(t)
	h2 := &http.Client{Timeout: 10 * time.Second, Transport: &http2.Transport{AllowHTTP: true, DisableCompression: true,
		DialTLSContext: func(ctx context.Context, network, addr string, _ *tls.Config) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, addr)
		}}}
	for _, path := range []string{"/trailers", "/"} {
		req, _ := http.NewRequest("GET", p.URL("zs", path), nil)
		req.Header.Set("Accept-Encoding", "zstd")
		resp, err := h2.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.ProtoMajor != 2 {
			t.Fatalf("%s: HTTP/%d, %v", path, resp.ProtoMajor, err)
		}
		if resp.Header.Get("Content-Encoding") != "zstd" || resp.Header.Get("Content-Length") != "" {
			t.Fatalf("%s: content-encoding %q, content-length %q", path, resp.Header.Get("Content-Encoding"), resp.Header.Get("Content-Length"))
		}
		if got := decode(t, "zstd", b); got != body {
			t.Fatalf("%s: decoded %d bytes, want %d", path, len(got), len(body))
		}
		if path == "/trailers" && resp.Trailer.Get("X-Checksum") != "c0ffee" {
			t.Errorf("trailers %v", resp.Trailer)
		}
	}
}

// Accept-Encoding on several lines is one list.
func TestAcceptEncodingLines(t *testing.T) {
	p, _ := start(t)
	req, _ := http.NewRequest("GET", p.URL("gz", "/"), nil)
	req.Header.Add("Accept-Encoding", "identity;q=0.1")
	req.Header.Add("Accept-Encoding", "gzip;q=0.9")
	resp, err := filtertest.Client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.Header.Get("Content-Encoding") != "gzip" || decode(t, "gzip", b) != body {
		t.Fatalf("content-encoding %q", resp.Header.Get("Content-Encoding"))
	}
}
