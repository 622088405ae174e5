package upstream

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

// cbCluster is a STATIC cluster of one lineServer with circuit_breakers cb.
func cbCluster(t testing.TB, m *Manager, ls *lineServer, cb string) *Cluster {
	t.Helper()
	js := staticCluster("cb", "ROUND_ROBIN", ls.addrPort().String())
	if cb != "" {
		js = strings.Replace(js, `"lb_policy"`, `"circuit_breakers":`+cb+`,"lb_policy"`, 1)
	}
	return mustAdd(t, m, js)
}

func TestMaxRequests(t *testing.T) {
	ls := newLineServer(t, 0)
	m, st := newTestManager(t)
	c := cbCluster(t, m, ls, `{"thresholds":[{"max_requests":1,"track_remaining":true}]}`)
	p := c.Pool(c.Hosts()[0])
	ctx := context.Background()
	a, err := p.Get(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if g := st.Gauge("cluster.cb.circuit_breakers.default.rq_open").Value(); g != 1 {
		t.Errorf("rq_open = %d at the limit", g)
	}
	if g := st.Gauge("cluster.cb.circuit_breakers.default.remaining_rq").Value(); g != 0 {
		t.Errorf("remaining_rq = %d", g)
	}
	_, err = p.Get(ctx)
	var oe *OverflowError
	if !errors.As(err, &oe) || oe.Limit != "max_requests" {
		t.Fatalf("second Get: %v", err)
	}
	if n := st.Counter("cluster.cb.upstream_rq_pending_overflow").Value(); n != 1 {
		t.Errorf("upstream_rq_pending_overflow = %d", n)
	}
	roundTrip(t, a.Conn)
	a.Release(true)
	if g := st.Gauge("cluster.cb.circuit_breakers.default.rq_open").Value(); g != 0 {
		t.Errorf("rq_open = %d after release", g)
	}
	b, err := p.Get(ctx)
	if err != nil || !b.Reused {
		t.Fatalf("Get after release: %v reused %v", err, b != nil && b.Reused)
	}
	b.Release(true)
}

func TestMaxConnectionsAndPending(t *testing.T) {
	ls := newLineServer(t, 0)
	m, st := newTestManager(t)
	c := cbCluster(t, m, ls, `{"thresholds":[{"max_connections":1,"max_pending_requests":1}]}`)
	p := c.Pool(c.Hosts()[0])
	ctx := context.Background()
	a, err := p.Get(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if g := st.Gauge("cluster.cb.circuit_breakers.default.cx_open").Value(); g != 1 {
		t.Errorf("cx_open = %d", g)
	}
	// A second request waits for the connection (pending).
	type res struct {
		pc  *PooledConn
		err error
	}
	got := make(chan res, 1)
	go func() {
		pc, err := p.Get(ctx)
		got <- res{pc, err}
	}()
	waitFor(t, "pending request", func() bool { return st.Gauge("cluster.cb.upstream_rq_pending_active").Value() == 1 })
	if n := st.Counter("cluster.cb.upstream_cx_overflow").Value(); n != 1 {
		t.Errorf("upstream_cx_overflow = %d", n)
	}
	if g := st.Gauge("cluster.cb.circuit_breakers.default.rq_pending_open").Value(); g != 1 {
		t.Errorf("rq_pending_open = %d", g)
	}
	// A third finds no pending room.
	_, err = p.Get(ctx)
	var oe *OverflowError
	if !errors.As(err, &oe) || oe.Limit != "max_pending_requests" {
		t.Fatalf("third Get: %v", err)
	}
	// Releasing the connection hands it to the waiter.
	roundTrip(t, a.Conn)
	a.Release(true)
	var r res
	select {
	case r = <-got:
	case <-time.After(5 * time.Second):
		t.Fatal("waiter not woken")
	}
	if r.err != nil || !r.pc.Reused {
		t.Fatalf("waiter: %v", r.err)
	}
	roundTrip(t, r.pc.Conn)
	if ls.accepts.Load() != 1 {
		t.Errorf("%d connections opened with max_connections 1", ls.accepts.Load())
	}
	// Closing the connection frees the slot for a waiter too.
	go func() {
		pc, err := p.Get(ctx)
		got <- res{pc, err}
	}()
	waitFor(t, "pending again", func() bool { return st.Gauge("cluster.cb.upstream_rq_pending_active").Value() == 1 })
	r.pc.Release(false)
	select {
	case r = <-got:
	case <-time.After(5 * time.Second):
		t.Fatal("waiter not woken by a close")
	}
	if r.err != nil || r.pc.Reused {
		t.Fatalf("waiter after close: %v", r.err)
	}
	// A cancelled wait returns the context error and frees its pending slot.
	cctx, cancel := context.WithTimeout(ctx, 30*time.Millisecond)
	defer cancel()
	if _, err := p.Get(cctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("cancelled wait: %v", err)
	}
	if g := st.Gauge("cluster.cb.upstream_rq_pending_active").Value(); g != 0 {
		t.Errorf("upstream_rq_pending_active = %d", g)
	}
	r.pc.Release(false)
	if g := st.Gauge("cluster.cb.circuit_breakers.default.cx_open").Value(); g != 0 {
		t.Errorf("cx_open = %d with no connection", g)
	}
}

func TestPerHostMaxConnections(t *testing.T) {
	ls := newLineServer(t, 0)
	m, st := newTestManager(t)
	c := cbCluster(t, m, ls, `{"per_host_thresholds":[{"max_connections":1}]}`)
	p := c.Pool(c.Hosts()[0])
	a, err := p.Get(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
	defer cancel()
	if _, err := p.Get(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("second connection to the host: %v", err)
	}
	if st.Counter("cluster.cb.upstream_cx_overflow").Value() != 1 || ls.accepts.Load() != 1 {
		t.Errorf("upstream_cx_overflow %d, %d connections", st.Counter("cluster.cb.upstream_cx_overflow").Value(), ls.accepts.Load())
	}
	a.Release(false)
}

// A HIGH route uses the HIGH per-host max_connections, counting the host's
// connections of both priorities.
func TestPerHostMaxConnectionsHigh(t *testing.T) {
	ls := newLineServer(t, 0)
	m, st := newTestManager(t)
	c := cbCluster(t, m, ls, `{"per_host_thresholds":[{"max_connections":1},{"priority":"HIGH","max_connections":2}]}`)
	p := c.Pool(c.Hosts()[0])
	a, err := p.Get(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	short := func(ctx context.Context) (context.Context, context.CancelFunc) {
		return context.WithTimeout(ctx, 30*time.Millisecond)
	}
	ctx, cancel := short(context.Background())
	defer cancel()
	if _, err := p.Get(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("second DEFAULT connection to the host: %v", err)
	}
	hctx, hcancel := short(WithHighPriority(context.Background()))
	defer hcancel()
	b, err := p.Get(hctx)
	if err != nil {
		t.Fatalf("second connection for a HIGH route (limit 2): %v", err)
	}
	hctx2, hcancel2 := short(WithHighPriority(context.Background()))
	defer hcancel2()
	if _, err := p.Get(hctx2); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("third connection for a HIGH route (limit 2): %v", err)
	}
	if got := st.Counter("cluster.cb.upstream_cx_overflow").Value(); got != 2 || ls.accepts.Load() != 2 {
		t.Errorf("upstream_cx_overflow %d, %d connections; want 2 and 2", got, ls.accepts.Load())
	}
	a.Release(false)
	b.Release(false)
}

func TestAdmitRetry(t *testing.T) {
	ls := newLineServer(t, 0)
	m, st := newTestManager(t)
	c := cbCluster(t, m, ls, `{"thresholds":[{"max_retries":2}]}`)
	ok1, d1 := c.AdmitRetry()
	ok2, d2 := c.AdmitRetry()
	ok3, _ := c.AdmitRetry()
	if !ok1 || !ok2 || ok3 {
		t.Fatalf("admitted %v %v %v with max_retries 2", ok1, ok2, ok3)
	}
	if st.Counter("cluster.cb.upstream_rq_retry_overflow").Value() != 1 || st.Gauge("cluster.cb.circuit_breakers.default.rq_retry_open").Value() != 1 {
		t.Error("retry overflow not counted")
	}
	d1()
	if ok, d := c.AdmitRetry(); !ok {
		t.Error("retry refused after one finished")
	} else {
		d()
	}
	d2()
	// Retry budget: 50% of active requests, at least 1.
	c = cbCluster(t, m, ls, `{"thresholds":[{"max_retries":100,"retry_budget":{"budget_percent":{"value":50},"min_retry_concurrency":1}}]}`)
	p := c.Pool(c.Hosts()[0])
	var pcs []*PooledConn
	for range 4 {
		pc, err := p.Get(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		pcs = append(pcs, pc)
	}
	n := 0
	for range 5 {
		if ok, _ := c.AdmitRetry(); ok {
			n++
		}
	}
	if n != 2 {
		t.Errorf("retry budget admitted %d of 4 active, want 2", n)
	}
	for _, pc := range pcs {
		pc.Release(false)
	}
}

func TestCircuitBreakerDefaults(t *testing.T) {
	ls := newLineServer(t, 0)
	m, st := newTestManager(t)
	c := cbCluster(t, m, ls, `{"thresholds":[{"priority":"HIGH","max_connections":1,"track_remaining":true}]}`)
	if c.res.cx.max != DefaultMaxConnections || c.res.retries.max != DefaultMaxRetries {
		t.Errorf("DEFAULT limits %d/%d", c.res.cx.max, c.res.retries.max)
	}
	if g := st.Gauge("cluster.cb.circuit_breakers.high.remaining_cx").Value(); g != 1 {
		t.Errorf("high remaining_cx = %d", g)
	}
	ok, done := c.AdmitConnection()
	if !ok {
		t.Fatal("AdmitConnection refused")
	}
	done()
	c = cbCluster(t, m, ls, `{"thresholds":[{"max_connections":0}]}`)
	if ok, _ := c.AdmitConnection(); ok || st.Counter("cluster.cb.upstream_cx_overflow").Value() != 1 {
		t.Error("max_connections 0 admitted a connection")
	}
}

func TestPoolReuseNoAlloc(t *testing.T) {
	ls := newLineServer(t, 0)
	m, _ := newTestManager(t)
	c := cbCluster(t, m, ls, "")
	p := c.Pool(c.Hosts()[0])
	ctx := context.Background()
	pc, err := p.Get(ctx)
	if err != nil {
		t.Fatal(err)
	}
	pc.Release(true)
	if a := testing.AllocsPerRun(1000, func() {
		pc, err := p.Get(ctx)
		if err != nil {
			panic(err)
		}
		pc.Release(true)
		if ok, done := c.AdmitRetry(); ok {
			done()
		}
	}); a != 0 {
		t.Errorf("Get/Release reuse allocates %v", a)
	}
}

func BenchmarkPoolReuse(b *testing.B) {
	ls := newLineServer(b, 0)
	m, _ := newTestManager(b)
	c := cbCluster(b, m, ls, "")
	p := c.Pool(c.Hosts()[0])
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		pc, err := p.Get(ctx)
		if err != nil {
			b.Fatal(err)
		}
		pc.Release(true)
	}
}
