package upstream

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// hcCluster is a STATIC cluster of addr with one health check (hcJSON is the
// health checker field, e.g. `"tcp_health_check":{}`) checking every 20ms.
func hcCluster(name, addr, hcJSON, extra string) string {
	host, port, _ := net.SplitHostPort(addr)
	return fmt.Sprintf(`{"name":%q,"connect_timeout":"1s","health_checks":[{"timeout":"1s","interval":"0.02s","no_traffic_interval":"0.02s",`+
		`"unhealthy_threshold":2,"healthy_threshold":2%s,%s}],`+
		`"load_assignment":{"cluster_name":%q,"endpoints":[{"lb_endpoints":[{"endpoint":{"address":{"socket_address":{"address":%q,"port_value":%s}}}}]}]}}`,
		name, extra, hcJSON, name, host, port)
}

// hcServer is an HTTP server whose answer the test sets.
type hcServer struct {
	status   atomic.Int64
	degraded atomic.Bool
	stall    atomic.Bool
	requests atomic.Int64
	mu       sync.Mutex
	last     *http.Request
	addr     string
}

func newHCServer(t *testing.T) *hcServer {
	t.Helper()
	s := &hcServer{}
	s.status.Store(200)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.addr = ln.Addr().String()
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.requests.Add(1)
		s.mu.Lock()
		s.last = r
		s.mu.Unlock()
		if s.stall.Load() {
			select {
			case <-r.Context().Done():
			case <-time.After(2 * time.Second):
			}
			return
		}
		if s.degraded.Load() {
			w.Header().Set("x-envoy-degraded", "1")
		}
		w.WriteHeader(int(s.status.Load()))
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return s
}

func TestHTTPHealthCheck(t *testing.T) {
	srv := newHCServer(t)
	srv.status.Store(503)
	m, st := newTestManager(t)
	logPath := filepath.Join(t.TempDir(), "hc.log")
	c := mustAdd(t, m, hcCluster("h", srv.addr,
		`"http_health_check":{"path":"/hc","host":"svc","request_headers_to_add":[{"header":{"key":"x-a","value":"b"}}]}`,
		fmt.Sprintf(`,"event_log_path":%q`, logPath)))
	host := c.Hosts()[0]
	gauge := func() int64 { return st.Gauge("cluster.h.health_check.healthy").Value() }
	waitFor(t, "failed checks", func() bool { return st.Counter("cluster.h.health_check.failure").Value() >= 2 })
	if host.Healthy() || host.HealthFlags() != "/failed_active_hc" || gauge() != 0 {
		t.Fatalf("a host never checked healthy: healthy %v flags %q gauge %d", host.Healthy(), host.HealthFlags(), gauge())
	}
	srv.status.Store(200)
	// The first success after start-up does not wait for healthy_threshold;
	// the first check failed, so two successes are needed here.
	waitFor(t, "healthy", host.Healthy)
	// The gauges follow the host's flag once the host set is rebuilt.
	waitFor(t, "membership_healthy", func() bool { return st.Gauge("cluster.h.membership_healthy").Value() == 1 && gauge() == 1 })
	if gauge() != 1 || st.Gauge("cluster.h.membership_healthy").Value() != 1 {
		t.Errorf("healthy gauge %d, membership_healthy %d", gauge(), st.Gauge("cluster.h.membership_healthy").Value())
	}
	srv.mu.Lock()
	r := srv.last
	srv.mu.Unlock()
	if r.URL.Path != "/hc" || r.Host != "svc" || r.Header.Get("user-agent") != "Envoy/HC" || r.Header.Get("x-a") != "b" {
		t.Errorf("check request: path %q host %q headers %v", r.URL.Path, r.Host, r.Header)
	}
	// A non-expected status ejects at once (ACTIVE failures ignore
	// unhealthy_threshold).
	srv.status.Store(500)
	waitFor(t, "ejected", func() bool { return !host.Healthy() })
	srv.status.Store(200)
	srv.degraded.Store(true)
	waitFor(t, "degraded", func() bool { return host.Health() == Degraded })
	if host.HealthFlags() != "/degraded_active_hc" || st.Gauge("cluster.h.health_check.degraded").Value() != 1 {
		t.Errorf("flags %q degraded gauge %d", host.HealthFlags(), st.Gauge("cluster.h.health_check.degraded").Value())
	}
	srv.degraded.Store(false)
	waitFor(t, "no longer degraded", host.Healthy)
	// A stalled host fails by timeout; unhealthy_threshold applies.
	m.Remove("h")
	c = mustAdd(t, m, strings.Replace(hcCluster("h", srv.addr, `"http_health_check":{"path":"/hc"}`, ""), `"timeout":"1s"`, `"timeout":"0.05s"`, 1))
	host = c.Hosts()[0]
	waitFor(t, "healthy again", host.Healthy)
	srv.stall.Store(true)
	waitFor(t, "timed out", func() bool { return host.HealthFlags() == "/failed_active_hc/active_hc_timeout" })
	if n := st.Counter("cluster.h.health_check.network_failure").Value(); n < 2 {
		t.Errorf("network_failure = %d; timeouts count as network failures", n)
	}
	srv.stall.Store(false)
	m.Remove("h")
	// Removal stops checking.
	n := srv.requests.Load()
	time.Sleep(80 * time.Millisecond)
	if got := srv.requests.Load(); got != n {
		t.Errorf("%d checks after the cluster was removed", got-n)
	}
	b, err := os.ReadFile(logPath)
	if err != nil {
		t.Fatal(err)
	}
	log := string(b)
	for _, want := range []string{
		`"health_checker_type":"HTTP"`, `"cluster_name":"h"`,
		`"health_check_failure_event":{"failure_type":"ACTIVE","first_check":true,"http_status_code":503}`,
		`"add_healthy_event":{"first_check":false}`, `"eject_unhealthy_event":{"failure_type":"ACTIVE","http_status_code":500}`,
		`"degraded_healthy_host":{}`, `"no_longer_degraded_host":{}`,
		`"socket_address":{"protocol":"TCP","address":"127.0.0.1"`,
	} {
		if !strings.Contains(log, want) {
			t.Errorf("event log lacks %s:\n%s", want, log)
		}
	}
	if lines := strings.Count(log, "\n"); lines < 5 {
		t.Errorf("event log has %d lines", lines)
	}
}

