package stats

import (
	"math"
	"sync"
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

// SupportedQuantiles are Envoy's default quantiles, as fractions.
var SupportedQuantiles = []float64{0, 0.25, 0.5, 0.75, 0.90, 0.95, 0.99, 0.995, 0.999, 1}

// decades is how many powers of ten a uint64 spans in the log-linear layout.
const decades = 20

// Histogram records values into the same log-linear bins as Envoy's
// libcircllhist (two significant decimal digits), so quantiles, bucket counts
// and sums match Envoy's output exactly. Recording is lock-free; values become
// visible to the interval and cumulative statistics at MergeHistograms, as in
// Envoy, where histograms are merged on the stats flush interval.
type Histogram struct {
	name  string
	unit  Unit
	zero  atomic.Uint64
	live  atomic.Pointer[liveBins] // nil until the first value above 0
	count atomic.Uint64
	sum   atomic.Uint64

	mu         sync.Mutex
	interval   []bin // bins recorded in the last merge interval
	cumulative []bin // bins recorded since start, as of the last merge
	merged     bool
}

// liveBins are the unmerged counts: [exp][val-10]; nil = no value yet in
// that decade. Made on the first value, so an unused histogram stays small.
type liveBins [decades]atomic.Pointer[[90]atomic.Uint64]

// bin is one circllhist bucket: val (10..99, or 0 for the zero bin) times
// 10^(exp-1), holding count values.
type bin struct {
	val, exp int8
	count    uint64
}

func newHistogram(name string, unit Unit) *Histogram {
	return &Histogram{name: name, unit: unit}
}

// Name is the full dotted name.
func (h *Histogram) Name() string { return h.name }

// Unit is what the histogram measures.
func (h *Histogram) Unit() Unit { return h.unit }

// binOf maps a value to its circllhist bucket (int_scale_to_hist_bucket with
// scale 0).
func binOf(v uint64) (val, exp int) {
	if v == 0 {
		return 0, 0
	}
	exp = 1
	if v < 10 {
		return int(v) * 10, 0
	}
	for v >= 100 {
		v /= 10
		exp++
	}
	return int(v), exp
}

// Record adds one value.
func (h *Histogram) Record(v uint64) {
	h.count.Add(1)
	h.sum.Add(v)
	val, exp := binOf(v)
	if val == 0 {
		h.zero.Add(1)
		return
	}
	live := h.live.Load()
	if live == nil {
		h.live.CompareAndSwap(nil, new(liveBins))
		live = h.live.Load()
	}
	d := live[exp].Load()
	if d == nil {
		d = new([90]atomic.Uint64)
		if !live[exp].CompareAndSwap(nil, d) {
			d = live[exp].Load()
		}
	}
	d[val-10].Add(1)
}

// Count is how many values were recorded (merged or not).
func (h *Histogram) Count() uint64 { return h.count.Load() }

// Sum is the exact sum of the recorded values (merged or not).
func (h *Histogram) Sum() uint64 { return h.sum.Load() }

// Buckets returns Envoy's default upper bounds and, for each, how many values
// (merged or not) fall in bins lying entirely at or below it. As in Envoy, a
// value equal to a bound counts in the next bound up.
func (h *Histogram) Buckets() (bounds []float64, cumulative []uint64) {
	h.mu.Lock()
	bins := mergeBins(h.cumulative, h.peekLive())
	h.mu.Unlock()
	return defaultBuckets, countsBelow(bins, defaultBuckets)
}

// peekLive reads the live bins without resetting them.
func (h *Histogram) peekLive() []bin { return h.collect(false) }

// collect gathers live bins in ascending order, optionally resetting them.
func (h *Histogram) collect(reset bool) []bin {
	var out []bin
	read := func(c *atomic.Uint64) uint64 {
		if reset {
			return c.Swap(0)
		}
		return c.Load()
	}
	if n := read(&h.zero); n > 0 {
		out = append(out, bin{0, 0, n})
	}
	live := h.live.Load()
	if live == nil {
		return out
	}
	for exp := range live {
		d := live[exp].Load()
		if d == nil {
			continue
		}
		for i := range d {
			if n := read(&d[i]); n > 0 {
				out = append(out, bin{int8(i + 10), int8(exp), n})
			}
		}
	}
	return out
}

// merge moves the live values into the interval and cumulative statistics.
func (h *Histogram) merge() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.interval = h.collect(true)
	h.cumulative = mergeBins(h.cumulative, h.interval)
	h.merged = true
}

