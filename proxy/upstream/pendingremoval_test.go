package upstream

import (
	"slices"
	"testing"
	"time"
)

// A host EDS removes stays while active health checking finds it healthy
// (PENDING_DYNAMIC_REMOVAL, still picked), goes when it fails a check, and
// loses the flag when EDS lists it again; with ignore_health_on_host_removal
// it goes at once.
func TestPendingDynamicRemoval(t *testing.T) {
	const hc = `"health_checks":[{"timeout":"1s","interval":"0.05s","no_traffic_interval":"0.05s","unhealthy_threshold":1,"healthy_threshold":1,"reuse_connection":false,"tcp_health_check":{}}]`
	for _, ignore := range []bool{false, true} {
		a, b := newLineServer(t, 0), newLineServer(t, 0)
		m, st := newTestManager(t)
		js := `{"name":"e","type":"EDS","connect_timeout":"1s",` + hc
		if ignore {
			js += `,"ignore_health_on_host_removal":true`
		}
		c := mustAdd(t, m, js+`}`)
		both := parseCluster(t, staticCluster("e", "ROUND_ROBIN", a.addrPort().String(), b.addrPort().String())).GetLoadAssignment()
		onlyA := parseCluster(t, staticCluster("e", "ROUND_ROBIN", a.addrPort().String())).GetLoadAssignment()
		healthy := st.Gauge("cluster.e.membership_healthy")
		wait := func(what string, ok func() bool) {
			t.Helper()
			for deadline := time.Now().Add(5 * time.Second); !ok(); time.Sleep(10 * time.Millisecond) {
				if time.Now().After(deadline) {
					t.Fatalf("ignore=%v: %s: hosts %v", ignore, what, flagsOf(c))
				}
			}
		}
		if err := c.UpdateLoadAssignment(both); err != nil {
			t.Fatal(err)
		}
		wait("both healthy", func() bool { return healthy.Value() == 2 })
		if err := c.UpdateLoadAssignment(onlyA); err != nil {
			t.Fatal(err)
		}
		if ignore {
			if got := flagsOf(c); !slices.Equal(got, []string{a.addrPort().String() + " healthy"}) {
				t.Errorf("ignore_health_on_host_removal: hosts %v, want only a", got)
			}
			continue
		}
		want := []string{a.addrPort().String() + " healthy", b.addrPort().String() + " /pending_dynamic_removal"}
		if got := flagsOf(c); !slices.Equal(got, want) {
			t.Fatalf("after EDS removed b: %v, want %v", got, want)
		}
		if picked := counts(pickN(c, 10)); picked[b.addrPort().String()] == 0 {
			t.Errorf("the pending host takes no traffic: %v", picked)
		}
		// Listed again: the flag goes.
		if err := c.UpdateLoadAssignment(both); err != nil {
			t.Fatal(err)
		}
		if got := flagsOf(c); got[1] != b.addrPort().String()+" healthy" {
			t.Errorf("b listed again: %v", got)
		}
		if err := c.UpdateLoadAssignment(onlyA); err != nil {
			t.Fatal(err)
		}
		// Fails its check (its listener closes): removed.
		b.ln.Close()
		wait("b removed after failing its check", func() bool { return len(c.Hosts()) == 1 })
		if got := flagsOf(c); !slices.Equal(got, []string{a.addrPort().String() + " healthy"}) {
			t.Errorf("after b failed: %v", got)
		}
	}
}

func flagsOf(c *Cluster) []string {
	var out []string
	for _, h := range c.Hosts() {
		out = append(out, h.String()+" "+h.HealthFlags())
	}
	return out
}
