package router

import (
	"errors"
	"math/rand/v2"
	"os"
	"slices"
	"time"

	"github.com/outrider-proxy/outrider/proxy/streaminfo"
	"github.com/outrider-proxy/outrider/proxy/upstream"
)

// Request hedging (hedge_policy.hedge_on_per_try_timeout, or the
// x-envoy-hedge-on-per-try-timeout request header): when a try's
// per_try_timeout passes before any response, Envoy does not cancel it but
// starts another try (within num_retries, the retry circuit breaker and the
// back-off, whatever retry_on says) and waits for both; the first response
// wins and the other tries are reset. A soft per-try timeout counts for
// outlier detection but not in upstream_rq_per_try_timeout, as Envoy's
// onSoftPerTryTimeout. Only HTTP/1 upstream tries of complete, replayable
// requests hedge.

// hedgeHeader is Envoy's request header that turns hedging on ("true") or
// off ("false") for one request; it is not forwarded.
const hedgeHeader = "x-envoy-hedge-on-per-try-timeout"

// hedgeTry is one upstream try of a hedged request.
type hedgeTry struct {
	pc    *upstream.PooledConn
	codec *upstreamCodec
	host  *upstream.Host
	soft  bool // its per-try timeout passed: it waits for the route timeout now
}

// hedgeResult is a try's wait for response bytes: err nil when some came.
type hedgeResult struct {
	t   *hedgeTry
	err error
}

// setupHedging reads whether the request hedges, and removes Envoy's
// header from it.
func (f *filter) setupHedging() {
	f.res.hedge = f.route.HedgeOnPerTryTimeout()
	h := f.cb.RequestHeaders()
	if v, ok := h.Get(hedgeHeader); ok {
		switch string(v) {
		case "true":
			f.res.hedge = true
		case "false":
			f.res.hedge = false
		}
		h.Del(hedgeHeader)
	}
}

// hedge takes over a try whose per-try timeout passed when the request
// hedges, and reports whether it did; the stream is then answered (or
// reset) when it returns.
func (f *filter) hedge(err error) bool {
	if !f.res.hedge || !f.perTryArmed || !errors.Is(err, os.ErrDeadlineExceeded) || f.h2on || f.policy == nil ||
		f.cb.ResponseStarted() || !(f.noBody || f.replay && f.reqComplete) {
		return false
	}
	h := &hedging{f: f, results: make(chan hedgeResult, f.retriesLeft+1)}
	first := &hedgeTry{pc: f.pc, codec: f.codec, host: f.host}
	f.pc, f.codec = nil, nil
	h.tries = append(h.tries, first)
	h.run(first)
	return true
}

// hedging is the state of one hedged request while its tries race.
type hedging struct {
	f        *filter
	tries    []*hedgeTry // tries still holding a connection
	results  chan hedgeResult
	inflight int         // waits running
	backoff  *time.Timer // the next try's back-off; nil: none pending
	last     *hedgeTry   // the try that failed last, for the final answer
	lastErr  error
	// admitted are the retry circuit breaker's releases of the hedged
	// tries, called when the race ends.
	admitted []func()
}

// end releases the retry circuit breaker's admissions.
func (h *hedging) end() {
	for _, done := range h.admitted {
		done()
	}
	h.admitted = nil
}

func (h *hedging) run(first *hedgeTry) {
	f := h.f
	defer h.end()
	h.softTimeout(first)
	for h.inflight > 0 || h.backoff != nil {
		var fire <-chan time.Time
		if h.backoff != nil {
			fire = h.backoff.C
		}
		select {
		case r := <-h.results:
			h.inflight--
			switch {
			case r.err == nil:
				h.win(r.t)
				return
			case errors.Is(r.err, os.ErrDeadlineExceeded) && !r.t.soft && !h.routeTimedOut():
				h.softTimeout(r.t)
			default:
				h.drop(r.t, r.err)
				if !errors.Is(r.err, os.ErrDeadlineExceeded) && (h.inflight > 0 || h.backoff != nil) {
					// Not the last: the final answer's handling reports the last.
					r.t.host.ReportResult(upstream.ResultRequestFailed)
				}
			}
		case <-fire:
			h.backoff = nil
			h.startTry()
		}
	}
	// No try answered: the last failure is the stream's answer, through
	// the router's usual handling (504 UT after the route timeout).
	if h.last == nil {
		f.cb.SendLocalReply(503, "no healthy upstream", "no_healthy_upstream", streaminfo.NoHealthyUpstream)
		return
	}
	f.pc, f.codec, f.host = h.last.pc, h.last.codec, h.last.host
	f.perTryArmed, f.idleArmed = false, f.deadline.IsZero() && f.idle > 0
	f.policy = nil // hedged tries are not retried again, as Envoy's retried() requests
	f.upstreamFailed(h.lastErr, false)
}

