package upstream

import (
	"context"
	"errors"
	"os"
	"time"

	"github.com/outrider-proxy/outrider/proxy/h2"
	"github.com/outrider-proxy/outrider/proxy/headers"
)

// The H2Pool's own-codec mode: streams go through outrider's HTTP/2 client
// (proxy/h2.ClientConn) instead of x/net's, opened with OpenStream and
// ended with DoneStream. It is the default; OUTRIDER_H2_CODEC=xnet, read
// once at start, makes the pool use x/net's client (RoundTrip) instead.

var ownH2 = os.Getenv("OUTRIDER_H2_CODEC") != "xnet"

// OwnCodec reports whether the pool's streams use outrider's own HTTP/2
// client (OpenStream) rather than x/net's (RoundTrip).
func (p *H2Pool) OwnCodec() bool { return ownH2 }

// ownConn is one pooled connection of the own codec.
type ownConn struct {
	cc       *h2.ClientConn
	conn     *closeConn
	requests uint32
	full     bool // max_requests_per_connection, max_connection_duration or idle_timeout reached: closes when idle
	// idleSince is when the connection was last seen without a stream
	// (zero: busy); idleTimer closes it after the cluster's idle_timeout.
	idleSince time.Time
	idleTimer *time.Timer
}

// OpenStream sends req's headers as a new stream on a connection with room
// (dialing one when needed), ending the request when end. It counts
// upstream_rq_total and upstream_rq_active and applies the circuit breakers
// as RoundTrip does; on success the caller must end the stream with
// DoneStream. A stream the server refuses later (h2.IsRefused) may be
// opened again.
func (p *H2Pool) OpenStream(ctx context.Context, req *headers.Map, end bool) (*h2.ClientStream, error) {
	if err := p.startRequest(ctx); err != nil {
		return nil, err
	}
	cs, err := p.openOwn(ctx, req, end)
	if err != nil {
		p.DoneCtx(ctx)
		p.sweepOwn()
		return nil, err
	}
	return cs, nil
}

// DoneStream ends a stream OpenStream opened with ctx: the stream is
// released (reset first when unfinished) and its slots go back.
func (p *H2Pool) DoneStream(ctx context.Context, s *h2.ClientStream) {
	s.Release()
	p.DoneCtx(ctx)
	p.sweepOwn()
}

// openOwn opens the stream on a pooled connection, or on a new one.
func (p *H2Pool) openOwn(ctx context.Context, req *headers.Map, end bool) (*h2.ClientStream, error) {
	var openErr error
	s, err := acquireConn(p, ctx, func() (*h2.ClientStream, pick) {
		oc := p.pickOwn()
		if oc == nil {
			return nil, pickNone
		}
		s, err := oc.cc.NewStream(req, end)
		if errors.Is(err, h2.ErrCannotTakeStream) {
			p.sweepOwn()
			return nil, pickAgain // taken meanwhile, or the connection ended
		}
		openErr = err
		return s, picked
	}, func(ctx context.Context) (func(), error) {
		oc, err := p.dialOwn(ctx)
		if err != nil {
			return nil, err
		}
		return func() { p.oconns = append(p.oconns, oc) }, nil
	})
	if err != nil {
		return nil, err
	}
	return s, openErr
}

// pickOwn is a pooled connection that takes a stream now, counted against
// max_requests_per_connection; nil: none.
func (p *H2Pool) pickOwn() *ownConn {
	c := p.cluster
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil
	}
	for _, oc := range p.oconns {
		if oc.full || !oc.cc.CanTakeNewStream() {
			continue
		}
		oc.requests++
		oc.idleSince = time.Time{}
		if c.MaxRequestsPerConnection > 0 && oc.requests >= c.MaxRequestsPerConnection {
			oc.full = true
			c.Stats.UpstreamCxMaxRequests().Inc()
		}
		return oc
	}
	return nil
}

