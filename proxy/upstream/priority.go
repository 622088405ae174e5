package upstream

import (
	"math"
	"math/rand/v2"
	"sync/atomic"
)

// prioritySet is one immutable snapshot of a cluster's hosts, grouped by
// priority (and by locality when the cluster balances by locality), with
// the per-priority load computed as Envoy's LoadBalancerBase does.
type prioritySet struct {
	all     []*Host // every host, priority order
	hashed  bool    // a hashing policy: the request hash also picks the priority
	levels  []*priorityLevel
	healthy []uint32 // healthy priority load, percent per level
	degrade []uint32 // degraded priority load, percent per level
	panic   []bool   // per-level panic mode

	loc            *localityLB // never nil
	zoneOn         bool        // zone aware routing may apply (see localityLB.zoneCapable)
	panicThreshold float64
	zs             atomic.Pointer[zoneState] // cached zone routing state; nil until first used

	nHealthy, nDegraded int
}

type priorityLevel struct {
	hosts, healthy, degraded  []*Host
	pAll, pHealthy, pDegraded picker

	// The level's localities; &noLevelLocalities (empty, shared, never
	// written) when the cluster neither weights localities nor routes by
	// zone, so most levels carry one pointer for them.
	*levelLocalities
}

// levelLocalities are a priority level's localities and their schedulers.
type levelLocalities struct {
	// Localities of the level, the node's first when hasLocal; nil when the
	// cluster neither weights localities nor routes by zone.
	locs     []*localityGroup
	hasLocal bool
	// Locality schedulers of healthy and degraded hosts with
	// locality_weighted_lb_config; nil when no locality has a positive
	// effective weight.
	hSched, dSched *localitySched
}

var noLevelLocalities levelLocalities

// psOptions are the inputs of the priority load besides the hosts.
type psOptions struct {
	overprovision  uint32  // overprovisioning_factor in percent (Envoy default 140)
	panicThreshold float64 // healthy_panic_threshold in percent (default 50, 0 disables)
	weightedHealth bool    // load_assignment.policy.weighted_priority_health
}

var noLocality = &localityLB{}

// levelPicker is newPicker for some of a priority level's hosts (all: the
// level's); hashing policies weigh localities against the whole level.
func levelPicker(policy *lbConfig, hosts, all []*Host, seed uint64) picker {
	if policy.hashed() && len(hosts) > 0 {
		return newHashPicker(policy, hosts, all)
	}
	return newPicker(policy, hosts, seed)
}

