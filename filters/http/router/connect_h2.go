package router

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/outrider-proxy/outrider/proxy/headers"
	"github.com/outrider-proxy/outrider/proxy/streaminfo"
	"github.com/outrider-proxy/outrider/proxy/upstream"
)

// h2TunnelUp is the upstream side of a tunnel carried by an HTTP/2 stream
// (an extended or plain CONNECT): writes go to the request body, reads come
// from the response body, CloseWrite ends the request (END_STREAM). A read
// deadline, when it expires, cancels the stream. Close cancels the stream
// and gives its slot back to the pool, once.
type h2TunnelUp struct {
	pool   *upstream.H2Pool
	pw     *io.PipeWriter
	body   io.ReadCloser
	cancel context.CancelFunc

	mu    sync.Mutex
	timer *time.Timer // the read deadline; nil when none was set
	once  sync.Once
}

func (t *h2TunnelUp) Read(p []byte) (int, error)  { return t.body.Read(p) }
func (t *h2TunnelUp) Write(p []byte) (int, error) { return t.pw.Write(p) }
func (t *h2TunnelUp) CloseWrite() error           { return t.pw.Close() }
func (t *h2TunnelUp) LocalAddr() net.Addr         { return nil }
func (t *h2TunnelUp) RemoteAddr() net.Addr        { return nil }

func (t *h2TunnelUp) Close() error {
	t.once.Do(func() {
		t.mu.Lock()
		if t.timer != nil {
			t.timer.Stop()
		}
		t.mu.Unlock()
		t.pw.CloseWithError(errAborted)
		t.cancel()
		_ = t.body.Close()
		t.pool.Done()
	})
	return nil
}

func (t *h2TunnelUp) SetDeadline(d time.Time) error { return t.SetReadDeadline(d) }
func (t *h2TunnelUp) SetWriteDeadline(time.Time) error {
	return nil // the request body pipe is bounded by x/net's flow control
}

func (t *h2TunnelUp) SetReadDeadline(d time.Time) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	switch {
	case d.IsZero():
		if t.timer != nil {
			t.timer.Stop()
		}
	case t.timer == nil:
		t.timer = time.AfterFunc(time.Until(d), t.cancel)
	default:
		t.timer.Reset(time.Until(d))
	}
	return nil
}

// h2Upgrade sends an upgrade (WebSocket) or a CONNECT to an HTTP/2
// upstream, as Envoy's codec does: an upgrade becomes an extended CONNECT
// (RFC 8441: :protocol from Upgrade, no Upgrade or Connection), a CONNECT
// stays one. A 2xx answer starts the tunnel (an upgrade's is given to the
// client as 101 with Upgrade and Connection: upgrade); any other answer is
// proxied as a response. Failures are not retried.
func (f *filter) h2Upgrade(h *headers.Map) {
	pool := f.cluster.H2Pool(f.host)
	ctx, cancel := context.WithCancel(context.Background())
	scheme := "http"
	if f.cluster.UsesTLS(f.host) {
		scheme = "https"
	}
	req := &http.Request{Method: http.MethodConnect, Proto: "HTTP/2.0", ProtoMajor: 2, Header: make(http.Header, h.Len()),
		URL: &url.URL{Scheme: scheme, Host: f.host.Addr.String()}, ContentLength: -1}
	proto := ""
	if !f.tun.connect {
		v, _ := h.Get("upgrade")
		proto = string(v)
		req.Header[":protocol"] = []string{proto}
	}
	for _, fl := range h.Fields() {
		name := string(fl.Name)
		switch {
		case name == headers.Path && !f.tun.connect:
			p := string(fl.Value)
			if i := strings.IndexByte(p, '?'); i >= 0 {
				req.URL.RawQuery, p = p[i+1:], p[:i]
			}
			req.URL.Opaque = p
		case name == headers.Authority:
			req.Host = string(fl.Value)
		case len(name) > 0 && name[0] == ':', h2Skip[name], name == "te":
		default:
			req.Header[name] = append(req.Header[name], string(fl.Value))
		}
	}
	if _, ok := req.Header["user-agent"]; !ok {
		req.Header["user-agent"] = []string{""}
	}
	pr, pw := io.Pipe()
	req.Body = pr
	var timer *time.Timer
	if f.timeout > 0 { // the route timeout bounds the wait for the answer
		timer = time.AfterFunc(f.timeout, cancel)
	}
	resp, err := pool.RoundTrip(req.WithContext(ctx))
	timedOut := timer != nil && !timer.Stop()
	if err != nil {
		pw.CloseWithError(errAborted)
		cancel()
		f.h2TunnelFailed(err, timedOut)
		return
	}
	up := &h2TunnelUp{pool: pool, pw: pw, body: resp.Body, cancel: cancel}
	info := f.cb.Info()
	info.FirstUpstreamRxByte = info.Since(time.Now())
	code := resp.StatusCode
	rh := f.cb.ResponseHeaders()
	rh.Reset()
	rh.SetInt(headers.Status, int64(code))
	copyHeader(rh, resp.Header)
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
