package upstream

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
)

func TestXXHash64(t *testing.T) {
	tests := []struct {
		in   string
		seed uint64
		want uint64
	}{
		{"", 0, 0xef46db3751d8e999},
		{"a", 0, 0xd24ec4f1a98c6e5b},
		{"abc", 0, 0x44bc2cf5ad770999},
		{"Nobody inspects the spammish repetition", 0, 0xfbcea83c8a378bf1},
	}
	for _, tt := range tests {
		if got := XXHash64(tt.in, tt.seed); got != tt.want {
			t.Errorf("XXHash64(%q, %d) = %#x, want %#x", tt.in, tt.seed, got, tt.want)
		}
	}
	if XXHash64("abc", 1) == XXHash64("abc", 0) {
		t.Error("seed ignored")
	}
}

func TestMurmurHash2(t *testing.T) {
	// std::hash<std::string>{}("") with libstdc++ on 64-bit.
	if got := murmurHash2("", murmurStdSeed); got != 6142509188972423790 {
		t.Errorf("murmurHash2(\"\") = %d", got)
	}
}

func lbCluster(name, policy, extra string, eps ...string) string {
	js := staticCluster(name, policy, eps...)
	if extra != "" {
		js = strings.Replace(js, `"lb_policy"`, extra+`,"lb_policy"`, 1)
	}
	return js
}

func TestLeastRequestP2C(t *testing.T) {
	m, _ := newTestManager(t)
	c := mustAdd(t, m, staticCluster("lr", "LEAST_REQUEST", "10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"))
	busy := c.Hosts()[0]
	busy.Stats().RqActive.Store(5)
	got := counts(pickN(c, 9000))
	// The busy host wins only when both samples are it: 1/9 of picks.
	if n := got[busy.String()]; n < 700 || n > 1300 {
		t.Errorf("busy host picked %d of 9000 (want ~1000): %v", n, got)
	}
	// choice_count 10: the busy host practically never wins.
	c = mustAdd(t, m, lbCluster("lr10", "LEAST_REQUEST", `"least_request_lb_config":{"choice_count":10}`, "10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"))
	c.Hosts()[0].Stats().RqActive.Store(5)
	if n := counts(pickN(c, 3000))["10.0.0.1:80"]; n > 5 {
		t.Errorf("choice_count 10: busy host picked %d times", n)
	}
}

func TestLeastRequestFullScan(t *testing.T) {
	m, _ := newTestManager(t)
	js := `{"name":"fs","load_balancing_policy":{"policies":[{"typed_extension_config":{"name":"lr","typed_config":{"@type":"type.googleapis.com/envoy.extensions.load_balancing_policies.least_request.v3.LeastRequest","selection_method":"FULL_SCAN"}}}]},` +
		`"load_assignment":{"cluster_name":"fs","endpoints":[{"lb_endpoints":[` +
		`{"endpoint":{"address":{"socket_address":{"address":"10.0.0.1","port_value":80}}}},` +
		`{"endpoint":{"address":{"socket_address":{"address":"10.0.0.2","port_value":80}}}},` +
		`{"endpoint":{"address":{"socket_address":{"address":"10.0.0.3","port_value":80}}}}]}]}}`
	c := mustAdd(t, m, js)
	hs := c.Hosts()
	hs[0].Stats().RqActive.Store(2)
	hs[1].Stats().RqActive.Store(1)
	hs[2].Stats().RqActive.Store(3)
	if got := counts(pickN(c, 100)); got["10.0.0.2:80"] != 100 {
		t.Errorf("full scan picks %v, want all on the least loaded", got)
	}
	// Ties are broken at random among the least loaded.
	hs[0].Stats().RqActive.Store(1)
	got := counts(pickN(c, 2000))
	if got["10.0.0.3:80"] != 0 || got["10.0.0.1:80"] < 800 || got["10.0.0.2:80"] < 800 {
		t.Errorf("tied full scan picks %v", got)
	}
}

