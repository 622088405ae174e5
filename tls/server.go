package tlsctx

import (
	"crypto/ecdsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"time"

	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/proto"

	"github.com/outrider-proxy/outrider/proxy/confcheck"
)

// Server is a compiled DownstreamTlsContext. Its certificates and validation
// context follow secret updates; everything else is fixed at compile time.
type Server struct {
	reloader[serverState]
	base *tls.Config
}

// serverState is what a secret update replaces.
type serverState struct {
	certs    []*tls.Certificate
	paths    []string // per certificate, for /certs
	val      *validator
	isECDSA  []bool
	names    map[string][]int // DNS SAN (or CN) pattern, "*." stripped to "." -> cert indexes
	hasRSA   bool
	fullScan bool
	cfg      *tls.Config // template for handshakes
}

var downstreamFields = []string{
	"common_tls_context", "require_client_certificate", "require_sni", "session_ticket_keys",
	"disable_stateless_session_resumption", "disable_stateful_session_resumption",
	"full_scan_certs_on_sni_mismatch", "ocsp_staple_policy",
}

// CompileDownstream compiles a DownstreamTlsContext. secrets resolves SDS
// secret names and may be nil when none are used. Errors name the field.
func CompileDownstream(ctx *tlsv3.DownstreamTlsContext, secrets SecretProvider) (*Server, error) {
	if err := confcheck.Fields(ctx, "", downstreamFields...); err != nil {
		return nil, err
	}
	if ctx.GetOcspStaplePolicy() != tlsv3.DownstreamTlsContext_LENIENT_STAPLING {
		return nil, fmt.Errorf("ocsp_staple_policy: %s not supported by outrider yet", ctx.GetOcspStaplePolicy())
	}
	ctx = proto.Clone(ctx).(*tlsv3.DownstreamTlsContext)
	s := &Server{}
	var ticketKeys [][32]byte
	for i, k := range ctx.GetSessionTicketKeys().GetKeys() {
		b, err := readDataSource(k, fmt.Sprintf("session_ticket_keys.keys[%d]", i))
		if err != nil {
			return nil, err
		}
		if len(b) != 80 {
			return nil, fmt.Errorf("session_ticket_keys.keys[%d]: key has length %d, must be 80 bytes", i, len(b))
		}
		// Go's ticket keys are 32 bytes: derive them from Envoy's 80-byte keys.
		ticketKeys = append(ticketKeys, sha256.Sum256(b))
	}
	if ctx.GetSessionTicketKeys() != nil && len(ticketKeys) == 0 {
		return nil, errors.New("session_ticket_keys.keys: at least one key is required")
	}
	require := ctx.GetRequireClientCertificate().GetValue()
	requireSNI := ctx.GetRequireSni().GetValue()
	noTickets := ctx.GetDisableStatelessSessionResumption()
	fullScan := ctx.GetFullScanCertsOnSniMismatch().GetValue()

	compile := func() (*serverState, error) {
		cm, err := compileCommon(ctx.GetCommonTlsContext(), secrets, "common_tls_context")
		if err != nil {
			return nil, err
		}
		if len(cm.certs) == 0 {
			return nil, fmt.Errorf("common_tls_context: %w (tls_certificates or tls_certificate_sds_secret_configs)", errNoCertificate)
		}
		st := &serverState{certs: cm.certs, paths: cm.paths, names: map[string][]int{}, fullScan: fullScan}
		for i, c := range cm.certs {
			_, ec := c.Leaf.PublicKey.(*ecdsa.PublicKey)
			st.isECDSA = append(st.isECDSA, ec)
			st.hasRSA = st.hasRSA || !ec
			st.addNames(i)
		}
		cfg := &tls.Config{
			NextProtos:             cm.alpn,
			SessionTicketsDisabled: noTickets,
		}
		cm.params.apply(cfg)
		cfg.GetCertificate = st.selectCertificate
		val := cm.val
		st.val = val
		switch {
		case require || val.hasChecks():
			cfg.ClientAuth = tls.RequestClientCert
		}
		cfg.VerifyConnection = func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				if require {
					return &VerifyError{FailVerifyNoCert, errors.New("client did not present a certificate")}
				}
				return nil
			}
			if val == nil {
				return nil
			}
			return val.verify(cs.PeerCertificates, "", time.Now())
		}
		if len(ticketKeys) > 0 {
			cfg.SetSessionTicketKeys(ticketKeys)
		}
		st.cfg = cfg
		return st, nil
	}
	if err := s.init(secrets, compile); err != nil {
		return nil, err
	}
	s.base = &tls.Config{
		SessionTicketsDisabled: noTickets,
		GetConfigForClient: func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
			if requireSNI && hello.ServerName == "" {
				return nil, errors.New("client did not send SNI (require_sni)")
			}
			st := s.state.Load()
			if st == nil {
				return nil, errNotReady
			}
			cfg := st.cfg
			if len(cfg.NextProtos) > 0 && len(hello.SupportedProtos) > 0 && !overlaps(cfg.NextProtos, hello.SupportedProtos) {
				// BoringSSL (Envoy) continues without ALPN; Go would refuse the handshake.
				cfg = cfg.Clone()
				cfg.NextProtos = nil
			}
			return cfg, nil
		},
	}
	if len(ticketKeys) > 0 {
		s.base.SetSessionTicketKeys(ticketKeys)
	}
	track(secrets, s)
	return s, nil
}

