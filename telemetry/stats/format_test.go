package stats

import (
	"bytes"
	"encoding/json"
	"flag"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite golden files")

// populated builds a store shaped like a small Envoy: cluster, listener, http
// and server stats, one merged histogram, one merged-then-idle histogram and
// one never-recorded histogram.
func populated() *Store {
	s := NewStore()
	s.Counter("cluster.backend.upstream_rq_total").Add(7)
	s.Counter("cluster.backend.upstream_rq_200").Add(5)
	s.Counter("cluster.backend.upstream_rq_503").Add(2)
	s.Counter("cluster.backend.upstream_rq_2xx").Add(5)
	s.Counter("cluster.other.upstream_rq_200").Add(1)
	s.Counter("cluster.other.upstream_cx_total")
	s.Counter("http.ingress_http.downstream_rq_2xx").Add(6)
	s.Counter("listener.127.0.0.1_10000.http.ingress_http.downstream_rq_2xx").Add(6)
	s.Counter("listener.127.0.0.1_10000.downstream_cx_total").Add(3)
	s.Counter("tcp.db\"x\\y.downstream_cx_total").Add(1)
	s.Gauge("server.live").Set(1)
	s.Gauge("cluster.backend.membership_healthy").Set(2)
	s.Gauge("listener_manager.worker_0.dispatcher.loop_active").Set(0)
	s.Gauge("listener_manager.total_listeners_active").Set(1)

	rt := s.Histogram("cluster.backend.upstream_rq_time", Milliseconds)
	for _, v := range []uint64{0, 1, 5, 10, 25, 100, 200, 1234} {
		rt.Record(v)
	}
	idle := s.Histogram("http.ingress_http.downstream_rq_time", Milliseconds)
	idle.Record(200)
	s.MergeHistograms()
	rt.Record(3) // recorded in the next interval
	s.MergeHistograms()
	s.Histogram("listener.127.0.0.1_10000.downstream_cx_length_ms", Milliseconds)
	return s
}

func TestWriteGolden(t *testing.T) {
	s := populated()
	tests := []struct {
		file  string
		write func(*bytes.Buffer, Filter) error
		f     Filter
	}{
		{"stats.txt", func(b *bytes.Buffer, f Filter) error { return s.WriteText(b, f) }, Filter{}},
		{"stats_used_cluster.txt", func(b *bytes.Buffer, f Filter) error { return s.WriteText(b, f) },
			Filter{UsedOnly: true, Regex: regexp.MustCompile(`^cluster\.`)}},
		{"stats_gauges.txt", func(b *bytes.Buffer, f Filter) error { return s.WriteText(b, f) }, Filter{Type: "Gauges"}},
		{"stats.json", func(b *bytes.Buffer, f Filter) error { return s.WriteJSON(b, f) }, Filter{}},
		{"stats_counters.json", func(b *bytes.Buffer, f Filter) error { return s.WriteJSON(b, f) }, Filter{Type: "Counters"}},
		{"stats.prom", func(b *bytes.Buffer, f Filter) error { return s.WritePrometheus(b, f) }, Filter{}},
	}
	for _, tc := range tests {
		t.Run(tc.file, func(t *testing.T) {
			var b bytes.Buffer
			if err := tc.write(&b, tc.f); err != nil {
				t.Fatal(err)
			}
			golden(t, tc.file, b.Bytes())
		})
	}
}

func golden(t *testing.T, file string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", file)
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs:\n--- got\n%s\n--- want\n%s", file, got, want)
	}
}

func TestJSONIsValid(t *testing.T) {
	var b bytes.Buffer
	if err := populated().WriteJSON(&b, Filter{}); err != nil {
		t.Fatal(err)
	}
	var v struct {
		Stats []map[string]any `json:"stats"`
	}
	if err := json.Unmarshal(b.Bytes(), &v); err != nil {
		t.Fatalf("invalid json: %v\n%s", err, b.String())
	}
	last := v.Stats[len(v.Stats)-1]
	if _, ok := last["histograms"]; !ok {
		t.Errorf("last entry is not histograms: %v", last)
	}
	var empty bytes.Buffer
	NewStore().WriteJSON(&empty, Filter{})
	if empty.String() != `{"stats":[]}` {
		t.Errorf("empty store json = %s", empty.String())
	}
}

