// Package router is Envoy's envoy.filters.http.router, the terminal HTTP
// filter: it applies the selected route (redirect, direct response, or a
// cluster), sends the request to a host through the cluster's HTTP/1 pool and
// streams the response back. One filter per connection is reused for each of
// its streams; it runs on the stream's goroutine and blocks on the upstream.
package router

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"sync/atomic"
	"syscall"
	"time"

	accesslogdatav3 "github.com/envoyproxy/go-control-plane/envoy/data/accesslog/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/outrider-proxy/outrider/proxy/confcheck"
	"github.com/outrider-proxy/outrider/proxy/h2"
	"github.com/outrider-proxy/outrider/proxy/headers"
	"github.com/outrider-proxy/outrider/proxy/http1"
	"github.com/outrider-proxy/outrider/proxy/httpfilter"
	"github.com/outrider-proxy/outrider/proxy/router"
	"github.com/outrider-proxy/outrider/proxy/streaminfo"
	"github.com/outrider-proxy/outrider/proxy/upstream"
	"github.com/outrider-proxy/outrider/telemetry/accesslog"
	"github.com/outrider-proxy/outrider/telemetry/formatter"
)

// Name is the filter's Envoy name.
const Name = "envoy.filters.http.router"

func init() {
	httpfilter.Registry.Register(Name, []string{"envoy.extensions.filters.http.router.v3.Router"},
		httpfilter.Factory{Terminal: true, Create: create})
}

// config is the compiled router config.
type config struct {
	clusters        *upstream.Manager
	suppressHeaders bool           // suppress_envoy_headers
	upstreamLogs    *accesslog.Set // upstream_log; nil logs nothing
	startChildSpan  bool           // start_child_span: the upstream request gets its own span (tracing.go)
}

func create(ctx *httpfilter.Context, a *anypb.Any) (httpfilter.Config, error) {
	c := &config{clusters: ctx.Clusters}
	if a != nil {
		p := &routerv3.Router{}
		if err := a.UnmarshalTo(p); err != nil {
			return nil, err
		}
		if err := confcheck.Fields(p, "", "dynamic_stats", "suppress_envoy_headers", "start_child_span",
			"respect_expected_rq_timeout", "upstream_log"); err != nil {
			return nil, err
		}
		c.suppressHeaders = p.GetSuppressEnvoyHeaders()
		c.startChildSpan = p.GetStartChildSpan()
		logs, err := accesslog.Compile(p.GetUpstreamLog(), accesslog.Options{Stats: ctx.Stats, Log: ctx.Log, Clusters: ctx.Clusters})
		if err != nil {
			return nil, fmt.Errorf("upstream_log: %w", err)
		}
		c.upstreamLogs = logs
	}
	return c, nil
}

// Close flushes and releases the upstream access logs.
func (c *config) Close() error { return c.upstreamLogs.Close() }

// New makes the filter for a connection's streams.
func (c *config) New(cb httpfilter.Callbacks) any { return &filter{cfg: c, cb: cb} }

// upstreamCodec is kept with a pooled upstream connection so its buffers are
// reused with it.
type upstreamCodec struct {
	dec *http1.Decoder
	enc *http1.Encoder
}

// codecOf is the HTTP/1 codec kept with pc, made at its first request with
// cluster c's limits on response headers.
func codecOf(pc *upstream.PooledConn, c *upstream.Cluster) *upstreamCodec {
	if codec, ok := pc.Codec.(*upstreamCodec); ok {
		return codec
	}
	fields, bytes := c.ResponseLimits(false)
	codec := &upstreamCodec{dec: http1.NewDecoder(pc.Conn, http1.Limits{MaxHeaders: fields, MaxHeaderBytes: bytes}),
		enc: http1.NewEncoder(pc.Conn)}
	pc.Codec = codec
	return codec
}

