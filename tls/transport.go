package tlsctx

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"

	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/outrider-proxy/outrider/proxy/streaminfo"
	"github.com/outrider-proxy/outrider/proxy/transport"
	"github.com/outrider-proxy/outrider/telemetry/stats"
)

// TransportName is Envoy's name of the TLS transport socket.
const TransportName = "envoy.transport_sockets.tls"

func init() {
	transport.Registry.Register(TransportName, []string{
		"envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
		"envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
	}, transport.Factory{Downstream: newDownstream, Upstream: newUpstream})
}

func secretsOf(ctx *transport.Context) SecretProvider {
	if sp, ok := ctx.Secrets.(SecretProvider); ok {
		return sp
	}
	return &Secrets{}
}

// downstream terminates TLS on accepted connections.
type downstream struct {
	srv      *Server
	stats    *Stats
	notReady *stats.Counter
}

func newDownstream(ctx *transport.Context, a *anypb.Any) (transport.Downstream, error) {
	m := &tlsv3.DownstreamTlsContext{}
	if err := a.UnmarshalTo(m); err != nil {
		return nil, fmt.Errorf("typed_config: a TLS transport socket on a listener needs a DownstreamTlsContext: %w", err)
	}
	srv, err := CompileDownstream(m, secretsOf(ctx))
	if err != nil {
		return nil, err
	}
	f := ctx.Scope.Scope("server_ssl_socket_factory")
	upd := f.Counter("ssl_context_update_by_sds")
	srv.OnReload(upd.Inc)
	return &downstream{srv: srv, stats: NewStats(ctx.Scope.Scope("ssl")), notReady: f.Counter("downstream_context_secrets_not_ready")}, nil
}

// Wrap runs the server handshake and records the session in info.
func (d *downstream) Wrap(ctx context.Context, c net.Conn, info *streaminfo.Conn) (net.Conn, error) {
	if !d.srv.Ready() {
		d.notReady.Inc()
		return nil, errNotReady
	}
	rc := &localCertConn{Conn: c}
	tc := tls.Server(rc, d.srv.Config())
	err := tc.HandshakeContext(ctx)
	cs := tc.ConnectionState()
	d.stats.Record(cs, err)
	if err != nil {
		return nil, err
	}
	p := PeerInfoFromState(cs)
	info.TransportProtocol = "tls"
	if cs.ServerName != "" {
		info.RequestedServerName = cs.ServerName
	}
	info.TLS = &streaminfo.TLSInfo{
		Version: p.Version, Cipher: p.Cipher, ServerName: p.ServerName, ALPN: p.ALPN, Resumed: p.Resumed,
		PeerPresented: p.Presented, PeerURISANs: p.URISANs, PeerDNSSANs: p.DNSSANs,
		PeerSubject: p.Subject, PeerIssuer: p.Issuer, PeerSerial: p.Serial, PeerFingerprintSHA256: p.FingerprintSHA256,
		PeerValidFrom: p.ValidFrom, PeerExpires: p.Expires, PeerCertificates: cs.PeerCertificates,
	}
	if leaf := d.srv.localLeaf(rc); leaf != nil {
		info.TLS.LocalDNSSANs = leaf.DNSNames
		info.TLS.LocalSubject = leaf.Subject.String()
		for _, u := range leaf.URIs {
			info.TLS.LocalURISANs = append(info.TLS.LocalURISANs, u.String())
		}
	}
	return tc, nil
}

// upstream originates TLS on dialed connections.
type upstream struct {
	cli      *Client
	stats    *Stats
	notReady *stats.Counter
}

func newUpstream(ctx *transport.Context, a *anypb.Any) (transport.Upstream, error) {
	m := &tlsv3.UpstreamTlsContext{}
	if err := a.UnmarshalTo(m); err != nil {
		return nil, fmt.Errorf("typed_config: a TLS transport socket on a cluster needs an UpstreamTlsContext: %w", err)
	}
	cli, err := CompileUpstream(m, secretsOf(ctx))
	if err != nil {
		return nil, err
	}
	f := ctx.Scope.Scope("client_ssl_socket_factory")
	upd := f.Counter("ssl_context_update_by_sds")
	cli.OnReload(upd.Inc)
	return &upstream{cli: cli, stats: NewStats(ctx.Scope.Scope("ssl")), notReady: f.Counter("upstream_context_secrets_not_ready")}, nil
}

// Wrap runs the client handshake; host is the request's host for auto_sni
// ("" uses the configured sni).
func (u *upstream) Wrap(ctx context.Context, c net.Conn, host string) (net.Conn, error) {
	if !u.cli.Ready() {
		u.notReady.Inc()
		return nil, errNotReady
	}
	return u.handshake(ctx, c, u.cli.Config(host))
}

// WrapOverride is Wrap with the SNI and the SAN to verify taken from the
// request (the cluster's auto_sni and auto_san_validation); "" keeps the
// context's own.
func (u *upstream) WrapOverride(ctx context.Context, c net.Conn, sni, san string) (net.Conn, error) {
	if !u.cli.Ready() {
		u.notReady.Inc()
		return nil, errNotReady
	}
	return u.handshake(ctx, c, u.cli.ConfigOverride(sni, san))
}

func (u *upstream) handshake(ctx context.Context, c net.Conn, cfg *tls.Config) (net.Conn, error) {
	tc := tls.Client(c, cfg)
	err := tc.HandshakeContext(ctx)
	u.stats.Record(tc.ConnectionState(), err)
	if err != nil {
		return nil, err
	}
	return tc, nil
}
