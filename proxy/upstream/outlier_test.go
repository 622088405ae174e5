package upstream

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/outrider-proxy/outrider/telemetry/stats"
)

// odCluster is a STATIC cluster of n hosts with outlier_detection od (JSON
// body) whose interval never fires by itself: tests drive onInterval with a
// fake clock.
func odCluster(t *testing.T, m *Manager, n int, od string) (*Cluster, *fakeClock) {
	t.Helper()
	var eps []string
	for i := range n {
		eps = append(eps, fmt.Sprintf("10.0.0.%d:80", i+1))
	}
	js := strings.Replace(staticCluster("od", "ROUND_ROBIN", eps...), `"lb_policy"`,
		`"outlier_detection":{"interval":"3600s"`+od+`},"lb_policy"`, 1)
	c := mustAdd(t, m, js)
	fc := &fakeClock{t: time.Unix(1000, 0)}
	c.outlier.mu.Lock()
	c.outlier.now = fc.now
	c.outlier.mu.Unlock()
	return c, fc
}

type fakeClock struct{ t time.Time }

func (f *fakeClock) now() time.Time          { return f.t }
func (f *fakeClock) advance(d time.Duration) { f.t = f.t.Add(d) }

func odStat(st *stats.Store, name string) uint64 {
	return st.Counter("cluster.od.outlier_detection." + name).Value()
}

func TestConsecutive5xxEjectionAndBackoff(t *testing.T) {
	m, st := newTestManager(t)
	c, clk := odCluster(t, m, 2, `,"base_ejection_time":"10s","max_ejection_time":"25s","max_ejection_percent":50`)
	h := c.Hosts()[0]
	for range 4 {
		h.ReportResponse(503)
	}
	h.ReportResponse(200) // resets the run
	for range 4 {
		h.ReportResponse(500)
	}
	if !h.Healthy() {
		t.Fatal("ejected before 5 consecutive 5xx")
	}
	h.ReportResponse(500)
	if h.Healthy() || h.HealthFlags() != "/failed_outlier_check" {
		t.Fatalf("not ejected after 5 consecutive 5xx: %s", h.HealthFlags())
	}
	if got := counts(pickN(c, 10)); got["10.0.0.2:80"] != 10 {
		t.Errorf("ejected host still chosen: %v", got)
	}
	for stat, want := range map[string]uint64{"ejections_enforced_total": 1, "ejections_enforced_consecutive_5xx": 1,
		"ejections_detected_consecutive_5xx": 1, "ejections_total": 1} {
		if got := odStat(st, stat); got != want {
			t.Errorf("%s = %d, want %d", stat, got, want)
		}
	}
	if g := st.Gauge("cluster.od.outlier_detection.ejections_active").Value(); g != 1 {
		t.Errorf("ejections_active = %d", g)
	}
	// Ejection lasts base_ejection_time × back-off: 10s the first time.
	clk.advance(9 * time.Second)
	c.outlier.onInterval()
	if h.Healthy() {
		t.Fatal("unejected before base_ejection_time")
	}
	clk.advance(time.Second)
	c.outlier.onInterval()
	if !h.Healthy() {
		t.Fatal("still ejected after base_ejection_time")
	}
	// At once again: back-off 2 → 20s.
	for range 5 {
		h.ReportResponse(502)
	}
	clk.advance(19 * time.Second)
	c.outlier.onInterval()
	if h.Healthy() {
		t.Fatal("second ejection shorter than 2 × base")
	}
	clk.advance(time.Second)
	c.outlier.onInterval()
	if !h.Healthy() {
		t.Fatal("second ejection longer than 2 × base")
	}
	// Third: 30s capped by max_ejection_time 25s.
	for range 5 {
		h.ReportResponse(500)
	}
	clk.advance(25 * time.Second)
	c.outlier.onInterval()
	if !h.Healthy() {
		t.Fatal("ejection longer than max_ejection_time")
	}
	if g := st.Gauge("cluster.od.outlier_detection.ejections_active").Value(); g != 0 {
		t.Errorf("ejections_active = %d after unejection", g)
	}
	// The gateway-failure detector counts but does not enforce by default.
	if odStat(st, "ejections_detected_consecutive_gateway_failure") != 1 || odStat(st, "ejections_enforced_consecutive_gateway_failure") != 0 {
		t.Errorf("gateway failure detected %d enforced %d", odStat(st, "ejections_detected_consecutive_gateway_failure"), odStat(st, "ejections_enforced_consecutive_gateway_failure"))
	}
}

