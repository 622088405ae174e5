package upstream

import (
	"context"
	"net"
	"net/netip"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"

	"github.com/outrider-proxy/outrider/proxy/confcheck"
	"github.com/outrider-proxy/outrider/proxy/headers"
	"github.com/outrider-proxy/outrider/proxy/transport"
)

// TLSOverride is the upstream TLS identity one request asks for through the
// cluster's upstream_http_protocol_options: the SNI to send (auto_sni) and
// the name the server certificate's SAN must match instead of the
// configured matchers (auto_san_validation). The zero value asks for
// nothing: the transport socket's own sni and validation apply.
// Connections are pooled per TLSOverride, as Envoy hashes these transport
// socket options into its pool key, so a connection made for one name is
// never reused for another.
type TLSOverride struct {
	SNI string // "" : the UpstreamTlsContext's sni
	SAN string // "" : the configured SAN matchers
}

// autoSNI is the compiled upstream_http_protocol_options.
type autoSNI struct {
	sni, san bool
	header   string // override_auto_sni_header (lower case); "": :authority
}

// compileAutoSNI reads upstream_http_protocol_options (the cluster field or
// the HttpProtocolOptions extension's); path names the field in errors.
func (c *Cluster) compileAutoSNI(o *corev3.UpstreamHttpProtocolOptions, path string) error {
	if o == nil {
		return nil
	}
	if err := confcheck.Fields(o, path, "auto_sni", "auto_san_validation", "override_auto_sni_header"); err != nil {
		return err
	}
	c.extras().autoSNI = autoSNI{sni: o.GetAutoSni(), san: o.GetAutoSanValidation(), header: strings.ToLower(o.GetOverrideAutoSniHeader())}
	return nil
}

// TLSOverride is what a request with headers h asks of the upstream TLS
// connection: with auto_sni, the host of override_auto_sni_header when the
// request has it (non-empty), else of :authority, port removed, as SNI
// unless it is an IP address; with auto_san_validation, that host as the
// SAN to verify. Zero when neither is configured or the cluster has no
// TLS transport.
func (c *Cluster) TLSOverride(h *headers.Map) TLSOverride {
	a := c.x.autoSNI
	if (!a.sni && !a.san) || !transport.IsTLS(c.transport) || h == nil {
		return TLSOverride{}
	}
	var v string
	if a.header != "" {
		v = h.GetString(a.header)
	}
	if v == "" {
		v = h.GetString(":authority")
	}
	host := authorityHost(v)
	if host == "" {
		return TLSOverride{}
	}
	var o TLSOverride
	if _, err := netip.ParseAddr(host); err != nil && a.sni {
		o.SNI = host
	}
	if a.san {
		o.SAN = host
	}
	return o
}

// authorityHost is the host of an authority ("host", "host:port",
// "[v6]:port"), without brackets.
func authorityHost(a string) string {
	if h, _, err := net.SplitHostPort(a); err == nil {
		return h
	}
	return strings.TrimSuffix(strings.TrimPrefix(a, "["), "]")
}

// overrideWrapper is implemented by upstream transports (TLS) that can take
// a per-connection SNI and SAN check (auto_sni, auto_san_validation).
type overrideWrapper interface {
	WrapOverride(ctx context.Context, c net.Conn, sni, san string) (net.Conn, error)
}

// wrap applies the cluster's transport to a dialed connection with the
// pool's override.
func (c *Cluster) wrap(ctx context.Context, tr transport.Upstream, uc net.Conn, o TLSOverride) (net.Conn, error) {
	if o != (TLSOverride{}) {
		if ow, ok := tr.(overrideWrapper); ok {
			return ow.WrapOverride(ctx, uc, o.SNI, o.SAN)
		}
		return tr.Wrap(ctx, uc, o.SNI)
	}
	return tr.Wrap(ctx, uc, "")
}

// PoolFor is the HTTP/1 pool of host h for requests with override o: Pool(h)
// for the zero override, else a pool of its own per override.
func (c *Cluster) PoolFor(h *Host, o TLSOverride) *Pool {
	if o == (TLSOverride{}) {
		return c.Pool(h)
	}
	if p, ok := h.overrides().h1.Load(o); ok {
		return p.(*Pool)
	}
	np := &Pool{cluster: h.cluster, host: h, tls: o}
	if p, loaded := h.overrides().h1.LoadOrStore(o, np); loaded {
		return p.(*Pool)
	}
	if h.flags.load(fDrained) {
		np.Close()
	}
	return np
}

// H2PoolFor is the HTTP/2 pool of host h for requests with override o:
// H2Pool(h) for the zero override, else a pool of its own per override.
func (c *Cluster) H2PoolFor(h *Host, o TLSOverride) *H2Pool {
	if o == (TLSOverride{}) {
		return c.H2Pool(h)
	}
	if p, ok := h.overrides().h2.Load(o); ok {
		return p.(*H2Pool)
	}
	np := c.newH2Pool(h)
	np.tls = o
	if p, loaded := h.overrides().h2.LoadOrStore(o, np); loaded {
		return p.(*H2Pool)
	}
	if h.flags.load(fDrained) {
		np.Close()
	}
	return np
}

// closeOverridePools closes the per-override pools of a removed host.
func (h *Host) closeOverridePools() {
	e := h.ext.Load()
	if e == nil {
		return
	}
	o := &e.sni
	o.h1.Range(func(_, v any) bool {
		v.(*Pool).Close()
		return true
	})
	o.h2.Range(func(_, v any) bool {
		v.(*H2Pool).Close()
		return true
	})
}
