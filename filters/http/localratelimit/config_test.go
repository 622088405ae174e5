package localratelimit

import (
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	commonv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	lrlv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/local_ratelimit/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/outrider-proxy/outrider/proxy/httpfilter"
	"github.com/outrider-proxy/outrider/telemetry/stats"
)

func tb(maxTokens uint32, interval time.Duration) *typev3.TokenBucket {
	return &typev3.TokenBucket{MaxTokens: maxTokens, FillInterval: durationpb.New(interval)}
}

func TestCreate(t *testing.T) {
	ctx := &httpfilter.Context{Stats: stats.NewStore()}
	tests := []struct {
		name    string
		m       *lrlv3.LocalRateLimit
		wantErr string
	}{
		{"descriptors refused", &lrlv3.LocalRateLimit{StatPrefix: "a", Descriptors: []*commonv3.LocalRateLimitDescriptor{{}}}, "descriptors: field not supported"},
		{"stat_prefix required", &lrlv3.LocalRateLimit{}, "stat_prefix: required"},
		{"fill interval under 50ms", &lrlv3.LocalRateLimit{StatPrefix: "a", TokenBucket: tb(1, 10*time.Millisecond)}, ">= 50ms"},
		{"no bucket is fine for the filter", &lrlv3.LocalRateLimit{StatPrefix: "a"}, ""},
		{"status below 400 becomes 429", &lrlv3.LocalRateLimit{StatPrefix: "a", Status: &typev3.HttpStatus{Code: typev3.StatusCode_OK}, TokenBucket: tb(1, time.Second)}, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a, _ := anypb.New(tc.m)
			c, err := create(ctx, a)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if l := c.(*config).limiter; l.status != 429 {
				t.Errorf("status %d", l.status)
			}
		})
	}

	a, _ := anypb.New(&lrlv3.LocalRateLimit{StatPrefix: "f"})
	c, err := create(ctx, a)
	if err != nil {
		t.Fatal(err)
	}
	cfg := c.(*config)
	// A per-route config needs its own bucket; one that does not compile
	// rejects every request.
	noBucket, _ := anypb.New(&lrlv3.LocalRateLimit{StatPrefix: "r"})
	if l := cfg.routeLimiter(noBucket); !l.denyAll || l.allowed(nil) {
		t.Errorf("per-route config without token_bucket does not deny")
	}
	good, _ := anypb.New(&lrlv3.LocalRateLimit{StatPrefix: "r", TokenBucket: tb(1, time.Hour)})
	l := cfg.routeLimiter(good)
	if l != cfg.routeLimiter(good) || l.shared == nil || l.statOK.Name() != "r.http_local_rate_limit.ok" {
		t.Errorf("per-route limiter not compiled once with its own bucket and stats")
	}
	if !l.allowed(nil) || l.allowed(nil) {
		t.Errorf("per-route bucket of one token")
	}
	// max_tokens 0 always rejects.
	zero, _ := anypb.New(&lrlv3.LocalRateLimit{StatPrefix: "z", TokenBucket: tb(0, time.Second)})
	if c, err := create(ctx, zero); err != nil || c.(*config).allowed(nil) {
		t.Errorf("max_tokens 0: %v", err)
	}
}

// The bucket starts full, refills continuously at tokens_per_fill per
// fill_interval and never holds more than max_tokens.
func TestBucket(t *testing.T) {
	clock := 100.0
	defer func(f func() float64) { now = f }(now)
	now = func() float64 { return clock }
	b := newBucket(3, 2, time.Second) // 2 tokens a second, at most 3
	steps := []struct {
		advance float64
		takes   int // tokens that can be taken after advancing
	}{
		{0, 3},
		{0.4, 0},  // 0.8 tokens
		{0.1, 1},  // 1.0
		{0.75, 1}, // 1.5
		{100, 3},  // capped
		{0.25, 0}, // 0.5
		{0.25, 1}, // 1.0
	}
	for i, s := range steps {
		clock += s.advance
		n := 0
		for n < 10 && b.consume() {
			n++
		}
		if n != s.takes {
			t.Fatalf("step %d: took %d tokens, want %d", i, n, s.takes)
		}
	}
	clock += 1.5
	if !b.full() {
		t.Errorf("bucket not full after refilling to max")
	}
}

// Per-connection buckets are separate, and full ones are forgotten.
func TestConnBuckets(t *testing.T) {
	clock := 0.0
	defer func(f func() float64) { now = f }(now)
	now = func() float64 { return clock }
	c := &connBuckets{maxTokens: 1, perFill: 1, interval: time.Second}
	for id := range uint64(minSweep - 1) {
		if !c.get(id).consume() {
			t.Fatalf("conn %d: first request limited", id)
		}
	}
	if c.get(1).consume() {
		t.Fatalf("conn 1: second request allowed")
	}
	clock += 2 // every bucket refilled
	if !c.get(minSweep).consume() || c.get(minSweep).consume() {
		t.Errorf("the bucket that triggered the sweep was not kept")
	}
	if n := c.n.Load(); n != 1 {
		t.Errorf("%d buckets kept after the sweep, want 1", n)
	}
	if !c.get(1).consume() {
		t.Errorf("conn 1 after refill: limited")
	}
}

// Concurrent streams never take more tokens than the bucket holds.
func TestBucketConcurrent(t *testing.T) {
	clock := 5.0
	defer func(f func() float64) { now = f }(now)
	now = func() float64 { return clock } // frozen: no refill
	b := newBucket(100, 1, time.Hour)
	var wg sync.WaitGroup
	var taken atomic.Int64
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 50 {
				if b.consume() {
					taken.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	if n := taken.Load(); n != 100 {
		t.Fatalf("%d tokens taken from a bucket of 100", n)
	}
}
