package router

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"time"

	"github.com/outrider-proxy/outrider/proxy/headers"
	"github.com/outrider-proxy/outrider/proxy/http1"
	"github.com/outrider-proxy/outrider/proxy/streaminfo"
	"github.com/outrider-proxy/outrider/proxy/upstream"
)

// Failures of an upstream attempt, mapped to Envoy's local replies, resets,
// retries, response flags and stats.

// upstreamFailed maps an upstream error to Envoy's local reply or reset.
func (f *filter) upstreamFailed(err error, started bool) {
	st := f.cluster.Stats
	if f.downstreamDone() {
		f.downstreamGone()
		return
	}
	timedOut := errors.Is(err, os.ErrDeadlineExceeded)
	if !timedOut {
		st.UpstreamRqRxReset().Inc() // the upstream reset the stream or closed the connection
	}
	f.release(false)
	if timedOut && f.ti.armed {
		f.perTryIdleExpired()
		return
	}
	if timedOut && f.idleArmed {
		// The stream idle timeout: 408 before response headers, else a reset.
		if f.cb.ResponseStarted() {
			f.cb.ResetStream(streaminfo.StreamIdleTimeout)
			return
		}
		f.cb.SendLocalReply(408, "stream timeout", "stream_idle_timeout", streaminfo.StreamIdleTimeout)
		return
	}
	if timedOut && f.perTryArmed && !f.cb.ResponseStarted() {
		st.UpstreamRqPerTryTimeout().Inc()
		f.host.ReportResult(upstream.ResultTimeout)
		if f.tryRetry(failReset, nil) {
			return
		}
	}
	if timedOut && !f.maxStream.IsZero() && !time.Now().Before(f.maxStream) {
		// max_stream_duration: 408, and DEADLINE_EXCEEDED to gRPC clients.
		if f.cb.ResponseStarted() {
			f.cb.ResetStream(streaminfo.UpstreamMaxStreamDurationReached)
			return
		}
		if ct, _ := f.cb.RequestHeaders().Get("content-type"); headers.IsGRPC(ct) {
			f.cb.AddLocalReplyHeader("grpc-status", "4") // DEADLINE_EXCEEDED
		}
		f.cb.SendLocalReply(408, "upstream max stream duration reached", "upstream_max_stream_duration_reached", streaminfo.UpstreamMaxStreamDurationReached)
		return
	}
	if timedOut {
		st.UpstreamRqTimeout().Inc()
		f.host.Stats().RqTimeout.Add(1)
		f.host.ReportResult(upstream.ResultTimeout)
		if f.cb.ResponseStarted() {
			f.cb.ResetStream(streaminfo.UpstreamRequestTimeout)
			return
		}
		f.cb.SendLocalReply(504, "upstream request timeout", "upstream_response_timeout", streaminfo.UpstreamRequestTimeout)
		return
	}
	if f.cb.ResponseStarted() || started {
		if isStreamReset(err) {
			f.cb.ResetStream(streaminfo.UpstreamRemoteReset)
			return
		}
		f.cb.ResetStream(streaminfo.UpstreamConnectionTermination)
		return
	}
	f.host.ReportResult(upstream.ResultRequestFailed)
	if f.tryRetry(failReset, nil) {
		return
	}
	var perr *http1.Error
	if errors.As(err, &perr) {
		// 502, as Envoy since 1.18 (return_502_for_upstream_protocol_errors).
		f.cb.SendLocalReply(502, "upstream connect error or disconnect/reset before headers. reset reason: protocol error",
			"upstream_reset_before_response_started{protocol_error}", streaminfo.UpstreamProtocolError)
		return
	}
	reason := "connection termination"
	var ne net.Error
	if !errors.Is(err, io.EOF) && !errors.As(err, &ne) {
		reason = fmt.Sprint(err)
	}
	f.cb.SendLocalReply(503, "upstream connect error or disconnect/reset before headers. reset reason: "+reason,
		"upstream_reset_before_response_started{connection_termination}", streaminfo.UpstreamConnectionTermination)
}

// overflowed answers a circuit breaker's refusal: 503 UO.
func (f *filter) overflowed() {
	f.cb.AddLocalReplyHeader("x-envoy-overloaded", "true")
	f.cb.SendLocalReply(503, "upstream connect error or disconnect/reset before headers. reset reason: overflow",
		"upstream_reset_before_response_started{overflow}", streaminfo.UpstreamOverflow)
}

// connectFailed reports the failed connect to outlier detection, then
// retries or answers 503 UF.
func (f *filter) connectFailed(err error) {
	f.host.ReportResult(upstream.ResultConnectFailed)
	if f.tryRetry(failConnect, nil) {
		return
	}
	info := f.cb.Info()
	info.UpstreamTransportFailureReason = err.Error()
	f.cb.SendLocalReply(503,
		"upstream connect error or disconnect/reset before headers. reset reason: remote connection failure, transport failure reason: "+err.Error(),
		"upstream_reset_before_response_started{remote_connection_failure}", streaminfo.UpstreamConnectionFailure)
}

// bodyWriteFailed handles an upstream that stopped reading the request
// body: when it answered first (a 413, say) that answer is proxied; the
// client connection then closes because its request was not read to the end.
func (f *filter) bodyWriteFailed(err error) {
	if f.codec.dec.Buffered() == 0 {
		_ = f.pc.Conn.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		if f.codec.dec.WaitData() != nil {
			f.upstreamFailed(err, false)
			return
		}
	}
	f.awaitResponse()
}
