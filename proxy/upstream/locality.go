package upstream

import (
	"cmp"
	"math/rand/v2"
	"slices"
	"sync"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
)

// locKey identifies a locality as Envoy's LocalityLess orders them: by
// region, then zone, then sub-zone. Hosts without a locality share the zero key.
type locKey struct{ region, zone, subZone string }

func keyOf(l *corev3.Locality) locKey {
	return locKey{l.GetRegion(), l.GetZone(), l.GetSubZone()}
}

func (a locKey) compare(b locKey) int {
	return cmp.Or(cmp.Compare(a.region, b.region), cmp.Compare(a.zone, b.zone), cmp.Compare(a.subZone, b.subZone))
}

// localityLB is the locality part of a cluster's load balancing: locality
// weighted balancing or zone aware routing (Envoy's LocalityLbConfig). The
// zero value does neither.
type localityLB struct {
	// weighted is locality_weighted_lb_config: pick a locality by its
	// effective weight, then a host in it.
	weighted bool
	// failOnPanic is zone_aware_lb_config.fail_traffic_on_panic: a
	// panicking priority (or local cluster) yields no host.
	failOnPanic bool
	// Zone aware routing (used only with a local cluster and a non-hashing policy).
	routingEnabled uint64 // percent of picks that try zone routing; default 100
	minClusterSize uint64 // min healthy upstream hosts in P0; default 6
	forceDirect    bool   // force_locality_direct_routing (typed config only)

	// Set by the Manager: the node's locality and the local cluster's
	// current snapshot (nil func or nil result: no zone routing).
	node     locKey
	hasNode  bool
	localSet func() *prioritySet
	stats    *ClusterStats // nil in unit tests without a cluster
	// rnd is the random source of zone routing; nil means math/rand/v2.
	rnd func() uint64
}

func (z *localityLB) random() uint64 {
	if z.rnd != nil {
		return z.rnd()
	}
	return rand.Uint64()
}

// zoneCapable reports whether zone aware routing may apply to snapshots
// built with z under policy l.
func (z *localityLB) zoneCapable(l *lbConfig) bool { return z.localSet != nil && !l.hashed() }

// localityGroup is one locality's hosts within a priority level.
type localityGroup struct {
	key                 locKey
	weight              uint32 // the locality's load_balancing_weight; 0 when unset
	hosts               []*Host
	healthy, degraded   []*Host
	pHealthy, pDegraded picker
}

// groupLocalities splits hosts by locality: the node's locality first when
// it has hosts (hasLocal), then the others in LocalityLess order, as
// Envoy's HostsPerLocality.
func groupLocalities(hosts []*Host, node locKey, hasNode bool) (groups []*localityGroup, hasLocal bool) {
	byKey := map[locKey]*localityGroup{}
	for _, h := range hosts {
		k := keyOf(h.Locality)
		g := byKey[k]
		if g == nil {
			g = &localityGroup{key: k, weight: h.localityWeight}
			byKey[k] = g
			groups = append(groups, g)
		}
		g.hosts = append(g.hosts, h)
		switch h.Health() {
		case Healthy:
			g.healthy = append(g.healthy, h)
		case Degraded:
			g.degraded = append(g.degraded, h)
		}
	}
	hasLocal = hasNode && byKey[node] != nil
	slices.SortFunc(groups, func(a, b *localityGroup) int {
		if hasLocal && (a.key == node) != (b.key == node) {
			if a.key == node {
				return -1
			}
			return 1
		}
		return a.key.compare(b.key)
	})
	return groups, hasLocal
}

// effectiveLocalityWeight is Envoy's: the locality weight scaled by the
// share of eligible hosts times the overprovisioning factor, capped at 1.
func effectiveLocalityWeight(weight uint32, eligible, total int, overprovision uint32) float64 {
	if total == 0 {
		return 0
	}
	avail := min(1.0, float64(overprovision)/100*float64(eligible)/float64(total))
	return float64(weight) * avail
}

// localitySched is Envoy's EDF scheduler over localities with fixed
// effective weights; nil when no locality has a positive weight.
type localitySched struct {
	mu sync.Mutex
	q  edf[locEntry]
}

// locEntry is a locality's index in the groups and its effective weight.
type locEntry struct {
	idx    int
	weight float64
}

// newLocalitySched builds the scheduler of eligible (healthy or degraded)
// hosts per group, skipping seed%n picks like EdfScheduler::createWithPicks.
func newLocalitySched(groups []*localityGroup, eligible func(*localityGroup) []*Host, overprovision uint32, seed uint64) *localitySched {
	any := false
	for _, g := range groups {
		any = any || len(eligible(g)) > 0
	}
	if !any {
		return nil
	}
	s := &localitySched{}
	for i, g := range groups {
		w := effectiveLocalityWeight(g.weight, len(eligible(g)), len(g.hosts), overprovision)
		if w > 0 {
			s.q.add(locEntry{idx: i, weight: w}, w)
		}
	}
	if len(s.q.heap) == 0 {
		return nil
	}
	for range seed % uint64(len(s.q.heap)) {
		s.pick()
	}
	return s
}

// pick returns the index of the next locality and reschedules it.
func (s *localitySched) pick() int {
	s.mu.Lock()
	e := s.q.next()
	s.q.reschedule(e.weight)
	s.mu.Unlock()
	return e.idx
}
