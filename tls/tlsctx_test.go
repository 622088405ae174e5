package tlsctx

import (
	"crypto/sha256"
	"crypto/tls"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/outrider-proxy/outrider/telemetry/stats"
)

func certProto(l leaf) *tlsv3.TlsCertificate {
	return &tlsv3.TlsCertificate{CertificateChain: inline(l.certPEM), PrivateKey: inline(l.keyPEM)}
}

func mustServer(t *testing.T, ctx *tlsv3.DownstreamTlsContext, sp SecretProvider) *Server {
	t.Helper()
	s, err := CompileDownstream(ctx, sp)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func mustClient(t *testing.T, ctx *tlsv3.UpstreamTlsContext) *Client {
	t.Helper()
	c, err := CompileUpstream(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func serverCtx(certs ...leaf) *tlsv3.DownstreamTlsContext {
	cc := &tlsv3.CommonTlsContext{}
	for _, l := range certs {
		cc.TlsCertificates = append(cc.TlsCertificates, certProto(l))
	}
	return &tlsv3.DownstreamTlsContext{CommonTlsContext: cc}
}

func withValidation(ctx *tlsv3.DownstreamTlsContext, vc *tlsv3.CertificateValidationContext) *tlsv3.DownstreamTlsContext {
	ctx.CommonTlsContext.ValidationContextType = &tlsv3.CommonTlsContext_ValidationContext{ValidationContext: vc}
	return ctx
}

func TestSNICertificateSelection(t *testing.T) {
	ca := newCA(t, "ca")
	def := ca.issue(t, leafOpts{cn: "default", dns: []string{"default.example"}})
	exact := ca.issue(t, leafOpts{cn: "a", dns: []string{"a.example.com"}})
	wild := ca.issue(t, leafOpts{cn: "wild", dns: []string{"*.b.example.com"}})
	cnOnly := ca.issue(t, leafOpts{cn: "cn.example.com"})
	rsaCert := ca.issue(t, leafOpts{cn: "rsa", dns: []string{"dual.example.com"}, rsa: true})
	ecCert := ca.issue(t, leafOpts{cn: "ec", dns: []string{"dual.example.com"}})
	srv := mustServer(t, serverCtx(def, exact, wild, cnOnly, rsaCert, ecCert), nil)
	tests := []struct {
		sni  string
		rsa  bool // client offers RSA signatures only (TLS 1.2)
		want string
	}{
		{"a.example.com", false, "a"},
		{"A.Example.COM", false, "a"},
		{"x.b.example.com", false, "wild"},
		{"y.x.b.example.com", false, "default"}, // wildcard covers one label
		{"cn.example.com", false, "cn.example.com"},
		{"unknown.example", false, "default"},
		{"", false, "default"},
		{"dual.example.com", false, "ec"},
		{"dual.example.com", true, "rsa"},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%s/rsa=%v", tt.sni, tt.rsa), func(t *testing.T) {
			cli := &tls.Config{InsecureSkipVerify: true, ServerName: tt.sni}
			if tt.rsa {
				cli.MaxVersion = tls.VersionTLS12
				cli.CipherSuites = []uint16{tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256}
			}
			r := handshake(t, srv.Config(), cli)
			if r.clientErr != nil || r.serverErr != nil {
				t.Fatalf("handshake: client %v, server %v", r.clientErr, r.serverErr)
			}
			if got := r.client.PeerCertificates[0].Subject.CommonName; got != tt.want {
				t.Fatalf("certificate %q, want %q", got, tt.want)
			}
		})
	}
}

func TestFullScanCertsOnSNIMismatch(t *testing.T) {
	ca := newCA(t, "ca")
	rsaCert := ca.issue(t, leafOpts{cn: "rsa", dns: []string{"r.example"}, rsa: true})
	ecCert := ca.issue(t, leafOpts{cn: "ec", dns: []string{"e.example"}})
	for _, full := range []bool{false, true} {
		ctx := serverCtx(rsaCert, ecCert)
		ctx.FullScanCertsOnSniMismatch = wrapperspb.Bool(full)
		srv := mustServer(t, ctx, nil)
		r := handshake(t, srv.Config(), &tls.Config{InsecureSkipVerify: true, ServerName: "other.example"})
		if r.clientErr != nil {
			t.Fatal(r.clientErr)
		}
		want := "rsa" // the first certificate
		if full {
			want = "ec" // the scan prefers a certificate the ECDSA-capable client can use
		}
		if got := r.client.PeerCertificates[0].Subject.CommonName; got != want {
			t.Errorf("full_scan=%v: certificate %q, want %q", full, got, want)
		}
	}
}

func TestALPN(t *testing.T) {
	ca := newCA(t, "ca")
	ctx := serverCtx(ca.issue(t, leafOpts{cn: "s", dns: []string{"s"}}))
	ctx.CommonTlsContext.AlpnProtocols = []string{"h2", "http/1.1"}
	srv := mustServer(t, ctx, nil)
	for _, tt := range []struct {
		offer []string
		want  string
	}{
		{[]string{"http/1.1", "h2"}, "h2"}, // server preference
		{[]string{"http/1.1"}, "http/1.1"},
		{[]string{"spdy/3"}, ""}, // no overlap: handshake continues without ALPN, as BoringSSL
		{nil, ""},
	} {
		cli := mustClient(t, &tlsv3.UpstreamTlsContext{Sni: "s", CommonTlsContext: &tlsv3.CommonTlsContext{AlpnProtocols: tt.offer}})
		r := handshake(t, srv.Config(), cli.Config(""))
		if r.clientErr != nil || r.serverErr != nil {
			t.Fatalf("%v: client %v, server %v", tt.offer, r.clientErr, r.serverErr)
		}
		if r.client.NegotiatedProtocol != tt.want || r.server.NegotiatedProtocol != tt.want {
			t.Errorf("%v: negotiated %q/%q, want %q", tt.offer, r.client.NegotiatedProtocol, r.server.NegotiatedProtocol, tt.want)
		}
	}
}

func exactURI(s string) *tlsv3.SubjectAltNameMatcher {
	return &tlsv3.SubjectAltNameMatcher{SanType: tlsv3.SubjectAltNameMatcher_URI,
		Matcher: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: s}}}
}

