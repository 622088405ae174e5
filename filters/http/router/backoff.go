package router

import (
	"math/rand/v2"
	"strconv"
	"strings"
	"time"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"

	"github.com/outrider-proxy/outrider/proxy/headers"
	"github.com/outrider-proxy/outrider/proxy/streaminfo"
)

// resilience is the router filter's per-stream state for retry back-off,
// hedging and mirroring; the zero value is a stream that has none yet.
type resilience struct {
	// nextBackoff is the ceiling of the next exponential back-off (Envoy's
	// JitteredExponentialBackOffStrategy); zero: the policy's base.
	nextBackoff time.Duration
	// rateLimited is the interval a reset header of the last response
	// asked for, used by the next retry only; zero: none.
	rateLimited time.Duration
	// hedge: the request hedges on per-try timeouts (hedge.go).
	hedge bool
	// shadows are the mirrored requests whose bodies are being streamed.
	shadows []*shadow
}

// resetHeader is a compiled rate_limited_retry_back_off.reset_headers entry.
type resetHeader struct {
	name string // lower-cased
	unix bool   // UNIX_TIMESTAMP; else SECONDS
}

// defaultRateLimitedMax is Envoy's default rate_limited_retry_back_off
// max_interval.
const defaultRateLimitedMax = 300 * time.Second

func (p *retryPolicy) compileRateLimited(rl *routev3.RetryPolicy_RateLimitedRetryBackOff) {
	if rl == nil {
		return
	}
	for _, h := range rl.GetResetHeaders() {
		p.resetHeaders = append(p.resetHeaders, resetHeader{
			name: strings.ToLower(h.GetName()),
			unix: h.GetFormat() == routev3.RetryPolicy_UNIX_TIMESTAMP,
		})
	}
	p.rlMax = defaultRateLimitedMax
	if d := rl.GetMaxInterval(); d != nil {
		p.rlMax = d.AsDuration()
	}
}

// rateLimitedInterval is Envoy's parseRateLimitedResetInterval: the first
// reset header (in config order) that parses to an interval within
// max_interval. SECONDS is a count of seconds; UNIX_TIMESTAMP is a time in
// whole seconds, and a time in the past gives nothing. Only the first value
// of a header counts.
func (p *retryPolicy) rateLimitedInterval(resp *headers.Map, now time.Time) (time.Duration, bool) {
	for _, rh := range p.resetHeaders {
		v, ok := resp.Get(rh.name)
		if !ok {
			continue
		}
		n, err := strconv.ParseUint(strings.TrimSpace(string(v)), 10, 63)
		if err != nil {
			continue
		}
		if rh.unix {
			nowSec := uint64(now.Unix())
			if n < nowSec {
				continue
			}
			n -= nowSec
		}
		if n > uint64(p.rlMax/time.Second)+1 {
			continue // also keeps the multiplication below from overflowing
		}
		if d := time.Duration(n) * time.Second; d <= p.rlMax {
			return d, true
		}
	}
	return 0, false
}

// noteRateLimited remembers the back-off a retriable response's reset
// headers ask for (more than one millisecond, as Envoy), for the retry that
// follows. It always reports true so it can sit in a condition chain.
func (f *filter) noteRateLimited(resp *headers.Map) bool {
	f.res.rateLimited = 0
	if len(f.policy.resetHeaders) > 0 {
		if d, ok := f.policy.rateLimitedInterval(resp, time.Now()); ok && d > time.Millisecond {
			f.res.rateLimited = d
		}
	}
	return true
}

// nextBackOff is the wait before the next retry, counted in Envoy's stats:
// after a rate-limited response, a random time in [interval, 1.5 interval)
// (JitteredLowerBoundBackOffStrategy, upstream_rq_retry_backoff_ratelimited);
// otherwise a random time below a ceiling that starts at base_interval and
// doubles per retry up to max_interval (JitteredExponentialBackOffStrategy,
// upstream_rq_retry_backoff_exponential). rnd(n) returns [0, n).
func (f *filter) nextBackOff(rnd func(int64) int64) time.Duration {
	st := f.cluster.Stats
	if rl := f.res.rateLimited; rl > 0 {
		f.res.rateLimited = 0 // valid for the response that sent it only
		st.UpstreamRqRetryBackoffRateLim().Inc()
		ms := rl.Milliseconds()
		return time.Duration(ms+rnd(max(ms>>1, 1))) * time.Millisecond
	}
	p := f.policy
	cur := f.res.nextBackoff
	if cur == 0 {
		cur = max(p.base, time.Millisecond)
	}
	if cur >= p.max/2 {
		f.res.nextBackoff = p.max
	} else {
		f.res.nextBackoff = cur * 2
	}
	st.UpstreamRqRetryBackoffExp().Inc()
	return min(time.Duration(rnd(max(cur.Milliseconds(), 1)))*time.Millisecond, p.max)
}

// backOff waits before a retry. When the route timeout ends first it
// answers 504 UT as Envoy's global timeout does during a back-off, and
// reports false.
func (f *filter) backOff() bool {
	d := f.nextBackOff(rand.Int64N)
	if !f.deadline.IsZero() && !time.Now().Add(d).Before(f.deadline) {
		time.Sleep(time.Until(f.deadline))
		f.cluster.Stats.UpstreamRqTimeout().Inc()
		f.cb.SendLocalReply(504, "upstream request timeout", "upstream_response_timeout", streaminfo.UpstreamRequestTimeout)
		return false
	}
	if d > 0 {
		time.Sleep(d)
	}
	return true
}