// Used reports whether values were recorded and merged, as Envoy's
// ParentHistogram::used.
func (h *Histogram) Used() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.cumulative) > 0
}

// HistogramStats are the statistics of one histogram view (interval or
// cumulative), computed as Envoy's HistogramStatisticsImpl.
type HistogramStats struct {
	Quantiles []float64 // per SupportedQuantiles; NaN when empty
	Buckets   []uint64  // per default bucket bound, values in bins at or below it
	Count     uint64
	Sum       float64 // approximate, from bin midpoints, as Envoy
}

// Statistics returns the interval (last merge) and cumulative (all merges)
// statistics.
func (h *Histogram) Statistics() (interval, cumulative HistogramStats) {
	h.mu.Lock()
	iv, cu := h.interval, h.cumulative
	h.mu.Unlock()
	return statsOf(iv), statsOf(cu)
}

func statsOf(bins []bin) HistogramStats {
	var n uint64
	for _, b := range bins {
		n += b.count
	}
	return HistogramStats{
		Quantiles: quantiles(bins, SupportedQuantiles),
		Buckets:   countsBelow(bins, defaultBuckets),
		Count:     n,
		Sum:       approxSum(bins),
	}
}

// MergeHistograms folds the values recorded since the last merge into every
// histogram's interval and cumulative statistics. Envoy does this on the
// stats flush interval (5s by default); the owner of the Store calls it on
// the same schedule.
func (s *Store) MergeHistograms() {
	for _, h := range s.Histograms() {
		h.merge()
	}
}

func mergeBins(a, b []bin) []bin {
	out := make([]bin, 0, len(a)+len(b))
	i, j := 0, 0
	for i < len(a) || j < len(b) {
		switch {
		case j == len(b) || (i < len(a) && binLess(a[i], b[j])):
			out = append(out, a[i])
			i++
		case i == len(a) || binLess(b[j], a[i]):
			out = append(out, b[j])
			j++
		default:
			out = append(out, bin{a[i].val, a[i].exp, a[i].count + b[j].count})
			i++
			j++
		}
	}
	return out
}

func binLess(a, b bin) bool {
	if a.val == 0 || b.val == 0 {
		return a.val == 0 && b.val != 0
	}
	if a.exp != b.exp {
		return a.exp < b.exp
	}
	return a.val < b.val
}

var powersOfTen = func() (p [decades]float64) {
	p[0] = 1
	for i := 1; i < decades; i++ {
		p[i] = p[i-1] * 10
	}
	return p
}()

// left and width are hist_bucket_to_double and hist_bucket_to_double_bin_width.
func (b bin) left() float64 {
	if b.val == 0 {
		return 0
	}
	return float64(float64(b.val)/10.0) * powersOfTen[b.exp]
}

func (b bin) width() float64 {
	if b.val == 0 {
		return 0
	}
	return powersOfTen[b.exp] / 10.0
}

// quantiles is libcircllhist's hist_approx_quantile.
func quantiles(bins []bin, qs []float64) []float64 {
	out := make([]float64, len(qs))
	var total float64
	for _, b := range bins {
		total += float64(b.count)
	}
	if total == 0 {
		for i := range out {
			out[i] = math.NaN()
		}
		return out
	}
	for i, q := range qs {
		out[i] = float64(total * q)
	}
	var width, left, lower, upper float64
	ib := 0
	track := func(i int) {
		width = bins[i].width()
		left = bins[i].left()
		lower = upper
		upper = lower + float64(bins[i].count)
	}
	track(0)
	for i := range out {
		for ib < len(bins)-1 && upper < out[i] {
			ib++
			track(ib)
		}
		switch {
		case lower == out[i]:
			out[i] = left
		case upper == out[i]:
			out[i] = left + width
		case width == 0:
			out[i] = left
		default:
			out[i] = left + float64(float64(out[i]-lower)/(upper-lower))*width
		}
	}
	return out
}

// countsBelow is hist_approx_count_below for each threshold.
func countsBelow(bins []bin, thresholds []float64) []uint64 {
	out := make([]uint64, len(thresholds))
	for i, t := range thresholds {
		var n uint64
		for _, b := range bins {
			if b.left()+b.width() > t {
				break
			}
			n += b.count
		}
		out[i] = n
	}
	return out
}

// approxSum is hist_approx_sum: bin midpoints times counts.
func approxSum(bins []bin) float64 {
	var sum float64
	for _, b := range bins {
		mid := 0.0
		if b.val != 0 {
			mid = b.left() + b.width()/2.0
		}
		sum += float64(mid * float64(b.count))
	}
	return sum
}