func TestHTTPHealthCheckFirstSuccess(t *testing.T) {
	srv := newHCServer(t)
	m, st := newTestManager(t)
	c := mustAdd(t, m, hcCluster("f", srv.addr, `"http_health_check":{"path":"/","expected_statuses":[{"start":200,"end":300}]}`, ""))
	host := c.Hosts()[0]
	// healthy_threshold is 2, yet the very first success makes it healthy.
	waitFor(t, "healthy", host.Healthy)
	if s := st.Counter("cluster.f.health_check.success").Value(); s < 1 || st.Counter("cluster.f.health_check.attempt").Value() < s {
		t.Errorf("success %d attempt %d", s, st.Counter("cluster.f.health_check.attempt").Value())
	}
	srv.status.Store(204) // inside expected_statuses
	time.Sleep(60 * time.Millisecond)
	if !host.Healthy() {
		t.Error("204 is expected, host failed")
	}
}

func TestTCPHealthCheck(t *testing.T) {
	ls := newLineServer(t, 0)
	m, st := newTestManager(t)
	// send "hi\n", expect "ok\n" (hex).
	c := mustAdd(t, m, hcCluster("t", ls.addrPort().String(), `"tcp_health_check":{"send":{"text":"68690a"},"receive":[{"text":"6f6b"},{"text":"0a"}]}`, ""))
	host := c.Hosts()[0]
	waitFor(t, "healthy", host.Healthy)
	if ls.accepts.Load() != 1 {
		t.Errorf("reuse_connection: %d connections", ls.accepts.Load())
	}
	// Payload mismatch: waits for the answer until the timeout.
	c2 := mustAdd(t, m, strings.Replace(hcCluster("t2", ls.addrPort().String(), `"tcp_health_check":{"send":{"text":"68690a"},"receive":[{"text":"6e6f"}]}`, ""), `"timeout":"1s"`, `"timeout":"0.05s"`, 1))
	waitFor(t, "timeouts", func() bool { return st.Counter("cluster.t2.health_check.failure").Value() >= 2 })
	if c2.Hosts()[0].Healthy() {
		t.Error("mismatching host is healthy")
	}
	// Connect-only check of a closed port: network failures.
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	dead := ln.Addr().String()
	ln.Close()
	c3 := mustAdd(t, m, hcCluster("t3", dead, `"tcp_health_check":{}`, ""))
	waitFor(t, "network failures", func() bool { return st.Counter("cluster.t3.health_check.network_failure").Value() >= 2 })
	if c3.Hosts()[0].Healthy() {
		t.Error("dead host healthy")
	}
	// A healthy host needs unhealthy_threshold network failures.
	c4 := mustAdd(t, m, hcCluster("t4", ls.addrPort().String(), `"tcp_health_check":{}`, ""))
	waitFor(t, "connect-only healthy", c4.Hosts()[0].Healthy)
}

