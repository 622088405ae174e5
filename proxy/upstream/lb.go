package upstream

import (
	"math"
	"math/rand/v2"
	"sync"
	"sync/atomic"

	"github.com/outrider-proxy/outrider/proxy/headers"
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
	// Headers are the request's headers; nil for TCP or when unknown.
	Headers *headers.Map
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

	mu sync.Mutex
	q  edf[*Host]
}

func newEDFPicker(hosts []*Host, skip uint64, l *lbConfig) *edfPicker {
	p := &edfPicker{q: edf[*Host]{heap: make([]edfItem[*Host], 0, len(hosts))}}
	if l != nil && l.kind == lbLeastRequest {
		p.leastRequest, p.bias = true, l.bias
	}
	for _, h := range hosts {
		p.q.add(h, p.weight(h))
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
	active := float64(max(h.StatsView().RqActive.Load(), 0) + 1)
	if p.bias == 1 {
		return w / active
	}
	return w / math.Pow(active, p.bias)
}

func (p *edfPicker) pick(*LBContext) *Host {
	p.mu.Lock()
	h := p.q.next()
	p.q.reschedule(p.weight(h))
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
	case lbRingHash, lbMaglev:
		return newHashPicker(l, hosts, hosts)
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
