package stats

import (
	"bytes"
	"fmt"
	"regexp"
	"sync"
	"testing"
)

var testLayout = NewLayout([]string{"rq_total", "cx_total", "sub.errors"}, []string{"active", "version"})

// fill sets the same values on a's stats made one at a time and on b's
// block stats of the same names.
func fill(t *testing.T, lone Scope, blk *Block) {
	t.Helper()
	for i, n := range testLayout.counters {
		if i == 1 {
			lone.Counter(n) // created, left unused in both
			continue
		}
		lone.Counter(n).Add(uint64(i + 1))
		blk.Counter(i).Add(uint64(i + 1))
	}
	lone.Gauge("active").Set(-3)
	lone.Gauge("version")
	blk.Gauge(0).Set(-3)
}

func TestBlockOutputMatchesLoneStats(t *testing.T) {
	for _, tc := range []struct {
		name   string
		filter Filter
	}{
		{"all", Filter{}},
		{"used", Filter{UsedOnly: true}},
		{"regex", Filter{Regex: regexp.MustCompile(`cx|sub\.`)}},
		{"gauges", Filter{Type: "Gauges"}},
		{"counters", Filter{Type: "Counters"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			lone, blk := NewStore(), NewStore()
			for _, c := range []string{"a", "b.c", "z"} {
				fill(t, lone.Scope("cluster."+c), blk.Scope("cluster."+c).Block(testLayout))
			}
			// Stats around the blocks, made alone in both stores.
			for _, st := range []*Store{lone, blk} {
				st.Counter("cluster.a.upstream_rq_200").Inc()
				st.Gauge("cluster_manager.active_clusters").Set(3)
				st.Counter("cluster.b.c.zz").Inc()
				st.Histogram("cluster.a.upstream_cx_length_ms", Milliseconds).Record(5)
			}
			for _, out := range []struct {
				name  string
				write func(*Store, *bytes.Buffer) error
			}{
				{"text", func(s *Store, b *bytes.Buffer) error { return s.WriteText(b, tc.filter) }},
				{"json", func(s *Store, b *bytes.Buffer) error { return s.WriteJSON(b, tc.filter) }},
				{"prometheus", func(s *Store, b *bytes.Buffer) error { return s.WritePrometheus(b, tc.filter) }},
			} {
				var want, got bytes.Buffer
				if err := out.write(lone, &want); err != nil {
					t.Fatal(err)
				}
				if err := out.write(blk, &got); err != nil {
					t.Fatal(err)
				}
				if want.String() != got.String() {
					t.Errorf("%s output differs:\nlone:\n%s\nblock:\n%s", out.name, want.String(), got.String())
				}
				if want.Len() == 0 {
					t.Errorf("%s output is empty", out.name)
				}
			}
			var ln, bn []string
			for _, c := range lone.Counters() {
				ln = append(ln, c.Name())
			}
			for _, c := range blk.Counters() {
				bn = append(bn, c.Name())
			}
			if fmt.Sprint(ln) != fmt.Sprint(bn) {
				t.Errorf("Counters():\nlone  %v\nblock %v", ln, bn)
			}
		})
	}
}

