package server_test

import (
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
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

// TLS passthrough: a chain chosen by SNI forwards the encrypted bytes to a
// TLS upstream untouched (tcp_proxy, no transport socket), as Envoy's
// tls-sni example does; the client sees the upstream's own certificate.
func TestTLSPassthroughBySNI(t *testing.T) {
	ca := servertest.NewCA(t, "passthrough-ca")
	leaf := ca.Issue(t, []string{"backend.test"})
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{leaf.TLS}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); io.WriteString(c, "end to end") }()
		}
	}()
	yaml := fmt.Sprintf(`
static_resources:
  listeners:
  - name: sni
    address: {socket_address: {address: 127.0.0.1, port_value: 0}}
    listener_filters:
    - name: envoy.filters.listener.tls_inspector
      typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector}
    filter_chains:
    - filter_chain_match: {server_names: [backend.test]}
      filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy, stat_prefix: pass, cluster: backend}
  clusters:
  - name: backend
    load_assignment: {cluster_name: backend, endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: %d}}}}]}]}
`, ln.Addr().(*net.TCPAddr).Port)
	p := servertest.Start(t, yaml)
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 2 * time.Second}, "tcp", p.Addr("sni"), &tls.Config{ServerName: "backend.test", RootCAs: ca.Pool})
	if err != nil {
		t.Fatalf("passthrough handshake: %v", err)
	}
	defer c.Close()
	got, _ := io.ReadAll(c)
	if string(got) != "end to end" {
		t.Fatalf("got %q", got)
	}
	if cs := c.ConnectionState(); len(cs.PeerCertificates) == 0 || cs.PeerCertificates[0].DNSNames[0] != "backend.test" {
		t.Fatal("the client did not see the upstream's own certificate")
	}
	p.WaitStat("tcp.pass.downstream_cx_total", 1)
}

// The standard tool's view: openssl s_client negotiates TLS 1.3 and ALPN h2
// with a terminating listener, and is refused without a client certificate
// where one is required.
func TestOpenSSLClient(t *testing.T) {
	openssl, err := exec.LookPath("openssl")
	if err != nil {
		t.Skip("openssl not installed")
	}
	dir := t.TempDir()
	ca := servertest.NewCA(t, "ossl-ca")
	caFile := filepath.Join(dir, "ca.pem")
	os.WriteFile(caFile, ca.PEM, 0o600)
	cert, key := ca.Issue(t, []string{"ossl.test"}).WriteFiles(t, dir, "srv-")
	listener := func(name, extra string) string {
		return fmt.Sprintf(`
  - name: %s
    address: {socket_address: {address: 127.0.0.1, port_value: 0}}
    filter_chains:
    - transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          common_tls_context:
            tls_certificates: [{certificate_chain: {filename: %s}, private_key: {filename: %s}}]
            alpn_protocols: [h2, http/1.1]%s
      filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: %s
          route_config: {virtual_hosts: [{name: vh, domains: ["*"], routes: [{match: {prefix: "/"}, direct_response: {status: 200}}]}]}`, name, cert, key, extra, name)
	}
	mtls := fmt.Sprintf(`
            validation_context: {trusted_ca: {filename: %s}}
          require_client_certificate: true`, caFile)
	p := servertest.Start(t, "static_resources:\n  listeners:"+listener("tls", "")+listener("mtls", mtls)+"\n")
	sclient := func(addr string) string {
		cmd := exec.Command(openssl, "s_client", "-connect", addr, "-servername", "ossl.test", "-alpn", "h2",
			"-CAfile", caFile, "-verify_return_error")
		cmd.Stdin = strings.NewReader("")
		out, _ := cmd.CombinedOutput()
		return string(out)
	}
	out := sclient(p.Addr("tls"))
	for _, want := range []string{"New, TLSv1.3", "ALPN protocol: h2", "Verify return code: 0 (ok)"} {
		if !strings.Contains(out, want) {
			t.Errorf("openssl s_client lacks %q:\n%s", want, out)
		}
	}
	// Under TLS 1.3 openssl may print the session before the server's alert
	// arrives, so the refusal is read from the server's own count.
	sclient(p.Addr("mtls"))
	p.WaitStat("listener.127.0.0.1_0.ssl.connection_error", 1)
}

// listener_filters_timeout bounds a client that sends nothing to the
// tls_inspector: closed, or with continue_on_listener_filters_timeout
// served as plaintext (a server-speaks-first protocol).
func TestListenerFiltersTimeout(t *testing.T) {
	greeter := named(t, "hello first")
	for _, cont := range []bool{false, true} {
		yaml := fmt.Sprintf(`
static_resources:
  listeners:
  - name: l
    address: {socket_address: {address: 127.0.0.1, port_value: 0}}
    listener_filters_timeout: 0.2s
    continue_on_listener_filters_timeout: %v
    listener_filters:
    - name: envoy.filters.listener.tls_inspector
      typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector}
    filter_chains:
    - filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy, stat_prefix: t, cluster: g}
  clusters:
  - name: g
    load_assignment: {cluster_name: g, endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: %d}}}}]}]}
`, cont, greeter)
		p := servertest.Start(t, yaml)
		start := time.Now()
		got := readAllFrom(t, p.Addr("l"))
		if time.Since(start) > 3*time.Second {
			t.Fatalf("continue=%v: the silent client was held %v", cont, time.Since(start))
		}
		want := ""
		if cont {
			want = "hello first"
		}
		if got != want {
			t.Errorf("continue=%v: got %q, want %q", cont, got, want)
		}
		p.WaitStat("listener.127.0.0.1_0.downstream_pre_cx_timeout", 1)
	}
}
