package localratelimit

import (
	"math"
	"sync"
	"sync/atomic"
	"time"
)

// epoch is the monotonic origin of bucket times.
var epoch = time.Now()

// now is the monotonic time in seconds since epoch; tests replace it.
var now = func() float64 { return time.Since(epoch).Seconds() }

// bucket is Envoy's AtomicTokenBucketImpl as the local rate limiter uses it
// (RateLimitTokenBucket): tokens refill continuously at tokens_per_fill per
// fill_interval up to max_tokens, and the whole state is one atomic time,
// the moment the bucket was (or would have been) empty. A fresh bucket is
// full. Safe for concurrent use without locks.
type bucket struct {
	max  float64 // max_tokens
	rate float64 // tokens per second
	t    atomic.Uint64
}

func newBucket(maxTokens, perFill uint32, interval time.Duration) *bucket {
	b := &bucket{max: float64(maxTokens), rate: float64(perFill) / interval.Seconds()}
	b.t.Store(math.Float64bits(now() - b.max/b.rate))
	return b
}

// consume takes one token and reports whether there was one.
func (b *bucket) consume() bool {
	tNow := now()
	old := b.t.Load()
	for {
		total := min(b.max, (tNow-math.Float64frombits(old))*b.rate)
		if total < 1 {
			return false
		}
		next := math.Float64bits(tNow - (total-1)/b.rate)
		if b.t.CompareAndSwap(old, next) {
			return true
		}
		old = b.t.Load()
	}
}

// full reports whether the bucket has refilled completely, so that a fresh
// bucket would behave the same.
func (b *bucket) full() bool {
	return (now()-math.Float64frombits(b.t.Load()))*b.rate >= b.max
}

// connBuckets are the per-connection buckets of one config
// (local_rate_limit_per_downstream_connection), by connection id. A full
// bucket is indistinguishable from a fresh one, so full buckets are
// forgotten whenever the map has doubled since the last sweep: closed
// connections cost nothing once their bucket has refilled.
type connBuckets struct {
	maxTokens, perFill uint32
	interval           time.Duration

	m       sync.Map // uint64 -> *bucket
	n       atomic.Int64
	sweepMu sync.Mutex
	sweepAt atomic.Int64
}

const minSweep = 1024

func (c *connBuckets) get(id uint64) *bucket {
	if b, ok := c.m.Load(id); ok {
		return b.(*bucket)
	}
	b, loaded := c.m.LoadOrStore(id, newBucket(c.maxTokens, c.perFill, c.interval))
	if !loaded && c.n.Add(1) >= max(c.sweepAt.Load(), minSweep) {
		c.sweep(id)
	}
	return b.(*bucket)
}

// sweep drops the full buckets, except the one of connection keep (being
// handed out).
func (c *connBuckets) sweep(keep uint64) {
	if !c.sweepMu.TryLock() {
		return
	}
	defer c.sweepMu.Unlock()
	c.m.Range(func(k, v any) bool {
		if k.(uint64) != keep && v.(*bucket).full() {
			c.m.Delete(k)
			c.n.Add(-1)
		}
		return true
	})
	c.sweepAt.Store(2 * c.n.Load())
}
