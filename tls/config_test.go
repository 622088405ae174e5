package tlsctx

import (
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"math/big"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

func TestConfigErrors(t *testing.T) {
	ca := newCA(t, "ca")
	l := ca.issue(t, leafOpts{cn: "s", dns: []string{"s"}})
	l2 := ca.issue(t, leafOpts{cn: "s2", dns: []string{"s2"}})
	file := func(p string) *corev3.DataSource {
		return &corev3.DataSource{Specifier: &corev3.DataSource_Filename{Filename: p}}
	}
	tests := []struct {
		name string
		ctx  *tlsv3.DownstreamTlsContext
		want string
	}{
		{"missing file", &tlsv3.DownstreamTlsContext{CommonTlsContext: &tlsv3.CommonTlsContext{TlsCertificates: []*tlsv3.TlsCertificate{{CertificateChain: file("/nonexistent/x.pem"), PrivateKey: inline(l.keyPEM)}}}},
			"common_tls_context.tls_certificates[0].certificate_chain: open /nonexistent/x.pem: no such file"},
		{"mismatched key", &tlsv3.DownstreamTlsContext{CommonTlsContext: &tlsv3.CommonTlsContext{TlsCertificates: []*tlsv3.TlsCertificate{{CertificateChain: inline(l.certPEM), PrivateKey: inline(l2.keyPEM)}}}},
			"common_tls_context.tls_certificates[0]: tls: private key does not match public key"},
		{"no certificate", &tlsv3.DownstreamTlsContext{CommonTlsContext: &tlsv3.CommonTlsContext{}}, "no TLS certificate configured"},
		{"private key provider", &tlsv3.DownstreamTlsContext{CommonTlsContext: &tlsv3.CommonTlsContext{TlsCertificates: []*tlsv3.TlsCertificate{{CertificateChain: inline(l.certPEM), PrivateKeyProvider: &tlsv3.PrivateKeyProvider{ProviderName: "x"}}}}},
			"common_tls_context.tls_certificates[0].private_key_provider: field not supported"},
		{"unknown cipher", withParams(serverCtx(l), &tlsv3.TlsParameters{CipherSuites: []string{"ECDHE-ECDSA-AES128-GCM-SHA256", "RC4-MD5"}}),
			`common_tls_context.tls_params.cipher_suites[1]: unknown or unsupported cipher suite "RC4-MD5"`},
		{"unknown curve", withParams(serverCtx(l), &tlsv3.TlsParameters{EcdhCurves: []string{"P-999"}}), "ecdh_curves[0]"},
		{"min above max", withParams(serverCtx(l), &tlsv3.TlsParameters{TlsMinimumProtocolVersion: tlsv3.TlsParameters_TLSv1_3, TlsMaximumProtocolVersion: tlsv3.TlsParameters_TLSv1_2}), "above"},
		{"ca without certificates", withValidation(serverCtx(l), &tlsv3.CertificateValidationContext{TrustedCa: inline([]byte("not pem"))}),
			"common_tls_context.validation_context.trusted_ca: no certificates found"},
		{"san without ca", withValidation(serverCtx(l), &tlsv3.CertificateValidationContext{MatchTypedSubjectAltNames: []*tlsv3.SubjectAltNameMatcher{exactURI("spiffe://td/x")}}),
			"without trusted CA is insecure"},
		{"bad regex", withValidation(serverCtx(l), &tlsv3.CertificateValidationContext{TrustedCa: inline(ca.pem), MatchTypedSubjectAltNames: []*tlsv3.SubjectAltNameMatcher{{SanType: tlsv3.SubjectAltNameMatcher_DNS,
			Matcher: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: "("}}}}}}),
			"match_typed_subject_alt_names[0].matcher.safe_regex.regex"},
		{"bad spki", withValidation(serverCtx(l), &tlsv3.CertificateValidationContext{VerifyCertificateSpki: []string{"abc"}}), "verify_certificate_spki[0]"},
		{"ocsp strict", func() *tlsv3.DownstreamTlsContext {
			c := serverCtx(l)
			c.OcspStaplePolicy = tlsv3.DownstreamTlsContext_STRICT_STAPLING
			return c
		}(), "ocsp_staple_policy: STRICT_STAPLING not supported"},
		{"short ticket key", func() *tlsv3.DownstreamTlsContext {
			c := serverCtx(l)
			c.SessionTicketKeysType = &tlsv3.DownstreamTlsContext_SessionTicketKeys{SessionTicketKeys: &tlsv3.TlsSessionTicketKeys{Keys: []*corev3.DataSource{inline([]byte("short"))}}}
			return c
		}(), "session_ticket_keys.keys[0]: key has length 5, must be 80 bytes"},
		{"missing sds secret", &tlsv3.DownstreamTlsContext{CommonTlsContext: &tlsv3.CommonTlsContext{TlsCertificateSdsSecretConfigs: []*tlsv3.SdsSecretConfig{{Name: "absent"}}}},
			`common_tls_context.tls_certificate_sds_secret_configs[0]: tls_certificate secret "absent": secret not found`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := CompileDownstream(tt.ctx, &Secrets{})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want it to contain %q", err, tt.want)
			}
		})
	}
	if _, err := CompileUpstream(&tlsv3.UpstreamTlsContext{CommonTlsContext: &tlsv3.CommonTlsContext{TlsCertificates: []*tlsv3.TlsCertificate{certProto(l), certProto(l2)}}}, nil); err == nil {
		t.Error("two client certificates accepted")
	}
}