// buildPrioritySet groups hosts by priority (and locality) and computes loads.
func buildPrioritySet(hosts []*Host, policy *lbConfig, o psOptions) *prioritySet {
	loc := policy.loc
	if loc == nil {
		loc = noLocality
	}
	threshold := float64(min(100, uint64(math.Round(max(o.panicThreshold, 0)))))
	ps := &prioritySet{all: hosts, hashed: policy.hashed(), loc: loc, zoneOn: loc.zoneCapable(policy), panicThreshold: threshold}
	maxPrio := -1
	sorted := true // by priority, as hostsFor and setHosts hand them over
	for i, h := range hosts {
		maxPrio = max(maxPrio, int(h.Priority))
		sorted = sorted && (i == 0 || hosts[i-1].Priority <= h.Priority)
	}
	ps.levels = make([]*priorityLevel, maxPrio+1)
	// Health is read once per host (it may change meanwhile); each level's
	// slices are then made at their size, and shared where they can be: a
	// sorted host list's levels are its runs, and a level whose hosts are
	// all healthy uses its hosts as its healthy ones.
	hh := make([]Health, len(hosts))
	type count struct{ all, healthy, degraded int }
	counts := make([]count, maxPrio+1)
	for i, h := range hosts {
		hh[i] = h.Health()
		c := &counts[h.Priority]
		c.all++
		switch hh[i] {
		case Healthy:
			c.healthy++
		case Degraded:
			c.degraded++
		}
	}
	start := 0
	for i := range ps.levels {
		c := counts[i]
		l := &priorityLevel{levelLocalities: &noLevelLocalities}
		if sorted {
			l.hosts = hosts[start : start+c.all : start+c.all]
			start += c.all
		} else if c.all > 0 {
			l.hosts = make([]*Host, 0, c.all)
		}
		if c.healthy == c.all {
			l.healthy = l.hosts
		} else if c.healthy > 0 {
			l.healthy = make([]*Host, 0, c.healthy)
		}
		if c.degraded > 0 {
			l.degraded = make([]*Host, 0, c.degraded)
		}
		ps.levels[i] = l
		ps.nHealthy += c.healthy
		ps.nDegraded += c.degraded
	}
	for i, h := range hosts {
		l, c := ps.levels[h.Priority], &counts[h.Priority]
		if !sorted {
			l.hosts = append(l.hosts, h)
		}
		switch {
		case hh[i] == Healthy && c.healthy != c.all:
			l.healthy = append(l.healthy, h)
		case hh[i] == Degraded:
			l.degraded = append(l.degraded, h)
		}
	}
	n := len(ps.levels)
	seed := rand.Uint64()
	byLocality := !ps.hashed && (loc.weighted || ps.zoneOn)
	health, degr := make([]uint32, n), make([]uint32, n)
	for i, l := range ps.levels {
		l.pAll = levelPicker(policy, l.hosts, l.hosts, seed)
		if len(l.healthy) == len(l.hosts) {
			l.pHealthy = l.pAll // same hosts: share the (possibly costly) picker
		} else {
			l.pHealthy = levelPicker(policy, l.healthy, l.hosts, seed)
		}
		l.pDegraded = levelPicker(policy, l.degraded, l.hosts, seed)
		if byLocality && len(l.hosts) > 0 {
			l.levelLocalities = new(levelLocalities)
			l.locs, l.hasLocal = groupLocalities(l.hosts, loc.node, loc.hasNode)
			for _, g := range l.locs {
				g.pHealthy = newPicker(policy, g.healthy, seed)
				g.pDegraded = newPicker(policy, g.degraded, seed)
			}
			if loc.weighted {
				l.hSched = newLocalitySched(l.locs, func(g *localityGroup) []*Host { return g.healthy }, o.overprovision, seed)
				l.dSched = newLocalitySched(l.locs, func(g *localityGroup) []*Host { return g.degraded }, o.overprovision, seed)
			}
		}
		health[i], degr[i] = levelAvailability(l, o)
	}
	ps.healthy, ps.degrade, ps.panic = make([]uint32, n), make([]uint32, n), make([]bool, n)
	if n == 0 {
		return ps
	}
	var avail uint32
	for i := range n {
		avail += health[i] + degr[i]
	}
	avail = min(avail, 100)
	if avail > 0 {
		firstH, left := distributeLoad(ps.healthy, health, 100, avail)
		firstD, left := distributeLoad(ps.degrade, degr, left, avail)
		if left != 0 {
			if firstH >= 0 {
				ps.healthy[firstH] += left
			} else {
				ps.degrade[firstD] += left
			}
		}
	}
	// recalculatePerPriorityPanic.
	if threshold == 0 && avail == 0 {
		ps.healthy[0] = 100 // nothing will be chosen, but loads add up to 100
		return ps
	}
	total := true
	for i, l := range ps.levels {
		ps.panic[i] = avail != 100 && levelInPanic(l, threshold)
		total = total && ps.panic[i]
	}
	if total {
		// Total panic: load proportional to host count (recalculateLoadInTotalPanic).
		left, first := uint32(100), -1
		for i, l := range ps.levels {
			ps.healthy[i] = uint32(len(l.hosts) * 100 / len(hosts))
			ps.degrade[i] = 0
			left -= ps.healthy[i]
			if first < 0 && len(l.hosts) > 0 {
				first = i
			}
		}
		ps.healthy[first] += left
	}
	return ps
}

