package server_test

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/outrider-proxy/outrider/proxy/server/servertest"
)

// The quick start from the README works as written (ports made free).
func TestQuickstartExample(t *testing.T) {
	raw, err := os.ReadFile("../../examples/quickstart.yaml")
	if err != nil {
		t.Fatal(err)
	}
	backend := servertest.DeadPort(t)
	yaml := strings.NewReplacer("port_value: 10000", "port_value: 0", "port_value: 9901", "port_value: 0",
		"port_value: 10001", fmt.Sprintf("port_value: %d", backend)).Replace(string(raw))
	p := servertest.Start(t, yaml)
	resp, err := http.Get(p.URL("front", "/"))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(b) != "Hello from outrider\n" || !strings.HasPrefix(resp.Header.Get("X-Served-By"), "outrider 127.0.0.1:") {
		t.Fatalf("got %d %q %v", resp.StatusCode, b, resp.Header)
	}
	p.WaitStat("cluster.backend.upstream_rq_200", 1)
	p.WaitStat("http.backend_http.downstream_rq_2xx", 1)
}

// Filter chains are chosen by destination IP (prefix_ranges), with the
// default chain for the rest, on one listener bound to 0.0.0.0.
func TestFilterChainMatchByDestination(t *testing.T) {
	one := servertest.ServeTCP(t, func(c net.Conn) { io.WriteString(c, "one") })
	two := servertest.ServeTCP(t, func(c net.Conn) { io.WriteString(c, "two") })
	def := servertest.ServeTCP(t, func(c net.Conn) { io.WriteString(c, "default") })
	chain := func(match, cluster string) string {
		return fmt.Sprintf(`
    - %s
      filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy, stat_prefix: %s, cluster: %s}`, match, cluster, cluster)
	}
	cluster := func(name string, port int) string {
		return fmt.Sprintf(`
  - name: %s
    load_assignment: {cluster_name: %s, endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: %d}}}}]}]}`, name, name, port)
	}
	yaml := `
static_resources:
  listeners:
  - name: any
    address: {socket_address: {address: 0.0.0.0, port_value: 0}}
    filter_chains:` + chain(`filter_chain_match: {prefix_ranges: [{address_prefix: 127.0.0.2, prefix_len: 32}]}`, "one") +
		chain(`filter_chain_match: {prefix_ranges: [{address_prefix: 127.0.0.3, prefix_len: 32}]}`, "two") + `
    default_filter_chain:
      filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy, stat_prefix: def, cluster: def}
  clusters:` + cluster("one", one) + cluster("two", two) + cluster("def", def) + "\n"
	p := servertest.Start(t, yaml)
	port := p.Srv.Listeners()[0].Addr().(*net.TCPAddr).Port
	for ip, want := range map[string]string{"127.0.0.2": "one", "127.0.0.3": "two", "127.0.0.1": "default"} {
		if got := readAllFrom(t, fmt.Sprintf("%s:%d", ip, port)); got != want {
			t.Errorf("connection to %s reached %q, want %q", ip, got, want)
		}
	}
}

// A STRICT_DNS cluster resolves its hostname; auto_host_rewrite puts the
// endpoint's hostname in Host. LOGICAL_DNS connects to the first address.
func TestDNSClustersAndAutoHostRewrite(t *testing.T) {
	var host atomic.Value
	up := startUpstream(t, func(w http.ResponseWriter, r *http.Request) { host.Store(r.Host) })
	yaml := httpBootstrap(up.port(), `- match: {prefix: "/strict"}
  route: {cluster: strict, auto_host_rewrite: true}
- match: {prefix: "/logical"}
  route: {cluster: logical, host_rewrite_literal: literal.example}`, "") + fmt.Sprintf(`  - name: strict
    type: STRICT_DNS
    dns_lookup_family: V4_ONLY
    load_assignment: {cluster_name: strict, endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: localhost, port_value: %d}}}}]}]}
  - name: logical
    type: LOGICAL_DNS
    dns_lookup_family: V4_ONLY
    load_assignment: {cluster_name: logical, endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: localhost, port_value: %d}}}}]}]}
`, up.port(), up.port())
	p := servertest.Start(t, yaml)
	for path, want := range map[string]string{"/strict": "localhost", "/logical": "literal.example"} {
		var resp *http.Response
		var err error
		for deadline := time.Now().Add(3 * time.Second); ; { // the first resolution is asynchronous
			resp, err = http.Get(p.URL("front", path))
			if err == nil && resp.StatusCode == 200 || time.Now().After(deadline) {
				break
			}
			resp.Body.Close()
			time.Sleep(20 * time.Millisecond)
		}
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("%s: %v %v", path, resp, err)
		}
		resp.Body.Close()
		if got := host.Load(); got != want {
			t.Errorf("%s: upstream saw Host %q, want %q", path, got, want)
		}
	}
	if p.Stat("cluster.strict.membership_total") < 1 {
		t.Errorf("strict cluster has no members")
	}
}

