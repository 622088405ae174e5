package router

import (
	"context"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"

	"github.com/outrider-proxy/outrider/proxy/headers"
	"github.com/outrider-proxy/outrider/proxy/matcher"
	"github.com/outrider-proxy/outrider/proxy/streaminfo"
)

// retryOn is a set of Envoy retry conditions.
type retryOn uint16

const (
	retry5xx retryOn = 1 << iota
	retryGatewayError
	retryReset
	retryConnectFailure
	retryRetriable4xx
	retryRefusedStream
	retryRetriableStatusCodes
	retryRetriableHeaders
	retryGRPCCancelled
	retryGRPCDeadlineExceeded
	retryGRPCInternal
	retryGRPCResourceExhausted
	retryGRPCUnavailable
	retryEnvoyRateLimited
)

var retryOnNames = map[string]retryOn{
	"5xx": retry5xx, "gateway-error": retryGatewayError, "reset": retryReset, "connect-failure": retryConnectFailure,
	"retriable-4xx": retryRetriable4xx, "refused-stream": retryRefusedStream, "retriable-status-codes": retryRetriableStatusCodes,
	"retriable-headers": retryRetriableHeaders, "cancelled": retryGRPCCancelled, "deadline-exceeded": retryGRPCDeadlineExceeded,
	"internal": retryGRPCInternal, "resource-exhausted": retryGRPCResourceExhausted, "unavailable": retryGRPCUnavailable,
	"envoy-ratelimited": retryEnvoyRateLimited,
}

// grpcRetry maps the gRPC retry_on conditions to grpc-status codes.
var grpcRetry = [...]struct {
	on   retryOn
	code string
}{{retryGRPCCancelled, "1"}, {retryGRPCDeadlineExceeded, "4"}, {retryGRPCInternal, "13"},
	{retryGRPCResourceExhausted, "8"}, {retryGRPCUnavailable, "14"}}

func parseRetryOn(s string) retryOn {
	var on retryOn
	for _, part := range strings.Split(s, ",") {
		on |= retryOnNames[strings.TrimSpace(part)]
	}
	return on
}

// retryPolicy is a compiled route retry_policy.
type retryPolicy struct {
	on      retryOn
	retries int
	perTry  time.Duration
	// perTryIdle is per_try_idle_timeout (pertryidle.go); zero: none.
	perTryIdle time.Duration
	base       time.Duration
	max        time.Duration
	statuses   []int
	headers    []*matcher.Header // retriable_headers
	// previousHosts is the previous_hosts retry host predicate: a retry
	// avoids the hosts already tried, within hostAttempts picks.
	previousHosts bool
	hostAttempts  int
	// rate_limited_retry_back_off: the response headers giving the back-off
	// (nil: none) and its max_interval.
	resetHeaders []resetHeader
	rlMax        time.Duration
}

// policies caches compiled retry policies by their proto, which route
// tables keep for their lifetime: reads are lock-free after the first.
var policies sync.Map // *routev3.RetryPolicy -> *retryPolicy

func compileRetry(p *routev3.RetryPolicy) *retryPolicy {
	if p == nil {
		return nil
	}
	if v, ok := policies.Load(p); ok {
		return v.(*retryPolicy)
	}
	rp := &retryPolicy{on: parseRetryOn(p.GetRetryOn()), retries: 1, base: 25 * time.Millisecond}
	if n := p.GetNumRetries(); n != nil {
		rp.retries = int(n.GetValue())
	}
	rp.perTry = p.GetPerTryTimeout().AsDuration()
	rp.perTryIdle = p.GetPerTryIdleTimeout().AsDuration()
	if b := p.GetRetryBackOff(); b != nil {
		// Envoy counts whole milliseconds, at least one.
		rp.base = max(b.GetBaseInterval().AsDuration().Truncate(time.Millisecond), time.Millisecond)
		if b.GetMaxInterval() != nil {
			rp.max = max(b.GetMaxInterval().AsDuration().Truncate(time.Millisecond), time.Millisecond)
		}
	}
	if rp.max == 0 {
		rp.max = 10 * rp.base
	}
	rp.compileRateLimited(p.GetRateLimitedRetryBackOff())
	for _, c := range p.GetRetriableStatusCodes() {
		rp.statuses = append(rp.statuses, int(c))
	}
	for _, hm := range p.GetRetriableHeaders() {
		if m, err := matcher.CompileHeader(hm); err == nil {
			rp.headers = append(rp.headers, m)
		}
	}
	for _, pr := range p.GetRetryHostPredicate() {
		if pr.GetName() == "envoy.retry_host_predicates.previous_hosts" {
			rp.previousHosts = true
		}
	}
	rp.hostAttempts = max(int(p.GetHostSelectionRetryMaxAttempts()), 1)
	policies.Store(p, rp)
	return rp
}