func TestMTLSSANMatchers(t *testing.T) {
	ca := newCA(t, "ca")
	other := newCA(t, "other")
	srvCert := ca.issue(t, leafOpts{cn: "server", dns: []string{"server.example"}})
	good := ca.issue(t, leafOpts{cn: "c", uris: []string{"spiffe://td/ns/x/sa/y"}, dns: []string{"client.Example.com"}})
	wrongNS := ca.issue(t, leafOpts{cn: "c", uris: []string{"spiffe://td/ns/z/sa/y"}})
	untrusted := other.issue(t, leafOpts{cn: "c", uris: []string{"spiffe://td/ns/x/sa/y"}})
	expired := ca.issue(t, leafOpts{cn: "c", uris: []string{"spiffe://td/ns/x/sa/y"}, expired: true})
	sm := func(typ tlsv3.SubjectAltNameMatcher_SanType, m *matcherv3.StringMatcher) *tlsv3.SubjectAltNameMatcher {
		return &tlsv3.SubjectAltNameMatcher{SanType: typ, Matcher: m}
	}
	prefix := sm(tlsv3.SubjectAltNameMatcher_URI, &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: "spiffe://td/ns/x/"}})
	regex := sm(tlsv3.SubjectAltNameMatcher_URI, &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: `spiffe://td/ns/[a-x]+/sa/y`}}})
	dnsIC := sm(tlsv3.SubjectAltNameMatcher_DNS, &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Suffix{Suffix: "EXAMPLE.COM"}, IgnoreCase: true})
	tests := []struct {
		name         string
		matchers     []*tlsv3.SubjectAltNameMatcher
		client       *leaf
		allowExpired bool
		want         Reason // "" accepts
	}{
		{"exact", []*tlsv3.SubjectAltNameMatcher{exactURI("spiffe://td/ns/x/sa/y")}, &good, false, ""},
		{"prefix", []*tlsv3.SubjectAltNameMatcher{prefix}, &good, false, ""},
		{"prefix mismatch", []*tlsv3.SubjectAltNameMatcher{prefix}, &wrongNS, false, FailVerifySAN},
		{"regex", []*tlsv3.SubjectAltNameMatcher{regex}, &good, false, ""},
		{"regex mismatch", []*tlsv3.SubjectAltNameMatcher{regex}, &wrongNS, false, FailVerifySAN},
		{"dns suffix ignore_case", []*tlsv3.SubjectAltNameMatcher{dnsIC}, &good, false, ""},
		{"any of two", []*tlsv3.SubjectAltNameMatcher{exactURI("spiffe://nope"), prefix}, &good, false, ""},
		{"no client cert", []*tlsv3.SubjectAltNameMatcher{prefix}, nil, false, FailVerifyNoCert},
		{"untrusted CA", nil, &untrusted, false, FailVerifyError},
		{"expired", nil, &expired, false, FailVerifyError},
		{"expired allowed", nil, &expired, true, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := withValidation(serverCtx(srvCert), &tlsv3.CertificateValidationContext{
				TrustedCa: inline(ca.pem), MatchTypedSubjectAltNames: tt.matchers, AllowExpiredCertificate: tt.allowExpired})
			ctx.RequireClientCertificate = wrapperspb.Bool(true)
			srv := mustServer(t, ctx, nil)
			uctx := &tlsv3.UpstreamTlsContext{Sni: "server.example", CommonTlsContext: &tlsv3.CommonTlsContext{
				ValidationContextType: &tlsv3.CommonTlsContext_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
					TrustedCa: inline(ca.pem)}}}}
			if tt.client != nil {
				uctx.CommonTlsContext.TlsCertificates = []*tlsv3.TlsCertificate{certProto(*tt.client)}
			}
			cli := mustClient(t, uctx)
			r := handshake(t, srv.Config(), cli.Config(""))
			st := NewStats(stats.NewStore().Scope("listener.test.ssl"))
			st.Record(r.server, r.serverErr)
			if tt.want == "" {
				if r.serverErr != nil || r.clientErr != nil {
					t.Fatalf("rejected: server %v, client %v", r.serverErr, r.clientErr)
				}
				if st.Handshake.Value() != 1 {
					t.Error("handshake not counted")
				}
				return
			}
			var ve *VerifyError
			if !errors.As(r.serverErr, &ve) || ve.Reason != tt.want {
				t.Fatalf("server error %v, want %s", r.serverErr, tt.want)
			}
			if r.clientErr == nil {
				t.Error("client did not see the rejection")
			}
			if st.ConnectionError.Value() != 1 || st.scope.Counter(string(tt.want)).Value() != 1 {
				t.Error("failure not counted")
			}
		})
	}
}

