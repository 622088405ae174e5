package hcm

import (
	"io"
	"net"
	"time"

	"github.com/outrider-proxy/outrider/proxy/listenerfilter"
)

// Envoy's premature-reset defense (CVE-2023-44487, "rapid reset"), with the
// defaults of its runtime keys overload.premature_reset_total_stream_count
// and overload.premature_reset_min_stream_lifetime_seconds.
const (
	prematureResetTotalStreams = 500
	prematureResetMinLifetime  = time.Second
)

// prefaceTimeout bounds the wait for the client's connection preface (the
// bound x/net's server has).
const prefaceTimeout = 10 * time.Second

// streamClosed counts a closed stream for the premature-reset defense: a
// stream the client reset within prematureResetMinLifetime is premature.
// Once premature resets are half of prematureResetTotalStreams (before that
// many streams closed) or half of all closed streams (after), the
// connection is closed (Envoy's abort with
// downstream_rq_too_many_premature_resets), so a client that opens and
// resets streams faster than they complete cannot make the proxy work
// without bound.
func (hc *h2Conn) streamClosed(premature bool) {
	closed := hc.closedStreams.Add(1)
	resets := hc.prematureResets.Load()
	if premature {
		resets = hc.prematureResets.Add(1)
	}
	if closed < prematureResetTotalStreams {
		if resets*2 < prematureResetTotalStreams {
			return
		}
	} else if resets*2 < closed {
		return
	}
	if !hc.abusive.Swap(true) {
		hc.cfg.stats.rqTooManyPrematureResets.Inc()
		_ = hc.nc.Close()
	}
}

// readPreface reads the client connection preface (codec_type HTTP2). A
// connection that does not start with it is closed cleanly: its write side
// first, then what the client sent is drained briefly, so that the client
// sees the connection closed rather than reset (RFC 9113 section 3.4). On
// success the returned connection replays the preface for the codec.
func readPreface(c net.Conn) (net.Conn, bool) {
	_ = c.SetReadDeadline(time.Now().Add(prefaceTimeout))
	buf := make([]byte, len(h2Preface))
	n, err := io.ReadFull(c, buf)
	if err == nil && string(buf) == h2Preface {
		return listenerfilter.Replay(c, buf), true
	}
	if n == 0 && err != nil {
		return nil, false
	}
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
		_ = c.SetReadDeadline(time.Now().Add(time.Second))
		_, _ = io.CopyN(io.Discard, c, 64<<10)
	}
	return nil, false
}
