package upstream

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/http"
	"sync"
	"time"

	"golang.org/x/net/http2"
)

// ErrNoH2 is returned by H2Pool.RoundTrip when an auto_config host
// negotiated HTTP/1.1 by ALPN; the host uses HTTP/1.1 from then on
// (UseHTTP2 reports false) and the caller retries on the HTTP/1 pool.
var ErrNoH2 = errors.New("upstream did not negotiate h2 by ALPN")

// H2Pool multiplexes requests as HTTP/2 streams over connections to one
// host of one cluster (Envoy's HTTP/2 connection pool). A connection takes
// streams up to the lower of the peer's SETTINGS_MAX_CONCURRENT_STREAMS and
// the cluster's max_concurrent_streams, and up to max_requests_per_connection
// in its lifetime; beyond that a new connection is dialed (one at a time).
// A GOAWAY from the upstream stops new streams on that connection; streams
// it did not process are retried on another connection when they have no
// body (x/net's retry of unprocessed streams).
type H2Pool struct {
	cluster *Cluster
	host    *Host
	tls     TLSOverride // auto_sni / auto_san_validation of its requests
	tr      *http2.Transport

	mu      sync.Mutex
	conns   []*h2Conn
	oconns  []*ownConn    // the own codec's connections (h2own.go)
	dialing chan struct{} // closed when the dial in progress ends; nil: none
	closed  bool
}

// h2Conn is one pooled HTTP/2 connection.
type h2Conn struct {
	cc       *http2.ClientConn
	conn     *closeConn // the connection under cc
	requests uint32
	full     bool // max_requests_per_connection or max_connection_duration reached, or dead: closes when idle
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
	np := &H2Pool{cluster: c, host: h}
	_, maxHeaderBytes := c.ResponseLimits(true)
	np.tr = &http2.Transport{
		MaxHeaderListSize:  uint32(maxHeaderBytes),
		ConnPool:           np,
		AllowHTTP:          true,
		DisableCompression: true,
		// No HPACK dynamic table for the requests outrider encodes: each
		// carries a new x-request-id, which x/net indexes and which
		// pushes the oldest entries out, so the table churns on every
		// request (evictOldest, map deletes, stack growth of the request's
		// goroutine: ~20-30% of the CPU per stream h2c→h2c) for little
		// compression. Fields are still Huffman-coded and static-table
		// indexed; HPACK lets an encoder use less than the peer allows.
		MaxEncoderHeaderTableSize: 1,
		IdleConnTimeout:           c.IdleTimeout,
		ReadIdleTimeout:           c.protocol.pingIdle,
		PingTimeout:               c.protocol.pingTO,
	}
	return np
}

// RoundTrip sends req as one stream and returns the response once its
// headers arrived. It counts upstream_rq_total and upstream_rq_active and
// applies max_requests (refused: *OverflowError). On success the caller must
// call Done once the response body is finished or abandoned (after closing
// it). Set req.URL to http://<any>/path; the authority is req.Host.
func (p *H2Pool) RoundTrip(req *http.Request) (*http.Response, error) {
	if err := p.startRequest(req.Context()); err != nil {
		return nil, err
	}
	resp, err := p.tr.RoundTrip(req)
	if err != nil {
		p.DoneCtx(req.Context())
		return nil, err
	}
	return resp, nil
}

// startRequest takes the request's max_requests slot (refused:
// *OverflowError) and counts upstream_rq_total and upstream_rq_active, for
// either codec; DoneCtx gives them back.
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

// Done ends a stream that RoundTrip started successfully (DEFAULT priority).
func (p *H2Pool) Done() { p.DoneCtx(nil) }

// DoneCtx is Done for a stream whose request context was ctx: the max_requests
// slot goes back to the breakers of its priority.
func (p *H2Pool) DoneCtx(ctx context.Context) {
	c := p.cluster
	c.Stats.UpstreamRqActive().Dec()
	p.host.Stats().RqActive.Add(-1)
	c.resFor(ctx).rq.release()
	p.sweep()
	c.res.notifyFreed()
}

// sweep forgets closed connections and closes exhausted idle ones.
func (p *H2Pool) sweep() {
	var closeNow []*http2.ClientConn
	p.mu.Lock()
	kept := p.conns[:0]
	for _, hc := range p.conns {
		st := hc.cc.State()
		if st.Closed {
			continue
		}
		if (hc.full || p.closed) && st.StreamsActive == 0 && st.StreamsReserved == 0 && st.StreamsPending == 0 {
			closeNow = append(closeNow, hc.cc)
			continue
		}
		kept = append(kept, hc)
	}
	for i := len(kept); i < len(p.conns); i++ {
		p.conns[i] = nil
	}
	p.conns = kept
	p.mu.Unlock()
	for _, cc := range closeNow {
		cc.Close()
	}
}

