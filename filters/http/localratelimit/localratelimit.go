// Package localratelimit is Envoy's local rate limit HTTP filter
// (envoy.filters.http.local_ratelimit): a token bucket shared by every
// stream of the config (or one per downstream connection) answers requests
// beyond its rate with a local reply, 429 by default. typed_per_filter_config
// (a LocalRateLimit with its own token bucket and stats) replaces the
// filter's config for a route, the most specific level winning.
package localratelimit

import (
	"errors"
	"math/rand/v2"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	lrlv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/local_ratelimit/v3"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/outrider-proxy/outrider/proxy/confcheck"
	"github.com/outrider-proxy/outrider/proxy/headers"
	"github.com/outrider-proxy/outrider/proxy/httpfilter"
	"github.com/outrider-proxy/outrider/proxy/router"
	"github.com/outrider-proxy/outrider/proxy/runtime"
	"github.com/outrider-proxy/outrider/proxy/streaminfo"
	"github.com/outrider-proxy/outrider/telemetry/formatter"
	"github.com/outrider-proxy/outrider/telemetry/stats"
)

// Name is the filter's Envoy name; typed_per_filter_config is looked up
// under it.
const Name = "envoy.filters.http.local_ratelimit"

func init() {
	httpfilter.Registry.Register(Name, []string{"envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit"},
		httpfilter.Factory{Create: create})
}

// limiter is one compiled LocalRateLimit: the filter's own, or a route's.
type limiter struct {
	// enabled and enforced are filter_enabled and filter_enforced; nil
	// means off (Envoy's default for both).
	enabled, enforced *corev3.RuntimeFractionalPercent
	status            int
	// shared is the bucket of every stream; nil without token_bucket (all
	// requests allowed). perConn is set instead with
	// local_rate_limit_per_downstream_connection.
	shared  *bucket
	perConn *connBuckets
	// denyAll: max_tokens 0, or a per-route config that does not compile.
	denyAll bool

	respHeaders, reqHeaders router.HeadersToAdd
	grpcExhausted           bool // rate_limited_as_resource_exhausted

	statEnabled, statEnforced, statLimited, statOK *stats.Counter
}

// supported are the LocalRateLimit fields outrider honours; descriptors,
// rate_limits, x-ratelimit headers and local_cluster_rate_limit are refused.
var supported = []string{
	"stat_prefix", "status", "token_bucket", "filter_enabled", "filter_enforced",
	"request_headers_to_add_when_not_enforced", "response_headers_to_add",
	"local_rate_limit_per_downstream_connection", "rate_limited_as_resource_exhausted",
}

func compile(m *lrlv3.LocalRateLimit, store *stats.Store, perRoute bool) (*limiter, error) {
	if err := confcheck.Fields(m, "", supported...); err != nil {
		return nil, err
	}
	if m.GetStatPrefix() == "" {
		return nil, errors.New("stat_prefix: required")
	}
	l := &limiter{enabled: m.GetFilterEnabled(), enforced: m.GetFilterEnforced(), status: 429,
		grpcExhausted: m.GetRateLimitedAsResourceExhausted()}
	if c := m.GetStatus().GetCode(); c >= 400 {
		l.status = int(c)
	}
	tb := m.GetTokenBucket()
	if tb == nil && perRoute {
		return nil, errors.New("token_bucket: local rate limit token bucket must be set for per filter configs")
	}
	if tb != nil {
		if err := tb.GetFillInterval().CheckValid(); err != nil || tb.GetFillInterval().AsDuration() <= 0 {
			return nil, errors.New("token_bucket.fill_interval: required, above 0")
		}
		if tb.GetTokensPerFill() != nil && tb.GetTokensPerFill().GetValue() == 0 {
			return nil, errors.New("token_bucket.tokens_per_fill: must be above 0")
		}
		interval := tb.GetFillInterval().AsDuration().Truncate(time.Millisecond)
		perFill := uint32(1)
		if v := tb.GetTokensPerFill(); v != nil {
			perFill = v.GetValue()
		}
		switch {
		case tb.GetMaxTokens() == 0:
			l.denyAll = true
		case interval < 50*time.Millisecond:
			return nil, errors.New("token_bucket.fill_interval: local rate limit token bucket fill timer must be >= 50ms")
		case m.GetLocalRateLimitPerDownstreamConnection():
			l.perConn = &connBuckets{maxTokens: tb.GetMaxTokens(), perFill: perFill, interval: interval}
		default:
			l.shared = newBucket(tb.GetMaxTokens(), perFill, interval)
		}
	}
	var err error
	if l.respHeaders, err = router.CompileHeadersToAdd(m.GetResponseHeadersToAdd(), "response_headers_to_add"); err != nil {
		return nil, err
	}
	if l.reqHeaders, err = router.CompileHeadersToAdd(m.GetRequestHeadersToAddWhenNotEnforced(), "request_headers_to_add_when_not_enforced"); err != nil {
		return nil, err
	}
	p := m.GetStatPrefix() + ".http_local_rate_limit."
	l.statEnabled, l.statEnforced = store.Counter(p+"enabled"), store.Counter(p+"enforced")
	l.statLimited, l.statOK = store.Counter(p+"rate_limited"), store.Counter(p+"ok")
	return l, nil
}

