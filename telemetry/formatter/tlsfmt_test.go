package formatter

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha1"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/outrider-proxy/outrider/proxy/streaminfo"
)

func selfSigned(t *testing.T) *x509.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(0xabc), Subject: pkix.Name{CommonName: "peer"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestTLSOperators(t *testing.T) {
	cert := selfSigned(t)
	sha := sha1.Sum(cert.Raw)
	tlsInfo := &streaminfo.TLSInfo{
		Version: "TLSv1.3", Cipher: "TLS_AES_128_GCM_SHA256", PeerPresented: true,
		PeerURISANs: []string{"spiffe://td/ns/a/sa/b", "spiffe://td/x"}, PeerDNSSANs: []string{"a.test"},
		PeerSubject: "CN=peer,O=Org", PeerIssuer: "CN=ca", PeerSerial: "0abc", PeerFingerprintSHA256: "deadbeef",
		PeerValidFrom: time.Date(2024, 1, 2, 3, 4, 5, 6e6, time.UTC), PeerExpires: time.Date(2025, 6, 7, 8, 9, 10, 0, time.UTC),
		PeerCertificates: []*x509.Certificate{cert},
		LocalURISANs:     []string{"spiffe://td/server"}, LocalDNSSANs: []string{"srv.test"}, LocalSubject: "CN=server",
	}
	withTLS := &Context{Stream: &streaminfo.Stream{Conn: &streaminfo.Conn{TLS: tlsInfo}}}
	plain := &Context{Stream: &streaminfo.Stream{Conn: &streaminfo.Conn{}}}
	tests := []struct {
		format, want string
	}{
		{"%DOWNSTREAM_PEER_URI_SAN%", "spiffe://td/ns/a/sa/b,spiffe://td/x"},
		{"%DOWNSTREAM_PEER_DNS_SAN%", "a.test"},
		{"%DOWNSTREAM_LOCAL_URI_SAN%", "spiffe://td/server"},
		{"%DOWNSTREAM_LOCAL_DNS_SAN%", "srv.test"},
		{"%DOWNSTREAM_LOCAL_SUBJECT%", "CN=server"},
		{"%DOWNSTREAM_PEER_SUBJECT%", "CN=peer,O=Org"},
		{"%DOWNSTREAM_PEER_ISSUER%", "CN=ca"},
		{"%DOWNSTREAM_PEER_SERIAL%", "0abc"},
		{"%DOWNSTREAM_PEER_FINGERPRINT_256%", "deadbeef"},
		{"%DOWNSTREAM_PEER_FINGERPRINT_1%", hex.EncodeToString(sha[:])},
		{"%DOWNSTREAM_TLS_VERSION% %DOWNSTREAM_TLS_CIPHER%", "TLSv1.3 TLS_AES_128_GCM_SHA256"},
		{"%DOWNSTREAM_TLS_SESSION_ID%", "-"},
		{"%DOWNSTREAM_PEER_CERT_V_START%", "2024-01-02T03:04:05.006Z"},
		{"%DOWNSTREAM_PEER_CERT_V_END(%Y/%m/%d)%", "2025/06/07"},
	}
	for _, tt := range tests {
		f, err := Compile(tt.format)
		if err != nil {
			t.Fatalf("%s: %v", tt.format, err)
		}
		if got := f.Format(withTLS); got != tt.want {
			t.Errorf("%s = %q, want %q", tt.format, got, tt.want)
		}
		if got := f.Format(plain); strings.Trim(got, "- ") != "" {
			t.Errorf("%s on plaintext = %q, want -", tt.format, got)
		}
		h, _ := CompileHeader(tt.format)
		if got := h.Format(plain); strings.TrimSpace(got) != "" {
			t.Errorf("%s header form on plaintext = %q, want empty", tt.format, got)
		}
	}

	f := MustCompile("%DOWNSTREAM_PEER_CERT%")
	got := f.Format(withTLS)
	if !strings.HasPrefix(got, "-----BEGIN%20CERTIFICATE-----%0A") || !strings.HasSuffix(got, "-----END%20CERTIFICATE-----%0A") ||
		strings.ContainsAny(got, "\n +/=") {
		t.Errorf("DOWNSTREAM_PEER_CERT not URL-encoded PEM: %q", got)
	}
}

func TestTLSOperatorErrors(t *testing.T) {
	for _, f := range []string{"%DOWNSTREAM_PEER_URI_SAN(x)%", "%DOWNSTREAM_TLS_VERSION:3%", "%DOWNSTREAM_PEER_CERT_V_END:4%"} {
		if _, err := Compile(f); err == nil {
			t.Errorf("%s compiled", f)
		}
	}
}
