package upstream

import (
	"context"
	"net"
	"sync"
	"syscall"
	"time"

	"github.com/outrider-proxy/outrider/proxy/transport"
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
	tls     TLSOverride // auto_sni / auto_san_validation of its requests (PoolFor)

	// Admit, when non-nil, is consulted before dialing (see Admitter).
	// Set it before the pool is shared.
	Admit Admitter

	mu     sync.Mutex
	idle   []*PooledConn
	closed bool
	// drains counts DrainConns calls: a connection dialled before the
	// latest one (PooledConn.gen behind) is not reused.
	drains uint32
	// next is the pool of the cluster that replaced this one, which takes
	// the connections released reusable after the handover (carryover.go);
	// nil when the connections close instead.
	next *Pool
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
	cxDone    func() // releases the max_connections slot; nil once done
	peek      peeker
	rqRes     *resources // the breakers holding this request's max_requests slot
	gen       uint32     // the pool's drains when it was dialled
	// ds is the downstream connection's addresses when the cluster's
	// transport is per downstream (PROXY protocol): only requests of the
	// same key reuse it. Zero otherwise.
	ds transport.DownstreamKey
}

// StreamCanceled interrupts a read blocked on the connection (its read
// deadline becomes now): the downstream stream it serves was reset. It is
// an h2.Watcher, so the router registers the connection itself, without a
// closure; a late call only times out a read the next user re-arms.
func (pc *PooledConn) StreamCanceled() { _ = pc.Conn.SetReadDeadline(time.Now()) }

// Pool is the HTTP/1 connection pool of host h (one per host per cluster,
// created on first use). A pool of a removed host is closed: it still dials,
// but connections close when released.
func (c *Cluster) Pool(h *Host) *Pool {
	rt := h.runtime()
	if p := rt.pool.Load(); p != nil {
		return p
	}
	np := &Pool{cluster: h.cluster, host: h}
	if rt.pool.CompareAndSwap(nil, np) {
		if h.flags.load(fDrained) {
			np.Close()
		}
		return np
	}
	return rt.pool.Load()
}

// Host is the pool's host.
func (p *Pool) Host() *Host { return p.host }

// Get returns an idle connection (most recently released first, skipping
// ones the peer has closed or that outlived idle_timeout) or dials a new one
// within connect_timeout. It counts upstream_rq_total and upstream_rq_active.
//
// Circuit breakers apply as in Envoy's HTTP/1 pool: max_requests first
// (refused: upstream_rq_pending_overflow); a request that needs a new
// connection is pending (upstream_rq_pending_total, upstream_rq_pending_active)
// and needs max_pending_requests room (refused: upstream_rq_pending_overflow);
// at max_connections (cluster-wide, or per_host_thresholds for this host) it
// counts upstream_cx_overflow and waits, until ctx ends,
// for a connection of this pool to be released or any of the cluster to
// close. Refusals are *OverflowError (the router's 503 with flag UO); dial
// failures are *ConnectError; a cancelled wait returns ctx.Err().
func (p *Pool) Get(ctx context.Context) (*PooledConn, error) {
	c := p.cluster
	r := c.resFor(ctx)
	if !r.rq.tryAcquire(r.rq.max) {
		c.Stats.UpstreamRqPendingOverflow().Inc()
		return nil, &OverflowError{Cluster: c.Name, Limit: "max_requests"}
	}
	pc, err := p.get(ctx)
	if err != nil {
		r.rq.release()
		return nil, err
	}
	pc.rqRes = r
	return pc, nil
}

func (p *Pool) get(ctx context.Context) (*PooledConn, error) {
	c := p.cluster
	key := c.downstreamKey(ctx)
	if pc := p.takeIdle(key); pc != nil {
		return pc, nil
	}
	r := c.resFor(ctx)
	if !r.pending.tryAcquire(r.pending.max) {
		c.Stats.UpstreamRqPendingOverflow().Inc()
		return nil, &OverflowError{Cluster: c.Name, Limit: "max_pending_requests"}
	}
	c.Stats.UpstreamRqPendingTotal().Inc()
	c.Stats.UpstreamRqPendingActive().Inc()
	defer func() {
		c.Stats.UpstreamRqPendingActive().Dec()
		r.pending.release()
	}()
	overflowed := false
	for range 1 << 20 { // bounded; each round waits for a release or ctx
		// Registered before trying, so a release in between is not missed.
		ch := r.freed.register()
		if pc := p.takeIdle(key); pc != nil {
			r.freed.done()
			return pc, nil
		}
		if !r.hostCxFull(p.host) && r.cx.tryAcquire(r.cx.max) {
			r.freed.done()
			return p.dial(ctx, key)
		}
		if key != (transport.DownstreamKey{}) && p.evictOther(key) {
			r.freed.done()
			continue // its max_connections slot is free: dial for this key
		}
		if !overflowed {
			overflowed = true
			c.Stats.UpstreamCxOverflow().Inc()
		}
		err := wait(ctx, ch)
		r.freed.done()
		if err != nil {
			return nil, err
		}
	}
	return nil, &OverflowError{Cluster: c.Name, Limit: "max_connections"}
}

