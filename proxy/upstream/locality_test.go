package upstream

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"

	"github.com/outrider-proxy/outrider/telemetry/stats"
)

// loc is one LocalityLbEndpoints of a test cluster: endpoints are
// "ip:port[!STATUS]"; weight 0 leaves load_balancing_weight unset.
type loc struct {
	zone   string
	weight int
	prio   int
	eps    []string
}

// locCluster builds a STATIC ROUND_ROBIN cluster's JSON; extra is spliced
// into the cluster object (e.g. a common_lb_config).
func locCluster(name, extra string, locs ...loc) string {
	var parts []string
	for _, l := range locs {
		var les []string
		for _, e := range l.eps {
			addr, status, _ := strings.Cut(e, "!")
			host, port, _ := strings.Cut(addr, ":")
			le := fmt.Sprintf(`{"endpoint":{"address":{"socket_address":{"address":%q,"port_value":%s}}}`, host, port)
			if status != "" {
				le += `,"health_status":"` + status + `"`
			}
			les = append(les, le+"}")
		}
		p := fmt.Sprintf(`{"locality":{"zone":%q},"priority":%d,"lb_endpoints":[%s]`, l.zone, l.prio, strings.Join(les, ","))
		if l.weight > 0 {
			p += fmt.Sprintf(`,"load_balancing_weight":%d`, l.weight)
		}
		parts = append(parts, p+"}")
	}
	if extra != "" {
		extra += ","
	}
	return fmt.Sprintf(`{"name":%q,%s"lb_policy":"ROUND_ROBIN","load_assignment":{"cluster_name":%q,"endpoints":[%s]}}`,
		name, extra, name, strings.Join(parts, ","))
}

// eps makes n endpoints 10.<net>.0.<i>:80, the first healthy ones healthy
// and the rest with status bad.
func eps(net byte, n, healthy int, bad string) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("10.%d.0.%d:80", net, i+1)
		if i >= healthy {
			out[i] += "!" + bad
		}
	}
	return out
}

// byZone counts n picks per zone ("" for no host).
func byZone(c *Cluster, n int) map[string]int {
	out := map[string]int{}
	for range n {
		if h := c.ChooseHost(nil); h != nil {
			out[h.Locality.GetZone()]++
		} else {
			out[""]++
		}
	}
	return out
}

// seeded makes c's zone routing draw from a fixed-seed generator.
func seeded(c *Cluster, seed uint64) {
	var mu sync.Mutex
	r := rand.New(rand.NewPCG(seed, seed))
	c.policy.loc.rnd = func() uint64 {
		mu.Lock()
		defer mu.Unlock()
		return r.Uint64()
	}
}

const weighted = `"common_lb_config":{"locality_weighted_lb_config":{}}`