// filter is the per-stream state. Reset clears it between streams.
type filter struct {
	cfg *config
	cb  httpfilter.Callbacks

	route   *router.Route
	cluster *upstream.Cluster
	host    *upstream.Host
	pc      *upstream.PooledConn
	codec   *upstreamCodec
	method  []byte
	timeout time.Duration
	start   time.Time
	fctx    formatter.Context
	noBody  bool
	retried bool
	// Request body replay for retries: the body so far, while replay holds
	// (a retry policy, and the body within the buffer limit).
	body        []byte
	replay      bool
	reqComplete bool
	tried       []*upstream.Host // hosts of earlier attempts (previous_hosts)
	// Upgrades (WebSocket): upgrade marks an upgrade request; after a 101,
	// tunnelDone is closed when the upstream-to-client copy ends.
	upgrade    bool
	tunnelDone chan struct{}
	tun        tunnel // CONNECT and the upstream side of a tunnel (tunnel.go)
	setCookie  string // a generated hash-policy cookie to set on the response
	// maxStream is the end of the route's max_stream_duration; zero: none.
	maxStream time.Time
	// Upstream read timers: deadline is the route timeout's end (zero: none),
	// idle the stream idle timeout; idleArmed says which the deadline is.
	deadline  time.Time
	idle      time.Duration
	idleArmed bool
	// Retries and load balancing.
	policy      *retryPolicy // nil: no retries
	retryOnSet  retryOn
	retriesLeft int
	attempts    int
	tryDeadline time.Time // per_try_timeout's end for this attempt; zero: none
	perTryArmed bool
	ti          tryIdle // per_try_idle_timeout (pertryidle.go)
	lb          upstream.LBContext
	lctx        lazyCtx
	trl         headers.Map // response trailers, kept across streams
	// HTTP/2 upstream (h2stream.go): h2on when the cluster speaks HTTP/2 to
	// this request, h2 the attempt in flight (nil: none).
	h2on bool
	h2   *h2Up
	h2t  *h2Timer // the HTTP/2 attempts' timer, kept across streams; nil until armed
	// stopTimer bounds a pump's stop (duplex.go), kept across streams.
	stopTimer *time.Timer
	res       resilience // retry back-off, hedging and mirroring state (backoff.go)
	// Full duplex (duplex.go): pump reads an HTTP/1 upstream's response on a
	// helper goroutine (nil: none, the response is read synchronously);
	// upResp is its parse target, kept across streams; upMsg the response
	// framing and bodyOn that its body streams; upWriteFailed that the
	// upstream stopped taking the request body. downCtx is the client's
	// stream (nil: the downstream codec cannot tell a reset).
	pump          *pump
	upResp        headers.Map
	upMsg         http1.Message
	bodyOn        bool
	upWriteFailed bool
	downCtx       context.Context
	draining      bool // drain is on the stack
	// The HTTP/1 client-close watch (duplex.go): goneFn is clientClosed,
	// bound once; onGone interrupts the wait in progress; clientGone is set
	// by the watch's goroutine.
	goneFn      func()
	onGone      func()
	clientGone  atomic.Bool
	upInterrupt func()                   // interruptUpstream, bound once
	watchConn   atomic.Pointer[net.Conn] // the HTTP/1 upstream connection awaited
}

// Reset implements httpfilter.Resetter.
func (f *filter) Reset() {
	f.abandonShadows()
	f.release(false)
	f.lctx.reset(time.Time{}, nil)
	f.upResp.Reset()
	f.clientGone.Store(false)
	trl, up, gone, intr, timer := f.trl, f.upResp, f.goneFn, f.upInterrupt, f.h2t
	stopT := f.stopTimer
	*f = filter{cfg: f.cfg, cb: f.cb, trl: trl, upResp: up, goneFn: gone, upInterrupt: intr,
		h2t: timer, stopTimer: stopT}
}

