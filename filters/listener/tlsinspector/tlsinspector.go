// Package tlsinspector is Envoy's envoy.filters.listener.tls_inspector: it
// peeks at a connection's first bytes and, when they are a TLS ClientHello,
// records transport protocol "tls", the SNI and the ALPN offer for filter
// chain matching. The bytes it reads are replayed intact to whatever reads
// the connection next; anything else is marked "raw_buffer".
package tlsinspector

import (
	"errors"
	"fmt"
	"net"
	"strings"

	tlsinspectorv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/tls_inspector/v3"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/outrider-proxy/outrider/proxy/confcheck"
	"github.com/outrider-proxy/outrider/proxy/listenerfilter"
	"github.com/outrider-proxy/outrider/proxy/streaminfo"
	"github.com/outrider-proxy/outrider/telemetry/stats"
)

// Name is the filter's Envoy name.
const Name = "envoy.filters.listener.tls_inspector"

func init() {
	listenerfilter.Registry.Register(Name, []string{"envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector"},
		func(cfg *anypb.Any, scope stats.Scope) (listenerfilter.Filter, error) {
			m := &tlsinspectorv3.TlsInspector{}
			if cfg != nil {
				if err := cfg.UnmarshalTo(m); err != nil {
					return nil, fmt.Errorf("typed_config: %w", err)
				}
			}
			return New(m, NewStats(scope.Scope("tls_inspector")))
		})
}

// Stats are the tls_inspector counters of a listener (scope
// "listener.<address>.tls_inspector.").
type Stats struct {
	ClientHelloTooLarge, TLSFound, TLSNotFound, ALPNFound, ALPNNotFound, SNIFound, SNINotFound *stats.Counter
}

// NewStats looks the counters up under scope.
func NewStats(scope stats.Scope) *Stats {
	return &Stats{
		ClientHelloTooLarge: scope.Counter("client_hello_too_large"),
		TLSFound:            scope.Counter("tls_found"),
		TLSNotFound:         scope.Counter("tls_not_found"),
		ALPNFound:           scope.Counter("alpn_found"),
		ALPNNotFound:        scope.Counter("alpn_not_found"),
		SNIFound:            scope.Counter("sni_found"),
		SNINotFound:         scope.Counter("sni_not_found"),
	}
}

// Filter is a compiled tls_inspector.
type Filter struct {
	initial, max int
	closeOnError bool
	stats        *Stats
}

// ErrClientHelloTooLarge closes connections whose ClientHello exceeds max_client_hello_size.
var ErrClientHelloTooLarge = errors.New("tls_inspector: ClientHello too large")

// ErrParse closes connections whose ClientHello cannot be parsed when
// close_connection_on_client_hello_parsing_errors is set.
var ErrParse = errors.New("tls_inspector: ClientHello parsing error")

// New compiles the filter config; st may be nil (no stats).
func New(cfg *tlsinspectorv3.TlsInspector, st *Stats) (*Filter, error) {
	if err := confcheck.Fields(cfg, "", "initial_read_buffer_size", "max_client_hello_size",
		"close_connection_on_client_hello_parsing_errors"); err != nil {
		return nil, err
	}
	f := &Filter{max: 16 << 10, closeOnError: cfg.GetCloseConnectionOnClientHelloParsingErrors(), stats: st}
	if m := cfg.GetMaxClientHelloSize(); m != nil {
		if m.GetValue() > 64<<10 {
			return nil, errors.New("max_client_hello_size: must be at most 65536")
		}
		f.max = int(m.GetValue())
	}
	f.initial = f.max
	if v := cfg.GetInitialReadBufferSize(); v != nil {
		if v.GetValue() == 0 || int(v.GetValue()) > f.max {
			return nil, fmt.Errorf("initial_read_buffer_size: must be between 1 and max_client_hello_size (%d)", f.max)
		}
		f.initial = int(v.GetValue())
	}
	return f, nil
}

func inc(c *stats.Counter) {
	if c != nil {
		c.Inc()
	}
}

// OnAccept implements listenerfilter.Filter. It reads until it can decide,
// bounded by the ClientHello size limit; the caller's deadline
// (listener_filters_timeout) bounds the time.
func (f *Filter) OnAccept(conn *net.Conn, info *streaminfo.Conn) error {
	// Room for the record headers of a ClientHello split over several records.
	limit := f.max + recordHeaderLen*(f.max/(1<<14)+2)
	buf := make([]byte, 0, min(f.initial+recordHeaderLen, limit))
	var st *Stats
	if f.stats != nil {
		st = f.stats
	} else {
		st = &Stats{}
	}
	for {
		if len(buf) == cap(buf) {
			nb := make([]byte, len(buf), min(2*cap(buf), limit))
			copy(nb, buf)
			buf = nb
		}
		n, err := (*conn).Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		ch, status := ParseClientHello(buf, f.max)
		if status == NeedMore && len(buf) >= limit {
			status = TooLarge
		}
		switch status {
		case Found:
			inc(st.TLSFound)
			info.TransportProtocol = "tls"
			if ch.HasSNI {
				inc(st.SNIFound)
				info.RequestedServerName = strings.ToLower(ch.ServerName)
			} else {
				inc(st.SNINotFound)
			}
			if ch.HasALPN {
				inc(st.ALPNFound)
				info.ALPN = ch.ALPN
			} else {
				inc(st.ALPNNotFound)
			}
			*conn = listenerfilter.Replay(*conn, buf)
			return nil
		case NotTLS:
			inc(st.TLSNotFound)
			if f.closeOnError { // Envoy cannot tell plain text from a malformed ClientHello either
				return ErrParse
			}
			info.TransportProtocol = "raw_buffer"
			*conn = listenerfilter.Replay(*conn, buf)
			return nil
		case TooLarge:
			inc(st.ClientHelloTooLarge)
			return ErrClientHelloTooLarge
		}
		if err != nil {
			// EOF or deadline before a decision: Envoy closes the connection.
			return fmt.Errorf("tls_inspector: %w", err)
		}
	}
}
