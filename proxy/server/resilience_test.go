package server_test

import (
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/outrider-proxy/outrider/proxy/server/servertest"
)

// clusterYAML is a STATIC cluster over the ports, with extra YAML lines.
func clusterYAML(name string, extra string, ports ...int) string {
	var eps []string
	for _, p := range ports {
		eps = append(eps, fmt.Sprintf("{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: %d}}}}", p))
	}
	return fmt.Sprintf(`  - name: %s
    connect_timeout: 1s
%s
    load_assignment: {cluster_name: %s, endpoints: [{lb_endpoints: [%s]}]}
`, name, indent(extra, 4), name, strings.Join(eps, ", "))
}

// resilienceBootstrap routes "/" to cluster "pool" with routeExtra on the
// route action.
func resilienceBootstrap(routeExtra, clusterExtra string, ports ...int) string {
	yaml := httpBootstrap(ports[0], fmt.Sprintf(`- match: {prefix: "/"}
  route: {cluster: pool%s}`, routeExtra), "")
	i := strings.Index(yaml, "  clusters:\n")
	return yaml[:i] + "  clusters:\n" + clusterYAML("pool", clusterExtra, ports...)
}

func getBody(t *testing.T, url string, hdr ...string) (int, string, http.Header) {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Header
}

func TestRetries(t *testing.T) {
	var calls atomic.Int32
	flaky := startUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		if calls.Add(1)%2 == 1 {
			w.WriteHeader(503)
			return
		}
		io.WriteString(w, "second try")
	})
	p := servertest.Start(t, resilienceBootstrap(`, retry_policy: {retry_on: 5xx, num_retries: 2, retry_back_off: {base_interval: 0.001s}}`, "", flaky.port()))
	if code, body, _ := getBody(t, p.URL("front", "/")); code != 200 || body != "second try" {
		t.Fatalf("got %d %q, want the retried 200", code, body)
	}
	p.WaitStat("cluster.pool.upstream_rq_retry", 1)
	p.WaitStat("cluster.pool.upstream_rq_retry_success", 1)
	p.WaitStat("cluster.pool.upstream_rq_503", 1)
	p.WaitStat("cluster.pool.upstream_rq_200", 1)

	t.Run("connect-failure moves to another host", func(t *testing.T) {
		ok := startUpstream(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "alive") })
		p := servertest.Start(t, resilienceBootstrap(`, retry_policy: {retry_on: connect-failure, num_retries: 3, retry_back_off: {base_interval: 0.001s}}`, "", servertest.DeadPort(t), ok.port()))
		for i := 0; i < 4; i++ {
			if code, body, _ := getBody(t, p.URL("front", "/")); code != 200 || body != "alive" {
				t.Fatalf("request %d: %d %q", i, code, body)
			}
		}
		if p.Stat("cluster.pool.upstream_rq_retry") == 0 {
			t.Error("no retry counted")
		}
	})
	t.Run("limit exceeded answers with the last failure", func(t *testing.T) {
		down := startUpstream(t, func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(502) })
		p := servertest.Start(t, resilienceBootstrap(`, retry_policy: {retry_on: gateway-error, num_retries: 2, retry_back_off: {base_interval: 0.001s}}`, "", down.port()))
		if code, _, _ := getBody(t, p.URL("front", "/")); code != 502 {
			t.Fatalf("status %d, want 502", code)
		}
		p.WaitStat("cluster.pool.upstream_rq_retry", 2)
		p.WaitStat("cluster.pool.upstream_rq_retry_limit_exceeded", 1)
	})
	t.Run("per_try_timeout", func(t *testing.T) {
		var n atomic.Int32
		slowFirst := startUpstream(t, func(w http.ResponseWriter, r *http.Request) {
			if n.Add(1) == 1 {
				time.Sleep(500 * time.Millisecond)
			}
			io.WriteString(w, "fast")
		})
		p := servertest.Start(t, resilienceBootstrap(`, retry_policy: {retry_on: reset, num_retries: 1, per_try_timeout: 0.1s, retry_back_off: {base_interval: 0.001s}}`, "", slowFirst.port()))
		if code, body, _ := getBody(t, p.URL("front", "/")); code != 200 || body != "fast" {
			t.Fatalf("got %d %q", code, body)
		}
		p.WaitStat("cluster.pool.upstream_rq_per_try_timeout", 1)
	})
}

