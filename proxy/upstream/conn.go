package upstream

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync/atomic"
	"time"

	"github.com/outrider-proxy/outrider/proxy/transport"
)

// ConnectError is a failed upstream connect. Timeout is set when
// connect_timeout expired (Envoy's "connection timeout" reset reason);
// otherwise the connection failed (refused, unreachable, ...).
type ConnectError struct {
	Cluster string
	Host    string
	Timeout bool
	Err     error
}

func (e *ConnectError) Error() string {
	what := "connection failure"
	if e.Timeout {
		what = "connection timeout"
	}
	return fmt.Sprintf("cluster %q: %s connecting to %s: %v", e.Cluster, what, e.Host, e.Err)
}

func (e *ConnectError) Unwrap() error { return e.Err }

// Dial opens a raw TCP connection to h within connect_timeout (and ctx),
// counting Envoy's connection stats on the cluster and host:
// upstream_cx_total and upstream_cx_active at start, upstream_cx_connect_fail
// (and upstream_cx_connect_timeout) plus upstream_cx_destroy on failure. The
// returned conn undoes upstream_cx_active on Close. Failures are *ConnectError.
func (c *Cluster) Dial(ctx context.Context, h *Host) (*UpstreamConn, error) {
	s := c.Stats
	s.UpstreamCxTotal().Inc()
	s.UpstreamCxActive().Inc()
	h.Stats().CxTotal.Add(1)
	h.Stats().CxActive.Add(1)
	start := time.Now()
	dctx, cancel := context.WithTimeout(ctx, c.ConnectTimeout)
	addr := h.Addr.String()
	nc, err := c.dialer.DialContext(dctx, "tcp", addr)
	timedOut := err != nil && errors.Is(dctx.Err(), context.DeadlineExceeded) && ctx.Err() == nil
	cancel()
	if err != nil {
		s.UpstreamCxConnectFail().Inc()
		h.Stats().CxConnectFail.Add(1)
		if timedOut {
			s.UpstreamCxConnectTimeout().Inc()
			s.UpstreamCxDestroyLocal().Inc()
		} else {
			s.UpstreamCxDestroyRemote().Inc()
		}
		s.UpstreamCxDestroy().Inc()
		s.UpstreamCxActive().Dec()
		h.Stats().CxActive.Add(-1)
		return nil, &ConnectError{Cluster: c.Name, Host: addr, Timeout: timedOut, Err: err}
	}
	s.UpstreamCxConnectMs.Record(uint64(time.Since(start).Milliseconds()))
	return &UpstreamConn{tcp: nc.(*net.TCPConn), cluster: c, host: h, start: start}, nil
}

// Transport is the cluster's transport socket (TLS) that callers dialing
// with Dial must apply themselves; nil means plaintext.
func (c *Cluster) Transport() transport.Upstream { return c.transport }

// UpstreamConn is a connected upstream TCP connection that keeps the
// cluster's and host's connection stats. It is a net.Conn counting
// upstream_cx_rx/tx_bytes_total; it implements io.ReaderFrom and io.WriterTo
// by delegating to *net.TCPConn, so io.Copy through it still splices. Callers
// that use TCP() directly should report bytes with AddRxBytes/AddTxBytes.
type UpstreamConn struct {
	tcp     *net.TCPConn
	cluster *Cluster
	host    *Host
	start   time.Time

	closed       atomic.Bool
	remoteClosed atomic.Bool
}

var (
	_ net.Conn      = (*UpstreamConn)(nil)
	_ io.ReaderFrom = (*UpstreamConn)(nil)
	_ io.WriterTo   = (*UpstreamConn)(nil)
)

// TCP is the underlying connection, for splicing and socket options.
func (u *UpstreamConn) TCP() *net.TCPConn { return u.tcp }

// Host is the upstream host connected to.
func (u *UpstreamConn) Host() *Host { return u.host }

// Cluster is the cluster the connection belongs to.
func (u *UpstreamConn) Cluster() *Cluster { return u.cluster }

// AddRxBytes counts n bytes read from upstream outside Read.
func (u *UpstreamConn) AddRxBytes(n int64) {
	if n > 0 {
		u.cluster.Stats.UpstreamCxRxBytesTotal().Add(uint64(n))
	}
}

// AddTxBytes counts n bytes written upstream outside Write.
func (u *UpstreamConn) AddTxBytes(n int64) {
	if n > 0 {
		u.cluster.Stats.UpstreamCxTxBytesTotal().Add(uint64(n))
	}
}

// Read reads from upstream, counting bytes. io.EOF marks a remote close.
func (u *UpstreamConn) Read(p []byte) (int, error) {
	n, err := u.tcp.Read(p)
	u.AddRxBytes(int64(n))
	if err == io.EOF {
		u.remoteClosed.Store(true)
	}
	return n, err
}

// Write writes upstream, counting bytes.
func (u *UpstreamConn) Write(p []byte) (int, error) {
	n, err := u.tcp.Write(p)
	u.AddTxBytes(int64(n))
	return n, err
}

// ReadFrom copies r upstream (splice when r is a TCP conn), counting bytes.
func (u *UpstreamConn) ReadFrom(r io.Reader) (int64, error) {
	n, err := u.tcp.ReadFrom(r)
	u.AddTxBytes(n)
	return n, err
}

// WriteTo copies upstream's bytes to w (splice when possible), counting bytes.
func (u *UpstreamConn) WriteTo(w io.Writer) (int64, error) {
	n, err := u.tcp.WriteTo(w)
	u.AddRxBytes(n)
	return n, err
}

// MarkRemoteClose records that the peer closed the connection, so Close
// counts upstream_cx_destroy_remote instead of upstream_cx_destroy_local.
func (u *UpstreamConn) MarkRemoteClose() { u.remoteClosed.Store(true) }

// Close closes the connection; the first call counts upstream_cx_destroy
// (local or remote), upstream_cx_length_ms and undoes upstream_cx_active.
func (u *UpstreamConn) Close() error {
	if u.closed.Swap(true) {
		return nil
	}
	err := u.tcp.Close()
	s := u.cluster.Stats
	s.UpstreamCxDestroy().Inc()
	if u.remoteClosed.Load() {
		s.UpstreamCxDestroyRemote().Inc()
	} else {
		s.UpstreamCxDestroyLocal().Inc()
	}
	s.UpstreamCxLengthMs.Record(uint64(time.Since(u.start).Milliseconds()))
	s.UpstreamCxActive().Dec()
	u.host.Stats().CxActive.Add(-1)
	return err
}

// CloseWrite half-closes the upstream side (TCP FIN).
func (u *UpstreamConn) CloseWrite() error { return u.tcp.CloseWrite() }

// LocalAddr is the upstream connection's local address.
func (u *UpstreamConn) LocalAddr() net.Addr { return u.tcp.LocalAddr() }

// RemoteAddr is the upstream host's address.
func (u *UpstreamConn) RemoteAddr() net.Addr { return u.tcp.RemoteAddr() }

// SetDeadline sets read and write deadlines.
func (u *UpstreamConn) SetDeadline(t time.Time) error { return u.tcp.SetDeadline(t) }

// SetReadDeadline sets the read deadline.
func (u *UpstreamConn) SetReadDeadline(t time.Time) error { return u.tcp.SetReadDeadline(t) }

// SetWriteDeadline sets the write deadline.
func (u *UpstreamConn) SetWriteDeadline(t time.Time) error { return u.tcp.SetWriteDeadline(t) }