func withParams(c *tlsv3.DownstreamTlsContext, p *tlsv3.TlsParameters) *tlsv3.DownstreamTlsContext {
	c.CommonTlsContext.TlsParams = p
	return c
}

func TestSecretRotation(t *testing.T) {
	ca := newCA(t, "ca")
	v1 := ca.issue(t, leafOpts{cn: "v1", dns: []string{"s"}})
	v2 := ca.issue(t, leafOpts{cn: "v2", dns: []string{"s"}})
	otherCA := newCA(t, "other")
	secrets, err := NewSecrets([]*tlsv3.Secret{
		{Name: "cert", Type: &tlsv3.Secret_TlsCertificate{TlsCertificate: certProto(v1)}},
		{Name: "ca", Type: &tlsv3.Secret_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{TrustedCa: inline(ca.pem)}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	srv := mustServer(t, &tlsv3.DownstreamTlsContext{CommonTlsContext: &tlsv3.CommonTlsContext{
		TlsCertificateSdsSecretConfigs: []*tlsv3.SdsSecretConfig{{Name: "cert"}}}}, secrets)
	defer srv.Close()
	// No session cache: a resumed session would keep the old server certificate.
	cli, err := CompileUpstream(&tlsv3.UpstreamTlsContext{Sni: "s", MaxSessionKeys: wrapperspb.UInt32(0), CommonTlsContext: &tlsv3.CommonTlsContext{
		ValidationContextType: &tlsv3.CommonTlsContext_CombinedValidationContext{CombinedValidationContext: &tlsv3.CommonTlsContext_CombinedCertificateValidationContext{
			DefaultValidationContext:         &tlsv3.CertificateValidationContext{MatchTypedSubjectAltNames: []*tlsv3.SubjectAltNameMatcher{{SanType: tlsv3.SubjectAltNameMatcher_DNS, Matcher: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: "s"}}}}},
			ValidationContextSdsSecretConfig: &tlsv3.SdsSecretConfig{Name: "ca"},
		}}}}, secrets)
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	cn := func() (string, error) {
		r := handshake(t, srv.Config(), cli.Config(""))
		if r.clientErr != nil {
			return "", r.clientErr
		}
		return r.client.PeerCertificates[0].Subject.CommonName, nil
	}
	if got, err := cn(); err != nil || got != "v1" {
		t.Fatalf("before rotation: %q %v", got, err)
	}
	if err := secrets.Update(&tlsv3.Secret{Name: "cert", Type: &tlsv3.Secret_TlsCertificate{TlsCertificate: certProto(v2)}}); err != nil {
		t.Fatal(err)
	}
	if got, err := cn(); err != nil || got != "v2" {
		t.Fatalf("after rotation: %q %v", got, err)
	}
	// A bad update is refused and changes nothing.
	if err := secrets.Update(&tlsv3.Secret{Name: "cert", Type: &tlsv3.Secret_TlsCertificate{TlsCertificate: &tlsv3.TlsCertificate{CertificateChain: inline(v1.certPEM), PrivateKey: inline(v2.keyPEM)}}}); err == nil {
		t.Fatal("mismatched key accepted")
	}
	// Rotating the trust bundle to another CA makes the client reject the server.
	if err := secrets.Update(&tlsv3.Secret{Name: "ca", Type: &tlsv3.Secret_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{TrustedCa: inline(otherCA.pem)}}}); err != nil {
		t.Fatal(err)
	}
	var ve *VerifyError
	if _, err := cn(); !errors.As(err, &ve) || ve.Reason != FailVerifyError {
		t.Fatalf("after CA rotation: %v", err)
	}
}