func (f *filter) DecodeHeaders(h *headers.Map, end bool) httpfilter.Status {
	info := f.cb.Info()
	r := f.cb.Route()
	if r == nil {
		f.cb.SendLocalReply(404, "", "route_not_found", streaminfo.NoRouteFound)
		return httpfilter.Stop
	}
	f.route = r
	f.fctx = formatter.Context{Stream: info, Request: h}
	if dc, ok := f.cb.(duplexCallbacks); ok {
		f.downCtx = dc.DownstreamContext()
	}
	switch r.Kind() {
	case router.ActionRedirect:
		status, loc := r.Redirect(h)
		f.directReply(r, status, "", loc)
		return httpfilter.Stop
	case router.ActionDirectResponse:
		status, body := r.DirectResponse()
		f.directReply(r, status, string(body), "")
		return httpfilter.Stop
	case router.ActionCluster:
	default:
		f.cb.SendLocalReply(404, "", "route_not_found", streaminfo.NoRouteFound)
		return httpfilter.Stop
	}

	name := r.Cluster(h, rand.Uint64())
	info.UpstreamCluster = name
	f.cluster = f.cfg.clusters.Get(name)
	if f.cluster == nil {
		f.cb.SendLocalReply(503, "", "cluster_not_found", streaminfo.NoClusterFound)
		return httpfilter.Stop
	}
	f.host = f.cluster.ChooseHost(f.lbContext())
	if f.host == nil {
		f.cluster.Stats.UpstreamCxNoneHealthy().Inc()
		f.cb.SendLocalReply(503, "no healthy upstream", "no_healthy_upstream", streaminfo.NoHealthyUpstream)
		return httpfilter.Stop
	}
	info.UpstreamHost = f.host.Addr

	r.RewriteRequest(h)
	if r.AutoHostRewrite() && f.host.Hostname != "" {
		h.Set(headers.Authority, f.host.Hostname)
	}
	r.ApplyRequestHeaders(h, &f.fctx)
	f.traceUpstream(h, name)
	f.timeout = r.Timeout()
	f.applyMaxStreamDuration(h)
	if f.timeout > 0 && !f.cfg.suppressHeaders {
		h.SetInt("x-envoy-expected-rq-timeout-ms", f.timeout.Milliseconds())
	}
	f.method, _ = h.Get(headers.Method)
	f.noBody = end
	f.start = time.Now()
	f.attempts = 1
	f.setupRetries(h)
	f.reqComplete = end
	f.replay = f.policy != nil && !end
	f.body = f.body[:0]
	if f.timeout > 0 && end {
		f.deadline = f.start.Add(f.timeout) // the route timeout runs from the end of the request
	}
	f.deadline = f.capByMaxStream(f.deadline)
	if len(r.RequestMirrorPolicies()) > 0 && !h.Has("upgrade") {
		f.mirror(h, end)
	}
	if f.tun.connect = string(f.method) == "CONNECT"; f.tun.connect && r.TerminatesConnect() {
		f.terminateConnect()
		return httpfilter.Stop
	}
	if f.h2on = f.cluster.UseHTTP2(info.Protocol == "HTTP/2", f.host); f.h2on {
		if f.tun.connect || h.Has("upgrade") { // a tunnel over an HTTP/2 stream (connect_h2.go)
			f.h2Upgrade(h)
			return httpfilter.Stop
		}
		f.h2Send(h, end)
		return httpfilter.Stop
	}
	if !f.connect() {
		return httpfilter.Stop
	}
	if f.upgrade = h.Has("upgrade") || f.tun.connect; f.upgrade {
		// The connection manager kept Upgrade only for an allowed upgrade:
		// send the headers alone and wait for the 101 before any bytes.
		end = true
	}
	if err := f.codec.enc.WriteRequestHeaders(h, end); err != nil {
		f.upstreamFailed(err, false)
		return httpfilter.Stop
	}
	if end {
		f.sendAndAwait()
	} else if f.downCtx != nil || h.Has("expect") {
		// HTTP/2 client, or an Expect: 100-continue the connection manager
		// left to the upstream (proxy_100_continue): the headers go now and
		// the response (or the 100) may start before the body. Otherwise an
		// HTTP/1 request's headers go with its first body piece (a malformed
		// body never reaches the upstream).
		if err := f.codec.enc.Flush(); err != nil {
			f.upstreamFailed(err, false)
		} else {
			f.h1StartReader()
		}
	}
	return httpfilter.Stop
}