// GetClientConn implements http2.ClientConnPool: a connection with room for
// one more stream (reserved), or a new one.
func (p *H2Pool) GetClientConn(req *http.Request, _ string) (*http2.ClientConn, error) {
	return acquireConn(p, req.Context(), func() (*http2.ClientConn, pick) {
		if cc := p.reserve(); cc != nil {
			return cc, picked
		}
		return nil, pickNone
	}, func(ctx context.Context) (func(), error) {
		hc, err := p.dial(ctx)
		if err != nil {
			return nil, err
		}
		return func() { p.conns = append(p.conns, hc) }, nil
	})
}

// pick is what a pool's pick function found.
type pick uint8

const (
	pickNone  pick = iota // no pooled connection has room
	picked                // done: the result is ready
	pickAgain             // a connection was taken meanwhile: look again
)

// acquireConn is the loop both HTTP/2 codecs' pools share: take a stream on
// a pooled connection (use), else dial one within max_connections (one dial
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

// reserve reserves a stream on a pooled connection with room, or returns nil.
func (p *H2Pool) reserve() *http2.ClientConn {
	c := p.cluster
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, hc := range p.conns {
		if hc.full {
			continue
		}
		st := hc.cc.State()
		if st.Closed || st.Closing || uint32(st.StreamsActive+st.StreamsReserved+st.StreamsPending) >= c.protocol.maxConc {
			continue
		}
		if !hc.cc.ReserveNewRequest() {
			continue
		}
		hc.requests++
		if c.MaxRequestsPerConnection > 0 && hc.requests >= c.MaxRequestsPerConnection {
			hc.full = true
			c.Stats.UpstreamCxMaxRequests().Inc()
		}
		return hc.cc
	}
	return nil
}

// connect dials the host for an HTTP/2 connection of either codec: TCP,
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
		if c.protocol.proto == ProtocolAuto {
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

// dial connects (TLS when configured) and starts HTTP/2 on the connection,
// holding one max_connections slot until it closes.
func (p *H2Pool) dial(ctx context.Context) (*h2Conn, error) {
	c := p.cluster
	cl, err := p.connect(ctx)
	if err != nil {
		return nil, err
	}
	cc, err := p.tr.NewClientConn(newBatchConn(cl))
	if err != nil {
		cl.Close() // gives the max_connections slot back
		return nil, &ConnectError{Cluster: c.Name, Host: p.host.String(), Err: err}
	}
	c.Stats.UpstreamCxHttp2Total().Inc()
	hc := &h2Conn{cc: cc, conn: cl}
	if d := c.MaxConnectionDuration; d > 0 {
		time.AfterFunc(d, func() { p.expire(hc) })
	}
	return hc, nil
}

// expire stops new streams on hc once it reached max_connection_duration;
// it closes when its streams end.
func (p *H2Pool) expire(hc *h2Conn) {
	p.mu.Lock()
	counted := !hc.full && !hc.cc.State().Closed
	hc.full = true
	p.mu.Unlock()
	if counted {
		p.cluster.Stats.UpstreamCxMaxDurationReached().Inc()
	}
	p.sweep()
}

// MarkDead implements http2.ClientConnPool: the connection takes no new
// streams.
func (p *H2Pool) MarkDead(cc *http2.ClientConn) {
	p.mu.Lock()
	for _, hc := range p.conns {
		if hc.cc == cc {
			hc.full = true
		}
	}
	p.mu.Unlock()
	p.sweep()
}

// Close stops new streams on the pool's connections: idle ones close now,
// the others once their streams end.
func (p *H2Pool) Close() {
	p.mu.Lock()
	p.closed = true
	for _, hc := range p.conns {
		hc.full = true
	}
	p.closeOwnLocked()
	p.mu.Unlock()
	p.sweep()
	p.sweepOwn()
}

// Conns is the number of open pooled connections.
func (p *H2Pool) Conns() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.conns) + len(p.oconns)
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

// SetReadDeadline is left to x/net; the pool never sets deadlines itself.
func (c *closeConn) SetReadDeadline(t time.Time) error { return c.Conn.SetReadDeadline(t) }