func TestMaxEjectionPercent(t *testing.T) {
	tests := []struct {
		name       string
		od         string
		n, ejected int
		overflow   uint64
	}{
		{"default 10% of 4 hosts ejects none", ``, 4, 0, 4},
		{"always_eject_one_host", `,"always_eject_one_host":true`, 4, 1, 3},
		{"50% of 4", `,"max_ejection_percent":50`, 4, 2, 2},
		{"100%", `,"max_ejection_percent":100`, 4, 4, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, st := newTestManager(t)
			c, _ := odCluster(t, m, tt.n, tt.od)
			for _, h := range c.Hosts() {
				for range 5 {
					h.ReportResponse(500)
				}
			}
			got := 0
			for _, h := range c.Hosts() {
				if !h.Healthy() {
					got++
				}
			}
			if got != tt.ejected || odStat(st, "ejections_overflow") != tt.overflow {
				t.Errorf("ejected %d overflow %d, want %d and %d", got, odStat(st, "ejections_overflow"), tt.ejected, tt.overflow)
			}
		})
	}
}

func TestGatewayAndLocalOriginFailures(t *testing.T) {
	m, st := newTestManager(t)
	c, _ := odCluster(t, m, 2, `,"max_ejection_percent":100,"enforcing_consecutive_gateway_failure":100,"consecutive_gateway_failure":3,"split_external_local_origin_errors":true,"consecutive_local_origin_failure":2`)
	a, b := c.Hosts()[0], c.Hosts()[1]
	a.ReportResponse(502)
	a.ReportResponse(500) // not a gateway error: resets the gateway run
	a.ReportResponse(503)
	a.ReportResponse(504)
	if !a.Healthy() {
		t.Fatal("ejected after a broken gateway run")
	}
	a.ReportResult(ResultRequestFailed) // counts as 503 with split errors
	if a.Healthy() || odStat(st, "ejections_enforced_consecutive_gateway_failure") != 1 {
		t.Fatalf("gateway failures: healthy %v enforced %d", a.Healthy(), odStat(st, "ejections_enforced_consecutive_gateway_failure"))
	}
	b.ReportResult(ResultConnectFailed)
	b.ReportResult(ResultConnectSuccess)
	b.ReportResult(ResultTimeout)
	if !b.Healthy() {
		t.Fatal("ejected after a broken local-origin run")
	}
	b.ReportResult(ResultConnectFailed)
	if b.Healthy() || odStat(st, "ejections_enforced_consecutive_local_origin_failure") != 1 || odStat(st, "ejections_enforced_consecutive_5xx") != 0 {
		t.Fatalf("local origin: healthy %v, enforced local %d 5xx %d", b.Healthy(),
			odStat(st, "ejections_enforced_consecutive_local_origin_failure"), odStat(st, "ejections_enforced_consecutive_5xx"))
	}
	// Without the split, local-origin failures are 503s for consecutive_5xx.
	m2, st2 := newTestManager(t)
	c2, _ := odCluster(t, m2, 1, `,"max_ejection_percent":100`)
	h := c2.Hosts()[0]
	for range 5 {
		h.ReportResult(ResultConnectFailed)
	}
	if h.Healthy() || st2.Counter("cluster.od.outlier_detection.ejections_enforced_consecutive_5xx").Value() != 1 {
		t.Error("connect failures did not eject via consecutive_5xx")
	}
}