func TestLocalityWeighted(t *testing.T) {
	tests := []struct {
		name  string
		extra string
		locs  []loc
		n     int
		want  map[string]int // exact: the EDF schedule is deterministic
		slack int
	}{
		{"weights 1:2", weighted, []loc{{"x", 1, 0, eps(1, 2, 2, "")}, {"y", 2, 0, eps(2, 2, 2, "")}}, 300,
			map[string]int{"x": 100, "y": 200}, 1},
		// Envoy's documented table: X at 70% healthy keeps about its 33%
		// (weight 1.4*0.7 = 0.98); at 50% it has weight 0.7 against Y's 2.
		{"70% healthy keeps nearly all its weight", weighted, []loc{{"x", 1, 0, eps(1, 10, 7, "UNHEALTHY")}, {"y", 2, 0, eps(2, 2, 2, "")}}, 2980,
			map[string]int{"x": 980, "y": 2000}, 2},
		{"50% healthy scaled by overprovisioning", weighted, []loc{{"x", 1, 0, eps(1, 10, 5, "UNHEALTHY")}, {"y", 2, 0, eps(2, 2, 2, "")}}, 2700,
			map[string]int{"x": 700, "y": 2000}, 2},
		{"no weight: no traffic", weighted, []loc{{"x", 0, 0, eps(1, 2, 2, "")}, {"y", 3, 0, eps(2, 2, 2, "")}}, 100,
			map[string]int{"y": 100}, 0},
		{"no weights at all: plain round robin", weighted, []loc{{"x", 0, 0, eps(1, 1, 1, "")}, {"y", 0, 0, eps(2, 3, 3, "")}}, 400,
			map[string]int{"x": 100, "y": 300}, 0},
		{"weights ignored without locality_weighted_lb_config", "", []loc{{"x", 1, 0, eps(1, 1, 1, "")}, {"y", 9, 0, eps(2, 3, 3, "")}}, 400,
			map[string]int{"x": 100, "y": 300}, 0},
		{"degraded localities weighted by degraded hosts", weighted, []loc{{"x", 1, 0, eps(1, 2, 0, "DEGRADED")}, {"y", 3, 0, eps(2, 2, 0, "DEGRADED")}}, 400,
			map[string]int{"x": 100, "y": 300}, 1},
		{"per priority", weighted, []loc{{"x", 1, 0, eps(1, 2, 0, "UNHEALTHY")}, {"y", 1, 1, eps(2, 2, 2, "")}, {"z", 3, 1, eps(3, 2, 2, "")}}, 400,
			map[string]int{"y": 100, "z": 300}, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, _ := newTestManager(t)
			c := mustAdd(t, m, locCluster("w", tt.extra, tt.locs...))
			got := byZone(c, tt.n)
			for z, want := range tt.want {
				if d := got[z] - want; d < -tt.slack || d > tt.slack {
					t.Errorf("zone %q: %d picks, want %d±%d (all %v)", z, got[z], want, tt.slack, got)
				}
			}
			for z := range got {
				if _, ok := tt.want[z]; !ok {
					t.Errorf("unexpected zone %q: %v", z, got)
				}
			}
		})
	}
}

