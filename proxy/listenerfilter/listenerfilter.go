// Package listenerfilter defines listener filters (tls_inspector,
// proxy_protocol, original_dst, ...) and their registry. A listener filter runs
// on an accepted connection before a filter chain is chosen, and may read
// ahead or rewrite the connection's addresses and protocol hints.
package listenerfilter

import (
	"net"

	"google.golang.org/protobuf/types/known/anypb"

	"github.com/outrider-proxy/outrider/proxy/registry"
	"github.com/outrider-proxy/outrider/proxy/streaminfo"
	"github.com/outrider-proxy/outrider/telemetry/stats"
)

// Filter is a compiled listener filter shared by all connections of a
// listener. OnAccept may replace *conn (to give back bytes it read ahead) and
// fill info; an error closes the connection.
type Filter interface {
	OnAccept(conn *net.Conn, info *streaminfo.Conn) error
}

// Factory compiles a listener filter's typed_config. Errors name the field.
// scope is the listener's stats scope ("listener.<address>.").
type Factory func(cfg *anypb.Any, scope stats.Scope) (Filter, error)

// Registry holds listener filters by Envoy name and config type URL.
var Registry = registry.New[Factory]("listener filter")
