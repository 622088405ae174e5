package router

import (
	"context"
	"errors"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"

	"github.com/outrider-proxy/outrider/proxy/h2"
	"github.com/outrider-proxy/outrider/proxy/headers"
	"github.com/outrider-proxy/outrider/proxy/streaminfo"
	"github.com/outrider-proxy/outrider/proxy/upstream"
)

// The HTTP/2 upstream over outrider's client codec (proxy/h2): the request
// goes out from the stream's goroutine with ClientStream's writes (their
// flow control is the backpressure), the response is read with ReadHeaders
// and ReadData, on the stream's goroutine or on the pump's reader in full
// duplex. Timers and a client reset cancel the attempt's context, which
// resets the stream; the timers and the failure paths are in h2.go.

// h2Up is one attempt of a request sent as an HTTP/2 stream through the
// cluster's H2Pool, and the attempt's context: done once cancelWith or the
// parent (a client reset) cancelled it, which also resets the stream. Its
// Done channel is made only when something waits on it (the pool waiting
// for a connection).
type h2Up struct {
	pool    *upstream.H2Pool
	parent  context.Context
	mu      sync.Mutex       // guards s, cause and done against cancel on another goroutine
	s       *h2.ClientStream // nil: not open (openErr) or released
	cause   error            // why the attempt was cancelled; nil: it was not
	done    chan struct{}    // Done's; nil until asked for
	openErr error            // why the stream could not be opened
	stop    func() bool      // stops a parent context's AfterFunc; nil: none
	watch   watchCtx         // the downstream stream's context watched (Watch); nil: none
	token   uint64           // watch's registration
	hasBody bool             // the request had a body to stream (h2Data and h2Trailers)
	queue   bool             // the body goes without the pump (syncBody): its pieces wait for its end to be sent
	req     *headers.Map     // the request as sent upstream (pooled)
	at      atomic.Int64     // the timer's deadline (unix ns) for this attempt
	kind    atomic.Int32     // which deadline the timer is armed for
	started bool             // the stream was opened: DoneStream pending
	// pump reads the response on a helper goroutine while the request body
	// streams (full duplex); nil: the response is read synchronously.
	pump   *pump
	sent   bool // the request ended
	broken bool // a request body write failed: the stream ended early
	// down is the downstream connection (transport.DownstreamCarrier: a
	// PROXY protocol upstream carries its addresses); nil: none.
	down *streaminfo.Conn
}

var reqMapPool = sync.Pool{New: func() any { return new(headers.Map) }}