// With locality_weighted_lb_config, RING_HASH and MAGLEV give each host
// its host-weight share of its locality's weight share (Envoy's
// normalizeLocalityWeights): the ring's and the table's entries follow.
func TestLocalityWeightedHashing(t *testing.T) {
	typedRing := `"load_balancing_policy":{"policies":[{"typed_extension_config":{"name":"r","typed_config":{"@type":"type.googleapis.com/envoy.extensions.load_balancing_policies.ring_hash.v3.RingHash","locality_weighted_lb_config":{}}}}]}`
	typedMaglev := `"load_balancing_policy":{"policies":[{"typed_extension_config":{"name":"m","typed_config":{"@type":"type.googleapis.com/envoy.extensions.load_balancing_policies.maglev.v3.Maglev","locality_weighted_lb_config":{}}}}]}`
	tests := []struct {
		name, policy, extra string
		locs                []loc
		want                map[string]float64 // share of entries per zone
	}{
		{"ring 1:3", "RING_HASH", weighted, []loc{{"x", 1, 0, eps(1, 2, 2, "")}, {"y", 3, 0, eps(2, 2, 2, "")}}, map[string]float64{"x": .25, "y": .75}},
		{"maglev 1:3", "MAGLEV", weighted, []loc{{"x", 1, 0, eps(1, 2, 2, "")}, {"y", 3, 0, eps(2, 2, 2, "")}}, map[string]float64{"x": .25, "y": .75}},
		{"maglev: host counts do not matter", "MAGLEV", weighted, []loc{{"x", 1, 0, eps(1, 1, 1, "")}, {"y", 1, 0, eps(2, 4, 4, "")}}, map[string]float64{"x": .5, "y": .5}},
		{"ring without the config: per host", "RING_HASH", "", []loc{{"x", 1, 0, eps(1, 1, 1, "")}, {"y", 3, 0, eps(2, 3, 3, "")}}, map[string]float64{"x": .25, "y": .75}},
		{"maglev: a zero-weight locality gets nothing", "MAGLEV", weighted, []loc{{"x", 0, 0, eps(1, 2, 2, "")}, {"y", 2, 0, eps(2, 2, 2, "")}}, map[string]float64{"y": 1}},
		// A locality without healthy hosts keeps its weight in the sum, so
		// the others keep their relative shares.
		{"maglev: unhealthy locality", "MAGLEV", weighted, []loc{{"x", 1, 0, eps(1, 2, 2, "")}, {"y", 2, 0, eps(2, 2, 2, "")}, {"z", 5, 0, eps(3, 3, 0, "UNHEALTHY")}, {"w", 5, 0, eps(4, 7, 7, "")}},
			map[string]float64{"x": 1. / 8, "y": 2. / 8, "w": 5. / 8}},
		{"typed ring", "", typedRing, []loc{{"x", 1, 0, eps(1, 2, 2, "")}, {"y", 3, 0, eps(2, 2, 2, "")}}, map[string]float64{"x": .25, "y": .75}},
		{"typed maglev", "", typedMaglev, []loc{{"x", 1, 0, eps(1, 2, 2, "")}, {"y", 3, 0, eps(2, 2, 2, "")}}, map[string]float64{"x": .25, "y": .75}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, _ := newTestManager(t)
			js := locCluster("h", tt.extra, tt.locs...)
			if tt.policy != "" {
				js = strings.Replace(js, "ROUND_ROBIN", tt.policy, 1)
			} else {
				js = strings.Replace(js, `"lb_policy":"ROUND_ROBIN",`, "", 1)
			}
			c := mustAdd(t, m, js)
			count := map[string]int{}
			total := 0
			switch p := c.set.Load().levels[0].pHealthy.(type) {
			case *ringPicker:
				for _, e := range p.ring {
					count[e.host.Locality.GetZone()]++
				}
				total = len(p.ring)
			case *maglevPicker:
				for _, h := range p.table {
					count[h.Locality.GetZone()]++
				}
				total = len(p.table)
			default:
				t.Fatalf("picker %T", p)
			}
			for z, want := range tt.want {
				if got := float64(count[z]) / float64(total); math.Abs(got-want) > 0.01 {
					t.Errorf("zone %s: %.4f of %d entries, want %.4f", z, got, total, want)
				}
			}
			for z := range count {
				if _, ok := tt.want[z]; !ok {
					t.Errorf("zone %s has %d entries", z, count[z])
				}
			}
			// Picks by hash land on those hosts too.
			for i := range 100 {
				if h := c.ChooseHost(&LBContext{HashKey: uint64(i) * 0x9e3779b97f4a7c15, HasHash: true}); h == nil || tt.want[h.Locality.GetZone()] == 0 {
					t.Fatalf("pick %d: %v", i, h)
				}
			}
		})
	}
	t.Run("all localities weightless: no host", func(t *testing.T) {
		m, _ := newTestManager(t)
		js := strings.Replace(locCluster("h", weighted, loc{"x", 0, 0, eps(1, 2, 2, "")}), "ROUND_ROBIN", "RING_HASH", 1)
		c := mustAdd(t, m, js)
		if h := c.ChooseHost(nil); h != nil {
			t.Errorf("picked %v", h)
		}
	})
}

// zoneManager returns a manager whose node is in zone "a" with local
// cluster "local" made of locals.
func zoneManager(t *testing.T, locals ...loc) (*Manager, *stats.Store) {
	m, st := newTestManager(t)
	m.LocalClusterName = "local"
	m.LocalLocality = &corev3.Locality{Zone: "a"}
	mustAdd(t, m, locCluster("local", "", locals...))
	return m, st
}

