package upstream

import "github.com/outrider-proxy/outrider/telemetry/stats"

// Zone aware routing as Envoy's ZoneAwareLoadBalancerBase: only priority 0
// is routed by zone; percentages are in units of 0.01% (0-10000).

type zoneMode uint8

const (
	zoneNone     zoneMode = iota // no locality routing
	zoneDirect                   // all traffic to the local locality
	zoneResidual                 // a share locally, the rest by residual capacity
)

// zoneState is the locality routing state of one upstream snapshot against
// one snapshot of the local cluster; it is rebuilt whenever either changes.
type zoneState struct {
	local        *prioritySet // the local cluster's snapshot it was computed from
	mode         zoneMode
	localPercent uint64   // share of picks kept local in residual mode, of 10000
	residual     []uint64 // accumulated residual capacity per upstream locality
	localPanic   bool     // the local cluster's P0 is in panic
}

// computeZone is Envoy's regenerateLocalityRoutingStructures for level l0
// (the upstream's P0) against the local cluster's snapshot local. It returns
// the counter Envoy bumps on an early exit, if any.
func computeZone(l0 *priorityLevel, local *prioritySet, z *localityLB, panicThreshold float64) (*zoneState, func(*ClusterStats) *stats.Counter) {
	zs := &zoneState{local: local}
	var localHosts []*Host
	if len(local.levels) > 0 {
		localHosts = local.levels[0].hosts
		zs.localPanic = levelInPanic(local.levels[0], panicThreshold)
	}
	if len(l0.locs) < 2 {
		return zs, nil
	}
	localGroups, localHasLocal := groupLocalities(localHosts, z.node, z.hasNode)
	if len(localGroups) < 2 && !z.forceDirect {
		return zs, nil
	}
	if !localHasLocal {
		return zs, func(s *ClusterStats) *stats.Counter { return s.LbLocalClusterNotOk() }
	}
	if uint64(len(l0.healthy)) < z.minClusterSize {
		return zs, func(s *ClusterStats) *stats.Counter { return s.LbZoneClusterTooSmall() }
	}

	// Percentages of healthy hosts per locality, local and upstream.
	localCounts := map[locKey]uint64{}
	var totalLocal uint64
	for _, g := range localGroups {
		localCounts[g.key] = uint64(len(g.healthy))
		totalLocal += uint64(len(g.healthy))
	}
	totalUp := uint64(len(l0.healthy))
	type pct struct{ local, up uint64 }
	pcts := make([]pct, len(l0.locs))
	for i, g := range l0.locs {
		if len(g.healthy) == 0 {
			continue
		}
		if totalLocal > 0 {
			pcts[i].local = 10000 * localCounts[g.key] / totalLocal
		}
		if totalUp > 0 {
			pcts[i].up = 10000 * uint64(len(g.healthy)) / totalUp
		}
	}
	if l0.hasLocal && ((pcts[0].up > 0 && pcts[0].up >= pcts[0].local) || z.forceDirect) {
		zs.mode = zoneDirect
		return zs, nil
	}
	zs.mode = zoneResidual
	if l0.hasLocal && pcts[0].local > 0 {
		zs.localPercent = pcts[0].up * 10000 / pcts[0].local
	}
	zs.residual = make([]uint64, len(l0.locs))
	var last uint64
	for i, p := range pcts {
		if !(i == 0 && l0.hasLocal) && p.up > p.local {
			last += p.up - p.local
		}
		zs.residual[i] = last
	}
	return zs, nil
}

// zoneLocality is Envoy's tryChooseLocalLocalityHosts: the index of the
// P0 locality to pick from.
func (zs *zoneState) zoneLocality(z *localityLB, st *ClusterStats) int {
	if zs.mode == zoneDirect {
		inc(st, func(s *ClusterStats) *stats.Counter { return s.LbZoneRoutingAllDirectly() })
		return 0
	}
	if z.random()%10000 < zs.localPercent {
		inc(st, func(s *ClusterStats) *stats.Counter { return s.LbZoneRoutingSampled() })
		return 0
	}
	inc(st, func(s *ClusterStats) *stats.Counter { return s.LbZoneRoutingCrossZone() })
	n := len(zs.residual)
	if zs.residual[n-1] == 0 {
		inc(st, func(s *ClusterStats) *stats.Counter { return s.LbZoneNoCapacityLeft() })
		return int(z.random() % uint64(n))
	}
	threshold := z.random() % zs.residual[n-1]
	i := 0
	for threshold >= zs.residual[i] {
		i++
	}
	return i
}

func inc(st *ClusterStats, which func(*ClusterStats) *stats.Counter) {
	if st != nil && which != nil {
		which(st).Inc()
	}
}

// zone returns the zone routing state of ps against the local cluster's
// current snapshot, rebuilding it when either changed; nil when there is
// no local cluster.
func (ps *prioritySet) zone() *zoneState {
	z := ps.loc
	local := z.localSet()
	if local == nil || len(ps.levels) == 0 {
		return nil
	}
	cur := ps.zs.Load()
	if cur != nil && cur.local == local {
		return cur
	}
	next, stat := computeZone(ps.levels[0], local, z, ps.panicThreshold)
	if ps.zs.CompareAndSwap(cur, next) {
		// Only the goroutine that installed the state counts it, like
		// Envoy's one regeneration per update.
		inc(z.stats, func(s *ClusterStats) *stats.Counter { return s.LbRecalculateZoneStructures() })
		inc(z.stats, stat)
	}
	return next
}

// levelInPanic is Envoy's isHostSetInPanic.
func levelInPanic(l *priorityLevel, threshold float64) bool {
	n := len(l.hosts)
	if n == 0 {
		return 0 < threshold
	}
	pct := 100 * float64(len(l.healthy)) / float64(n)
	pct += 100 * float64(len(l.degraded)) / float64(n)
	return pct < threshold
}