func TestSessionResumption(t *testing.T) {
	ca := newCA(t, "ca")
	l := ca.issue(t, leafOpts{cn: "s", dns: []string{"s"}})
	key := make([]byte, 80)
	rand.Read(key)
	for _, tt := range []struct {
		name       string
		disable    bool
		maxKeys    *wrapperspb.UInt32Value
		sameKeys   bool
		wantSecond bool
	}{
		{"tickets", false, nil, false, true},
		{"shared ticket keys across servers", false, nil, true, true},
		{"stateless disabled", true, nil, false, false},
		{"client max_session_keys 0", false, wrapperspb.UInt32(0), false, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			mk := func() *Server {
				ctx := serverCtx(l)
				if tt.disable {
					ctx.SessionTicketKeysType = &tlsv3.DownstreamTlsContext_DisableStatelessSessionResumption{DisableStatelessSessionResumption: true}
				}
				if tt.sameKeys {
					ctx.SessionTicketKeysType = &tlsv3.DownstreamTlsContext_SessionTicketKeys{SessionTicketKeys: &tlsv3.TlsSessionTicketKeys{Keys: []*corev3.DataSource{inline(key)}}}
				}
				return mustServer(t, ctx, nil)
			}
			s1, s2 := mk(), mk()
			if !tt.sameKeys {
				s2 = s1
			}
			cli := mustClient(t, &tlsv3.UpstreamTlsContext{Sni: "s", MaxSessionKeys: tt.maxKeys})
			r := handshake(t, s1.Config(), cli.Config(""))
			if r.clientErr != nil || r.client.DidResume {
				t.Fatalf("first: %v resumed=%v", r.clientErr, r.client.DidResume)
			}
			r = handshake(t, s2.Config(), cli.Config(""))
			if r.clientErr != nil || r.client.DidResume != tt.wantSecond {
				t.Fatalf("second: %v resumed=%v, want %v", r.clientErr, r.client.DidResume, tt.wantSecond)
			}
		})
	}
}

func TestCRL(t *testing.T) {
	ca := newCA(t, "ca")
	srvCert := ca.issue(t, leafOpts{cn: "s", dns: []string{"s"}})
	good := ca.issue(t, leafOpts{cn: "good"})
	revoked := ca.issue(t, leafOpts{cn: "revoked"})
	der, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{
		Number: big.NewInt(1), ThisUpdate: time.Now().Add(-time.Minute), NextUpdate: time.Now().Add(time.Hour),
		RevokedCertificateEntries: []x509.RevocationListEntry{{SerialNumber: revoked.cert.SerialNumber, RevocationTime: time.Now()}},
	}, ca.cert, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	crl := pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: der})
	ctx := withValidation(serverCtx(srvCert), &tlsv3.CertificateValidationContext{TrustedCa: inline(ca.pem), Crl: inline(crl)})
	srv := mustServer(t, ctx, nil)
	for _, tt := range []struct {
		client leaf
		ok     bool
	}{{good, true}, {revoked, false}} {
		cert, _ := tls.X509KeyPair(tt.client.certPEM, tt.client.keyPEM)
		r := handshake(t, srv.Config(), &tls.Config{InsecureSkipVerify: true, Certificates: []tls.Certificate{cert}})
		if (r.serverErr == nil) != tt.ok {
			t.Errorf("%s: server error %v", tt.client.cert.Subject.CommonName, r.serverErr)
		}
	}
}

func TestPeerInfo(t *testing.T) {
	ca := newCA(t, "ca")
	l := ca.issue(t, leafOpts{cn: "peer", dns: []string{"p.example"}, uris: []string{"spiffe://td/ns/x/sa/y"}})
	srv := mustServer(t, serverCtx(l), nil)
	r := handshake(t, srv.Config(), &tls.Config{InsecureSkipVerify: true, ServerName: "p.example", NextProtos: []string{"h2"}})
	if r.clientErr != nil {
		t.Fatal(r.clientErr)
	}
	p := PeerInfoFromState(r.client)
	if !p.Presented || p.URISANs[0] != "spiffe://td/ns/x/sa/y" || p.DNSSANs[0] != "p.example" ||
		p.Subject != "CN=peer,O=outrider" || p.Issuer != "CN=ca" || p.Version != "TLSv1.3" ||
		p.Cipher != "TLS_AES_128_GCM_SHA256" || len(p.FingerprintSHA256) != 64 || p.ServerName != "p.example" ||
		len(p.Serial)%2 != 0 || p.Serial == "" {
		t.Errorf("%+v", p)
	}
	if q := PeerInfoFromState(r.server); q.Presented {
		t.Error("client presented no certificate")
	}
}