func TestZoneAwareRouting(t *testing.T) {
	type want struct {
		zones map[string]float64 // expected share per zone
		stats map[string]int64   // exact counter values after the picks
	}
	const n = 4000
	tests := []struct {
		name     string
		locals   []loc
		extra    string
		upstream []loc
		want     want
	}{
		{"direct: as many upstream hosts locally as local ones",
			[]loc{{"a", 0, 0, eps(100, 1, 1, "")}, {"b", 0, 0, eps(101, 1, 1, "")}}, "",
			[]loc{{"a", 0, 0, eps(1, 4, 4, "")}, {"b", 0, 0, eps(2, 4, 4, "")}},
			want{map[string]float64{"a": 1}, map[string]int64{"lb_zone_routing_all_directly": n, "lb_recalculate_zone_structures": 1}}},
		{"residual: 75% of the fleet locally, 50% of upstream: 2/3 stay",
			[]loc{{"a", 0, 0, eps(100, 3, 3, "")}, {"b", 0, 0, eps(101, 1, 1, "")}}, "",
			[]loc{{"a", 0, 0, eps(1, 3, 3, "")}, {"b", 0, 0, eps(2, 3, 3, "")}},
			want{map[string]float64{"a": 0.6666, "b": 0.3334}, map[string]int64{"lb_zone_routing_all_directly": 0}}},
		{"residual spread by spare capacity",
			// local 40/40/20 against upstream 25/50/25: a keeps 62.5%, the
			// rest goes to b and c in proportion 10:5.
			[]loc{{"a", 0, 0, eps(100, 2, 2, "")}, {"b", 0, 0, eps(101, 2, 2, "")}, {"c", 0, 0, eps(102, 1, 1, "")}}, "",
			[]loc{{"a", 0, 0, eps(1, 2, 2, "")}, {"b", 0, 0, eps(2, 4, 4, "")}, {"c", 0, 0, eps(3, 2, 2, "")}},
			want{map[string]float64{"a": 0.625, "b": 0.25, "c": 0.125}, nil}},
		{"no upstream hosts in the local zone",
			[]loc{{"a", 0, 0, eps(100, 1, 1, "")}, {"b", 0, 0, eps(101, 1, 1, "")}}, "",
			[]loc{{"b", 0, 0, eps(2, 4, 4, "")}, {"c", 0, 0, eps(3, 4, 4, "")}},
			// b has no more upstream share than local share: all goes to c.
			want{map[string]float64{"c": 1}, map[string]int64{"lb_zone_routing_cross_zone": n, "lb_zone_routing_sampled": 0}}},
		{"cluster too small",
			[]loc{{"a", 0, 0, eps(100, 1, 1, "")}, {"b", 0, 0, eps(101, 1, 1, "")}}, "",
			[]loc{{"a", 0, 0, eps(1, 2, 2, "")}, {"b", 0, 0, eps(2, 3, 3, "")}},
			want{map[string]float64{"a": 0.4, "b": 0.6}, map[string]int64{"lb_zone_cluster_too_small": 1, "lb_zone_routing_all_directly": 0}}},
		{"min_cluster_size lowered",
			[]loc{{"a", 0, 0, eps(100, 1, 1, "")}, {"b", 0, 0, eps(101, 1, 1, "")}}, `"common_lb_config":{"zone_aware_lb_config":{"min_cluster_size":2}}`,
			[]loc{{"a", 0, 0, eps(1, 2, 2, "")}, {"b", 0, 0, eps(2, 3, 3, "")}},
			// a has 40% of upstream for 50% of the fleet: 80% stays.
			want{map[string]float64{"a": 0.8, "b": 0.2}, map[string]int64{"lb_zone_cluster_too_small": 0}}},
		{"routing_enabled 0",
			[]loc{{"a", 0, 0, eps(100, 1, 1, "")}, {"b", 0, 0, eps(101, 1, 1, "")}}, `"common_lb_config":{"zone_aware_lb_config":{"routing_enabled":{"value":0}}}`,
			[]loc{{"a", 0, 0, eps(1, 4, 4, "")}, {"b", 0, 0, eps(2, 4, 4, "")}},
			want{map[string]float64{"a": 0.5, "b": 0.5}, map[string]int64{"lb_zone_routing_all_directly": 0}}},
		{"routing_enabled 25%",
			[]loc{{"a", 0, 0, eps(100, 1, 1, "")}, {"b", 0, 0, eps(101, 1, 1, "")}}, `"common_lb_config":{"zone_aware_lb_config":{"routing_enabled":{"value":25}}}`,
			[]loc{{"a", 0, 0, eps(1, 4, 4, "")}, {"b", 0, 0, eps(2, 4, 4, "")}},
			want{map[string]float64{"a": 0.625, "b": 0.375}, nil}},
		{"local cluster has no host in the node's zone",
			[]loc{{"b", 0, 0, eps(101, 1, 1, "")}, {"c", 0, 0, eps(102, 1, 1, "")}}, "",
			[]loc{{"a", 0, 0, eps(1, 4, 4, "")}, {"b", 0, 0, eps(2, 4, 4, "")}},
			want{map[string]float64{"a": 0.5, "b": 0.5}, map[string]int64{"lb_local_cluster_not_ok": 1}}},
		{"local cluster in panic",
			[]loc{{"a", 0, 0, eps(100, 1, 0, "UNHEALTHY")}, {"b", 0, 0, eps(101, 2, 0, "UNHEALTHY")}}, "",
			[]loc{{"a", 0, 0, eps(1, 4, 4, "")}, {"b", 0, 0, eps(2, 4, 4, "")}},
			want{map[string]float64{"a": 0.5, "b": 0.5}, map[string]int64{"lb_local_cluster_not_ok": n}}},
		{"local cluster in panic, fail_traffic_on_panic",
			[]loc{{"a", 0, 0, eps(100, 1, 0, "UNHEALTHY")}, {"b", 0, 0, eps(101, 2, 0, "UNHEALTHY")}}, `"common_lb_config":{"zone_aware_lb_config":{"fail_traffic_on_panic":true}}`,
			[]loc{{"a", 0, 0, eps(1, 4, 4, "")}, {"b", 0, 0, eps(2, 4, 4, "")}},
			want{map[string]float64{"": 1}, map[string]int64{"lb_local_cluster_not_ok": n}}},
		{"only P0 is zone routed",
			[]loc{{"a", 0, 0, eps(100, 1, 1, "")}, {"b", 0, 0, eps(101, 1, 1, "")}}, "",
			[]loc{{"a", 0, 0, eps(1, 8, 0, "UNHEALTHY")}, {"a", 0, 1, eps(2, 4, 4, "")}, {"b", 0, 1, eps(3, 4, 4, "")}},
			want{map[string]float64{"a": 0.5, "b": 0.5}, map[string]int64{"lb_zone_routing_all_directly": 0}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, st := zoneManager(t, tt.locals...)
			c := mustAdd(t, m, locCluster("up", tt.extra, tt.upstream...))
			seeded(c, 7)
			got := byZone(c, n)
			for z, share := range tt.want.zones {
				// Bounds of about 5 standard deviations of a binomial.
				exp := share * n
				sd := max(1, 5*math.Sqrt(exp*(1-share)))
				if g := float64(got[z]); g < exp-sd || g > exp+sd {
					t.Errorf("zone %q: %d of %d picks, want %.0f±%.0f (all %v)", z, got[z], n, exp, sd, got)
				}
			}
			for z := range got {
				if _, ok := tt.want.zones[z]; !ok {
					t.Errorf("unexpected zone %q: %v", z, got)
				}
			}
			for name, v := range tt.want.stats {
				if g := st.Counter("cluster.up." + name).Value(); g != uint64(v) {
					t.Errorf("%s = %d, want %d", name, g, v)
				}
			}
		})
	}
}

