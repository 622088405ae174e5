package proxyprotocol_test

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"

	_ "github.com/outrider-proxy/outrider/filters/all"
	"github.com/outrider-proxy/outrider/proxy/server/servertest"
	"github.com/outrider-proxy/outrider/proxy/transport/proxyprotocol"
)

// describe is what an upstream saw in a PROXY header, sent back to the
// client: "local" or "src dst", and the TLVs as type=value.
func describe(h proxyprotocol.Header) string {
	s := fmt.Sprintf("v%d %s %s", h.Version, h.Src, h.Dst)
	if h.Local {
		s = fmt.Sprintf("v%d local", h.Version)
	}
	for _, t := range h.TLVs {
		s += fmt.Sprintf(" %x=%s", t.Type, t.Value)
	}
	return s
}

// ppUpstream is a TCP upstream on 127.0.0.1:0 that reads each
// connection's PROXY header and hands it to serve, with the connection's
// number (from 1) and its reader, positioned after the header.
func ppUpstream(t *testing.T, serve func(c net.Conn, r *bufio.Reader, h proxyprotocol.Header, n int32)) int {
	var conns atomic.Int32
	return servertest.ServeTCP(t, func(c net.Conn) {
		n := conns.Add(1)
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		r := bufio.NewReader(c)
		h, err := proxyprotocol.Parse(r)
		if err != nil {
			t.Errorf("upstream: %v", err)
			return
		}
		serve(c, r, h, n)
	})
}

// httpUpstream parses the PROXY header of each connection, then answers up
// to 100 HTTP/1.1 requests with "<conn#> <header>".
func httpUpstream(t *testing.T) int {
	return ppUpstream(t, func(c net.Conn, r *bufio.Reader, h proxyprotocol.Header, n int32) {
		for range 100 {
			req, err := http.ReadRequest(r)
			if err != nil {
				return
			}
			_, _ = io.Copy(io.Discard, req.Body)
			body := fmt.Sprintf("%d %s", n, describe(h))
			fmt.Fprintf(c, "HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s", len(body), body)
		}
	})
}

func bootstrap(upPort int, listenerFilter, clusterExtra, pp string) string {
	return fmt.Sprintf(`
admin: {address: {socket_address: {address: 127.0.0.1, port_value: 0}}}
static_resources:
  listeners:
  - name: l
    address: {socket_address: {address: 127.0.0.1, port_value: 0}}
    filter_chains:
    - filters:
%s
  clusters:
  - name: up
    connect_timeout: 1s
%s
    load_assignment:
      cluster_name: up
      endpoints:
      - lb_endpoints:
        - endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: %d}}}
          metadata:
            typed_filter_metadata:
              envoy.transport_sockets.proxy_protocol:
                "@type": type.googleapis.com/envoy.config.core.v3.PerHostConfig
                added_tlvs: [{type: 0xEE, value: aG9zdA==}]
    transport_socket:
      name: envoy.transport_sockets.upstream_proxy_protocol
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.transport_sockets.proxy_protocol.v3.ProxyProtocolUpstreamTransport
        config: %s
        transport_socket:
          name: envoy.transport_sockets.raw_buffer
          typed_config: {"@type": type.googleapis.com/envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer}
`, listenerFilter, clusterExtra, upPort, pp)
}

const hcmFilter = `
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: l
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes: [{match: {prefix: "/"}, route: {cluster: up}}]
          http_filters:
          - name: envoy.filters.http.router
            typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}`

const tcpFilter = `
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: t
          cluster: up`

// get sends n requests on one connection to the proxy and returns the
// bodies and the connection's own addresses.
func get(t *testing.T, addr string, n int) (bodies []string, local, remote string) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReader(c)
	for range n {
		fmt.Fprint(c, "GET / HTTP/1.1\r\nhost: x\r\n\r\n")
		resp, err := http.ReadResponse(r, nil)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		bodies = append(bodies, string(b))
	}
	return bodies, c.LocalAddr().String(), c.RemoteAddr().String()
}

// TestHTTP: each downstream connection gets its own upstream connection,
// whose PROXY header carries the client's address and the listener's;
// requests of the same downstream connection share it.
func TestHTTP(t *testing.T) {
	for _, tc := range []struct {
		name, config, want string
	}{
		{"v1", `{version: V1}`, "v1 %s %s"},
		{"v2", `{version: V2, added_tlvs: [{type: 0xEE, value: ZGVmYXVsdA==}, {type: 0xEF, value: Y2Zn}]}`, "v2 %s %s ee=host ef=cfg"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := servertest.Start(t, bootstrap(httpUpstream(t), hcmFilter, "", tc.config))
			seen := map[string]bool{}
			for i := range 2 {
				bodies, local, remote := get(t, p.Addr("l"), 2)
				want := fmt.Sprintf(tc.want, local, remote)
				conn, rest, _ := strings.Cut(bodies[0], " ")
				if rest != want || bodies[1] != bodies[0] {
					t.Fatalf("downstream %d: %q, want both \"<conn> %s\"", i, bodies, want)
				}
				if seen[conn] {
					t.Fatalf("downstream %d reused upstream connection %s of another downstream", i, conn)
				}
				seen[conn] = true
			}
			if got := p.Stat("cluster.up.upstream.proxyprotocol.v2_tlvs_exceed_max_length"); got != 0 {
				t.Errorf("v2_tlvs_exceed_max_length %d", got)
			}
		})
	}
}