func (f *filter) DecodeData(p []byte, end bool) httpfilter.Status {
	if len(f.res.shadows) > 0 {
		f.mirrorData(p, end)
	}
	if f.h2 != nil && f.h2.hasBody {
		f.keepForReplay(p, end)
		f.h2Data(p, end)
		return httpfilter.Stop
	}
	if f.tunnelDone != nil {
		f.tunnelData(p, end)
		return httpfilter.Stop
	}
	if f.pc == nil {
		return httpfilter.Stop
	}
	f.keepForReplay(p, end)
	if f.pump != nil {
		f.duplexData(p, end)
		return httpfilter.Stop
	}
	if err := f.codec.enc.WriteData(p, end); err != nil {
		f.bodyWriteFailed(err)
		return httpfilter.Stop
	}
	if end {
		f.sendAndAwait()
	} else if err := f.codec.enc.Flush(); err != nil {
		f.bodyWriteFailed(err)
	} else if !f.upgrade {
		f.h1StartReader() // full duplex when the connection manager offers it
	}
	return httpfilter.Stop
}

func (f *filter) DecodeTrailers(t *headers.Map) httpfilter.Status {
	if len(f.res.shadows) > 0 {
		f.mirrorTrailers(t)
	}
	if f.h2 != nil && f.h2.hasBody {
		f.h2Trailers(t)
		return httpfilter.Stop
	}
	if f.pc == nil {
		return httpfilter.Stop
	}
	f.replay, f.reqComplete = false, true // trailers are not replayed
	if f.pump != nil {
		if !f.upWriteFailed && f.codec.enc.WriteTrailers(t) != nil {
			f.upWriteFailed = true
		}
		f.h1Sent()
		return httpfilter.Stop
	}
	if err := f.codec.enc.WriteTrailers(t); err != nil {
		f.bodyWriteFailed(err)
		return httpfilter.Stop
	}
	f.sendAndAwait()
	return httpfilter.Stop
}

// connect takes a pooled connection to the chosen host.
func (f *filter) connect() bool {
	f.lctx.reset(f.deadline, f.downCtx)
	f.lctx.high, f.lctx.down = f.highPriority(), f.cb.Info().Conn
	pc, err := f.cluster.PoolFor(f.host, f.cluster.TLSOverride(f.cb.RequestHeaders())).Get(&f.lctx)
	f.lctx.reset(time.Time{}, nil) // the wait is over: its context must not outlive the client's stream
	if err != nil {
		if f.downstreamDone() {
			// The client reset the stream while the request waited for a
			// connection: Envoy's cancelled pending request.
			f.cluster.Stats.UpstreamRqCancelled().Inc()
			f.cb.ResetStream(streaminfo.DownstreamConnectionTermination)
			return false
		}
		var overflow *upstream.OverflowError
		if errors.As(err, &overflow) {
			f.overflowed()
			return false
		}
		f.connectFailed(err)
		return false
	}
	f.pc = pc
	f.codec = codecOf(pc, f.cluster)
	return true
}

// duplexData sends a body piece while the response is pumped; at the
// request's end it runs the response to its end.
func (f *filter) duplexData(p []byte, end bool) {
	if !f.upWriteFailed {
		if f.codec.enc.WriteData(p, end) != nil || !end && f.codec.enc.Flush() != nil {
			f.upWriteFailed = true // the upstream's answer (or error) comes from the reader
		}
	}
	if end {
		f.h1Sent()
		return
	}
	if f.pump != nil && !f.pump.stopped {
		f.armRead() // request activity resets the stream idle timer
	}
}

// sendAndAwait flushes the request and streams the response back.
func (f *filter) sendAndAwait() {
	if err := f.codec.enc.Flush(); err != nil {
		f.upstreamFailed(err, false)
		return
	}
	f.requestSent()
	f.awaitResponse()
}

