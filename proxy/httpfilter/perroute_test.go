package httpfilter_test

import (
	"errors"
	"sync"
	"testing"

	"google.golang.org/protobuf/types/known/anypb"

	"github.com/outrider-proxy/outrider/proxy/httpfilter"
	"github.com/outrider-proxy/outrider/telemetry/stats"
)

func TestPerRoute(t *testing.T) {
	var c httpfilter.PerRoute[*anypb.Any, *string]
	calls := 0
	compile := func(a *anypb.Any) (*string, error) {
		calls++
		if a.GetTypeUrl() == "bad" {
			return nil, errors.New("bad")
		}
		s := a.GetTypeUrl()
		return &s, nil
	}
	broken := new(string)
	good, bad := &anypb.Any{TypeUrl: "good"}, &anypb.Any{TypeUrl: "bad"}
	for _, tc := range []struct {
		name  string
		key   *anypb.Any
		want  string
		calls int
		isBad bool
	}{
		{"compiled", good, "good", 1, false},
		{"cached", good, "good", 1, false},
		{"broken cached", bad, "", 2, true},
		{"broken from the cache", bad, "", 2, true},
		{"another message, same content", &anypb.Any{TypeUrl: "good"}, "good", 3, false},
	} {
		got := c.Get(tc.key, compile, broken)
		if *got != tc.want || calls != tc.calls || (got == broken) != tc.isBad {
			t.Errorf("%s: got %q (broken %v) after %d compiles, want %q (broken %v) after %d", tc.name, *got, got == broken, calls, tc.want, tc.isBad, tc.calls)
		}
	}
}

// A full cache starts over: the oldest entries are compiled again.
func TestPerRouteBounded(t *testing.T) {
	var c httpfilter.PerRoute[int, int]
	calls := 0
	compile := func(k int) (int, error) { calls++; return k * 2, nil }
	for k := range httpfilter.MaxPerRoute {
		c.Get(k, compile, -1)
	}
	if c.Get(0, compile, -1) != 0 || calls != httpfilter.MaxPerRoute {
		t.Fatalf("before the bound: %d compiles, want %d", calls, httpfilter.MaxPerRoute)
	}
	c.Get(httpfilter.MaxPerRoute, compile, -1) // one over: the cache restarts
	if got := c.Get(1, compile, -1); got != 2 || calls != httpfilter.MaxPerRoute+2 {
		t.Fatalf("after the restart: got %d after %d compiles, want 2 after %d", got, calls, httpfilter.MaxPerRoute+2)
	}
}

// Concurrent first calls agree on one value.
func TestPerRouteConcurrent(t *testing.T) {
	var c httpfilter.PerRoute[string, *int]
	var wg sync.WaitGroup
	got := make([]*int, 8)
	for i := range got {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got[i] = c.Get("k", func(string) (*int, error) { return new(int), nil }, nil)
		}()
	}
	wg.Wait()
	for i, p := range got {
		if p != got[0] {
			t.Fatalf("caller %d got another value than caller 0", i)
		}
	}
}

func TestUnmarshalConfigAndStatsStore(t *testing.T) {
	good, _ := anypb.New(&anypb.Any{TypeUrl: "inner"})
	for _, tc := range []struct {
		name string
		a    *anypb.Any
		want string // the inner TypeUrl, or the error's prefix
	}{
		{"nil keeps the defaults", nil, ""},
		{"its type", good, "inner"},
		{"another type", &anypb.Any{TypeUrl: "type.googleapis.com/google.protobuf.Duration"}, "typed_config: "},
	} {
		m := &anypb.Any{}
		err := httpfilter.UnmarshalConfig(tc.a, m)
		got := m.GetTypeUrl()
		if err != nil {
			got = err.Error()[:len("typed_config: ")]
		}
		if got != tc.want {
			t.Errorf("%s: %q (err %v), want %q", tc.name, got, err, tc.want)
		}
	}
	own := stats.NewStore()
	if (&httpfilter.Context{Stats: own}).StatsStore() != own {
		t.Error("StatsStore is not the context's store")
	}
	if (&httpfilter.Context{}).StatsStore() == nil {
		t.Error("no private store without one")
	}
}