// retriableResponse reports whether an upstream response (its code, a
// trailers-only grpc-status, or retriable_headers) calls for a retry.
func (p *retryPolicy) retriableResponse(code int, resp *headers.Map, on retryOn) bool {
	if resp.Has("x-envoy-ratelimited") {
		// An upstream Envoy rate limited the request: retried only under
		// envoy-ratelimited, whatever the status.
		return on&retryEnvoyRateLimited != 0
	}
	if p.retriableStatus(code, on) {
		return true
	}
	if on&retryRetriableHeaders != 0 {
		for _, m := range p.headers {
			if m.Match(resp) {
				return true
			}
		}
	}
	if gs, ok := resp.Get("grpc-status"); ok {
		for _, g := range grpcRetry {
			if on&g.on != 0 && string(gs) == g.code {
				return true
			}
		}
	}
	return false
}

// retriableStatus reports whether an upstream response code calls for a
// retry under on.
func (p *retryPolicy) retriableStatus(code int, on retryOn) bool {
	switch {
	case on&retry5xx != 0 && code >= 500:
		return true
	case on&retryGatewayError != 0 && (code == 502 || code == 503 || code == 504):
		return true
	case on&retryRetriable4xx != 0 && code == 409:
		return true
	case on&retryRetriableStatusCodes != 0:
		for _, s := range p.statuses {
			if s == code {
				return true
			}
		}
	}
	return false
}

// failure kinds that can be retried before any response.
const (
	failConnect retryOn = retryConnectFailure | retry5xx | retryGatewayError
	failReset   retryOn = retryReset | retry5xx | retryGatewayError
)

// setupRetries reads the route's policy and Envoy's request headers
// (x-envoy-retry-on, x-envoy-max-retries; the connection manager strips
// them from external requests).
func (f *filter) setupRetries(h *headers.Map) {
	f.policy = compileRetry(f.route.RetryPolicy())
	f.retriesLeft, f.retryOnSet = 0, 0
	if f.policy != nil {
		f.retriesLeft, f.retryOnSet = f.policy.retries, f.policy.on
	}
	if v, ok := h.Get("x-envoy-retry-on"); ok {
		f.retryOnSet |= parseRetryOn(string(v))
		if f.policy == nil {
			f.policy = &retryPolicy{retries: 1, base: 25 * time.Millisecond, max: 250 * time.Millisecond}
			f.retriesLeft = 1
		}
	}
	if v, ok := h.Get("x-envoy-max-retries"); ok {
		if n, err := strconv.Atoi(string(v)); err == nil && n >= 0 {
			f.retriesLeft = n
		}
	}
	f.setupHedging()
}

// tryRetry starts another attempt when the policy allows one for why: no
// request body was sent (bodies are not buffered for retries), retries
// remain and the circuit breaker admits it. before runs first (releasing
// the failed attempt). It reports whether it took the request over.
// responseStatus accounts the upstream response status code (host outlier
// report, cluster and host stats) for HTTP/1 and HTTP/2 alike; it reports
// true when the status was retried instead, the response then discarded.
func (f *filter) responseStatus(code int) (retried bool) {
	f.host.ReportResponse(code)
	if f.setCookie != "" {
		f.cb.ResponseHeaders().Add("set-cookie", f.setCookie)
	}
	if f.policy != nil && f.policy.retriableResponse(code, f.cb.ResponseHeaders(), f.retryOnSet) &&
		f.noteRateLimited(f.cb.ResponseHeaders()) && f.tryRetry(f.retryOnSet, func() { f.cluster.Stats.RecordResponse(code); f.release(false) }) {
		return true
	}
	if f.attempts > 1 {
		f.cluster.Stats.UpstreamRqRetrySuccess().Inc()
	}
	f.cluster.Stats.RecordResponse(code)
	if code >= 500 {
		f.host.Stats().RqError.Add(1)
	} else {
		f.host.Stats().RqSuccess.Add(1)
	}
	return false
}