func TestLeastRequestWeighted(t *testing.T) {
	tests := []struct {
		name   string
		extra  string
		active int64 // active requests on the weight-2 host
		want   [2]int
	}{
		{"idle: weights only", "", 0, [2]int{100, 200}},
		{"bias 1: 2/(3+1) vs 1/1", "", 3, [2]int{200, 100}},
		{"bias 0: plain weights", `"least_request_lb_config":{"active_request_bias":{"default_value":0,"runtime_key":"k"}}`, 3, [2]int{100, 200}},
		{"bias 0.5: 2/2 vs 1/1", `"least_request_lb_config":{"active_request_bias":{"default_value":0.5,"runtime_key":"k"}}`, 3, [2]int{150, 150}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, _ := newTestManager(t)
			c := mustAdd(t, m, lbCluster("lrw", "LEAST_REQUEST", tt.extra, "10.0.0.1:80/1", "10.0.0.2:80/2"))
			c.Hosts()[1].Stats().RqActive.Store(tt.active)
			c.RefreshHealth() // rebuild the schedule with the current load
			got := counts(pickN(c, 300))
			if d := got["10.0.0.1:80"] - tt.want[0]; d < -2 || d > 2 {
				t.Errorf("picks %v, want %v", got, tt.want)
			}
		})
	}
}

func TestRingHash(t *testing.T) {
	m, st := newTestManager(t)
	eps := []string{"10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"}
	c := mustAdd(t, m, staticCluster("rh", "RING_HASH", eps...))
	// 3 equal hosts, minimum 1024: each gets ceil(1024/3) = 342 hashes.
	for stat, want := range map[string]int64{"size": 1026, "min_hashes_per_host": 342, "max_hashes_per_host": 342} {
		if got := st.Gauge("cluster.rh.ring_hash_lb." + stat).Value(); got != want {
			t.Errorf("ring_hash_lb.%s = %d, want %d", stat, got, want)
		}
	}
	before := map[uint64]string{}
	rng := rand.New(rand.NewPCG(1, 2))
	perHost := map[string]int{}
	for range 3000 {
		k := rng.Uint64()
		h := c.ChooseHost(&LBContext{HashKey: k, HasHash: true}).String()
		before[k] = h
		perHost[h]++
		if again := c.ChooseHost(&LBContext{HashKey: k, HasHash: true}).String(); again != h {
			t.Fatalf("hash %d went to %s then %s", k, h, again)
		}
	}
	for h, n := range perHost {
		if n < 800 || n > 1200 {
			t.Errorf("%s got %d of 3000 hashes", h, n)
		}
	}
	// Consistency: removing a host moves its keys and few others (the
	// survivors get more ring entries: 512 instead of 342 each); modulo
	// hashing would move half of them.
	c = mustAdd(t, m, staticCluster("rh", "RING_HASH", eps[0], eps[1]))
	moved, kept := 0, 0
	for k, was := range before {
		if was == eps[2] {
			continue
		}
		kept++
		if c.ChooseHost(&LBContext{HashKey: k, HasHash: true}).String() != was {
			moved++
		}
	}
	if moved > kept/4 {
		t.Errorf("%d of %d keys of surviving hosts moved", moved, kept)
	}
	// Without a hash the pick is random.
	if got := counts(pickN(c, 1000)); len(got) != 2 {
		t.Errorf("hashless picks %v", got)
	}
}

func TestRingHashSizes(t *testing.T) {
	m, st := newTestManager(t)
	// 4 hosts, ring capped at 6: 1.5 hashes each, handed out as 2,1,2,1.
	mustAdd(t, m, lbCluster("rs", "RING_HASH", `"ring_hash_lb_config":{"minimum_ring_size":6,"maximum_ring_size":6}`,
		"10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80", "10.0.0.4:80"))
	for stat, want := range map[string]int64{"size": 6, "min_hashes_per_host": 1, "max_hashes_per_host": 2} {
		if got := st.Gauge("cluster.rs.ring_hash_lb." + stat).Value(); got != want {
			t.Errorf("ring_hash_lb.%s = %d, want %d", stat, got, want)
		}
	}
	// Weights 1:3 with minimum 8: the light host gets 2, the heavy one 6.
	mustAdd(t, m, lbCluster("rw", "RING_HASH", `"ring_hash_lb_config":{"minimum_ring_size":8,"hash_function":"MURMUR_HASH_2"}`,
		"10.0.0.1:80/1", "10.0.0.2:80/3"))
	for stat, want := range map[string]int64{"size": 8, "min_hashes_per_host": 2, "max_hashes_per_host": 6} {
		if got := st.Gauge("cluster.rw.ring_hash_lb." + stat).Value(); got != want {
			t.Errorf("ring_hash_lb.%s = %d, want %d", stat, got, want)
		}
	}
}

