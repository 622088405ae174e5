package router

import (
	"errors"
	"os"
	"sync/atomic"
	"time"

	"github.com/outrider-proxy/outrider/proxy/upstream"
)

// The HTTP/2 upstream's timers and failures; the attempt itself (h2Up) is
// in h2stream.go.

// errUpTimeout is the cancel cause of an expired route, per-try or idle timer.
var errUpTimeout = errors.New("upstream timeout")

const (
	armNone int32 = iota
	armRoute
	armPerTry
	armIdle
)

// h2Duplex ends a full-duplex request: the timers that run from the
// request's end start and the response is pumped to its end.
func (f *filter) h2Duplex() {
	f.h2End()
	f.h2Timers()
	f.drain()
}

// h2Arm points the timer at the earliest of the route timeout, the per-try
// timeout and the stream idle timeout.
func (f *filter) h2Arm() {
	u := f.h2
	d, kind := f.deadline, armNone
	if !d.IsZero() {
		kind = armRoute
	}
	if !f.tryDeadline.IsZero() && (d.IsZero() || f.tryDeadline.Before(d)) {
		d, kind = f.tryDeadline, armPerTry
	}
	if f.idle > 0 {
		if t := time.Now().Add(f.idle); d.IsZero() || t.Before(d) {
			d, kind = t, armIdle
		}
	}
	if t, ok := f.tryIdleEnd(d); ok {
		d, kind = t, armTryIdle
	}
	u.kind.Store(kind)
	t := f.h2t
	if kind == armNone {
		if t != nil {
			t.armed.Store(nil)
			t.timer.Stop()
		}
		return
	}
	u.at.Store(d.UnixNano())
	if t == nil {
		t = &h2Timer{}
		f.h2t = t
		t.armed.Store(u)
		t.timer = time.AfterFunc(time.Until(d), t.fire)
		return
	}
	t.armed.Store(u)
	t.timer.Reset(time.Until(d))
}

// h2Timer is a filter's timer for its HTTP/2 attempts, kept across
// streams so that arming it allocates nothing; armed is the attempt it is
// armed for (nil: none).
type h2Timer struct {
	timer *time.Timer
	armed atomic.Pointer[h2Up]
}

// fire cancels the attempt the timer was armed for with errUpTimeout once
// its deadline passed. A firing left over from an earlier arming finds no
// attempt, or a deadline still ahead and waits for it.
func (t *h2Timer) fire() {
	u := t.armed.Load()
	if u == nil {
		return
	}
	if left := time.Until(time.Unix(0, u.at.Load())); left > 0 {
		t.timer.Reset(left) // early (or stale): wait for the rest
		return
	}
	u.cancelWith(errUpTimeout)
}

// h2Timers starts the timers that run from the request's end (the route
// and per-try timeouts) and arms the attempt's timer.
func (f *filter) h2Timers() {
	info := f.cb.Info()
	info.LastUpstreamTxByte = info.Since(time.Now())
	if f.timeout > 0 && f.deadline.IsZero() {
		f.deadline = time.Now().Add(f.timeout)
	}
	f.tryDeadline = time.Time{}
	if f.policy != nil && f.policy.perTry > 0 {
		f.tryDeadline = time.Now().Add(f.policy.perTry)
	}
	f.startTryIdle()
	f.idle = f.cb.StreamIdleTimeout()
	if f.h2 != nil {
		f.h2Arm()
	}
}

// h2NoHead handles an attempt that got no response headers: an
// auto_config host that chose HTTP/1.1 by ALPN gets the request again over
// HTTP/1 (a body-less one), else the failure goes to h2Failed. It reports
// false: there is no body to read.
func (f *filter) h2NoHead(err error) bool {
	if errors.Is(err, upstream.ErrNoH2) && f.noBody {
		f.release(false)
		f.h2on = false
		if f.connect() {
			if err := f.codec.enc.WriteRequestHeaders(f.cb.RequestHeaders(), true); err != nil {
				f.upstreamFailed(err, false)
				return false
			}
			f.sendAndAwait()
		}
		return false
	}
	f.h2Failed(err, false)
	return false
}

// h2Failed maps a failed HTTP/2 attempt to Envoy's local reply, reset or
// retry, as for HTTP/1.
func (f *filter) h2Failed(err error, started bool) {
	u := f.h2
	if f.downstreamDone() {
		f.downstreamGone()
		return
	}
	if u.cancelled() == errUpTimeout {
		kind := u.kind.Load()
		f.idleArmed, f.perTryArmed = kind == armIdle, kind == armPerTry
		f.ti.armed = kind == armTryIdle
		f.upstreamFailed(os.ErrDeadlineExceeded, started)
		return
	}
	var ov *upstream.OverflowError
	var ce *upstream.ConnectError
	switch {
	case errors.As(err, &ov):
		f.release(false)
		f.overflowed()
	case errors.As(err, &ce):
		f.release(false)
		f.connectFailed(err)
	default:
		f.upstreamFailed(err, started)
	}
}

var errAborted = errors.New("upstream stream finished")
