package server

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"math/big"
	"net/url"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"

	tlsctx "github.com/outrider-proxy/outrider/tls"
)

// testSVID is a self-issued SVID for id with its CA as the bundle of id's
// trust domain.
func testSVID(t *testing.T, id string) (*x509svid.SVID, *x509bundle.Bundle) {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	sid := spiffeid.RequireFromString(id)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
		URIs: []*url.URL{sid.TrustDomain().ID().URL()}}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, URIs: []*url.URL{sid.URL()}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(der)
	return &x509svid.SVID{ID: sid, Certificates: []*x509.Certificate{leaf}, PrivateKey: key},
		x509bundle.FromX509Authorities(sid.TrustDomain(), []*x509.Certificate{ca})
}

// The Workload API's X.509 context becomes SPIRE's SDS names, each of which
// compiles as a secret.
func TestX509ContextSecretNames(t *testing.T) {
	svidA, bundleA := testSVID(t, "spiffe://a.test/web")
	svidA2, _ := testSVID(t, "spiffe://a.test/admin")
	_, bundleB := testSVID(t, "spiffe://b.test/x")
	tests := []struct {
		name  string
		xc    *workloadapi.X509Context
		want  string // name:kind, sorted
		error string
	}{
		{"one SVID, own bundle",
			&workloadapi.X509Context{SVIDs: []*x509svid.SVID{svidA}, Bundles: x509bundle.NewSet(bundleA)},
			"ALL:vc ROOTCA:vc default:cert spiffe://a.test/web:cert spiffe://a.test:vc", ""},
		{"two SVIDs and a federated bundle",
			&workloadapi.X509Context{SVIDs: []*x509svid.SVID{svidA, svidA2}, Bundles: x509bundle.NewSet(bundleA, bundleB)},
			"ALL:vc ROOTCA:vc default:cert spiffe://a.test/admin:cert spiffe://a.test/web:cert spiffe://a.test:vc spiffe://b.test:vc", ""},
		{"no SVID", &workloadapi.X509Context{Bundles: x509bundle.NewSet(bundleA)}, "", "without SVIDs"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			secs, err := x509ContextSecrets(tc.xc)
			if tc.error != "" {
				if err == nil || !strings.Contains(err.Error(), tc.error) {
					t.Fatalf("error %v, want %q", err, tc.error)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, s := range secs {
				kind := "vc"
				if s.GetTlsCertificate() != nil {
					kind = "cert"
				}
				got = append(got, s.GetName()+":"+kind)
			}
			sort.Strings(got)
			if g := strings.Join(got, " "); g != tc.want {
				t.Errorf("secrets %q, want %q", g, tc.want)
			}
			for _, s := range secs {
				if err := tlsctx.CheckSecret(s); err != nil {
					t.Errorf("secret %s does not compile: %v", s.GetName(), err)
				}
			}
			var w workloadSource
			if err := w.secrets.Update(secs...); err != nil {
				t.Fatalf("secrets do not compile: %v", err)
			}
			c, err := w.secrets.TLSCertificate(SPIFFEDefaultSVIDName)
			if err != nil {
				t.Fatal(err)
			}
			leaf, _ := x509.ParseCertificate(c.Certificate[0])
			if leaf.URIs[0].String() != "spiffe://a.test/web" {
				t.Errorf("default SVID is %s, want the first one", leaf.URIs[0])
			}
		})
	}
}
