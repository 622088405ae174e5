// Package transport defines transport sockets (Envoy's transport_socket:
// raw_buffer, tls, ...) and their registry. A downstream transport wraps an
// accepted connection before the network filters see it; an upstream
// transport wraps a connection the proxy dialed before requests use it.
package transport

import (
	"context"
	"log/slog"
	"net"

	"google.golang.org/protobuf/types/known/anypb"

	"github.com/outrider-proxy/outrider/proxy/registry"
	"github.com/outrider-proxy/outrider/proxy/streaminfo"
	"github.com/outrider-proxy/outrider/telemetry/stats"
)

// Downstream wraps accepted connections, e.g. with a TLS server handshake,
// filling info (peer identity, negotiated protocol). The returned conn
// replaces c; on error the caller closes c.
type Downstream interface {
	Wrap(ctx context.Context, c net.Conn, info *streaminfo.Conn) (net.Conn, error)
}

// Upstream wraps dialed connections, e.g. with a TLS client handshake. sni
// is the server name to present when the config leaves it to the request
// (auto_sni); "" otherwise.
type Upstream interface {
	Wrap(ctx context.Context, c net.Conn, sni string) (net.Conn, error)
}

// Context is what a factory gets.
type Context struct {
	Stats *stats.Store
	// Scope is the stats prefix of the owner, e.g. "listener.0.0.0.0_443."
	// or "cluster.backend.".
	Scope stats.Scope
	Log   *slog.Logger
	// Secrets resolves SDS secret names (static_resources.secrets now, SDS
	// later); nil when there are none. Its type is the TLS package's.
	Secrets any
}

// Factory compiles a transport socket's typed_config once. Either function
// may be nil when the transport does not apply on that side; a nil result
// with a nil error means "no wrapping" (raw_buffer).
type Factory struct {
	Downstream func(ctx *Context, cfg *anypb.Any) (Downstream, error)
	Upstream   func(ctx *Context, cfg *anypb.Any) (Upstream, error)
}

// Registry holds transport sockets by Envoy name and config type URL.
var Registry = registry.New[Factory]("transport socket")

// RawBuffer is Envoy's envoy.transport_sockets.raw_buffer: bytes as they are.
const RawBuffer = "envoy.transport_sockets.raw_buffer"

func init() {
	none := func(*Context, *anypb.Any) (Downstream, error) { return nil, nil }
	Registry.Register(RawBuffer, []string{"envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer"}, Factory{
		Downstream: none,
		Upstream:   func(*Context, *anypb.Any) (Upstream, error) { return nil, nil },
	})
}
