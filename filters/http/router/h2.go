package router

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/url"
	"os"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"

	"github.com/outrider-proxy/outrider/proxy/headers"
	"github.com/outrider-proxy/outrider/proxy/upstream"
)

// h2Up is one attempt of a request sent as an HTTP/2 stream through the
// cluster's H2Pool. Its RoundTrip runs on a helper goroutine while the
// request body streams through a pipe (writes block until x/net sends
// them: backpressure); without a body it runs on the stream's goroutine.
type h2Up struct {
	pool    *upstream.H2Pool
	req     *http.Request
	pw      *io.PipeWriter // nil: no request body
	result  chan h2Result  // the helper goroutine's outcome; nil without one
	got     bool           // result was received
	resp    *http.Response // nil until response headers arrived
	ctx     context.Context
	cancel  context.CancelCauseFunc
	url     url.URL      // req.URL
	at      atomic.Int64 // the timer's deadline (unix ns) for this attempt
	kind    atomic.Int32 // which deadline the timer is armed for
	started bool         // RoundTrip succeeded: pool.Done pending
	// pump reads the response on a helper goroutine while the request body
	// streams (full duplex); nil: the response is read synchronously.
	pump   *pump
	own    *ownUp // the own codec's stream (h2own.go): &ownBuf; nil: x/net's
	ownBuf ownUp
	sent   bool // the request ended (pw closed)
	broken bool // the request body pipe failed: the stream ended early
}

type h2Result struct {
	resp *http.Response
	err  error
}

// errUpTimeout is the cancel cause of an expired route, per-try or idle timer.
var errUpTimeout = errors.New("upstream timeout")

const (
	armNone int32 = iota
	armRoute
	armPerTry
	armIdle
)

// h2ReqTemplate is what every upstream request starts as.
var h2ReqTemplate = http.Request{Method: "GET", Proto: "HTTP/2.0", ProtoMajor: 2}

// h2Skip are the request fields HTTP/2 forbids or that travel as
// pseudo-headers; te is kept only as "trailers".
var h2Skip = map[string]bool{
	"connection": true, "keep-alive": true, "proxy-connection": true, "transfer-encoding": true,
	"upgrade": true, "host": true, "content-length": true,
}

// h2Send starts the request upstream as an HTTP/2 stream; with end it
// waits for and streams back the response.
func (f *filter) h2Send(h *headers.Map, end bool) {
	// x/net's client transport answers Expect: 100-continue itself and
	// never shows the upstream's 100: the client is told to go on now.
	f.continue100()
	u := &h2Up{pool: f.cluster.H2PoolFor(f.host, f.cluster.TLSOverride(h))}
	parent := context.Background()
	if f.downCtx != nil {
		parent = f.downCtx // a client reset cancels the upstream stream (RST_STREAM CANCEL)
	}
	if f.highPriority() {
		parent = upstream.WithHighPriority(parent) // the cluster's HIGH circuit breakers
	}
	if u.pool.OwnCodec() {
		f.h2oSend(u, parent, h, end)
		return
	}
	u.ctx, u.cancel = context.WithCancelCause(parent)
	f.h2 = u
	// One Request allocation (WithContext copies the template), the URL
	// inside the attempt.
	req := h2ReqTemplate.WithContext(u.ctx)
	u.url = url.URL{Scheme: "http", Host: f.host.String(), Path: "/"}
	req.URL = &u.url
	if f.cluster.UsesTLS(f.host) {
		req.URL.Scheme = "https"
	}
	req.ContentLength = -1
	f.h2names.toRequest(req, h)
	if _, ok := req.Header["user-agent"]; !ok {
		req.Header["user-agent"] = []string{""} // x/net adds none then, as Envoy
	}
	if end {
		req.ContentLength = 0
		u.req = req
		f.h2Await()
		return
	}
	pr, pw := io.Pipe()
	req.Body, req.Trailer = pr, http.Header{}
	u.pw, u.req = pw, req
	if p := f.startPump(); p != nil {
		u.pump = p
		if f.h2buf == nil {
			f.h2buf = make([]byte, 32<<10)
		}
		f.idle = f.cb.StreamIdleTimeout()
		f.h2Arm()
		go f.h2Reader(u, p, f.h2buf)
		return
	}
	u.result = make(chan h2Result, 1)
	go func() {
		resp, err := u.pool.RoundTrip(u.req)
		u.result <- h2Result{resp, err}
	}()
}

