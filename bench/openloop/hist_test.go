package main

import (
	"testing"
	"time"
)

func TestBucketRoundTrip(t *testing.T) {
	for _, v := range []uint64{0, 1, 127, 128, 129, 255, 256, 1000, 123456789, 1 << 40} {
		i := bucketOf(v)
		if hi := bucketHigh(i); hi < v || float64(hi-v) > float64(v)/subCount+1 {
			t.Errorf("value %d: bucket %d high %d", v, i, hi)
		}
		if i > 0 && bucketHigh(i-1) >= v {
			t.Errorf("value %d: previous bucket %d already reaches %d", v, i-1, bucketHigh(i-1))
		}
	}
}

func TestQuantiles(t *testing.T) {
	tests := []struct {
		name   string
		values func(h *Histogram)
		q      float64
		want   time.Duration
	}{
		{"uniform p50", uniform, 0.5, 5000 * time.Microsecond},
		{"uniform p99", uniform, 0.99, 9900 * time.Microsecond},
		{"uniform p99.9", uniform, 0.999, 9990 * time.Microsecond},
		{"uniform max", uniform, 1, 10000 * time.Microsecond},
		{"outlier p99", outlier, 0.99, 100 * time.Microsecond},
		{"outlier p99.9", outlier, 0.999, time.Second},
		{"exact small", func(h *Histogram) {
			for v := range 100 {
				h.Record(time.Duration(v + 1))
			}
		}, 0.25, 25},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var h Histogram
			tt.values(&h)
			got := h.Quantile(tt.q)
			if diff := float64(got-tt.want) / float64(tt.want); diff < 0 || diff > 1.0/subCount {
				t.Errorf("Quantile(%v) = %v, want %v within +%.2f%%", tt.q, got, tt.want, 100.0/subCount)
			}
		})
	}
}

// uniform records 1 µs .. 10000 µs once each.
func uniform(h *Histogram) {
	for v := 1; v <= 10000; v++ {
		h.Record(time.Duration(v) * time.Microsecond)
	}
}

// outlier records 995 fast values and 5 one-second stalls.
func outlier(h *Histogram) {
	for range 995 {
		h.Record(100 * time.Microsecond)
	}
	for range 5 {
		h.Record(time.Second)
	}
}

func TestMergeAndEmpty(t *testing.T) {
	var a, b, empty Histogram
	if empty.Quantile(0.99) != 0 || empty.Count() != 0 {
		t.Fatal("empty histogram is not zero")
	}
	a.Record(time.Millisecond)
	b.Record(time.Second)
	b.Record(2 * time.Second)
	a.Merge(&b)
	if a.Count() != 3 || a.Max() != 2*time.Second {
		t.Fatalf("merged count %d max %v", a.Count(), a.Max())
	}
	if got := a.Quantile(0.3); got < time.Millisecond || got > time.Millisecond+time.Millisecond/subCount {
		t.Errorf("p30 = %v, want ~1ms", got)
	}
	if got := a.Quantile(0.5); got < time.Second || got > time.Second+time.Second/subCount {
		t.Errorf("p50 = %v, want ~1s", got)
	}
}
