package stats

import (
	"fmt"
	"slices"
	"strings"
)

// Layout is a fixed list of counter and gauge names (relative to a block's
// prefix) shared by every Block made from it, so that a block costs one
// index entry in the Store and about 24 bytes per stat. Build it once per
// stat group (a package variable) with NewLayout; it is read-only after.
type Layout struct {
	counters, gauges []string
	cidx, gidx       map[string]int
	subs             []string // the distinct dot-ended prefixes of names with a '.': "a.b.c" gives "a.b."
}

// NewLayout returns the layout of the counter and gauge names, in that order
// (Block.Counter(i) is counters[i]). It panics on an empty or duplicate name
// or one that starts or ends with '.': layouts are fixed at compile time.
func NewLayout(counters, gauges []string) *Layout {
	l := &Layout{
		counters: append([]string(nil), counters...), gauges: append([]string(nil), gauges...),
		cidx: make(map[string]int, len(counters)), gidx: make(map[string]int, len(gauges)),
	}
	for kind, names := range map[string][]string{"counter": l.counters, "gauge": l.gauges} {
		idx := l.cidx
		if kind == "gauge" {
			idx = l.gidx
		}
		for i, n := range names {
			if n == "" || n[0] == '.' || n[len(n)-1] == '.' {
				panic(fmt.Sprintf("stats.NewLayout: %s name %q is invalid", kind, n))
			}
			if _, dup := idx[n]; dup {
				panic(fmt.Sprintf("stats.NewLayout: duplicate %s name %q", kind, n))
			}
			idx[n] = i
			if d := strings.LastIndexByte(n, '.'); d >= 0 && !slices.Contains(l.subs, n[:d+1]) {
				l.subs = append(l.subs, n[:d+1])
			}
		}
	}
	return l
}

// Counters is the number of counters of the layout.
func (l *Layout) Counters() int { return len(l.counters) }

// Gauges is the number of gauges of the layout.
func (l *Layout) Gauges() int { return len(l.gauges) }

// CounterIndex is the index of the counter name; ok is false if the layout
// has none.
func (l *Layout) CounterIndex(name string) (i int, ok bool) {
	i, ok = l.cidx[name]
	return
}

// GaugeIndex is the index of the gauge name; ok is false if the layout has
// none.
func (l *Layout) GaugeIndex(name string) (i int, ok bool) {
	i, ok = l.gidx[name]
	return
}

// statName names a counter or gauge: prefix alone when names is nil (a
// stat of its own), else prefix + names[idx] (a block's stat).
type statName struct {
	prefix string
	names  []string
}

func (n *statName) name(idx uint32) string {
	if n.names == nil {
		return n.prefix
	}
	return n.prefix + n.names[idx]
}

// Block is every counter and gauge of a Layout under one prefix, allocated
// together. Its stats are ordinary *Counter and *Gauge values, listed and
// found by full name exactly as stats made one at a time. A Block is
// returned again for the same prefix and layout.
type Block struct {
	layout       *Layout
	cname, gname statName
	counters     []Counter
	gauges       []Gauge
	// ownC/ownG, when not nil, are stats that already existed under one of
	// the layout's names when the block was made (ownC[i] replaces
	// counters[i]); the block's own slot then stays unlisted. Nil normally.
	ownC map[int]*Counter
	ownG map[int]*Gauge
	next *Block // another layout's block under the same prefix
}

// Prefix is the block's prefix, empty or ending in '.'.
func (b *Block) Prefix() string { return b.cname.prefix }

// Layout is the block's layout.
func (b *Block) Layout() *Layout { return b.layout }

// Counter is the layout's i-th counter under the block's prefix.
func (b *Block) Counter(i int) *Counter {
	if c := b.ownC[i]; c != nil {
		return c
	}
	return &b.counters[i]
}

// Gauge is the layout's i-th gauge under the block's prefix.
func (b *Block) Gauge(i int) *Gauge {
	if g := b.ownG[i]; g != nil {
		return g
	}
	return &b.gauges[i]
}

// Block returns the block of layout under the scope's prefix, creating it.
func (s Scope) Block(l *Layout) *Block { return s.store.block(s.prefix, l) }

