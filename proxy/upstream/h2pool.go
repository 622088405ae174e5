package upstream

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"sync"

	"github.com/outrider-proxy/outrider/proxy/transport"
)

// ErrNoH2 is returned by H2Pool.OpenStream when an auto_config host
// negotiated HTTP/1.1 by ALPN; the host uses HTTP/1.1 from then on
// (UseHTTP2 reports false) and the caller retries on the HTTP/1 pool.
var ErrNoH2 = errors.New("upstream did not negotiate h2 by ALPN")

// H2Pool multiplexes requests as HTTP/2 streams over connections to one
// host of one cluster (Envoy's HTTP/2 connection pool), with outrider's own
// HTTP/2 client (proxy/h2.ClientConn). A connection takes streams up to the
// lower of the peer's SETTINGS_MAX_CONCURRENT_STREAMS and the cluster's
// max_concurrent_streams, and up to max_requests_per_connection in its
// lifetime; beyond that a new connection is dialed (one at a time). A
// GOAWAY from the upstream stops new streams on that connection; a stream
// it did not process may be opened again (h2.IsRefused).
type H2Pool struct {
	cluster *Cluster
	host    *Host
	tls     TLSOverride // auto_sni / auto_san_validation of its requests

	mu      sync.Mutex
	conns   []*h2Conn     // h2stream.go
	dialing chan struct{} // closed when the dial in progress ends; nil: none
	closed  bool
}

// H2Pool is the HTTP/2 pool of host h, created on first use.
func (c *Cluster) H2Pool(h *Host) *H2Pool {
	rt := h.runtime()
	if p := rt.h2pool.Load(); p != nil {
		return p
	}
	np := c.newH2Pool(h)
	if rt.h2pool.CompareAndSwap(nil, np) {
		if h.flags.load(fDrained) {
			np.Close()
		}
		return np
	}
	return rt.h2pool.Load()
}

func (c *Cluster) newH2Pool(h *Host) *H2Pool {
	return &H2Pool{cluster: c, host: h}
}

// startRequest takes the request's max_requests slot (refused:
// *OverflowError) and counts upstream_rq_total and upstream_rq_active;
// endRequest gives them back.
func (p *H2Pool) startRequest(ctx context.Context) error {
	c := p.cluster
	r := c.resFor(ctx)
	if !r.rq.tryAcquire(r.rq.max) {
		c.Stats.UpstreamRqPendingOverflow().Inc()
		return &OverflowError{Cluster: c.Name, Limit: "max_requests"}
	}
	s := c.Stats
	s.UpstreamRqTotal().Inc()
	s.UpstreamRqActive().Inc()
	p.host.Stats().RqTotal.Add(1)
	p.host.Stats().RqActive.Add(1)
	return nil
}

// endRequest ends a request startRequest started with ctx: the
// max_requests slot goes back to the breakers of its priority.
func (p *H2Pool) endRequest(ctx context.Context) {
	c := p.cluster
	c.Stats.UpstreamRqActive().Dec()
	p.host.Stats().RqActive.Add(-1)
	c.resFor(ctx).rq.release()
	c.res.notifyFreed()
}

// pick is what a pool's pick function found.
type pick uint8

const (
	pickNone  pick = iota // no pooled connection has room
	picked                // done: the result is ready
	pickAgain             // a connection was taken meanwhile: look again
)