func TestOutlierDetectionEjectsFailingHost(t *testing.T) {
	bad := startUpstream(t, func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(500) })
	good := startUpstream(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "good") })
	p := servertest.Start(t, resilienceBootstrap("", `outlier_detection: {consecutive_5xx: 2, interval: 10s, base_ejection_time: 30s, max_ejection_percent: 50}`, bad.port(), good.port()))
	for i := 0; i < 6; i++ {
		getBody(t, p.URL("front", "/"))
	}
	for i := 0; i < 10; i++ {
		if code, body, _ := getBody(t, p.URL("front", "/")); code != 200 || body != "good" {
			t.Fatalf("after ejection, request %d reached %d %q", i, code, body)
		}
	}
	p.WaitStat("cluster.pool.outlier_detection.ejections_active", 1)
	if _, clusters := p.Admin("GET", "/clusters"); !strings.Contains(clusters, fmt.Sprintf("pool::127.0.0.1:%d::health_flags::/failed_outlier_check", bad.port())) {
		t.Errorf("/clusters does not show the ejected host:\n%s", clusters)
	}
}

func TestCircuitBreakerOverflow(t *testing.T) {
	release := make(chan struct{})
	slow := startUpstream(t, func(w http.ResponseWriter, r *http.Request) { <-release })
	p := servertest.Start(t, resilienceBootstrap("", `circuit_breakers: {thresholds: [{max_requests: 1, max_pending_requests: 1, max_connections: 1}]}`, slow.port()))
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); getBody(t, p.URL("front", "/first")) }()
	p.WaitStat("cluster.pool.upstream_rq_active", 1)
	code, _, h := getBody(t, p.URL("front", "/second"))
	close(release)
	wg.Wait()
	if code != 503 || h.Get("X-Envoy-Overloaded") != "true" {
		t.Fatalf("over max_requests: %d overloaded=%q, want 503 and x-envoy-overloaded", code, h.Get("X-Envoy-Overloaded"))
	}
	if p.Stat("cluster.pool.upstream_rq_pending_overflow") == 0 {
		t.Error("overflow not counted")
	}
}

func TestActiveHealthCheck(t *testing.T) {
	sick := startUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/healthz" {
			w.WriteHeader(503)
			return
		}
		io.WriteString(w, "sick")
	})
	well := startUpstream(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "well") })
	p := servertest.Start(t, resilienceBootstrap("", `health_checks: [{timeout: 1s, interval: 0.05s, unhealthy_threshold: 1, healthy_threshold: 1, http_health_check: {path: /healthz}}]`, sick.port(), well.port()))
	p.WaitStat("cluster.pool.membership_healthy", 1)
	for i := 0; i < 6; i++ {
		if code, body, _ := getBody(t, p.URL("front", "/")); code != 200 || body != "well" {
			t.Fatalf("request %d reached %d %q", i, code, body)
		}
	}
	if p.Stat("cluster.pool.health_check.failure") == 0 {
		t.Error("health_check.failure not counted")
	}
}

func TestRingHashByHeader(t *testing.T) {
	var hosts []int
	for i := 0; i < 3; i++ {
		i := i
		hosts = append(hosts, startUpstream(t, func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, i) }).port())
	}
	p := servertest.Start(t, resilienceBootstrap(`, hash_policy: [{header: {header_name: x-user}}]`, "lb_policy: RING_HASH", hosts...))
	seen := map[string]bool{}
	for u := 0; u < 20; u++ {
		user := fmt.Sprint("user-", u)
		_, first, _ := getBody(t, p.URL("front", "/"), "X-User", user)
		for i := 0; i < 3; i++ {
			if _, again, _ := getBody(t, p.URL("front", "/"), "X-User", user); again != first {
				t.Fatalf("%s went to %s then %s", user, first, again)
			}
		}
		seen[first] = true
	}
	if len(seen) < 2 {
		t.Errorf("20 users all hashed to one host: %v", seen)
	}
}

