package server_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http2"

	"github.com/outrider-proxy/outrider/proxy/server/servertest"
)

// echoTCP echoes bytes upper-cased until the client half-closes, then says
// "BYE" and closes: the raw TCP service behind CONNECT termination.
func echoTCP(t *testing.T) int {
	return servertest.ServeTCP(t, func(c net.Conn) { echoUpper(c, c) })
}

func echoUpper(r io.Reader, w io.Writer) {
	buf := make([]byte, 4096)
	for range 10000 {
		n, err := r.Read(buf)
		if n > 0 {
			w.Write([]byte(strings.ToUpper(string(buf[:n]))))
		}
		if err != nil {
			w.Write([]byte("BYE"))
			return
		}
	}
}

// connectProxyUpstream is an HTTP/1.1 forward proxy stub: it answers a
// CONNECT with 200 (naming the target it was asked for in a header) and
// then echoes like echoTCP.
func connectProxyUpstream(t *testing.T) int {
	return servertest.ServeTCP(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		req, err := http.ReadRequest(br)
		if err != nil || req.Method != "CONNECT" {
			io.WriteString(c, "HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n")
			return
		}
		io.WriteString(c, "HTTP/1.1 200 Connection Established\r\nX-Target: "+req.Host+"\r\n\r\n")
		echoUpper(br, c)
	})
}

const (
	connectTerminateRoute = `- match: {connect_matcher: {}}
  route: {cluster: up, upgrade_configs: [{upgrade_type: CONNECT, connect_config: {}}]}`
	connectForwardRoute = `- match: {connect_matcher: {}}
  route: {cluster: up}`
	connectHCM = `upgrade_configs: [{upgrade_type: CONNECT}]
http2_protocol_options: {allow_connect: true}`
	connectRequest = "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n"
)

// h1Connect sends a CONNECT over HTTP/1.1 and returns the answer and the
// connection (deadline set) with its reader.
func h1Connect(t *testing.T, addr string) (*http.Response, net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c, connectRequest)
	br := bufio.NewReader(c)
	var head strings.Builder
	for range 100 { // the head alone: the tunnel's bytes stay in br
		line, err := br.ReadString('\n')
		head.WriteString(line)
		if err != nil {
			t.Fatalf("CONNECT answer %q: %v", head.String(), err)
		}
		if line == "\r\n" {
			break
		}
	}
	resp, err := http.ReadResponse(bufio.NewReader(strings.NewReader(head.String())), &http.Request{Method: "CONNECT"})
	if err != nil {
		t.Fatalf("CONNECT answer: %v", err)
	}
	if resp.StatusCode == 200 && strings.Contains(strings.ToLower(head.String()), "\r\nconnection:") {
		t.Errorf("the 200 to a CONNECT carries a Connection field: %q", head.String())
	}
	return resp, c, br
}

func TestConnectTerminationHTTP1(t *testing.T) {
	p := servertest.Start(t, httpBootstrap(echoTCP(t), connectTerminateRoute, connectHCM))
	resp, c, br := h1Connect(t, p.Addr("front"))
	if resp.StatusCode != 200 {
		t.Fatalf("status %d, want 200", resp.StatusCode)
	}
	if resp.Header.Get("Content-Length") != "" || len(resp.TransferEncoding) > 0 {
		t.Fatalf("a CONNECT 200 has no body framing: %v %v", resp.Header, resp.TransferEncoding)
	}
	p.WaitStat("http.ingress.downstream_cx_upgrades_active", 1)
	io.WriteString(c, "hello ")
	buf := make([]byte, 6)
	if _, err := io.ReadFull(br, buf); err != nil || string(buf) != "HELLO " {
		t.Fatalf("first echo %q %v", buf, err)
	}
	io.WriteString(c, "tunnel")
	c.(*net.TCPConn).CloseWrite() // the client's half-close reaches the upstream
	got, err := io.ReadAll(br)
	if err != nil || string(got) != "TUNNELBYE" {
		t.Fatalf("through the tunnel: %q %v", got, err)
	}
	p.WaitStat("http.ingress.downstream_cx_upgrades_total", 1)
	p.WaitStat("http.ingress.downstream_cx_upgrades_active", 0)
	p.WaitStat("cluster.up.upstream_cx_total", 1)
}

