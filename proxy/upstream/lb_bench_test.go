package upstream

import (
	"fmt"
	"testing"
)

// lbBenchPolicies are the load balancers whose pick is measured: the
// cluster lb_policy and whether the hosts get unequal weights (1 to 5).
var lbBenchPolicies = []struct {
	name, policy string
	weighted     bool
}{
	{"ROUND_ROBIN", "ROUND_ROBIN", false},
	{"WEIGHTED_RR", "ROUND_ROBIN", true},
	{"LEAST_REQUEST", "LEAST_REQUEST", false},
	{"WEIGHTED_LR", "LEAST_REQUEST", true},
	{"RANDOM", "RANDOM", false},
	{"RING_HASH", "RING_HASH", false},
	{"MAGLEV", "MAGLEV", false},
}

// lbBenchHosts are n distinct endpoints, weighted 1..5 in turn when
// weighted ("addr/weight", as staticCluster takes them).
func lbBenchHosts(n int, weighted bool) []string {
	hosts := benchHosts(n)
	if weighted {
		for i := range hosts {
			hosts[i] += fmt.Sprintf("/%d", i%5+1)
		}
	}
	return hosts
}

// BenchmarkLBPick is the cost of one ChooseHost per load balancer at 10,
// 1,000 and 10,000 hosts, with a fresh hash key each pick for the hash
// policies (the others ignore it). See bench/README.md.
func BenchmarkLBPick(b *testing.B) {
	for _, tc := range lbBenchPolicies {
		for _, n := range []int{10, 1000, 10000} {
			b.Run(fmt.Sprintf("%s/%d", tc.name, n), func(b *testing.B) {
				m, _ := newTestManager(b)
				c := mustAdd(b, m, staticCluster("b", tc.policy, lbBenchHosts(n, tc.weighted)...))
				ctx := &LBContext{HasHash: true}
				b.ReportAllocs()
				for i := 0; b.Loop(); i++ {
					ctx.HashKey = uint64(i) * 0x9e3779b97f4a7c15
					if c.ChooseHost(ctx) == nil {
						b.Fatal("no host")
					}
				}
			})
		}
	}
}

// BenchmarkLBPickParallel is BenchmarkLBPick at 1,000 hosts from every core
// at once (the shared round-robin and least-request state under contention).
func BenchmarkLBPickParallel(b *testing.B) {
	for _, tc := range lbBenchPolicies {
		b.Run(tc.name, func(b *testing.B) {
			m, _ := newTestManager(b)
			c := mustAdd(b, m, staticCluster("b", tc.policy, lbBenchHosts(1000, tc.weighted)...))
			b.ReportAllocs()
			b.ResetTimer() // the cluster's setup is not the pick's cost
			b.RunParallel(func(pb *testing.PB) {
				ctx := &LBContext{HasHash: true}
				for i := uint64(0); pb.Next(); i++ {
					ctx.HashKey = i * 0x9e3779b97f4a7c15
					c.ChooseHost(ctx)
				}
			})
		})
	}
}

// Every load balancer picks without allocating, at every size, and spreads
// its picks over more than one host.
func TestLBPickNoAlloc(t *testing.T) {
	for _, tc := range lbBenchPolicies {
		for _, n := range []int{10, 10000} {
			m, _ := newTestManager(t)
			c := mustAdd(t, m, staticCluster("b", tc.policy, lbBenchHosts(n, tc.weighted)...))
			ctx := &LBContext{HasHash: true}
			seen := map[*Host]bool{}
			for i := range 200 {
				ctx.HashKey = uint64(i) * 0x9e3779b97f4a7c15
				seen[c.ChooseHost(ctx)] = true
			}
			if len(seen) < 2 || seen[nil] {
				t.Errorf("%s/%d: 200 picks reached %d hosts (nil: %v)", tc.name, n, len(seen), seen[nil])
			}
			i := uint64(0)
			if a := testing.AllocsPerRun(1000, func() {
				i++
				ctx.HashKey = i * 0x9e3779b97f4a7c15
				c.ChooseHost(ctx)
			}); a != 0 {
				t.Errorf("%s/%d: ChooseHost allocates %v per pick", tc.name, n, a)
			}
		}
	}
}