// Config returns the server TLS config. It selects the per-handshake config
// at ClientHello time, so secret updates apply to new handshakes.
func (s *Server) Config() *tls.Config { return s.base }

func overlaps(a, b []string) bool {
	for _, x := range a {
		if slices.Contains(b, x) {
			return true
		}
	}
	return false
}

// addNames indexes certificate i by its DNS SANs, or by its subject CN when it
// has no SAN extension at all (RFC 6125 6.4.4), as Envoy does.
func (st *serverState) addNames(i int) {
	leaf := st.certs[i].Leaf
	var names []string
	hasSANExt := len(leaf.DNSNames)+len(leaf.URIs)+len(leaf.IPAddresses)+len(leaf.EmailAddresses) > 0
	if hasSANExt {
		names = leaf.DNSNames
	} else if leaf.Subject.CommonName != "" {
		names = []string{leaf.Subject.CommonName}
	}
	for _, n := range names {
		n = strings.ToLower(n)
		if strings.HasPrefix(n, "*.") {
			n = n[1:]
		}
		// One certificate per key type and name: the earlier one wins.
		dup := false
		for _, j := range st.names[n] {
			dup = dup || st.isECDSA[j] == st.isECDSA[i]
		}
		if !dup {
			st.names[n] = append(st.names[n], i)
		}
	}
}

// selectCertificate is Envoy's DefaultTlsCertificateSelector::findTlsContext:
// exact SNI, then wildcard, preferring ECDSA certificates the client can use;
// without SNI (or on mismatch with full_scan_certs_on_sni_mismatch) a scan of
// all certificates; else the first certificate.
func (st *serverState) selectCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	ecdsaCapable := false
	for _, s := range hello.SignatureSchemes {
		switch s {
		case tls.ECDSAWithP256AndSHA256, tls.ECDSAWithP384AndSHA384, tls.ECDSAWithP521AndSHA512, tls.ECDSAWithSHA1:
			ecdsaCapable = true
		}
	}
	// Capability only (signature schemes, curves, versions): the name is matched here.
	caps := *hello
	caps.ServerName = ""
	selected, candidate := -1, -1
	try := func(i int) bool {
		if st.isECDSA[i] {
			if ecdsaCapable && caps.SupportsCertificate(st.certs[i]) == nil {
				selected = i
				return true
			}
			return false
		}
		if !ecdsaCapable {
			selected = i
			return true
		}
		if candidate < 0 {
			candidate = i
		}
		return false
	}
	fromMap := func(name string) {
		for _, i := range st.names[name] {
			if try(i) {
				return
			}
		}
	}
	sni := strings.ToLower(hello.ServerName)
	if sni != "" {
		fromMap(sni)
		if selected < 0 && candidate < 0 {
			if p := strings.IndexByte(sni[1:], '.'); p >= 0 && p+1 < len(sni)-1 {
				fromMap(sni[p+1:])
			}
		}
		if selected < 0 {
			selected = candidate
		}
		if selected < 0 && !st.fullScan {
			selected = 0
		}
	}
	if selected < 0 {
		candidate = -1
		if ecdsaCapable || st.hasRSA {
			for i := range st.certs {
				if try(i) {
					break
				}
			}
		}
		if selected < 0 {
			selected = candidate
		}
		if selected < 0 {
			selected = 0
		}
	}
	if rc, ok := hello.Conn.(*localCertConn); ok {
		rc.cert = st.certs[selected]
	}
	return st.certs[selected], nil
}

// localCertConn carries, through the handshake, which certificate the
// server presented, for the connection's TLSInfo.
type localCertConn struct {
	net.Conn
	cert *tls.Certificate
}

// localLeaf is the certificate presented on a handshake through rc: the
// one selected, or the only one configured (a resumed session selects
// none); nil when unknown.
func (s *Server) localLeaf(rc *localCertConn) *x509.Certificate {
	if rc.cert != nil {
		return rc.cert.Leaf
	}
	if st := s.state.Load(); st != nil && len(st.certs) == 1 {
		return st.certs[0].Leaf
	}
	return nil
}