// TestConnectUpstreamClosesFirst: the upstream's close ends the client's
// direction first (a half-close), while the client can still send.
func TestConnectUpstreamClosesFirst(t *testing.T) {
	got := make(chan string, 1)
	up := servertest.ServeTCP(t, func(c net.Conn) {
		io.WriteString(c, "greeting")
		c.(*net.TCPConn).CloseWrite()
		b, _ := io.ReadAll(c)
		got <- string(b)
	})
	p := servertest.Start(t, httpBootstrap(up, connectTerminateRoute, connectHCM))
	resp, c, br := h1Connect(t, p.Addr("front"))
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	b, err := io.ReadAll(br)
	if err != nil || string(b) != "greeting" {
		t.Fatalf("from upstream: %q %v", b, err)
	}
	io.WriteString(c, "late words")
	c.(*net.TCPConn).CloseWrite()
	select {
	case s := <-got:
		if s != "late words" {
			t.Fatalf("upstream read %q", s)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("upstream never saw the client's half-close")
	}
}

func TestConnectTerminationHTTP2(t *testing.T) {
	p := servertest.Start(t, httpBootstrap(echoTCP(t), connectTerminateRoute, connectHCM))
	tr := &http2.Transport{
		AllowHTTP: true,
		DialTLSContext: func(ctx context.Context, network, addr string, _ *tls.Config) (net.Conn, error) {
			return (&net.Dialer{Timeout: 2 * time.Second}).DialContext(ctx, network, p.Addr("front"))
		},
	}
	defer tr.CloseIdleConnections()
	pr, pw := io.Pipe()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "CONNECT", "http://example.com:443", pr)
	req.URL = &url.URL{Scheme: "http", Host: "example.com:443"}
	req.Host = "example.com:443"
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	io.WriteString(pw, "over h2 ")
	buf := make([]byte, 8)
	if _, err := io.ReadFull(resp.Body, buf); err != nil || string(buf) != "OVER H2 " {
		t.Fatalf("first echo %q %v", buf, err)
	}
	io.WriteString(pw, "stream")
	pw.Close() // END_STREAM: the upstream sees the half-close
	got, err := io.ReadAll(resp.Body)
	if err != nil || string(got) != "STREAMBYE" {
		t.Fatalf("through the tunnel: %q %v", got, err)
	}
	p.WaitStat("http.ingress.downstream_cx_upgrades_total", 1)
	p.WaitStat("http.ingress.downstream_cx_upgrades_active", 0)
}

func TestConnectRefusedAndFailures(t *testing.T) {
	echo := echoTCP(t)
	for _, tc := range []struct {
		name, routes, hcm string
		port              int
		want              int
	}{
		{"no CONNECT upgrade config is 403", connectForwardRoute, "", echo, 403},
		{"a route's CONNECT config alone allows it", connectTerminateRoute, "", echo, 200},
		{"turned off on the route is 403", `- match: {connect_matcher: {}}
  route: {cluster: up, upgrade_configs: [{upgrade_type: CONNECT, enabled: false}]}`, connectHCM, echo, 403},
		{"no connect_matcher route is 404", `- match: {prefix: "/"}
  route: {cluster: up}`, connectHCM, echo, 404},
		{"dead upstream is 503", connectTerminateRoute, connectHCM, servertest.DeadPort(t), 503},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := servertest.Start(t, httpBootstrap(tc.port, tc.routes, tc.hcm))
			resp, _, _ := h1Connect(t, p.Addr("front"))
			if resp.StatusCode != tc.want {
				t.Fatalf("status %d, want %d", resp.StatusCode, tc.want)
			}
		})
	}
}

// TestConnectForwarded: without connect_config the CONNECT goes upstream
// as a CONNECT, and its 2xx starts the tunnel.
func TestConnectForwarded(t *testing.T) {
	p := servertest.Start(t, httpBootstrap(connectProxyUpstream(t), connectForwardRoute, connectHCM))
	resp, c, br := h1Connect(t, p.Addr("front"))
	if resp.StatusCode != 200 || resp.Header.Get("X-Target") != "example.com:443" {
		t.Fatalf("answer %d %v", resp.StatusCode, resp.Header)
	}
	io.WriteString(c, "forwarded")
	c.(*net.TCPConn).CloseWrite()
	got, err := io.ReadAll(br)
	if err != nil || string(got) != "FORWARDEDBYE" {
		t.Fatalf("through the tunnel: %q %v", got, err)
	}
}

// TestConnectHTTP2UpstreamClosesFirst: on HTTP/2 the upstream's close ends
// the stream cleanly (END_STREAM after its bytes).
func TestConnectHTTP2UpstreamClosesFirst(t *testing.T) {
	up := servertest.ServeTCP(t, func(c net.Conn) {
		io.WriteString(c, "greeting")
	})
	p := servertest.Start(t, httpBootstrap(up, connectTerminateRoute, connectHCM))
	tr := h2ConnectTransport(t, p.Addr("front"))
	pr, pw := io.Pipe()
	defer pw.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "CONNECT", "http://example.com:443", pr)
	req.URL = &url.URL{Scheme: "http", Host: "example.com:443"}
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	got, err := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || err != nil || string(got) != "greeting" {
		t.Fatalf("status %d, body %q, err %v", resp.StatusCode, got, err)
	}
	p.WaitStat("http.ingress.downstream_cx_upgrades_active", 0)
}