// levelAvailability is a level's healthy and degraded availability in
// percent: the share of hosts (or of host weight with
// weighted_priority_health) times the overprovisioning factor, capped at 100.
func levelAvailability(l *priorityLevel, o psOptions) (healthy, degraded uint32) {
	if len(l.hosts) == 0 {
		return 0, 0
	}
	hw, dw, tw := uint64(len(l.healthy)), uint64(len(l.degraded)), uint64(len(l.hosts))
	if o.weightedHealth {
		hw, dw, tw = sumWeights(l.healthy), sumWeights(l.degraded), sumWeights(l.hosts)
	}
	ov := uint64(o.overprovision)
	return uint32(min(100, ov*hw/tw)), uint32(min(100, ov*dw/tw))
}

func sumWeights(hs []*Host) uint64 {
	var s uint64
	for _, h := range hs {
		s += uint64(h.Weight)
	}
	return s
}

func distributeLoad(load, avail []uint32, total, normalized uint32) (first int, left uint32) {
	first = -1
	for i := range avail {
		if first < 0 && avail[i] > 0 {
			first = i
		}
		load[i] = min(total, avail[i]*100/normalized)
		total -= load[i]
	}
	return first, total
}

// choose picks a host; panicked reports that a panicking level was used
// (counted as lb_healthy_panic, even when fail_traffic_on_panic then
// yields no host).
func (ps *prioritySet) choose(ctx *LBContext) (h *Host, panicked bool) {
	if len(ps.all) == 0 {
		return nil, false
	}
	i, degraded := 0, false
	if ps.healthy[0] != 100 { // otherwise the common case: no random draw needed
		var r uint32
		if ps.hashed && ctx != nil && ctx.HasHash {
			r = uint32(ctx.HashKey%100) + 1
		} else {
			r = uint32(rand.Uint64N(100)) + 1
		}
		if i, degraded = ps.choosePriority(r); i < 0 {
			return nil, false
		}
	}
	l := ps.levels[i]
	if ps.panic[i] {
		if ps.loc.failOnPanic || l.pAll == nil {
			return nil, true
		}
		return l.pAll.pick(ctx), true
	}
	if l.locs != nil {
		if g, ok, fail := ps.chooseLocality(i, l, degraded); fail {
			return nil, false
		} else if ok {
			return pickIn(ctx, g, degraded), false
		}
	}
	p := l.pHealthy
	if degraded {
		p = l.pDegraded
	}
	if p == nil {
		return nil, false
	}
	return p.pick(ctx), false
}

// choosePriority is Envoy's: r in 1..100 against the healthy loads, then
// the degraded ones; -1 if the loads do not reach r.
func (ps *prioritySet) choosePriority(r uint32) (int, bool) {
	var agg uint32
	for i := range ps.levels {
		agg += ps.healthy[i]
		if r <= agg {
			return i, false
		}
	}
	for i := range ps.levels {
		agg += ps.degrade[i]
		if r <= agg {
			return i, true
		}
	}
	return -1, false
}

// chooseLocality picks the locality of level i as Envoy's hostSourceToUse
// does after the panic check: by locality weight, else by zone aware
// routing at P0. ok is false when neither applies; fail means
// fail_traffic_on_panic refused the pick.
func (ps *prioritySet) chooseLocality(i int, l *priorityLevel, degraded bool) (g *localityGroup, ok, fail bool) {
	z := ps.loc
	if z.weighted {
		s := l.hSched
		if degraded {
			s = l.dSched
		}
		if s != nil {
			return l.locs[s.pick()], true, false
		}
	}
	if i != 0 || !ps.zoneOn {
		return nil, false, false
	}
	zs := ps.zone()
	if zs == nil || zs.mode == zoneNone {
		return nil, false, false
	}
	if z.routingEnabled < 100 && z.random()%100 >= z.routingEnabled {
		return nil, false, false
	}
	if zs.localPanic {
		if z.stats != nil {
			z.stats.LbLocalClusterNotOk().Inc()
		}
		return nil, false, z.failOnPanic
	}
	return l.locs[zs.zoneLocality(z, z.stats)], true, false
}

func pickIn(ctx *LBContext, g *localityGroup, degraded bool) *Host {
	p := g.pHealthy
	if degraded {
		p = g.pDegraded
	}
	if p == nil {
		return nil
	}
	return p.pick(ctx)
}