// Envoy's admin test: one value 200 gives
// "P0(200,200) P25(202.5,202.5) ... P100(210,210)".
func TestQuantileSummaryEnvoyExample(t *testing.T) {
	s := NewStore()
	s.Histogram("h1", Unspecified).Record(200)
	var b bytes.Buffer
	s.WriteText(&b, Filter{})
	if b.String() != "h1: No recorded values\n" {
		t.Errorf("before merge: %q", b.String())
	}
	s.MergeHistograms()
	b.Reset()
	s.WriteText(&b, Filter{})
	want := "h1: P0(200,200) P25(202.5,202.5) P50(205,205) P75(207.5,207.5) P90(209,209) P95(209.5,209.5) P99(209.9,209.9) P99.5(209.95,209.95) P99.9(209.99,209.99) P100(210,210)\n"
	if b.String() != want {
		t.Errorf("got  %q\nwant %q", b.String(), want)
	}
	s.MergeHistograms() // an empty interval
	b.Reset()
	s.WriteText(&b, Filter{})
	if !strings.HasPrefix(b.String(), "h1: P0(nan,200) P25(nan,202.5)") {
		t.Errorf("idle interval: %q", b.String())
	}
}

func TestHistogramBinsAndBuckets(t *testing.T) {
	tests := []struct {
		v        uint64
		val, exp int
	}{{0, 0, 0}, {1, 10, 0}, {9, 90, 0}, {10, 10, 1}, {99, 99, 1}, {100, 10, 2}, {123, 12, 2}, {1999, 19, 3}, {math.MaxUint64, 18, 19}}
	for _, tc := range tests {
		if val, exp := binOf(tc.v); val != tc.val || exp != tc.exp {
			t.Errorf("binOf(%d) = %d,%d want %d,%d", tc.v, val, exp, tc.val, tc.exp)
		}
	}
	h := newHistogram("h", Milliseconds)
	for _, v := range []uint64{0, 4, 25, 26, 100, 5000} {
		h.Record(v)
	}
	if h.Count() != 6 || h.Sum() != 5155 {
		t.Errorf("count/sum = %d/%d", h.Count(), h.Sum())
	}
	bounds, cum := h.Buckets()
	byBound := map[float64]uint64{}
	for i, b := range bounds {
		byBound[b] = cum[i]
	}
	// Upper bounds are exclusive as in Envoy (issue envoyproxy/envoy#36549):
	// 25 lands in [25,26) which is not entirely <= 25.
	want := map[float64]uint64{0.5: 1, 5: 2, 25: 2, 50: 4, 100: 4, 250: 5, 5000: 5, 10000: 6}
	for b, n := range want {
		if byBound[b] != n {
			t.Errorf("le=%v: %d, want %d", b, byBound[b], n)
		}
	}
	if h.Used() {
		t.Error("used before merge")
	}
	h.merge()
	iv, cu := h.Statistics()
	if !h.Used() || iv.Count != 6 || cu.Count != 6 {
		t.Errorf("after merge used=%v counts %d/%d", h.Used(), iv.Count, cu.Count)
	}
	// Midpoint sum: 0 + 4.05 + 25.5 + 26.5 + 105 + 5050.
	if math.Abs(cu.Sum-5211.05) > 1e-9 {
		t.Errorf("approx sum = %v", cu.Sum)
	}
}

func TestNumberFormats(t *testing.T) {
	tests := []struct {
		got, want string
	}{
		{formatShortest(math.NaN()), "nan"},
		{formatShortest(202.5), "202.5"},
		{formatShortest(1e6), "1000000"},
		{formatShortest(1e16), "1e+16"},
		{formatShortest(0.0001), "0.0001"},
		{formatShortest(0.00001), "1e-05"},
		{formatG(99.5), "99.5"},
		{formatG(100 * 0.999), "99.9"},
		{formatG32(0.5), "0.5"},
		{formatG32(1800000), "1800000"},
		{formatG32(1.05), "1.0500000000000000444089209850063"},
		{formatG32(1e40), "1.0000000000000000303786028427004e+40"},
		{sanitizeValue("a\"b\\c\nd"), `a\"b\\c\nd`},
		{sanitizeName("a.tag-name"), "a_tag_name"},
	}
	for i, tc := range tests {
		if tc.got != tc.want {
			t.Errorf("%d: got %q want %q", i, tc.got, tc.want)
		}
	}
}

// Recording races with merging and output; no value may be lost.
func TestHistogramConcurrentRecordAndMerge(t *testing.T) {
	s := NewStore()
	h := s.Histogram("h", Unspecified)
	const workers, per = 4, 2000
	done := make(chan struct{})
	for w := 0; w < workers; w++ {
		go func(w int) {
			defer func() { done <- struct{}{} }()
			for i := 0; i < per; i++ {
				h.Record(uint64(w*per + i))
			}
		}(w)
	}
	var b bytes.Buffer
	for i := 0; i < 20; i++ {
		s.MergeHistograms()
		b.Reset()
		s.WritePrometheus(&b, Filter{})
	}
	for w := 0; w < workers; w++ {
		<-done
	}
	s.MergeHistograms()
	_, cu := h.Statistics()
	if cu.Count != workers*per || h.Count() != workers*per {
		t.Errorf("cumulative count %d, recorded %d, want %d", cu.Count, h.Count(), workers*per)
	}
}
