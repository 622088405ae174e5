package server_test

import (
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/outrider-proxy/outrider/proxy/server/servertest"
)

// sniRecorder is an HTTPS upstream whose certificate has the DNS SANs
// a.test and b.test; it records the SNI of every handshake and answers
// with the SNI of the connection the request came on.
type sniRecorder struct {
	mu   sync.Mutex
	snis []string
	port int
}

func startSNIRecorder(t *testing.T, ca *servertest.CA) *sniRecorder {
	t.Helper()
	r := &sniRecorder{}
	leaf := ca.Issue(t, []string{"a.test", "b.test"})
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		fmt.Fprintf(w, "sni=%s", req.TLS.ServerName)
	}))
	srv.TLS = &tls.Config{GetCertificate: func(h *tls.ClientHelloInfo) (*tls.Certificate, error) {
		r.mu.Lock()
		r.snis = append(r.snis, h.ServerName)
		r.mu.Unlock()
		return &leaf.TLS, nil
	}}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	r.port = portOf(t, srv.Listener.Addr().String())
	return r
}

func (r *sniRecorder) handshakes() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return strings.Join(r.snis, ",")
}

// Cluster auto_sni and auto_san_validation (upstream_http_protocol_options
// in the HttpProtocolOptions extension): the SNI comes from the request's
// :authority (or override_auto_sni_header), the server certificate must
// have it as SAN, and connections are pooled per SNI: a request for another
// name opens its own connection, one for the same name reuses it.
func TestUpstreamAutoSNI(t *testing.T) {
	ca := servertest.NewCA(t, "autosni-ca")
	up := startSNIRecorder(t, ca)
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, ca.PEM, 0o600); err != nil {
		t.Fatal(err)
	}
	cluster := func(name, extra string) string {
		return fmt.Sprintf(`
  - name: %[1]s
    connect_timeout: 1s
    load_assignment: {cluster_name: %[1]s, endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: %[2]d}}}}]}]}
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        upstream_http_protocol_options: {auto_sni: true, auto_san_validation: true%[3]s}
        explicit_http_config: {http_protocol_options: {}}
    transport_socket:
      name: envoy.transport_sockets.tls
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
        sni: configured.test
        common_tls_context:
          validation_context: {trusted_ca: {filename: %[4]q}}`, name, up.port, extra, caFile)
	}
	p := servertest.Start(t, fmt.Sprintf(`
static_resources:
  listeners:
  - name: in
    address: {socket_address: {address: 127.0.0.1, port_value: 0}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: in
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - {match: {prefix: "/hdr"}, route: {cluster: by_header}}
              - {match: {prefix: "/"}, route: {cluster: by_authority}}
          %s
  clusters:%s%s
`, routerFilterYAML, cluster("by_authority", ""), cluster("by_header", ", override_auto_sni_header: x-sni")))

	do := func(host, path, sniHeader string) string {
		req, _ := http.NewRequest("GET", p.URL("in", path), nil)
		req.Host = host
		if sniHeader != "" {
			req.Header.Set("x-sni", sniHeader)
		}
		c := &http.Client{Timeout: 3 * time.Second}
		resp, err := c.Do(req)
		if err != nil {
			return err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 {
			return fmt.Sprint(resp.StatusCode)
		}
		return string(b)
	}
	steps := []struct {
		host, path, header string
		want               string
		handshakes         string // every upstream handshake so far
	}{
		{"a.test", "/", "", "sni=a.test", "a.test"},
		{"b.test:8080", "/", "", "sni=b.test", "a.test,b.test"},
		{"a.test", "/", "", "sni=a.test", "a.test,b.test"}, // reuses a.test's connection
		// The certificate has no c.test SAN: auto_san_validation refuses it.
		{"c.test", "/", "", "503", "a.test,b.test,c.test"},
		// override_auto_sni_header wins over :authority; absent, :authority counts.
		{"a.test", "/hdr", "b.test", "sni=b.test", "a.test,b.test,c.test,b.test"},
		{"a.test", "/hdr", "", "sni=a.test", "a.test,b.test,c.test,b.test,a.test"},
	}
	for i, s := range steps {
		if got := do(s.host, s.path, s.header); got != s.want {
			t.Errorf("step %d (%s%s, x-sni %q): got %q, want %q", i, s.host, s.path, s.header, got, s.want)
		}
		if got := up.handshakes(); got != s.handshakes {
			t.Errorf("step %d: upstream handshakes %q, want %q", i, got, s.handshakes)
		}
	}
	if v := p.Stat("cluster.by_authority.ssl.fail_verify_san"); v != 1 {
		t.Errorf("cluster.by_authority.ssl.fail_verify_san = %d, want 1", v)
	}
}
