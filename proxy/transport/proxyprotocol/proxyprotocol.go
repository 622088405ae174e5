// Package proxyprotocol is Envoy's upstream PROXY protocol transport socket
// (envoy.transport_sockets.upstream_proxy_protocol): each new upstream
// connection starts with a PROXY protocol v1 or v2 header carrying the
// downstream connection's source and destination addresses, then runs the
// inner transport socket (raw_buffer or tls). Without a downstream
// connection (health checks, the proxy's own clients) v1 carries the
// upstream connection's own addresses and v2 is a LOCAL header, as Envoy.
package proxyprotocol

import (
	"context"
	"fmt"
	"net"
	"net/netip"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	ppv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/proxy_protocol/v3"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/outrider-proxy/outrider/proxy/confcheck"
	"github.com/outrider-proxy/outrider/proxy/transport"
	"github.com/outrider-proxy/outrider/proxy/upstream"
	"github.com/outrider-proxy/outrider/telemetry/stats"
)

// Name is the transport socket's Envoy name.
const Name = "envoy.transport_sockets.upstream_proxy_protocol"

// HostMetadataKey is the typed_filter_metadata key of an endpoint's
// PerHostConfig (its added_tlvs).
const HostMetadataKey = "envoy.transport_sockets.proxy_protocol"

func init() {
	transport.Registry.Register(Name,
		[]string{"envoy.extensions.transport_sockets.proxy_protocol.v3.ProxyProtocolUpstreamTransport"},
		transport.Factory{Upstream: create})
}

// Transport is the compiled transport socket, shared by every connection
// of the cluster. It implements transport.PerDownstream: pools share a
// connection only among requests of one downstream address pair.
type Transport struct {
	v2    bool               // config.version V2 (else V1)
	added []TLV              // config.added_tlvs, duplicates of a type dropped
	inner transport.Upstream // nil: raw_buffer
	// tooLong is upstream.proxyprotocol.v2_tlvs_exceed_max_length.
	tooLong *stats.Counter
}

func create(ctx *transport.Context, a *anypb.Any) (transport.Upstream, error) {
	m := &ppv3.ProxyProtocolUpstreamTransport{}
	if err := a.UnmarshalTo(m); err != nil {
		return nil, fmt.Errorf("typed_config: %w", err)
	}
	// allow_unspecified_address and tlv_as_pool_key are not implemented by
	// Envoy either ([#not-implemented-hide:]): accepted, without effect.
	if err := confcheck.Fields(m, "", "config", "transport_socket", "allow_unspecified_address", "tlv_as_pool_key"); err != nil {
		return nil, err
	}
	t := &Transport{}
	if err := t.compileConfig(m.GetConfig()); err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	ts := m.GetTransportSocket()
	if ts == nil {
		return nil, fmt.Errorf("transport_socket: required")
	}
	f, err := transport.Registry.Lookup(ts.GetName(), ts.GetTypedConfig().GetTypeUrl())
	if err != nil {
		return nil, fmt.Errorf("transport_socket: %w", err)
	}
	if f.Upstream == nil {
		return nil, fmt.Errorf("transport_socket: %q is not an upstream transport socket", ts.GetName())
	}
	if t.inner, err = f.Upstream(ctx, ts.GetTypedConfig()); err != nil {
		return nil, fmt.Errorf("transport_socket: %w", err)
	}
	scope := ctx.Scope
	if scope.Store() == nil { // compiled outside a server
		scope = stats.NewStore().Scope("")
	}
	t.tooLong = scope.Counter("upstream.proxyprotocol.v2_tlvs_exceed_max_length")
	return t, nil
}

// compileConfig reads ProxyProtocolConfig. pass_through_tlvs is accepted:
// it selects TLVs of a PROXY header the downstream connection arrived
// with, and outrider has no proxy_protocol listener filter to parse one, so
// there are none to pass.
func (t *Transport) compileConfig(c *corev3.ProxyProtocolConfig) error {
	if err := confcheck.Fields(c, "", "version", "pass_through_tlvs", "added_tlvs"); err != nil {
		return err
	}
	t.v2 = c.GetVersion() == corev3.ProxyProtocolConfig_V2
	seen := map[uint8]bool{}
	for i, e := range c.GetAddedTlvs() {
		if e.GetType() > 0xff {
			return fmt.Errorf("added_tlvs[%d].type: %d is not a uint8", i, e.GetType())
		}
		if e.GetFormatString() != nil {
			if len(e.GetValue()) > 0 {
				return fmt.Errorf("added_tlvs[%d]: only one of 'value' or 'format_string' may be set", i)
			}
			return fmt.Errorf("added_tlvs[%d].format_string: not supported", i)
		}
		if len(e.GetValue()) == 0 {
			return fmt.Errorf("added_tlvs[%d]: one of 'value' or 'format_string' must be set", i)
		}
		if seen[uint8(e.GetType())] {
			continue // Envoy skips a repeated type
		}
		seen[uint8(e.GetType())] = true
		t.added = append(t.added, TLV{Type: uint8(e.GetType()), Value: e.GetValue()})
	}
	return nil
}

