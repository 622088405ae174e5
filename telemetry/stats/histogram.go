package stats

import (
	"sync/atomic"
)

// Unit is what a histogram measures.
type Unit int

// Histogram units, as Envoy's.
const (
	Unspecified Unit = iota
	Bytes
	Microseconds
	Milliseconds
	Percent
)

// Envoy's default histogram bucket bounds.
var defaultBuckets = []float64{0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000, 600000, 1800000, 3600000}

// Histogram counts recorded values into Envoy's default buckets. Recording is
// lock-free.
type Histogram struct {
	name    string
	unit    Unit
	buckets []atomic.Uint64 // counts of values <= defaultBuckets[i]; last is +Inf
	count   atomic.Uint64
	sum     atomic.Uint64
}

func newHistogram(name string, unit Unit) *Histogram {
	return &Histogram{name: name, unit: unit, buckets: make([]atomic.Uint64, len(defaultBuckets)+1)}
}

// Name is the full dotted name.
func (h *Histogram) Name() string { return h.name }

// Unit is what the histogram measures.
func (h *Histogram) Unit() Unit { return h.unit }

// Record adds one value.
func (h *Histogram) Record(v uint64) {
	i := 0
	for i < len(defaultBuckets) && float64(v) > defaultBuckets[i] {
		i++
	}
	h.buckets[i].Add(1)
	h.count.Add(1)
	h.sum.Add(v)
}

// Count is how many values were recorded.
func (h *Histogram) Count() uint64 { return h.count.Load() }

// Sum is the sum of the recorded values.
func (h *Histogram) Sum() uint64 { return h.sum.Load() }

// Buckets returns the upper bounds and the cumulative count of values at or
// below each.
func (h *Histogram) Buckets() (bounds []float64, cumulative []uint64) {
	cumulative = make([]uint64, len(defaultBuckets))
	var acc uint64
	for i := range defaultBuckets {
		acc += h.buckets[i].Load()
		cumulative[i] = acc
	}
	return defaultBuckets, cumulative
}
