package hcm

import (
	"crypto/x509"
	"strings"
	"testing"

	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/outrider-proxy/outrider/proxy/headers"
	"github.com/outrider-proxy/outrider/proxy/streaminfo"
)

func TestXFCC(t *testing.T) {
	mtls := &streaminfo.TLSInfo{
		PeerPresented: true, PeerURISANs: []string{"spiffe://td/client", "spiffe://td/other"},
		PeerDNSSANs: []string{"a.test", "b.test"}, PeerSubject: "CN=client,O=Org", PeerFingerprintSHA256: "ab12",
		LocalURISANs:     []string{"spiffe://td/server"},
		PeerCertificates: []*x509.Certificate{{Raw: []byte{1, 2, 3}}},
	}
	noCert := &streaminfo.TLSInfo{LocalURISANs: []string{"spiffe://td/server"}}
	all := &hcmv3.HttpConnectionManager_SetCurrentClientCertDetails{Subject: wrapperspb.Bool(true), Uri: true, Dns: true}
	const in = "By=spiffe://td/front;Hash=ff"
	tests := []struct {
		name    string
		mode    hcmv3.HttpConnectionManager_ForwardClientCertDetails
		details *hcmv3.HttpConnectionManager_SetCurrentClientCertDetails
		tls     *streaminfo.TLSInfo
		want    string // "" = header absent
	}{
		{"sanitize", hcmv3.HttpConnectionManager_SANITIZE, all, mtls, ""},
		{"forward only", hcmv3.HttpConnectionManager_FORWARD_ONLY, nil, mtls, in},
		{"forward only plaintext", hcmv3.HttpConnectionManager_FORWARD_ONLY, nil, nil, ""},
		{"forward only no client cert", hcmv3.HttpConnectionManager_FORWARD_ONLY, nil, noCert, ""},
		{"always forward plaintext", hcmv3.HttpConnectionManager_ALWAYS_FORWARD_ONLY, all, nil, in},
		{"append", hcmv3.HttpConnectionManager_APPEND_FORWARD, nil, mtls, in + ",By=spiffe://td/server;Hash=ab12"},
		{"append details", hcmv3.HttpConnectionManager_APPEND_FORWARD, all, mtls,
			in + `,By=spiffe://td/server;Hash=ab12;Subject="CN=client,O=Org";URI=spiffe://td/client;DNS=a.test;DNS=b.test`},
		{"sanitize set", hcmv3.HttpConnectionManager_SANITIZE_SET, &hcmv3.HttpConnectionManager_SetCurrentClientCertDetails{Uri: true},
			mtls, "By=spiffe://td/server;Hash=ab12;URI=spiffe://td/client"},
		{"sanitize set no client cert", hcmv3.HttpConnectionManager_SANITIZE_SET, all, noCert, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := &Config{}
			if err := cfg.compileXFCC(&hcmv3.HttpConnectionManager{ForwardClientCertDetails: tt.mode, SetCurrentClientCertDetails: tt.details}); err != nil {
				t.Fatal(err)
			}
			s := &stream{cfg: cfg}
			s.info.Conn = &streaminfo.Conn{TLS: tt.tls}
			h := &headers.Map{}
			h.Add(xfccHeader, in)
			s.mutateXFCC(h)
			got, ok := h.Get(xfccHeader)
			if (tt.want == "") == ok || string(got) != tt.want {
				t.Errorf("x-forwarded-client-cert = %q (present %v), want %q", got, ok, tt.want)
			}
		})
	}
}

func TestXFCCCertAndChain(t *testing.T) {
	tlsInfo := &streaminfo.TLSInfo{PeerPresented: true, PeerFingerprintSHA256: "ab",
		PeerCertificates: []*x509.Certificate{{Raw: []byte("leaf")}, {Raw: []byte("ca")}}}
	got := string(appendXFCCElement(nil, tlsInfo, xfccCert|xfccChain|xfccURI))
	cert := string(streaminfo.AppendURLEncodedPEM(nil, tlsInfo.PeerCertificates[:1]))
	chain := string(streaminfo.AppendURLEncodedPEM(nil, tlsInfo.PeerCertificates))
	want := `Hash=ab;Cert="` + cert + `";Chain="` + chain + `";URI=`
	if got != want {
		t.Fatalf("element = %q, want %q", got, want)
	}
	if strings.Count(chain, "BEGIN%20CERTIFICATE") != 2 || strings.Contains(cert, "\n") {
		t.Fatalf("bad PEM encoding %q", chain)
	}
}
