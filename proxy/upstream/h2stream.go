package upstream

import (
	"context"
	"errors"
	"sync/atomic"
	"time"

	"github.com/outrider-proxy/outrider/proxy/h2"
	"github.com/outrider-proxy/outrider/proxy/headers"
	"github.com/outrider-proxy/outrider/proxy/transport"
)

// The H2Pool's streams: OpenStream opens one on a pooled connection (or a
// new one), DoneStream ends it; the connections' lifetimes
// (max_requests_per_connection, max_connection_duration, idle_timeout).

// h2Conn is one pooled HTTP/2 connection. pool is the pool it is in: a
// replaced cluster's pool hands it over (handOver), so its timers find the
// pool through lockPool. The other fields are guarded by that pool's mu.
type h2Conn struct {
	pool     atomic.Pointer[H2Pool]
	cc       *h2.ClientConn
	conn     *closeConn // the connection under cc
	requests uint32
	full     bool // max_requests_per_connection, max_connection_duration or idle_timeout reached: closes when idle
	// idleSince is when the connection was last seen without a stream
	// (zero: busy); idleTimer closes it after the cluster's idle_timeout.
	idleSince time.Time
	idleTimer *time.Timer
	// ds is the downstream connection's addresses for a per-downstream
	// transport (PROXY protocol): only streams of the same key use it.
	ds transport.DownstreamKey
}

// OpenStream sends req's headers as a new stream on a connection with room
// (dialing one when needed), ending the request when end. It counts
// upstream_rq_total and upstream_rq_active and applies the circuit breakers
// (max_requests refused: *OverflowError; max_pending_requests and
// max_connections while it waits for a connection); on success the caller
// must end the stream with DoneStream. A stream the server refuses later
// (h2.IsRefused) may be opened again.
func (p *H2Pool) OpenStream(ctx context.Context, req *headers.Map, end bool) (*h2.ClientStream, error) {
	if err := p.startRequest(ctx); err != nil {
		return nil, err
	}
	cs, err := p.open(ctx, req, end)
	if err != nil {
		p.endRequest(ctx)
		p.sweep()
		return nil, err
	}
	return cs, nil
}

// DoneStream ends a stream OpenStream opened with ctx: the stream is
// released (reset first when unfinished) and its slots go back.
func (p *H2Pool) DoneStream(ctx context.Context, s *h2.ClientStream) {
	s.Release()
	p.endRequest(ctx)
	p.sweep()
}

// open opens the stream on a pooled connection, or on a new one.
func (p *H2Pool) open(ctx context.Context, req *headers.Map, end bool) (*h2.ClientStream, error) {
	var openErr error
	key := p.cluster.downstreamKey(ctx)
	s, err := acquireConn(p, ctx, func() (*h2.ClientStream, pick) {
		oc := p.pickConn(key)
		if oc == nil {
			return nil, pickNone
		}
		s, err := oc.cc.NewStream(req, end)
		if errors.Is(err, h2.ErrCannotTakeStream) {
			p.sweep()
			return nil, pickAgain // taken meanwhile, or the connection ended
		}
		openErr = err
		return s, picked
	}, func(ctx context.Context) (func(), error) {
		oc, err := p.dial(ctx)
		if err != nil {
			return nil, err
		}
		oc.ds = key
		return func() { p.conns = append(p.conns, oc) }, nil
	})
	if err != nil {
		return nil, err
	}
	return s, openErr
}

// pickConn is a pooled connection of downstream key that takes a stream
// now, counted against max_requests_per_connection; nil: none.
func (p *H2Pool) pickConn(key transport.DownstreamKey) *h2Conn {
	c := p.cluster
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil
	}
	for _, oc := range p.conns {
		if oc.full || oc.ds != key || !oc.cc.CanTakeNewStream() {
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

// dial connects (TLS when configured) and starts the HTTP/2 client on the
// connection, holding one max_connections slot until it closes.
func (p *H2Pool) dial(ctx context.Context) (*h2Conn, error) {
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
	oc := &h2Conn{cc: cc, conn: cl}
	oc.pool.Store(p)
	if d := c.MaxConnectionDuration; d > 0 {
		time.AfterFunc(d, oc.expire)
	}
	go func() { // forget the connection once it ended
		<-cc.Done()
		oc.sweepPool()
	}()
	return oc, nil
}

// lockPool locks the pool oc is in and returns it (oc may move while its
// pool is not locked).
func (oc *h2Conn) lockPool() *H2Pool {
	for {
		p := oc.pool.Load()
		p.mu.Lock()
		if oc.pool.Load() == p {
			return p
		}
		p.mu.Unlock()
	}
}

// sweepPool sweeps the pool oc is in, again if oc moved meanwhile.
func (oc *h2Conn) sweepPool() {
	for range 4 {
		p := oc.pool.Load()
		p.sweep()
		if oc.pool.Load() == p {
			return
		}
	}
}

// expire stops new streams on oc once it reached max_connection_duration;
// it closes when its streams end.
func (oc *h2Conn) expire() {
	p := oc.lockPool()
	counted := !oc.full
	oc.full = true
	p.mu.Unlock()
	if counted {
		p.cluster.Stats.UpstreamCxMaxDurationReached().Inc()
	}
	oc.sweepPool()
}

// onIdle is a connection's idle timer: one idle for the cluster's
// idle_timeout closes (upstream_cx_idle_timeout); a busy one waits for the
// next idle period.
func (oc *h2Conn) onIdle() {
	p := oc.lockPool()
	c := p.cluster
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
		oc.sweepPool()
	}
}

// sweep forgets ended connections and shuts down exhausted idle ones.
func (p *H2Pool) sweep() {
	var closeNow []*h2.ClientConn
	p.mu.Lock()
	kept := p.conns[:0]
	for _, oc := range p.conns {
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
				oc.idleTimer = time.AfterFunc(d, oc.onIdle)
			} else if d > 0 {
				oc.idleTimer.Reset(d)
			}
		}
		kept = append(kept, oc)
	}
	for i := len(kept); i < len(p.conns); i++ {
		p.conns[i] = nil
	}
	p.conns = kept
	p.mu.Unlock()
	for _, cc := range closeNow {
		cc.Shutdown()
		cc.Close()
	}
}
