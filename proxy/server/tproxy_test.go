package server_test

import (
	"bufio"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/outrider-proxy/outrider/proxy/server/servertest"
)

// tproxyChildEnv selects the child mode of TestTransparentProxy: the test
// body, run inside the network namespace the parent made.
const tproxyChildEnv = "OUTRIDER_TPROXY_CHILD"

// TestTransparentProxy runs outrider as an Istio sidecar runs Envoy: behind
// an iptables REDIRECT of every outbound TCP connection to 198.18.0.0/15,
// in a network namespace of its own (root, ip and iptables are needed). A
// request to 198.18.0.10:80 is handed by the use_original_dst listener to
// the bind_to_port: false listener 0.0.0.0:80, whose connection manager
// routes it; a connection to 198.18.0.11:9000, which no listener has, goes
// through the ORIGINAL_DST PassthroughCluster to the real server there; the
// access logs show the original destinations.
func TestTransparentProxy(t *testing.T) {
	if os.Getenv(tproxyChildEnv) == "1" {
		tproxyChild(t)
		return
	}
	if os.Geteuid() != 0 {
		t.Skip("transparent proxy test: needs root to create a network namespace and iptables rules")
	}
	for _, tool := range []string{"ip", "iptables"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("transparent proxy test: %q not found (Debian: apt-get install -y iproute2 iptables)", tool)
		}
	}
	var rnd [4]byte
	_, _ = rand.Read(rnd[:])
	ns := fmt.Sprintf("outrider-tp-%d-%s", os.Getpid(), hex.EncodeToString(rnd[:]))
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		t.Skipf("transparent proxy test: cannot create a network namespace: %v: %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", ns).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v: %s", ns, err, out)
		}
	})
	cmd := exec.Command("ip", "netns", "exec", ns, os.Args[0],
		"-test.run", "^TestTransparentProxy$", "-test.v", "-test.count", "1", "-test.timeout", "60s")
	cmd.Env = append(os.Environ(), tproxyChildEnv+"=1")
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--- PASS: TestTransparentProxy") {
		t.Fatalf("child in netns %s failed: %v\n%s", ns, err, out)
	}
	t.Logf("child in netns %s:\n%s", ns, out)
}

// Addresses of the test's network namespace, all on lo.
const (
	tpService     = "198.18.0.10" // has a bind_to_port: false listener on :80
	tpPassthrough = "198.18.0.11" // has no listener: PassthroughCluster
	tpSource      = "198.18.0.20" // outrider's upstream source address, never redirected
)

// tpRun runs a command of the test's setup.
func tpRun(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v: %s", strings.Join(args, " "), err, out)
	}
}

// tpRedirect installs Istio's redirect of outbound TCP to port, with
// outrider's own upstream connections (from tpSource) let through as Istio
// lets its proxy's uid through.
func tpRedirect(t *testing.T, port string) {
	tpRun(t, "iptables", "-t", "nat", "-F", "OUTPUT")
	tpRun(t, "iptables", "-t", "nat", "-A", "OUTPUT", "-p", "tcp", "-s", tpSource, "-j", "RETURN")
	tpRun(t, "iptables", "-t", "nat", "-A", "OUTPUT", "-p", "tcp", "-d", "198.18.0.0/15", "-j", "REDIRECT", "--to-ports", port)
}

func tproxyChild(t *testing.T) {
	tpRun(t, "ip", "link", "set", "lo", "up")
	for _, a := range []string{tpService, tpPassthrough, tpSource} {
		tpRun(t, "ip", "addr", "add", a+"/32", "dev", "lo")
	}
	t.Run("static", tproxyStatic)
	t.Run("xds", tproxyXDS)
	t.Run("ipv6", tproxyIPv6)
}