// TestTCPProxy: tcp_proxy's upstream connection starts with the header; the
// bytes after it are the client's.
func TestTCPProxy(t *testing.T) {
	for _, tc := range []struct{ name, config, want string }{
		{"v1", `{version: V1}`, "v1 %s %s"},
		{"v2", `{version: V2}`, "v2 %s %s ee=host"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			up := ppUpstream(t, func(c net.Conn, r *bufio.Reader, h proxyprotocol.Header, n int32) {
				line, _ := r.ReadString('\n')
				fmt.Fprintf(c, "%s|%s", describe(h), line)
			})
			p := servertest.Start(t, bootstrap(up, tcpFilter, "", tc.config))
			c, err := net.Dial("tcp", p.Addr("l"))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(10 * time.Second))
			fmt.Fprint(c, "ping\n")
			got, _ := io.ReadAll(c)
			if want := fmt.Sprintf(tc.want, c.LocalAddr(), c.RemoteAddr()) + "|ping\n"; string(got) != want {
				t.Fatalf("got %q, want %q", got, want)
			}
		})
	}
}

// bufConn reads through the reader that parsed the PROXY header.
type bufConn struct {
	net.Conn
	r *bufio.Reader
}

func (c bufConn) Read(p []byte) (int, error) { return c.r.Read(p) }

const h2Options = `    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {http2_protocol_options: {}}`

// h2Upstream parses the PROXY header of each connection, then serves
// HTTP/2 answering "<conn#> <header>".
func h2Upstream(t *testing.T) int {
	return ppUpstream(t, func(c net.Conn, r *bufio.Reader, h proxyprotocol.Header, n int32) {
		(&http2.Server{}).ServeConn(bufConn{c, r}, &http2.ServeConnOpts{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			fmt.Fprintf(w, "%d %s", n, describe(h))
		})})
	})
}

// TestHTTP2Upstream: an HTTP/2 cluster's connections are per downstream
// connection too.
func TestHTTP2Upstream(t *testing.T) {
	up := h2Upstream(t)
	p := servertest.Start(t, bootstrap(up, hcmFilter, h2Options, `{version: V1}`))
	seen := map[string]bool{}
	for i := range 2 {
		bodies, local, remote := get(t, p.Addr("l"), 2)
		want := fmt.Sprintf("v1 %s %s", local, remote)
		conn, rest, _ := strings.Cut(bodies[0], " ")
		if rest != want || bodies[1] != bodies[0] {
			t.Fatalf("downstream %d: %q, want both \"<conn> %s\"", i, bodies, want)
		}
		if seen[conn] {
			t.Fatalf("downstream %d shares upstream connection %s", i, conn)
		}
		seen[conn] = true
	}
}

// TestInnerTLS: the header goes first, in the clear, then the inner TLS
// transport's handshake on the same connection.
func TestInnerTLS(t *testing.T) {
	ca := servertest.NewCA(t, "ca")
	leaf := ca.Issue(t, []string{"up.example"})
	caFile := t.TempDir() + "/ca.pem"
	if err := os.WriteFile(caFile, ca.PEM, 0o600); err != nil {
		t.Fatal(err)
	}
	up := ppUpstream(t, func(c net.Conn, r *bufio.Reader, h proxyprotocol.Header, n int32) {
		tc := tls.Server(bufConn{c, r}, &tls.Config{Certificates: []tls.Certificate{leaf.TLS}})
		tr := bufio.NewReader(tc)
		if _, err := http.ReadRequest(tr); err != nil {
			t.Errorf("upstream TLS: %v", err)
			return
		}
		body := "1 " + describe(h)
		fmt.Fprintf(tc, "HTTP/1.1 200 OK\r\ncontent-length: %d\r\nconnection: close\r\n\r\n%s", len(body), body)
	})
	y := strings.Replace(bootstrap(up, hcmFilter, "", `{version: V1}`), `
        transport_socket:
          name: envoy.transport_sockets.raw_buffer
          typed_config: {"@type": type.googleapis.com/envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer}`, fmt.Sprintf(`
        transport_socket:
          name: envoy.transport_sockets.tls
          typed_config:
            "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
            sni: up.example
            common_tls_context:
              validation_context: {trusted_ca: {filename: %s}}`, caFile), 1)
	if !strings.Contains(y, "UpstreamTlsContext") {
		t.Fatal("inner transport not replaced")
	}
	p := servertest.Start(t, y)
	bodies, local, remote := get(t, p.Addr("l"), 1)
	if want := fmt.Sprintf("1 v1 %s %s", local, remote); bodies[0] != want {
		t.Fatalf("got %q, want %q", bodies[0], want)
	}
}

// TestEvictAtMaxConnections: at max_connections, the idle connection of
// another downstream connection is closed for a new one instead of waiting.
func TestEvictAtMaxConnections(t *testing.T) {
	for _, tc := range []struct {
		name, options string
		upstream      func(*testing.T) int
	}{
		{"http1", "", httpUpstream},
		{"http2", h2Options + "\n", h2Upstream},
	} {
		t.Run(tc.name, func(t *testing.T) {
			y := bootstrap(tc.upstream(t), strings.Replace(hcmFilter, "route: {cluster: up}", "route: {cluster: up, timeout: 3s}", 1),
				tc.options+"    circuit_breakers: {thresholds: [{max_connections: 1}]}", `{version: V1}`)
			p := servertest.Start(t, y)
			first, _, _ := get(t, p.Addr("l"), 1)
			second, local, remote := get(t, p.Addr("l"), 1)
			if want := fmt.Sprintf("2 v1 %s %s", local, remote); second[0] != want {
				t.Fatalf("second downstream: %q (first %q), want %q", second[0], first[0], want)
			}
		})
	}
}