// A cluster's UpstreamTlsContext makes the pool speak TLS to the upstream,
// validating it against the CA and the SAN.
func TestUpstreamTLS(t *testing.T) {
	ca := servertest.NewCA(t, "up-ca")
	leaf := ca.Issue(t, []string{"backend.test"})
	ts := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "tls %v", r.TLS != nil)
	}))
	ts.TLS = &tls.Config{Certificates: []tls.Certificate{leaf.TLS}}
	ts.StartTLS()
	t.Cleanup(ts.Close)
	port := ts.Listener.Addr().(*net.TCPAddr).Port
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	os.WriteFile(caFile, ca.PEM, 0o600)
	tlsCfg := func(san string) string {
		return fmt.Sprintf(`transport_socket:
  name: envoy.transport_sockets.tls
  typed_config:
    "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
    sni: backend.test
    common_tls_context:
      validation_context:
        trusted_ca: {filename: %s}
        match_typed_subject_alt_names: [{san_type: DNS, matcher: {exact: %s}}]`, caFile, san)
	}
	p := servertest.Start(t, resilienceBootstrap("", tlsCfg("backend.test"), port))
	if code, body, _ := getBody(t, p.URL("front", "/")); code != 200 || body != "tls true" {
		t.Fatalf("got %d %q", code, body)
	}
	p.WaitStat("cluster.pool.ssl.handshake", 1)
	wrong := servertest.Start(t, resilienceBootstrap("", tlsCfg("other.test"), port))
	if code, _, _ := getBody(t, wrong.URL("front", "/")); code != 503 {
		t.Fatalf("a SAN mismatch gave %d, want 503", code)
	}
}

// request_mirror_policies send a copy with "-shadow" appended to the host;
// a slow or failing shadow never changes the primary response.
func TestRequestMirroring(t *testing.T) {
	shadowHosts := make(chan string, 10)
	shadow := startUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		shadowHosts <- r.Host
		time.Sleep(300 * time.Millisecond) // slower than the primary
		w.WriteHeader(500)
	})
	primary := startUpstream(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "primary") })
	yaml := resilienceBootstrap(`, request_mirror_policies: [{cluster: shadow}]`, "", primary.port())
	yaml += clusterYAML("shadow", "", shadow.port())
	p := servertest.Start(t, yaml)
	start := time.Now()
	req, _ := http.NewRequest("GET", p.URL("front", "/x"), nil)
	req.Host = "api.test:8080"
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(b) != "primary" || time.Since(start) > 250*time.Millisecond {
		t.Fatalf("primary: %d %q after %v", resp.StatusCode, b, time.Since(start))
	}
	select {
	case h := <-shadowHosts:
		if h != "api.test-shadow:8080" {
			t.Errorf("shadow host %q", h)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("no shadow request")
	}
	p.WaitStat("cluster.shadow.upstream_rq_500", 1)
}

func TestRingHashByCookie(t *testing.T) {
	var hosts []int
	for i := 0; i < 3; i++ {
		i := i
		hosts = append(hosts, startUpstream(t, func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, i) }).port())
	}
	p := servertest.Start(t, resilienceBootstrap(`, hash_policy: [{cookie: {name: session}}]`, "lb_policy: MAGLEV", hosts...))
	seen := map[string]bool{}
	for u := 0; u < 20; u++ {
		cookie := fmt.Sprintf("other=1; session=s%d", u)
		_, first, _ := getBody(t, p.URL("front", "/"), "Cookie", cookie)
		for i := 0; i < 3; i++ {
			if _, again, _ := getBody(t, p.URL("front", "/"), "Cookie", cookie); again != first {
				t.Fatalf("session %d went to %s then %s", u, first, again)
			}
		}
		seen[first] = true
	}
	if len(seen) < 2 {
		t.Errorf("20 sessions all hashed to one host")
	}
}

// max_stream_duration bounds the stream; grpc_timeout_header_max makes a
// gRPC client's grpc-timeout the route timeout and tells the upstream.
func TestMaxStreamDuration(t *testing.T) {
	seen := make(chan string, 4)
	slow := startUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		seen <- r.Header.Get("Grpc-Timeout")
		time.Sleep(400 * time.Millisecond)
	})
	p := servertest.Start(t, resilienceBootstrap(`, max_stream_duration: {max_stream_duration: 0.15s, grpc_timeout_header_max: 10s}`, "", slow.port()))
	code, body, _ := getBody(t, p.URL("front", "/"))
	if code != 408 || body != "upstream max stream duration reached" {
		t.Fatalf("plain request: %d %q, want 408", code, body)
	}
	<-seen
	code, _, h := getBody(t, p.URL("front", "/"), "Content-Type", "application/grpc", "Grpc-Timeout", "100m")
	if code != 200 || h.Get("Grpc-Status") != "14" { // the route timeout, as Envoy maps 504
		t.Fatalf("gRPC request past its grpc-timeout: %d grpc-status %q, want 14", code, h.Get("Grpc-Status"))
	}
	if got := <-seen; got != "100m" {
		t.Errorf("upstream grpc-timeout %q, want 100m", got)
	}
	code, _, h = getBody(t, p.URL("front", "/"), "Content-Type", "application/grpc", "Grpc-Timeout", "5S")
	if code != 200 || h.Get("Grpc-Status") != "4" {
		t.Fatalf("gRPC request past max_stream_duration: %d grpc-status %q, want 4 (DEADLINE_EXCEEDED)", code, h.Get("Grpc-Status"))
	}
}

