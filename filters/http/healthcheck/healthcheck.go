// Package healthcheck is Envoy's health check HTTP filter
// (envoy.filters.http.health_check): requests matching its headers are
// health checks, answered 200 by the filter itself (503 once the server
// fails health checks through the admin's /healthcheck/fail, or when a
// cluster in cluster_min_healthy_percentages is below its share), or in
// pass_through_mode forwarded, with the upstream's answer cached for
// cache_time. Other responses carry x-envoy-immediate-health-check-fail
// while the server fails health checks; the filter has no stats, as Envoy's.
package healthcheck

import (
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	hcv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/health_check/v3"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/outrider-proxy/outrider/proxy/confcheck"
	"github.com/outrider-proxy/outrider/proxy/headers"
	"github.com/outrider-proxy/outrider/proxy/httpfilter"
	"github.com/outrider-proxy/outrider/proxy/matcher"
	"github.com/outrider-proxy/outrider/proxy/streaminfo"
	"github.com/outrider-proxy/outrider/proxy/upstream"
	"github.com/outrider-proxy/outrider/telemetry/stats"
)

// Name is the filter's Envoy name.
const Name = "envoy.filters.http.health_check"

func init() {
	httpfilter.Registry.Register(Name, []string{"envoy.extensions.filters.http.health_check.v3.HealthCheck"},
		httpfilter.Factory{Create: create})
}

// LiveGauge is the gauge whose 0 means the server fails health checks:
// Envoy's server.live, which /healthcheck/fail sets to 0 and
// /healthcheck/ok back to 1. A store where it was never set reads as live.
const LiveGauge = "server.live"

// minHealthy is one cluster_min_healthy_percentages entry.
type minHealthy struct {
	cluster string
	percent uint64
}

// config is the compiled filter, shared by every stream of the chain.
type config struct {
	passThrough bool
	match       []*matcher.Header
	live        *stats.Gauge
	clusters    *upstream.Manager // nil: no cluster is found
	minHealthy  []minHealthy      // sorted by cluster name
	// localCluster is the node's cluster, for
	// x-envoy-upstream-healthchecked-cluster.
	localCluster string
	cache        *cache // nil without cache_time
}

func create(ctx *httpfilter.Context, a *anypb.Any) (httpfilter.Config, error) {
	m := &hcv3.HealthCheck{}
	if err := httpfilter.UnmarshalConfig(a, m); err != nil {
		return nil, err
	}
	if err := confcheck.Fields(m, "", "pass_through_mode", "cache_time", "cluster_min_healthy_percentages", "headers"); err != nil {
		return nil, err
	}
	if m.GetPassThroughMode() == nil {
		return nil, errors.New("pass_through_mode: required")
	}
	c := &config{passThrough: m.GetPassThroughMode().GetValue(), clusters: ctx.Clusters}
	if ct := m.GetCacheTime(); ct != nil {
		if err := ct.CheckValid(); err != nil {
			return nil, fmt.Errorf("cache_time: %w", err)
		}
		if d := ct.AsDuration().Truncate(time.Millisecond); d > 0 {
			if !c.passThrough {
				return nil, errors.New("cache_time: cache_time_ms must not be set when path_through_mode is disabled")
			}
			c.cache = &cache{period: d, start: time.Now()}
		}
	}
	for i, h := range m.GetHeaders() {
		hm, err := matcher.CompileHeader(h)
		if err != nil {
			return nil, fmt.Errorf("headers[%d].%w", i, err)
		}
		c.match = append(c.match, hm)
	}
	for name, p := range m.GetClusterMinHealthyPercentages() {
		v := p.GetValue()
		if v < 0 || v > 100 {
			return nil, fmt.Errorf("cluster_min_healthy_percentages[%q]: %v not in [0, 100]", name, v)
		}
		c.minHealthy = append(c.minHealthy, minHealthy{cluster: name, percent: uint64(v)})
	}
	sort.Slice(c.minHealthy, func(i, j int) bool { return c.minHealthy[i].cluster < c.minHealthy[j].cluster })
	if ctx.Clusters != nil {
		c.localCluster = ctx.Clusters.Node.GetCluster()
	}
	store := ctx.StatsStore()
	c.live = store.Gauge(LiveGauge)
	return c, nil
}

// failed is the server's healthCheckFailed().
func (c *config) failed() bool { return c.live.Used() && c.live.Value() == 0 }

// cache is Envoy's HealthCheckCacheManager: a response stays in use from
// when it is stored until the clearing timer, which fires every period from
// the filter's creation, next fires.
type cache struct {
	period time.Duration
	start  time.Time

	mu       sync.Mutex
	use      bool
	tick     int64 // the period the response was stored in
	status   int
	degraded bool
}

func (k *cache) now() int64 { return int64(time.Since(k.start) / k.period) }

