package router

import (
	"time"

	"github.com/outrider-proxy/outrider/proxy/streaminfo"
	"github.com/outrider-proxy/outrider/proxy/upstream"
)

// The retry policy's per_try_idle_timeout, as Envoy's router enforces it:
// the timer starts once the whole request went upstream on a connection
// (like per_try_timeout), every upstream response read (headers, body)
// restarts it, and, unlike per_try_timeout, it keeps running while the
// response streams to the client. When it fires the try is reset, counted
// in upstream_rq_per_try_idle_timeout (and the host's rq_timeout, and as a
// local-origin timeout for outlier detection), and retried as a reset under
// retry_on; without a retry the client gets 504 "upstream request timeout"
// (UT), or a reset once the response started.

// armTryIdle is the HTTP/2 attempt timer's kind for the per-try idle
// timeout (h2.go's armNone ... armIdle).
const armTryIdle = armIdle + 1

// tryIdle is the per-try idle timer of the attempt in flight.
type tryIdle struct {
	// attempt is the attempt (filter.attempts) whose request was sent with
	// the timer running; zero: not running.
	attempt int
	// armed says the upstream read deadline (or HTTP/2 timer) set last is
	// the per-try idle timeout's.
	armed bool
}

// startTryIdle starts the per-try idle timer at the end of the request
// (requestSent, h2Timers); it does nothing without a per_try_idle_timeout.
func (f *filter) startTryIdle() {
	f.ti = tryIdle{}
	if f.policy != nil && f.policy.perTryIdle > 0 {
		f.ti.attempt = f.attempts
	}
}

// tryIdleEnd returns the per-try idle timeout's end counted from now and
// true when it runs for this attempt and comes before d (zero: no other
// deadline); it records which deadline is armed.
func (f *filter) tryIdleEnd(d time.Time) (time.Time, bool) {
	f.ti.armed = false
	if f.ti.attempt == 0 || f.ti.attempt != f.attempts || f.policy == nil {
		return d, false
	}
	t := time.Now().Add(f.policy.perTryIdle)
	if !d.IsZero() && !t.Before(d) {
		return d, false
	}
	f.ti.armed = true
	return t, true
}

// perTryIdleExpired handles an expired per-try idle timeout (the attempt
// was released): Envoy's onPerTryIdleTimeout.
func (f *filter) perTryIdleExpired() {
	f.ti = tryIdle{}
	f.cluster.Stats.UpstreamRqPerTryIdleTimeout().Inc()
	f.host.Stats().RqTimeout.Add(1)
	f.host.ReportResult(upstream.ResultTimeout)
	if f.cb.ResponseStarted() {
		f.cb.ResetStream(streaminfo.UpstreamRequestTimeout)
		return
	}
	if f.tryRetry(failReset, nil) {
		return
	}
	f.cluster.Stats.RecordResponse(504)
	f.host.Stats().RqError.Add(1)
	f.cb.SendLocalReply(504, "upstream request timeout", "upstream_per_try_idle_timeout", streaminfo.UpstreamRequestTimeout)
}
