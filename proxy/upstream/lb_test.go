package upstream

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
)

// staticCluster builds the JSON of a STATIC cluster from "ip:port[/weight][@prio][!status]" specs.
func staticCluster(name, policy string, eps ...string) string {
	byPrio := map[int][]string{}
	maxP := 0
	for _, e := range eps {
		status := ""
		if i := strings.IndexByte(e, '!'); i >= 0 {
			status, e = e[i+1:], e[:i]
		}
		prio := 0
		if i := strings.IndexByte(e, '@'); i >= 0 {
			fmt.Sscan(e[i+1:], &prio)
			e = e[:i]
		}
		weight := ""
		if i := strings.IndexByte(e, '/'); i >= 0 {
			weight, e = e[i+1:], e[:i]
		}
		ap := netip.MustParseAddrPort(e)
		le := fmt.Sprintf(`{"endpoint":{"address":{"socket_address":{"address":%q,"port_value":%d}}}`, ap.Addr().String(), ap.Port())
		if weight != "" {
			le += `,"load_balancing_weight":` + weight
		}
		if status != "" {
			le += `,"health_status":"` + status + `"`
		}
		byPrio[prio] = append(byPrio[prio], le+"}")
		maxP = max(maxP, prio)
	}
	var locs []string
	for p := 0; p <= maxP; p++ {
		locs = append(locs, fmt.Sprintf(`{"priority":%d,"lb_endpoints":[%s]}`, p, strings.Join(byPrio[p], ",")))
	}
	return fmt.Sprintf(`{"name":%q,"lb_policy":%q,"load_assignment":{"cluster_name":%q,"endpoints":[%s]}}`,
		name, policy, name, strings.Join(locs, ","))
}

func pickN(c *Cluster, n int) []string {
	out := make([]string, n)
	for i := range out {
		if h := c.ChooseHost(nil); h != nil {
			out[i] = h.String()
		}
	}
	return out
}

func counts(picks []string) map[string]int {
	m := map[string]int{}
	for _, p := range picks {
		m[p]++
	}
	return m
}

func TestRoundRobinUnweighted(t *testing.T) {
	m, _ := newTestManager(t)
	c := mustAdd(t, m, staticCluster("rr", "ROUND_ROBIN", "10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"))
	picks := pickN(c, 300)
	for h, n := range counts(picks) {
		if n != 100 {
			t.Errorf("%s picked %d times, want 100", h, n)
		}
	}
	// Plain rotation: the sequence has period 3 in config order.
	order := []string{"10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"}
	start := slices.Index(order, picks[0])
	for i, p := range picks {
		if want := order[(start+i)%3]; p != want {
			t.Fatalf("pick %d = %s, want %s (sequence %v)", i, p, want, picks[:6])
		}
	}
}

func TestRoundRobinWeighted(t *testing.T) {
	tests := []struct {
		name   string
		eps    []string
		window int            // every window of this many consecutive picks...
		want   map[string]int // ...holds exactly these counts
	}{
		{"3:1", []string{"10.0.0.1:80/3", "10.0.0.2:80/1"}, 4, map[string]int{"10.0.0.1:80": 3, "10.0.0.2:80": 1}},
		{"1:2:3", []string{"10.0.0.1:80/1", "10.0.0.2:80/2", "10.0.0.3:80/3"}, 6, map[string]int{"10.0.0.1:80": 1, "10.0.0.2:80": 2, "10.0.0.3:80": 3}},
		{"5:5 equal weights rotate", []string{"10.0.0.1:80/5", "10.0.0.2:80/5"}, 2, map[string]int{"10.0.0.1:80": 1, "10.0.0.2:80": 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, _ := newTestManager(t)
			c := mustAdd(t, m, staticCluster("w", "ROUND_ROBIN", tt.eps...))
			picks := pickN(c, tt.window*50)
			// Smoothness of EDF: each full period (aligned to the start of
			// the schedule) has exactly the weighted counts; we do not know
			// the random starting offset, so check every alignment's total
			// over many periods and each period from the first pick that
			// starts a period.
			total := counts(picks)
			for h, n := range tt.want {
				if total[h] != n*50 {
					t.Errorf("%s picked %d times, want %d", h, total[h], n*50)
				}
			}
			ok := false
			for off := 0; off < tt.window && !ok; off++ {
				ok = true
				for i := off; i+tt.window <= len(picks); i += tt.window {
					got := counts(picks[i : i+tt.window])
					for h, n := range tt.want {
						if got[h] != n {
							ok = false
						}
					}
				}
			}
			if !ok {
				t.Errorf("picks are not smooth: %v", picks[:3*tt.window])
			}
		})
	}
}

