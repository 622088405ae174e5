package router

import (
	"context"
	"io"
	"time"

	"github.com/outrider-proxy/outrider/proxy/http1"
	"github.com/outrider-proxy/outrider/proxy/streaminfo"
)

// Full duplex. When a request with a body goes upstream and the connection
// manager supports it (duplexCallbacks), the upstream response is read on a
// helper goroutine and handed to the stream's goroutine one event at a time
// (a pump): the response streams to the client while the request body still
// streams up. Each event waits for the stream's goroutine to take it before
// the next read (backpressure: one piece in flight per direction). A stream
// without a request body, or whose body ended before the headers were sent,
// keeps the synchronous path and costs no goroutine.

// duplexCallbacks is the connection manager's support for full duplex
// (proxy/hcm): Duplex hands it a channel of functions to run on the stream's
// goroutine while it reads the request body (nil: stop); DownstreamContext
// is done when the client reset the stream (nil: the codec cannot tell).
type duplexCallbacks interface {
	Duplex(ch <-chan func())
	DownstreamContext() context.Context
}

// closeWatcher is the HTTP/1 connection manager's watch for a client that
// closes its connection while the response is awaited (proxy/hcm): fn runs
// once, on another goroutine, if it does; nil disarms.
type closeWatcher interface{ WatchClose(fn func()) }

// watchClient arms the client-close watch while the stream's goroutine
// waits for the upstream on HTTP/1; interrupt makes that wait end. It
// returns the disarm to defer, nil when nothing was armed.
func (f *filter) watchClient(interrupt func()) bool {
	if f.downCtx != nil {
		return false // HTTP/2: the stream's context says it
	}
	cw, ok := f.cb.(closeWatcher)
	if !ok {
		return false
	}
	f.onGone = interrupt
	if f.goneFn == nil {
		f.goneFn = f.clientClosed // bound once: arming allocates nothing
	}
	cw.WatchClose(f.goneFn)
	return true
}

// unwatchClient disarms the watch armed by watchClient.
func (f *filter) unwatchClient() {
	f.cb.(closeWatcher).WatchClose(nil)
}

// clientClosed runs on the watch's goroutine: the client closed its HTTP/1
// connection while the upstream's answer was awaited.
func (f *filter) clientClosed() {
	f.clientGone.Store(true)
	f.onGone()
}

// pump carries an upstream response read on a helper goroutine to the
// stream's goroutine. Only the stream's goroutine calls stop and reads
// stopped.
type pump struct {
	events  chan func()
	ack     chan struct{}
	quit    chan struct{}
	exited  chan struct{} // closed when the reader returned
	stopped bool
	dc      duplexCallbacks
	timer   **time.Timer // stop's wait, the filter's (kept across streams)
	// fn is the function post is running; run (bound once per pump) runs
	// it and acknowledges, so a post allocates nothing itself.
	fn  func()
	run func()
}

// startPump makes a pump and registers its events with the connection
// manager; nil when the callbacks do not support full duplex.
func (f *filter) startPump() *pump {
	dc, ok := f.cb.(duplexCallbacks)
	if !ok {
		return nil
	}
	p := &pump{events: make(chan func()), ack: make(chan struct{}, 1), quit: make(chan struct{}),
		exited: make(chan struct{}), dc: dc, timer: &f.stopTimer}
	p.run = func() { p.fn(); p.ack <- struct{}{} }
	dc.Duplex(p.events)
	return p
}

// post runs fn on the stream's goroutine and waits until it ran; false
// means the attempt is over and the reader must return.
func (p *pump) post(fn func()) bool {
	p.fn = fn // read by run on the stream's goroutine, after the send below
	select {
	case p.events <- p.run:
	case <-p.quit:
		return false
	}
	select {
	case <-p.ack:
	case <-p.quit:
		return false
	}
	select {
	case <-p.quit:
		return false
	default:
		return true
	}
}

// stop ends the pump: interrupt makes the reader's blocking read return,
// then stop waits for the reader (bounded: it re-interrupts).
func (p *pump) stop(interrupt func()) {
	if p.stopped {
		return
	}
	p.stopped = true
	close(p.quit)
	p.dc.Duplex(nil)
	t := p.timer
	for range 400 {
		interrupt()
		if *t == nil {
			*t = time.NewTimer(25 * time.Millisecond)
		} else {
			(*t).Reset(25 * time.Millisecond)
		}
		select {
		case <-p.exited:
			(*t).Stop()
			return
		case <-(*t).C:
		}
	}
}

// drain runs the pumps' events after the request ended, until the
// response is over or the client reset the stream. A retry inside an event
// starts another attempt whose pump it then follows.
func (f *filter) drain() {
	if f.draining {
		return // the drain below on the stack follows the new attempt
	}
	f.draining = true
	defer func() { f.draining = false }()
	var gone <-chan struct{}
	if f.downCtx != nil {
		gone = f.downCtx.Done()
	}
	for range 1 << 40 { // bounded by the response; each round takes one event
		p := f.livePump()
		if p == nil {
			return
		}
		select {
		case fn := <-p.events:
			fn()
		case <-gone:
			f.downstreamGone()
			return
		}
	}
}

// livePump is the attempt's running pump, nil when none.
func (f *filter) livePump() *pump {
	p := f.pump
	if p == nil && f.h2 != nil {
		p = f.h2.pump
	}
	if p == nil || p.stopped {
		return nil
	}
	return p
}

