package upstream

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"
)

// TestCarryOverHealthCheck: a changed cluster's host takes the health check
// flags of the old cluster's host only when the check and the checked
// address are the same; then it is healthy and warm without a check.
func TestCarryOverHealthCheck(t *testing.T) {
	const hc = `"http_health_check":{"path":"/"}`
	for _, tc := range []struct {
		name    string
		change  func(js string) string
		carried bool
	}{
		{"connect_timeout", func(js string) string {
			return strings.Replace(js, `"connect_timeout":"1s"`, `"connect_timeout":"2s"`, 1)
		}, true},
		{"check path", func(js string) string { return strings.Replace(js, `"path":"/"`, `"path":"/other"`, 1) }, false},
		{"check hostname", func(js string) string {
			return strings.Replace(js, `"endpoint":{`, `"endpoint":{"health_check_config":{"hostname":"other.example"},`, 1)
		}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := newHCServer(t)
			m, st := newTestManager(t)
			js := hcCluster("hc", srv.addr, hc, "")
			old := mustAdd(t, m, js)
			waitFor(t, "first cluster healthy", func() bool { return old.Hosts()[0].Healthy() })
			srv.stall.Store(true) // checks of the new cluster never finish in time
			nc, err := m.Stage(parseCluster(t, tc.change(js)))
			if err != nil {
				t.Fatal(err)
			}
			defer m.Discard(nc)
			select {
			case <-nc.Initialized():
				if !tc.carried {
					t.Fatal("warm without its first check")
				}
			case <-time.After(200 * time.Millisecond):
				if tc.carried {
					t.Fatal("waits for a first check of a host known healthy")
				}
			}
			if got := nc.Hosts()[0].HealthFlags(); (got == "healthy") != tc.carried {
				t.Fatalf("new host flags %q, carried %v", got, tc.carried)
			}
			if !tc.carried {
				return
			}
			if !m.Activate(nc) {
				t.Fatal("not activated")
			}
			if g := st.Gauge("cluster.hc.health_check.healthy").Value(); g != 1 {
				t.Errorf("health_check.healthy = %d, want 1", g)
			}
			// The new cluster's checks still count: a failing host fails
			// after unhealthy_threshold (a non-200 fails at once).
			srv.stall.Store(false)
			srv.status.Store(503)
			waitFor(t, "new cluster's check fails the host", func() bool { return !nc.Hosts()[0].Healthy() })
		})
	}
}

// TestCarryOverFailedHost: a host failed by the old cluster's checks stays
// failed and needs healthy_threshold successes (its next check is not a
// first check).
func TestCarryOverFailedHost(t *testing.T) {
	srv := newHCServer(t)
	srv.status.Store(503)
	m, _ := newTestManager(t)
	js := hcCluster("hc", srv.addr, `"http_health_check":{"path":"/"}`, "")
	old := mustAdd(t, m, js)
	waitFor(t, "first checks", func() bool { return old.HealthCheck.Failure.Value() > 0 })
	nc, err := m.Stage(parseCluster(t, strings.Replace(js, `"connect_timeout":"1s"`, `"connect_timeout":"2s"`, 1)))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Discard(nc)
	<-nc.Initialized() // not waiting for a check
	h := nc.Hosts()[0]
	if h.HealthFlags() != "/failed_active_hc" {
		t.Fatalf("flags %q, want /failed_active_hc", h.HealthFlags())
	}
	srv.status.Store(200)
	base := nc.HealthCheck.Success.Value()
	waitFor(t, "healthy again", h.Healthy)
	if got := nc.HealthCheck.Success.Value() - base; got < 2 {
		t.Errorf("healthy after %d successes, want healthy_threshold 2", got)
	}
}