// PerDownstream implements transport.PerDownstream.
func (t *Transport) PerDownstream() {}

// UsesTLS implements transport.Passthrough: the inner transport decides.
func (t *Transport) UsesTLS() bool { return transport.IsTLS(t.inner) }

// Wrap writes the PROXY header to c, then runs the inner transport (none
// for raw_buffer: c itself is returned).
func (t *Transport) Wrap(ctx context.Context, c net.Conn, sni string) (net.Conn, error) {
	if err := t.writeHeader(ctx, c); err != nil {
		return nil, err
	}
	if t.inner == nil {
		return c, nil
	}
	return t.inner.Wrap(ctx, c, sni)
}

// overrideWrapper is the TLS transport's per-connection SNI and SAN check
// (auto_sni, auto_san_validation).
type overrideWrapper interface {
	WrapOverride(ctx context.Context, c net.Conn, sni, san string) (net.Conn, error)
}

// WrapOverride is Wrap with the inner TLS transport's SNI and SAN override.
func (t *Transport) WrapOverride(ctx context.Context, c net.Conn, sni, san string) (net.Conn, error) {
	if err := t.writeHeader(ctx, c); err != nil {
		return nil, err
	}
	if ow, ok := t.inner.(overrideWrapper); ok {
		return ow.WrapOverride(ctx, c, sni, san)
	}
	if t.inner == nil {
		return c, nil
	}
	return t.inner.Wrap(ctx, c, sni)
}

func (t *Transport) writeHeader(ctx context.Context, c net.Conn) error {
	if _, err := c.Write(t.Header(ctx, c)); err != nil {
		return fmt.Errorf("PROXY protocol header: %w", err)
	}
	return nil
}

// hostConn is the pool's upstream connection, which knows its host.
type hostConn interface {
	Host() *upstream.Host
}

// Header is the header for the upstream connection c dialed with ctx: the
// downstream connection's remote and local addresses
// (transport.DownstreamOf), else, for v1, c's local and remote addresses
// and, for v2, a LOCAL header. v2 carries the host's TLVs (c's endpoint
// metadata under HostMetadataKey), then added_tlvs of types the host did
// not set.
func (t *Transport) Header(ctx context.Context, c net.Conn) []byte {
	var src, dst netip.AddrPort
	if ds := transport.DownstreamOf(ctx); ds != nil && ds.RemoteAddr.IsValid() && ds.LocalAddr.IsValid() {
		src, dst = ds.RemoteAddr, ds.LocalAddr
	}
	if !t.v2 {
		if !src.IsValid() {
			src, dst = addrPort(c.LocalAddr()), addrPort(c.RemoteAddr())
		}
		return AppendV1(nil, src, dst)
	}
	if !src.IsValid() {
		return AppendV2Local(nil)
	}
	var md *corev3.Metadata
	if hc, ok := c.(hostConn); ok && hc.Host() != nil {
		md = hc.Host().Metadata
	}
	b, skipped := AppendV2(nil, src, dst, t.tlvs(md))
	if skipped {
		t.tooLong.Inc()
	}
	return b
}

// tlvs is Envoy's buildCustomTLVs: the host's added_tlvs (static values;
// a repeated type once), then the config's of other types.
func (t *Transport) tlvs(md *corev3.Metadata) []TLV {
	a := md.GetTypedFilterMetadata()[HostMetadataKey]
	if a == nil {
		return t.added
	}
	hc := &corev3.PerHostConfig{}
	if err := a.UnmarshalTo(hc); err != nil {
		return t.added // Envoy logs and uses the config's TLVs
	}
	var out []TLV
	seen := map[uint8]bool{}
	for _, e := range hc.GetAddedTlvs() {
		ty := uint8(e.GetType())
		if seen[ty] {
			continue
		}
		seen[ty] = true
		out = append(out, TLV{Type: ty, Value: e.GetValue()})
	}
	for _, tl := range t.added {
		if !seen[tl.Type] {
			out = append(out, tl)
		}
	}
	return out
}

// addrPort is a TCP address as a netip.AddrPort (zero for others).
func addrPort(a net.Addr) netip.AddrPort {
	if ta, ok := a.(*net.TCPAddr); ok {
		return ta.AddrPort()
	}
	if ap, err := netip.ParseAddrPort(a.String()); err == nil {
		return ap
	}
	return netip.AddrPort{}
}
