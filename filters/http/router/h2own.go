package router

import (
	"context"
	"errors"
	"io"
	"sync"
	"time"

	"golang.org/x/net/http2"

	"github.com/outrider-proxy/outrider/proxy/h2"
	"github.com/outrider-proxy/outrider/proxy/headers"
)

// The HTTP/2 upstream over outrider's own client codec (proxy/h2), used
// when the cluster's H2Pool is in its own-codec mode (the default):
// the request goes out from the stream's goroutine with ClientStream's
// writes (their flow control is the backpressure), the response is read
// with ReadHeaders and ReadData, on the stream's goroutine or on the pump's
// reader in full duplex. Timers and a client reset cancel the attempt's
// context, which resets the stream; the failure paths are x/net's (h2.go).

// ownUp is the own-codec part of an h2Up, and the attempt's context
// (h2Up.ctx): done once h2Up.cancelWith or the parent (a client reset)
// cancelled it, which also resets the stream. Its Done channel is made
// only when something waits on it (the pool waiting for a connection).
type ownUp struct {
	parent  context.Context
	mu      sync.Mutex       // guards s, cause and done against cancel on another goroutine
	s       *h2.ClientStream // nil: not open (openErr) or released
	cause   error            // why the attempt was cancelled; nil: it was not
	done    chan struct{}    // Done's; nil until asked for
	openErr error            // why the stream could not be opened
	stop    func() bool      // stops the parent context's hook; nil: none
	hasBody bool             // the request had a body to stream
	req     *headers.Map     // the request as sent upstream (pooled)
}

var reqMapPool = sync.Pool{New: func() any { return new(headers.Map) }}

// cancelCause records why the attempt ends (the first cause) and resets
// the stream (RST_STREAM CANCEL): a blocked read or write on it returns.
func (o *ownUp) cancelCause(err error) {
	o.mu.Lock()
	if o.cause == nil {
		o.cause = err
		if o.done != nil {
			close(o.done)
		}
	}
	if o.s != nil {
		o.s.Reset(http2.ErrCodeCancel)
	}
	o.mu.Unlock()
}

// cancel is cancelCause for the pump's interrupt and a client reset.
func (o *ownUp) cancel() { o.cancelCause(context.Canceled) }

func (o *ownUp) cancelled() error {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.cause
}

func (o *ownUp) Deadline() (time.Time, bool) { return o.parent.Deadline() }
func (o *ownUp) Value(key any) any           { return o.parent.Value(key) }

func (o *ownUp) Done() <-chan struct{} {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.done == nil {
		o.done = make(chan struct{})
		if o.cause != nil {
			close(o.done)
		}
	}
	return o.done
}

func (o *ownUp) Err() error {
	if o.cancelled() != nil {
		return context.Canceled
	}
	return nil
}

// afterFuncer is a context that runs functions when done by itself
// (proxy/h2's stream context).
type afterFuncer interface {
	AfterFunc(f func()) (stop func() bool)
}

// cancelWith cancels the attempt with cause.
func (u *h2Up) cancelWith(cause error) {
	if u.own != nil {
		u.own.cancelCause(cause)
		return
	}
	u.cancel(cause)
}

// cause is why the attempt was cancelled (errUpTimeout for a timer).
func (u *h2Up) cause() error {
	if u.own != nil {
		return u.own.cancelled()
	}
	return context.Cause(u.ctx)
}

// hasBody reports whether the request body of the attempt goes through
// h2Data and h2Trailers.
func (u *h2Up) hasBody() bool { return u.pw != nil || (u.own != nil && u.own.hasBody) }