// dialOwn connects (TLS when configured) and starts the own HTTP/2 client
// on the connection, holding one max_connections slot until it closes.
func (p *H2Pool) dialOwn(ctx context.Context) (*ownConn, error) {
	c := p.cluster
	cl, err := p.connect(ctx)
	if err != nil {
		return nil, err
	}
	maxHeaders, maxHeaderBytes := c.ResponseLimits(true)
	cc, err := h2.NewClientConn(cl, &h2.ClientConfig{
		MaxHeaderListSize:    uint32(maxHeaderBytes),
		MaxHeaderCount:       maxHeaders,
		MaxConcurrentStreams: c.protocol.maxConc,
		PingInterval:         c.protocol.pingIdle,
		PingTimeout:          c.protocol.pingTO,
	})
	if err != nil {
		return nil, &ConnectError{Cluster: c.Name, Host: p.host.String(), Err: err}
	}
	c.Stats.UpstreamCxHttp2Total().Inc()
	oc := &ownConn{cc: cc, conn: cl}
	if d := c.MaxConnectionDuration; d > 0 {
		time.AfterFunc(d, func() { p.expireOwn(oc) })
	}
	go func() { // forget the connection once it ended
		<-cc.Done()
		p.sweepOwn()
	}()
	return oc, nil
}

func (p *H2Pool) expireOwn(oc *ownConn) {
	p.mu.Lock()
	counted := !oc.full
	oc.full = true
	p.mu.Unlock()
	if counted {
		p.cluster.Stats.UpstreamCxMaxDurationReached().Inc()
	}
	p.sweepOwn()
}

// idleOwn is a connection's idle timer: one idle for the cluster's
// idle_timeout closes (upstream_cx_idle_timeout); a busy one waits for the
// next idle period.
func (p *H2Pool) idleOwn(oc *ownConn) {
	c := p.cluster
	p.mu.Lock()
	since := oc.idleSince
	select {
	case <-oc.cc.Done():
		since = time.Time{} // closed meanwhile: nothing to expire
	default:
	}
	expired := !since.IsZero() && !oc.full && oc.cc.ActiveStreams() == 0 && time.Since(since) >= c.IdleTimeout
	if expired {
		oc.full = true
	} else if !since.IsZero() && !oc.full {
		oc.idleTimer.Reset(c.IdleTimeout - time.Since(since))
	}
	p.mu.Unlock()
	if expired {
		c.Stats.UpstreamCxIdleTimeout().Inc()
		p.sweepOwn()
	}
}

// sweepOwn forgets ended connections and shuts down exhausted idle ones.
func (p *H2Pool) sweepOwn() {
	var closeNow []*h2.ClientConn
	p.mu.Lock()
	kept := p.oconns[:0]
	for _, oc := range p.oconns {
		select {
		case <-oc.cc.Done():
			if oc.idleTimer != nil {
				oc.idleTimer.Stop()
			}
			continue
		default:
		}
		idle := oc.cc.ActiveStreams() == 0
		if (oc.full || p.closed) && idle {
			if oc.idleTimer != nil {
				oc.idleTimer.Stop()
			}
			closeNow = append(closeNow, oc.cc)
			continue
		}
		if !idle {
			oc.idleSince = time.Time{}
		} else if oc.idleSince.IsZero() {
			oc.idleSince = time.Now()
			if d := p.cluster.IdleTimeout; d > 0 && oc.idleTimer == nil {
				oc.idleTimer = time.AfterFunc(d, func() { p.idleOwn(oc) })
			} else if d > 0 {
				oc.idleTimer.Reset(d)
			}
		}
		kept = append(kept, oc)
	}
	for i := len(kept); i < len(p.oconns); i++ {
		p.oconns[i] = nil
	}
	p.oconns = kept
	p.mu.Unlock()
	for _, cc := range closeNow {
		cc.Shutdown()
		cc.Close()
	}
}

// closeOwnLocked marks every own connection full (Close).
func (p *H2Pool) closeOwnLocked() {
	for _, oc := range p.oconns {
		oc.full = true
	}
}