func TestOptionalClientCertificate(t *testing.T) {
	ca := newCA(t, "ca")
	srv := mustServer(t, withValidation(serverCtx(ca.issue(t, leafOpts{cn: "s", dns: []string{"s"}})),
		&tlsv3.CertificateValidationContext{TrustedCa: inline(ca.pem)}), nil)
	r := handshake(t, srv.Config(), &tls.Config{InsecureSkipVerify: true})
	if r.serverErr != nil || r.clientErr != nil {
		t.Fatalf("server %v, client %v", r.serverErr, r.clientErr)
	}
	st := NewStats(stats.NewStore().Scope("ssl"))
	st.Record(r.server, nil)
	if st.NoCertificate.Value() != 1 {
		t.Error("no_certificate not counted")
	}
}

func spiffeValidation(t *testing.T, cfg *tlsv3.SPIFFECertValidatorConfig, matchers ...*tlsv3.SubjectAltNameMatcher) *tlsv3.CertificateValidationContext {
	a, err := anypb.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return &tlsv3.CertificateValidationContext{
		CustomValidatorConfig:     &corev3.TypedExtensionConfig{Name: SPIFFEValidatorName, TypedConfig: a},
		MatchTypedSubjectAltNames: matchers,
	}
}

func TestSPIFFEValidator(t *testing.T) {
	caTD := newCA(t, "td")
	caOther := newCA(t, "other")
	srvCert := caTD.issue(t, leafOpts{cn: "server", uris: []string{"spiffe://td/ns/srv/sa/s"}})
	svid := caTD.issue(t, leafOpts{uris: []string{"spiffe://td/ns/x/sa/y"}})
	otherSVID := caOther.issue(t, leafOpts{uris: []string{"spiffe://other.org/ns/x/sa/y"}})
	forged := caOther.issue(t, leafOpts{uris: []string{"spiffe://td/ns/x/sa/y"}})
	twoIDs := caTD.issue(t, leafOpts{uris: []string{"spiffe://td/a", "spiffe://td/b"}})
	domains := &tlsv3.SPIFFECertValidatorConfig{TrustDomains: []*tlsv3.SPIFFECertValidatorConfig_TrustDomain{
		{Name: "td", TrustBundle: inline(caTD.pem)},
		{Name: "other.org", TrustBundle: inline(caOther.pem)},
	}}
	bundleMap := fmt.Sprintf(`{"trust_domains": {"td": {"spiffe_sequence": 1, "keys": [{"use": "x509-svid", "kty": "EC", "x5c": [%q]}]}}}`,
		base64.StdEncoding.EncodeToString(caTD.cert.Raw))
	bundles := &tlsv3.SPIFFECertValidatorConfig{
		TrustDomains: domains.TrustDomains, // ignored: trust_bundles takes precedence
		TrustBundles: &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: bundleMap}},
	}
	tests := []struct {
		name     string
		cfg      *tlsv3.SPIFFECertValidatorConfig
		matchers []*tlsv3.SubjectAltNameMatcher
		client   leaf
		want     Reason
	}{
		{"own domain", domains, nil, svid, ""},
		{"other domain with its bundle", domains, nil, otherSVID, ""},
		{"other domain restricted by SAN", domains, []*tlsv3.SubjectAltNameMatcher{exactURI("spiffe://td/ns/x/sa/y")}, otherSVID, FailVerifySAN},
		{"td id signed by another domain's CA", domains, nil, forged, FailVerifyError},
		{"two URI SANs", domains, nil, twoIDs, FailVerifyError},
		{"bundle map", bundles, nil, svid, ""},
		{"bundle map lacks domain", bundles, nil, otherSVID, FailVerifyError},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := withValidation(serverCtx(srvCert), spiffeValidation(t, tt.cfg, tt.matchers...))
			ctx.RequireClientCertificate = wrapperspb.Bool(true)
			srv := mustServer(t, ctx, nil)
			// The client verifies the server's SVID with the same validator.
			cli := mustClient(t, &tlsv3.UpstreamTlsContext{CommonTlsContext: &tlsv3.CommonTlsContext{
				TlsCertificates:       []*tlsv3.TlsCertificate{certProto(tt.client)},
				ValidationContextType: &tlsv3.CommonTlsContext_ValidationContext{ValidationContext: spiffeValidation(t, domains)},
			}})
			r := handshake(t, srv.Config(), cli.Config(""))
			if tt.want == "" {
				if r.serverErr != nil || r.clientErr != nil {
					t.Fatalf("rejected: server %v, client %v", r.serverErr, r.clientErr)
				}
				if got := PeerInfoFromState(r.server).URISANs; len(got) != 1 || got[0] != tt.client.cert.URIs[0].String() {
					t.Errorf("peer URI SANs %v", got)
				}
				return
			}
			var ve *VerifyError
			if !errors.As(r.serverErr, &ve) || ve.Reason != tt.want {
				t.Fatalf("server error %v, want %s", r.serverErr, tt.want)
			}
		})
	}
}

