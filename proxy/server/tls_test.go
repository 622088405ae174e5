package server_test

import (
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/outrider-proxy/outrider/proxy/server/servertest"
)

// One port serves TLS for two names (chosen by SNI through tls_inspector),
// mutual TLS for a SPIFFE identity, and plaintext, as Envoy's tls-inspector
// and tls-sni examples do.
func TestTLSTerminationBySNI(t *testing.T) {
	dir := t.TempDir()
	ca := servertest.NewCA(t, "test-ca")
	caFile := filepath.Join(dir, "ca.pem")
	os.WriteFile(caFile, ca.PEM, 0o600)
	aCert, aKey := ca.Issue(t, []string{"a.test"}).WriteFiles(t, dir, "a-")
	bCert, bKey := ca.Issue(t, []string{"*.b.test"}).WriteFiles(t, dir, "b-")
	mCert, mKey := ca.Issue(t, []string{"mtls.test"}).WriteFiles(t, dir, "m-")

	var seen = make(chan string, 10)
	up := startUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		seen <- r.Header.Get("X-Forwarded-Proto")
		io.WriteString(w, "from upstream")
	})
	hcm := func(prefix, body string) string {
		route := `{match: {prefix: "/"}, route: {cluster: up}}`
		if body != "" {
			route = fmt.Sprintf(`{match: {prefix: "/"}, direct_response: {status: 200, body: {inline_string: %q}}}`, body)
		}
		return fmt.Sprintf(`
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: %s
          route_config: {virtual_hosts: [{name: vh, domains: ["*"], routes: [%s]}]}
          http_filters: [{name: envoy.filters.http.router, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}]`, prefix, route)
	}
	tlsSocket := func(cert, key, extra string) string {
		return fmt.Sprintf(`
      transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          common_tls_context:
            tls_certificates: [{certificate_chain: {filename: %s}, private_key: {filename: %s}}]
            alpn_protocols: [http/1.1]%s`, cert, key, extra)
	}
	mtls := fmt.Sprintf(`
            validation_context:
              trusted_ca: {filename: %s}
              match_typed_subject_alt_names: [{san_type: URI, matcher: {exact: "spiffe://td/ns/app/sa/client"}}]
          require_client_certificate: true`, caFile)
	yaml := fmt.Sprintf(`
admin: {address: {socket_address: {address: 127.0.0.1, port_value: 0}}}
static_resources:
  listeners:
  - name: edge
    address: {socket_address: {address: 127.0.0.1, port_value: 0}}
    listener_filters:
    - name: envoy.filters.listener.tls_inspector
      typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector}
    filter_chains:
    - filter_chain_match: {server_names: [a.test]}%s
      filters:%s
    - filter_chain_match: {server_names: ["*.b.test"]}%s
      filters:%s
    - filter_chain_match: {server_names: [mtls.test]}%s
      filters:%s
    - filter_chain_match: {transport_protocol: raw_buffer}
      filters:%s
  clusters:
  - name: up
    load_assignment: {cluster_name: up, endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: %d}}}}]}]}
`, tlsSocket(aCert, aKey, ""), hcm("a", ""), tlsSocket(bCert, bKey, ""), hcm("b", "b site"),
		tlsSocket(mCert, mKey, mtls), hcm("m", "mtls ok"), hcm("plain", "plaintext"), up.port())
	p := servertest.Start(t, yaml)
	addr := p.Addr("edge")

	get := func(sni string, certs []tls.Certificate) (string, error) {
		tr := &http.Transport{TLSClientConfig: &tls.Config{ServerName: sni, RootCAs: ca.Pool, Certificates: certs}}
		defer tr.CloseIdleConnections()
		client := &http.Client{Transport: tr, Timeout: 5 * time.Second}
		resp, err := client.Get("https://" + addr + "/")
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b), nil
	}
	if got, err := get("a.test", nil); err != nil || got != "from upstream" {
		t.Fatalf("a.test: %q %v", got, err)
	}
	if xfp := <-seen; xfp != "https" {
		t.Errorf("x-forwarded-proto over TLS = %q, want https", xfp)
	}
	if got, err := get("www.b.test", nil); err != nil || got != "b site" {
		t.Fatalf("www.b.test: %q %v", got, err)
	}
	client := ca.Issue(t, nil, "spiffe://td/ns/app/sa/client")
	if got, err := get("mtls.test", []tls.Certificate{client.TLS}); err != nil || got != "mtls ok" {
		t.Fatalf("mtls with the right identity: %q %v", got, err)
	}
	wrong := ca.Issue(t, nil, "spiffe://td/ns/app/sa/intruder")
	if _, err := get("mtls.test", []tls.Certificate{wrong.TLS}); err == nil {
		t.Fatal("mtls accepted a client whose SAN does not match")
	}
	if _, err := get("mtls.test", nil); err == nil {
		t.Fatal("mtls accepted a client without a certificate")
	}
	resp, err := http.Get("http://" + addr + "/")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "plaintext" {
		t.Fatalf("plaintext on the same port: %q", b)
	}
	// An unknown name matches no chain: the connection is closed.
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 2 * time.Second}, "tcp", addr, &tls.Config{ServerName: "nobody.test", RootCAs: ca.Pool})
	if err == nil {
		c.Close()
		t.Fatal("handshake succeeded for a name no chain serves")
	}
	for name, min := range map[string]int64{
		"listener.127.0.0.1_0.ssl.handshake":           3,
		"listener.127.0.0.1_0.ssl.fail_verify_san":     1,
		"listener.127.0.0.1_0.tls_inspector.sni_found": 5,
		"listener.127.0.0.1_0.no_filter_chain_match":   1,
		"http.plain.downstream_rq_2xx":                 1,
	} {
		deadline := time.Now().Add(3 * time.Second) // stats follow the responses
		for p.Stat(name) < min && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if got := p.Stat(name); got < min {
			t.Errorf("%s = %d, want at least %d", name, got, min)
		}
	}
}