func TestRandomPolicy(t *testing.T) {
	m, _ := newTestManager(t)
	c := mustAdd(t, m, staticCluster("r", "RANDOM", "10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"))
	got := counts(pickN(c, 3000))
	if len(got) != 3 {
		t.Fatalf("picked %v", got)
	}
	for h, n := range got {
		if n < 700 || n > 1300 { // expected 1000, sd ~26
			t.Errorf("%s picked %d of 3000", h, n)
		}
	}
}

func TestPriorityLoad(t *testing.T) {
	mk := func(prio int, hs ...corev3.HealthStatus) []*Host {
		var out []*Host
		for i, s := range hs {
			out = append(out, newHost(nil, netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, byte(prio), 0, byte(i)}), 80), "", 1, int32(prio), nil, nil, s))
		}
		return out
	}
	const (
		H = corev3.HealthStatus_HEALTHY
		U = corev3.HealthStatus_UNHEALTHY
		D = corev3.HealthStatus_DEGRADED
	)
	tests := []struct {
		name              string
		hosts             []*Host
		healthy, degraded []uint32
		panic             []bool
	}{
		{"all healthy p0", slices.Concat(mk(0, H, H), mk(1, H)), []uint32{100, 0}, []uint32{0, 0}, []bool{false, false}},
		{"p0 half healthy spills 30%", slices.Concat(mk(0, H, U), mk(1, H)), []uint32{70, 30}, []uint32{0, 0}, []bool{false, false}},
		{"p0 3/4 healthy is 105% -> 100", slices.Concat(mk(0, H, H, H, U), mk(1, H)), []uint32{100, 0}, []uint32{0, 0}, []bool{false, false}},
		{"p0 down", slices.Concat(mk(0, U, U), mk(1, H)), []uint32{0, 100}, []uint32{0, 0}, []bool{false, false}},
		{"p0 quarter healthy, p1 down: every level panics, load by host count", slices.Concat(mk(0, H, U, U, U), mk(1, U)), []uint32{80, 20}, []uint32{0, 0}, []bool{true, true}},
		{"healthy and degraded share by availability", slices.Concat(mk(0, H, D, U, U)), []uint32{50}, []uint32{50}, []bool{false}},
		{"p0 degraded, p1 healthy", slices.Concat(mk(0, D, D), mk(1, H, U)), []uint32{0, 70}, []uint32{30, 0}, []bool{false, false}},
		{"total panic by host count", slices.Concat(mk(0, U), mk(1, U, U, U)), []uint32{25, 75}, []uint32{0, 0}, []bool{true, true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ps := buildPrioritySet(tt.hosts, &lbConfig{}, psOptions{overprovision: defaultOverprovisioning, panicThreshold: defaultPanicThreshold})
			if !slices.Equal(ps.healthy, tt.healthy) || !slices.Equal(ps.degrade, tt.degraded) || !slices.Equal(ps.panic, tt.panic) {
				t.Errorf("healthy %v degraded %v panic %v; want %v %v %v", ps.healthy, ps.degrade, ps.panic, tt.healthy, tt.degraded, tt.panic)
			}
		})
	}
}

