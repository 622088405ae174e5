package router

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"time"

	"github.com/outrider-proxy/outrider/proxy/h2"
	"github.com/outrider-proxy/outrider/proxy/headers"
	"github.com/outrider-proxy/outrider/proxy/streaminfo"
	"github.com/outrider-proxy/outrider/proxy/transport"
	"github.com/outrider-proxy/outrider/proxy/upstream"
	"golang.org/x/net/http2"
)

// h2TunnelUp is the upstream side of a tunnel carried by an HTTP/2 stream
// (an extended or plain CONNECT): writes are the request's DATA, reads the
// response's, CloseWrite ends the request (END_STREAM). A read past the
// read deadline fails and resets the stream. Close, from any goroutine,
// resets the stream, so that blocked reads and writes return, and gives it
// back to the pool, once no read or write is using it.
type h2TunnelUp struct {
	pool *upstream.H2Pool
	ctx  context.Context // the stream's, for DoneStream
	s    *h2.ClientStream
	rest []byte // unread bytes of the last piece; the reader's alone

	mu       sync.Mutex
	deadline time.Time // the read deadline; zero: none
	users    int       // reads and writes in progress
	closed   bool
	released bool
}

// enter starts a read or write; false: the tunnel is closed.
func (t *h2TunnelUp) enter() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return false
	}
	t.users++
	return true
}

// leave ends a read or write, releasing the stream when it was the last
// one of a closed tunnel.
func (t *h2TunnelUp) leave() {
	t.mu.Lock()
	t.users--
	release := t.closed && t.users == 0 && !t.released
	t.released = t.released || release
	t.mu.Unlock()
	if release {
		t.pool.DoneStream(t.ctx, t.s)
	}
}

func (t *h2TunnelUp) Read(p []byte) (int, error) {
	if !t.enter() {
		return 0, errAborted
	}
	defer t.leave()
	if len(t.rest) > 0 {
		n := copy(p, t.rest)
		t.rest = t.rest[n:]
		return n, nil
	}
	t.mu.Lock()
	d := t.deadline
	t.mu.Unlock()
	piece, err := t.s.ReadData(d)
	if err != nil {
		if errors.Is(err, os.ErrDeadlineExceeded) {
			t.s.Reset(http2.ErrCodeCancel)
		}
		return 0, err
	}
	n := copy(p, piece)
	t.rest = piece[n:]
	return n, nil
}

func (t *h2TunnelUp) Write(p []byte) (int, error) {
	if !t.enter() {
		return 0, errAborted
	}
	defer t.leave()
	if err := t.s.WriteData(p, false); err != nil {
		return 0, err
	}
	return len(p), nil
}

func (t *h2TunnelUp) CloseWrite() error {
	if !t.enter() {
		return errAborted
	}
	defer t.leave()
	return t.s.WriteData(nil, true)
}

func (t *h2TunnelUp) LocalAddr() net.Addr  { return nil }
func (t *h2TunnelUp) RemoteAddr() net.Addr { return nil }

func (t *h2TunnelUp) Close() error {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return nil
	}
	t.closed = true
	if t.users > 0 {
		// The reads and writes in progress return; the last one releases
		// the stream (leave waits for mu, so s is still this tunnel's).
		t.s.Reset(http2.ErrCodeCancel)
		t.mu.Unlock()
		return nil
	}
	t.released = true
	t.mu.Unlock()
	t.pool.DoneStream(t.ctx, t.s)
	return nil
}

func (t *h2TunnelUp) SetDeadline(d time.Time) error { return t.SetReadDeadline(d) }
func (t *h2TunnelUp) SetWriteDeadline(time.Time) error {
	return nil // writes are bounded by the stream's flow control
}

// SetReadDeadline bounds the next reads (a read in progress keeps the
// deadline it started with).
func (t *h2TunnelUp) SetReadDeadline(d time.Time) error {
	t.mu.Lock()
	t.deadline = d
	t.mu.Unlock()
	return nil
}

// h2Skip are the request fields HTTP/2 forbids or that travel as
// pseudo-headers.
var h2Skip = map[string]bool{
	"connection": true, "keep-alive": true, "proxy-connection": true, "transfer-encoding": true,
	"upgrade": true, "host": true, "content-length": true,
}