// h2oSend opens the attempt u's stream with h; parent is the context the
// attempt ends with (a client reset).
func (f *filter) h2oSend(u *h2Up, parent context.Context, h *headers.Map, end bool) {
	o := &u.ownBuf
	o.parent, o.hasBody, o.req = parent, !end, reqMapPool.Get().(*headers.Map)
	u.own, u.ctx = o, o
	f.h2 = u
	if af, ok := parent.(afterFuncer); ok {
		o.stop = af.AfterFunc(o.cancel) // the downstream stream's own registry: no goroutine or context
	} else if parent.Done() != nil {
		o.stop = context.AfterFunc(parent, o.cancel)
	}
	if end {
		f.h2Timers() // the route timeout covers the wait for a connection too
	}
	o.req.CopyFrom(h)
	scheme := "http"
	if f.cluster.UsesTLS(f.host) {
		scheme = "https"
	}
	o.req.Set(headers.Scheme, scheme)
	if !o.req.Has(headers.Authority) {
		o.req.Set(headers.Authority, f.host.String())
	}
	s, err := u.pool.OpenStream(u.ctx, o.req, end)
	if err != nil {
		o.openErr = err
		if end {
			f.h2oAwait(false)
		}
		return // with a body, the failure is reported when the body is sent (h2oData)
	}
	o.mu.Lock()
	o.s, u.started = s, true
	cancelled := o.cause != nil
	o.mu.Unlock()
	if cancelled {
		o.cancel() // cancelled while the stream was being opened
	}
	if end {
		f.h2oAwait(false)
		return
	}
	if p := f.startPump(); p != nil {
		u.pump = p
		f.idle = f.cb.StreamIdleTimeout()
		f.h2Arm()
		_ = s.Flush()
		go f.h2oReader(u, p)
		return
	}
	_ = s.Flush() // the headers go now, as Envoy sends them; the body follows
}

// h2oReader is the pump's reader: the response headers, then each piece
// of the body, handed to the stream's goroutine.
func (f *filter) h2oReader(u *h2Up, p *pump) {
	defer close(p.exited)
	s := u.own.s
	h, err := s.ReadHeaders(time.Time{})
	more, rerr := false, err
	if !p.post(func() { more = f.h2oHead(h, rerr) }) || !more {
		return
	}
	var piece []byte
	fn := func() { f.h2oPiece(piece, rerr) }
	for {
		piece, rerr = s.ReadData(time.Time{})
		if !p.post(fn) || rerr != nil {
			return
		}
	}
}

// h2oData streams a piece of the request body.
func (f *filter) h2oData(p []byte, end bool) {
	u := f.h2
	o := u.own
	if o.s == nil {
		f.h2oAwait(true) // the stream could not be opened: say why now
		return
	}
	if u.pump != nil {
		if !u.broken && (len(p) > 0 || end) {
			if err := o.s.WriteData(p, end); err != nil {
				u.broken = true // the stream ended early: the reader reports how
			}
		}
		if end {
			u.sent = true
			f.h2Timers()
			f.drain()
		} else if !u.pump.stopped {
			f.h2Arm()
		}
		return
	}
	if len(p) > 0 || end {
		if err := o.s.WriteData(p, end); err != nil {
			f.h2oAwait(true) // the stream ended early: its response or error
			return
		}
	}
	if end {
		f.h2oAwait(true)
	}
}

// h2oTrailers sends the request trailers, ending the request.
func (f *filter) h2oTrailers(t *headers.Map) {
	u := f.h2
	o := u.own
	f.replay, f.reqComplete = false, true // trailers are not replayed
	if o.s == nil {
		f.h2oAwait(true)
		return
	}
	if err := o.s.WriteTrailers(t); err != nil {
		u.broken = true
	}
	if u.pump != nil {
		u.sent = true
		f.h2Timers()
		f.drain()
		return
	}
	f.h2oAwait(true)
}

// h2oEnd ends the request (h2Replay, h2Duplex): an empty DATA frame with
// END_STREAM unless it ended already.
func (f *filter) h2oEnd() {
	u := f.h2
	if !u.sent && u.own.s != nil && !u.broken {
		if err := u.own.s.WriteData(nil, true); err != nil {
			u.broken = true
		}
	}
	u.sent = true
}

// h2oReplay is h2Replay for the own codec: the body kept so far goes
// again, the rest follows unless the request ended.
func (f *filter) h2oReplay() {
	u := f.h2
	o := u.own
	if o.s != nil && len(f.body) > 0 {
		if err := o.s.WriteData(f.body, false); err != nil {
			u.broken = true
		}
	}
	if !f.reqComplete {
		return
	}
	f.h2oEnd()
	if u.pump == nil {
		f.h2oAwait(true)
		return
	}
	f.h2Timers()
	f.drain()
}

