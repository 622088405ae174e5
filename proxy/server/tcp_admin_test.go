package server_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/outrider-proxy/outrider/proxy/server/servertest"
)

func tcpBootstrap(upPort int) string {
	return fmt.Sprintf(`
admin:
  address: {socket_address: {address: 127.0.0.1, port_value: 0}}
static_resources:
  listeners:
  - name: tcp
    address: {socket_address: {address: 127.0.0.1, port_value: 0}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: tcpin
          cluster: echo
  clusters:
  - name: echo
    connect_timeout: 1s
    load_assignment:
      cluster_name: echo
      endpoints:
      - lb_endpoints:
        - endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: %d}}}
`, upPort)
}

// startEcho runs a TCP server that upper-cases what it reads and, when the
// client half-closes, writes "BYE" and closes.
func startEcho(t *testing.T) int {
	return servertest.ServeTCP(t, func(c net.Conn) {
		buf := make([]byte, 32<<10)
		for {
			n, err := c.Read(buf)
			if n > 0 {
				c.Write([]byte(strings.ToUpper(string(buf[:n]))))
			}
			if err != nil {
				c.Write([]byte("BYE"))
				return
			}
		}
	})
}

func TestTCPProxyBothWaysWithHalfClose(t *testing.T) {
	p := servertest.Start(t, tcpBootstrap(startEcho(t)))
	c, err := net.Dial("tcp", p.Addr("tcp"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	payload := strings.Repeat("abcdefgh", 64<<10) // 512 KiB, several splice chunks
	go func() {
		io.WriteString(c, payload)
		c.(*net.TCPConn).CloseWrite() // half-close: the upstream must see EOF and still answer
	}()
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	want := strings.ToUpper(payload) + "BYE"
	if string(got) != want {
		t.Fatalf("got %d bytes, want %d (tail %q)", len(got), len(want), got[max(0, len(got)-10):])
	}
	p.WaitStat("tcp.tcpin.downstream_cx_total", 1)
	p.WaitStat("tcp.tcpin.downstream_cx_rx_bytes_total", int64(len(payload)))
	p.WaitStat("tcp.tcpin.downstream_cx_tx_bytes_total", int64(len(want)))
	p.WaitStat("cluster.echo.upstream_cx_total", 1)
	p.WaitStat("cluster.echo.upstream_cx_active", 0)
	p.WaitStat("listener.127.0.0.1_0.downstream_cx_total", 1)
}

func TestTCPProxyUpstreamDown(t *testing.T) {
	p := servertest.Start(t, tcpBootstrap(servertest.DeadPort(t)))
	c, err := net.Dial("tcp", p.Addr("tcp"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatal("connection stayed open with no upstream")
	}
	p.WaitStat("cluster.echo.upstream_cx_connect_fail", 1)
}

func TestAdminEndpoints(t *testing.T) {
	up := startUpstream(t, func(w http.ResponseWriter, r *http.Request) {})
	p := servertest.Start(t, httpBootstrap(up.port(), routeToUp, ""))
	resp, err := http.Get(p.URL("front", "/"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	p.WaitStat("http.ingress.downstream_rq_2xx", 1)

	for _, tc := range []struct {
		path   string
		status int
		want   []string
	}{
		{"/ready", 200, []string{"LIVE"}},
		{"/", 200, []string{"href='stats'", "href='clusters'", "href='config_dump'", "quitquitquit"}},
		{"/stats?filter=downstream_rq_2xx", 200, []string{"http.ingress.downstream_rq_2xx: 1"}},
		{"/stats?format=json&filter=^server.live$", 200, []string{`"name":"server.live"`}},
		{"/stats?filter=(", 400, nil},
		{"/stats/prometheus", 200, []string{`envoy_http_downstream_rq_xx{envoy_response_code_class="2",envoy_http_conn_manager_prefix="ingress"} 1`, "# TYPE envoy_cluster_upstream_rq_total counter"}},
		{"/clusters", 200, []string{fmt.Sprintf("up::127.0.0.1:%d::rq_success::1", up.port()), "up::127.0.0.1:", "::health_flags::healthy"}},
		{"/clusters?format=json", 200, []string{`"name": "up"`}},
		{"/listeners", 200, []string{"front::127.0.0.1:"}},
		{"/server_info", 200, []string{`"state": "LIVE"`, `"version": "outrider/`}},
		{"/config_dump", 200, []string{"type.googleapis.com/envoy.admin.v3.BootstrapConfigDump", "type.googleapis.com/envoy.admin.v3.ClustersConfigDump", "type.googleapis.com/envoy.admin.v3.ListenersConfigDump", "type.googleapis.com/envoy.admin.v3.RoutesConfigDump"}},
		{"/quitquitquit", 405, nil},
	} {
		t.Run(tc.path, func(t *testing.T) {
			status, body := p.Admin("GET", tc.path)
			if status != tc.status {
				t.Fatalf("status %d, want %d: %s", status, tc.status, body)
			}
			for _, w := range tc.want {
				if !strings.Contains(body, w) {
					t.Errorf("body lacks %q:\n%.2000s", w, body)
				}
			}
		})
	}
	_, dump := p.Admin("GET", "/config_dump")
	var parsed struct {
		Configs []map[string]any `json:"configs"`
	}
	if err := json.Unmarshal([]byte(dump), &parsed); err != nil || len(parsed.Configs) < 4 {
		t.Fatalf("config_dump is not Envoy-shaped JSON: %v", err)
	}
	if status, _ := p.Admin("POST", "/healthcheck/fail"); status != 200 || !p.Srv.HealthCheckFailed() {
		t.Errorf("/healthcheck/fail did not take effect")
	}
	if status, _ := p.Admin("POST", "/healthcheck/ok"); status != 200 || p.Srv.HealthCheckFailed() {
		t.Errorf("/healthcheck/ok did not take effect")
	}
}

// A drain lets the in-flight request finish, closes keep-alive connections
// with "Connection: close" on their next response, and /ready turns 503.
func TestDrainListeners(t *testing.T) {
	release := make(chan struct{})
	up := startUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			<-release
		}
		io.WriteString(w, "done")
	})
	p := servertest.Start(t, httpBootstrap(up.port(), routeToUp, ""))
	// A keep-alive connection, idle between requests.
	ka, err := net.Dial("tcp", p.Addr("front"))
	if err != nil {
		t.Fatal(err)
	}
	defer ka.Close()
	kaR := bufio.NewReader(ka)
	ka.SetDeadline(time.Now().Add(5 * time.Second))
	// An in-flight request.
	slow := make(chan string, 1)
	go func() {
		resp, err := http.Get(p.URL("front", "/slow"))
		if err != nil {
			slow <- err.Error()
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		slow <- string(b)
	}()
	time.Sleep(100 * time.Millisecond)
	io.WriteString(ka, "GET /fast HTTP/1.1\r\nHost: a\r\n\r\n")
	if resp, err := http.ReadResponse(kaR, nil); err != nil || resp.Close {
		t.Fatalf("before drain: %v close=%v", err, resp != nil && resp.Close)
	} else {
		io.ReadAll(resp.Body)
	}
	if status, _ := p.Admin("POST", "/drain_listeners?graceful"); status != 200 {
		t.Fatalf("drain_listeners: %d", status)
	}
	if status, body := p.Admin("GET", "/ready"); status != 503 || !strings.Contains(body, "DRAINING") {
		t.Errorf("/ready during drain = %d %q", status, body)
	}
	close(release)
	if got := <-slow; got != "done" {
		t.Fatalf("in-flight request during drain: %q", got)
	}
	// The idle keep-alive connection is closed by the drain.
	if _, err := kaR.ReadByte(); err == nil {
		t.Errorf("idle keep-alive connection not closed by drain")
	}
}

func tcpProxyBootstrap(proxyCfg string, clusters map[string]int) string {
	var cl strings.Builder
	for name, port := range clusters {
		fmt.Fprintf(&cl, `  - name: %s
    connect_timeout: 1s
    load_assignment:
      cluster_name: %s
      endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: %d}}}}]}]
`, name, name, port)
	}
	return fmt.Sprintf(`
static_resources:
  listeners:
  - name: tcp
    address: {socket_address: {address: 127.0.0.1, port_value: 0}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: t
%s
  clusters:
%s`, indent(proxyCfg, 10), cl.String())
}

// named answers every connection with its name and closes.
func named(t *testing.T, name string) int {
	return servertest.ServeTCP(t, func(c net.Conn) { io.WriteString(c, name) })
}

func readAllFrom(t *testing.T, addr string) string {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	b, _ := io.ReadAll(c)
	return string(b)
}

func TestTCPProxyWeightedClusters(t *testing.T) {
	p := servertest.Start(t, tcpProxyBootstrap(`weighted_clusters:
  clusters: [{name: a, weight: 3}, {name: b, weight: 1}]`,
		map[string]int{"a": named(t, "a"), "b": named(t, "b")}))
	counts := map[string]int{}
	for i := 0; i < 200; i++ {
		counts[readAllFrom(t, p.Addr("tcp"))]++
	}
	if counts["a"] < 110 || counts["b"] < 20 || counts["a"]+counts["b"] != 200 {
		t.Fatalf("distribution %v, want about 150/50", counts)
	}
}

func TestTCPProxyIdleTimeout(t *testing.T) {
	silent := servertest.ServeTCP(t, func(c net.Conn) { io.Copy(io.Discard, c) })
	p := servertest.Start(t, tcpProxyBootstrap("cluster: s\nidle_timeout: 0.2s", map[string]int{"s": silent}))
	start := time.Now()
	readAllFrom(t, p.Addr("tcp"))
	if d := time.Since(start); d < 150*time.Millisecond || d > 3*time.Second {
		t.Fatalf("idle connection closed after %v, want about 200ms", d)
	}
	p.WaitStat("tcp.t.idle_timeout", 1)
}

func TestTCPProxyMaxConnectAttempts(t *testing.T) {
	p := servertest.Start(t, tcpProxyBootstrap("cluster: dead\nmax_connect_attempts: 3", map[string]int{"dead": servertest.DeadPort(t)}))
	readAllFrom(t, p.Addr("tcp"))
	p.WaitStat("cluster.dead.upstream_cx_connect_fail", 3)
	p.WaitStat("tcp.t.upstream_connect_attempts_exceeded", 1)
}
