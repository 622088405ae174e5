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

// prefaceTimeout bounds the wait for the client's connection preface, as
// x/net's server does.
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
// success the returned connection replays the preface for x/net.
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

type writeDeadliner interface{ SetWriteDeadline(time.Time) error }

// armWrite bounds the response writes by stream_idle_timeout from now: a
// client that stops reading (a zero flow-control window) makes the write
// fail and the stream reset instead of holding the stream forever. Each
// write pushes the deadline on; the stream's own timer (made once per
// pooled stream) fires at the deadline, so a write costs no allocation and
// no message to x/net's serve loop, as a SetWriteDeadline per write did.
func (hs *h2Stream) armWrite() {
	d := hs.stream.cfg.streamIdleTimeout
	if d <= 0 {
		return
	}
	hs.wmu.Lock()
	hs.writeBy = time.Now().Add(d)
	if !hs.wArmed {
		hs.wArmed = true
		if hs.wtimer == nil {
			hs.wtimer = time.AfterFunc(d, hs.writeTimeout)
		} else {
			hs.wtimer.Reset(d)
		}
	}
	hs.wmu.Unlock()
}

// writeTimeout runs on the write timer: before the deadline (a later write
// moved it) it waits for the rest; past it, x/net resets the stream now
// (a deadline in the past), failing a blocked write. A timer left over from
// the stream's previous use finds writeBy zero or in the future.
func (hs *h2Stream) writeTimeout() {
	hs.wmu.Lock()
	defer hs.wmu.Unlock()
	if hs.writeBy.IsZero() || hs.w == nil {
		return
	}
	if left := time.Until(hs.writeBy); left > 0 {
		hs.wtimer.Reset(left)
		return
	}
	if wd, ok := hs.w.(writeDeadliner); ok {
		_ = wd.SetWriteDeadline(time.Now().Add(-time.Nanosecond))
	}
}

// endWrites stops the write timer as the stream's handler returns.
func (hs *h2Stream) endWrites() {
	hs.wmu.Lock()
	if hs.wArmed {
		hs.wtimer.Stop()
	}
	hs.writeBy, hs.wArmed, hs.w = time.Time{}, false, nil
	hs.wmu.Unlock()
}