// h2oAwait waits for the response and streams it back; a stream the
// server refused before processing it is opened again when it has no
// body, as x/net's client does. timers: start the timers that run from
// the request's end (false: they run already).
func (f *filter) h2oAwait(timers bool) {
	u := f.h2
	o := u.own
	if timers {
		f.h2Timers()
	}
	if o.s == nil {
		f.h2Head(nil, o.openErr)
		return
	}
	watching := false
	if f.downCtx == nil {
		watching = f.watchClient(func() { u.cancelWith(errAborted) })
	}
	h, err := o.s.ReadHeaders(time.Time{})
	for i := 0; err != nil && h2.IsRefused(err) && !o.hasBody && i < 5 && o.cancelled() == nil; i++ {
		h, err = f.h2oReopen()
	}
	if watching {
		f.unwatchClient()
	}
	if !f.h2oHead(h, err) {
		return
	}
	for range 1 << 40 { // bounded by the body; each round reads or fails
		if !f.cb.Flush() {
			f.release(false)
			return
		}
		f.h2Arm()
		p, err := o.s.ReadData(time.Time{})
		if !f.h2oPiece(p, err) {
			return
		}
	}
}

// h2oReopen sends a refused body-less request again on another stream and
// waits for its response headers.
func (f *filter) h2oReopen() (*headers.Map, error) {
	u := f.h2
	o := u.own
	o.mu.Lock()
	s := o.s
	o.s = nil
	o.mu.Unlock()
	u.pool.DoneStream(u.ctx, s)
	u.started = false
	s, err := u.pool.OpenStream(u.ctx, o.req, true)
	if err != nil {
		return nil, err
	}
	o.mu.Lock()
	o.s, u.started = s, true
	o.mu.Unlock()
	if o.cancelled() != nil {
		o.cancel() // cancelled while no stream was open
	}
	return s.ReadHeaders(time.Time{})
}

// h2oHead handles the response headers (or the failure): they go on to
// the client unless the status is retried. It reports whether the body is
// to be read.
func (f *filter) h2oHead(h *headers.Map, err error) bool {
	if err != nil {
		return f.h2Head(nil, err)
	}
	info := f.cb.Info()
	info.FirstUpstreamRxByte = info.Since(time.Now())
	code := h.StatusCode()
	if f.responseStatus(code) {
		return false
	}
	rh := f.cb.ResponseHeaders()
	rh.Reset()
	rh.SetInt(headers.Status, int64(code))
	for _, fl := range h.Fields() {
		if len(fl.Name) > 0 && fl.Name[0] != ':' {
			rh.AddBytes(string(fl.Name), fl.Value)
		}
	}
	if !f.cfg.suppressHeaders {
		rh.SetInt("x-envoy-upstream-service-time", time.Since(f.start).Milliseconds())
	}
	f.fctx.Response = rh
	f.route.ApplyResponseHeaders(rh, &f.fctx)
	cl, _ := h.Get("content-length")
	noBody := f.h2.own.s.ResponseEnded() || string(cl) == "0"
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

// h2oPiece handles one read of the response body; false: the response is
// over (ended, failed or abandoned).
func (f *filter) h2oPiece(p []byte, err error) bool {
	if len(p) > 0 && !f.cb.EncodeData(p, false) {
		f.release(false)
		return false
	}
	if err == io.EOF {
		if t := f.h2.own.s.Trailers(); t.Len() > 0 {
			f.trl.CopyFrom(t)
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

// h2oRelease is h2Release for the own codec: the timer stops, the pump's
// reader returns, and the stream is released (reset when unfinished).
func (f *filter) h2oRelease() {
	u := f.h2
	o := u.own
	f.h2 = nil
	if t := f.h2t; t != nil && t.armed.CompareAndSwap(u, nil) {
		t.timer.Stop()
	}
	if o.stop != nil {
		o.stop()
	}
	u.cancelWith(errAborted)
	if u.pump != nil {
		u.pump.stop(o.cancel)
	}
	o.mu.Lock()
	s := o.s
	o.s = nil
	o.mu.Unlock()
	if s != nil {
		u.pool.DoneStream(u.ctx, s)
	}
	o.req.Reset()
	reqMapPool.Put(o.req)
	o.req = nil
}

// isOwnReset reports whether err is the upstream resetting an own-codec
// stream (RST_STREAM), Envoy's UR.
func isOwnReset(err error) bool {
	var se *h2.StreamError
	return errors.As(err, &se) && se.Remote
}
