package upstream

import (
	"net/netip"
	"slices"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
)

// level makes hosts of priority prio: healthy ones, then degraded, then
// unhealthy, each of weight w.
func level(prio, healthy, degraded, unhealthy int, w uint32) []*Host {
	var out []*Host
	add := func(n int, s corev3.HealthStatus) {
		for range n {
			a := netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, byte(prio), 0, byte(len(out) + 1)}), 80)
			out = append(out, newHost(nil, a, "", w, int32(prio), nil, nil, s))
		}
	}
	add(healthy, corev3.HealthStatus_HEALTHY)
	add(degraded, corev3.HealthStatus_DEGRADED)
	add(unhealthy, corev3.HealthStatus_UNHEALTHY)
	return out
}

func TestPriorityLoadEnvoyCases(t *testing.T) {
	def := psOptions{overprovision: defaultOverprovisioning, panicThreshold: defaultPanicThreshold}
	tests := []struct {
		name              string
		hosts             []*Host
		opts              psOptions
		healthy, degraded []uint32
		panic             []bool
	}{
		// Envoy's priority levels doc: P0 20% healthy, P1 20%, P2 100%.
		{"spill over three levels", slices.Concat(level(0, 2, 0, 8, 1), level(1, 2, 0, 8, 1), level(2, 5, 0, 0, 1)), def,
			[]uint32{28, 28, 44}, []uint32{0, 0, 0}, []bool{false, false, false}},
		{"three levels, P1 empty of healthy", slices.Concat(level(0, 5, 0, 5, 1), level(1, 0, 0, 3, 1), level(2, 5, 0, 0, 1)), def,
			[]uint32{70, 0, 30}, []uint32{0, 0, 0}, []bool{false, false, false}},
		// Total availability below 100: P0 (20% healthy) panics, P1 (50%) does not.
		{"panic per priority", slices.Concat(level(0, 2, 0, 8, 1), level(1, 5, 0, 5, 1)), def,
			[]uint32{29, 71}, []uint32{0, 0}, []bool{true, false}},
		{"degraded counts against panic", slices.Concat(level(0, 1, 1, 2, 1), level(1, 0, 0, 2, 1)), def,
			[]uint32{50, 0}, []uint32{50, 0}, []bool{false, true}},
		{"degraded levels after every healthy one", slices.Concat(level(0, 0, 4, 0, 1), level(1, 2, 0, 2, 1), level(2, 0, 2, 2, 1)), def,
			[]uint32{0, 70, 0}, []uint32{30, 0, 0}, []bool{false, false, false}},
		{"overprovisioning 100", slices.Concat(level(0, 9, 0, 1, 1), level(1, 1, 0, 0, 1)), psOptions{overprovision: 100, panicThreshold: 50},
			[]uint32{90, 10}, []uint32{0, 0}, []bool{false, false}},
		{"weighted_priority_health counts weights", slices.Concat(level(0, 1, 0, 0, 3), level(0, 0, 0, 1, 1), level(1, 1, 0, 0, 1)),
			psOptions{overprovision: 140, panicThreshold: 50, weightedHealth: true}, []uint32{100, 0}, []uint32{0, 0}, []bool{false, false}},
		{"without weighted_priority_health the same hosts count", slices.Concat(level(0, 1, 0, 0, 3), level(0, 0, 0, 1, 1), level(1, 1, 0, 0, 1)), def,
			[]uint32{70, 30}, []uint32{0, 0}, []bool{false, false}},
		{"panic threshold 0 never panics", slices.Concat(level(0, 1, 0, 9, 1), level(1, 0, 0, 2, 1)), psOptions{overprovision: 140},
			[]uint32{100, 0}, []uint32{0, 0}, []bool{false, false}},
		{"panic threshold 0, nothing available", slices.Concat(level(0, 0, 0, 2, 1), level(1, 0, 0, 2, 1)), psOptions{overprovision: 140},
			[]uint32{100, 0}, []uint32{0, 0}, []bool{false, false}},
		{"empty middle level in total panic", slices.Concat(level(0, 0, 0, 2, 1), level(2, 0, 0, 2, 1)), def,
			[]uint32{50, 0, 50}, []uint32{0, 0, 0}, []bool{true, true, true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sortHosts(tt.hosts)
			ps := buildPrioritySet(tt.hosts, &lbConfig{}, tt.opts)
			if !slices.Equal(ps.healthy, tt.healthy) || !slices.Equal(ps.degrade, tt.degraded) || !slices.Equal(ps.panic, tt.panic) {
				t.Errorf("healthy %v degraded %v panic %v; want %v %v %v", ps.healthy, ps.degrade, ps.panic, tt.healthy, tt.degraded, tt.panic)
			}
		})
	}
}

// TestPanicPerPriorityPicks checks that a panicking level picks among all
// its hosts while a healthy level keeps to its healthy ones.
func TestPanicPerPriorityPicks(t *testing.T) {
	m, st := newTestManager(t)
	var eps []string
	for i, s := range []string{"", "!UNHEALTHY", "!UNHEALTHY", "!UNHEALTHY", "!UNHEALTHY"} {
		eps = append(eps, netip4(byte(i+1)).String()+s)
	}
	for i, s := range []string{"", "", "!UNHEALTHY", "!UNHEALTHY"} {
		eps = append(eps, netip4(byte(i+11)).String()+"@1"+s)
	}
	c := mustAdd(t, m, staticCluster("pp", "ROUND_ROBIN", eps...))
	got := counts(pickN(c, 4000))
	// P0 (1/5 healthy: 28% availability, panic) gets 28+1 = 29% over all 5
	// hosts; P1 (2/4 healthy: 70%) gets 71% over its 2 healthy hosts.
	p0, p1 := 0, 0
	for h, n := range got {
		if slices.Contains(eps[:5], h) || slices.Contains(eps[1:5], h+"!UNHEALTHY") {
			p0 += n
		} else {
			p1 += n
		}
	}
	for _, h := range []string{netip4(13).String(), netip4(14).String()} {
		if got[h] != 0 {
			t.Errorf("unhealthy P1 host %s picked %d times", h, got[h])
		}
	}
	if got[netip4(2).String()] == 0 || got[netip4(5).String()] == 0 {
		t.Errorf("panicking P0 does not use its unhealthy hosts: %v", got)
	}
	if p0 < 1000 || p0 > 1320 { // 1160 expected, sd ~29
		t.Errorf("P0 got %d of 4000 picks, P1 %d (%v)", p0, p1, got)
	}
	if n := st.Counter("cluster.pp.lb_healthy_panic").Value(); n != uint64(p0) {
		t.Errorf("lb_healthy_panic = %d, want the %d P0 picks", n, p0)
	}
}
