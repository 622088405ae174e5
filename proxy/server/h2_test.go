package server_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/outrider-proxy/outrider/proxy/server/servertest"
)

// h2Client speaks HTTP/2 with prior knowledge (h2c) over plain TCP.
func h2Client(t *testing.T) *http.Client {
	t.Helper()
	tr := &http2.Transport{
		AllowHTTP: true,
		DialTLSContext: func(ctx context.Context, network, addr string, _ *tls.Config) (net.Conn, error) {
			return (&net.Dialer{Timeout: 2 * time.Second}).DialContext(ctx, network, addr)
		},
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

func TestH2GetThroughHTTP1Upstream(t *testing.T) {
	var seen atomic.Pointer[http.Request]
	up := startUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		seen.Store(r)
		w.Header().Set("X-Up", "yes")
		io.WriteString(w, "hello "+r.URL.Path)
	})
	p := servertest.Start(t, httpBootstrap(up.port(), routeToUp, ""))
	req, _ := http.NewRequest("GET", p.URL("front", "/a/b?q=1"), nil)
	req.Header.Add("Cookie", "a=1")
	req.Header.Add("Cookie", "b=2")
	resp, err := h2Client(t).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.ProtoMajor != 2 || resp.StatusCode != 200 || string(body) != "hello /a/b" {
		t.Fatalf("got %s %d %q", resp.Proto, resp.StatusCode, body)
	}
	if resp.Header.Get("x-up") != "yes" || resp.Header.Get("server") != "envoy" || resp.Header.Get("x-envoy-upstream-service-time") == "" {
		t.Fatalf("response headers %v", resp.Header)
	}
	r := seen.Load()
	if r.Proto != "HTTP/1.1" || r.Host != p.Addr("front") || r.URL.RawQuery != "q=1" {
		t.Fatalf("upstream saw %s host %q query %q", r.Proto, r.Host, r.URL.RawQuery)
	}
	if got := r.Header.Values("Cookie"); len(got) != 1 || got[0] != "a=1; b=2" {
		t.Fatalf("upstream cookies %q, want one joined header", got)
	}
	if r.Header.Get("X-Forwarded-Proto") != "http" || r.Header.Get("X-Request-Id") == "" {
		t.Fatalf("connection manager headers missing: %v", r.Header)
	}
	p.WaitStat("http.ingress.downstream_rq_2xx", 1)
	if p.Stat("http.ingress.downstream_cx_http2_total") != 1 || p.Stat("http.ingress.downstream_rq_http2_total") != 1 ||
		p.Stat("http.ingress.downstream_cx_http1_total") != 0 {
		t.Fatal("HTTP/2 stats not counted as HTTP/2")
	}
}

// A body larger than every window and buffer streams through to the
// upstream intact, and the upstream's large answer streams back.
func TestH2LargeStreamedPost(t *testing.T) {
	const size = 3<<20 + 7
	up := startUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		h := sha256.New()
		n, _ := io.Copy(h, r.Body)
		w.Header().Set("X-Len", fmt.Sprint(n))
		w.Header().Set("X-Sum", fmt.Sprintf("%x", h.Sum(nil)))
		w.Write(bytes.Repeat([]byte("z"), size))
	})
	p := servertest.Start(t, httpBootstrap(up.port(), routeToUp, ""))
	data := bytes.Repeat([]byte("0123456789abcdef"), size/16+1)[:size]
	pr, pw := io.Pipe()
	go func() {
		for off := 0; off < len(data); off += 100_000 {
			if _, err := pw.Write(data[off:min(off+100_000, len(data))]); err != nil {
				return
			}
		}
		pw.Close()
	}()
	resp, err := h2Client(t).Post(p.URL("front", "/upload"), "application/octet-stream", pr)
	if err != nil {
		t.Fatal(err)
	}
	n, _ := io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	want := sha256.Sum256(data)
	if resp.StatusCode != 200 || resp.Header.Get("X-Len") != fmt.Sprint(size) || resp.Header.Get("X-Sum") != fmt.Sprintf("%x", want) {
		t.Fatalf("status %d, upstream got %s bytes, sum %s", resp.StatusCode, resp.Header.Get("X-Len"), resp.Header.Get("X-Sum"))
	}
	if n != size {
		t.Fatalf("response body %d bytes, want %d", n, size)
	}
}

