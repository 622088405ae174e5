// Package originaldst is Envoy's envoy.filters.listener.original_dst: it reads
// the destination a connection had before an iptables REDIRECT or DNAT sent it
// to the proxy (SO_ORIGINAL_DST, IP6T_SO_ORIGINAL_DST) and restores it as the
// connection's local address. Filter chain matching, %DOWNSTREAM_LOCAL_ADDRESS%,
// listener handoff (use_original_dst) and ORIGINAL_DST clusters then see the
// original destination; a connection without one keeps its local address.
package originaldst

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"syscall"

	originaldstv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/original_dst/v3"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/outrider-proxy/outrider/proxy/confcheck"
	"github.com/outrider-proxy/outrider/proxy/listenerfilter"
	"github.com/outrider-proxy/outrider/proxy/streaminfo"
	"github.com/outrider-proxy/outrider/telemetry/stats"
)

// Name is the filter's Envoy name.
const Name = "envoy.filters.listener.original_dst"

// TypeURL is the filter config's type URL.
const TypeURL = "type.googleapis.com/envoy.extensions.filters.listener.original_dst.v3.OriginalDst"

func init() {
	listenerfilter.Registry.Register(Name, []string{"envoy.extensions.filters.listener.original_dst.v3.OriginalDst"},
		func(cfg *anypb.Any, _ stats.Scope) (listenerfilter.Filter, error) {
			m := &originaldstv3.OriginalDst{}
			if cfg != nil {
				if err := cfg.UnmarshalTo(m); err != nil {
					return nil, fmt.Errorf("typed_config: %w", err)
				}
			}
			if err := confcheck.Fields(m, ""); err != nil {
				return nil, err
			}
			return Filter{}, nil
		})
}

// Filter is the compiled original_dst filter; it has no configuration.
type Filter struct{}

// OnAccept implements listenerfilter.Filter. A connection whose original
// destination cannot be read (no redirect, not TCP over IP) goes on with its
// own local address, as in Envoy.
func (Filter) OnAccept(conn *net.Conn, info *streaminfo.Conn) error {
	sc := syscallConn(*conn)
	if sc == nil {
		return nil
	}
	v6 := info.LocalAddr.Addr().Is6() && !info.LocalAddr.Addr().Is4In6()
	dst, err := OriginalDst(sc, v6)
	if err != nil || !dst.IsValid() {
		return nil
	}
	info.LocalAddr = netip.AddrPortFrom(dst.Addr().Unmap(), dst.Port())
	info.LocalAddrRestored = true
	return nil
}

// syscallConn finds the socket under c, looking through wrappers that
// replay peeked bytes (Unwrap); nil when there is none.
func syscallConn(c net.Conn) syscall.Conn {
	for range 8 {
		if sc, ok := c.(syscall.Conn); ok {
			return sc
		}
		u, ok := c.(interface{ Unwrap() net.Conn })
		if !ok {
			return nil
		}
		c = u.Unwrap()
	}
	return nil
}

// ErrUnsupported is returned by OriginalDst where the platform has no way
// to read a connection's original destination.
var ErrUnsupported = errors.New("original destination: not supported on this platform")