func TestVersionsAndCiphers(t *testing.T) {
	ca := newCA(t, "ca")
	cert := ca.issue(t, leafOpts{cn: "s", dns: []string{"s"}})
	params := func(min, max tlsv3.TlsParameters_TlsProtocol, ciphers ...string) *tlsv3.TlsParameters {
		return &tlsv3.TlsParameters{TlsMinimumProtocolVersion: min, TlsMaximumProtocolVersion: max, CipherSuites: ciphers}
	}
	tests := []struct {
		name            string
		server, client  *tlsv3.TlsParameters
		version, cipher string
		fail            bool
	}{
		{"default is 1.3", nil, nil, "TLSv1.3", "", false},
		{"1.2 with named cipher", params(tlsv3.TlsParameters_TLSv1_2, tlsv3.TlsParameters_TLSv1_2, "ECDHE-ECDSA-AES256-GCM-SHA384"), nil, "TLSv1.2", "ECDHE-ECDSA-AES256-GCM-SHA384", false},
		{"bracketed group", params(0, tlsv3.TlsParameters_TLSv1_2, "[ECDHE-ECDSA-CHACHA20-POLY1305|ECDHE-RSA-CHACHA20-POLY1305]"), nil, "TLSv1.2", "ECDHE-ECDSA-CHACHA20-POLY1305", false},
		{"client 1.2 only vs server 1.3 only", params(tlsv3.TlsParameters_TLSv1_3, 0), params(0, tlsv3.TlsParameters_TLSv1_2), "", "", true},
		{"client offers only TLS 1.0", nil, params(tlsv3.TlsParameters_TLSv1_0, tlsv3.TlsParameters_TLSv1_0), "", "", true},
		{"no common cipher", params(0, tlsv3.TlsParameters_TLSv1_2, "ECDHE-ECDSA-AES128-GCM-SHA256"), params(0, tlsv3.TlsParameters_TLSv1_2, "ECDHE-ECDSA-AES256-GCM-SHA384"), "", "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := serverCtx(cert)
			ctx.CommonTlsContext.TlsParams = tt.server
			srv := mustServer(t, ctx, nil)
			cli := mustClient(t, &tlsv3.UpstreamTlsContext{Sni: "s", CommonTlsContext: &tlsv3.CommonTlsContext{TlsParams: tt.client}})
			r := handshake(t, srv.Config(), cli.Config(""))
			if tt.fail {
				if r.serverErr == nil || r.clientErr == nil {
					t.Fatal("handshake succeeded")
				}
				return
			}
			if r.serverErr != nil || r.clientErr != nil {
				t.Fatalf("server %v, client %v", r.serverErr, r.clientErr)
			}
			p := PeerInfoFromState(r.client)
			if p.Version != tt.version || (tt.cipher != "" && p.Cipher != tt.cipher) {
				t.Errorf("got %s %s, want %s %s", p.Version, p.Cipher, tt.version, tt.cipher)
			}
		})
	}
}