func TestBadHealthCheckConfig(t *testing.T) {
	tests := []struct{ name, hc, want string }{
		{"h2", `"http_health_check":{"path":"/","codec_client_type":"HTTP2"}`, `health_checks[0].http_health_check.codec_client_type: HTTP2 is not supported yet`},
		{"bad range", `"http_health_check":{"path":"/","expected_statuses":[{"start":300,"end":200}]}`, `expected_statuses: Invalid http status range: expecting start < end`},
		{"bad hex", `"tcp_health_check":{"send":{"text":"zz"}}`, `health_checks[0].tcp_health_check.send.text: invalid hex string "zz"`},
		{"redis", `"custom_health_check":{"name":"envoy.health_checkers.redis"}`, `only http_health_check, tcp_health_check and grpc_health_check are supported`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, _ := newTestManager(t)
			err := m.AddOrUpdate(parseCluster(t, hcCluster("b", "127.0.0.1:1", tt.hc, "")))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %v, want %q", err, tt.want)
			}
		})
	}
	m, _ := newTestManager(t)
	two := strings.Replace(hcCluster("b", "127.0.0.1:1", `"tcp_health_check":{}`, ""), `"health_checks":[{`, `"health_checks":[{"timeout":"1s","interval":"1s","unhealthy_threshold":1,"healthy_threshold":1,"tcp_health_check":{}},{`, 1)
	if err := m.AddOrUpdate(parseCluster(t, two)); err == nil || !strings.Contains(err.Error(), "Multiple health checks not supported") {
		t.Errorf("two health checks: %v", err)
	}
}

func TestGRPCHealthCheck(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	hs := health.NewServer()
	hs.SetServingStatus("svc", healthpb.HealthCheckResponse_NOT_SERVING)
	healthpb.RegisterHealthServer(gs, hs)
	go gs.Serve(ln)
	t.Cleanup(gs.Stop)
	m, st := newTestManager(t)
	c := mustAdd(t, m, hcCluster("g", ln.Addr().String(), `"grpc_health_check":{"service_name":"svc"}`, ""))
	host := c.Hosts()[0]
	waitFor(t, "failures", func() bool { return st.Counter("cluster.g.health_check.failure").Value() >= 1 })
	if host.Healthy() {
		t.Fatal("NOT_SERVING host healthy")
	}
	hs.SetServingStatus("svc", healthpb.HealthCheckResponse_SERVING)
	waitFor(t, "serving", host.Healthy)
	hs.SetServingStatus("svc", healthpb.HealthCheckResponse_NOT_SERVING)
	waitFor(t, "not serving", func() bool { return !host.Healthy() })
	if st.Counter("cluster.g.health_check.network_failure").Value() != 0 {
		t.Error("NOT_SERVING counted as a network failure")
	}
}