func (f *filter) tryRetry(why retryOn, before func()) bool {
	if f.policy == nil || f.retryOnSet&why == 0 || !(f.noBody || f.replay) {
		return false
	}
	st := f.cluster.Stats
	if f.retriesLeft <= 0 {
		st.UpstreamRqRetryLimitExceeded().Inc()
		f.cb.Info().SetFlag(streaminfo.UpstreamRetryLimitExceeded)
		return false
	}
	ok, done := f.cluster.AdmitRetryPriority(f.highPriority())
	if !ok {
		return false
	}
	defer done()
	if before != nil {
		before()
	}
	f.retriesLeft--
	f.attempts++
	st.UpstreamRqRetry().Inc()
	if !f.backOff() {
		return true
	}
	f.tried = append(f.tried, f.host)
	f.host = f.cluster.ChooseHost(f.lbContext())
	for i := 1; f.policy.previousHosts && i < f.policy.hostAttempts && f.host != nil && slices.Contains(f.tried, f.host); i++ {
		f.host = f.cluster.ChooseHost(f.lbContext())
	}
	if f.host == nil {
		f.cluster.Stats.UpstreamCxNoneHealthy().Inc()
		f.cb.SendLocalReply(503, "no healthy upstream", "no_healthy_upstream", streaminfo.NoHealthyUpstream)
		return true
	}
	f.cb.Info().UpstreamHost = f.host.Addr
	if f.h2on {
		if f.noBody {
			f.h2Send(f.cb.RequestHeaders(), true)
		} else {
			f.h2Replay()
		}
		return true
	}
	if !f.connect() {
		return true
	}
	if err := f.codec.enc.WriteRequestHeaders(f.cb.RequestHeaders(), f.noBody); err != nil {
		f.upstreamFailed(err, false)
		return true
	}
	if !f.noBody {
		// Replay the body read so far; the rest (if any) follows.
		if len(f.body) > 0 || f.reqComplete {
			if err := f.codec.enc.WriteData(f.body, f.reqComplete); err != nil {
				f.upstreamFailed(err, false)
				return true
			}
		}
		if !f.reqComplete {
			if err := f.codec.enc.Flush(); err != nil {
				f.upstreamFailed(err, false)
			} else {
				f.h1StartReader() // the rest of the body follows while the response may start
			}
			return true
		}
	}
	f.sendAndAwait()
	return true
}

// keepForReplay keeps the request body for a retry while it fits the
// buffer limit, as Envoy buffers retried request bodies.
func (f *filter) keepForReplay(p []byte, end bool) {
	if end {
		f.reqComplete = true
	}
	if !f.replay {
		return
	}
	if len(f.body)+len(p) > f.cb.BufferLimit() {
		f.replay, f.body = false, f.body[:0] // too big: no retries for this request
		return
	}
	f.body = append(f.body, p...)
}

// lazyCtx is a request's context for the connection pool: free on the
// pool's fast path (an idle connection; nothing calls it), a real context
// with the route's deadline once the pool waits or dials.
type lazyCtx struct {
	deadline time.Time
	parent   context.Context // the client's stream; nil: Background
	ctx      context.Context
	cancel   context.CancelFunc
	high     bool // the route's priority is HIGH (upstream.Prioritized)
	// down is the downstream connection (transport.DownstreamCarrier: a
	// PROXY protocol upstream carries its addresses); nil: none.
	down *streaminfo.Conn
}

// HighPriority implements upstream.Prioritized: the pool applies the
// cluster's HIGH circuit breakers to a route of priority HIGH.
func (c *lazyCtx) HighPriority() bool { return c.high }

// DownstreamConn implements transport.DownstreamCarrier.
func (c *lazyCtx) DownstreamConn() *streaminfo.Conn { return c.down }

func (c *lazyCtx) real() context.Context {
	if c.ctx == nil {
		parent := c.parent
		if parent == nil {
			parent = context.Background()
		}
		if c.deadline.IsZero() {
			c.ctx, c.cancel = context.WithCancel(parent)
		} else {
			c.ctx, c.cancel = context.WithDeadline(parent, c.deadline)
		}
	}
	return c.ctx
}

func (c *lazyCtx) Deadline() (time.Time, bool) { return c.real().Deadline() }
func (c *lazyCtx) Done() <-chan struct{}       { return c.real().Done() }
func (c *lazyCtx) Err() error                  { return c.real().Err() }
func (c *lazyCtx) Value(k any) any             { return c.real().Value(k) }

// reset prepares the context for a pool wait bounded by deadline (zero:
// none) and cancelled with parent (nil: never), cancelling the previous
// one. Callers reset it again (to none) as soon as the wait is over: an
// HTTP/2 client stream's context (parent) is valid only while its stream
// runs, and cancelling a context derived from it touches it (removeChild),
// so that must not happen after the stream ended.
func (c *lazyCtx) reset(deadline time.Time, parent context.Context) {
	if c.cancel != nil {
		c.cancel()
	}
	*c = lazyCtx{deadline: deadline, parent: parent}
}