// routeTimedOut reports whether the route timeout has passed.
func (h *hedging) routeTimedOut() bool {
	return !h.f.deadline.IsZero() && !time.Now().Before(h.f.deadline)
}

// softTimeout is Envoy's onSoftPerTryTimeout: t keeps waiting up to the
// route timeout, counted as a timeout for outlier detection, and another
// try is scheduled when the retry policy and breaker allow it.
func (h *hedging) softTimeout(t *hedgeTry) {
	f := h.f
	t.soft = true
	t.host.ReportResult(upstream.ResultTimeout)
	d := f.deadline
	if d.IsZero() && f.idle > 0 {
		d = time.Now().Add(f.idle)
	}
	h.wait(t, d)
	if h.backoff != nil {
		return
	}
	st := f.cluster.Stats
	if f.retriesLeft <= 0 {
		st.UpstreamRqRetryLimitExceeded().Inc()
		f.cb.Info().SetFlag(streaminfo.UpstreamRetryLimitExceeded)
		return
	}
	ok, done := f.cluster.AdmitRetryPriority(f.highPriority())
	if !ok {
		f.cb.Info().SetFlag(streaminfo.UpstreamOverflow)
		return
	}
	h.admitted = append(h.admitted, done)
	f.retriesLeft--
	f.attempts++
	st.UpstreamRqRetry().Inc()
	h.backoff = time.NewTimer(f.nextBackOff(rand.Int64N))
}

// startTry sends the request to another host (previous_hosts honoured)
// and waits for its answer up to its own per-try timeout.
func (h *hedging) startTry() {
	f := h.f
	for _, t := range h.tries {
		f.tried = append(f.tried, t.host)
	}
	host := f.cluster.ChooseHost(f.lbContext())
	for i := 1; f.policy.previousHosts && i < f.policy.hostAttempts && host != nil && slices.Contains(f.tried, host); i++ {
		host = f.cluster.ChooseHost(f.lbContext())
	}
	if host == nil {
		f.cluster.Stats.UpstreamCxNoneHealthy().Inc()
		return
	}
	f.lctx.reset(f.deadline, f.downCtx)
	f.lctx.high, f.lctx.down = f.highPriority(), f.cb.Info().Conn
	pc, err := f.cluster.Pool(host).Get(&f.lctx)
	f.lctx.reset(time.Time{}, nil) // the wait is over: its context must not outlive the client's stream
	if err != nil {
		var overflow *upstream.OverflowError
		if errors.As(err, &overflow) {
			f.cb.Info().SetFlag(streaminfo.UpstreamOverflow)
		} else {
			host.ReportResult(upstream.ResultConnectFailed)
		}
		return
	}
	codec := codecOf(pc, f.cluster)
	t := &hedgeTry{pc: pc, codec: codec, host: host}
	h.tries = append(h.tries, t)
	err = codec.enc.WriteRequestHeaders(f.cb.RequestHeaders(), f.noBody)
	if err == nil && !f.noBody {
		err = codec.enc.WriteData(f.body, true)
	}
	if err == nil {
		err = codec.enc.Flush()
	}
	if err != nil {
		host.ReportResult(upstream.ResultRequestFailed)
		h.drop(t, err)
		return
	}
	d := time.Now().Add(f.policy.perTry)
	if !f.deadline.IsZero() && f.deadline.Before(d) {
		d = f.deadline
	}
	h.wait(t, d)
}

// wait starts a goroutine waiting for t's first response bytes until
// deadline (zero: none); closing t's connection ends it at once.
func (h *hedging) wait(t *hedgeTry, deadline time.Time) {
	_ = t.pc.Conn.SetReadDeadline(deadline)
	h.inflight++
	go func() { h.results <- hedgeResult{t, t.codec.dec.WaitData()} }()
}

// drop releases a failed try's connection, remembering it for the final
// answer when it is the last one.
func (h *hedging) drop(t *hedgeTry, err error) {
	h.tries = slices.DeleteFunc(h.tries, func(x *hedgeTry) bool { return x == t })
	if h.last != nil {
		h.last.pc.Release(false)
	}
	h.last, h.lastErr = t, err
}

// win continues the stream with t's response; every other try is reset.
func (h *hedging) win(t *hedgeTry) {
	f := h.f
	if h.backoff != nil {
		h.backoff.Stop()
		h.backoff = nil
	}
	for _, o := range h.tries {
		if o != t {
			_ = o.pc.Conn.Close()
		}
	}
	for ; h.inflight > 0; h.inflight-- {
		<-h.results // the closed connections' waits end at once
	}
	for _, o := range h.tries {
		if o != t {
			o.pc.Release(false)
		}
	}
	if h.last != nil {
		h.last.pc.Release(false)
	}
	h.end()
	f.pc, f.codec, f.host = t.pc, t.codec, t.host
	f.cb.Info().UpstreamHost = t.host.Addr
	f.tryDeadline = time.Time{}
	f.awaitResponse()
}