func TestPriorityFailover(t *testing.T) {
	m, st := newTestManager(t)
	c := mustAdd(t, m, staticCluster("f", "ROUND_ROBIN",
		"10.0.0.1:80!UNHEALTHY", "10.0.0.2:80!DRAINING", "10.0.1.1:80@1", "10.0.1.2:80@1!UNKNOWN"))
	got := counts(pickN(c, 100))
	if got["10.0.1.1:80"] != 50 || got["10.0.1.2:80"] != 50 {
		t.Errorf("P0 down: picks %v, want all on P1", got)
	}
	// Everything unhealthy: Envoy's panic mode spreads over all hosts.
	c = mustAdd(t, m, staticCluster("f", "ROUND_ROBIN", "10.0.0.1:80!UNHEALTHY", "10.0.0.2:80!TIMEOUT"))
	got = counts(pickN(c, 100))
	if got["10.0.0.1:80"] != 50 || got["10.0.0.2:80"] != 50 {
		t.Errorf("panic: picks %v", got)
	}
	if n := st.Counter("cluster.f.lb_healthy_panic").Value(); n != 100 {
		t.Errorf("lb_healthy_panic = %d, want 100", n)
	}
	// Panic disabled: nothing to choose.
	c = mustAdd(t, m, strings.Replace(staticCluster("f", "ROUND_ROBIN", "10.0.0.1:80!UNHEALTHY"), `"lb_policy"`, `"common_lb_config":{"healthy_panic_threshold":{"value":0}},"lb_policy"`, 1))
	if h := c.ChooseHost(nil); h != nil {
		t.Errorf("panic threshold 0: chose %v", h)
	}
	// Health-check seam: failing the only healthy host moves traffic.
	c = mustAdd(t, m, staticCluster("g", "ROUND_ROBIN", "10.0.0.1:80", "10.0.1.1:80@1"))
	c.Hosts()[0].SetActiveHealthCheckFailed(true)
	c.RefreshHealth()
	if got := counts(pickN(c, 10)); got["10.0.1.1:80"] != 10 {
		t.Errorf("after HC failure: %v", got)
	}
	if n := st.Gauge("cluster.g.membership_healthy").Value(); n != 1 {
		t.Errorf("membership_healthy = %d", n)
	}
}

func TestChooseHostEmpty(t *testing.T) {
	m, _ := newTestManager(t)
	c := mustAdd(t, m, `{"name":"e","type":"EDS"}`)
	if h := c.ChooseHost(&LBContext{}); h != nil || len(c.Hosts()) != 0 {
		t.Fatalf("empty EDS cluster chose %v", h)
	}
	select {
	case <-c.Initialized():
	default:
		t.Error("EDS cluster without an EndpointSource should be initialized")
	}
	cla := parseCluster(t, staticCluster("e", "ROUND_ROBIN", "10.0.0.9:80")).GetLoadAssignment()
	if err := c.UpdateLoadAssignment(cla); err != nil {
		t.Fatal(err)
	}
	if h := c.ChooseHost(nil); h == nil || h.String() != "10.0.0.9:80" {
		t.Errorf("after EDS update chose %v", h)
	}
	bad := parseCluster(t, staticCluster("e", "ROUND_ROBIN", "10.0.0.9:80")).GetLoadAssignment()
	bad.Endpoints[0].LbEndpoints[0].GetEndpoint().GetAddress().GetSocketAddress().Address = "host.example"
	if err := c.UpdateLoadAssignment(bad); err == nil || !strings.Contains(err.Error(), "malformed IP address: host.example") {
		t.Errorf("bad EDS update: %v", err)
	}
	if hs := hostStrings(c.Hosts()); !slices.Equal(hs, []string{"10.0.0.9:80"}) {
		t.Errorf("hosts after rejected update: %v", hs)
	}
}

func TestChooseHostNoAlloc(t *testing.T) {
	m, _ := newTestManager(t)
	for _, js := range []string{
		staticCluster("u", "ROUND_ROBIN", "10.0.0.1:80", "10.0.0.2:80"),
		staticCluster("w", "ROUND_ROBIN", "10.0.0.1:80/3", "10.0.0.2:80"),
		staticCluster("r", "RANDOM", "10.0.0.1:80", "10.0.0.2:80"),
		staticCluster("p", "ROUND_ROBIN", "10.0.0.1:80!UNHEALTHY", "10.0.0.2:80@1"),
	} {
		c := mustAdd(t, m, js)
		if a := testing.AllocsPerRun(1000, func() { c.ChooseHost(nil) }); a != 0 {
			t.Errorf("%s: ChooseHost allocates %v", c.Name, a)
		}
	}
}