// TestConnectIdleTimeout: a silent tunnel ends at the route's idle_timeout.
func TestConnectIdleTimeout(t *testing.T) {
	up := servertest.ServeTCP(t, func(c net.Conn) {
		c.SetDeadline(time.Now().Add(10 * time.Second))
		io.ReadAll(c) // silent until the proxy closes
	})
	routes := `- match: {connect_matcher: {}}
  route: {cluster: up, idle_timeout: 0.2s, upgrade_configs: [{upgrade_type: CONNECT, connect_config: {}}]}`
	p := servertest.Start(t, httpBootstrap(up, routes, connectHCM))
	resp, _, br := h1Connect(t, p.Addr("front"))
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	// Without the idle timeout the read fails at the 10 s connection deadline.
	if b, err := io.ReadAll(br); err != nil || len(b) != 0 {
		t.Fatalf("after the idle timeout: %q %v", b, err)
	}
	p.WaitStat("http.ingress.downstream_cx_upgrades_active", 0)
}

// TestConnectRetriesConnectFailure: the route's retry policy covers the TCP
// connect of a terminated CONNECT. Of two round-robin hosts one is dead:
// each CONNECT still gets through, after a retry when it met the dead one.
func TestConnectRetriesConnectFailure(t *testing.T) {
	routes := `- match: {connect_matcher: {}}
  route:
    cluster: up
    upgrade_configs: [{upgrade_type: CONNECT, connect_config: {}}]
    retry_policy: {retry_on: connect-failure, num_retries: 1}`
	yaml := httpBootstrap(echoTCP(t), routes, connectHCM)
	yaml = strings.Replace(yaml, "      - lb_endpoints:\n", fmt.Sprintf(
		"      - lb_endpoints:\n        - endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: %d}}}\n",
		servertest.DeadPort(t)), 1)
	p := servertest.Start(t, yaml)
	for i := range 2 {
		resp, c, br := h1Connect(t, p.Addr("front"))
		if resp.StatusCode != 200 {
			t.Fatalf("CONNECT %d: status %d", i, resp.StatusCode)
		}
		io.WriteString(c, "x")
		c.(*net.TCPConn).CloseWrite()
		if got, err := io.ReadAll(br); err != nil || string(got) != "XBYE" {
			t.Fatalf("CONNECT %d: %q %v", i, got, err)
		}
	}
	// Round robin meets the dead host first once or twice; each time, a retry.
	retries, fails := p.Stat("cluster.up.upstream_rq_retry"), p.Stat("cluster.up.upstream_cx_connect_fail")
	if retries < 1 || retries != fails {
		t.Fatalf("upstream_rq_retry %d, upstream_cx_connect_fail %d: want equal, at least 1", retries, fails)
	}
}

// TestConnectHTTP2ClientReset: a client that resets its CONNECT stream ends
// the upstream connection too, though the upstream is silent.
func TestConnectHTTP2ClientReset(t *testing.T) {
	closed := make(chan error, 1)
	up := servertest.ServeTCP(t, func(c net.Conn) {
		c.SetDeadline(time.Now().Add(10 * time.Second))
		_, err := io.ReadAll(c)
		closed <- err
	})
	p := servertest.Start(t, httpBootstrap(up, connectTerminateRoute, connectHCM))
	tr := h2ConnectTransport(t, p.Addr("front"))
	pr, pw := io.Pipe()
	defer pw.Close()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "CONNECT", "http://example.com:443", pr)
	req.URL = &url.URL{Scheme: "http", Host: "example.com:443"}
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	p.WaitStat("http.ingress.downstream_cx_upgrades_active", 1)
	cancel()
	resp.Body.Close() // RST_STREAM
	select {
	case err := <-closed:
		if err != nil {
			t.Fatalf("the upstream connection was not closed but: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the upstream connection outlived the reset stream")
	}
	p.WaitStat("http.ingress.downstream_cx_upgrades_active", 0)
	p.WaitStat("cluster.up.upstream_cx_active", 0)
}

