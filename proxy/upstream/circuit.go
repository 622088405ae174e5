package upstream

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"

	"github.com/outrider-proxy/outrider/telemetry/stats"
)

// Envoy's circuit breaker defaults.
const (
	DefaultMaxConnections     = 1024
	DefaultMaxPendingRequests = 1024
	DefaultMaxRequests        = 1024
	DefaultMaxRetries         = 3
	defaultBudgetPercent      = 20.0
	defaultMinRetryConcurrent = 3
)

// resource is one circuit breaker counter with its limit and gauges.
type resource struct {
	max       int64
	cur       atomic.Int64
	open      *stats.Gauge
	remaining *stats.Gauge // nil unless track_remaining
}

func (r *resource) tryAcquire(limit int64) bool {
	for range 1 << 20 { // bounded CAS loop
		v := r.cur.Load()
		if v >= limit {
			r.update(v, limit)
			return false
		}
		if r.cur.CompareAndSwap(v, v+1) {
			r.update(v+1, limit)
			return true
		}
	}
	return false
}

func (r *resource) release() { r.update(r.cur.Add(-1), r.max) }

func (r *resource) update(v, limit int64) {
	if v >= limit {
		r.open.Set(1)
	} else {
		r.open.Set(0)
	}
	if r.remaining != nil {
		r.remaining.Set(max(limit-v, 0))
	}
}

// resources are a cluster's circuit breakers of one priority (Envoy's
// ResourceManager).
type resources struct {
	cx, pending, rq, retries resource
	budget                   *retryBudget // nil without retry_budget

	// perHostCx is per_host_thresholds max_connections of this priority: the
	// most connections (of both priorities) one host may have; 0 means
	// unlimited.
	perHostCx int64

	releaseCx, releaseRetry func() // bound once: handing them out does not allocate
	freed                   broadcast

	// high is the HIGH priority breakers, set on the DEFAULT ones (the
	// cluster's res); nil on the HIGH ones. Without HIGH thresholds in the
	// config it is made at the first HIGH priority request (Cluster.highRes):
	// most clusters never see one.
	high atomic.Pointer[resources]
}

// retryBudget is a priority's retry_budget: budget_percent of the active
// and pending requests may retry, at least min_retry_concurrency.
type retryBudget struct {
	percent        float64
	minConcurrency int64
}

// Prioritized is implemented by a request context that carries its route's
// priority (the router's pool context); Pool.Get and H2Pool use the
// cluster's HIGH circuit breakers when HighPriority is true.
type Prioritized interface{ HighPriority() bool }

type highPriorityKey struct{}

// WithHighPriority marks ctx as a request of a route with priority HIGH, for
// contexts that cannot implement Prioritized (HTTP/2 request contexts).
func WithHighPriority(ctx context.Context) context.Context {
	return context.WithValue(ctx, highPriorityKey{}, true)
}

// resFor is the circuit breakers of the priority ctx carries (nil: DEFAULT).
// It does not allocate.
func (c *Cluster) resFor(ctx context.Context) *resources {
	if ctx == nil {
		return c.res
	}
	if p, ok := ctx.(Prioritized); ok {
		if p.HighPriority() {
			return c.highRes()
		}
		return c.res
	}
	if hi, _ := ctx.Value(highPriorityKey{}).(bool); hi {
		return c.highRes()
	}
	return c.res
}

// notifyFreed wakes the waiters of both priorities: connections and their
// idle lists are shared, so room freed by one can serve the other.
func (r *resources) notifyFreed() {
	r.freed.notify()
	if h := r.high.Load(); h != nil {
		h.freed.notify()
	}
}

// newResources is the breakers of one priority's thresholds t (nil: the
// defaults), without their gauges (see fillGauges).
func newResources(t *clusterv3.CircuitBreakers_Thresholds) *resources {
	r := &resources{}
	r.cx.max, r.pending.max, r.rq.max, r.retries.max = DefaultMaxConnections, DefaultMaxPendingRequests, DefaultMaxRequests, DefaultMaxRetries
	if v := t.GetMaxConnections(); v != nil {
		r.cx.max = int64(v.GetValue())
	}
	if v := t.GetMaxPendingRequests(); v != nil {
		r.pending.max = int64(v.GetValue())
	}
	if v := t.GetMaxRequests(); v != nil {
		r.rq.max = int64(v.GetValue())
	}
	if v := t.GetMaxRetries(); v != nil {
		r.retries.max = int64(v.GetValue())
	}
	if b := t.GetRetryBudget(); b != nil {
		r.budget = &retryBudget{percent: defaultBudgetPercent, minConcurrency: defaultMinRetryConcurrent}
		if p := b.GetBudgetPercent(); p != nil {
			r.budget.percent = p.GetValue()
		}
		if m := b.GetMinRetryConcurrency(); m != nil {
			r.budget.minConcurrency = int64(m.GetValue())
		}
	}
	r.releaseRetry = r.retries.release // releaseCx: Cluster.bindRelease
	return r
}

