// Package stats holds the proxy's counters, gauges and histograms under
// Envoy's dotted names. Creating a stat takes a lock once; updating one is a
// single atomic operation, so the hot path holds stat pointers and never looks
// names up.
package stats

import (
	"sort"
	"sync"
	"sync/atomic"
)

// Counter only goes up. Its name is shared with the other stats of its
// Block (or its own when made alone), so a counter is 24 bytes.
type Counter struct {
	v    atomic.Uint64
	id   *statName
	idx  uint32
	used atomic.Bool
}

// Inc adds one: a single atomic add.
func (c *Counter) Inc() { c.v.Add(1) }

// Add adds n; adding 0 still marks the counter used, as in Envoy.
func (c *Counter) Add(n uint64) {
	if n == 0 {
		c.used.Store(true)
		return
	}
	c.v.Add(n)
}

// Value is the current count.
func (c *Counter) Value() uint64 { return c.v.Load() }

// Name is the full dotted name. For a block's counter it is built on each
// call.
func (c *Counter) Name() string { return c.id.name(c.idx) }

// Used reports whether the counter was ever changed (a counter only grows,
// so any count but 0 means used).
func (c *Counter) Used() bool { return c.v.Load() != 0 || c.used.Load() }

// Gauge goes up and down. Its name is shared as a Counter's.
type Gauge struct {
	v    atomic.Int64
	id   *statName
	idx  uint32
	used atomic.Bool
}

// Inc adds one.
func (g *Gauge) Inc() { g.v.Add(1); g.markUsed() }

// Dec subtracts one.
func (g *Gauge) Dec() { g.v.Add(-1); g.markUsed() }

// Add adds n (which may be negative).
func (g *Gauge) Add(n int64) { g.v.Add(n); g.markUsed() }

// Set replaces the value.
func (g *Gauge) Set(n int64) { g.v.Store(n); g.markUsed() }

// markUsed sets the used flag, writing it (a locked instruction) only the
// first time.
func (g *Gauge) markUsed() {
	if !g.used.Load() {
		g.used.Store(true)
	}
}

// Value is the current value.
func (g *Gauge) Value() int64 { return g.v.Load() }

// Name is the full dotted name. For a block's gauge it is built on each
// call.
func (g *Gauge) Name() string { return g.id.name(g.idx) }

// Used reports whether the gauge was ever changed.
func (g *Gauge) Used() bool { return g.used.Load() }

// Store owns every stat of one proxy. The zero Store is not usable; use NewStore.
type Store struct {
	mu         sync.RWMutex
	counters   map[string]*Counter // made one at a time, by full name
	gauges     map[string]*Gauge
	histograms map[string]*Histogram
	blocks     map[string]*Block   // by prefix, chained by Block.next
	under      map[string]struct{} // every dot-ended prefix of a counter or gauge name
	nblockC    int                 // counters in blocks (adopted slots included)
	nblockG    int
}

// NewStore returns an empty store.
func NewStore() *Store {
	return &Store{
		counters: map[string]*Counter{}, gauges: map[string]*Gauge{}, histograms: map[string]*Histogram{},
		blocks: map[string]*Block{}, under: map[string]struct{}{},
	}
}

// loneCounter is a counter made alone, with its name, in one allocation.
type loneCounter struct {
	c Counter
	n statName
}

type loneGauge struct {
	g Gauge
	n statName
}

// Root is the scope with no prefix.
func (s *Store) Root() Scope { return Scope{store: s} }

// Scope returns a scope whose stats are named prefix + "." + name.
func (s *Store) Scope(prefix string) Scope { return Scope{store: s, prefix: join(prefix, "")} }