// TestConnectHTTP1ClientReset: a client that resets its connection during a
// CONNECT tunnel ends the upstream connection too, though the upstream is
// silent.
func TestConnectHTTP1ClientReset(t *testing.T) {
	closed := make(chan error, 1)
	up := servertest.ServeTCP(t, func(c net.Conn) {
		c.SetDeadline(time.Now().Add(10 * time.Second))
		_, err := io.ReadAll(c)
		closed <- err
	})
	p := servertest.Start(t, httpBootstrap(up, connectTerminateRoute, connectHCM))
	resp, c, _ := h1Connect(t, p.Addr("front"))
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	p.WaitStat("http.ingress.downstream_cx_upgrades_active", 1)
	c.(*net.TCPConn).SetLinger(0)
	c.Close() // RST
	select {
	case err := <-closed:
		if err != nil {
			t.Fatalf("the upstream connection was not closed but: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the upstream connection outlived the reset client")
	}
	p.WaitStat("http.ingress.downstream_cx_upgrades_active", 0)
	p.WaitStat("cluster.up.upstream_cx_active", 0)
}

// TestConnectOutlivesRequestTimeout: request_timeout stops once the 200 is
// sent; the tunnel lives on.
func TestConnectOutlivesRequestTimeout(t *testing.T) {
	p := servertest.Start(t, httpBootstrap(echoTCP(t), connectTerminateRoute, connectHCM+"\nrequest_timeout: 0.2s"))
	resp, c, br := h1Connect(t, p.Addr("front"))
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	time.Sleep(400 * time.Millisecond) // past request_timeout
	io.WriteString(c, "still here")
	c.(*net.TCPConn).CloseWrite()
	if got, err := io.ReadAll(br); err != nil || string(got) != "STILL HEREBYE" {
		t.Fatalf("after request_timeout: %q %v", got, err)
	}
}

// TestConnectMaxStreamDuration: the route's max_stream_duration ends a
// tunnel however busy or silent it is.
func TestConnectMaxStreamDuration(t *testing.T) {
	up := servertest.ServeTCP(t, func(c net.Conn) {
		c.SetDeadline(time.Now().Add(10 * time.Second))
		io.ReadAll(c) // silent until the proxy closes
	})
	routes := `- match: {connect_matcher: {}}
  route: {cluster: up, max_stream_duration: {max_stream_duration: 0.2s}, upgrade_configs: [{upgrade_type: CONNECT, connect_config: {}}]}`
	p := servertest.Start(t, httpBootstrap(up, routes, connectHCM))
	resp, _, br := h1Connect(t, p.Addr("front"))
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	// Without the limit the read fails at the 10 s connection deadline.
	if b, err := io.ReadAll(br); err != nil || len(b) != 0 {
		t.Fatalf("after max_stream_duration: %q %v", b, err)
	}
	p.WaitStat("cluster.up.upstream_cx_active", 0)
}

// TestConnectAccessLog: the tunnel's bytes count in the access log, both
// ways, with the 200 and the upstream host.
func TestConnectAccessLog(t *testing.T) {
	for _, h2 := range []bool{false, true} {
		t.Run(fmt.Sprintf("h2=%v", h2), func(t *testing.T) {
			logPath := filepath.Join(t.TempDir(), "hcm.log")
			hcm := connectHCM + "\naccess_log:\n" + indent(fileLog(logPath, "%REQ(:METHOD)% %RESPONSE_CODE% %BYTES_RECEIVED% %BYTES_SENT%\n"), 2)
			p := servertest.Start(t, httpBootstrap(echoTCP(t), connectTerminateRoute, hcm))
			if h2 {
				tr := h2ConnectTransport(t, p.Addr("front"))
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				req, _ := http.NewRequestWithContext(ctx, "CONNECT", "http://example.com:443", strings.NewReader("abcd"))
				req.URL = &url.URL{Scheme: "http", Host: "example.com:443"}
				resp, err := tr.RoundTrip(req)
				if err != nil {
					t.Fatal(err)
				}
				if got, err := io.ReadAll(resp.Body); err != nil || string(got) != "ABCDBYE" {
					t.Fatalf("through the tunnel: %q %v", got, err)
				}
				resp.Body.Close()
			} else {
				_, c, br := h1Connect(t, p.Addr("front"))
				io.WriteString(c, "abcd")
				c.(*net.TCPConn).CloseWrite()
				if got, err := io.ReadAll(br); err != nil || string(got) != "ABCDBYE" {
					t.Fatalf("through the tunnel: %q %v", got, err)
				}
			}
			p.WaitStat("http.ingress.downstream_rq_completed", 1)
			p.Srv.Shutdown() // flushes the log
			b, err := os.ReadFile(logPath)
			if err != nil || string(b) != "CONNECT 200 4 7\n" {
				t.Fatalf("access log %q %v", b, err)
			}
		})
	}
}
