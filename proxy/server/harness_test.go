package server_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	_ "github.com/outrider-proxy/outrider/filters/all"
	"github.com/outrider-proxy/outrider/proxy/server"
	"github.com/outrider-proxy/outrider/xds/bootstrap"
)

// proxy is an in-process outrider started from YAML, with its listeners and
// admin on kernel-chosen ports.
type proxy struct {
	t   *testing.T
	srv *server.Server
}

// startProxy loads yaml (a full bootstrap) and starts it. Listener ports in
// the YAML should be 0.
func startProxy(t *testing.T, yaml string) *proxy {
	t.Helper()
	b, err := bootstrap.LoadBytes("test.yaml", []byte(yaml))
	if err != nil {
		t.Fatalf("load: %v", err)
	}
	srv, err := server.New(server.Options{Bootstrap: b, DrainTime: 2 * time.Second, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatalf("server.New: %v", err)
	}
	if err := srv.Start(context.Background()); err != nil {
		t.Fatalf("start: %v", err)
	}
	p := &proxy{t: t, srv: srv}
	t.Cleanup(srv.Shutdown)
	return p
}

// addr is the bound address of the named listener.
func (p *proxy) addr(name string) string {
	for _, l := range p.srv.Listeners() {
		if l.Name == name {
			return l.Addr().String()
		}
	}
	p.t.Fatalf("no listener %q", name)
	return ""
}

func (p *proxy) url(listener, path string) string { return "http://" + p.addr(listener) + path }

// counter reads a stat by exact name from /stats?format=json-free text output.
func (p *proxy) stat(name string) int64 {
	p.t.Helper()
	for _, c := range p.srv.Stats().Counters() {
		if c.Name() == name {
			return int64(c.Value())
		}
	}
	for _, g := range p.srv.Stats().Gauges() {
		if g.Name() == name {
			return g.Value()
		}
	}
	p.t.Fatalf("no stat %q", name)
	return 0
}

// waitStat polls until the stat reaches want (stats update after the
// response is written).
func (p *proxy) waitStat(name string, want int64) {
	p.t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for {
		got := p.stat(name)
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("stat %s = %d, want %d", name, got, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (p *proxy) adminGet(path string) (int, string) {
	p.t.Helper()
	resp, err := http.Get("http://" + p.srv.AdminAddr().String() + path)
	if err != nil {
		p.t.Fatalf("admin %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func (p *proxy) adminPost(path string) (int, string) {
	p.t.Helper()
	resp, err := http.Post("http://"+p.srv.AdminAddr().String()+path, "text/plain", nil)
	if err != nil {
		p.t.Fatalf("admin %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// upstream is a real HTTP/1.1 server on 127.0.0.1:0 that counts accepted
// connections.
type upstream struct {
	srv     *http.Server
	ln      net.Listener
	accepts chan struct{}
}

func startUpstream(t *testing.T, h http.HandlerFunc) *upstream {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := &upstream{ln: ln, accepts: make(chan struct{}, 1000)}
	u.srv = &http.Server{Handler: h, ConnState: func(c net.Conn, s http.ConnState) {
		if s == http.StateNew {
			u.accepts <- struct{}{}
		}
	}}
	go u.srv.Serve(ln)
	t.Cleanup(func() { u.srv.Close() })
	return u
}

func (u *upstream) port() int { return u.ln.Addr().(*net.TCPAddr).Port }

// deadPort is a port on 127.0.0.1 with nothing listening.
func deadPort(t *testing.T) int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	return port
}

// httpBootstrap is a bootstrap with admin, one HCM listener "front" whose
// virtual host gets routesYAML (a YAML list, indented for "routes:") and
// clusters "up" at upPort.
func httpBootstrap(upPort int, routesYAML string, hcmExtra string) string {
	return fmt.Sprintf(`
admin:
  address: {socket_address: {address: 127.0.0.1, port_value: 0}}
static_resources:
  listeners:
  - name: front
    address: {socket_address: {address: 127.0.0.1, port_value: 0}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress
%s
          route_config:
            name: local
            virtual_hosts:
            - name: vh
              domains: ["*"]
              routes:
%s
          http_filters:
          - name: envoy.filters.http.router
            typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}
  clusters:
  - name: up
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: up
      endpoints:
      - lb_endpoints:
        - endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: %d}}}
`, indent(hcmExtra, 10), indent(routesYAML, 14), upPort)
}

func indent(s string, n int) string {
	if strings.TrimSpace(s) == "" {
		return ""
	}
	pad := strings.Repeat(" ", n)
	lines := strings.Split(strings.Trim(s, "\n"), "\n")
	for i, l := range lines {
		lines[i] = pad + l
	}
	return strings.Join(lines, "\n")
}

// rawRequest sends raw bytes on a new connection and reads one response.
func rawRequest(t *testing.T, addr, raw string) (*http.Response, string) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("read response: %v", err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, string(b)
}

func atoi(s string) int { n, _ := strconv.Atoi(s); return n }