func TestUpstreamPinsAndAutoSNI(t *testing.T) {
	ca := newCA(t, "ca")
	cert := ca.issue(t, leafOpts{cn: "s", dns: []string{"*.svc.example"}})
	other := ca.issue(t, leafOpts{cn: "o", dns: []string{"o"}})
	spki := func(l leaf) string {
		h := sha256.Sum256(l.cert.RawSubjectPublicKeyInfo)
		return base64.StdEncoding.EncodeToString(h[:])
	}
	hash := func(l leaf) string {
		h := sha256.Sum256(l.cert.Raw)
		s := strings.ToUpper(hex.EncodeToString(h[:]))
		var parts []string
		for i := 0; i < len(s); i += 2 {
			parts = append(parts, s[i:i+2])
		}
		return strings.Join(parts, ":")
	}
	srv := mustServer(t, serverCtx(cert), nil)
	tests := []struct {
		name string
		ctx  *tlsv3.UpstreamTlsContext
		host string
		want Reason
	}{
		{"spki match", &tlsv3.UpstreamTlsContext{CommonTlsContext: vcCtx(&tlsv3.CertificateValidationContext{VerifyCertificateSpki: []string{spki(other), spki(cert)}})}, "", ""},
		{"spki mismatch", &tlsv3.UpstreamTlsContext{CommonTlsContext: vcCtx(&tlsv3.CertificateValidationContext{VerifyCertificateSpki: []string{spki(other)}})}, "", FailVerifyCertHash},
		{"hash with colons", &tlsv3.UpstreamTlsContext{CommonTlsContext: vcCtx(&tlsv3.CertificateValidationContext{VerifyCertificateHash: []string{hash(cert)}})}, "", ""},
		{"hash mismatch, spki match", &tlsv3.UpstreamTlsContext{CommonTlsContext: vcCtx(&tlsv3.CertificateValidationContext{VerifyCertificateHash: []string{hash(other)}, VerifyCertificateSpki: []string{spki(cert)}})}, "", ""},
		{"auto sni san ok", &tlsv3.UpstreamTlsContext{AutoHostSni: true, AutoSniSanValidation: true, CommonTlsContext: vcCtx(&tlsv3.CertificateValidationContext{TrustedCa: inline(ca.pem)})}, "a.svc.example", ""},
		{"auto sni san mismatch", &tlsv3.UpstreamTlsContext{AutoHostSni: true, AutoSniSanValidation: true, CommonTlsContext: vcCtx(&tlsv3.CertificateValidationContext{TrustedCa: inline(ca.pem)})}, "evil.example", FailVerifySAN},
		{"no validation accepts anything", &tlsv3.UpstreamTlsContext{}, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cli := mustClient(t, tt.ctx)
			r := handshake(t, srv.Config(), cli.Config(tt.host))
			if tt.host != "" && r.server.ServerName != tt.host && tt.want == "" {
				t.Errorf("server saw SNI %q, want %q", r.server.ServerName, tt.host)
			}
			if tt.want == "" {
				if r.clientErr != nil {
					t.Fatalf("client: %v", r.clientErr)
				}
				return
			}
			var ve *VerifyError
			if !errors.As(r.clientErr, &ve) || ve.Reason != tt.want {
				t.Fatalf("client error %v, want %s", r.clientErr, tt.want)
			}
		})
	}
}

func vcCtx(vc *tlsv3.CertificateValidationContext) *tlsv3.CommonTlsContext {
	return &tlsv3.CommonTlsContext{ValidationContextType: &tlsv3.CommonTlsContext_ValidationContext{ValidationContext: vc}}
}