// TestCarryOverOutlier: an ejected host stays ejected in the changed
// cluster until its ejection time is up, and counts in ejections_active.
func TestCarryOverOutlier(t *testing.T) {
	m, st := newTestManager(t)
	c, clk := odCluster(t, m, 2, `,"base_ejection_time":"10s","max_ejection_percent":50`)
	for range 5 {
		c.Hosts()[0].ReportResponse(503)
	}
	if c.Hosts()[0].Healthy() {
		t.Fatal("not ejected")
	}
	js := strings.Replace(staticCluster("od", "ROUND_ROBIN", "10.0.0.1:80", "10.0.0.2:80"), `"lb_policy"`,
		`"connect_timeout":"7s","outlier_detection":{"interval":"3600s","base_ejection_time":"10s","max_ejection_percent":50},"lb_policy"`, 1)
	nc := mustAdd(t, m, js)
	if nc == c {
		t.Fatal("cluster not replaced")
	}
	nc.outlier.mu.Lock()
	nc.outlier.now = clk.now
	nc.outlier.mu.Unlock()
	h := nc.Hosts()[0]
	if h.HealthFlags() != "/failed_outlier_check" || !nc.Hosts()[1].Healthy() {
		t.Fatalf("flags %q / %q", h.HealthFlags(), nc.Hosts()[1].HealthFlags())
	}
	if g := st.Gauge("cluster.od.outlier_detection.ejections_active").Value(); g != 1 {
		t.Errorf("ejections_active = %d, want 1", g)
	}
	clk.advance(5 * time.Second)
	nc.outlier.onInterval()
	if h.Healthy() {
		t.Fatal("unejected before base_ejection_time")
	}
	clk.advance(6 * time.Second)
	nc.outlier.onInterval()
	if !h.Healthy() {
		t.Fatalf("still ejected after base_ejection_time: %s", h.HealthFlags())
	}
	if g := st.Gauge("cluster.od.outlier_detection.ejections_active").Value(); g != 0 {
		t.Errorf("ejections_active = %d after uneject, want 0", g)
	}
}

func poolCluster(addr, extra string) string {
	host, port, _ := net.SplitHostPort(addr)
	return `{"name":"p","connect_timeout":"1s"` + extra + `,"load_assignment":{"cluster_name":"p","endpoints":[{"lb_endpoints":[` +
		`{"endpoint":{"address":{"socket_address":{"address":"` + host + `","port_value":` + port + `}}}}]}]}}`
}

// TestCarryOverPool: idle HTTP/1 connections (and one in use at the
// update, once released) move to the changed cluster when the connection
// settings are equal; otherwise they close and the new cluster dials.
func TestCarryOverPool(t *testing.T) {
	for _, tc := range []struct {
		name    string
		extra   string
		accepts int64
	}{
		{"dns_refresh_rate changed", `,"dns_refresh_rate":"7s"`, 2},
		{"idle_timeout changed", `,"common_http_protocol_options":{"idle_timeout":"30s"}`, 4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := newLineServer(t, 0)
			m, st := newTestManager(t)
			addr := srv.addrPort().String()
			old := mustAdd(t, m, poolCluster(addr, ""))
			ctx := context.Background()
			p := old.Pool(old.Hosts()[0])
			idle, err := p.Get(ctx)
			if err != nil {
				t.Fatal(err)
			}
			busy, err := p.Get(ctx)
			if err != nil {
				t.Fatal(err)
			}
			roundTrip(t, idle.Conn)
			roundTrip(t, busy.Conn)
			idle.Release(true)
			nc := mustAdd(t, m, poolCluster(addr, tc.extra))
			if nc == old {
				t.Fatal("cluster not replaced")
			}
			busy.Release(true) // released after the update
			np := nc.Pool(nc.Hosts()[0])
			var got []*PooledConn
			for range 2 {
				pc, err := np.Get(ctx)
				if err != nil {
					t.Fatal(err)
				}
				roundTrip(t, pc.Conn)
				got = append(got, pc)
			}
			if n := srv.accepts.Load(); n != tc.accepts {
				t.Errorf("upstream accepted %d connections, want %d", n, tc.accepts)
			}
			if g := st.Gauge("cluster.p.upstream_cx_active").Value(); g != 2 {
				t.Errorf("upstream_cx_active = %d, want 2", g)
			}
			if a, b := nc.Hosts()[0].StatsView().CxActive.Load(), old.Hosts()[0].StatsView().CxActive.Load(); a != 2 || b != 0 {
				t.Errorf("host cx_active new %d old %d, want 2 and 0", a, b)
			}
			for _, pc := range got {
				if pc.UpstreamConn().Host() != nc.Hosts()[0] {
					t.Error("moved connection still names the old host")
				}
				pc.Release(false)
			}
			if g := st.Gauge("cluster.p.upstream_cx_active").Value(); g != 0 {
				t.Errorf("upstream_cx_active = %d after close, want 0", g)
			}
			if n := nc.Hosts()[0].StatsView().CxActive.Load(); n != 0 {
				t.Errorf("new host cx_active = %d after close, want 0", n)
			}
		})
	}
}