// h2Upgrade sends an upgrade (WebSocket) or a CONNECT to an HTTP/2
// upstream, as Envoy's codec does: an upgrade becomes an extended CONNECT
// (RFC 8441: :protocol from Upgrade, no Upgrade or Connection), a CONNECT
// stays one. A 2xx answer starts the tunnel (an upgrade's is given to the
// client as 101 with Upgrade and Connection: upgrade); any other answer is
// proxied as a response. Failures are not retried.
func (f *filter) h2Upgrade(h *headers.Map) {
	pool := f.cluster.H2Pool(f.host)
	req := reqMapPool.Get().(*headers.Map)
	defer func() { req.Reset(); reqMapPool.Put(req) }()
	req.Set(headers.Method, "CONNECT")
	proto := ""
	if !f.tun.connect {
		v, _ := h.Get("upgrade")
		proto = string(v)
		req.Set(headers.Protocol, proto)
		scheme := "http"
		if f.cluster.UsesTLS(f.host) {
			scheme = "https"
		}
		req.Set(headers.Scheme, scheme)
		if p, ok := h.Get(headers.Path); ok && len(p) > 0 {
			req.SetBytes(headers.Path, p)
		} else {
			req.Set(headers.Path, "/")
		}
	}
	if a, ok := h.Get(headers.Authority); ok {
		req.SetBytes(headers.Authority, a)
	} else {
		req.Set(headers.Authority, f.host.Addr.String())
	}
	for _, fl := range h.Fields() {
		name := string(fl.Name)
		if len(name) > 0 && name[0] == ':' || h2Skip[name] || name == "te" {
			continue
		}
		req.AddBytes(name, fl.Value)
	}
	ctx := transport.WithDownstream(context.Background(), f.cb.Info().Conn)
	var deadline time.Time
	if f.timeout > 0 { // the route timeout bounds the wait for the answer
		deadline = time.Now().Add(f.timeout)
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, deadline)
		defer cancel() // the stream keeps ctx only for its priority
	}
	s, err := pool.OpenStream(ctx, req, false)
	var rh0 *headers.Map
	if err == nil {
		if rh0, err = s.ReadHeaders(deadline); err != nil {
			pool.DoneStream(ctx, s)
		}
	}
	if err != nil {
		timedOut := errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, context.DeadlineExceeded)
		f.h2TunnelFailed(err, timedOut)
		return
	}
	up := &h2TunnelUp{pool: pool, ctx: ctx, s: s}
	info := f.cb.Info()
	info.FirstUpstreamRxByte = info.Since(time.Now())
	code := rh0.StatusCode()
	rh := f.h2Response(code, rh0)
	tunnel := code >= 200 && code < 300
	if tunnel && !f.tun.connect {
		rh.SetInt(headers.Status, 101)
		rh.Del("content-length")
		rh.Set("upgrade", proto)
		rh.Set("connection", "upgrade")
	}
	if !f.cfg.suppressHeaders {
		rh.SetInt("x-envoy-upstream-service-time", time.Since(f.start).Milliseconds())
	}
	f.fctx.Response = rh
	f.route.ApplyResponseHeaders(rh, &f.fctx)
	f.tun.up, f.tun.raw = up, up
	if !f.cb.EncodeHeaders(rh, false) {
		f.closeRaw()
		return
	}
	f.idle = f.cb.StreamIdleTimeout()
	if tunnel {
		f.startTunnel()
		return
	}
	f.h2TunnelRefused(up)
}

// h2TunnelRefused proxies the body of a non-2xx answer to an upgrade or
// CONNECT, then ends the stream.
func (f *filter) h2TunnelRefused(up *h2TunnelUp) {
	up.CloseWrite()
	buf := make([]byte, 16<<10)
	for range 1 << 30 { // bounded by the body; each round reads or fails
		if f.idle > 0 {
			_ = up.SetReadDeadline(time.Now().Add(f.idle))
		}
		n, err := up.Read(buf)
		if n > 0 && !f.cb.EncodeData(buf[:n], false) {
			break
		}
		if err == io.EOF {
			f.cb.EncodeData(nil, true)
			break
		}
		if err != nil {
			f.cb.ResetStream(streaminfo.UpstreamConnectionTermination)
			break
		}
	}
	f.closeRaw()
}

// h2TunnelFailed answers a failed upgrade or CONNECT stream to an HTTP/2
// upstream: 503 UO on overflow, 503 UF when connecting failed, 504 UT on the
// route timeout, else 503 UC.
func (f *filter) h2TunnelFailed(err error, timedOut bool) {
	var ov *upstream.OverflowError
	var ce *upstream.ConnectError
	switch {
	case errors.As(err, &ov):
		f.overflowed()
	case errors.As(err, &ce):
		f.host.ReportResult(upstream.ResultConnectFailed)
		f.cb.Info().UpstreamTransportFailureReason = err.Error()
		f.cb.SendLocalReply(503,
			"upstream connect error or disconnect/reset before headers. reset reason: remote connection failure, transport failure reason: "+err.Error(),
			"upstream_reset_before_response_started{remote_connection_failure}", streaminfo.UpstreamConnectionFailure)
	case timedOut:
		f.cluster.Stats.UpstreamRqTimeout().Inc()
		f.cb.SendLocalReply(504, "upstream request timeout", "upstream_response_timeout", streaminfo.UpstreamRequestTimeout)
	default:
		f.host.ReportResult(upstream.ResultRequestFailed)
		f.cb.SendLocalReply(503, "upstream connect error or disconnect/reset before headers. reset reason: connection termination",
			"upstream_reset_before_response_started{connection_termination}", streaminfo.UpstreamConnectionTermination)
	}
}
