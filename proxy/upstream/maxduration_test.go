package upstream

import (
	"context"
	"strings"
	"testing"
	"time"
)

// common_http_protocol_options.max_connection_duration: an idle connection
// closes when it reaches the duration, a busy one when its request ends, and
// neither is reused; each counts upstream_cx_max_duration_reached.
func TestMaxConnectionDuration(t *testing.T) {
	ls := newLineServer(t, 0)
	m, st := newTestManager(t)
	js := strings.Replace(staticCluster("md", "ROUND_ROBIN", ls.addrPort().String()), `"lb_policy"`,
		`"common_http_protocol_options":{"max_connection_duration":"0.2s"},"lb_policy"`, 1)
	c := mustAdd(t, m, js)
	if c.MaxConnectionDuration != 200*time.Millisecond {
		t.Fatalf("MaxConnectionDuration = %v", c.MaxConnectionDuration)
	}
	p := c.Pool(c.Hosts()[0])
	reached := st.Counter("cluster.md.upstream_cx_max_duration_reached")
	get := func() *PooledConn {
		t.Helper()
		pc, err := p.Get(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		return pc
	}

	// Idle: reused before the duration, closed by the timer at it.
	a := get()
	a.Release(true)
	if b := get(); b != a {
		t.Fatal("a young idle connection was not reused")
	} else {
		b.Release(true)
	}
	for deadline := time.Now().Add(3 * time.Second); reached.Value() == 0 && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	p.mu.Lock()
	idle := len(p.idle)
	p.mu.Unlock()
	if reached.Value() != 1 || idle != 0 {
		t.Fatalf("after the duration idle: upstream_cx_max_duration_reached %d, %d idle, want 1 and 0", reached.Value(), idle)
	}

	// Busy across the duration: not returned to the idle list.
	accepts := func(want int64) int64 { // the server counts after the dial returned
		for deadline := time.Now().Add(2 * time.Second); ls.accepts.Load() < want && time.Now().Before(deadline); {
			time.Sleep(5 * time.Millisecond)
		}
		time.Sleep(20 * time.Millisecond)
		return ls.accepts.Load()
	}
	b := get()
	if accepts(2) != 2 {
		t.Fatalf("%d connections, want a new one after the expired", ls.accepts.Load())
	}
	time.Sleep(250 * time.Millisecond)
	b.Release(true)
	if reached.Value() != 2 {
		t.Errorf("released after the duration: upstream_cx_max_duration_reached %d, want 2", reached.Value())
	}
	get().Release(true)
	if accepts(3) != 3 {
		t.Errorf("%d connections, want 3: an expired connection was reused", ls.accepts.Load())
	}
}

// An HTTP/2 connection takes no new stream once it reaches
// max_connection_duration and closes when idle.
func TestMaxConnectionDurationH2(t *testing.T) {
	addr, accepts := startH2C(t)
	m, st := newTestManager(t)
	c := mustAdd(t, m, poolCluster(addr,
		`,"http2_protocol_options":{},"common_http_protocol_options":{"max_connection_duration":"0.2s"}`))
	p := c.H2Pool(c.Hosts()[0])
	get := func() { t.Helper(); h2Get(t, p) }
	get()
	get()
	waitFor(t, "the connection closed at its max duration", func() bool {
		return st.Counter("cluster.p.upstream_cx_max_duration_reached").Value() == 1 &&
			st.Gauge("cluster.p.upstream_cx_active").Value() == 0
	})
	get()
	if n := accepts.Load(); n != 2 {
		t.Errorf("upstream accepted %d connections, want 2 (one per duration)", n)
	}
}