// TestCarryOverH2Pool: HTTP/2 connections move to the changed cluster when
// the connection settings are equal, and close otherwise.
func TestCarryOverH2Pool(t *testing.T) {
	for _, tc := range []struct {
		name    string
		extra   string
		accepts int64
	}{
		{"dns_refresh_rate changed", `,"dns_refresh_rate":"7s"`, 1},
		{"max_concurrent_streams changed", `,"http2_protocol_options":{"max_concurrent_streams":50}`, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr, accepts := startH2C(t)
			m, st := newTestManager(t)
			base := `,"http2_protocol_options":{}`
			old := mustAdd(t, m, poolCluster(addr, base))
			get := func(c *Cluster) {
				t.Helper()
				if code := h2Get(t, c.H2Pool(c.Hosts()[0])); code != 204 {
					t.Fatalf("status %d", code)
				}
			}
			get(old)
			extra := tc.extra
			if !strings.Contains(extra, "http2_protocol_options") {
				extra = base + extra
			}
			nc := mustAdd(t, m, poolCluster(addr, extra))
			get(nc)
			if n := accepts.Load(); n != tc.accepts {
				t.Errorf("upstream accepted %d connections, want %d", n, tc.accepts)
			}
			if n := nc.Hosts()[0].StatsView().CxActive.Load(); n != 1 {
				t.Errorf("new host cx_active = %d, want 1", n)
			}
			waitFor(t, "one active connection", func() bool {
				return st.Gauge("cluster.p.upstream_cx_active").Value() == 1 && old.Hosts()[0].StatsView().CxActive.Load() == 0
			})
			m.Remove("p")
			waitFor(t, "connections closed", func() bool {
				return st.Gauge("cluster.p.upstream_cx_active").Value() == 0 && nc.Hosts()[0].StatsView().CxActive.Load() == 0 &&
					old.Hosts()[0].StatsView().CxActive.Load() == 0
			})
		})
	}
}

// TestDrainEndsHangingCheck: a replaced or removed cluster's check that
// hangs ends with the cluster, so draining (which the xDS applier waits
// for) and closing its pools do not wait for the check's timeout.
func TestDrainEndsHangingCheck(t *testing.T) {
	for _, kind := range []string{`"http_health_check":{"path":"/"}`, `"tcp_health_check":{"send":{"text":"00"},"receive":[{"text":"01"}]}`} {
		srv := newHCServer(t)
		srv.stall.Store(true)
		m, _ := newTestManager(t)
		js := strings.Replace(hcCluster("hang", srv.addr, kind, ""), `"timeout":"1s"`, `"timeout":"30s"`, 1)
		c := mustAdd(t, m, js)
		if strings.Contains(kind, "http") {
			waitFor(t, "a check in flight", func() bool { return srv.requests.Load() > 0 })
		} else {
			waitFor(t, "a check in flight", func() bool { return c.HealthCheck.Attempt.Value() > 0 })
			time.Sleep(50 * time.Millisecond) // connected and waiting for its answer
		}
		done := make(chan struct{})
		go func() { m.Remove("hang"); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: draining waits for the hanging check's 30 s timeout", kind)
		}
	}
}
