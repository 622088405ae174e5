package server

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	_ "github.com/outrider-proxy/outrider/filters/all"
	"github.com/outrider-proxy/outrider/xds/bootstrap"
)

// waitFor polls cond (running the garbage collector between tries, so
// dropped TLS contexts are collected) for at most 15 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if cond() {
			return
		}
		runtime.GC()
	}
	t.Fatalf("%s: not within 15 s", what)
}

// TLS contexts of clusters removed by CDS are released: their SDS names
// leave the subscription (and the delivered secrets are forgotten), the
// contexts stop following secret updates and leave /certs once collected,
// and repeated add/remove cycles leave no goroutine behind.
func TestTLSContextsReleasedWithTheirClusters(t *testing.T) {
	dir := t.TempDir()
	const n = 3
	var secrets, clusters strings.Builder
	for i := range n {
		fmt.Fprintf(&secrets, `- "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret
  name: ca-%d
  validation_context: {trusted_ca: {filename: %s}}
`, i, filepath.Join(dir, "ca.pem"))
		fmt.Fprintf(&clusters, `- "@type": type.googleapis.com/envoy.config.cluster.v3.Cluster
  name: tls-%[1]d
  connect_timeout: 1s
  load_assignment: {cluster_name: tls-%[1]d, endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: 1}}}}]}]}
  transport_socket:
    name: envoy.transport_sockets.tls
    typed_config:
      "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
      common_tls_context:
        validation_context_sds_secret_config:
          name: ca-%[1]d
          sds_config: {path_config_source: {path: %[2]s, watched_directory: {path: %[3]s}}, resource_api_version: V3}
`, i, filepath.Join(dir, "sds.yaml"), dir)
	}
	write := func(name, content string) {
		t.Helper()
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p+".new", []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(p+".new", p); err != nil {
			t.Fatal(err)
		}
	}
	write("ca.pem", testCAPEM(t))
	write("sds.yaml", "resources:\n"+secrets.String())
	version := 0
	setClusters := func(on bool) {
		version++
		body := "resources: []\n"
		if on {
			body = "resources:\n" + clusters.String()
		}
		write("cds.yaml", fmt.Sprintf("version_info: v%d\n%s", version, body))
	}
	setClusters(true)
	b, err := bootstrap.LoadBytes("test.yaml", []byte(fmt.Sprintf(`
node: {id: release, cluster: test}
dynamic_resources:
  cds_config: {path_config_source: {path: %s, watched_directory: {path: %s}}, resource_api_version: V3}
`, filepath.Join(dir, "cds.yaml"), dir)))
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(Options{Bootstrap: b, DrainTime: time.Second, DrainImmediate: true, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Shutdown)

	arrived := func() bool {
		s.secrets.mu.Lock()
		defer s.secrets.mu.Unlock()
		for i := range n {
			if e := s.secrets.sds[fmt.Sprintf("ca-%d", i)]; e == nil || !e.arrived {
				return false
			}
		}
		return true
	}
	released := func() bool {
		s.secrets.mu.Lock()
		left := len(s.secrets.sds)
		s.secrets.mu.Unlock()
		_, err := s.secrets.dyn.ValidationContext("ca-0")
		return left == 0 && err != nil && s.secrets.subscribers() == 0 && len(s.secrets.contexts()) == 0
	}
	waitFor(t, "clusters and their secrets", func() bool { return s.clusters.Get("tls-0") != nil && arrived() })
	if got := len(s.secrets.contexts()); got != n {
		t.Fatalf("tracked contexts = %d, want %d", got, n)
	}
	if got := s.secrets.subscribers(); got != n {
		t.Fatalf("secret subscribers = %d, want %d", got, n)
	}
	setClusters(false)
	waitFor(t, "removed clusters released", func() bool { return s.clusters.Get("tls-0") == nil && released() })
	base := runtime.NumGoroutine()
	for cycle := range 5 {
		setClusters(true)
		waitFor(t, fmt.Sprintf("cycle %d: clusters back", cycle), func() bool { return s.clusters.Get("tls-0") != nil && arrived() })
		setClusters(false)
		waitFor(t, fmt.Sprintf("cycle %d: released", cycle), func() bool { return s.clusters.Get("tls-0") == nil && released() })
	}
	waitFor(t, "goroutines back to the baseline", func() bool { return runtime.NumGoroutine() <= base })
}

// testCAPEM makes a self-signed CA certificate in PEM.
func testCAPEM(t *testing.T) string {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "release-ca"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
}
