package upstream

import (
	"math"
	"math/rand/v2"
	"sync"
	"sync/atomic"

	"github.com/outrider-proxy/outrider/proxy/streaminfo"
)

// LBContext is what the caller knows about the request when choosing a host.
// A nil *LBContext is allowed and means "nothing known".
type LBContext struct {
	// HashKey is the request hash for hash-based policies; unused by
	// ROUND_ROBIN and RANDOM. HasHash tells a zero hash from none.
	HashKey uint64
	HasHash bool
	// DownstreamConn is the downstream connection, nil when unknown.
	DownstreamConn *streaminfo.Conn
}

// picker chooses one host out of a fixed, non-empty list. Implementations are
// safe for concurrent use and do not allocate.
type picker interface {
	pick(ctx *LBContext) *Host
}

// rrPicker rotates over hosts of equal weight, as Envoy's unweighted round robin.
type rrPicker struct {
	hosts []*Host
	next  atomic.Uint64
}

func (p *rrPicker) pick(*LBContext) *Host {
	i := p.next.Add(1) - 1
	return p.hosts[i%uint64(len(p.hosts))]
}

// randomPicker chooses uniformly, as Envoy's RANDOM policy (weights ignored).
type randomPicker struct{ hosts []*Host }

func (p *randomPicker) pick(*LBContext) *Host { return p.hosts[rand.Uint64N(uint64(len(p.hosts)))] }

// edfPicker is Envoy's earliest-deadline-first scheduler for weighted round
// robin: each host's deadline advances by 1/weight when it is picked, ties go
// to the entry queued first. It is a binary heap guarded by a mutex. With
// leastRequest, the weight is LEAST_REQUEST's dynamic one:
// weight / (active_requests + 1)^bias.
type edfPicker struct {
	leastRequest bool
	bias         float64

	mu    sync.Mutex
	now   float64
	order uint64
	heap  []edfEntry
}

type edfEntry struct {
	deadline float64
	order    uint64
	host     *Host
}

func newEDFPicker(hosts []*Host, skip uint64, l *lbConfig) *edfPicker {
	p := &edfPicker{heap: make([]edfEntry, 0, len(hosts))}
	if l != nil && l.kind == lbLeastRequest {
		p.leastRequest, p.bias = true, l.bias
	}
	for _, h := range hosts {
		p.push(edfEntry{deadline: 1 / p.weight(h), order: p.order, host: h})
		p.order++
	}
	// Like Envoy's EdfScheduler::createWithPicks, start at a random point
	// of the sequence so that many proxies do not all hit the same host first.
	for range skip % uint64(len(hosts)) {
		p.pick(nil)
	}
	return p
}

// weight is h's scheduling weight (see edfPicker).
func (p *edfPicker) weight(h *Host) float64 {
	w := float64(h.Weight)
	if !p.leastRequest || p.bias == 0 {
		return w
	}
	active := float64(max(h.Stats.RqActive.Load(), 0) + 1)
	if p.bias == 1 {
		return w / active
	}
	return w / math.Pow(active, p.bias)
}

func (p *edfPicker) less(i, j int) bool {
	a, b := &p.heap[i], &p.heap[j]
	if a.deadline != b.deadline {
		return a.deadline < b.deadline
	}
	return a.order < b.order
}

func (p *edfPicker) push(e edfEntry) {
	p.heap = append(p.heap, e)
	for i := len(p.heap) - 1; i > 0; {
		parent := (i - 1) / 2
		if !p.less(i, parent) {
			break
		}
		p.heap[i], p.heap[parent] = p.heap[parent], p.heap[i]
		i = parent
	}
}

func (p *edfPicker) down(i int) {
	n := len(p.heap)
	for {
		l := 2*i + 1
		if l >= n {
			return
		}
		m := l
		if r := l + 1; r < n && p.less(r, l) {
			m = r
		}
		if !p.less(m, i) {
			return
		}
		p.heap[i], p.heap[m] = p.heap[m], p.heap[i]
		i = m
	}
}

func (p *edfPicker) pick(*LBContext) *Host {
	p.mu.Lock()
	top := &p.heap[0]
	h := top.host
	p.now = top.deadline
	top.deadline = p.now + 1/p.weight(h)
	top.order = p.order
	p.order++
	p.down(0)
	p.mu.Unlock()
	return h
}

// newPicker builds the picker of policy l for a non-empty host list; nil for
// an empty one.
func newPicker(l *lbConfig, hosts []*Host, seed uint64) picker {
	if len(hosts) == 0 {
		return nil
	}
	switch l.kind {
	case lbRandom:
		return &randomPicker{hosts: hosts}
	case lbRingHash:
		return newRingPicker(hosts, l)
	case lbMaglev:
		return newMaglevPicker(hosts, l)
	}
	for _, h := range hosts[1:] {
		if h.Weight != hosts[0].Weight {
			return newEDFPicker(hosts, seed, l)
		}
	}
	if l.kind == lbLeastRequest {
		return &lrPicker{hosts: hosts, choices: l.choiceCount,
			fullScan: l.scanAlways || (l.fullScan && uint64(l.choiceCount) >= uint64(len(hosts)))}
	}
	p := &rrPicker{hosts: hosts}
	p.next.Store(seed)
	return p
}

