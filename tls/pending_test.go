package tlsctx

import (
	"crypto/tls"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
)

// pendingProvider reports its names as pending until set, and notifies.
type pendingProvider struct {
	Secrets
	pending bool
}

func (p *pendingProvider) TLSCertificate(name string) (*tls.Certificate, error) {
	c, err := p.Secrets.TLSCertificate(name)
	if err != nil && p.pending {
		return nil, fmt.Errorf("%q: %w", name, ErrSecretPending)
	}
	return c, err
}

// A context compiled while its secret is pending is not ready and refuses
// handshakes; it becomes ready when the provider delivers the secret. A
// missing static secret is still a compile error.
func TestPendingSecret(t *testing.T) {
	ca := newCA(t, "ca")
	l := ca.issue(t, leafOpts{cn: "srv", dns: []string{"srv.test"}})
	ctx := &tlsv3.DownstreamTlsContext{CommonTlsContext: &tlsv3.CommonTlsContext{
		TlsCertificateSdsSecretConfigs: []*tlsv3.SdsSecretConfig{{Name: "cert"}}}}

	if _, err := CompileDownstream(ctx, &Secrets{}); !errors.Is(err, ErrSecretNotFound) {
		t.Fatalf("static missing secret: %v, want ErrSecretNotFound", err)
	}

	p := &pendingProvider{pending: true}
	srv, err := CompileDownstream(ctx, p)
	if err != nil {
		t.Fatalf("pending secret: %v", err)
	}
	if srv.Ready() {
		t.Fatal("ready before the secret arrived")
	}
	if d := srv.CertificateDetails(time.Now()); len(d.GetCertChain()) != 0 {
		t.Errorf("certificate details before the secret arrived: %v", d)
	}
	r := handshake(t, srv.Config(), &tls.Config{InsecureSkipVerify: true, ServerName: "srv.test"})
	if r.serverErr == nil || !strings.Contains(r.serverErr.Error(), "not arrived") {
		t.Fatalf("handshake before the secret: server error %v", r.serverErr)
	}

	reloads := 0
	srv.OnReload(func() { reloads++ })
	if err := p.Update(&tlsv3.Secret{Name: "cert", Type: &tlsv3.Secret_TlsCertificate{TlsCertificate: &tlsv3.TlsCertificate{
		CertificateChain: inline(l.certPEM), PrivateKey: inline(l.keyPEM)}}}); err != nil {
		t.Fatal(err)
	}
	if !srv.Ready() || reloads != 1 {
		t.Fatalf("after the secret: ready %v, reloads %d", srv.Ready(), reloads)
	}
	r = handshake(t, srv.Config(), &tls.Config{InsecureSkipVerify: true, ServerName: "srv.test"})
	if r.serverErr != nil || r.client.PeerCertificates[0].SerialNumber.Cmp(l.cert.SerialNumber) != 0 {
		t.Fatalf("handshake after the secret: %v", r.serverErr)
	}
	d := srv.CertificateDetails(time.Now())
	if len(d.GetCertChain()) != 1 || d.GetCertChain()[0].GetSubjectAltNames()[0].GetDns() != "srv.test" {
		t.Errorf("certificate details: %v", d)
	}
}

func TestCheckSecret(t *testing.T) {
	ca := newCA(t, "ca")
	a, b := ca.issue(t, leafOpts{cn: "a"}), ca.issue(t, leafOpts{cn: "b"})
	tests := []struct {
		name string
		sec  *tlsv3.Secret
		want string // "" when valid
	}{
		{"good certificate", &tlsv3.Secret{Name: "s", Type: &tlsv3.Secret_TlsCertificate{TlsCertificate: &tlsv3.TlsCertificate{
			CertificateChain: inline(a.certPEM), PrivateKey: inline(a.keyPEM)}}}, ""},
		{"mismatched key", &tlsv3.Secret{Name: "s", Type: &tlsv3.Secret_TlsCertificate{TlsCertificate: &tlsv3.TlsCertificate{
			CertificateChain: inline(a.certPEM), PrivateKey: inline(b.keyPEM)}}}, `secret "s".tls_certificate`},
		{"CA bundle without certificates", &tlsv3.Secret{Name: "v", Type: &tlsv3.Secret_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
			TrustedCa: inline([]byte("nothing"))}}}, `secret "v".validation_context.trusted_ca`},
		{"good validation context", &tlsv3.Secret{Name: "v", Type: &tlsv3.Secret_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
			TrustedCa: inline(ca.pem)}}}, ""},
		{"no name", &tlsv3.Secret{}, "name: required"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := CheckSecret(tt.sec)
			if tt.want == "" && err != nil || tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)) {
				t.Fatalf("CheckSecret: %v, want %q", err, tt.want)
			}
		})
	}
}

// racingProvider delivers its secret while the context's first compile is
// reading it: that read still finds it pending.
type racingProvider struct {
	pendingProvider
	deliver func()
}

func (p *racingProvider) TLSCertificate(name string) (*tls.Certificate, error) {
	if d := p.deliver; d != nil {
		p.deliver = nil
		d()
		return nil, fmt.Errorf("%q: %w", name, ErrSecretPending)
	}
	return p.pendingProvider.TLSCertificate(name)
}

// A secret delivered while the context compiles is not missed: the context
// follows the provider before it first reads it.
func TestSecretDeliveredDuringCompile(t *testing.T) {
	ca := newCA(t, "ca")
	l := ca.issue(t, leafOpts{cn: "srv", dns: []string{"srv.test"}})
	ctx := &tlsv3.DownstreamTlsContext{CommonTlsContext: &tlsv3.CommonTlsContext{
		TlsCertificateSdsSecretConfigs: []*tlsv3.SdsSecretConfig{{Name: "cert"}}}}
	p := &racingProvider{pendingProvider: pendingProvider{pending: true}}
	p.deliver = func() {
		if err := p.Update(&tlsv3.Secret{Name: "cert", Type: &tlsv3.Secret_TlsCertificate{TlsCertificate: &tlsv3.TlsCertificate{
			CertificateChain: inline(l.certPEM), PrivateKey: inline(l.keyPEM)}}}); err != nil {
			t.Error(err)
		}
	}
	srv, err := CompileDownstream(ctx, p)
	if err != nil {
		t.Fatal(err)
	}
	if !srv.Ready() {
		t.Fatal("the secret delivered during the first compile was missed")
	}
}