// cancelWith records why the attempt ends (the first cause: errUpTimeout
// for a timer) and resets the stream (RST_STREAM CANCEL): a blocked read or
// write on it returns.
func (o *h2Up) cancelWith(err error) {
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

// cancel is cancelWith for the pump's interrupt and a client reset.
func (o *h2Up) cancel() { o.cancelWith(context.Canceled) }

// cancelled is why the attempt was cancelled; nil: it was not.
func (o *h2Up) cancelled() error {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.cause
}

func (o *h2Up) Deadline() (time.Time, bool) { return o.parent.Deadline() }
func (o *h2Up) Value(key any) any           { return o.parent.Value(key) }

// DownstreamConn implements transport.DownstreamCarrier.
func (o *h2Up) DownstreamConn() *streaminfo.Conn { return o.down }

func (o *h2Up) Done() <-chan struct{} {
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

func (o *h2Up) Err() error {
	if o.cancelled() != nil {
		return context.Canceled
	}
	return nil
}

// StreamCanceled is the client's reset of the downstream stream (an
// h2.Watcher): the attempt is cancelled.
func (o *h2Up) StreamCanceled() { o.cancel() }

// bodyBufferer is the connection manager's view of the downstream codec
// (proxy/hcm): whether the whole request body has already arrived.
type bodyBufferer interface {
	RequestBodyBuffered() (n int, ok bool)
}

// maxSyncBody bounds a request body sent without the pump (syncBody).
const maxSyncBody = 64 << 10

// syncBody reports whether the request body goes without the pump: it has
// arrived whole at the downstream codec (its pieces come without waiting
// for the client) and fits the upstream stream's send windows (writing it
// does not wait for the server), so the response is read once the body is
// sent, on the stream's goroutine, as for a request without a body.
func (f *filter) syncBody(s *h2.ClientStream) bool {
	bb, ok := f.cb.(bodyBufferer)
	if !ok {
		return false
	}
	n, ok := bb.RequestBodyBuffered()
	return ok && n <= maxSyncBody && s.CanSend(n)
}

// h2Send starts the request upstream as an HTTP/2 stream with h; with end
// it waits for and streams back the response. A client reset (the
// downstream context) ends the attempt.
func (f *filter) h2Send(h *headers.Map, end bool) {
	// The upstream's 100 Continue does not come back over HTTP/2: the
	// client is told to go on now.
	f.continue100()
	u := &h2Up{pool: f.cluster.H2PoolFor(f.host, f.cluster.TLSOverride(h))}
	parent := context.Background()
	if f.downCtx != nil {
		parent = f.downCtx // a client reset cancels the upstream stream (RST_STREAM CANCEL)
	}
	if f.highPriority() {
		parent = upstream.WithHighPriority(parent) // the cluster's HIGH circuit breakers
	}
	o := u
	o.parent, o.hasBody, o.req, o.down = parent, !end, reqMapPool.Get().(*headers.Map), f.cb.Info().Conn
	f.h2 = u
	if wc, ok := f.downCtx.(watchCtx); ok {
		o.watch, o.token = wc, wc.Watch(o) // the downstream stream's own registry: no goroutine, context or closure
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
	s, err := u.pool.OpenStream(u, o.req, end)
	if err != nil {
		o.openErr = err
		if end {
			f.h2Await(false)
		}
		return // with a body, the failure is reported when the body is sent (h2Data)
	}
	o.mu.Lock()
	o.s, u.started = s, true
	cancelled := o.cause != nil
	o.mu.Unlock()
	if cancelled {
		o.cancel() // cancelled while the stream was being opened
	}
	if end {
		f.h2Await(false)
		return
	}
	if f.syncBody(s) {
		u.queue = true
		return // the headers go with the body
	}
	if p := f.startPump(); p != nil {
		u.pump = p
		f.idle = f.cb.StreamIdleTimeout()
		f.h2Arm()
		_ = s.Flush()
		go f.h2Reader(u, p)
		return
	}
	_ = s.Flush() // the headers go now, as Envoy sends them; the body follows
}

// h2Reader is the pump's reader: the response headers, then each piece
// of the body, handed to the stream's goroutine.
func (f *filter) h2Reader(u *h2Up, p *pump) {
	defer close(p.exited)
	s := u.s
	h, err := s.ReadHeaders(time.Time{})
	more, rerr := false, err
	if !p.post(func() { more = f.h2Head(h, rerr) }) || !more {
		return
	}
	var piece []byte
	fn := func() { f.h2Piece(piece, rerr) }
	for {
		piece, rerr = s.ReadData(time.Time{})
		if !p.post(fn) || rerr != nil {
			return
		}
	}
}

// h2Data streams a piece of the request body.
func (f *filter) h2Data(p []byte, end bool) {
	u := f.h2
	o := u
	if o.s == nil {
		f.h2Await(true) // the stream could not be opened: say why now
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
		var err error
		if u.queue && !end {
			err = o.s.QueueData(p)
		} else {
			err = o.s.WriteData(p, end)
		}
		if err != nil {
			f.h2Await(true) // the stream ended early: its response or error
			return
		}
	}
	if end {
		f.h2Await(true)
	}
}

// h2Trailers sends the request trailers, ending the request.
func (f *filter) h2Trailers(t *headers.Map) {
	u := f.h2
	o := u
	f.replay, f.reqComplete = false, true // trailers are not replayed
	if o.s == nil {
		f.h2Await(true)
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
	f.h2Await(true)
}

// h2End ends the request (h2Replay, h2Duplex): an empty DATA frame with
// END_STREAM unless it ended already.
func (f *filter) h2End() {
	u := f.h2
	if !u.sent && u.s != nil && !u.broken {
		if err := u.s.WriteData(nil, true); err != nil {
			u.broken = true
		}
	}
	u.sent = true
}

// h2Replay is a retry of a request with a body: the body kept so far goes
// again, the rest follows from the client unless the request ended.
func (f *filter) h2Replay() {
	f.h2Send(f.cb.RequestHeaders(), false)
	u := f.h2
	o := u
	if o.s != nil && len(f.body) > 0 {
		if err := o.s.WriteData(f.body, false); err != nil {
			u.broken = true
		}
	}
	if !f.reqComplete {
		return
	}
	f.h2End()
	if u.pump == nil {
		f.h2Await(true)
		return
	}
	f.h2Timers()
	f.drain()
}

// h2Await waits for the response and streams it back; a stream the
// server refused before processing it is opened again when it has no
// body (as x/net's client does). timers: start the timers that run from
// the request's end (false: they run already).
func (f *filter) h2Await(timers bool) {
	u := f.h2
	o := u
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
		h, err = f.h2Reopen()
	}
	if watching {
		f.unwatchClient()
	}
	if !f.h2Head(h, err) {
		return
	}
	for range 1 << 40 { // bounded by the body; each round reads or fails
		// What went to the client is flushed before waiting for the
		// upstream; a piece already here goes in the same write.
		if !o.s.Readable() && !f.cb.Flush() {
			f.release(false)
			return
		}
		f.h2Arm()
		p, err := o.s.ReadData(time.Time{})
		if !f.h2Piece(p, err) {
			return
		}
	}
}

// h2Reopen sends a refused body-less request again on another stream and
// waits for its response headers.
func (f *filter) h2Reopen() (*headers.Map, error) {
	u := f.h2
	o := u
	o.mu.Lock()
	s := o.s
	o.s = nil
	o.mu.Unlock()
	u.pool.DoneStream(u, s)
	u.started = false
	s, err := u.pool.OpenStream(u, o.req, true)
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

// h2Head handles the response headers (or the failure, h2NoHead): they go
// on to the client unless the status is retried. It reports whether the
// body is to be read.
func (f *filter) h2Head(h *headers.Map, err error) bool {
	if err != nil {
		return f.h2NoHead(err)
	}
	info := f.cb.Info()
	info.FirstUpstreamRxByte = info.Since(time.Now())
	code := h.StatusCode()
	if f.responseStatus(code) {
		return false
	}
	rh := f.h2Response(code, h)
	if !f.cfg.suppressHeaders {
		rh.SetInt("x-envoy-upstream-service-time", time.Since(f.start).Milliseconds())
	}
	f.fctx.Response = rh
	f.route.ApplyResponseHeaders(rh, &f.fctx)
	cl, _ := h.Get("content-length")
	noBody := f.h2.s.ResponseEnded() || string(cl) == "0"
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

// h2Response is the stream's response headers, reset to the status code
// and h's regular fields (an HTTP/2 upstream's answer).
func (f *filter) h2Response(code int, h *headers.Map) *headers.Map {
	rh := f.cb.ResponseHeaders()
	rh.Reset()
	rh.SetInt(headers.Status, int64(code))
	for _, fl := range h.Fields() {
		if len(fl.Name) > 0 && fl.Name[0] != ':' {
			rh.AddBytes(string(fl.Name), fl.Value)
		}
	}
	return rh
}

// h2Piece handles one read of the response body; false: the response is
// over (ended, failed or abandoned).
func (f *filter) h2Piece(p []byte, err error) bool {
	if len(p) > 0 && !f.cb.EncodeData(p, false) {
		f.release(false)
		return false
	}
	if err == io.EOF {
		if t := f.h2.s.Trailers(); t.Len() > 0 {
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

// h2Release ends the attempt: the timer stops, the pump's reader returns,
// and the stream is released (reset when unfinished) with its pool slot.
func (f *filter) h2Release() {
	u := f.h2
	o := u
	f.h2 = nil
	if t := f.h2t; t != nil && t.armed.CompareAndSwap(u, nil) {
		t.timer.Stop()
	}
	if o.watch != nil {
		o.watch.Unwatch(o.token)
		o.watch = nil
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
		u.pool.DoneStream(u, s)
	}
	o.req.Reset()
	reqMapPool.Put(o.req)
	o.req = nil
}

// isStreamReset reports whether err is the upstream resetting the stream
// (RST_STREAM), Envoy's UR.
func isStreamReset(err error) bool {
	var se *h2.StreamError
	return errors.As(err, &se) && se.Remote
}
