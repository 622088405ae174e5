package upstream

import (
	"context"
	"testing"
)

// A host's counters and pools are made at its first use: reading them
// before (as /clusters and the load balancers do) shows zeros and makes
// nothing; the first connection makes them, and later reads see its counts.
func TestHostRuntimeLazy(t *testing.T) {
	ls := newLineServer(t, 0)
	m, _ := newTestManager(t)
	c := cbCluster(t, m, ls, "")
	h := c.Hosts()[0]
	if h.rt.Load() != nil {
		t.Fatal("host runtime made before any use")
	}
	if v := h.StatsView(); v.CxTotal.Load() != 0 || v.RqTotal.Load() != 0 || v.CxActive.Load() != 0 {
		t.Errorf("unused host reads cx_total %d rq_total %d cx_active %d", v.CxTotal.Load(), v.RqTotal.Load(), v.CxActive.Load())
	}
	if a := testing.AllocsPerRun(10, func() { _ = h.StatsView().RqActive.Load() }); a != 0 {
		t.Errorf("StatsView allocates %v", a)
	}
	if h.rt.Load() != nil {
		t.Fatal("StatsView made the host runtime")
	}
	u, err := c.Pool(h).Get(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if h.rt.Load() == nil {
		t.Fatal("no host runtime after a connection")
	}
	if n := h.StatsView().CxTotal.Load(); n != 1 {
		t.Errorf("cx_total = %d after one connection, want 1", n)
	}
	if h.StatsView() != h.Stats() {
		t.Error("StatsView and Stats differ once made")
	}
	u.Release(false)
	if zeroHostStats != (HostStats{}) {
		t.Error("the shared zero stats were written")
	}
}
