package upstream

import (
	"context"
	"testing"
)

// close_connections_on_host_set_change: adding a host closes the idle
// connections of the hosts kept and keeps a busy one from being reused; a
// later request dials anew. Without it they stay.
func TestCloseConnectionsOnHostSetChange(t *testing.T) {
	for _, on := range []bool{false, true} {
		a, b := newLineServer(t, 0), newLineServer(t, 0)
		m, _ := newTestManager(t)
		js := `{"name":"e","type":"EDS","connect_timeout":"1s"`
		if on {
			js += `,"common_lb_config":{"close_connections_on_host_set_change":true}`
		}
		c := mustAdd(t, m, js+`}`)
		onlyA := parseCluster(t, staticCluster("e", "ROUND_ROBIN", a.addrPort().String())).GetLoadAssignment()
		both := parseCluster(t, staticCluster("e", "ROUND_ROBIN", a.addrPort().String(), b.addrPort().String())).GetLoadAssignment()
		if err := c.UpdateLoadAssignment(onlyA); err != nil {
			t.Fatal(err)
		}
		p := c.Pool(c.Hosts()[0])
		get := func() *PooledConn {
			t.Helper()
			pc, err := p.Get(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			return pc
		}
		idle, busy := get(), get()
		idle.Release(true)
		if p.Idle() != 1 {
			t.Fatalf("on=%v: %d idle before the update, want 1", on, p.Idle())
		}
		if err := c.UpdateLoadAssignment(both); err != nil {
			t.Fatal(err)
		}
		if c.Pool(c.Hosts()[0]) != p {
			t.Fatalf("on=%v: host a lost its pool", on)
		}
		busy.Release(true)
		want := 2 // both kept
		if on {
			want = 0
		}
		if p.Idle() != want {
			t.Errorf("on=%v: %d idle after the host set changed, want %d", on, p.Idle(), want)
		}
		// The pool still works: a new request dials (on) or reuses (off).
		n := get()
		if on == n.Reused {
			t.Errorf("on=%v: the request after the change reused a connection: %v", on, n.Reused)
		}
		n.Release(true)
		if p.Idle() == 0 {
			t.Errorf("on=%v: a connection dialled after the drain did not go back to the pool", on)
		}
	}
}

// The HTTP/2 pool of a kept host: its connection takes no new stream after
// the host set changed, and the next request dials.
func TestCloseConnectionsOnHostSetChangeH2(t *testing.T) {
	addr, accepts := startH2C(t)
	other := newLineServer(t, 0)
	m, _ := newTestManager(t)
	c := mustAdd(t, m, poolCluster(addr,
		`,"type":"EDS","http2_protocol_options":{},"common_lb_config":{"close_connections_on_host_set_change":true}`))
	one := parseCluster(t, staticCluster("p", "ROUND_ROBIN", addr)).GetLoadAssignment()
	two := parseCluster(t, staticCluster("p", "ROUND_ROBIN", addr, other.addrPort().String())).GetLoadAssignment()
	if err := c.UpdateLoadAssignment(one); err != nil {
		t.Fatal(err)
	}
	p := c.H2Pool(c.Hosts()[0])
	get := func() { t.Helper(); h2Get(t, p) }
	get()
	get()
	if n := accepts.Load(); n != 1 {
		t.Fatalf("%d connections before the change, want 1", n)
	}
	if err := c.UpdateLoadAssignment(two); err != nil {
		t.Fatal(err)
	}
	get()
	if n := accepts.Load(); n != 2 {
		t.Errorf("%d connections after the host set changed, want 2 (a new one)", n)
	}
}