func TestMaglev(t *testing.T) {
	m, st := newTestManager(t)
	c := mustAdd(t, m, staticCluster("mg", "MAGLEV", "10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"))
	// 65537 entries over 3 equal hosts: 21845 or 21846 each.
	if lo, hi := st.Gauge("cluster.mg.maglev_lb.min_entries_per_host").Value(), st.Gauge("cluster.mg.maglev_lb.max_entries_per_host").Value(); lo != 21845 || hi != 21846 {
		t.Errorf("entries per host %d..%d", lo, hi)
	}
	before := map[uint64]string{}
	for k := range uint64(2000) {
		before[k] = c.ChooseHost(&LBContext{HashKey: k, HasHash: true}).String()
	}
	c = mustAdd(t, m, staticCluster("mg", "MAGLEV", "10.0.0.1:80", "10.0.0.2:80"))
	moved := 0
	for k, was := range before {
		if was != "10.0.0.3:80" && c.ChooseHost(&LBContext{HashKey: k, HasHash: true}).String() != was {
			moved++
		}
	}
	if moved > 200 { // Maglev promises minimal disruption, not none
		t.Errorf("%d of the surviving hosts' keys moved", moved)
	}
	// Weighted, small prime table: weights 1:2 fill 7 slots as 2 (or 3) and 5 (or 4).
	c = mustAdd(t, m, lbCluster("mw", "MAGLEV", `"maglev_lb_config":{"table_size":7}`, "10.0.0.1:80/1", "10.0.0.2:80/2"))
	tbl := c.set.Load().levels[0].pHealthy.(*maglevPicker).table
	n := map[string]int{}
	for _, h := range tbl {
		if h == nil {
			t.Fatal("table has an empty slot")
		}
		n[h.String()]++
	}
	if n["10.0.0.1:80"] < 2 || n["10.0.0.1:80"] > 3 {
		t.Errorf("weighted table %v", n)
	}
}