// config is the filter's compiled config, shared by every stream.
type config struct {
	*limiter
	store *stats.Store
	// perRoute caches the compiled per-route configs, with their buckets,
	// by the route's Any; denying stands for one that does not compile.
	perRoute httpfilter.PerRoute[*anypb.Any, *limiter]
	denying  *limiter
}

func create(ctx *httpfilter.Context, a *anypb.Any) (httpfilter.Config, error) {
	m := &lrlv3.LocalRateLimit{}
	if err := httpfilter.UnmarshalConfig(a, m); err != nil {
		return nil, err
	}
	store := ctx.StatsStore()
	l, err := compile(m, store, false)
	if err != nil {
		return nil, err
	}
	denying := *l
	denying.denyAll, denying.shared, denying.perConn = true, nil, nil
	return &config{limiter: l, store: store, denying: &denying}, nil
}

// routeLimiter is the per-route config a, compiled once with its own
// bucket. One that does not compile (the route table was accepted without
// knowing this filter) rejects every request: failing closed is the safe
// reading of a broken limit.
func (c *config) routeLimiter(a *anypb.Any) *limiter {
	return c.perRoute.Get(a, c.compileRoute, c.denying)
}

// compileRoute compiles the per-route LocalRateLimit in a.
func (c *config) compileRoute(a *anypb.Any) (*limiter, error) {
	m := &lrlv3.LocalRateLimit{}
	if err := a.UnmarshalTo(m); err != nil {
		return nil, err
	}
	return compile(m, c.store, true)
}

func (c *config) New(cb httpfilter.Callbacks) any { return &filter{cfg: c, cb: cb} }

type filter struct {
	cfg *config
	cb  httpfilter.Callbacks
}

// Reset lets the connection manager reuse the filter.
func (f *filter) Reset() {}

// on is Envoy's Runtime::FractionalPercent::enabled for an optional field.
func on(p *corev3.RuntimeFractionalPercent) bool {
	return p != nil && runtime.Process().FeatureEnabled(p.GetRuntimeKey(), p.GetDefaultValue(), rand.Uint64())
}

// allowed takes a token from the stream's bucket.
func (l *limiter) allowed(info *streaminfo.Stream) bool {
	switch {
	case l.denyAll:
		return false
	case l.perConn != nil:
		var id uint64
		if info != nil && info.Conn != nil {
			id = info.Conn.ID
		}
		return l.perConn.get(id).consume()
	case l.shared != nil:
		return l.shared.consume()
	}
	return true
}

// DecodeHeaders is Envoy's local rate limit Filter::decodeHeaders.
func (f *filter) DecodeHeaders(h *headers.Map, _ bool) httpfilter.Status {
	l := f.cfg.limiter
	if r := f.cb.Route(); r != nil {
		if a := r.PerFilterConfig(Name); a != nil {
			l = f.cfg.routeLimiter(a)
		}
	}
	if !on(l.enabled) {
		return httpfilter.Continue
	}
	l.statEnabled.Inc()
	info := f.cb.Info()
	if l.allowed(info) {
		l.statOK.Inc()
		return httpfilter.Continue
	}
	l.statLimited.Inc()
	ctx := formatter.Context{Stream: info, Request: h}
	if !on(l.enforced) {
		l.reqHeaders.Apply(h, &ctx)
		return httpfilter.Continue
	}
	l.statEnforced.Inc()
	if !l.respHeaders.Empty() {
		// The local reply's headers start empty, as Envoy's do when its
		// modify_headers callback evaluates them.
		var rh headers.Map
		l.respHeaders.Apply(&rh, &ctx)
		for _, fl := range rh.Fields() {
			f.cb.AddLocalReplyHeader(string(fl.Name), string(fl.Value))
		}
	}
	if ct, _ := h.Get("content-type"); l.grpcExhausted && headers.IsGRPC(ct) {
		f.cb.AddLocalReplyHeader("grpc-status", "8") // RESOURCE_EXHAUSTED
	}
	f.cb.SendLocalReply(l.status, "local_rate_limited", "local_rate_limited", streaminfo.RateLimited)
	return httpfilter.Stop
}

func (f *filter) DecodeData([]byte, bool) httpfilter.Status     { return httpfilter.Continue }
func (f *filter) DecodeTrailers(*headers.Map) httpfilter.Status { return httpfilter.Continue }