// h2Reader is the pump's reader: the response headers, then each read of
// the body, handed to the stream's goroutine (h2Head, h2Piece). buf is the
// filter's h2buf, used by nothing else meanwhile.
func (f *filter) h2Reader(u *h2Up, p *pump, buf []byte) {
	defer close(p.exited)
	resp, err := u.pool.RoundTrip(u.req)
	if err == nil {
		u.resp, u.started = resp, true // the stream's goroutine reads them after the event or exit
	}
	// One closure for every piece: the piece is passed in n and rerr.
	more, n, rerr := false, 0, err
	if !p.post(func() { more = f.h2Head(resp, rerr) }) || !more {
		return
	}
	piece := func() { f.h2Piece(buf[:n], rerr) }
	for {
		n, rerr = resp.Body.Read(buf)
		if !p.post(piece) || rerr != nil {
			return
		}
	}
}

// h2Replay is a retry of a request with a body: the body kept so far is
// sent again; the rest follows from the client unless the request ended.
func (f *filter) h2Replay() {
	f.h2Send(f.cb.RequestHeaders(), false)
	u := f.h2
	if u.own != nil {
		f.h2oReplay()
		return
	}
	if len(f.body) > 0 {
		if _, err := u.pw.Write(f.body); err != nil {
			u.broken = true
		}
	}
	if !f.reqComplete {
		return
	}
	if u.pump == nil {
		u.sent = true
		u.pw.Close()
		f.h2Await()
		return
	}
	u.sent = true
	u.pw.Close()
	f.h2Timers()
	f.drain() // returns at once when a drain is already running
}

// h2Duplex ends a full-duplex request: the timers that run from the
// request's end start and the response is pumped to its end.
func (f *filter) h2Duplex() {
	u := f.h2
	if u.own != nil {
		f.h2oEnd()
		f.h2Timers()
		f.drain()
		return
	}
	if !u.sent {
		u.sent = true
		u.pw.Close()
	}
	f.h2Timers()
	f.drain()
}

// h2Data streams a piece of the request body.
func (f *filter) h2Data(p []byte, end bool) {
	u := f.h2
	if u.own != nil {
		f.h2oData(p, end)
		return
	}
	if u.pump != nil {
		if len(p) > 0 && !u.broken {
			if _, err := u.pw.Write(p); err != nil {
				u.broken = true // the stream ended early: the reader reports how
			}
		}
		if end {
			f.h2Duplex()
		} else if !u.pump.stopped {
			f.h2Arm() // request activity resets the stream idle timer
		}
		return
	}
	if len(p) > 0 {
		if _, err := u.pw.Write(p); err != nil {
			f.h2Await() // the stream ended early: its response or error
			return
		}
	}
	if end {
		u.pw.Close()
		f.h2Await()
	}
}

// h2Trailers sends the request trailers, ending the request.
func (f *filter) h2Trailers(t *headers.Map) {
	u := f.h2
	if u.own != nil {
		f.h2oTrailers(t)
		return
	}
	for _, fl := range t.Fields() {
		n := string(fl.Name)
		u.req.Trailer[n] = append(u.req.Trailer[n], string(fl.Value))
	}
	f.replay, f.reqComplete = false, true // trailers are not replayed
	if u.pump != nil {
		f.h2Duplex()
		return
	}
	u.pw.Close()
	f.h2Await()
}