// takeIdle pops a usable idle connection of downstream key (the most
// recently released of that key), or returns nil.
func (p *Pool) takeIdle(key transport.DownstreamKey) *PooledConn {
	c := p.cluster
	for range 1 << 16 { // bounded: every iteration removes one idle conn
		p.mu.Lock()
		i := len(p.idle) - 1
		for i >= 0 && p.idle[i].ds != key {
			i--
		}
		if i < 0 {
			p.mu.Unlock()
			return nil
		}
		pc := p.idle[i]
		n := len(p.idle)
		copy(p.idle[i:], p.idle[i+1:])
		p.idle[n-1] = nil
		p.idle = p.idle[:n-1]
		pc.inIdle = false
		p.mu.Unlock()
		if pc.timer != nil {
			pc.timer.Stop()
		}
		if pc.expired() {
			c.Stats.UpstreamCxMaxDurationReached().Inc()
			pc.destroy()
			continue
		}
		idle := time.Since(pc.idleSince)
		if c.IdleTimeout > 0 && idle >= c.IdleTimeout {
			c.Stats.UpstreamCxIdleTimeout().Inc()
			pc.destroy()
			continue
		}
		if idle >= peekAfter && !pc.peek.alive() {
			pc.uc.MarkRemoteClose()
			pc.destroy()
			continue
		}
		pc.Reused = true
		pc.startRequest()
		return pc
	}
	return nil
}

// evictOther closes the longest idle connection of a downstream key other
// than key, so that a per-downstream pool at max_connections does not wait
// on connections of downstream connections that may be gone. It reports
// whether it closed one.
func (p *Pool) evictOther(key transport.DownstreamKey) bool {
	p.mu.Lock()
	for i, pc := range p.idle {
		if pc.ds == key {
			continue
		}
		p.idle = append(p.idle[:i], p.idle[i+1:]...)
		p.idle[:len(p.idle)+1][len(p.idle)] = nil
		pc.inIdle = false
		p.mu.Unlock()
		if pc.timer != nil {
			pc.timer.Stop()
		}
		pc.destroy()
		return true
	}
	p.mu.Unlock()
	return false
}

// dial opens a new connection for downstream key holding one
// max_connections slot.
func (p *Pool) dial(ctx context.Context, key transport.DownstreamKey) (*PooledConn, error) {
	c := p.cluster
	release := c.resFor(ctx).releaseCx
	var done func()
	if p.Admit != nil {
		ok, d := p.Admit.AdmitConnection()
		if !ok {
			release()
			c.Stats.UpstreamCxOverflow().Inc()
			return nil, &OverflowError{Cluster: c.Name, Limit: "admitter"}
		}
		done = d
	}
	uc, err := c.Dial(ctx, p.host)
	if err != nil {
		release()
		if done != nil {
			done()
		}
		return nil, err
	}
	var conn net.Conn = uc
	if tr := c.TransportFor(p.host); tr != nil {
		if conn, err = c.wrap(ctx, tr, uc, p.tls); err != nil {
			uc.Close()
			release()
			if done != nil {
				done()
			}
			return nil, &ConnectError{Cluster: c.Name, Host: p.host.String(), Err: err}
		}
	}
	c.Stats.UpstreamCxHttp1Total().Inc()
	p.mu.Lock()
	gen := p.drains
	p.mu.Unlock()
	pc := &PooledConn{Conn: conn, pool: p, uc: uc, admitDone: done, cxDone: release, gen: gen, ds: key}
	pc.peek = newPeeker(uc.tcp)
	pc.startRequest()
	return pc, nil
}

// OverflowError is returned by Get when a circuit breaker (or the Admitter)
// refuses the request; the router answers 503 with response flag UO
// (upstream overflow) and x-envoy-overloaded: true.
type OverflowError struct {
	Cluster string
	// Limit is the breaker that refused: "max_requests",
	// "max_pending_requests", "max_connections" or "admitter".
	Limit string
}