func TestLBPolicyConfig(t *testing.T) {
	typed := func(typ, body string) string {
		return fmt.Sprintf(`"load_balancing_policy":{"policies":[{"typed_extension_config":{"name":"x","typed_config":{"@type":"type.googleapis.com/%s"%s}}}]}`, typ, body)
	}
	const eps = `"load_assignment":{"cluster_name":"x","endpoints":[{"lb_endpoints":[{"endpoint":{"address":{"socket_address":{"address":"10.0.0.1","port_value":80}}}}]}]}`
	tests := []struct {
		name     string
		js       string
		wantKind lbKind
		wantErr  string
	}{
		{"typed rr", typed("envoy.extensions.load_balancing_policies.round_robin.v3.RoundRobin", ""), lbRoundRobin, ""},
		{"typed random", typed("envoy.extensions.load_balancing_policies.random.v3.Random", ""), lbRandom, ""},
		{"typed least request", typed("envoy.extensions.load_balancing_policies.least_request.v3.LeastRequest", `,"choice_count":3`), lbLeastRequest, ""},
		{"typed ring hash", typed("envoy.extensions.load_balancing_policies.ring_hash.v3.RingHash", `,"minimum_ring_size":16`), lbRingHash, ""},
		{"typed maglev", typed("envoy.extensions.load_balancing_policies.maglev.v3.Maglev", `,"table_size":11`), lbMaglev, ""},
		{"first known policy wins", `"load_balancing_policy":{"policies":[{"typed_extension_config":{"name":"a","typed_config":{"@type":"type.googleapis.com/google.protobuf.Empty"}}},{"typed_extension_config":{"name":"b","typed_config":{"@type":"type.googleapis.com/envoy.extensions.load_balancing_policies.maglev.v3.Maglev"}}}]}`, lbMaglev, ""},
		{"no known policy", typed("google.protobuf.Empty", ""), 0, "load_balancing_policy: didn't find a registered load balancer factory"},
		{"maglev not prime", `"lb_policy":"MAGLEV","maglev_lb_config":{"table_size":8}`, 0, "The table size of maglev must be prime number"},
		{"typed maglev too big", typed("envoy.extensions.load_balancing_policies.maglev.v3.Maglev", `,"table_size":5000012`), 0, "policies[0].typed_extension_config.typed_config: invalid Maglev.TableSize"},
		{"ring min > max", `"lb_policy":"RING_HASH","ring_hash_lb_config":{"minimum_ring_size":100,"maximum_ring_size":10}`, 0, "ring hash: minimum_ring_size (100) > maximum_ring_size (10)"},
		{"ring too big", `"lb_policy":"RING_HASH","ring_hash_lb_config":{"maximum_ring_size":9000000}`, 0, "MaximumRingSize"},
		{"slow start refused", `"lb_policy":"LEAST_REQUEST","least_request_lb_config":{"slow_start_config":{}}`, 0, "least_request_lb_config.slow_start_config is not supported yet"},
		{"hash balance refused", typed("envoy.extensions.load_balancing_policies.ring_hash.v3.RingHash", `,"hash_balance_factor":150`), 0, "hash_balance_factor is not supported yet"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, _ := newTestManager(t)
			err := m.AddOrUpdate(parseCluster(t, `{"name":"x",`+tt.js+`,`+eps+`}`))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			c := m.Get("x")
			if c.policy.kind != tt.wantKind {
				t.Errorf("kind = %d, want %d", c.policy.kind, tt.wantKind)
			}
			if h := c.ChooseHost(nil); h == nil {
				t.Error("no host chosen")
			}
		})
	}
}

func TestHashPolicyNoAlloc(t *testing.T) {
	m, _ := newTestManager(t)
	ctx := &LBContext{HashKey: 42, HasHash: true}
	for _, js := range []string{
		staticCluster("lr", "LEAST_REQUEST", "10.0.0.1:80", "10.0.0.2:80"),
		staticCluster("lrw", "LEAST_REQUEST", "10.0.0.1:80/2", "10.0.0.2:80"),
		staticCluster("rh", "RING_HASH", "10.0.0.1:80", "10.0.0.2:80"),
		staticCluster("mg", "MAGLEV", "10.0.0.1:80", "10.0.0.2:80"),
	} {
		c := mustAdd(t, m, js)
		if a := testing.AllocsPerRun(1000, func() { c.ChooseHost(ctx); c.ChooseHost(nil) }); a != 0 {
			t.Errorf("%s: ChooseHost allocates %v", c.Name, a)
		}
	}
}

func benchHosts(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("10.%d.%d.%d:80", i>>16&255, i>>8&255, i&255)
	}
	return out
}

func BenchmarkHashRebuild10k(b *testing.B) {
	for _, policy := range []string{"RING_HASH", "MAGLEV"} {
		b.Run(policy, func(b *testing.B) {
			m, _ := newTestManager(b)
			c := mustAdd(b, m, staticCluster("b", policy, benchHosts(10000)...))
			b.ReportAllocs()
			for b.Loop() {
				c.RefreshHealth()
			}
		})
	}
}