// Many concurrent streams share one downstream connection.
func TestH2ConcurrentStreams(t *testing.T) {
	up := startUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(10 * time.Millisecond)
		io.WriteString(w, r.URL.Path)
	})
	p := servertest.Start(t, httpBootstrap(up.port(), routeToUp, ""))
	c := h2Client(t)
	const n = 40
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			path := fmt.Sprintf("/s/%d", i)
			resp, err := c.Get(p.URL("front", path))
			if err != nil {
				errs <- err
				return
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 || string(b) != path {
				errs <- fmt.Errorf("%s: %d %q", path, resp.StatusCode, b)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	p.WaitStat("http.ingress.downstream_rq_http2_total", n)
	if got := p.Stat("http.ingress.downstream_cx_http2_total"); got != 1 {
		t.Fatalf("%d downstream connections, want 1", got)
	}
	p.WaitStat("http.ingress.downstream_rq_active", 0)
}

func TestH2ResponseTrailers(t *testing.T) {
	up := startUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Trailer", "Grpc-Status")
		io.WriteString(w, "body")
		w.(http.Flusher).Flush()
		w.Header().Set("Grpc-Status", "7")
		w.Header().Set(http.TrailerPrefix+"X-Extra", "e")
	})
	p := servertest.Start(t, httpBootstrap(up.port(), routeToUp, ""))
	resp, err := h2Client(t).Get(p.URL("front", "/t"))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "body" || resp.Trailer.Get("Grpc-Status") != "7" || resp.Trailer.Get("X-Extra") != "e" {
		t.Fatalf("body %q trailers %v", b, resp.Trailer)
	}
}

func TestH2LocalReplies(t *testing.T) {
	routes := `- match: {prefix: "/dead"}
  route: {cluster: up}`
	p := servertest.Start(t, httpBootstrap(servertest.DeadPort(t), routes, ""))
	c := h2Client(t)
	for _, tc := range []struct {
		path   string
		status int
		body   string
	}{
		{"/nothing", 404, ""},
		{"/dead", 503, "upstream connect error or disconnect/reset before headers. reset reason: remote connection failure"},
	} {
		resp, err := c.Get(p.URL("front", tc.path))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.ProtoMajor != 2 || resp.StatusCode != tc.status || !strings.HasPrefix(string(b), tc.body) {
			t.Errorf("%s: %s %d %q", tc.path, resp.Proto, resp.StatusCode, b)
		}
		if resp.Header.Get("content-type") == "" != (tc.body == "") {
			t.Errorf("%s: content-type %q", tc.path, resp.Header.Get("content-type"))
		}
	}
	p.WaitStat("http.ingress.downstream_rq_4xx", 1)
	p.WaitStat("http.ingress.downstream_rq_5xx", 1)
}