// breakerLayouts[d][h] are the circuit_breakers.{default,high}.* gauges of a
// cluster, d and h telling whether that priority tracks remaining: one block
// per cluster for both priorities.
var breakerLayouts = func() (out [2][2]*stats.Layout) {
	for d := range 2 {
		for h := range 2 {
			out[d][h] = stats.LayoutOf(fillBreakers(&resources{}, d == 1, &resources{}, h == 1))
		}
	}
	return out
}()

// fillBreakers sets the gauges of the DEFAULT (def) and HIGH (high)
// breakers: the open ones, and with track_remaining the remaining_* ones.
func fillBreakers(def *resources, defRemaining bool, high *resources, highRemaining bool) stats.FillFunc {
	return func(_ func(string) *stats.Counter, g func(string) *stats.Gauge) {
		def.fillGauges(&breakerGaugeNames[0], defRemaining, g)
		high.fillGauges(&breakerGaugeNames[1], highRemaining, g)
	}
}

// breakerGaugeNames[p][i] are the open and remaining gauge names of
// priority p (default, high) for cx, pending, rq, retries and (i = 4) pools.
var breakerGaugeNames = func() (out [2][5][2]string) {
	names := [5][2]string{{"cx_open", "remaining_cx"}, {"rq_pending_open", "remaining_pending"},
		{"rq_open", "remaining_rq"}, {"rq_retry_open", "remaining_retries"}, {"cx_pool_open", "remaining_cx_pools"}}
	for p, prio := range []string{"default.", "high."} {
		for i, n := range names {
			out[p][i] = [2]string{prio + n[0], prio + n[1]}
		}
	}
	return out
}()

func (r *resources) fillGauges(names *[5][2]string, remaining bool, g func(string) *stats.Gauge) {
	for i, x := range [...]*resource{&r.cx, &r.pending, &r.rq, &r.retries, nil} {
		open := g(names[i][0])
		var rest *stats.Gauge
		if remaining {
			rest = g(names[i][1])
		}
		if x != nil { // the connection pool gauges are not tracked yet
			x.open, x.remaining = open, rest
		}
	}
}