// TestMaglevEnvoyTable checks the table against Envoy's own test
// (MaglevLoadBalancerTest.Basic): six hosts, table size 7.
func TestMaglevEnvoyTable(t *testing.T) {
	m, st := newTestManager(t)
	var eps []string
	for p := 90; p <= 95; p++ {
		eps = append(eps, fmt.Sprintf("127.0.0.1:%d", p))
	}
	c := mustAdd(t, m, lbCluster("mg", "MAGLEV", `"maglev_lb_config":{"table_size":7}`, eps...))
	want := []int{2, 4, 0, 1, 5, 0, 3}
	for i := range 3 * len(want) {
		got := c.ChooseHost(&LBContext{HashKey: uint64(i), HasHash: true}).String()
		if got != eps[want[i%len(want)]] {
			t.Errorf("hash %d -> %s, want %s", i, got, eps[want[i%len(want)]])
		}
	}
	if lo, hi := st.Gauge("cluster.mg.maglev_lb.min_entries_per_host").Value(), st.Gauge("cluster.mg.maglev_lb.max_entries_per_host").Value(); lo != 1 || hi != 2 {
		t.Errorf("entries per host %d..%d, want 1..2", lo, hi)
	}
}

// TestRingHashEnvoyRings checks rings against Envoy's own tests
// (RingHashLoadBalancerTest: Basic, BasicWithMurmur2, HostWeightedTinyRing,
// HostWeightedLargeRing).
func TestRingHashEnvoyRings(t *testing.T) {
	ports := func(from, to int, weights ...int) []string {
		var out []string
		for p := from; p <= to; p++ {
			s := fmt.Sprintf("127.0.0.1:%d", p)
			if len(weights) > 0 {
				s += fmt.Sprintf("/%d", weights[p-from])
			}
			out = append(out, s)
		}
		return out
	}
	tests := []struct {
		name   string
		config string
		eps    []string
		picks  map[uint64]int // hash -> host index
	}{
		{"xxhash", `"ring_hash_lb_config":{"minimum_ring_size":12}`, ports(90, 95),
			map[uint64]int{math.MaxUint64: 4, 3551244743356806947: 5, 3551244743356806948: 3, 16117243373044804880: 0}},
		{"murmur2", `"ring_hash_lb_config":{"minimum_ring_size":12,"hash_function":"MURMUR_HASH_2"}`, ports(80, 85),
			map[uint64]int{0: 5, math.MaxUint64: 5, 1358027074129602068: 5, 1358027074129602069: 3, 10150910876324007730: 2}},
		{"weighted tiny ring", `"ring_hash_lb_config":{"minimum_ring_size":6,"maximum_ring_size":6}`, ports(90, 92, 1, 2, 3),
			map[uint64]int{928266305478181108: 2, 4443673547860492590: 2, 5583722120771150861: 1,
				6311230543546372928: 1, 13444792449719432967: 2, 16117243373044804889: 0}},
		{"uneven hosts", `"ring_hash_lb_config":{"minimum_ring_size":3}`, ports(80, 81), map[uint64]int{0: 0}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, _ := newTestManager(t)
			c := mustAdd(t, m, lbCluster("rh", "RING_HASH", tt.config, tt.eps...))
			for hash, want := range tt.picks {
				got := c.ChooseHost(&LBContext{HashKey: hash, HasHash: true}).String()
				if w := strings.Split(tt.eps[want], "/")[0]; got != w {
					t.Errorf("hash %d -> %s, want %s", hash, got, w)
				}
			}
		})
	}
	m, st := newTestManager(t)
	c := mustAdd(t, m, lbCluster("rh", "RING_HASH", `"ring_hash_lb_config":{"minimum_ring_size":6144}`, ports(90, 92, 1, 2, 3)...))
	if st.Gauge("cluster.rh.ring_hash_lb.size").Value() != 6144 || st.Gauge("cluster.rh.ring_hash_lb.max_hashes_per_host").Value() != 3072 {
		t.Errorf("large ring gauges %d %d", st.Gauge("cluster.rh.ring_hash_lb.size").Value(), st.Gauge("cluster.rh.ring_hash_lb.max_hashes_per_host").Value())
	}
	got := map[string]int{}
	for i := range uint64(6000) {
		got[c.ChooseHost(&LBContext{HashKey: i * (math.MaxUint64 / 6000), HasHash: true}).String()]++
	}
	if got["127.0.0.1:90"] != 987 || got["127.0.0.1:91"] != 1932 || got["127.0.0.1:92"] != 3081 {
		t.Errorf("large weighted ring distribution %v, Envoy's is 987/1932/3081", got)
	}
}
