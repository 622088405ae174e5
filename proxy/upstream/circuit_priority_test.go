package upstream

import (
	"context"
	"errors"
	"testing"
)

// prioCtx is a pool context carrying a route priority (Prioritized).
type prioCtx struct {
	context.Context
	high bool
}

func (c prioCtx) HighPriority() bool { return c.high }

// Requests of a HIGH priority route use the HIGH thresholds: DEFAULT
// overflows while HIGH still admits, each with its own gauges, and releases
// go back to the priority that took the slot.
func TestCircuitBreakerPriorities(t *testing.T) {
	ls := newLineServer(t, 0)
	m, st := newTestManager(t)
	c := cbCluster(t, m, ls, `{"thresholds":[{"max_requests":1,"max_connections":1,"max_pending_requests":1,"max_retries":1,"track_remaining":true},
		{"priority":"HIGH","max_requests":2,"max_connections":2,"max_retries":2,"track_remaining":true}]}`)
	p := c.Pool(c.Hosts()[0])
	bg := context.Background()
	contexts := []struct {
		name string
		ctx  context.Context
	}{
		{"Prioritized", prioCtx{bg, true}},
		{"WithHighPriority", WithHighPriority(bg)},
	}
	for _, tc := range contexts {
		t.Run(tc.name, func(t *testing.T) {
			def, err := p.Get(prioCtx{bg, false})
			if err != nil {
				t.Fatal(err)
			}
			var oe *OverflowError
			if _, err := p.Get(bg); !errors.As(err, &oe) || oe.Limit != "max_requests" {
				t.Fatalf("second DEFAULT Get: %v, want max_requests overflow", err)
			}
			h1, err := p.Get(tc.ctx)
			if err != nil {
				t.Fatalf("first HIGH Get refused while DEFAULT is full: %v", err)
			}
			h2, err := p.Get(tc.ctx)
			if err != nil {
				t.Fatalf("second HIGH Get: %v", err)
			}
			if _, err := p.Get(tc.ctx); !errors.As(err, &oe) || oe.Limit != "max_requests" {
				t.Fatalf("third HIGH Get: %v, want max_requests overflow", err)
			}
			gauges := map[string]int64{
				"default.rq_open": 1, "default.remaining_rq": 0, "default.cx_open": 1, "default.remaining_cx": 0,
				"high.rq_open": 1, "high.remaining_rq": 0, "high.cx_open": 1, "high.remaining_cx": 0,
			}
			for name, want := range gauges {
				if g := st.Gauge("cluster.cb.circuit_breakers." + name).Value(); g != want {
					t.Errorf("circuit_breakers.%s = %d, want %d", name, g, want)
				}
			}
			// A HIGH release frees a HIGH slot, not a DEFAULT one.
			h2.Release(false)
			if g := st.Gauge("cluster.cb.circuit_breakers.high.remaining_rq").Value(); g != 1 {
				t.Errorf("high.remaining_rq = %d after a HIGH release, want 1", g)
			}
			if _, err := p.Get(bg); !errors.As(err, &oe) {
				t.Errorf("DEFAULT Get after a HIGH release: %v, want an overflow", err)
			}
			def.Release(false)
			h1.Release(false)
			for _, name := range []string{"default.remaining_rq", "high.remaining_rq"} {
				if g := st.Gauge("cluster.cb.circuit_breakers." + name).Value(); g == 0 {
					t.Errorf("circuit_breakers.%s = 0 after every release", name)
				}
			}
		})
	}

	// Retries: max_retries per priority.
	okD, doneD := c.AdmitRetryPriority(false)
	if !okD {
		t.Fatal("first DEFAULT retry refused")
	}
	if ok, _ := c.AdmitRetry(); ok {
		t.Error("second DEFAULT retry admitted with max_retries 1")
	}
	for i := range 2 {
		ok, done := c.AdmitRetryPriority(true)
		if !ok {
			t.Fatalf("HIGH retry %d refused", i)
		}
		defer done()
	}
	if ok, _ := c.AdmitRetryPriority(true); ok {
		t.Error("third HIGH retry admitted with max_retries 2")
	}
	doneD()
	if n := st.Counter("cluster.cb.upstream_rq_retry_overflow").Value(); n != 2 {
		t.Errorf("upstream_rq_retry_overflow = %d, want 2", n)
	}
}

// The priority lookup on the pool's fast path allocates nothing.
func TestResForNoAlloc(t *testing.T) {
	ls := newLineServer(t, 0)
	m, _ := newTestManager(t)
	c := cbCluster(t, m, ls, "")
	var ctx context.Context = prioCtx{context.Background(), true}
	bg := context.Background()
	if a := testing.AllocsPerRun(100, func() {
		if c.resFor(ctx) != c.res.high.Load() || c.resFor(bg) != c.res {
			panic("wrong priority")
		}
	}); a != 0 {
		t.Errorf("resFor allocates %v", a)
	}
}

// Without HIGH thresholds the HIGH breakers are made at the first HIGH
// request, with Envoy's defaults (max_retries 3) and the block's high.*
// gauges, which exist (at 0) from the start.
func TestCircuitBreakerHighLazy(t *testing.T) {
	ls := newLineServer(t, 0)
	m, st := newTestManager(t)
	c := cbCluster(t, m, ls, `{"thresholds":[{"max_retries":1}]}`)
	if c.res.high.Load() != nil {
		t.Fatal("HIGH breakers made before any HIGH request")
	}
	if _, ok := st.Value("cluster.cb.circuit_breakers.high.rq_retry_open"); !ok {
		t.Fatal("circuit_breakers.high.rq_retry_open missing before the first HIGH request")
	}
	for i := range 3 {
		ok, done := c.AdmitRetryPriority(true)
		if !ok {
			t.Fatalf("HIGH retry %d refused", i)
		}
		defer done()
	}
	if ok, _ := c.AdmitRetryPriority(true); ok {
		t.Error("fourth HIGH retry admitted with the default max_retries 3")
	}
	if g := st.Gauge("cluster.cb.circuit_breakers.high.rq_retry_open").Value(); g != 1 {
		t.Errorf("high.rq_retry_open = %d, want 1", g)
	}
	if g := st.Gauge("cluster.cb.circuit_breakers.default.rq_retry_open").Value(); g != 0 {
		t.Errorf("default.rq_retry_open = %d, want 0", g)
	}
	if c.resFor(WithHighPriority(context.Background())) != c.res.high.Load() {
		t.Error("resFor(HIGH) is not the lazily made HIGH breakers")
	}
}