// h2Arm points the timer at the earliest of the route timeout, the per-try
// timeout and the stream idle timeout.
func (f *filter) h2Arm() {
	u := f.h2
	d, kind := f.deadline, armNone
	if !d.IsZero() {
		kind = armRoute
	}
	if !f.tryDeadline.IsZero() && (d.IsZero() || f.tryDeadline.Before(d)) {
		d, kind = f.tryDeadline, armPerTry
	}
	if f.idle > 0 {
		if t := time.Now().Add(f.idle); d.IsZero() || t.Before(d) {
			d, kind = t, armIdle
		}
	}
	if t, ok := f.tryIdleEnd(d); ok {
		d, kind = t, armTryIdle
	}
	u.kind.Store(kind)
	t := f.h2t
	if kind == armNone {
		if t != nil {
			t.armed.Store(nil)
			t.timer.Stop()
		}
		return
	}
	u.at.Store(d.UnixNano())
	if t == nil {
		t = &h2Timer{}
		f.h2t = t
		t.armed.Store(u)
		t.timer = time.AfterFunc(time.Until(d), t.fire)
		return
	}
	t.armed.Store(u)
	t.timer.Reset(time.Until(d))
}

// h2Timer is a filter's timer for its HTTP/2 attempts, kept across
// streams so that arming it allocates nothing; armed is the attempt it is
// armed for (nil: none).
type h2Timer struct {
	timer *time.Timer
	armed atomic.Pointer[h2Up]
}

// fire cancels the attempt the timer was armed for with errUpTimeout once
// its deadline passed. A firing left over from an earlier arming finds no
// attempt, or a deadline still ahead and waits for it.
func (t *h2Timer) fire() {
	u := t.armed.Load()
	if u == nil {
		return
	}
	if left := time.Until(time.Unix(0, u.at.Load())); left > 0 {
		t.timer.Reset(left) // early (or stale): wait for the rest
		return
	}
	u.cancelWith(errUpTimeout)
}

// h2Timers starts the timers that run from the request's end (the route
// and per-try timeouts) and arms the attempt's timer.
func (f *filter) h2Timers() {
	info := f.cb.Info()
	info.LastUpstreamTxByte = info.Since(time.Now())
	if f.timeout > 0 && f.deadline.IsZero() {
		f.deadline = time.Now().Add(f.timeout)
	}
	f.tryDeadline = time.Time{}
	if f.policy != nil && f.policy.perTry > 0 {
		f.tryDeadline = time.Now().Add(f.policy.perTry)
	}
	f.startTryIdle()
	f.idle = f.cb.StreamIdleTimeout()
	if f.h2 != nil {
		f.h2Arm()
	}
}

// h2Await waits for the response and streams it back.
func (f *filter) h2Await() {
	u := f.h2
	f.h2Timers()
	watching := false
	if f.downCtx == nil { // HTTP/1 downstream: the closure only then
		watching = f.watchClient(func() { u.cancel(errAborted) })
	}
	var resp *http.Response
	var err error
	if u.result != nil {
		r := <-u.result
		u.got, resp, err = true, r.resp, r.err
	} else {
		resp, err = u.pool.RoundTrip(u.req)
	}
	if watching {
		f.unwatchClient()
	}
	if err == nil {
		u.resp, u.started = resp, true
	}
	if !f.h2Head(resp, err) {
		return
	}
	if f.h2buf == nil {
		f.h2buf = make([]byte, 32<<10)
	}
	for range 1 << 40 { // bounded by the body; each round reads or fails
		if !f.cb.Flush() {
			f.release(false)
			return
		}
		f.h2Arm()
		n, err := resp.Body.Read(f.h2buf)
		if !f.h2Piece(f.h2buf[:n], err) {
			return
		}
	}
}

