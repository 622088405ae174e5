package extauthz_test

import (
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"

	"github.com/outrider-proxy/outrider/proxy/server/servertest"
)

// tlsYAML is an mTLS listener checking with the gRPC service, peer
// certificate and TLS session included; the route answers directly.
const tlsYAML = `
static_resources:
  listeners:
  - name: l
    address: {socket_address: {address: 127.0.0.1, port_value: 0}}
    filter_chains:
    - transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          require_client_certificate: true
          common_tls_context:
            tls_certificates: [{certificate_chain: {filename: %s}, private_key: {filename: %s}}]
            validation_context: {trusted_ca: {filename: %s}}
      filters: [{name: envoy.filters.network.http_connection_manager, typed_config: {
        "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager,
        stat_prefix: l,
        route_config: {virtual_hosts: [{name: v, domains: ["*"], routes: [{match: {prefix: /}, direct_response: {status: 204}}]}]},
        http_filters: [
        {name: envoy.filters.http.ext_authz, typed_config: {
          "@type": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz,
          grpc_service: {envoy_grpc: {cluster_name: authz}, timeout: 2s},
          include_peer_certificate: true, include_tls_session: true,
          allowed_headers: {patterns: [{exact: x-case}]}, disallowed_headers: {patterns: [{exact: x-secret}]}}},
        {name: envoy.filters.http.router, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}]}}]
  clusters:
  - name: authz
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {http2_protocol_options: {}}
    load_assignment: {cluster_name: authz, endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: %d}}}}]}]}
`

func TestPeerIdentity(t *testing.T) {
	dir := t.TempDir()
	ca := servertest.NewCA(t, "ca")
	caFile := dir + "/ca.pem"
	srv := ca.Issue(t, []string{"proxy.test"}, "spiffe://td/ns/app/sa/server")
	cli := ca.Issue(t, []string{"client.test"}, "spiffe://td/ns/app/sa/client")
	cert, key := srv.WriteFiles(t, dir, "srv-")
	if err := writeFile(caFile, ca.PEM); err != nil {
		t.Fatal(err)
	}
	authz := &grpcAuthz{seen: map[string]*authv3.CheckRequest{}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	authv3.RegisterAuthorizationServer(gs, authz)
	go gs.Serve(ln)
	t.Cleanup(gs.Stop)
	p := servertest.Start(t, fmt.Sprintf(tlsYAML, cert, key, caFile, ln.Addr().(*net.TCPAddr).Port))

	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{
		RootCAs: ca.Pool, ServerName: "proxy.test", Certificates: []tls.Certificate{cli.TLS}}}}
	defer c.CloseIdleConnections()
	req, _ := http.NewRequest("GET", "https://"+p.Addr("l")+"/", nil)
	req.Header.Set("x-case", "tls")
	req.Header.Set("x-secret", "s")
	req.Header.Set("x-other", "o")
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 204 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	a := authz.request(t, "tls").GetAttributes()
	if got := a.GetSource().GetPrincipal(); got != "spiffe://td/ns/app/sa/client" {
		t.Errorf("source principal %q", got)
	}
	if got := a.GetDestination().GetPrincipal(); got != "spiffe://td/ns/app/sa/server" {
		t.Errorf("destination principal %q", got)
	}
	pemText, err := url.QueryUnescape(a.GetSource().GetCertificate())
	if err != nil || pemText != string(cli.CertPEM) {
		t.Errorf("source certificate %q (%v)", a.GetSource().GetCertificate(), err)
	}
	if got := a.GetTlsSession().GetSni(); got != "proxy.test" {
		t.Errorf("sni %q", got)
	}
	// Only allowed_headers reach the service, and disallowed_headers never.
	h := a.GetRequest().GetHttp().GetHeaders()
	if len(h) != 1 || h["x-case"] != "tls" || !strings.HasPrefix(a.GetRequest().GetHttp().GetScheme(), "https") {
		t.Errorf("headers %v, scheme %q", h, a.GetRequest().GetHttp().GetScheme())
	}
}

func writeFile(name string, b []byte) error { return os.WriteFile(name, b, 0o600) }
