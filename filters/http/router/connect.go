package router

import (
	"context"
	"errors"
	"time"

	"github.com/outrider-proxy/outrider/proxy/headers"
	"github.com/outrider-proxy/outrider/proxy/streaminfo"
	"github.com/outrider-proxy/outrider/proxy/upstream"
)

// terminateConnect is Envoy's CONNECT termination (a route whose CONNECT
// upgrade config has connect_config): the router opens a TCP connection to
// the chosen host (through the cluster's transport socket), answers 200
// once it is up, and proxies the stream's bytes both ways. A failed connect
// is 503 UF, as for any request; the route timeout does not apply to the
// tunnel, the stream idle timeout does.
func (f *filter) terminateConnect() {
	info := f.cb.Info()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	raw, err := f.cluster.Dial(ctx, f.host)
	if err != nil {
		f.host.ReportResult(upstream.ResultConnectFailed)
		info.UpstreamTransportFailureReason = err.Error()
		reason := "remote connection failure"
		var ce *upstream.ConnectError
		if errors.As(err, &ce) && ce.Timeout {
			reason = "connection timeout"
		}
		f.cb.SendLocalReply(503,
			"upstream connect error or disconnect/reset before headers. reset reason: "+reason+", transport failure reason: "+err.Error(),
			"upstream_reset_before_response_started{remote_connection_failure}", streaminfo.UpstreamConnectionFailure)
		return
	}
	f.tun = tunnel{up: raw, raw: raw, connect: true}
	if tr := f.cluster.Transport(); tr != nil {
		wrapped, err := tr.Wrap(ctx, raw, "")
		if err != nil {
			f.closeRaw()
			f.host.ReportResult(upstream.ResultConnectFailed)
			info.UpstreamTransportFailureReason = err.Error()
			f.cb.SendLocalReply(503,
				"upstream connect error or disconnect/reset before headers. reset reason: remote connection failure, transport failure reason: "+err.Error(),
				"upstream_reset_before_response_started{remote_connection_failure}", streaminfo.UpstreamConnectionFailure)
			return
		}
		f.tun.up = wrapped
	}
	f.host.ReportResult(upstream.ResultConnectSuccess)
	info.FirstUpstreamRxByte = info.Since(time.Now())
	resp := f.cb.ResponseHeaders()
	resp.Reset()
	resp.SetInt(headers.Status, 200)
	if !f.cfg.suppressHeaders {
		resp.SetInt("x-envoy-upstream-service-time", time.Since(f.start).Milliseconds())
	}
	f.fctx.Response = resp
	f.route.ApplyResponseHeaders(resp, &f.fctx)
	if !f.cb.EncodeHeaders(resp, false) {
		f.closeRaw()
		return
	}
	f.idle = f.cb.StreamIdleTimeout()
	f.startTunnel()
}