func TestZoneAwareFollowsLocalCluster(t *testing.T) {
	// The local cluster starts with as many hosts in a as upstream has
	// (direct routing), then grows in zone a: routing turns residual.
	m, st := zoneManager(t, loc{"a", 0, 0, eps(100, 1, 1, "")}, loc{"b", 0, 0, eps(101, 1, 1, "")})
	c := mustAdd(t, m, locCluster("up", "", loc{"a", 0, 0, eps(1, 3, 3, "")}, loc{"b", 0, 0, eps(2, 3, 3, "")}))
	seeded(c, 1)
	if got := byZone(c, 100); got["a"] != 100 {
		t.Fatalf("direct: %v", got)
	}
	mustAdd(t, m, locCluster("local", "", loc{"a", 0, 0, eps(100, 3, 3, "")}, loc{"b", 0, 0, eps(101, 1, 1, "")}))
	got := byZone(c, 3000)
	if got["b"] < 800 || got["b"] > 1200 { // 1/3 cross zone
		t.Errorf("after the local cluster changed: %v", got)
	}
	if n := st.Counter("cluster.up.lb_recalculate_zone_structures").Value(); n != 2 {
		t.Errorf("lb_recalculate_zone_structures = %d, want 2", n)
	}
	if s, x := st.Counter("cluster.up.lb_zone_routing_sampled").Value(), st.Counter("cluster.up.lb_zone_routing_cross_zone").Value(); s+x != 3000 {
		t.Errorf("sampled %d + cross_zone %d != 3000", s, x)
	}
	// Removing the local cluster ends zone routing.
	m.Remove("local")
	if got := byZone(c, 600); got["a"] != 300 || got["b"] != 300 {
		t.Errorf("without local cluster: %v", got)
	}
}