func TestSuccessRateAndFailurePercentage(t *testing.T) {
	m, st := newTestManager(t)
	c, clk := odCluster(t, m, 5, `,"max_ejection_percent":100,"consecutive_5xx":1000,"success_rate_request_volume":10,"success_rate_minimum_hosts":5,"enforcing_failure_percentage":100,"failure_percentage_request_volume":10,"failure_percentage_minimum_hosts":4,"failure_percentage_threshold":90`)
	hs := c.Hosts()
	// Success rates 100,100,100,100,50: mean 90, stdev 20, threshold 90-1.9*20 = 52.
	for i, h := range hs {
		for j := range 10 {
			if i == 4 && j%2 == 0 {
				h.ReportResponse(500)
			} else {
				h.ReportResponse(200)
			}
		}
	}
	clk.advance(time.Second)
	c.outlier.onInterval()
	if avg, thr := c.OutlierSuccessRateStats(false); avg != 90 || thr != 90-1.9*20 {
		t.Errorf("success rate average %v threshold %v, want 90 and 52", avg, thr)
	}
	if r := hs[4].OutlierSuccessRate(false); r != 50 {
		t.Errorf("host success rate %v", r)
	}
	if hs[4].Healthy() || odStat(st, "ejections_enforced_success_rate") != 1 || odStat(st, "ejections_detected_failure_percentage") != 0 {
		t.Fatalf("success rate: host healthy %v enforced %d fp %d", hs[4].Healthy(), odStat(st, "ejections_enforced_success_rate"), odStat(st, "ejections_detected_failure_percentage"))
	}
	// Counts are per interval: an interval with too few requests ejects nothing.
	for range 5 {
		hs[3].ReportResponse(500)
	}
	c.outlier.onInterval()
	if !hs[3].Healthy() {
		t.Fatal("ejected below request volume")
	}
	// 95% failures: the failure percentage detector (threshold 90, 4 hosts
	// with volume: the ejected one does not count) fires.
	for i, h := range hs[:4] {
		for j := range 20 {
			if i == 0 && j != 0 {
				h.ReportResponse(503)
			} else {
				h.ReportResponse(200)
			}
		}
	}
	c.outlier.onInterval()
	if hs[0].Healthy() || odStat(st, "ejections_enforced_failure_percentage") != 1 {
		t.Errorf("failure percentage: healthy %v enforced %d", hs[0].Healthy(), odStat(st, "ejections_enforced_failure_percentage"))
	}
}

func TestOutlierHealthCheckUneject(t *testing.T) {
	srv := newHCServer(t)
	m, _ := newTestManager(t)
	js := strings.Replace(hcCluster("hu", srv.addr, `"http_health_check":{"path":"/"}`, ""), `"load_assignment"`,
		`"outlier_detection":{"max_ejection_percent":100,"base_ejection_time":"3600s"},"load_assignment"`, 1)
	c := mustAdd(t, m, js)
	h := c.Hosts()[0]
	waitFor(t, "healthy", h.Healthy)
	for range 5 {
		h.ReportResponse(500)
	}
	// The next successful active check unejects at once.
	waitFor(t, "unejected by health check", h.Healthy)
}

func TestReportNoAlloc(t *testing.T) {
	m, _ := newTestManager(t)
	c, _ := odCluster(t, m, 2, ``)
	h := c.Hosts()[0]
	if a := testing.AllocsPerRun(1000, func() { h.ReportResponse(200); h.ReportResult(ResultConnectSuccess) }); a != 0 {
		t.Errorf("reporting allocates %v", a)
	}
	plain := mustAdd(t, m, staticCluster("p", "ROUND_ROBIN", "10.0.0.1:80"))
	plain.Hosts()[0].ReportResponse(500) // no outlier detection: a no-op
}