// Counter returns the counter with the full name (made alone or in a
// Block), creating it alone if there is none.
func (s *Store) Counter(name string) *Counter {
	s.mu.RLock()
	c := s.findCounter(name)
	s.mu.RUnlock()
	if c != nil {
		return c
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if c = s.findCounter(name); c == nil {
		l := &loneCounter{n: statName{prefix: name}}
		l.c.id = &l.n
		c = &l.c
		s.counters[name] = c
		s.markUnder(name)
	}
	return c
}

// Gauge returns the gauge with the full name (made alone or in a Block),
// creating it alone if there is none.
func (s *Store) Gauge(name string) *Gauge {
	s.mu.RLock()
	g := s.findGauge(name)
	s.mu.RUnlock()
	if g != nil {
		return g
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if g = s.findGauge(name); g == nil {
		l := &loneGauge{n: statName{prefix: name}}
		l.g.id = &l.n
		g = &l.g
		s.gauges[name] = g
		s.markUnder(name)
	}
	return g
}

// Histogram returns the histogram with the full name, creating it.
func (s *Store) Histogram(name string, unit Unit) *Histogram {
	s.mu.RLock()
	h := s.histograms[name]
	s.mu.RUnlock()
	if h != nil {
		return h
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if h = s.histograms[name]; h == nil {
		h = newHistogram(name, unit)
		s.histograms[name] = h
	}
	return h
}

// Value is the value of the counter or gauge with the full name, without
// creating it; ok is false when there is none.
func (s *Store) Value(name string) (v int64, ok bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if c := s.findCounter(name); c != nil {
		return int64(c.Value()), true
	}
	if g := s.findGauge(name); g != nil {
		return g.Value(), true
	}
	return 0, false
}

// Counters returns every counter sorted by name.
func (s *Store) Counters() []*Counter {
	named := s.namedCounters()
	out := make([]*Counter, len(named))
	for i, n := range named {
		out[i] = n.c
	}
	return out
}

// Gauges returns every gauge sorted by name.
func (s *Store) Gauges() []*Gauge {
	named := s.namedGauges()
	out := make([]*Gauge, len(named))
	for i, n := range named {
		out[i] = n.g
	}
	return out
}

type namedCounter struct {
	name string
	c    *Counter
}

type namedGauge struct {
	name string
	g    *Gauge
}

// namedCounters is every counter with its full name, sorted by name.
func (s *Store) namedCounters() []namedCounter {
	s.mu.RLock()
	out := make([]namedCounter, 0, len(s.counters)+s.nblockC)
	for n, c := range s.counters {
		out = append(out, namedCounter{n, c})
	}
	for _, b := range s.blocks {
		for ; b != nil; b = b.next {
			for i := range b.counters {
				if b.ownC[i] == nil {
					out = append(out, namedCounter{b.cname.prefix + b.layout.counters[i], &b.counters[i]})
				}
			}
		}
	}
	s.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool { return out[i].name < out[j].name })
	return out
}

// namedGauges is every gauge with its full name, sorted by name.
func (s *Store) namedGauges() []namedGauge {
	s.mu.RLock()
	out := make([]namedGauge, 0, len(s.gauges)+s.nblockG)
	for n, g := range s.gauges {
		out = append(out, namedGauge{n, g})
	}
	for _, b := range s.blocks {
		for ; b != nil; b = b.next {
			for i := range b.gauges {
				if b.ownG[i] == nil {
					out = append(out, namedGauge{b.gname.prefix + b.layout.gauges[i], &b.gauges[i]})
				}
			}
		}
	}
	s.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool { return out[i].name < out[j].name })
	return out
}

// Histograms returns every histogram sorted by name.
func (s *Store) Histograms() []*Histogram {
	s.mu.RLock()
	out := make([]*Histogram, 0, len(s.histograms))
	for _, h := range s.histograms {
		out = append(out, h)
	}
	s.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool { return out[i].name < out[j].name })
	return out
}

// Scope names stats under a common prefix. The zero Scope is unusable.
type Scope struct {
	store  *Store
	prefix string // empty or ending in "."
}

// Store is the scope's store.
func (s Scope) Store() *Store { return s.store }

// Prefix is the scope's prefix, empty or ending in ".".
func (s Scope) Prefix() string { return s.prefix }

// Scope returns a child scope named s.prefix + sub + ".".
func (s Scope) Scope(sub string) Scope { return Scope{store: s.store, prefix: join(s.prefix+sub, "")} }

// Counter returns the counter prefix + name.
func (s Scope) Counter(name string) *Counter { return s.store.Counter(s.prefix + name) }

// Gauge returns the gauge prefix + name.
func (s Scope) Gauge(name string) *Gauge { return s.store.Gauge(s.prefix + name) }

// Histogram returns the histogram prefix + name.
func (s Scope) Histogram(name string, unit Unit) *Histogram {
	return s.store.Histogram(s.prefix+name, unit)
}

func join(prefix, name string) string {
	if prefix == "" {
		return name
	}
	if prefix[len(prefix)-1] == '.' {
		return prefix + name
	}
	return prefix + "." + name
}