// acquireConn is the pool's loop for a stream: take a stream on a pooled
// connection (use), else dial one within max_connections (one dial
// at a time per pool: the others wait for it and look again; dial's add
// runs under p.mu to pool the new connection), else wait for a freed
// connection slot. The request counts against max_pending_requests while it
// waits; overflows count as Envoy counts them.
func acquireConn[T any](p *H2Pool, ctx context.Context, use func() (T, pick), dial func(context.Context) (add func(), err error)) (T, error) {
	var zero T
	c := p.cluster
	r := c.resFor(ctx)
	pending := false
	defer func() {
		if pending {
			c.Stats.UpstreamRqPendingActive().Dec()
			r.pending.release()
		}
	}()
	overflowed := false
	for range 1 << 20 { // bounded; each round uses, dials or waits for a change
		switch v, got := use(); got {
		case picked:
			return v, nil
		case pickAgain:
			continue
		}
		if !pending {
			if !r.pending.tryAcquire(r.pending.max) {
				c.Stats.UpstreamRqPendingOverflow().Inc()
				return zero, &OverflowError{Cluster: c.Name, Limit: "max_pending_requests"}
			}
			pending = true
			c.Stats.UpstreamRqPendingTotal().Inc()
			c.Stats.UpstreamRqPendingActive().Inc()
		}
		p.mu.Lock()
		if d := p.dialing; d != nil { // someone dials: wait for that connection
			p.mu.Unlock()
			select {
			case <-d:
				continue
			case <-ctx.Done():
				return zero, ctx.Err()
			}
		}
		ch := r.freed.register()
		if !r.hostCxFull(p.host) && r.cx.tryAcquire(r.cx.max) {
			r.freed.done()
			d := make(chan struct{})
			p.dialing = d
			p.mu.Unlock()
			add, err := dial(ctx)
			p.mu.Lock()
			p.dialing = nil
			if add != nil {
				add()
			}
			p.mu.Unlock()
			close(d)
			if err != nil {
				return zero, err
			}
			continue
		}
		p.mu.Unlock()
		if p.retireOther(ctx) {
			r.freed.done()
			continue // its max_connections slot is free: dial for this request's key
		}
		if !overflowed {
			overflowed = true
			c.Stats.UpstreamCxOverflow().Inc()
		}
		err := wait(ctx, ch)
		r.freed.done()
		if err != nil {
			return zero, err
		}
	}
	return zero, &OverflowError{Cluster: c.Name, Limit: "max_connections"}
}

// retireOther closes an idle connection of a downstream key other than the
// request's (per-downstream transports only), so that a pool at
// max_connections does not wait on connections of downstream connections
// that may be gone. It reports whether it closed one.
func (p *H2Pool) retireOther(ctx context.Context) bool {
	key := p.cluster.downstreamKey(ctx)
	if key == (transport.DownstreamKey{}) {
		return false
	}
	p.mu.Lock()
	var victim *h2Conn
	for _, oc := range p.conns {
		if oc.ds != key && !oc.full && oc.cc.ActiveStreams() == 0 {
			victim, oc.full = oc, true
			break
		}
	}
	p.mu.Unlock()
	if victim == nil {
		return false
	}
	p.sweep()
	return true
}

// connect dials the host for an HTTP/2 connection: TCP,
// then TLS when configured (with auto_config, a peer that does not choose h2
// in ALPN marks the host HTTP/1-only and fails with ErrNoH2). The returned
// closeConn, over the TLS connection if any, holds one max_connections slot,
// given back when it closes.
func (p *H2Pool) connect(ctx context.Context) (*closeConn, error) {
	c := p.cluster
	release := c.resFor(ctx).releaseCx
	uc, err := c.Dial(ctx, p.host)
	if err != nil {
		release()
		return nil, err
	}
	var conn net.Conn = uc
	if tr := c.TransportFor(p.host); tr != nil {
		if conn, err = c.wrap(ctx, tr, uc, p.tls); err != nil {
			uc.Close()
			release()
			return nil, &ConnectError{Cluster: c.Name, Host: p.host.String(), Err: err}
		}
		if c.protocol.proto == ProtocolAuto && transport.IsTLS(tr) {
			if cs, ok := conn.(interface{ ConnectionState() tls.ConnectionState }); !ok ||
				cs.ConnectionState().NegotiatedProtocol != "h2" {
				p.host.flags.store(fH1Only, true)
				conn.Close()
				release()
				return nil, ErrNoH2
			}
		}
	}
	return &closeConn{Conn: conn, uc: uc, done: release}, nil
}

// Close stops new streams on the pool's connections: idle ones close now,
// the others once their streams end.
func (p *H2Pool) Close() {
	p.mu.Lock()
	p.closed = true
	for _, hc := range p.conns {
		hc.full = true
	}
	p.mu.Unlock()
	p.sweep()
}

// Conns is the number of open pooled connections.
func (p *H2Pool) Conns() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.conns)
}

// closeConn releases the connection's max_connections slot on its first
// Close, and records a remote close when a read saw EOF.
type closeConn struct {
	net.Conn
	uc     *UpstreamConn
	mu     sync.Mutex
	done   func() // guarded by mu
	closed bool   // guarded by mu
}

func (c *closeConn) Close() error {
	err := c.Conn.Close()
	c.mu.Lock()
	done := c.done
	if c.closed {
		done = nil
	}
	c.closed = true
	c.mu.Unlock()
	if done != nil {
		done()
	}
	return err
}

// swapDone replaces the release run on the first Close and runs the old
// one now (a connection moving to another cluster's pool). It reports false,
// changing nothing, when the connection is closed already.
func (c *closeConn) swapDone(done func()) bool {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return false
	}
	old := c.done
	c.done = done
	c.mu.Unlock()
	old()
	return true
}
