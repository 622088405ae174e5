package bench

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/outrider-proxy/outrider/proxy/server/servertest"
)

// tlsConfig is a TLS listener (tcp_proxy to a sink, so that only the
// handshake is measured) with the certificate files given.
const tlsConfig = `
static_resources:
  listeners:
  - name: tls
    address: {socket_address: {address: 127.0.0.1, port_value: 0}}
    filter_chains:
    - transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          common_tls_context:
            tls_certificates: [{certificate_chain: {filename: %s}, private_key: {filename: %s}}]
      filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: tls
          cluster: sink
  clusters:
  - name: sink
    load_assignment:
      cluster_name: sink
      endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: %d}}}}]}]
`

// rsaLeaf writes a self-signed RSA 2048 certificate for "bench.test".
func rsaLeaf(b *testing.B, dir string) (certFile, keyFile string) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		b.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "bench.test"},
		DNSNames: []string{"bench.test"}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		b.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "rsa.crt"), filepath.Join(dir, "rsa.key")
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}), 0o600)
	return certFile, keyFile
}

// BenchmarkTLSHandshake measures TLS handshakes against an outrider TLS
// listener, one per op on a new connection: full handshakes and resumed
// ones (session tickets, the client keeping a session cache), with an ECDSA
// P-256 and an RSA 2048 certificate. The client's side of the handshake is
// in the time too: compare ratios, or nginx's numbers from bench-compare.
func BenchmarkTLSHandshake(b *testing.B) {
	for _, kind := range []string{"ecdsa-p256", "rsa-2048"} {
		dir := b.TempDir()
		var certFile, keyFile string
		if kind == "rsa-2048" {
			certFile, keyFile = rsaLeaf(b, dir)
		} else {
			certFile, keyFile = servertest.NewCA(b, "bench-ca").Issue(b, []string{"bench.test"}).WriteFiles(b, dir, "ecdsa")
		}
		p := servertest.Start(b, fmt.Sprintf(tlsConfig, certFile, keyFile, sinkUpstream(b)))
		for _, mode := range []string{"full", "resumed"} {
			b.Run(kind+"/"+mode, func(b *testing.B) {
				cfg := &tls.Config{InsecureSkipVerify: true, ServerName: "bench.test", MinVersion: tls.VersionTLS13}
				if mode == "resumed" {
					cfg.ClientSessionCache = tls.NewLRUClientSessionCache(1)
				}
				handshake := func(check bool) {
					c, err := tls.Dial("tcp", p.Addr("tls"), cfg)
					if err != nil {
						b.Fatal(err)
					}
					if check && c.ConnectionState().DidResume != (mode == "resumed") {
						b.Fatalf("%s handshake: resumed = %v", mode, c.ConnectionState().DidResume)
					}
					if mode == "resumed" {
						// TLS 1.3 tickets arrive after the handshake: read
						// until the ticket is processed (the sink never
						// writes, so this returns at the deadline).
						c.SetReadDeadline(time.Now().Add(time.Millisecond))
						c.Read(make([]byte, 1))
					}
					c.Close()
				}
				handshake(false) // a first full handshake fills the session cache
				b.ReportAllocs()
				b.ResetTimer()
				for range b.N {
					handshake(true)
				}
			})
		}
	}
}
