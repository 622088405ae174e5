package upstream

import (
	"context"
	"net"
	"sync"
	"syscall"
	"time"
)

// Admitter decides whether a pool may open another connection; it is the
// seam for circuit breakers (max_connections, max_pending_requests). A nil
// Admitter admits everything.
type Admitter interface {
	// AdmitConnection reports whether a new connection may be opened; when
	// it returns true, done must be called once that connection closes.
	AdmitConnection() (ok bool, done func())
}

// Pool keeps idle keep-alive connections to one host of one cluster
// (Envoy's HTTP/1 connection pool). Idle connections are reused LIFO.
type Pool struct {
	cluster *Cluster
	host    *Host

	// Admit, when non-nil, is consulted before dialing (see Admitter).
	// Set it before the pool is shared.
	Admit Admitter

	mu     sync.Mutex
	idle   []*PooledConn
	closed bool
}

// PooledConn is one connection handed out by Pool.Get. The holder owns it
// until Release.
type PooledConn struct {
	Conn   net.Conn // the *UpstreamConn; counts bytes and connection stats
	Codec  any      // free for the user, kept with the connection across reuse
	Reused bool     // true when it came from the idle list

	pool      *Pool
	uc        *UpstreamConn
	requests  uint32
	idleSince time.Time
	inIdle    bool // guarded by pool.mu
	timer     *time.Timer
	admitDone func()
	peek      peeker
}

// Pool is the HTTP/1 connection pool of host h (one per host per cluster,
// created on first use). A pool of a removed host is closed: it still dials,
// but connections close when released.
func (c *Cluster) Pool(h *Host) *Pool {
	if p := h.pool.Load(); p != nil {
		return p
	}
	np := &Pool{cluster: h.cluster, host: h}
	if h.pool.CompareAndSwap(nil, np) {
		if h.drained.Load() {
			np.Close()
		}
		return np
	}
	return h.pool.Load()
}

// Host is the pool's host.
func (p *Pool) Host() *Host { return p.host }

// Get returns an idle connection (most recently released first, skipping
// ones the peer has closed or that outlived idle_timeout) or dials a new one
// within connect_timeout. It counts upstream_rq_total and upstream_rq_active.
// Dial failures are *ConnectError.
func (p *Pool) Get(ctx context.Context) (*PooledConn, error) {
	c := p.cluster
	for range 1 << 16 { // bounded: every iteration removes one idle conn
		p.mu.Lock()
		n := len(p.idle)
		if n == 0 {
			p.mu.Unlock()
			break
		}
		pc := p.idle[n-1]
		p.idle[n-1] = nil
		p.idle = p.idle[:n-1]
		pc.inIdle = false
		p.mu.Unlock()
		if pc.timer != nil {
			pc.timer.Stop()
		}
		if c.IdleTimeout > 0 && time.Since(pc.idleSince) >= c.IdleTimeout {
			c.Stats.UpstreamCxIdleTimeout.Inc()
			pc.destroy()
			continue
		}
		if !pc.peek.alive() {
			pc.uc.MarkRemoteClose()
			pc.destroy()
			continue
		}
		pc.Reused = true
		pc.startRequest()
		return pc, nil
	}

	var done func()
	if p.Admit != nil {
		ok, d := p.Admit.AdmitConnection()
		if !ok {
			c.Stats.UpstreamCxOverflow.Inc()
			return nil, &OverflowError{Cluster: c.Name}
		}
		done = d
	}
	uc, err := c.Dial(ctx, p.host)
	if err != nil {
		if done != nil {
			done()
		}
		return nil, err
	}
	c.Stats.UpstreamCxHttp1Total.Inc()
	pc := &PooledConn{Conn: uc, pool: p, uc: uc, admitDone: done}
	pc.peek = newPeeker(uc.tcp)
	pc.startRequest()
	return pc, nil
}

// OverflowError is returned by Get when the Admitter refuses a connection
// (Envoy's UO response flag).
type OverflowError struct{ Cluster string }

func (e *OverflowError) Error() string {
	return "cluster " + quote(e.Cluster) + ": upstream connection overflow"
}

func quote(s string) string { return "\"" + s + "\"" }