func (k *cache) set(status int, degraded bool) {
	k.mu.Lock()
	k.use, k.tick, k.status, k.degraded = true, k.now(), status, degraded
	k.mu.Unlock()
}

// get returns the stored response while it is in use.
func (k *cache) get() (status int, degraded, ok bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if !k.use || k.tick != k.now() {
		k.use = false
		return 0, false, false
	}
	return k.status, k.degraded, true
}

func (c *config) New(cb httpfilter.Callbacks) any { return &filter{cfg: c, cb: cb} }

// filter is one stream's health check state.
type filter struct {
	cfg *config
	cb  httpfilter.Callbacks
	// hc: the request is a health check; handling: the filter answers it.
	hc, handling bool
	// cached is the cache's answer, taken when the request was matched.
	cachedStatus   int
	cachedDegraded bool
	cached         bool
}

// Reset lets the connection manager reuse the filter.
func (f *filter) Reset() { *f = filter{cfg: f.cfg, cb: f.cb} }

// matches is HeaderUtility::matchHeaders: every matcher must match (none
// matches every request).
func (f *filter) matches(h *headers.Map) bool {
	for _, m := range f.cfg.match {
		if !m.Match(h) {
			return false
		}
	}
	return true
}

// DecodeHeaders is HealthCheckFilter::decodeHeaders.
func (f *filter) DecodeHeaders(h *headers.Map, end bool) httpfilter.Status {
	if f.matches(h) {
		f.hc = true
		if f.cfg.cache != nil {
			f.cachedStatus, f.cachedDegraded, f.cached = f.cfg.cache.get()
		}
		if !f.cfg.passThrough || f.cfg.failed() || f.cached {
			f.handling = true
		}
	}
	if end && f.handling {
		f.complete()
	}
	if f.handling {
		return httpfilter.Stop
	}
	return httpfilter.Continue
}

func (f *filter) DecodeData(_ []byte, end bool) httpfilter.Status {
	if end && f.handling {
		f.complete()
	}
	if f.handling {
		return httpfilter.Stop
	}
	return httpfilter.Continue
}

func (f *filter) DecodeTrailers(*headers.Map) httpfilter.Status {
	if f.handling {
		f.complete()
		return httpfilter.Stop
	}
	return httpfilter.Continue
}

// complete is HealthCheckFilter::onComplete: the filter's own answer.
func (f *filter) complete() {
	status, details, degraded := 200, "health_check_ok", false
	var flag streaminfo.ResponseFlag
	switch {
	case f.cfg.failed():
		status, details, flag = 503, "health_check_failed", streaminfo.FailedLocalHealthCheck
	case f.cached:
		status, details, degraded = f.cachedStatus, "health_check_cached", f.cachedDegraded
	case len(f.cfg.minHealthy) > 0:
		status, details = f.clustersHealthy()
	}
	if status < 200 || status > 299 {
		flag = streaminfo.FailedLocalHealthCheck
	}
	if degraded {
		f.cb.AddLocalReplyHeader("x-envoy-degraded", "")
	}
	f.cb.SendLocalReply(status, "", details, flag)
}

// clustersHealthy checks cluster_min_healthy_percentages: each cluster must
// exist and have at least its share of hosts healthy or degraded.
func (f *filter) clustersHealthy() (int, string) {
	for _, mh := range f.cfg.minHealthy {
		var cl *upstream.Cluster
		if f.cfg.clusters != nil {
			cl = f.cfg.clusters.Get(mh.cluster)
		}
		if cl == nil {
			return 503, "health_check_failed_no_cluster_found"
		}
		total := uint64(cl.Stats.MembershipTotal().Value())
		if total == 0 {
			if mh.percent == 0 {
				continue
			}
			return 503, "health_check_failed_cluster_empty"
		}
		up := uint64(cl.Stats.MembershipHealthy().Value() + cl.Stats.MembershipDegraded().Value())
		if 100*up < total*mh.percent {
			return 503, "health_check_failed_cluster_unhealthy"
		}
	}
	return 200, "health_check_ok_cluster_healthy"
}

// EncodeHeaders is HealthCheckFilter::encodeHeaders: a health check's
// response is cached and names the node's cluster; any other response
// tells a failing server's callers to stop at once.
func (f *filter) EncodeHeaders(h *headers.Map, _ bool) httpfilter.Status {
	if f.hc {
		if f.cfg.cache != nil {
			f.cfg.cache.set(h.StatusCode(), h.Has("x-envoy-degraded"))
		}
		h.Set("x-envoy-upstream-healthchecked-cluster", f.cfg.localCluster)
	} else if f.cfg.failed() {
		h.Set("x-envoy-immediate-health-check-fail", "true")
	}
	return httpfilter.Continue
}

func (f *filter) EncodeData([]byte, bool) httpfilter.Status     { return httpfilter.Continue }
func (f *filter) EncodeTrailers(*headers.Map) httpfilter.Status { return httpfilter.Continue }