// A retried request's body is replayed from the buffer, as Envoy does.
func TestRetryReplaysBody(t *testing.T) {
	var calls atomic.Int32
	flaky := startUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		if calls.Add(1) == 1 {
			w.WriteHeader(503)
			return
		}
		w.Write(b)
	})
	p := servertest.Start(t, resilienceBootstrap(`, retry_policy: {retry_on: 5xx, num_retries: 1, retry_back_off: {base_interval: 0.001s}}`, "", flaky.port()))
	body := strings.Repeat("payload-", 20000) // 160 KB, in several pieces
	for _, chunked := range []bool{false, true} {
		calls.Store(0)
		req, _ := http.NewRequest("POST", p.URL("front", "/"), io.MultiReader(strings.NewReader(body[:70000]), strings.NewReader(body[70000:])))
		if !chunked {
			req.ContentLength = int64(len(body))
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(b) != body {
			t.Fatalf("chunked=%v: %d, %d bytes back, want the whole body replayed", chunked, resp.StatusCode, len(b))
		}
	}
	p.WaitStat("cluster.pool.upstream_rq_retry_success", 2)
}

func TestRetryConditions(t *testing.T) {
	t.Run("previous_hosts avoids the failed host", func(t *testing.T) {
		bad := startUpstream(t, func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(503) })
		good := startUpstream(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "good") })
		p := servertest.Start(t, resilienceBootstrap(`, retry_policy: {retry_on: 5xx, num_retries: 1, retry_back_off: {base_interval: 0.001s}, retry_host_predicate: [{name: envoy.retry_host_predicates.previous_hosts, typed_config: {"@type": type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate}}], host_selection_retry_max_attempts: 20}`,
			"lb_policy: RANDOM", bad.port(), good.port()))
		for i := 0; i < 20; i++ {
			if code, body, _ := getBody(t, p.URL("front", "/")); code != 200 || body != "good" {
				t.Fatalf("request %d: %d %q", i, code, body)
			}
		}
	})
	t.Run("retriable-headers and gRPC status", func(t *testing.T) {
		var calls atomic.Int32
		up := startUpstream(t, func(w http.ResponseWriter, r *http.Request) {
			switch calls.Add(1) {
			case 1:
				w.Header().Set("X-Upstream-Retry", "please")
			case 3:
				w.Header().Set("Grpc-Status", "14")
			}
			io.WriteString(w, "ok")
		})
		p := servertest.Start(t, resilienceBootstrap(`, retry_policy: {retry_on: "retriable-headers,unavailable", num_retries: 1, retry_back_off: {base_interval: 0.001s}, retriable_headers: [{name: x-upstream-retry, present_match: true}]}`, "", up.port()))
		for i := 0; i < 2; i++ {
			if _, _, h := getBody(t, p.URL("front", "/")); h.Get("X-Upstream-Retry") != "" || h.Get("Grpc-Status") != "" {
				t.Fatalf("request %d answered from the attempt that asked for a retry: %v", i, h)
			}
		}
		if calls.Load() != 4 {
			t.Fatalf("%d upstream calls, want 4 (two retried)", calls.Load())
		}
	})
}

// A hash-policy cookie with a ttl is generated when absent and set on the
// response; the client that sends it back keeps its host.
func TestHashCookieGenerated(t *testing.T) {
	var hosts []int
	for i := 0; i < 3; i++ {
		i := i
		hosts = append(hosts, startUpstream(t, func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, i) }).port())
	}
	p := servertest.Start(t, resilienceBootstrap(`, hash_policy: [{cookie: {name: sticky, ttl: 3600s, path: /}}]`, "lb_policy: RING_HASH", hosts...))
	_, first, h := getBody(t, p.URL("front", "/"))
	sc := h.Get("Set-Cookie")
	if !strings.HasPrefix(sc, `sticky="`) || !strings.Contains(sc, "Max-Age=3600") || !strings.Contains(sc, "Path=/") {
		t.Fatalf("set-cookie %q", sc)
	}
	cookie := strings.SplitN(sc, ";", 2)[0]
	for i := 0; i < 5; i++ {
		_, again, h2 := getBody(t, p.URL("front", "/"), "Cookie", cookie)
		if again != first || h2.Get("Set-Cookie") != "" {
			t.Fatalf("with the cookie: host %s (first %s), set-cookie %q", again, first, h2.Get("Set-Cookie"))
		}
	}
}
