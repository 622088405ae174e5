package upstream

import (
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
)

// hashOf is the request hash, or a random one when the request has none (as
// Envoy's hashing load balancers do).
func hashOf(ctx *LBContext) uint64 {
	if ctx != nil && ctx.HasHash {
		return ctx.HashKey
	}
	return rand.Uint64()
}

// hashKey is the string a hashing policy hashes for h: its address
// ("ip:port", IPv6 in brackets) or, with use_hostname_for_hashing, its hostname.
func hashKey(h *Host, useHostname bool) string {
	if useHostname && h.Hostname != "" {
		return h.Hostname
	}
	return h.Addr.String()
}

// normalizedWeights are the hosts' weights divided by their sum, with the
// smallest and largest (Envoy's normalizeHostWeights without localities).
func normalizedWeights(hosts []*Host) (w []float64, minW, maxW float64) {
	var sum uint64
	for _, h := range hosts {
		sum += uint64(h.Weight)
	}
	w = make([]float64, len(hosts))
	minW, maxW = 1, 0
	for i, h := range hosts {
		w[i] = float64(h.Weight) / float64(sum)
		minW, maxW = min(minW, w[i]), max(maxW, w[i])
	}
	return w, minW, maxW
}

// newHashPicker builds a RING_HASH or MAGLEV picker over hosts, which are
// some of the priority level's hosts (all: every host of the level). With
// locality_weighted_lb_config each host weighs its share of its locality's
// host weights times its locality's share of the level's locality weights
// (Envoy's normalizeLocalityWeights, counting every locality of the level,
// those without eligible hosts too); hosts in localities of weight zero get
// no share, and nil is returned when no host has one. Otherwise the weights
// are the hosts' own (normalizeHostWeights).
func newHashPicker(l *lbConfig, hosts, all []*Host) picker {
	var w []float64
	var minW, maxW float64
	if l.loc != nil && l.loc.weighted {
		hosts, w, minW, maxW = localityNormalizedWeights(hosts, all)
	} else {
		w, minW, maxW = normalizedWeights(hosts)
	}
	if len(hosts) == 0 {
		return nil
	}
	if l.kind == lbMaglev {
		return newMaglevPicker(hosts, w, maxW, l)
	}
	return newRingPicker(hosts, w, minW, l)
}

// localityNormalizedWeights is Envoy's normalizeLocalityWeights: the hosts
// with a share, and their weights.
func localityNormalizedWeights(hosts, all []*Host) (kept []*Host, w []float64, minW, maxW float64) {
	locSum := uint64(0)
	seen := make(map[locKey]bool)
	for _, h := range all {
		if k := keyOf(h.Locality); !seen[k] {
			seen[k] = true
			locSum += uint64(h.localityWeight)
		}
	}
	if locSum == 0 {
		return nil, nil, 0, 0
	}
	hostSum := make(map[locKey]uint64)
	for _, h := range hosts {
		if h.localityWeight > 0 {
			hostSum[keyOf(h.Locality)] += uint64(h.Weight)
		}
	}
	minW, maxW = math.Inf(1), 0
	for _, h := range hosts {
		if h.localityWeight == 0 {
			continue
		}
		x := float64(h.Weight) * (float64(h.localityWeight) / float64(locSum)) / float64(hostSum[keyOf(h.Locality)])
		kept = append(kept, h)
		w = append(w, x)
		minW, maxW = min(minW, x), max(maxW, x)
	}
	return kept, w, minW, maxW
}

type ringEntry struct {
	hash uint64
	host *Host
}

// ringPicker is Envoy's RING_HASH (ketama) ring.
type ringPicker struct{ ring []ringEntry }

