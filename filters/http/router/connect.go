package router

import (
	"context"
	"errors"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/outrider-proxy/outrider/proxy/headers"
	"github.com/outrider-proxy/outrider/proxy/streaminfo"
	"github.com/outrider-proxy/outrider/proxy/upstream"
)

// dialConnect opens the tunnel's TCP connection to the chosen host,
// reporting a failure to outlier detection.
func (f *filter) dialConnect(ctx context.Context) (*upstream.UpstreamConn, error) {
	raw, err := f.cluster.Dial(ctx, f.host)
	if err != nil {
		f.host.ReportResult(upstream.ResultConnectFailed)
	}
	return raw, err
}

// connectRetry applies the route's retry policy to a terminated CONNECT
// whose connect failed (retry_on connect-failure, reset, ...): it takes a
// retry from the budget, backs off as Envoy does and picks another host
// (avoiding the hosts tried with previous_hosts). false: no retry.
func (f *filter) connectRetry() bool {
	p := f.policy
	if p == nil || f.retryOnSet&failConnect == 0 {
		return false
	}
	st := f.cluster.Stats
	if f.retriesLeft <= 0 {
		st.UpstreamRqRetryLimitExceeded().Inc()
		f.cb.Info().SetFlag(streaminfo.UpstreamRetryLimitExceeded)
		return false
	}
	ok, done := f.cluster.AdmitRetryPriority(f.highPriority())
	if !ok {
		return false
	}
	defer done()
	f.retriesLeft--
	f.attempts++
	st.UpstreamRqRetry().Inc()
	if backoff := min(p.base<<min(f.attempts-2, 10), p.max); backoff > 0 {
		st.UpstreamRqRetryBackoffExp().Inc()
		time.Sleep(time.Duration(rand.Int64N(int64(backoff) + 1)))
	}
	f.tried = append(f.tried, f.host)
	h := f.cluster.ChooseHost(f.lbContext())
	for i := 1; p.previousHosts && i < p.hostAttempts && h != nil && slices.Contains(f.tried, h); i++ {
		h = f.cluster.ChooseHost(f.lbContext())
	}
	if h == nil {
		return false
	}
	f.host = h
	f.cb.Info().UpstreamHost = h.Addr
	return true
}

// terminateConnect is Envoy's CONNECT termination (a route whose CONNECT
// upgrade config has connect_config): the router opens a TCP connection to
// the chosen host (through the cluster's transport socket), answers 200
// once it is up, and proxies the stream's bytes both ways. A failed connect
// is retried under the route's retry policy, then answered 503 UF; the
// route timeout does not apply to the tunnel, the stream idle timeout does.
func (f *filter) terminateConnect() {
	info := f.cb.Info()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	raw, err := f.dialConnect(ctx)
	for err != nil && f.connectRetry() { // bounded by num_retries
		raw, err = f.dialConnect(ctx)
	}
	if err != nil {
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
	if tr := f.cluster.TransportFor(f.host); tr != nil {
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
