package server_test

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/outrider-proxy/outrider/proxy/server"
	"github.com/outrider-proxy/outrider/proxy/server/servertest"
)

// dialFront opens a raw connection to the proxy's front listener.
func dialFront(t *testing.T, p *servertest.Proxy) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.Dial("tcp", p.Addr("front"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(5 * time.Second))
	return c, bufio.NewReader(c)
}

func TestConnectionManagerTimeouts(t *testing.T) {
	up := startUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/stall":
			time.Sleep(600 * time.Millisecond)
		case "/stall-body":
			w.Write([]byte("first"))
			w.(http.Flusher).Flush()
			time.Sleep(600 * time.Millisecond)
		}
		io.Copy(io.Discard, r.Body)
	})
	routes := `- match: {prefix: "/stall-body"}
  route: {cluster: up, idle_timeout: 0.2s}
- match: {prefix: "/"}
  route: {cluster: up}`
	p := servertest.Start(t, httpBootstrap(up.port(), routes, `common_http_protocol_options: {idle_timeout: 0.3s}
request_headers_timeout: 0.2s
request_timeout: 0.4s
stream_idle_timeout: 0.25s`))

	t.Run("idle_timeout closes an idle connection", func(t *testing.T) {
		_, br := dialFront(t, p)
		start := time.Now()
		if _, err := br.ReadByte(); err == nil {
			t.Fatal("idle connection got data instead of closing")
		}
		if time.Since(start) > 3*time.Second {
			t.Fatal("idle connection not closed")
		}
		p.WaitStat("http.ingress.downstream_cx_idle_timeout", 1)
	})
	t.Run("request_headers_timeout answers 408", func(t *testing.T) {
		c, br := dialFront(t, p)
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: a\r\n") // never finished
		resp, err := http.ReadResponse(br, nil)
		if err != nil || resp.StatusCode != 408 {
			t.Fatalf("got %v %v, want 408", resp, err)
		}
		p.WaitStat("http.ingress.downstream_rq_header_timeout", 1)
	})
	t.Run("request_timeout answers 408 for a slow body", func(t *testing.T) {
		c, br := dialFront(t, p)
		io.WriteString(c, "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nab")
		go func() { // keep the stream busy so only request_timeout can fire
			for i := 0; i < 4; i++ {
				time.Sleep(150 * time.Millisecond)
				if _, err := io.WriteString(c, "c"); err != nil {
					return
				}
			}
		}()
		resp, err := http.ReadResponse(br, nil)
		if err != nil || resp.StatusCode != 408 {
			t.Fatalf("got %v %v, want 408", resp, err)
		}
		p.WaitStat("http.ingress.downstream_rq_timeout", 1)
	})
	t.Run("stream_idle_timeout waiting for the upstream answers 408", func(t *testing.T) {
		resp, err := http.Get(p.URL("front", "/stall"))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 408 {
			t.Fatalf("status %d, want 408", resp.StatusCode)
		}
	})
	t.Run("route idle_timeout resets a stalled response", func(t *testing.T) {
		resp, err := http.Get(p.URL("front", "/stall-body"))
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || err == nil {
			t.Fatalf("status %d body %q err %v: want 200 and a cut-short body", resp.StatusCode, b, err)
		}
	})
	p.WaitStat("http.ingress.downstream_rq_idle_timeout", 2)
}

func TestMaxRequestHeadersKB(t *testing.T) {
	up := startUpstream(t, func(w http.ResponseWriter, r *http.Request) {})
	p := servertest.Start(t, httpBootstrap(up.port(), routeToUp, "max_request_headers_kb: 1"))
	resp, _ := rawRequest(t, p.Addr("front"), "GET / HTTP/1.1\r\nHost: a\r\nX-Big: "+strings.Repeat("b", 1500)+"\r\n\r\n")
	if resp.StatusCode != 431 {
		t.Fatalf("status %d, want 431", resp.StatusCode)
	}
	resp, _ = rawRequest(t, p.Addr("front"), "GET / HTTP/1.1\r\nHost: a\r\nX-Small: "+strings.Repeat("b", 500)+"\r\n\r\n")
	if resp.StatusCode != 200 {
		t.Fatalf("status %d for headers under the limit, want 200", resp.StatusCode)
	}
}

// h2c upgrade requests are served as HTTP/1.1; the upgrade never reaches the
// upstream.
func TestH2CUpgradeNotPassedThrough(t *testing.T) {
	seen := make(chan http.Header, 1)
	up := startUpstream(t, func(w http.ResponseWriter, r *http.Request) { seen <- r.Header.Clone() })
	p := servertest.Start(t, httpBootstrap(up.port(), routeToUp, ""))
	resp, _ := rawRequest(t, p.Addr("front"), "GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n")
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	h := <-seen
	for _, name := range []string{"Upgrade", "Http2-Settings"} {
		if h.Get(name) != "" {
			t.Errorf("upstream saw %s: %q", name, h.Get(name))
		}
	}
}

// With the gradual strategy, keep-alive connections end over the drain time
// rather than all at once: by a "Connection: close" response, or by being
// closed while idle between requests.
func TestGradualDrain(t *testing.T) {
	up := startUpstream(t, func(w http.ResponseWriter, r *http.Request) {})
	p := servertest.StartOpts(t, httpBootstrap(up.port(), routeToUp, ""), server.Options{DrainTime: time.Second})
	c, br := dialFront(t, p)
	// send reports whether the connection is over.
	send := func() bool {
		if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: a\r\n\r\n"); err != nil {
			return true
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			return true
		}
		io.Copy(io.Discard, resp.Body)
		return resp.Close
	}
	if send() {
		t.Fatal("connection ended before the drain")
	}
	p.Admin("POST", "/drain_listeners?graceful")
	start := time.Now()
	if send() { // a millisecond into a one-second drain the chance of closing is about 0.1%
		t.Fatal("gradual drain ended the connection at once")
	}
	for !send() {
		if time.Since(start) > 3*time.Second {
			t.Fatal("keep-alive connection outlived the drain time")
		}
		time.Sleep(20 * time.Millisecond)
	}
}