func (s *Store) block(prefix string, l *Layout) *Block {
	s.mu.RLock()
	b := s.blockAt(prefix, l)
	s.mu.RUnlock()
	if b != nil {
		return b
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if b = s.blockAt(prefix, l); b != nil {
		return b
	}
	b = &Block{
		layout: l,
		cname:  statName{prefix: prefix, names: l.counters}, gname: statName{prefix: prefix, names: l.gauges},
		counters: make([]Counter, len(l.counters)), gauges: make([]Gauge, len(l.gauges)),
	}
	for i := range b.counters {
		b.counters[i].id, b.counters[i].idx = &b.cname, uint32(i)
	}
	for i := range b.gauges {
		b.gauges[i].id, b.gauges[i].idx = &b.gname, uint32(i)
	}
	if s.taken(prefix) { // some stat already has a name under prefix: maybe one of ours
		s.adopt(b)
	}
	b.next = s.blocks[prefix]
	s.blocks[prefix] = b
	s.nblockC += len(l.counters)
	s.nblockG += len(l.gauges)
	s.markUnder(prefix)
	for _, sub := range l.subs {
		s.markUnder(prefix + sub)
	}
	return b
}

// blockAt is the block of layout l at prefix, or nil. Caller holds s.mu.
func (s *Store) blockAt(prefix string, l *Layout) *Block {
	for b := s.blocks[prefix]; b != nil; b = b.next {
		if b.layout == l {
			return b
		}
	}
	return nil
}

// taken reports whether a stat whose name starts with prefix may exist
// (prefix empty: whenever the store has any counter or gauge).
func (s *Store) taken(prefix string) bool {
	if prefix == "" {
		return len(s.counters)+len(s.gauges)+s.nblockC+s.nblockG > 0
	}
	_, ok := s.under[prefix]
	return ok
}

// markUnder records every dot-ended prefix of name (name itself included
// if it ends in '.'), so that taken can rule out clashes with one lookup.
// Caller holds s.mu for writing.
func (s *Store) markUnder(name string) {
	for i := len(name) - 1; i >= 0; i-- {
		if name[i] != '.' {
			continue
		}
		p := name[:i+1]
		if _, ok := s.under[p]; ok {
			return // so are all shorter ones
		}
		s.under[p] = struct{}{}
	}
}

// adopt points b's slots at stats that already exist under the same full
// names (made one at a time, or by another block), so no name is ever held
// twice. Caller holds s.mu for writing.
func (s *Store) adopt(b *Block) {
	for i, n := range b.layout.counters {
		if c := s.findCounter(b.cname.prefix + n); c != nil {
			if b.ownC == nil {
				b.ownC = map[int]*Counter{}
			}
			b.ownC[i] = c
		}
	}
	for i, n := range b.layout.gauges {
		if g := s.findGauge(b.gname.prefix + n); g != nil {
			if b.ownG == nil {
				b.ownG = map[int]*Gauge{}
			}
			b.ownG[i] = g
		}
	}
}

// findCounter is the counter with the full name, made alone or in a block,
// or nil. Caller holds s.mu.
func (s *Store) findCounter(name string) *Counter {
	if c := s.counters[name]; c != nil {
		return c
	}
	if s.nblockC == 0 {
		return nil
	}
	for i := len(name) - 1; i >= -1; i-- {
		if i >= 0 && name[i] != '.' {
			continue
		}
		for b := s.blocks[name[:i+1]]; b != nil; b = b.next {
			if j, ok := b.layout.cidx[name[i+1:]]; ok {
				return b.Counter(j)
			}
		}
	}
	return nil
}

// findGauge is the gauge with the full name, made alone or in a block, or
// nil. Caller holds s.mu.
func (s *Store) findGauge(name string) *Gauge {
	if g := s.gauges[name]; g != nil {
		return g
	}
	if s.nblockG == 0 {
		return nil
	}
	for i := len(name) - 1; i >= -1; i-- {
		if i >= 0 && name[i] != '.' {
			continue
		}
		for b := s.blocks[name[:i+1]]; b != nil; b = b.next {
			if j, ok := b.layout.gidx[name[i+1:]]; ok {
				return b.Gauge(j)
			}
		}
	}
	return nil
}

// FillFunc asks for a stat group's counters and gauges by name, in a fixed
// order: LayoutOf records the names, Block.Fill hands out the block's stats.
type FillFunc func(counter func(name string) *Counter, gauge func(name string) *Gauge)

// LayoutOf is the layout of the names fill asks for, in the order asked
// (fill gets nil stats and must only record them). It panics as NewLayout.
func LayoutOf(fill FillFunc) *Layout {
	var cs, gs []string
	fill(func(n string) *Counter { cs = append(cs, n); return nil },
		func(n string) *Gauge { gs = append(gs, n); return nil })
	return NewLayout(cs, gs)
}

// Fill runs fill with the block's stats, in layout order. It panics if fill
// asks for other names or another order than the layout's: a layout made by
// LayoutOf(fill) always matches.
func (b *Block) Fill(fill FillFunc) {
	ci, gi := 0, 0
	l := b.layout
	fill(func(n string) *Counter {
		if ci >= len(l.counters) || l.counters[ci] != n {
			panic(fmt.Sprintf("stats.Block.Fill: counter %q out of layout order", n))
		}
		ci++
		return b.Counter(ci - 1)
	}, func(n string) *Gauge {
		if gi >= len(l.gauges) || l.gauges[gi] != n {
			panic(fmt.Sprintf("stats.Block.Fill: gauge %q out of layout order", n))
		}
		gi++
		return b.Gauge(gi - 1)
	})
	if ci != len(l.counters) || gi != len(l.gauges) {
		panic(fmt.Sprintf("stats.Block.Fill: %d of %d counters, %d of %d gauges asked for", ci, len(l.counters), gi, len(l.gauges)))
	}
}
