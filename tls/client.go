package tlsctx

import (
	"crypto/tls"
	"errors"
	"fmt"
	"time"

	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/proto"

	"github.com/outrider-proxy/outrider/proxy/confcheck"
)

// Client is a compiled UpstreamTlsContext. Its certificate and validation
// context follow secret updates; a session cache of max_session_keys entries
// is shared by all its connections.
type Client struct {
	reloader[clientState]
	sni          string
	autoHostSNI  bool
	autoSANCheck bool
	renegotiate  bool
	cache        tls.ClientSessionCache // nil: no resumption (max_session_keys 0)
}

type clientState struct {
	cert   *tls.Certificate // nil: no client certificate
	path   string           // cert's chain file, "<inline>" otherwise
	val    *validator
	params params
	alpn   []string
}

var upstreamFields = []string{
	"common_tls_context", "sni", "auto_host_sni", "auto_sni_san_validation", "allow_renegotiation",
	"max_session_keys", "enforce_rsa_key_usage",
}

// CompileUpstream compiles an UpstreamTlsContext. secrets resolves SDS secret
// names and may be nil when none are used. Errors name the field.
func CompileUpstream(ctx *tlsv3.UpstreamTlsContext, secrets SecretProvider) (*Client, error) {
	if err := confcheck.Fields(ctx, "", upstreamFields...); err != nil {
		return nil, err
	}
	if e := ctx.GetEnforceRsaKeyUsage(); e != nil && !e.GetValue() {
		return nil, errors.New("enforce_rsa_key_usage: false not supported by outrider (Go always enforces it)")
	}
	if len(ctx.GetSni()) > 255 {
		return nil, errors.New("sni: longer than 255 bytes")
	}
	ctx = proto.Clone(ctx).(*tlsv3.UpstreamTlsContext)
	c := &Client{
		sni:          ctx.GetSni(),
		autoHostSNI:  ctx.GetAutoHostSni(),
		autoSANCheck: ctx.GetAutoSniSanValidation(),
		renegotiate:  ctx.GetAllowRenegotiation(),
	}
	keys := 1 // Envoy's default max_session_keys
	if m := ctx.GetMaxSessionKeys(); m != nil {
		keys = int(m.GetValue())
	}
	if keys > 0 {
		c.cache = tls.NewLRUClientSessionCache(keys)
	}
	compile := func() (*clientState, error) {
		cm, err := compileCommon(ctx.GetCommonTlsContext(), secrets, "common_tls_context")
		if err != nil {
			return nil, err
		}
		if len(cm.certs) > 1 {
			return nil, errors.New("common_tls_context: multiple TLS certificates are not supported for client contexts")
		}
		st := &clientState{val: cm.val, params: cm.params, alpn: cm.alpn}
		if len(cm.certs) == 1 {
			st.cert, st.path = cm.certs[0], cm.paths[0]
		}
		return st, nil
	}
	if err := c.init(secrets, compile); err != nil {
		return nil, err
	}
	track(secrets, c)
	return c, nil
}

// ServerName is the SNI sent for a request to host (without port): host
// with auto_host_sni, else the configured sni ("" sends none).
func (c *Client) ServerName(host string) string {
	if c.autoHostSNI && host != "" {
		return host
	}
	return c.sni
}

// Config returns a client TLS config for one connection. host is the
// request's host (without port), used by auto_host_sni; "" uses the
// configured sni. The peer is verified by the validation context only
// (no validation context: any server certificate is accepted, as Envoy).
func (c *Client) Config(host string) *tls.Config {
	sni := c.ServerName(host)
	san := ""
	if c.autoSANCheck {
		san = sni
	}
	return c.config(sni, san)
}

// ConfigOverride is the client TLS config for one connection whose SNI and
// SAN check come from the request (the cluster's auto_sni and
// auto_san_validation): sni, when set, replaces the configured one; san,
// when set, replaces the SAN matchers (with auto_sni_san_validation the
// SNI sent is checked as well, as Config does).
func (c *Client) ConfigOverride(sni, san string) *tls.Config {
	if sni == "" {
		sni = c.sni
	}
	if san == "" && c.autoSANCheck {
		san = sni
	}
	return c.config(sni, san)
}

func (c *Client) config(sni, wantSAN string) *tls.Config {
	st := c.state.Load()
	if st == nil {
		return &tls.Config{ServerName: sni, InsecureSkipVerify: true,
			VerifyConnection: func(tls.ConnectionState) error { return errNotReady }}
	}
	cfg := &tls.Config{
		ServerName:         sni,
		NextProtos:         st.alpn,
		InsecureSkipVerify: true, // verified by VerifyConnection below
		ClientSessionCache: c.cache,
	}
	st.params.apply(cfg)
	if c.renegotiate {
		cfg.Renegotiation = tls.RenegotiateFreelyAsClient
	}
	if st.cert != nil {
		cert := st.cert
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return cert, nil }
	}
	val := st.val
	cfg.VerifyConnection = func(cs tls.ConnectionState) error {
		if val == nil && wantSAN == "" {
			return nil
		}
		v := val
		if v == nil {
			v = &validator{}
		}
		return v.verify(cs.PeerCertificates, wantSAN, time.Now())
	}
	return cfg
}

// String describes the client for logs.
func (c *Client) String() string { return fmt.Sprintf("upstream TLS (sni %q)", c.sni) }
