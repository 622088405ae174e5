// Package netfilter defines network (L4) filters and their registry. A filter
// chain is zero or more Middle filters that may inspect, wrap or refuse a
// connection, ending in one Terminal filter (tcp_proxy, the HTTP connection
// manager) that owns the connection until it returns.
package netfilter

import (
	"log/slog"
	"net"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	tracev3 "github.com/envoyproxy/go-control-plane/envoy/config/trace/v3"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/outrider-proxy/outrider/proxy/drain"
	"github.com/outrider-proxy/outrider/proxy/registry"
	"github.com/outrider-proxy/outrider/proxy/streaminfo"
	"github.com/outrider-proxy/outrider/proxy/upstream"
	"github.com/outrider-proxy/outrider/telemetry/stats"
)

// Conn is a downstream connection as the network filters see it.
type Conn struct {
	// Conn is what filters read and write. It is the accepted *net.TCPConn
	// unless a Middle filter or a transport socket wrapped it.
	net.Conn
	// Info describes the connection; filled before the filters run.
	Info *streaminfo.Conn
	// BufferLimit is the listener's per_connection_buffer_limit_bytes.
	BufferLimit int
	// Idle, when non-nil, is set by a Terminal filter while the connection
	// waits for its next request, so a drain can close it at once.
	Idle func(idle bool)
}

// TCP returns the underlying *net.TCPConn when nothing wraps the
// connection, so a filter may splice; nil otherwise.
func (c *Conn) TCP() *net.TCPConn {
	t, _ := c.Conn.(*net.TCPConn)
	return t
}

// Terminal is the last filter of a chain. ServeConn owns c until it returns
// and closes it before returning.
type Terminal interface {
	ServeConn(c *Conn)
}

// Middle is a filter before the terminal one. OnConnection may replace
// c.Conn with a wrapper that sees the bytes; returning an error closes the
// connection, and the error is logged with the filter's name.
type Middle interface {
	OnConnection(c *Conn) error
}

// Context is what a factory gets to build a filter: the proxy's shared,
// long-lived parts.
type Context struct {
	Clusters *upstream.Manager
	Stats    *stats.Store
	// Drain is the filter chain's drain manager: each chain has its own,
	// started by its listener's drain (so /drain_listeners?inboundonly
	// drains only some listeners) or alone when an in-place listener update
	// removes or changes the chain.
	Drain *drain.Manager
	Log   *slog.Logger
	// ListenerName names the listener the chain belongs to.
	ListenerName string
	// TrafficDirection is the listener's traffic_direction (tracing names
	// OUTBOUND spans "egress"); UNSPECIFIED when not set.
	TrafficDirection corev3.TrafficDirection
	// Tracing is the bootstrap's tracing.http provider, used by connection
	// managers whose tracing sets no provider; nil when there is none.
	Tracing *tracev3.Tracing_Http
	// DrainTime bounds how long a draining connection is given
	// (--drain-time-s); DrainGradual is --drain-strategy gradual.
	DrainTime    time.Duration
	DrainGradual bool
	// Routes delivers route configurations by name (RDS); nil when the
	// proxy has no dynamic configuration.
	Routes RouteSource
	// Scoped delivers scoped route configurations (SRDS) and the route
	// configurations of scopes (RDS from rds_config_source); nil when the
	// proxy has no dynamic configuration.
	Scoped ScopedRouteSource
	// Secrets resolves secret names for transport sockets (static_resources
	// secrets now, SDS later); nil when there are none.
	Secrets any
}

// RouteSource delivers route configurations by name, as RDS does. apply
// is called serially, never synchronously from WatchRoutes; its error is
// the NACK reason.
type RouteSource interface {
	WatchRoutes(name string, apply func(*routev3.RouteConfiguration) error) (cancel func())
}

// ScopedRouteSource serves a connection manager's scoped_routes. It returns
// the RouteSource through which the scopes' route configurations are
// watched (from w.RDS; those watches hold the listener's warming, as does
// the SRDS subscription until its first update), and subscribes to SRDS
// when w.SRDS is set.
type ScopedRouteSource interface {
	WatchScopedRoutes(w *ScopedRoutesWatch) (routes RouteSource, cancel func(), err error)
}

// ScopedRoutesWatch is one scoped_routes of a connection manager.
type ScopedRoutesWatch struct {
	// Name is scoped_routes.name; StatPrefix the manager's stat_prefix.
	Name, StatPrefix string
	// SRDS is scoped_rds.scoped_rds_config_source; nil for an inline
	// scoped_route_configurations_list (Apply is then never called).
	SRDS *corev3.ConfigSource
	// RDS is rds_config_source, where route_configuration_name is fetched.
	RDS *corev3.ConfigSource
	// Apply gets the added or changed scopes and the names of removed ones,
	// serially, never synchronously from WatchScopedRoutes; its error is
	// the NACK reason and leaves the scopes as they were.
	Apply func(changed []*routev3.ScopedRouteConfiguration, removed []string) error
}

// Factory compiles a filter's typed_config once into an immutable filter
// (Terminal or Middle) shared by every connection of the chain. Errors name
// the config field and are returned to the loader (and NACKed by xDS).
type Factory func(ctx *Context, cfg *anypb.Any) (any, error)

// Registry holds network filters by Envoy name and config type URL.
var Registry = registry.New[Factory]("network filter")