// h2Head handles the RoundTrip's outcome: a failure, a retry, or the
// response headers sent on. It reports whether the body is to be read.
func (f *filter) h2Head(resp *http.Response, err error) bool {
	info := f.cb.Info()
	if err != nil {
		if errors.Is(err, upstream.ErrNoH2) && f.noBody {
			f.release(false)
			f.h2on = false
			if f.connect() {
				if err := f.codec.enc.WriteRequestHeaders(f.cb.RequestHeaders(), true); err != nil {
					f.upstreamFailed(err, false)
					return false
				}
				f.sendAndAwait()
			}
			return false
		}
		f.h2Failed(err, false)
		return false
	}
	info.FirstUpstreamRxByte = info.Since(time.Now())
	code := resp.StatusCode
	if f.responseStatus(code) {
		return false
	}
	rh := f.cb.ResponseHeaders()
	rh.Reset()
	rh.SetInt(headers.Status, int64(code))
	f.h2names.fromHeader(rh, resp.Header)
	if !f.cfg.suppressHeaders {
		rh.SetInt("x-envoy-upstream-service-time", time.Since(f.start).Milliseconds())
	}
	f.fctx.Response = rh
	f.route.ApplyResponseHeaders(rh, &f.fctx)
	// x/net reports HEADERS with END_STREAM (a gRPC trailers-only
	// response, say) as content length 0.
	noBody := resp.Body == http.NoBody || resp.ContentLength == 0
	if !f.cb.EncodeHeaders(rh, noBody) {
		f.release(false)
		return false
	}
	if noBody {
		f.finished(true)
		return false
	}
	if f.h2 != nil && f.h2.pump != nil {
		f.h2Arm()
	}
	return true
}

// h2Piece handles one read of the response body; false: the response is
// over (ended, failed or abandoned).
func (f *filter) h2Piece(p []byte, err error) bool {
	if len(p) > 0 && !f.cb.EncodeData(p, false) {
		f.release(false)
		return false
	}
	if err == io.EOF {
		u := f.h2
		if len(u.resp.Trailer) > 0 {
			f.trl.Reset()
			f.h2names.fromHeader(&f.trl, u.resp.Trailer)
			f.cb.EncodeTrailers(&f.trl)
		} else {
			f.cb.EncodeData(nil, true)
		}
		f.finished(true)
		return false
	}
	if err != nil {
		f.h2Failed(err, true)
		return false
	}
	if f.h2.pump != nil {
		f.h2Arm()
	}
	return true
}

// copyHeader adds x/net's fields to m with lower-case names, leaving out
// the connection-specific ones.
func copyHeader(m *headers.Map, h http.Header) {
	var n h2Names
	n.fromHeader(m, h)
}

// h2Failed maps a failed HTTP/2 attempt to Envoy's local reply, reset or
// retry, as for HTTP/1.
func (f *filter) h2Failed(err error, started bool) {
	u := f.h2
	if f.downstreamDone() {
		f.downstreamGone()
		return
	}
	if u.cause() == errUpTimeout {
		kind := u.kind.Load()
		f.idleArmed, f.perTryArmed = kind == armIdle, kind == armPerTry
		f.ti.armed = kind == armTryIdle
		f.upstreamFailed(os.ErrDeadlineExceeded, started)
		return
	}
	var ov *upstream.OverflowError
	var ce *upstream.ConnectError
	switch {
	case errors.As(err, &ov):
		f.release(false)
		f.overflowed()
	case errors.As(err, &ce):
		f.release(false)
		f.connectFailed(err)
	default:
		f.upstreamFailed(err, started)
	}
}

// h2Release ends the attempt: the timer stops, an unfinished stream is
// cancelled (RST_STREAM) and the pool's stream slot is returned.
func (f *filter) h2Release() {
	u := f.h2
	if u.own != nil {
		f.h2oRelease()
		return
	}
	f.h2 = nil
	if t := f.h2t; t != nil && t.armed.CompareAndSwap(u, nil) {
		t.timer.Stop()
	}
	if u.pw != nil {
		u.pw.CloseWithError(errAborted)
	}
	u.cancel(errAborted)
	if u.pump != nil {
		u.pump.stop(func() {
			if u.resp != nil {
				u.resp.Body.Close() // a blocked read returns
			}
		})
	}
	if u.result != nil && !u.got {
		r := <-u.result // returns promptly once cancelled
		u.resp, u.started = r.resp, r.err == nil
	}
	if u.resp != nil {
		u.resp.Body.Close()
	}
	if u.started {
		u.pool.DoneCtx(u.ctx)
	}
}

var errAborted = errors.New("upstream stream finished")

// isStreamReset reports whether err is the upstream resetting the stream
// (RST_STREAM), Envoy's UR.
func isStreamReset(err error) bool {
	var se http2.StreamError
	return errors.As(err, &se) || isOwnReset(err)
}
