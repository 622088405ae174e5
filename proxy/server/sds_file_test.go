package server_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/outrider-proxy/outrider/proxy/server/servertest"
)

// File-based SDS (path_config_source with a watched directory) on a static
// listener: the listener serves the certificate the file names, and a new
// file moved into place with `mv` rotates it for new handshakes. A file
// whose secret is bad is rejected and the last good certificate stays.
func TestSDSFromFileRotatedByMove(t *testing.T) {
	dir := t.TempDir()
	ca := servertest.NewCA(t, "file-ca")
	v1 := ca.Issue(t, []string{"sds.test"})
	v2 := ca.Issue(t, []string{"sds.test"})
	c1, k1 := v1.WriteFiles(t, dir, "v1-")
	c2, k2 := v2.WriteFiles(t, dir, "v2-")
	sdsPath := filepath.Join(dir, "sds.yaml")
	secretFile := func(cert, key string) string {
		return fmt.Sprintf(`resources:
- "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret
  name: file-cert
  tls_certificate: {certificate_chain: {filename: %s}, private_key: {filename: %s}}
`, cert, key)
	}
	if err := os.WriteFile(sdsPath, []byte(secretFile(c1, k1)), 0o600); err != nil {
		t.Fatal(err)
	}
	p := servertest.Start(t, fmt.Sprintf(`
admin: {address: {socket_address: {address: 127.0.0.1, port_value: 0}}}
static_resources:
  listeners:
  - name: https
    address: {socket_address: {address: 127.0.0.1, port_value: 0}}
    filter_chains:
    - transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          common_tls_context:
            tls_certificate_sds_secret_configs:
            - name: file-cert
              sds_config: {path_config_source: {path: %s, watched_directory: {path: %s}}, resource_api_version: V3}
      filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: file
          route_config: {virtual_hosts: [{name: vh, domains: ["*"], routes: [{match: {prefix: "/"}, direct_response: {status: 200, body: {inline_string: ok}}}]}]}
          http_filters: [{name: envoy.filters.http.router, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}]
`, sdsPath, dir))
	addr := p.Addr("https")
	eventually(t, "v1 from the file", func() string { return handshakeSerial(addr, ca) }, v1.TLS.Leaf.SerialNumber.String())
	p.WaitStat("sds.file-cert.update_success", 1)

	move := func(content string) {
		t.Helper()
		tmp := filepath.Join(t.TempDir(), "sds.yaml")
		if err := os.WriteFile(tmp, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command("mv", tmp, sdsPath).CombinedOutput(); err != nil {
			t.Fatalf("mv: %v %s", err, out)
		}
	}
	move(secretFile(c2, k2))
	eventually(t, "v2 after mv", func() string { return handshakeSerial(addr, ca) }, v2.TLS.Leaf.SerialNumber.String())

	move(secretFile(c1, k2)) // key of another certificate
	p.WaitStat("sds.file-cert.update_rejected", 1)
	if got := handshakeSerial(addr, ca); got != v2.TLS.Leaf.SerialNumber.String() {
		t.Fatalf("after a bad file: %s, want the last good certificate", got)
	}
	_, dump := p.Admin("GET", "/config_dump")
	if !strings.Contains(dump, `"name": "file-cert"`) || !strings.Contains(dump, k2) {
		t.Errorf("config_dump lacks the file secret (a key file name is not redacted):\n%s", dump)
	}
}