func TestZoneNoCapacityLeft(t *testing.T) {
	st := stats.NewStore()
	cs := newClusterStats(st.Root().Scope("cluster").Scope("z"))
	z := &localityLB{rnd: rand.New(rand.NewPCG(1, 2)).Uint64}
	zs := &zoneState{mode: zoneResidual, residual: []uint64{0, 0, 0}}
	seen := map[int]bool{}
	for range 300 {
		seen[zs.zoneLocality(z, cs)] = true
	}
	if len(seen) != 3 {
		t.Errorf("random localities %v, want all 3", seen)
	}
	if n := cs.LbZoneNoCapacityLeft().Value(); n != 300 {
		t.Errorf("lb_zone_no_capacity_left = %d", n)
	}
}

func TestTypedLocalityConfig(t *testing.T) {
	m, _ := zoneManager(t, loc{"a", 0, 0, eps(100, 3, 3, "")}, loc{"b", 0, 0, eps(101, 1, 1, "")})
	typed := func(lc string) string {
		return `"load_balancing_policy":{"policies":[{"typed_extension_config":{"name":"rr","typed_config":{` +
			`"@type":"type.googleapis.com/envoy.extensions.load_balancing_policies.round_robin.v3.RoundRobin","locality_lb_config":` + lc + `}}}]}`
	}
	ups := []loc{{"a", 1, 0, eps(1, 3, 3, "")}, {"b", 3, 0, eps(2, 3, 3, "")}}
	// force_locality_direct_routing keeps everything local.
	c := mustAdd(t, m, strings.Replace(locCluster("up", typed(`{"zone_aware_lb_config":{"force_locality_direct_routing":true}}`), ups...), `"lb_policy":"ROUND_ROBIN",`, "", 1))
	if got := byZone(c, 100); got["a"] != 100 {
		t.Errorf("force_locality_direct_routing: %v", got)
	}
	c = mustAdd(t, m, strings.Replace(locCluster("up", typed(`{"locality_weighted_lb_config":{}}`), ups...), `"lb_policy":"ROUND_ROBIN",`, "", 1))
	if got := byZone(c, 400); got["a"] != 100 || got["b"] != 300 {
		t.Errorf("typed locality weights: %v", got)
	}
	err := m.AddOrUpdate(parseCluster(t, strings.Replace(locCluster("up", typed(`{"zone_aware_lb_config":{"locality_basis":"HEALTHY_HOSTS_WEIGHT"}}`), ups...), `"lb_policy":"ROUND_ROBIN",`, "", 1)))
	if err == nil || !strings.Contains(err.Error(), "locality_basis HEALTHY_HOSTS_WEIGHT is not supported yet") {
		t.Errorf("locality_basis: %v", err)
	}
}