// downstreamGone resets the upstream request after the client reset the
// stream or went away: RST_STREAM CANCEL upstream (HTTP/2) or the
// connection closed (HTTP/1).
func (f *filter) downstreamGone() {
	if f.pc != nil || f.h2 != nil {
		f.cluster.Stats.UpstreamRqTxReset().Inc()
	}
	f.release(false)
	f.cb.ResetStream(streaminfo.DownstreamConnectionTermination)
}

// OnDestroy is the stream's end (the connection manager's destroyer): an
// upstream request still open (the client reset the stream, say) is reset.
func (f *filter) OnDestroy() {
	if f.tunnelDone != nil {
		// A tunnel whose stream ended without the client's end coming
		// through DecodeData (an idle timeout, a reset): while the
		// upstream-to-client copy runs, the stream's end closes the upstream
		// side and the copy ends on its own (startTunnel); once it is over,
		// the upstream side is released here.
		select {
		case <-f.tunnelDone:
			f.release(false)
		default:
		}
		return
	}
	if f.pc == nil && f.h2 == nil {
		return
	}
	f.cluster.Stats.UpstreamRqTxReset().Inc()
	f.release(false)
}

// downstreamDone reports whether the client reset the stream (HTTP/2) or
// closed its connection while the response was awaited (HTTP/1).
func (f *filter) downstreamDone() bool {
	return f.downCtx != nil && f.downCtx.Err() != nil || f.clientGone.Load()
}

// HTTP/1 upstream.

// h1StartReader reads the response on a helper goroutine while the request
// body streams up; false when full duplex is not available.
func (f *filter) h1StartReader() bool {
	p := f.startPump()
	if p == nil {
		return false
	}
	f.pump = p
	dec, resp, method := f.codec.dec, &f.upResp, f.method
	f.idle = f.cb.StreamIdleTimeout()
	f.armRead()
	go func() {
		defer close(p.exited)
		var msg http1.Message
		var err error
		for range 100 {
			resp.Reset()
			msg, err = dec.ReadResponseHeaders(resp, method)
			if err != nil || !(msg.Status >= 100 && msg.Status < 200 && msg.Status != 101) {
				break // 1xx from upstream are not proxied, but for 100 Continue (below)
			}
			if msg.Status == 100 && !p.post(f.continue100) {
				return
			}
		}
		if !p.post(func() { f.h1Head(msg, err) }) || err != nil || msg.NoBody || !f.bodyOn {
			return
		}
		for {
			b, err := dec.ReadData()
			if !p.post(func() { f.h1Piece(b, err) }) || err != nil {
				return
			}
		}
	}()
	return true
}

// h1Head handles the response headers read by the reader (stream's
// goroutine); it sets bodyOn when the body follows.
func (f *filter) h1Head(msg http1.Message, err error) {
	f.bodyOn = false
	if err != nil {
		// The reader has stopped: a hedge may take the connection over.
		if f.hedge(err) {
			return
		}
		f.upstreamFailed(err, false)
		return
	}
	info := f.cb.Info()
	info.FirstUpstreamRxByte = info.Since(time.Now())
	resp := f.cb.ResponseHeaders()
	resp.CopyFrom(&f.upResp)
	code := resp.StatusCode()
	if f.responseStatus(code) {
		return
	}
	http1.StripHopByHop(resp, false)
	if !f.cfg.suppressHeaders {
		resp.SetInt("x-envoy-upstream-service-time", time.Since(f.start).Milliseconds())
	}
	f.fctx.Response = resp
	f.route.ApplyResponseHeaders(resp, &f.fctx)
	if !f.cb.EncodeHeaders(resp, msg.NoBody) {
		f.release(false)
		return
	}
	if msg.NoBody {
		f.finished(msg.KeepAlive && f.reqComplete)
		return
	}
	f.upMsg, f.bodyOn = msg, true
	f.armRead()
}

// h1Piece handles one read of the response body (stream's goroutine).
func (f *filter) h1Piece(b []byte, err error) {
	if err == io.EOF {
		f.trl.Reset()
		f.codec.dec.Trailers(&f.trl)
		if f.trl.Len() > 0 {
			f.cb.EncodeTrailers(&f.trl)
		} else {
			f.cb.EncodeData(nil, true)
		}
		f.finished(f.upMsg.KeepAlive && !f.upMsg.CloseDelimited && f.reqComplete)
		return
	}
	if err != nil {
		f.upstreamFailed(err, true)
		return
	}
	if !f.cb.EncodeData(b, false) {
		f.release(false)
		return
	}
	f.armRead()
}

// h1Sent is the end of a full-duplex request on HTTP/1: the route and
// per-try timers start, and the response is pumped to its end.
func (f *filter) h1Sent() {
	p := f.pump
	if err := f.codec.enc.Flush(); err != nil {
		f.upWriteFailed = true
	}
	f.requestSent()
	if !p.stopped {
		f.armRead()
	}
	f.drain()
}

// stopH1Reader ends the HTTP/1 reader: its read fails at once.
func (f *filter) stopH1Reader() {
	p, conn := f.pump, f.pc.Conn
	f.pump = nil
	p.stop(func() { _ = conn.SetReadDeadline(time.Now()) })
}

// continue100 relays an upstream's 100 Continue to a client whose Expect:
// 100-continue the connection manager left to the upstream
// (proxy_100_continue); it does nothing otherwise.
func (f *filter) continue100() {
	if c, ok := f.cb.(interface{ Continue100() bool }); ok {
		c.Continue100()
	}
}