func TestBlockLookupByName(t *testing.T) {
	s := NewStore()
	b := s.Scope("cluster.x").Block(testLayout)
	for _, tc := range []struct {
		name string
		want *Counter
	}{
		{"cluster.x.rq_total", b.Counter(0)},
		{"cluster.x.cx_total", b.Counter(1)},
		{"cluster.x.sub.errors", b.Counter(2)},
	} {
		if got := s.Counter(tc.name); got != tc.want {
			t.Errorf("Counter(%q) = %p, want the block's %p", tc.name, got, tc.want)
		}
		if got := tc.want.Name(); got != tc.name {
			t.Errorf("Name() = %q, want %q", got, tc.name)
		}
	}
	if g := s.Scope("cluster").Scope("x").Gauge("version"); g != b.Gauge(1) || g.Name() != "cluster.x.version" {
		t.Errorf("Gauge(version) = %p %q, want the block's", g, g.Name())
	}
	b.Counter(0).Add(7)
	b.Gauge(0).Set(-2)
	if v, ok := s.Value("cluster.x.rq_total"); !ok || v != 7 {
		t.Errorf("Value(rq_total) = %d, %v", v, ok)
	}
	if v, ok := s.Value("cluster.x.active"); !ok || v != -2 {
		t.Errorf("Value(active) = %d, %v", v, ok)
	}
	if _, ok := s.Value("cluster.x.nope"); ok {
		t.Error("Value of a missing name found something")
	}
	// A gauge name is not a counter: asking for a counter makes one alone.
	if c := s.Counter("cluster.x.active"); c.Name() != "cluster.x.active" || len(s.counters) != 1 {
		t.Errorf("Counter(cluster.x.active): %q, %d lone counters", c.Name(), len(s.counters))
	}
	if s.Scope("cluster.x").Block(testLayout) != b {
		t.Error("the same prefix and layout gave a new block")
	}
	if s.Scope("cluster.y").Block(testLayout) == b {
		t.Error("another prefix gave the same block")
	}
	if n := len(s.Counters()); n != 3+3+1 {
		t.Errorf("%d counters, want 7", n)
	}
}

func TestBlockNoDuplicates(t *testing.T) {
	other := NewLayout([]string{"errors", "rq_total"}, []string{"active"})
	for _, tc := range []struct {
		name  string
		setup func(s *Store) (*Counter, *Gauge) // existing cluster.x.rq_total or sub.errors, cluster.x.active
		idx   int                               // the block counter that must be the existing one
	}{
		{"lone first", func(s *Store) (*Counter, *Gauge) {
			return s.Counter("cluster.x.rq_total"), s.Gauge("cluster.x.active")
		}, 0},
		{"block at a shorter prefix", func(s *Store) (*Counter, *Gauge) {
			b := s.Scope("cluster").Block(NewLayout([]string{"x.rq_total"}, []string{"x.active"}))
			return b.Counter(0), b.Gauge(0)
		}, 0},
		{"block at a longer prefix", func(s *Store) (*Counter, *Gauge) {
			b := s.Scope("cluster.x.sub").Block(other)
			return b.Counter(0), s.Gauge("cluster.x.active")
		}, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := NewStore()
			c, g := tc.setup(s)
			before := len(s.Counters())
			b := s.Scope("cluster.x").Block(testLayout)
			if b.Counter(tc.idx) != c || b.Gauge(0) != g {
				t.Fatalf("block made its own copy of an existing stat")
			}
			if s.Counter(c.Name()) != c || s.Gauge(g.Name()) != g {
				t.Fatalf("lookup by name gave another stat")
			}
			seen := map[string]bool{}
			for _, c := range s.Counters() {
				if seen[c.Name()] {
					t.Errorf("counter %q listed twice", c.Name())
				}
				seen[c.Name()] = true
			}
			if got := len(s.Counters()); got != before+2 {
				t.Errorf("%d counters after the block, want %d", got, before+2)
			}
			c.Inc()
			if v, _ := s.Value(c.Name()); v != int64(c.Value()) || v == 0 {
				t.Errorf("Value = %d, counter %d", v, c.Value())
			}
		})
	}
}

func TestBlockConcurrent(t *testing.T) {
	s := NewStore()
	const workers, clusters = 8, 50
	var wg sync.WaitGroup
	got := make([][]*Block, workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range clusters {
				sc := s.Scope(fmt.Sprintf("cluster.c%d", i))
				b := sc.Block(testLayout)
				got[w] = append(got[w], b)
				b.Counter(0).Inc()
				sc.Counter("cx_total").Inc() // by name, concurrently with creation
				s.Counter(fmt.Sprintf("cluster.c%d.lone", i)).Inc()
				_ = s.Counters()
			}
		}()
	}
	wg.Wait()
	for i := range clusters {
		for w := 1; w < workers; w++ {
			if got[w][i] != got[0][i] {
				t.Fatalf("cluster %d: two blocks for one prefix", i)
			}
		}
		for _, n := range []string{"rq_total", "cx_total", "lone"} {
			if v, _ := s.Value(fmt.Sprintf("cluster.c%d.%s", i, n)); v != workers {
				t.Errorf("cluster %d %s = %d, want %d", i, n, v, workers)
			}
		}
	}
	if n := len(s.Counters()); n != clusters*4 {
		t.Errorf("%d counters, want %d", n, clusters*4)
	}
}