// prioritySet is one immutable snapshot of a cluster's hosts, grouped by
// priority, with the per-priority load computed as Envoy's
// LoadBalancerBase does.
type prioritySet struct {
	all     []*Host // every host, priority order
	hashed  bool    // a hashing policy: the request hash also picks the priority
	levels  []*priorityLevel
	healthy []uint32 // healthy priority load, percent per level
	degrade []uint32 // degraded priority load, percent per level
	panic   []bool   // per-level panic mode

	nHealthy, nDegraded int
}

type priorityLevel struct {
	hosts, healthy, degraded  []*Host
	pAll, pHealthy, pDegraded picker
}

// buildPrioritySet groups hosts by priority and computes loads.
// overprovision is the overprovisioning factor in percent (Envoy default 140);
// panicThreshold is healthy_panic_threshold in percent (default 50, 0 disables).
func buildPrioritySet(hosts []*Host, policy *lbConfig, overprovision uint32, panicThreshold float64) *prioritySet {
	ps := &prioritySet{all: hosts, hashed: policy.hashed()}
	maxPrio := -1
	for _, h := range hosts {
		maxPrio = max(maxPrio, h.Priority)
	}
	ps.levels = make([]*priorityLevel, maxPrio+1)
	for i := range ps.levels {
		ps.levels[i] = &priorityLevel{}
	}
	for _, h := range hosts {
		l := ps.levels[h.Priority]
		l.hosts = append(l.hosts, h)
		switch h.Health() {
		case Healthy:
			l.healthy = append(l.healthy, h)
			ps.nHealthy++
		case Degraded:
			l.degraded = append(l.degraded, h)
			ps.nDegraded++
		}
	}
	n := len(ps.levels)
	seed := rand.Uint64()
	health, degr := make([]uint32, n), make([]uint32, n)
	for i, l := range ps.levels {
		l.pAll = newPicker(policy, l.hosts, seed)
		if len(l.healthy) == len(l.hosts) {
			l.pHealthy = l.pAll // same hosts: share the (possibly costly) picker
		} else {
			l.pHealthy = newPicker(policy, l.healthy, seed)
		}
		l.pDegraded = newPicker(policy, l.degraded, seed)
		if total := uint64(len(l.hosts)); total > 0 {
			health[i] = uint32(min(100, uint64(overprovision)*uint64(len(l.healthy))/total))
			degr[i] = uint32(min(100, uint64(overprovision)*uint64(len(l.degraded))/total))
		}
	}
	ps.healthy, ps.degrade, ps.panic = make([]uint32, n), make([]uint32, n), make([]bool, n)
	var avail uint32
	for i := range n {
		avail += health[i] + degr[i]
	}
	avail = min(avail, 100)
	if avail == 0 {
		// Total panic: load proportional to host count (recalculateLoadInTotalPanic).
		if panicThreshold > 0 {
			for i := range ps.panic {
				ps.panic[i] = true
			}
		}
		if len(hosts) == 0 {
			return ps
		}
		left, first := uint32(100), -1
		for i, l := range ps.levels {
			ps.healthy[i] = uint32(len(l.hosts) * 100 / len(hosts))
			left -= ps.healthy[i]
			if first < 0 && len(l.hosts) > 0 {
				first = i
			}
		}
		ps.healthy[first] += left
		return ps
	}
	firstH, left := distributeLoad(ps.healthy, health, 100, avail)
	firstD, left := distributeLoad(ps.degrade, degr, left, avail)
	if left != 0 {
		if firstH >= 0 {
			ps.healthy[firstH] += left
		} else {
			ps.degrade[firstD] += left
		}
	}
	for i, l := range ps.levels {
		if avail == 100 || len(l.hosts) == 0 {
			continue
		}
		pct := 100 * float64(len(l.healthy)+len(l.degraded)) / float64(len(l.hosts))
		ps.panic[i] = pct < panicThreshold
	}
	return ps
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

// choose picks a host; panicked reports that a panicking level was used.
func (ps *prioritySet) choose(ctx *LBContext) (h *Host, panicked bool) {
	if len(ps.all) == 0 {
		return nil, false
	}
	if ps.healthy[0] == 100 { // the common case: no random draw needed
		return ps.pickFrom(ctx, 0, ps.levels[0], ps.levels[0].pHealthy)
	}
	var r uint32
	if ps.hashed && ctx != nil && ctx.HasHash {
		r = uint32(ctx.HashKey%100) + 1
	} else {
		r = uint32(rand.Uint64N(100)) + 1
	}
	var agg uint32
	for i, l := range ps.levels {
		agg += ps.healthy[i]
		if r <= agg {
			return ps.pickFrom(ctx, i, l, l.pHealthy)
		}
	}
	for i, l := range ps.levels {
		agg += ps.degrade[i]
		if r <= agg {
			return ps.pickFrom(ctx, i, l, l.pDegraded)
		}
	}
	return nil, false
}

func (ps *prioritySet) pickFrom(ctx *LBContext, i int, l *priorityLevel, p picker) (*Host, bool) {
	if ps.panic[i] {
		if l.pAll == nil {
			return nil, true
		}
		return l.pAll.pick(ctx), true
	}
	if p == nil {
		return nil, false
	}
	return p.pick(ctx), false
}