func TestIPv6Listener(t *testing.T) {
	if ln, err := net.Listen("tcp", "[::1]:0"); err != nil {
		t.Skip("no IPv6 loopback")
	} else {
		ln.Close()
	}
	var xff atomic.Value
	up := startUpstream(t, func(w http.ResponseWriter, r *http.Request) { xff.Store(r.Header.Get("X-Forwarded-For")) })
	yaml := strings.Replace(httpBootstrap(up.port(), routeToUp, "use_remote_address: true"),
		"- name: front\n    address: {socket_address: {address: 127.0.0.1, port_value: 0}}",
		"- name: front\n    address: {socket_address: {address: \"::1\", port_value: 0}}", 1)
	p := servertest.Start(t, yaml)
	if !strings.HasPrefix(p.Addr("front"), "[::1]:") {
		t.Fatalf("listener bound to %s", p.Addr("front"))
	}
	resp, err := http.Get(p.URL("front", "/"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || xff.Load() != "::1" {
		t.Fatalf("status %d, x-forwarded-for %q", resp.StatusCode, xff.Load())
	}
	p.WaitStat("listener.[__1]_0.downstream_cx_total", 1)
}

func TestServerStatsAndLogging(t *testing.T) {
	up := startUpstream(t, func(w http.ResponseWriter, r *http.Request) {})
	p := servertest.Start(t, httpBootstrap(up.port(), routeToUp, ""))
	if p.Stat("server.live") != 1 || p.Stat("server.memory_allocated") <= 0 {
		t.Errorf("server.live %d, server.memory_allocated %d", p.Stat("server.live"), p.Stat("server.memory_allocated"))
	}
	p.Stat("server.uptime")
	if status, _ := p.Admin("POST", "/logging?level=debug"); status != 200 {
		t.Fatalf("/logging?level=debug: %d", status)
	}
	if status, body := p.Admin("POST", "/logging?level=loud"); status != 400 {
		t.Fatalf("/logging with a bad level: %d %s", status, body)
	}
}

// The routing example answers its local routes as its comments say.
func TestRoutingExample(t *testing.T) {
	raw, err := os.ReadFile("../../examples/routing.yaml")
	if err != nil {
		t.Fatal(err)
	}
	yaml := strings.NewReplacer("port_value: 10200", "port_value: 0", "port_value: 9902", "port_value: 0",
		"address: 0.0.0.0", "address: 127.0.0.1").Replace(string(raw))
	p := servertest.Start(t, yaml)
	for _, tc := range []struct {
		host, path string
		status     int
		body, loc  string
	}{
		{"www.example.com", "/healthz", 200, "ok\n", ""},
		{"example.com", "/old", 308, "", "http://example.com/new"},
		{"other.test", "/x", 404, "unknown host\n", ""},
	} {
		req, _ := http.NewRequest("GET", p.URL("edge", tc.path), nil)
		req.Host = tc.host
		resp, err := http.DefaultTransport.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.status || string(b) != tc.body || resp.Header.Get("Location") != tc.loc {
			t.Errorf("%s%s: %d %q location %q", tc.host, tc.path, resp.StatusCode, b, resp.Header.Get("Location"))
		}
		if resp.Header.Get("X-Edge") == "" {
			t.Errorf("%s%s: route config response_headers_to_add missing", tc.host, tc.path)
		}
	}
}
