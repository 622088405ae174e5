package server_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http2"

	_ "github.com/outrider-proxy/outrider/proxy/hcm/xconnect" // h2TunnelUpstream is x/net's server
	"github.com/outrider-proxy/outrider/proxy/server/servertest"
)

// h2ConnectTransport speaks h2c with prior knowledge to addr, whatever the
// request URL says.
func h2ConnectTransport(t *testing.T, addr string) *http2.Transport {
	tr := &http2.Transport{
		AllowHTTP: true,
		DialTLSContext: func(ctx context.Context, network, _ string, _ *tls.Config) (net.Conn, error) {
			return (&net.Dialer{Timeout: 2 * time.Second}).DialContext(ctx, network, addr)
		},
	}
	t.Cleanup(tr.CloseIdleConnections)
	return tr
}

// extendedConnect opens an RFC 8441 WebSocket stream (:method CONNECT,
// :protocol websocket) and returns the answer and the request body writer.
func extendedConnect(t *testing.T, tr *http2.Transport, path string) (*http.Response, *io.PipeWriter, error) {
	t.Helper()
	pr, pw := io.Pipe()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	req, _ := http.NewRequestWithContext(ctx, "CONNECT", "http://a"+path, pr)
	req.Header.Set(":protocol", "websocket")
	req.Header.Set("Sec-WebSocket-Version", "13")
	resp, err := tr.RoundTrip(req)
	if err != nil {
		pw.Close()
		return nil, nil, err
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp, pw, nil
}

// wsEchoUpstream accepts only an HTTP/1.1 GET with Upgrade: websocket and
// Connection: upgrade (101), then echoes bytes unchanged until the client
// half-closes, then says "BYE".
func wsEchoUpstream(t *testing.T) int {
	return servertest.ServeTCP(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		if req.Method != "GET" || req.URL.Path != "/chat" || !strings.EqualFold(req.Header.Get("Upgrade"), "websocket") ||
			!strings.Contains(strings.ToLower(req.Header.Get("Connection")), "upgrade") {
			io.WriteString(c, "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
			return
		}
		io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: x\r\n\r\n")
		io.Copy(c, br)
		c.Write([]byte("BYE"))
	})
}

func TestWebSocketOverHTTP2(t *testing.T) {
	up := wsEchoUpstream(t)
	const hcm = `upgrade_configs: [{upgrade_type: websocket}]
http2_protocol_options: {allow_connect: true}`
	t.Run("frames both ways", func(t *testing.T) {
		p := servertest.Start(t, httpBootstrap(up, routeToUp, hcm))
		resp, pw, err := extendedConnect(t, h2ConnectTransport(t, p.Addr("front")), "/chat")
		if err != nil {
			t.Fatal(err)
		}
		// The upstream's 101 becomes 200 on HTTP/2 (RFC 8441).
		if resp.StatusCode != 200 || resp.Header.Get("Sec-Websocket-Accept") != "x" {
			t.Fatalf("answer %d %v", resp.StatusCode, resp.Header)
		}
		if resp.Header.Get("Upgrade") != "" || resp.Header.Get("Connection") != "" {
			t.Fatalf("connection-specific fields on HTTP/2: %v", resp.Header)
		}
		// Masked text frames ("hi", then "there") and their echoes.
		for _, frame := range [][]byte{
			{0x81, 0x82, 0, 0, 0, 0, 'h', 'i'},
			{0x81, 0x85, 0, 0, 0, 0, 't', 'h', 'e', 'r', 'e'},
		} {
			pw.Write(frame)
			got := make([]byte, len(frame))
			if _, err := io.ReadFull(resp.Body, got); err != nil || !bytes.Equal(got, frame) {
				t.Fatalf("echoed frame %q %v, want %q", got, err, frame)
			}
		}
		pw.Close() // END_STREAM: the upstream sees the half-close and says BYE
		rest, err := io.ReadAll(resp.Body)
		if err != nil || string(rest) != "BYE" {
			t.Fatalf("after the client's end: %q %v", rest, err)
		}
		p.WaitStat("http.ingress.downstream_cx_upgrades_total", 1)
		p.WaitStat("http.ingress.downstream_cx_upgrades_active", 0)
	})
	t.Run("without allow_connect", func(t *testing.T) {
		p := servertest.Start(t, httpBootstrap(up, routeToUp, "upgrade_configs: [{upgrade_type: websocket}]"))
		resp, pw, err := extendedConnect(t, h2ConnectTransport(t, p.Addr("front")), "/chat")
		if err != nil {
			t.Fatal(err)
		}
		pw.Close()
		if resp.StatusCode != 400 {
			t.Fatalf("status %d, want 400", resp.StatusCode)
		}
	})
	t.Run("websocket not configured is 403", func(t *testing.T) {
		p := servertest.Start(t, httpBootstrap(up, routeToUp, "http2_protocol_options: {allow_connect: true}"))
		resp, pw, err := extendedConnect(t, h2ConnectTransport(t, p.Addr("front")), "/chat")
		if err != nil {
			t.Fatal(err)
		}
		pw.Close()
		if resp.StatusCode != 403 {
			t.Fatalf("status %d, want 403", resp.StatusCode)
		}
	})
}

// h2TunnelUpstream is an h2c upstream that accepts an extended CONNECT
// (RFC 8441) for websocket at /chat, or a plain CONNECT to example.com:443,
// with 200 and then echoes the stream's bytes until the client ends it,
// then says "BYE". Anything else is 400.
func h2TunnelUpstream(t *testing.T) int {
	u := startH2Upstream(t, func(w http.ResponseWriter, r *http.Request) {
		ext := r.Method == "CONNECT" && r.Header.Get(":protocol") == "websocket" && r.URL.Path == "/chat" &&
			r.Header.Get("Upgrade") == "" && r.Header.Get("Sec-Websocket-Version") == "13"
		plain := r.Method == "CONNECT" && r.Header.Get(":protocol") == "" && r.Host == "example.com:443"
		if !ext && !plain {
			w.WriteHeader(400)
			return
		}
		w.WriteHeader(200)
		rc := http.NewResponseController(w)
		rc.Flush()
		buf := make([]byte, 4096)
		for range 10000 {
			n, err := r.Body.Read(buf)
			if n > 0 {
				w.Write(buf[:n])
				rc.Flush()
			}
			if err != nil {
				w.Write([]byte("BYE"))
				return
			}
		}
	})
	return u.port()
}

// TestWebSocketToHTTP2Upstream: an HTTP/1.1 Upgrade: websocket goes to an
// HTTP/2 cluster as an extended CONNECT, and its 200 comes back as 101.
func TestWebSocketToHTTP2Upstream(t *testing.T) {
	p := servertest.Start(t, h2Cluster(httpBootstrap(h2TunnelUpstream(t), routeToUp, "upgrade_configs: [{upgrade_type: websocket}]"), "{}"))
	c, err := net.Dial("tcp", p.Addr("front"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c, "GET /chat HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: k\r\nSec-WebSocket-Version: 13\r\n\r\n")
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 101 || !strings.EqualFold(resp.Header.Get("Upgrade"), "websocket") || resp.Close {
		t.Fatalf("upgrade answer: %v %v", resp, err)
	}
	frame := []byte{0x81, 0x82, 0, 0, 0, 0, 'h', 'i'}
	c.Write(frame)
	got := make([]byte, len(frame))
	if _, err := io.ReadFull(br, got); err != nil || !bytes.Equal(got, frame) {
		t.Fatalf("echoed frame %q %v", got, err)
	}
	c.(*net.TCPConn).CloseWrite()
	rest, err := io.ReadAll(br)
	if err != nil || string(rest) != "BYE" {
		t.Fatalf("after the half-close: %q %v", rest, err)
	}
	p.WaitStat("cluster.up.upstream_rq_active", 0)
}

// TestConnectForwardedToHTTP2Upstream: without connect_config a CONNECT
// goes to an HTTP/2 cluster as a CONNECT stream.
func TestConnectForwardedToHTTP2Upstream(t *testing.T) {
	p := servertest.Start(t, h2Cluster(httpBootstrap(h2TunnelUpstream(t), connectForwardRoute, connectHCM), "{}"))
	resp, c, br := h1Connect(t, p.Addr("front"))
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	io.WriteString(c, "via h2")
	c.(*net.TCPConn).CloseWrite()
	got, err := io.ReadAll(br)
	if err != nil || string(got) != "via h2BYE" {
		t.Fatalf("through the tunnel: %q %v", got, err)
	}
	p.WaitStat("cluster.up.upstream_rq_active", 0)
}

// TestWebSocketHTTP2BothSides: an extended CONNECT from the client goes to
// an HTTP/2 cluster as an extended CONNECT again.
func TestWebSocketHTTP2BothSides(t *testing.T) {
	const hcm = `upgrade_configs: [{upgrade_type: websocket}]
http2_protocol_options: {allow_connect: true}`
	p := servertest.Start(t, h2Cluster(httpBootstrap(h2TunnelUpstream(t), routeToUp, hcm), "{}"))
	resp, pw, err := extendedConnect(t, h2ConnectTransport(t, p.Addr("front")), "/chat")
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	frame := []byte{0x82, 0x83, 0, 0, 0, 0, 1, 2, 3}
	pw.Write(frame)
	got := make([]byte, len(frame))
	if _, err := io.ReadFull(resp.Body, got); err != nil || !bytes.Equal(got, frame) {
		t.Fatalf("echoed frame %q %v", got, err)
	}
	pw.Close()
	if rest, err := io.ReadAll(resp.Body); err != nil || string(rest) != "BYE" {
		t.Fatalf("after the client's end: %q %v", rest, err)
	}
	p.WaitStat("cluster.up.upstream_rq_active", 0)
	p.WaitStat("http.ingress.downstream_cx_upgrades_active", 0)
}

// TestHTTP2UpstreamTunnelEnds: a tunnel over an HTTP/2 upstream stream ends
// however its end comes: a refused upgrade's answer is proxied as a
// response; a silent tunnel ends at the route's idle_timeout (the upstream
// read times out) and at max_stream_duration (the tunnel is closed from a
// timer while its read waits). Either way the stream is reset and given
// back: the upstream never gets to say "BYE".
func TestHTTP2UpstreamTunnelEnds(t *testing.T) {
	forward := func(opts string) string {
		return "- match: {connect_matcher: {}}\n  route: {cluster: up, " + opts + "}"
	}
	for _, tc := range []struct {
		name, routes, hcm string
		upgrade           bool // a WebSocket upgrade to /nope (refused upstream) instead of a CONNECT
	}{
		{"refused upgrade", routeToUp, "upgrade_configs: [{upgrade_type: websocket}]", true},
		{"idle_timeout", forward("idle_timeout: 0.2s"), connectHCM, false},
		{"max_stream_duration", forward("max_stream_duration: {max_stream_duration: 0.2s}"), connectHCM, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := servertest.Start(t, h2Cluster(httpBootstrap(h2TunnelUpstream(t), tc.routes, tc.hcm), "{}"))
			if tc.upgrade {
				c, err := net.DialTimeout("tcp", p.Addr("front"), 2*time.Second)
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				c.SetDeadline(time.Now().Add(10 * time.Second))
				io.WriteString(c, "GET /nope HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: k\r\nSec-WebSocket-Version: 13\r\n\r\n")
				resp, err := http.ReadResponse(bufio.NewReader(c), nil)
				if err != nil || resp.StatusCode != 400 {
					t.Fatalf("refused upgrade answer: %v %v", resp, err)
				}
				if _, err := io.ReadAll(resp.Body); err != nil {
					t.Fatalf("refused upgrade body: %v", err)
				}
			} else {
				resp, _, br := h1Connect(t, p.Addr("front"))
				if resp.StatusCode != 200 {
					t.Fatalf("status %d", resp.StatusCode)
				}
				start := time.Now()
				// Without the limit the read fails at the 10 s connection deadline.
				if b, err := io.ReadAll(br); err != nil || len(b) != 0 {
					t.Fatalf("after the limit: %q %v", b, err)
				}
				if d := time.Since(start); d > 5*time.Second {
					t.Fatalf("the tunnel ended after %v", d)
				}
			}
			p.WaitStat("cluster.up.upstream_rq_active", 0)
		})
	}
}
