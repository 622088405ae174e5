package transport

import (
	"context"
	"net/netip"

	"github.com/outrider-proxy/outrider/proxy/streaminfo"
)

// DownstreamCarrier is a dial context that knows the downstream connection
// the upstream connection is for (the router's pool contexts implement it
// without allocating).
type DownstreamCarrier interface {
	DownstreamConn() *streaminfo.Conn
}

type downstreamCtxKey struct{}

// WithDownstream is ctx carrying the downstream connection c (nil: none),
// for dials that do not go through a DownstreamCarrier (tcp_proxy).
func WithDownstream(ctx context.Context, c *streaminfo.Conn) context.Context {
	return context.WithValue(ctx, downstreamCtxKey{}, c)
}

// DownstreamOf is the downstream connection a dial context carries; nil
// when there is none (health checks, the proxy's own clients, shadows).
func DownstreamOf(ctx context.Context) *streaminfo.Conn {
	if ctx == nil {
		return nil
	}
	if dc, ok := ctx.(DownstreamCarrier); ok {
		return dc.DownstreamConn()
	}
	c, _ := ctx.Value(downstreamCtxKey{}).(*streaminfo.Conn)
	return c
}

// PerDownstream is implemented by upstream transports whose connections
// belong to one downstream connection (the PROXY protocol header carries
// its addresses): pools share such a connection only among requests whose
// DownstreamKey is equal, as Envoy adds the addresses to the pool's hash
// key.
type PerDownstream interface {
	PerDownstream()
}

// DownstreamKey is what a PerDownstream connection is pooled by: the
// downstream connection's source (remote) and destination (local)
// addresses. Zero when there is no downstream connection.
type DownstreamKey struct {
	Src, Dst netip.AddrPort
}

// KeyOf is the DownstreamKey of the connection ctx carries.
func KeyOf(ctx context.Context) DownstreamKey {
	if c := DownstreamOf(ctx); c != nil {
		return DownstreamKey{Src: c.RemoteAddr, Dst: c.LocalAddr}
	}
	return DownstreamKey{}
}

// Passthrough is implemented by upstream transports that wrap another one
// (the PROXY protocol): UsesTLS reports whether their connections end up
// TLS.
type Passthrough interface {
	UsesTLS() bool
}

// IsTLS reports whether connections through tr are TLS: false for nil
// (raw_buffer), the inner transport's answer for a Passthrough, true for
// any other transport.
func IsTLS(tr Upstream) bool {
	if tr == nil {
		return false
	}
	if p, ok := tr.(Passthrough); ok {
		return p.UsesTLS()
	}
	return true
}