// directReply answers a redirect or direct_response route as Envoy does:
// a local reply (so local_reply_config applies, and a gRPC request gets a
// trailers-only answer) carrying the location (loc; "" for none) and the
// route's response headers. The headers are laid on the reply, each
// replacing what the reply has by that name.
func (f *filter) directReply(r *router.Route, status int, body, loc string) {
	rh := &f.trl // free until an upstream response's trailers
	rh.Reset()
	if loc != "" {
		rh.Set("location", loc)
	}
	f.fctx.Response = rh
	r.ApplyResponseHeaders(rh, &f.fctx)
	for _, fl := range rh.Fields() {
		f.cb.AddLocalReplyHeader(string(fl.Name), string(fl.Value))
	}
	rh.Reset()
	f.cb.SendLocalReply(status, body, "direct_response", 0)
}

// requestSent starts the timers that run from the end of the request: the
// route timeout and the per-try timeout.
func (f *filter) requestSent() {
	info := f.cb.Info()
	info.LastUpstreamTxByte = info.Since(time.Now())
	if f.timeout > 0 && f.deadline.IsZero() {
		f.deadline = time.Now().Add(f.timeout)
	}
	f.deadline = f.capByMaxStream(f.deadline)
	f.tryDeadline = time.Time{}
	if f.policy != nil && f.policy.perTry > 0 {
		f.tryDeadline = time.Now().Add(f.policy.perTry)
	}
	f.startTryIdle()
}

// watchCtx is a downstream HTTP/2 stream's context (proxy/h2): it tells
// a registered h2.Watcher of a client reset, without a closure.
type watchCtx interface {
	Watch(w h2.Watcher) (token uint64)
	Unwatch(token uint64) bool
}

// awaitResponse reads the upstream response and streams it back.
func (f *filter) awaitResponse() {
	info := f.cb.Info()
	f.idle = f.cb.StreamIdleTimeout()
	f.armRead()
	if wc, ok := f.downCtx.(watchCtx); ok {
		// The client resetting the stream interrupts the upstream read. The
		// watcher is the connection, not the filter: unwatching does not
		// wait for a run in progress, and the filter is reset for its next
		// stream meanwhile.
		defer wc.Unwatch(wc.Watch(f.pc))
	} else if f.downCtx != nil && f.downCtx.Done() != nil {
		conn := f.pc.Conn
		defer context.AfterFunc(f.downCtx, func() { _ = conn.SetReadDeadline(time.Now()) })()
	}
	if f.upInterrupt == nil {
		f.upInterrupt = f.interruptUpstream
	}
	f.watchConn.Store(&f.pc.Conn)
	watching := f.watchClient(f.upInterrupt)
	resp := f.cb.ResponseHeaders()
	var msg http1.Message
	for {
		resp.Reset()
		m, err := f.codec.dec.ReadResponseHeaders(resp, f.method)
		if watching {
			watching = false
			f.unwatchClient()
			f.watchConn.Store(nil)
		}
		if err != nil {
			if f.retryStale(err) {
				if f.pc != nil {
					f.sendAndAwait()
				}
				return
			}
			if f.hedge(err) {
				return
			}
			f.upstreamFailed(err, false)
			return
		}
		if code := resp.StatusCode(); code >= 100 && code < 200 && code != 101 {
			if code == 100 {
				f.continue100()
			}
			continue // 1xx from upstream are not proxied (proxy_100_continue is off)
		}
		msg = m
		break
	}
	info.FirstUpstreamRxByte = info.Since(time.Now())
	code := resp.StatusCode()
	if f.responseStatus(code) {
		return
	}
	http1.StripHopByHop(resp, f.tunnelResponse(code))
	if !f.cfg.suppressHeaders {
		resp.SetInt("x-envoy-upstream-service-time", time.Since(f.start).Milliseconds())
	}
	f.fctx.Response = resp
	f.route.ApplyResponseHeaders(resp, &f.fctx)
	if !f.cb.EncodeHeaders(resp, msg.NoBody) {
		f.release(false)
		return
	}
	if f.tunnelResponse(code) {
		f.startTunnel()
		return
	}
	if msg.NoBody {
		f.finished(msg.KeepAlive)
		return
	}
	for {
		if f.codec.dec.Buffered() == 0 {
			if !f.cb.Flush() {
				f.release(false)
				return
			}
			f.armRead()
		}
		p, err := f.codec.dec.ReadData()
		if err == io.EOF {
			f.trl.Reset()
			f.codec.dec.Trailers(&f.trl)
			if f.trl.Len() > 0 {
				f.cb.EncodeTrailers(&f.trl)
			} else {
				f.cb.EncodeData(nil, true)
			}
			f.finished(msg.KeepAlive && !msg.CloseDelimited)
			return
		}
		if err != nil {
			f.upstreamFailed(err, true)
			return
		}
		if f.codec.dec.BodyDone() {
			// The last piece of a Content-Length body: sent as the end, so
			// an HTTP/2 client gets it with END_STREAM in one frame.
			f.cb.EncodeData(p, true)
			f.finished(msg.KeepAlive && !msg.CloseDelimited)
			return
		}
		if !f.cb.EncodeData(p, false) {
			f.release(false)
			return
		}
	}
}