func newRingPicker(hosts []*Host, w []float64, minW float64, l *lbConfig) *ringPicker {
	// Scale so that the lightest host gets a whole number of hashes, capped
	// at the maximum ring size (RingHashLoadBalancer::Ring::Ring).
	scale := min(math.Ceil(minW*float64(l.minRing))/minW, float64(l.maxRing))
	size := uint64(math.Ceil(scale))
	p := &ringPicker{ring: make([]ringEntry, 0, size)}
	var cur, target float64
	minH, maxH := size, uint64(0)
	var key []byte
	for i, h := range hosts {
		key = append(key[:0], hashKey(h, l.useHostname)...)
		key = append(key, '_')
		base := len(key)
		target += scale * w[i]
		n := uint64(0)
		for cur < target {
			key = strconv.AppendUint(key[:base], n, 10)
			var hv uint64
			if l.murmur {
				hv = murmurHash2(string(key), murmurStdSeed)
			} else {
				hv = xxh64(key, 0)
			}
			p.ring = append(p.ring, ringEntry{hash: hv, host: h})
			n++
			cur++
		}
		minH, maxH = min(minH, n), max(maxH, n)
	}
	slices.SortFunc(p.ring, func(a, b ringEntry) int {
		switch {
		case a.hash < b.hash:
			return -1
		case a.hash > b.hash:
			return 1
		}
		return 0
	})
	if g := l.gauges; g != nil {
		g.size.Set(int64(size))
		g.min.Set(int64(minH))
		g.max.Set(int64(maxH))
	}
	return p
}

// pick returns the first ring entry whose hash is at least the request's,
// wrapping to the start.
func (p *ringPicker) pick(ctx *LBContext) *Host {
	if len(p.ring) == 0 {
		return nil
	}
	h := hashOf(ctx)
	lo, hi := 0, len(p.ring)
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if p.ring[m].hash < h {
			lo = m + 1
		} else {
			hi = m
		}
	}
	if lo == len(p.ring) {
		lo = 0
	}
	return p.ring[lo].host
}

// maglevPicker is Envoy's MAGLEV lookup table.
type maglevPicker struct{ table []*Host }

type maglevEntry struct {
	host         *Host
	key          string
	offset, skip uint64
	weight       float64
	target       float64
	next, count  uint64
}

func newMaglevPicker(hosts []*Host, w []float64, maxW float64, l *lbConfig) *maglevPicker {
	size := l.tableSize
	es := make([]maglevEntry, len(hosts))
	for i, h := range hosts {
		k := hashKey(h, l.useHostname)
		es[i] = maglevEntry{host: h, key: k, weight: w[i],
			offset: XXHash64(k, 0) % size, skip: XXHash64(k, 1)%(size-1) + 1}
	}
	// Envoy fills the table in the order of the sorted host keys.
	slices.SortStableFunc(es, func(a, b maglevEntry) int { return strings.Compare(a.key, b.key) })
	table := make([]*Host, size)
	filled := uint64(0)
	for iter := uint64(1); filled < size; iter++ {
		for i := range es {
			if filled >= size {
				break
			}
			e := &es[i]
			if float64(iter)*e.weight < e.target {
				continue
			}
			e.target += maxW
			c := (e.offset + e.skip*e.next) % size
			for table[c] != nil {
				e.next++
				c = (e.offset + e.skip*e.next) % size
			}
			table[c] = e.host
			e.next++
			e.count++
			filled++
		}
	}
	if g := l.gauges; g != nil {
		minE, maxE := size, uint64(0)
		for i := range es {
			minE, maxE = min(minE, es[i].count), max(maxE, es[i].count)
		}
		g.min.Set(int64(minE))
		g.max.Set(int64(maxE))
	}
	return &maglevPicker{table: table}
}

func (p *maglevPicker) pick(ctx *LBContext) *Host {
	return p.table[hashOf(ctx)%uint64(len(p.table))]
}

// lrPicker is Envoy's LEAST_REQUEST for hosts of equal weight: the least
// loaded of choiceCount random hosts (power of two choices by default), or a
// full scan with random tie-breaking.
type lrPicker struct {
	hosts    []*Host
	choices  uint32
	fullScan bool
}

func (p *lrPicker) pick(*LBContext) *Host {
	n := uint64(len(p.hosts))
	if p.fullScan {
		var cand *Host
		tied := uint64(0)
		for _, h := range p.hosts {
			if cand == nil {
				cand, tied = h, 1
				continue
			}
			a, b := h.StatsView().RqActive.Load(), cand.StatsView().RqActive.Load()
			if a < b {
				cand, tied = h, 1
			} else if a == b {
				tied++
				if rand.Uint64N(tied) == 0 {
					cand = h
				}
			}
		}
		return cand
	}
	var cand *Host
	for range max(p.choices, 1) {
		h := p.hosts[rand.Uint64N(n)]
		if cand == nil || h.StatsView().RqActive.Load() < cand.StatsView().RqActive.Load() {
			cand = h
		}
	}
	return cand
}