// codec_type AUTO serves HTTP/1.1 and HTTP/2 on the same listener; HTTP1
// refuses the HTTP/2 preface and HTTP2 refuses HTTP/1.
func TestCodecTypes(t *testing.T) {
	up := startUpstream(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	p := servertest.Start(t, httpBootstrap(up.port(), routeToUp, "codec_type: AUTO"))
	for _, c := range []*http.Client{h2Client(t), {Timeout: 5 * time.Second}, h2Client(t)} {
		resp, err := c.Get(p.URL("front", "/"))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(b) != "ok" {
			t.Fatalf("%s: %q", resp.Proto, b)
		}
	}
	p.WaitStat("http.ingress.downstream_rq_http2_total", 2)
	p.WaitStat("http.ingress.downstream_rq_http1_total", 1)
	if p.Stat("http.ingress.downstream_cx_http2_total") != 2 || p.Stat("http.ingress.downstream_cx_http1_total") != 1 {
		t.Fatal("connections not counted per protocol")
	}

	p1 := servertest.Start(t, httpBootstrap(up.port(), routeToUp, "codec_type: HTTP1"))
	if _, err := h2Client(t).Get(p1.URL("front", "/")); err == nil {
		t.Fatal("codec_type HTTP1 served HTTP/2")
	}
	p2 := servertest.Start(t, httpBootstrap(up.port(), routeToUp, "codec_type: HTTP2"))
	if resp, err := h2Client(t).Get(p2.URL("front", "/")); err != nil || resp.StatusCode != 200 {
		t.Fatalf("codec_type HTTP2: %v", err)
	}
	if _, err := (&http.Client{Timeout: 5 * time.Second}).Get(p2.URL("front", "/")); err == nil {
		t.Fatal("codec_type HTTP2 served HTTP/1.1")
	}
}

// rawH2 is a hand-driven HTTP/2 client connection, for frame-level checks.
type rawH2 struct {
	t    *testing.T
	c    net.Conn
	fr   *http2.Framer
	hbuf bytes.Buffer
	enc  *hpack.Encoder
}

func dialRawH2(t *testing.T, addr string) *rawH2 {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	r := &rawH2{t: t, c: c, fr: http2.NewFramer(c, c)}
	r.enc = hpack.NewEncoder(&r.hbuf)
	if _, err := io.WriteString(c, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	if err := r.fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	return r
}

func (r *rawH2) get(id uint32, authority, path string) {
	r.t.Helper()
	r.hbuf.Reset()
	for _, f := range [][2]string{{":method", "GET"}, {":scheme", "http"}, {":authority", authority}, {":path", path}} {
		_ = r.enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	if err := r.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: r.hbuf.Bytes(), EndStream: true, EndHeaders: true}); err != nil {
		r.t.Fatal(err)
	}
}

// next reads frames until one satisfies match, for at most 200 frames.
func (r *rawH2) next(what string, match func(http2.Frame) bool) http2.Frame {
	r.t.Helper()
	for range 200 {
		f, err := r.fr.ReadFrame()
		if err != nil {
			r.t.Fatalf("waiting for %s: %v", what, err)
		}
		if match(f) {
			return f
		}
	}
	r.t.Fatalf("no %s in 200 frames", what)
	return nil
}

func TestH2MaxConcurrentStreams(t *testing.T) {
	release := make(chan struct{})
	var once sync.Once
	t.Cleanup(func() { once.Do(func() { close(release) }) })
	up := startUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		<-release
		io.WriteString(w, "done")
	})
	p := servertest.Start(t, httpBootstrap(up.port(), routeToUp, "http2_protocol_options: {max_concurrent_streams: 1}"))
	r := dialRawH2(t, p.Addr("front"))
	sf := r.next("SETTINGS", func(f http2.Frame) bool { s, ok := f.(*http2.SettingsFrame); return ok && !s.IsAck() }).(*http2.SettingsFrame)
	if v, ok := sf.Value(http2.SettingMaxConcurrentStreams); !ok || v != 1 {
		t.Fatalf("SETTINGS_MAX_CONCURRENT_STREAMS = %d (sent %v), want 1", v, ok)
	}
	r.get(1, "a", "/one")
	r.get(3, "a", "/two")
	rst := r.next("RST_STREAM", func(f http2.Frame) bool { _, ok := f.(*http2.RSTStreamFrame); return ok }).(*http2.RSTStreamFrame)
	if rst.StreamID != 3 {
		t.Fatalf("stream %d reset (%v), want the second stream", rst.StreamID, rst.ErrCode)
	}
	once.Do(func() { close(release) })
	h := r.next("response HEADERS", func(f http2.Frame) bool { _, ok := f.(*http2.HeadersFrame); return ok })
	if h.Header().StreamID != 1 {
		t.Fatalf("response on stream %d", h.Header().StreamID)
	}
}

// A drain sends GOAWAY at once to HTTP/2 connections, and the stream in
// flight still completes.
func TestH2DrainGoAway(t *testing.T) {
	release := make(chan struct{})
	arrived := make(chan struct{}, 1)
	var once sync.Once
	t.Cleanup(func() { once.Do(func() { close(release) }) })
	up := startUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		arrived <- struct{}{}
		<-release
		io.WriteString(w, "finished")
	})
	p := servertest.Start(t, httpBootstrap(up.port(), routeToUp, ""))
	r := dialRawH2(t, p.Addr("front"))
	r.get(1, "a", "/slow")
	select {
	case <-arrived:
	case <-time.After(5 * time.Second):
		t.Fatal("request never reached the upstream")
	}
	if code, _ := p.Admin("POST", "/drain_listeners?graceful"); code != 200 {
		t.Fatalf("drain_listeners: %d", code)
	}
	ga := r.next("GOAWAY", func(f http2.Frame) bool { _, ok := f.(*http2.GoAwayFrame); return ok }).(*http2.GoAwayFrame)
	if ga.ErrCode != http2.ErrCodeNo || ga.LastStreamID < 1 {
		t.Fatalf("GOAWAY %v last stream %d", ga.ErrCode, ga.LastStreamID)
	}
	once.Do(func() { close(release) })
	r.next("response HEADERS", func(f http2.Frame) bool { h, ok := f.(*http2.HeadersFrame); return ok && h.StreamID == 1 })
	var body []byte
	r.next("end of stream", func(f http2.Frame) bool {
		d, ok := f.(*http2.DataFrame)
		if ok && d.StreamID == 1 {
			body = append(body, d.Data()...)
			return d.StreamEnded()
		}
		return false
	})
	if string(body) != "finished" {
		t.Fatalf("in-flight stream body %q", body)
	}
	p.WaitStat("http.ingress.downstream_cx_drain_close", 1)
}