// interruptUpstream ends the wait on the HTTP/1 upstream (the client-close
// watch's goroutine calls it).
func (f *filter) interruptUpstream() {
	if c := f.watchConn.Load(); c != nil {
		_ = (*c).SetReadDeadline(time.Now())
	}
}

// retryStale resends a body-less request once on a new connection when a
// reused keep-alive connection turns out to have been closed by the upstream
// before it answered: the request cannot have been processed.
func (f *filter) retryStale(err error) bool {
	if f.retried || !f.pc.Reused || !f.noBody || !(errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET)) {
		return false
	}
	f.retried = true
	f.release(false)
	if f.connect() {
		if err := f.codec.enc.WriteRequestHeaders(f.cb.RequestHeaders(), true); err != nil {
			f.upstreamFailed(err, false)
		}
	}
	return true
}

func (f *filter) finished(reusable bool) {
	info := f.cb.Info()
	info.LastUpstreamRxByte = info.Since(time.Now())
	f.release(reusable)
}

// release returns the upstream connection, once.
func (f *filter) release(reusable bool) {
	if f.tun.raw != nil {
		f.closeRaw()
	} else if f.h2 != nil {
		f.h2Release()
	} else if f.pc == nil {
		return
	} else {
		if f.pump != nil {
			f.stopH1Reader()
		}
		_ = f.pc.Conn.SetReadDeadline(time.Time{})
		f.pc.Release(reusable)
		f.pc = nil
	}
	if f.cfg.upstreamLogs != nil {
		ctx := f.fctx
		ctx.Response = f.cb.ResponseHeaders()
		ctx.LogType = accesslogdatav3.AccessLogType_UpstreamEnd
		f.cfg.upstreamLogs.Log(&ctx)
	}
}

// armRead sets the upstream read deadline to the earlier of the route
// timeout's end and now plus the stream idle timeout, remembering which.
func (f *filter) armRead() {
	d := f.deadline
	f.idleArmed, f.perTryArmed = false, false
	if !f.tryDeadline.IsZero() && (d.IsZero() || f.tryDeadline.Before(d)) {
		d, f.perTryArmed = f.tryDeadline, true
	}
	if f.idle > 0 {
		if t := time.Now().Add(f.idle); d.IsZero() || t.Before(d) {
			d, f.idleArmed = t, true
		}
	}
	if t, ok := f.tryIdleEnd(d); ok {
		d, f.idleArmed, f.perTryArmed = t, false, false
	}
	if f.downstreamDone() {
		d = time.Now() // the client is gone: stop waiting for the upstream
	}
	_ = f.pc.Conn.SetReadDeadline(d)
}
