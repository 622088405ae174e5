package server_test

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"

	"github.com/outrider-proxy/outrider/proxy/server/servertest"
)

// transport_socket_matches, as Istio configures them: endpoints labelled
// tlsMode=istio get mTLS, the others plaintext, in one cluster. Two
// endpoints, a TLS server (labelled) and a plaintext one (not), are each
// reached the way their label says, and each match counts its hosts.
func TestTransportSocketMatches(t *testing.T) {
	ca := servertest.NewCA(t, "mesh-ca")
	serverLeaf := ca.Issue(t, []string{"backend.test"}, "spiffe://cluster.local/ns/default/sa/backend")
	clientLeaf := ca.Issue(t, nil, "spiffe://cluster.local/ns/default/sa/frontend")
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca.PEM)
	tlsSrv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		peer := ""
		if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 && len(r.TLS.PeerCertificates[0].URIs) > 0 {
			peer = r.TLS.PeerCertificates[0].URIs[0].String()
		}
		fmt.Fprintf(w, "mtls from %s", peer)
	}))
	tlsSrv.TLS = &tls.Config{Certificates: []tls.Certificate{serverLeaf.TLS}, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: pool}
	tlsSrv.StartTLS()
	t.Cleanup(tlsSrv.Close)
	plain := startUpstream(t, func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "plaintext") })

	dir := t.TempDir()
	caFile := filepath.Join(dir, "ca.pem")
	os.WriteFile(caFile, ca.PEM, 0o600)
	certFile, keyFile := clientLeaf.WriteFiles(t, dir, "client")
	tlsPort := tlsSrv.Listener.Addr().(*net.TCPAddr).Port
	yaml := fmt.Sprintf(`
admin: {address: {socket_address: {address: 127.0.0.1, port_value: 0}}}
static_resources:
  listeners:
  - name: front
    address: {socket_address: {address: 127.0.0.1, port_value: 0}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: front
          route_config:
            virtual_hosts:
            - name: vh
              domains: ["*"]
              routes: [{match: {prefix: "/"}, route: {cluster: mesh}}]
          http_filters:
          - name: envoy.filters.http.router
            typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}
  clusters:
  - name: mesh
    connect_timeout: 1s
    transport_socket_matches:
    - name: tlsMode-istio
      match: {tlsMode: istio}
      transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
          sni: backend.test
          common_tls_context:
            tls_certificates: [{certificate_chain: {filename: %s}, private_key: {filename: %s}}]
            validation_context:
              trusted_ca: {filename: %s}
              match_typed_subject_alt_names: [{san_type: URI, matcher: {exact: "spiffe://cluster.local/ns/default/sa/backend"}}]
    - name: tlsMode-disabled
      match: {}
      transport_socket: {name: envoy.transport_sockets.raw_buffer, typed_config: {"@type": type.googleapis.com/envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer}}
    load_assignment:
      cluster_name: mesh
      endpoints:
      - lb_endpoints:
        - endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: %d}}}
          metadata: {filter_metadata: {envoy.transport_socket_match: {tlsMode: istio}}}
        - endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: %d}}}
`, certFile, keyFile, caFile, tlsPort, plain.port())
	p := servertest.Start(t, yaml)
	// Round robin over the two endpoints: four requests reach each twice.
	seen := map[string]int{}
	for range 4 {
		code, body, _ := getBody(t, p.URL("front", "/"))
		seen[fmt.Sprint(code, " ", body)]++
	}
	want := map[string]int{"200 mtls from spiffe://cluster.local/ns/default/sa/frontend": 2, "200 plaintext": 2}
	if fmt.Sprint(seen) != fmt.Sprint(want) {
		t.Errorf("responses %v, want %v: the labelled endpoint over mTLS, the other in plaintext", seen, want)
	}
	p.WaitStat("cluster.mesh.tlsMode-istio.total_match_count", 1)
	p.WaitStat("cluster.mesh.tlsMode-disabled.total_match_count", 1)
	p.WaitStat("cluster.mesh.default.total_match_count", 0)
}