// compileCircuitBreakers builds the DEFAULT and HIGH priority breakers
// (Envoy creates the gauges of both). Requests of routes with priority HIGH
// use the HIGH ones (resFor, AdmitRetryPriority).
func compileCircuitBreakers(c *Cluster, cb *clusterv3.CircuitBreakers) {
	var def, high *clusterv3.CircuitBreakers_Thresholds
	for _, t := range cb.GetThresholds() {
		switch t.GetPriority() {
		case corev3.RoutingPriority_DEFAULT:
			if def == nil {
				def = t
			}
		case corev3.RoutingPriority_HIGH:
			if high == nil {
				high = t
			}
		}
	}
	c.res = newResources(def)
	c.bindRelease(c.res)
	dr, hr := def.GetTrackRemaining(), high.GetTrackRemaining()
	var hi *resources
	highPerHost := slices.ContainsFunc(cb.GetPerHostThresholds(), func(t *clusterv3.CircuitBreakers_Thresholds) bool {
		return t.GetPriority() == corev3.RoutingPriority_HIGH
	})
	if high != nil || highPerHost {
		hi = newResources(high)
		c.bindRelease(hi)
		c.res.high.Store(hi)
	}
	// Without HIGH breakers yet, their gauges (which Envoy creates for both
	// priorities) go to a throwaway: they stay 0 until highRes.
	hg := hi
	if hg == nil {
		hg = &resources{}
	}
	c.Stats.Scope().Scope("circuit_breakers").Block(breakerLayouts[b2i(dr)][b2i(hr)]).Fill(fillBreakers(c.res, dr, hg, hr))
	for _, x := range [...]*resource{&c.res.cx, &c.res.pending, &c.res.rq, &c.res.retries, &hg.cx, &hg.pending, &hg.rq, &hg.retries} {
		if x.remaining != nil {
			x.remaining.Set(x.max)
		}
	}
	// per_host_thresholds: only max_connections is supported (as Envoy),
	// the first entry of each priority counting.
	seen := [2]bool{}
	for _, t := range cb.GetPerHostThresholds() {
		// hi is not nil when a HIGH entry exists.
		r, i := c.res, 0
		if t.GetPriority() == corev3.RoutingPriority_HIGH {
			r, i = hi, 1
		}
		if seen[i] {
			continue
		}
		seen[i] = true
		if t.GetMaxConnections() != nil {
			r.perHostCx = int64(t.GetMaxConnections().GetValue())
		}
	}
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// bindRelease sets r's connection release, which wakes the waiters of both
// priorities.
func (c *Cluster) bindRelease(r *resources) {
	r.releaseCx = func() {
		r.cx.release()
		c.res.notifyFreed()
	}
}

// highRes is the cluster's HIGH priority breakers, made at the first call
// when the config has no HIGH thresholds (Envoy's defaults, no
// track_remaining: the gauges only need their open flags).
func (c *Cluster) highRes() *resources {
	if h := c.res.high.Load(); h != nil {
		return h
	}
	h := newResources(nil)
	c.bindRelease(h)
	dr := c.res.cx.remaining != nil
	c.Stats.Scope().Scope("circuit_breakers").Block(breakerLayouts[b2i(dr)][0]).Fill(fillBreakers(&resources{}, dr, h, false))
	if c.res.high.CompareAndSwap(nil, h) {
		return h
	}
	return c.res.high.Load()
}

// hostCxFull reports whether h is at per_host_thresholds max_connections
// (Envoy compares the host's active connections).
func (r *resources) hostCxFull(h *Host) bool {
	return r.perHostCx > 0 && h.StatsView().CxActive.Load() >= r.perHostCx
}

// retryLimit is max_retries, or the retry budget's share of the active and
// pending requests (at least min_retry_concurrency).
func (r *resources) retryLimit() int64 {
	b := r.budget
	if b == nil {
		return r.retries.max
	}
	return max(int64(b.percent/100*float64(r.rq.cur.Load()+r.pending.cur.Load())), b.minConcurrency)
}

// AdmitRetry asks the cluster's max_retries (or retry_budget) circuit
// breaker for one retry. When ok, the caller must call done once the retry
// attempt finishes; when refused it counts upstream_rq_retry_overflow and
// the router must not retry. It does not allocate.
func (c *Cluster) AdmitRetry() (ok bool, done func()) { return c.AdmitRetryPriority(false) }

// AdmitRetryPriority is AdmitRetry for a route of priority HIGH (high) or
// DEFAULT: each priority has its own max_retries and retry_budget.
func (c *Cluster) AdmitRetryPriority(high bool) (ok bool, done func()) {
	r := c.res
	if high {
		r = c.highRes()
	}
	if !r.retries.tryAcquire(r.retryLimit()) {
		c.Stats.UpstreamRqRetryOverflow().Inc()
		return false, nil
	}
	return true, r.releaseRetry
}

// AdmitConnection asks the max_connections circuit breaker for one upstream
// connection, for users that call Dial directly (tcp_proxy); Pool.Get does it
// itself. When refused it counts upstream_cx_overflow. When ok, done must be
// called once the connection closes. It does not allocate.
func (c *Cluster) AdmitConnection() (ok bool, done func()) {
	if !c.res.cx.tryAcquire(c.res.cx.max) {
		c.Stats.UpstreamCxOverflow().Inc()
		return false, nil
	}
	return true, c.res.releaseCx
}

// broadcast wakes every waiter when capacity frees up; notify costs one
// atomic load while nobody waits.
type broadcast struct {
	waiters atomic.Int32
	mu      sync.Mutex
	ch      chan struct{}
}

// register returns the channel the next notify closes; call done after.
func (b *broadcast) register() <-chan struct{} {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.waiters.Add(1)
	if b.ch == nil {
		b.ch = make(chan struct{})
	}
	return b.ch
}

func (b *broadcast) done() { b.waiters.Add(-1) }

func (b *broadcast) notify() {
	if b.waiters.Load() == 0 {
		return
	}
	b.mu.Lock()
	if b.ch != nil {
		close(b.ch)
		b.ch = nil
	}
	b.mu.Unlock()
}

// wait blocks until notified or ctx ends.
func wait(ctx context.Context, ch <-chan struct{}) error {
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