func (pc *PooledConn) startRequest() {
	pc.requests++
	s := pc.pool.cluster.Stats
	s.UpstreamRqTotal.Inc()
	s.UpstreamRqActive.Inc()
	h := pc.pool.host
	h.Stats.RqTotal.Add(1)
	h.Stats.RqActive.Add(1)
}

// UpstreamConn is the connection with its stats and TCP access.
func (pc *PooledConn) UpstreamConn() *UpstreamConn { return pc.uc }

// Requests is how many requests the connection has carried, this one included.
func (pc *PooledConn) Requests() uint32 { return pc.requests }

// Release ends the current request. A reusable connection goes back to the
// idle list unless the pool is closed, the idle list is full, or the
// connection reached max_requests_per_connection (counting
// upstream_cx_max_requests); otherwise it is closed. Call it exactly once
// per Get.
func (pc *PooledConn) Release(reusable bool) {
	p := pc.pool
	c := p.cluster
	c.Stats.UpstreamRqActive.Dec()
	p.host.Stats.RqActive.Add(-1)
	if reusable && c.MaxRequestsPerConnection > 0 && pc.requests >= c.MaxRequestsPerConnection {
		c.Stats.UpstreamCxMaxRequests.Inc()
		reusable = false
	}
	if !reusable {
		pc.destroy()
		return
	}
	pc.idleSince = time.Now()
	p.mu.Lock()
	if p.closed || len(p.idle) >= max(c.MaxIdlePerHost, 1) {
		p.mu.Unlock()
		pc.destroy()
		return
	}
	pc.inIdle = true
	p.idle = append(p.idle, pc)
	if c.IdleTimeout > 0 {
		if pc.timer == nil {
			pc.timer = time.AfterFunc(c.IdleTimeout, pc.onIdleTimeout)
		} else {
			pc.timer.Reset(c.IdleTimeout)
		}
	}
	p.mu.Unlock()
}

// onIdleTimeout closes the connection if it is still idle and has been for
// idle_timeout (it may have been reused and re-released meanwhile).
func (pc *PooledConn) onIdleTimeout() {
	p := pc.pool
	p.mu.Lock()
	if !pc.inIdle || time.Since(pc.idleSince) < p.cluster.IdleTimeout {
		p.mu.Unlock()
		return
	}
	p.removeIdleLocked(pc)
	p.mu.Unlock()
	p.cluster.Stats.UpstreamCxIdleTimeout.Inc()
	pc.destroy()
}

func (p *Pool) removeIdleLocked(pc *PooledConn) {
	for i, x := range p.idle {
		if x == pc {
			copy(p.idle[i:], p.idle[i+1:])
			p.idle[len(p.idle)-1] = nil
			p.idle = p.idle[:len(p.idle)-1]
			break
		}
	}
	pc.inIdle = false
}

func (pc *PooledConn) destroy() {
	if pc.timer != nil {
		pc.timer.Stop()
	}
	pc.uc.Close()
	if pc.admitDone != nil {
		pc.admitDone()
		pc.admitDone = nil
	}
}

// Idle is the number of idle connections.
func (p *Pool) Idle() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.idle)
}

// Close closes idle connections; connections in use close on Release.
func (p *Pool) Close() {
	p.mu.Lock()
	p.closed = true
	idle := p.idle
	p.idle = nil
	for _, pc := range idle {
		pc.inIdle = false
	}
	p.mu.Unlock()
	for _, pc := range idle {
		pc.destroy()
	}
}

// peeker checks, without blocking, whether an idle connection is still
// usable: the peer has not closed it and has sent nothing unsolicited.
type peeker struct {
	raw syscall.RawConn
	fn  func(fd uintptr) bool
	ok  bool
	buf [1]byte
}

func newPeeker(tc *net.TCPConn) peeker {
	raw, err := tc.SyscallConn()
	if err != nil {
		return peeker{}
	}
	return peeker{raw: raw}
}

func (pk *peeker) alive() bool {
	if pk.raw == nil {
		return true
	}
	if pk.fn == nil {
		pk.fn = pk.check // bound once; later calls do not allocate
	}
	pk.ok = false
	if err := pk.raw.Read(pk.fn); err != nil {
		return false
	}
	return pk.ok
}