func TestNewLayoutRejectsBadNames(t *testing.T) {
	for _, tc := range []struct {
		name             string
		counters, gauges []string
	}{
		{"duplicate", []string{"a", "a"}, nil},
		{"empty", nil, []string{""}},
		{"leading dot", []string{".a"}, nil},
		{"trailing dot", nil, []string{"a."}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			defer func() {
				if recover() == nil {
					t.Error("no panic")
				}
			}()
			NewLayout(tc.counters, tc.gauges)
		})
	}
}

func BenchmarkBlock(b *testing.B) {
	names := make([]string, 100)
	for i := range names {
		names[i] = fmt.Sprintf("stat_number_%d", i)
	}
	l := NewLayout(names[:80], names[80:])
	b.Run("block", func(b *testing.B) {
		s := NewStore()
		for i := range b.N {
			s.Scope(fmt.Sprintf("cluster.svc-%d", i)).Block(l)
		}
	})
	b.Run("lone", func(b *testing.B) {
		s := NewStore()
		for i := range b.N {
			sc := s.Scope(fmt.Sprintf("cluster.svc-%d", i))
			for _, n := range names[:80] {
				sc.Counter(n)
			}
			for _, n := range names[80:] {
				sc.Gauge(n)
			}
		}
	})
}

func TestLayoutOfAndFill(t *testing.T) {
	type group struct {
		A, B *Counter
		G    *Gauge
	}
	fill := func(out *group) FillFunc {
		return func(c func(string) *Counter, g func(string) *Gauge) {
			*out = group{A: c("a"), G: g("g"), B: c("sub.b")}
		}
	}
	l := LayoutOf(fill(new(group)))
	if fmt.Sprint(l.counters, l.gauges) != "[a sub.b] [g]" {
		t.Fatalf("layout %v %v", l.counters, l.gauges)
	}
	s := NewStore()
	var grp group
	s.Scope("p").Block(l).Fill(fill(&grp))
	for _, tc := range []struct{ got, want string }{
		{grp.A.Name(), "p.a"}, {grp.B.Name(), "p.sub.b"}, {grp.G.Name(), "p.g"},
	} {
		if tc.got != tc.want {
			t.Errorf("name %q, want %q", tc.got, tc.want)
		}
	}
	if s.Counter("p.sub.b") != grp.B {
		t.Error("Fill's counter is not the one found by name")
	}
	defer func() {
		if recover() == nil {
			t.Error("Fill in another order did not panic")
		}
	}()
	s.Scope("q").Block(l).Fill(func(c func(string) *Counter, g func(string) *Gauge) { c("sub.b"); c("a"); g("g") })
}

func TestUsed(t *testing.T) {
	b := NewStore().Scope("u").Block(testLayout)
	for _, tc := range []struct {
		name string
		op   func() bool // changes a fresh stat, returns its Used
		want bool
	}{
		{"untouched counter", func() bool { return b.Counter(0).Used() }, false},
		{"counter Inc", func() bool { c := b.Counter(1); c.Inc(); return c.Used() && c.Value() == 1 }, true},
		{"counter Add(0)", func() bool { c := b.Counter(2); c.Add(0); return c.Used() && c.Value() == 0 }, true},
		{"untouched gauge", func() bool { return b.Gauge(0).Used() }, false},
		{"gauge Set(0)", func() bool { g := b.Gauge(1); g.Set(0); return g.Used() && g.Value() == 0 }, true},
		{"lone gauge Inc Dec", func() bool { g := NewStore().Gauge("g"); g.Inc(); g.Dec(); return g.Used() && g.Value() == 0 }, true},
	} {
		if got := tc.op(); got != tc.want {
			t.Errorf("%s: Used = %v, want %v", tc.name, got, tc.want)
		}
	}
}