func (e *OverflowError) Error() string {
	return "cluster " + quote(e.Cluster) + ": upstream overflow (" + e.Limit + ")"
}

func quote(s string) string { return "\"" + s + "\"" }

func (pc *PooledConn) startRequest() {
	pc.requests++
	s := pc.pool.cluster.Stats
	s.UpstreamRqTotal().Inc()
	s.UpstreamRqActive().Inc()
	h := pc.pool.host
	h.Stats().RqTotal.Add(1)
	h.Stats().RqActive.Add(1)
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
	c.Stats.UpstreamRqActive().Dec()
	p.host.Stats().RqActive.Add(-1)
	pc.rqRes.rq.release()
	if reusable && c.MaxRequestsPerConnection > 0 && pc.requests >= c.MaxRequestsPerConnection {
		c.Stats.UpstreamCxMaxRequests().Inc()
		reusable = false
	}
	if reusable && pc.expired() {
		c.Stats.UpstreamCxMaxDurationReached().Inc()
		reusable = false
	}
	if !reusable {
		pc.destroy()
		return
	}
	pc.idleSince = time.Now()
	p.mu.Lock()
	if next := p.next; p.closed && next != nil {
		p.mu.Unlock()
		if pc.timer != nil {
			pc.timer.Stop() // stopped already while in use; adopt resets it
		}
		next.adopt(pc)
		return
	}
	if p.closed || pc.gen != p.drains || len(p.idle) >= max(c.MaxIdlePerHost, 1) {
		p.mu.Unlock()
		pc.destroy()
		return
	}
	pc.inIdle = true
	p.idle = append(p.idle, pc)
	if d := pc.idleWait(); d > 0 {
		if pc.timer == nil {
			pc.timer = time.AfterFunc(d, pc.onIdleTimeout)
		} else {
			pc.timer.Reset(d)
		}
	}
	p.mu.Unlock()
	c.res.notifyFreed()
}

// expired reports whether the connection has reached max_connection_duration.
func (pc *PooledConn) expired() bool {
	d := pc.pool.cluster.MaxConnectionDuration
	return d > 0 && time.Since(pc.uc.start) >= d
}

// idleWait is how long an idle connection may wait before onIdleTimeout
// closes it: idle_timeout, or less when max_connection_duration comes
// first; zero means never.
func (pc *PooledConn) idleWait() time.Duration {
	c := pc.pool.cluster
	d := c.IdleTimeout
	if c.MaxConnectionDuration > 0 {
		if left := max(c.MaxConnectionDuration-time.Since(pc.uc.start), time.Millisecond); d == 0 || left < d {
			d = left
		}
	}
	return d
}

// onIdleTimeout closes the connection if it is still idle and has been for
// idle_timeout, or has reached max_connection_duration (it may have been
// reused and re-released meanwhile).
func (pc *PooledConn) onIdleTimeout() {
	p := pc.pool
	c := p.cluster
	p.mu.Lock()
	if !pc.inIdle {
		p.mu.Unlock()
		return
	}
	counter := c.Stats.UpstreamCxMaxDurationReached()
	if !pc.expired() {
		if c.IdleTimeout == 0 || time.Since(pc.idleSince) < c.IdleTimeout {
			p.mu.Unlock()
			return
		}
		counter = c.Stats.UpstreamCxIdleTimeout()
	}
	p.removeIdleLocked(pc)
	p.mu.Unlock()
	counter.Inc()
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
	if pc.cxDone != nil {
		pc.cxDone()
		pc.cxDone = nil
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
	idle := p.takeIdleLocked()
	p.mu.Unlock()
	for _, pc := range idle {
		pc.destroy()
	}
}

// takeIdleLocked empties the idle list and returns what it held; p.mu held.
func (p *Pool) takeIdleLocked() []*PooledConn {
	idle := p.idle
	p.idle = nil
	for _, pc := range idle {
		pc.inIdle = false
	}
	return idle
}

// peekAfter is how long a connection must have been idle before takeIdle
// peeks at it. A connection released a moment ago after a complete keep-alive
// response was open then; under load most are reused within microseconds and
// the peek would be one more syscall per request. An upstream that closes
// within this window is the race every pool has (the close can also come
// just after a peek), and a body-less request that meets it is resent once
// on a new connection (the router's retryStale).
const peekAfter = 5 * time.Millisecond

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