func TestHealthCheckInterval(t *testing.T) {
	m, st := newTestManager(t)
	c := mustAdd(t, m, `{"name":"i","health_checks":[{"timeout":"1s","interval":"10s","unhealthy_interval":"20s","unhealthy_edge_interval":"30s","healthy_edge_interval":"40s","no_traffic_interval":"50s","no_traffic_healthy_interval":"55s","unhealthy_threshold":3,"healthy_threshold":3,"tcp_health_check":{}}]}`)
	h := c.hc
	failed := newHost(c, netip4(1), "", 1, 0, nil, nil, 0)
	failed.flags.store(fFailedActiveHC, true)
	ok := newHost(c, netip4(2), "", 1, 0, nil, nil, 0)
	if d := h.next(true, changed, failed); d != 50*time.Second {
		t.Errorf("no traffic, failed host: %v", d)
	}
	if d := h.next(true, changed, ok); d != 55*time.Second {
		t.Errorf("no traffic, healthy host: %v", d)
	}
	st.Counter("cluster.i.upstream_cx_total").Inc()
	for _, tt := range []struct {
		ok   bool
		tr   transition
		want time.Duration
	}{
		{true, unchanged, 10 * time.Second},
		{true, changePending, 40 * time.Second},
		{false, unchanged, 20 * time.Second},
		{false, changePending, 30 * time.Second},
		{false, changed, 20 * time.Second},
	} {
		if d := h.next(tt.ok, tt.tr, ok); d != tt.want {
			t.Errorf("next(%v, %d) = %v, want %v", tt.ok, tt.tr, d, tt.want)
		}
	}
	h.jitter, h.jitterPercent = 100*time.Millisecond, 10
	for range 50 {
		if d := h.next(true, unchanged, ok); d < 10*time.Second || d >= 11*time.Second+100*time.Millisecond {
			t.Fatalf("jittered interval %v", d)
		}
	}
}

func TestHealthCheckWarming(t *testing.T) {
	srv := newHCServer(t)
	srv.stall.Store(true) // the first check hangs until its timeout
	m, _ := newTestManager(t)
	js := strings.Replace(hcCluster("w", srv.addr, `"http_health_check":{"path":"/"}`, ""), `"timeout":"1s"`, `"timeout":"0.3s"`, 1)
	c := mustAdd(t, m, js)
	select {
	case <-c.Initialized():
		t.Fatal("initialized before the first health check finished")
	default:
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := m.WaitInitialized(ctx); err != nil {
		t.Fatalf("not initialized after the first check: %v", err)
	}
	if c.Hosts()[0].Healthy() {
		t.Error("timed-out host healthy")
	}
	// Endpoints with disable_active_health_check are neither checked nor failed.
	js = strings.Replace(hcCluster("d", srv.addr, `"http_health_check":{"path":"/"}`, ""), `"endpoint":{`, `"endpoint":{"health_check_config":{"disable_active_health_check":true},`, 1)
	d := mustAdd(t, m, js)
	select {
	case <-d.Initialized():
	default:
		t.Error("a cluster without checked hosts is not initialized at once")
	}
	if !d.Hosts()[0].Healthy() {
		t.Error("unchecked host unhealthy")
	}
}

func TestResilienceGoroutinesStop(t *testing.T) {
	srv := newHCServer(t)
	ls := newLineServer(t, 0)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	healthpb.RegisterHealthServer(gs, health.NewServer())
	go gs.Serve(ln)
	t.Cleanup(gs.Stop)
	before := runtime.NumGoroutine()
	m, _ := newTestManager(t)
	for i, hc := range []struct{ addr, js string }{
		{srv.addr, `"http_health_check":{"path":"/"}`},
		{ls.addrPort().String(), `"tcp_health_check":{"send":{"text":"68690a"},"receive":[{"text":"6f6b0a"}]}`},
		{ln.Addr().String(), `"grpc_health_check":{}`},
	} {
		js := strings.Replace(hcCluster(fmt.Sprintf("c%d", i), hc.addr, hc.js, ""), `"load_assignment"`, `"outlier_detection":{"interval":"0.01s"},"load_assignment"`, 1)
		c := mustAdd(t, m, js)
		waitFor(t, "healthy", c.Hosts()[0].Healthy)
	}
	if runtime.NumGoroutine() <= before {
		t.Fatal("no goroutines started")
	}
	m.Close()
	waitFor(t, "goroutines to stop", func() bool { return runtime.NumGoroutine() <= before+2 })
}