func TestFailTrafficOnPanic(t *testing.T) {
	m, st := newTestManager(t)
	c := mustAdd(t, m, locCluster("p", `"common_lb_config":{"zone_aware_lb_config":{"fail_traffic_on_panic":true}}`, loc{"a", 0, 0, eps(1, 4, 1, "UNHEALTHY")}))
	if got := byZone(c, 10); got[""] != 10 {
		t.Errorf("panicking cluster with fail_traffic_on_panic: %v", got)
	}
	if n := st.Counter("cluster.p.lb_healthy_panic").Value(); n != 10 {
		t.Errorf("lb_healthy_panic = %d", n)
	}
}

func TestLocalityChooseHostNoAlloc(t *testing.T) {
	m, _ := zoneManager(t, loc{"a", 0, 0, eps(100, 3, 3, "")}, loc{"b", 0, 0, eps(101, 1, 1, "")})
	for _, js := range []string{
		locCluster("w", weighted, loc{"a", 1, 0, eps(1, 3, 3, "")}, loc{"b", 2, 0, eps(2, 3, 3, "")}),
		locCluster("z", "", loc{"a", 0, 0, eps(1, 3, 3, "")}, loc{"b", 0, 0, eps(2, 3, 3, "")}),
	} {
		c := mustAdd(t, m, js)
		c.ChooseHost(nil) // builds the zone state once
		if a := testing.AllocsPerRun(1000, func() { c.ChooseHost(nil) }); a != 0 {
			t.Errorf("%s: ChooseHost allocates %v", c.Name, a)
		}
	}
}

func BenchmarkChooseHostLocality(b *testing.B) {
	for _, tc := range []struct{ name, js string }{
		{"weighted", locCluster("w", weighted, loc{"a", 1, 0, eps(1, 3, 3, "")}, loc{"b", 2, 0, eps(2, 3, 3, "")}, loc{"c", 3, 0, eps(3, 3, 3, "")})},
		{"zone_residual", locCluster("z", "", loc{"a", 0, 0, eps(1, 3, 3, "")}, loc{"b", 0, 0, eps(2, 3, 3, "")}, loc{"c", 0, 0, eps(3, 3, 3, "")})},
	} {
		b.Run(tc.name, func(b *testing.B) {
			m, _ := newTestManager(b)
			m.LocalClusterName, m.LocalLocality = "local", &corev3.Locality{Zone: "a"}
			mustAdd(b, m, locCluster("local", "", loc{"a", 0, 0, eps(100, 3, 3, "")}, loc{"b", 0, 0, eps(101, 1, 1, "")}, loc{"c", 0, 0, eps(102, 1, 1, "")}))
			c := mustAdd(b, m, tc.js)
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					c.ChooseHost(nil)
				}
			})
		})
	}
}

func TestLocalityFieldsEnforced(t *testing.T) {
	js := strings.Replace(locCluster("e", weighted, loc{"a", 2, 0, eps(1, 1, 1, "")}), `"endpoints":`, `"policy":{"weighted_priority_health":true},"endpoints":`, 1)
	if got := Unenforced(parseCluster(t, js)); len(got) != 0 {
		t.Errorf("Unenforced = %q, want none", got)
	}
}