// tproxyStatic: static listeners and clusters.
func tproxyStatic(t *testing.T) {

	// The service's real backend (reached through the route's STATIC
	// cluster on 127.0.0.1) and the passthrough target on 198.18.0.11:9000.
	up := startUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "svc host=%s", r.Host)
	})
	ptLn, err := net.Listen("tcp", tpPassthrough+":9000")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ptLn.Close() })
	peers := make(chan string, 16)
	go func() {
		for i := 0; i < 16; i++ {
			c, err := ptLn.Accept()
			if err != nil {
				return
			}
			peers <- c.RemoteAddr().String()
			go func() {
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(10 * time.Second))
				line, _ := bufio.NewReader(c).ReadString('\n')
				io.WriteString(c, "echo:"+line)
			}()
		}
	}()

	dir := t.TempDir()
	outLog, svcLog := filepath.Join(dir, "outbound.log"), filepath.Join(dir, "svc.log")
	const format = "%DOWNSTREAM_LOCAL_ADDRESS% %UPSTREAM_HOST% %UPSTREAM_CLUSTER%\n"
	yaml := fmt.Sprintf(`
admin: {address: {socket_address: {address: 127.0.0.1, port_value: 0}}}
static_resources:
  listeners:
  - name: virtualOutbound
    address: {socket_address: {address: 0.0.0.0, port_value: 0}}
    use_original_dst: true
    filter_chains:
    - filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: PassthroughCluster
          cluster: PassthroughCluster
          access_log:
%s
  - name: 0.0.0.0_80
    address: {socket_address: {address: 0.0.0.0, port_value: 80}}
    bind_to_port: false
    listener_filters:
    - name: envoy.filters.listener.http_inspector
      typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.listener.http_inspector.v3.HttpInspector}
    filter_chains:
    - filter_chain_match: {application_protocols: [http/1.1, http/1.0, h2c]}
      filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: outbound_0.0.0.0_80
          http_filters:
          - name: envoy.filters.http.router
            typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}
          access_log:
%s
          route_config:
            virtual_hosts:
            - name: svc
              domains: ["*"]
              routes: [{match: {prefix: "/"}, route: {cluster: svc}}]
    default_filter_chain:
      filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: PassthroughCluster
          cluster: PassthroughCluster
  clusters:
  - name: svc
    connect_timeout: 2s
    load_assignment: {cluster_name: svc, endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: %d}}}}]}]}
  - name: PassthroughCluster
    type: ORIGINAL_DST
    lb_policy: CLUSTER_PROVIDED
    connect_timeout: 2s
    upstream_bind_config: {source_address: {address: %s, port_value: 0}}
`, indent(fileLog(outLog, format), 10), indent(fileLog(svcLog, "%DOWNSTREAM_LOCAL_ADDRESS% %UPSTREAM_HOST% %UPSTREAM_CLUSTER% %RESPONSE_CODE%\n"), 10),
		up.port(), tpSource)
	p := servertest.Start(t, yaml)
	_, port, _ := net.SplitHostPort(p.Addr("virtualOutbound"))

	tpRedirect(t, port)

	// HTTP to the service: handed to 0.0.0.0_80, routed to svc.
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := client.Get("http://" + tpService + "/hello")
	if err != nil {
		t.Fatalf("GET %s: %v", tpService, err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != "svc host="+tpService {
		t.Fatalf("GET %s = %d %q, want 200 from the svc cluster", tpService, resp.StatusCode, body)
	}

	// TCP to an address no listener has: PassthroughCluster to the real server.
	c, err := net.DialTimeout("tcp", tpPassthrough+":9000", 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(c, "ping\n")
	got, err := bufio.NewReader(c).ReadString('\n')
	c.Close()
	if err != nil || got != "echo:ping\n" {
		t.Fatalf("passthrough echo = %q, %v; want \"echo:ping\\n\"", got, err)
	}
	select {
	case peer := <-peers:
		if host, _, _ := net.SplitHostPort(peer); host != tpSource {
			t.Errorf("passthrough target saw the peer %s, want outrider's source %s", peer, tpSource)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("passthrough target got no connection")
	}

	p.WaitStat("listener.0.0.0.0_80.downstream_cx_total", 1)
	p.WaitStat("listener.0.0.0.0_80.http_inspector.http11_found", 1)
	p.WaitStat("cluster.PassthroughCluster.upstream_cx_total", 1)
	p.WaitStat("cluster.PassthroughCluster.membership_total", 1)
	p.WaitStat("listener.0.0.0.0_0.downstream_cx_total", 1) // only the passthrough connection stayed
	time.Sleep(100 * time.Millisecond)                      // tcp_proxy logs as its connection ends
	p.Srv.Shutdown()                                        // flushes the logs

	for path, want := range map[string]string{
		svcLog: fmt.Sprintf("%s:80 127.0.0.1:%d svc 200\n", tpService, up.port()),
		outLog: fmt.Sprintf("%s:9000 %s:9000 PassthroughCluster\n", tpPassthrough, tpPassthrough),
	} {
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if string(data) != want {
			t.Errorf("%s = %q, want %q", filepath.Base(path), data, want)
		}
	}
}

// tproxyXDS: the bind_to_port: false listener comes over LDS while the
// use_original_dst listener is static; its update is handed connections at
// once, and once removed its address goes through the PassthroughCluster to
// the real server there.
func tproxyXDS(t *testing.T) {
	real := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "real") })}
	realLn, err := net.Listen("tcp", tpService+":80")
	if err != nil {
		t.Fatal(err)
	}
	go real.Serve(realLn)
	t.Cleanup(func() { real.Close() })

	cp := startControlPlane(t)
	resources := func(body string) map[resourcev3.Type][]types.Resource {
		res := map[resourcev3.Type][]types.Resource{
			resourcev3.ClusterType: {tpMessage(t, &clusterv3.Cluster{}, `{"name": "unused", "type": "STATIC", "connectTimeout": "1s"}`)},
		}
		if body != "" {
			res[resourcev3.ListenerType] = []types.Resource{tpMessage(t, &listenerv3.Listener{}, fmt.Sprintf(`{
  "name": "0.0.0.0_80",
  "address": {"socketAddress": {"address": "0.0.0.0", "portValue": 80}},
  "bindToPort": false,
  "filterChains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager", "typedConfig": {
    "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
    "statPrefix": "outbound_80",
    "httpFilters": [{"name": "envoy.filters.http.router", "typedConfig": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}],
    "routeConfig": {"virtualHosts": [{"name": "vh", "domains": ["*"], "routes": [{"match": {"prefix": "/"},
      "directResponse": {"status": 200, "body": {"inlineString": %q}}}]}]}}}]}]
}`, body))}
		}
		return res
	}
	cp.set(t, "1", resources("v1"))
	yaml := strings.Replace(xdsBootstrap(cp.port, "GRPC"), "static_resources:\n", `static_resources:
  listeners:
  - name: virtualOutbound
    address: {socket_address: {address: 0.0.0.0, port_value: 0}}
    use_original_dst: true
    filter_chains:
    - filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: PassthroughCluster
          cluster: PassthroughCluster
`, 1) + fmt.Sprintf(`  - name: PassthroughCluster
    type: ORIGINAL_DST
    lb_policy: CLUSTER_PROVIDED
    connect_timeout: 2s
    upstream_bind_config: {source_address: {address: %s, port_value: 0}}
`, tpSource)
	p := servertest.Start(t, yaml)
	_, port, _ := net.SplitHostPort(p.Addr("virtualOutbound"))
	tpRedirect(t, port)

	get := func() string {
		client := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
		resp, err := client.Get("http://" + tpService + "/")
		if err != nil {
			return "error: " + err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	eventually(t, "the LDS listener 0.0.0.0_80", get, "v1")
	cp.set(t, "2", resources("v2"))
	eventually(t, "the updated listener", get, "v2")
	cp.set(t, "3", resources(""))
	eventually(t, "the passthrough after the listener's removal", get, "real")
	cp.set(t, "4", resources("v4"))
	eventually(t, "the listener added again", get, "v4")
	if n := cp.nacked(); len(n) > 0 {
		t.Errorf("NACKs: %q", n)
	}
}

// tpMessage decodes proto JSON into m.
func tpMessage[M proto.Message](t *testing.T, m M, js string) M {
	t.Helper()
	if err := protojson.Unmarshal([]byte(js), m); err != nil {
		t.Fatalf("bad test resource: %v\n%s", err, js)
	}
	return m
}

// tproxyIPv6: the same passthrough over IPv6 (ip6tables' REDIRECT, read back
// with IP6T_SO_ORIGINAL_DST).
func tproxyIPv6(t *testing.T) {
	const target, source = "2001:db8:18::11", "2001:db8:18::20"
	for _, a := range []string{target, source} {
		if out, err := exec.Command("ip", "-6", "addr", "add", a+"/128", "dev", "lo", "nodad").CombinedOutput(); err != nil {
			t.Skipf("no IPv6 in the namespace: %v: %s", err, out)
		}
	}
	ln, err := net.Listen("tcp", "["+target+"]:9000")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for i := 0; i < 4; i++ {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(10 * time.Second))
				line, _ := bufio.NewReader(c).ReadString('\n')
				io.WriteString(c, "echo6 from "+c.RemoteAddr().String()+" "+line)
			}()
		}
	}()
	logPath := filepath.Join(t.TempDir(), "out6.log")
	p := servertest.Start(t, fmt.Sprintf(`
admin: {address: {socket_address: {address: 127.0.0.1, port_value: 0}}}
static_resources:
  listeners:
  - name: virtualOutbound6
    address: {socket_address: {address: "::", port_value: 0}}
    use_original_dst: true
    filter_chains:
    - filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: PassthroughCluster
          cluster: PassthroughCluster
          access_log:
%s
  clusters:
  - name: PassthroughCluster
    type: ORIGINAL_DST
    lb_policy: CLUSTER_PROVIDED
    connect_timeout: 2s
    upstream_bind_config: {source_address: {address: "%s", port_value: 0}}
`, indent(fileLog(logPath, "%DOWNSTREAM_LOCAL_ADDRESS% %UPSTREAM_HOST%\n"), 10), source))
	_, port, _ := net.SplitHostPort(p.Addr("virtualOutbound6"))
	tpRun(t, "ip6tables", "-t", "nat", "-F", "OUTPUT")
	tpRun(t, "ip6tables", "-t", "nat", "-A", "OUTPUT", "-p", "tcp", "-s", source, "-j", "RETURN")
	tpRun(t, "ip6tables", "-t", "nat", "-A", "OUTPUT", "-p", "tcp", "-d", "2001:db8:18::/64", "-j", "REDIRECT", "--to-ports", port)

	c, err := net.DialTimeout("tcp", "["+target+"]:9000", 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(c, "ping\n")
	got, err := bufio.NewReader(c).ReadString('\n')
	c.Close()
	if want := "echo6 from [" + source + "]:"; err != nil || !strings.HasPrefix(got, want) || !strings.HasSuffix(got, " ping\n") {
		t.Fatalf("passthrough echo = %q, %v; want %q... ping", got, err, want)
	}
	time.Sleep(100 * time.Millisecond) // tcp_proxy logs as its connection ends
	p.Srv.Shutdown()
	data, err := os.ReadFile(logPath)
	if err != nil {
		t.Fatal(err)
	}
	if want := fmt.Sprintf("[%s]:9000 [%s]:9000\n", target, target); string(data) != want {
		t.Errorf("access log = %q, want %q", data, want)
	}
}
