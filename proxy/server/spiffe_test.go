package server_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	secretv3 "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"google.golang.org/grpc"

	"github.com/outrider-proxy/outrider/proxy/server"
	"github.com/outrider-proxy/outrider/proxy/server/servertest"
)

// fakeWorkloadAPI is a SPIFFE Workload API server on a unix socket that
// streams the X.509 SVID response set last to every FetchX509SVID caller.
type fakeWorkloadAPI struct {
	workload.UnimplementedSpiffeWorkloadAPIServer
	mu      sync.Mutex
	resp    *workload.X509SVIDResponse
	changed chan struct{} // closed and replaced on every set
	addr    string
}

func startFakeWorkloadAPI(t *testing.T) *fakeWorkloadAPI {
	t.Helper()
	dir, err := os.MkdirTemp("", "wl")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	path := filepath.Join(dir, "agent.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeWorkloadAPI{changed: make(chan struct{}), addr: "unix://" + path}
	gs := grpc.NewServer()
	workload.RegisterSpiffeWorkloadAPIServer(gs, f)
	go gs.Serve(ln)
	t.Cleanup(gs.Stop)
	return f
}

// set publishes the SVIDs (one per leaf) with ca as their bundle.
func (f *fakeWorkloadAPI) set(t *testing.T, ca *servertest.CA, ids []string, leaves []*servertest.Leaf) {
	t.Helper()
	resp := &workload.X509SVIDResponse{}
	for i, l := range leaves {
		key, err := x509.MarshalPKCS8PrivateKey(l.TLS.PrivateKey)
		if err != nil {
			t.Fatal(err)
		}
		resp.Svids = append(resp.Svids, &workload.X509SVID{SpiffeId: ids[i], X509Svid: l.TLS.Certificate[0], X509SvidKey: key, Bundle: ca.Cert.Raw})
	}
	f.mu.Lock()
	f.resp = resp
	close(f.changed)
	f.changed = make(chan struct{})
	f.mu.Unlock()
}

func (f *fakeWorkloadAPI) FetchX509SVID(_ *workload.X509SVIDRequest, stream workload.SpiffeWorkloadAPI_FetchX509SVIDServer) error {
	for range 1000 { // bounded: one round per update
		f.mu.Lock()
		resp, ch := f.resp, f.changed
		f.mu.Unlock()
		if resp != nil {
			if err := stream.Send(resp); err != nil {
				return err
			}
		}
		select {
		case <-ch:
		case <-stream.Context().Done():
			return nil
		}
	}
	return nil
}

// sdsRefYAML is the sds_config part of an SdsSecretConfig: "" (the
// Workload API through --spiffe-workload-api) or SPIRE's SDS cluster.
const spireSDSConfig = `, sds_config: {resource_api_version: V3, initial_fetch_timeout: 20s, api_config_source: {api_type: GRPC, transport_api_version: V3, grpc_services: [{envoy_grpc: {cluster_name: spire_agent}}]}}`

// spireAgentCluster is the static cluster Envoy+SPIRE bootstraps declare for
// the agent's socket.
func spireAgentCluster(sock string) string {
	return fmt.Sprintf(`
  - name: spire_agent
    connect_timeout: 1s
    http2_protocol_options: {}
    load_assignment:
      cluster_name: spire_agent
      endpoints: [{lb_endpoints: [{endpoint: {address: {pipe: {path: %q}}}}]}]`, sock)
}

const routerFilterYAML = `http_filters: [{name: envoy.filters.http.router, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}]`

// serverSidecarYAML: an mTLS listener "mtls" (certificate secret cert,
// client certificates verified by bundle secret bundle and required to
// carry the URI SAN peerID) in front of a plain upstream on appPort.
func serverSidecarYAML(cert, bundle, sds, peerID string, appPort int, extraClusters string) string {
	return fmt.Sprintf(`
static_resources:
  listeners:
  - name: mtls
    address: {socket_address: {address: 127.0.0.1, port_value: 0}}
    filter_chains:
    - transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          require_client_certificate: true
          common_tls_context:
            tls_certificate_sds_secret_configs: [{name: %[1]q%[3]s}]
            combined_validation_context:
              default_validation_context:
                match_typed_subject_alt_names: [{san_type: URI, matcher: {exact: %[4]q}}]
              validation_context_sds_secret_config: {name: %[2]q%[3]s}
      filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: in
          route_config: {virtual_hosts: [{name: all, domains: ["*"], routes: [{match: {prefix: "/"}, route: {cluster: app}}]}]}
          %[6]s
  clusters:
  - name: app
    connect_timeout: 1s
    load_assignment: {cluster_name: app, endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: %[5]d}}}}]}]}%[7]s
`, cert, bundle, sds, peerID, appPort, routerFilterYAML, extraClusters)
}

// clientSidecarYAML: a plain HTTP listener "out" whose cluster "backend"
// originates mTLS to backendPort with certificate secret cert, verifying
// the server by bundle secret bundle and its URI SAN peerID.
func clientSidecarYAML(cert, bundle, sds, peerID string, backendPort int, extraClusters string) string {
	return fmt.Sprintf(`
static_resources:
  listeners:
  - name: out
    address: {socket_address: {address: 127.0.0.1, port_value: 0}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: out
          route_config: {virtual_hosts: [{name: all, domains: ["*"], routes: [{match: {prefix: "/"}, route: {cluster: backend}}]}]}
          %[6]s
  clusters:
  - name: backend
    connect_timeout: 1s
    load_assignment: {cluster_name: backend, endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: %[5]d}}}}]}]}
    transport_socket:
      name: envoy.transport_sockets.tls
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
        common_tls_context:
          tls_certificate_sds_secret_configs: [{name: %[1]q%[3]s}]
          combined_validation_context:
            default_validation_context:
              match_typed_subject_alt_names: [{san_type: URI, matcher: {exact: %[4]q}}]
            validation_context_sds_secret_config: {name: %[2]q%[3]s}%[7]s
`, cert, bundle, sds, peerID, backendPort, routerFilterYAML, extraClusters)
}

// appServer is the plain upstream behind the server sidecar.
func appServer(t *testing.T) int {
	t.Helper()
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "app says hi") }))
	t.Cleanup(app.Close)
	return app.Listener.Addr().(*net.TCPAddr).Port
}

func portOf(t *testing.T, addr string) int {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	var n int
	fmt.Sscan(p, &n)
	return n
}

// getThrough is one request through the client sidecar: status and body, or
// the error text. Keep-alive is off so each request handshakes anew.
func getThrough(url string) (int, string) {
	c := &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get(url)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// peerLeafSerial is the serial of the certificate a new mTLS handshake to
// addr sees, presenting cert (no verification of the server here).
func peerLeafSerial(addr string, cert tls.Certificate) string {
	d := &net.Dialer{Timeout: time.Second}
	c, err := tls.DialWithDialer(d, "tcp", addr, &tls.Config{InsecureSkipVerify: true, Certificates: []tls.Certificate{cert}})
	if err != nil {
		return "error: " + err.Error()
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0].SerialNumber.String()
}

// TestSPIFFEWorkloadAPIDirect: two sidecars take their SVID ("default") and
// bundle ("ROOTCA") straight from a Workload API (--spiffe-workload-api),
// proxy a request over mTLS, refuse a client whose SPIFFE ID is not the
// allowed one, and use a rotated SVID for new handshakes.
func TestSPIFFEWorkloadAPIDirect(t *testing.T) {
	const (
		clientID = "spiffe://example.org/client"
		serverID = "spiffe://example.org/server"
	)
	ca := servertest.NewCA(t, "example.org")
	srvWL, cliWL := startFakeWorkloadAPI(t), startFakeWorkloadAPI(t)
	srvLeaf, cliLeaf := ca.Issue(t, nil, serverID), ca.Issue(t, nil, clientID)
	srvWL.set(t, ca, []string{serverID}, []*servertest.Leaf{srvLeaf})
	cliWL.set(t, ca, []string{clientID}, []*servertest.Leaf{cliLeaf})

	opts := func(addr string) server.Options {
		return server.Options{DrainTime: time.Second, DrainImmediate: true, SPIFFEWorkloadAPI: addr}
	}
	const admin = "admin: {address: {socket_address: {address: 127.0.0.1, port_value: 0}}}"
	srv := servertest.StartOpts(t, admin+serverSidecarYAML("default", "ROOTCA", "", clientID, appServer(t), ""), opts(srvWL.addr))
	cli := servertest.StartOpts(t, clientSidecarYAML("default", "ROOTCA", "", serverID, portOf(t, srv.Addr("mtls")), ""), opts(cliWL.addr))

	eventually(t, "request over SPIFFE mTLS", func() string {
		code, body := getThrough(cli.URL("out", "/"))
		return fmt.Sprint(code, " ", body)
	}, "200 app says hi")
	if v := srv.Stat("spiffe_workload_api.update_success"); v < 1 {
		t.Errorf("spiffe_workload_api.update_success = %d", v)
	}

	// config_dump shows the Workload API's SVID and bundle as dynamic
	// secrets, keys redacted, as Envoy shows what SPIRE's SDS sent.
	code, body := srv.Admin("GET", "/config_dump?resource=dynamic_active_secrets")
	var dump struct {
		Configs []struct {
			Name        string          `json:"name"`
			VersionInfo string          `json:"version_info"`
			LastUpdated string          `json:"last_updated"`
			Secret      json.RawMessage `json:"secret"`
		} `json:"configs"`
	}
	if err := json.Unmarshal([]byte(body), &dump); code != 200 || err != nil {
		t.Fatalf("config_dump: %d %v\n%s", code, err, body)
	}
	names := map[string]bool{}
	for _, c := range dump.Configs {
		names[c.Name] = true
		var sec struct {
			TLSCertificate *struct {
				PrivateKey struct {
					InlineBytes []byte `json:"inline_bytes"`
				} `json:"private_key"`
			} `json:"tls_certificate"`
		}
		if err := json.Unmarshal(c.Secret, &sec); err != nil || c.VersionInfo == "" || c.LastUpdated == "" {
			t.Errorf("secret %q: version %q, last_updated %q, %v", c.Name, c.VersionInfo, c.LastUpdated, err)
		}
		if sec.TLSCertificate != nil && string(sec.TLSCertificate.PrivateKey.InlineBytes) != "[redacted]" {
			t.Errorf("secret %q: private key not redacted", c.Name)
		}
	}
	for _, want := range []string{"default", serverID, "ROOTCA", "ALL", "spiffe://example.org"} {
		if !names[want] {
			t.Errorf("dynamic_active_secrets lack %q (have %v)", want, names)
		}
	}

	// A workload with another SPIFFE ID (same trust domain) is refused.
	other := ca.Issue(t, nil, "spiffe://example.org/intruder")
	const sanFail = "listener.127.0.0.1_0.ssl.fail_verify_san"
	before := srv.Stat(sanFail)
	// Under TLS 1.3 the client finishes before the server refuses, so the
	// refusal is read from the server's stats.
	peerLeafSerial(srv.Addr("mtls"), other.TLS)
	srv.WaitStat(sanFail, before+1)

	// Rotation: a new SVID reaches new handshakes.
	srvLeaf2 := ca.Issue(t, nil, serverID)
	srvWL.set(t, ca, []string{serverID}, []*servertest.Leaf{srvLeaf2})
	want := srvLeaf2.TLS.Leaf
	if want == nil {
		want, _ = x509.ParseCertificate(srvLeaf2.TLS.Certificate[0])
	}
	eventually(t, "rotated server SVID", func() string {
		return peerLeafSerial(srv.Addr("mtls"), cliLeaf.TLS)
	}, want.SerialNumber.String())
	if code, body := getThrough(cli.URL("out", "/")); code != 200 {
		t.Fatalf("after rotation: %d %s", code, body)
	}
}

// TestSDSOverPipeCluster: the SDS config Envoy+SPIRE bootstraps use (an
// envoy_grpc cluster whose endpoint is a pipe address) reaches an SDS server
// on a unix socket (go-control-plane's, standing in for SPIRE's agent); the
// secret arrives, and a new version reaches new handshakes.
func TestSDSOverPipeCluster(t *testing.T) {
	dir, err := os.MkdirTemp("", "sds")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "agent.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	snaps := cachev3.NewSnapshotCache(false, cachev3.IDHash{}, nil)
	gs := grpc.NewServer()
	secretv3.RegisterSecretDiscoveryServiceServer(gs, serverv3.NewServer(context.Background(), snaps, nil))
	go gs.Serve(ln)
	t.Cleanup(gs.Stop)

	ca := servertest.NewCA(t, "example.org")
	const clientID, serverID = "spiffe://example.org/client", "spiffe://example.org/server"
	publish := func(version string, srvLeaf *servertest.Leaf) {
		t.Helper()
		bundle := &tlsv3.Secret{Name: "ROOTCA", Type: &tlsv3.Secret_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
			TrustedCa: &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: ca.PEM}}}}}
		snap, err := cachev3.NewSnapshot(version, map[resourcev3.Type][]types.Resource{
			resourcev3.SecretType: {certSecret(serverID, srvLeaf), bundle},
		})
		if err != nil {
			t.Fatal(err)
		}
		if err := snaps.SetSnapshot(context.Background(), xdsNode, snap); err != nil {
			t.Fatal(err)
		}
	}
	leaf1 := ca.Issue(t, nil, serverID)
	publish("1", leaf1)
	yaml := fmt.Sprintf("node: {id: %s, cluster: test}\n", xdsNode) +
		serverSidecarYAML(serverID, "ROOTCA", spireSDSConfig, clientID, appServer(t), spireAgentCluster(sock))
	srv := servertest.Start(t, yaml)
	client := ca.Issue(t, nil, clientID)
	serial := func(l *servertest.Leaf) string {
		c, _ := x509.ParseCertificate(l.TLS.Certificate[0])
		return c.SerialNumber.String()
	}
	eventually(t, "SDS secret over the pipe cluster", func() string { return peerLeafSerial(srv.Addr("mtls"), client.TLS) }, serial(leaf1))
	leaf2 := ca.Issue(t, nil, serverID)
	publish("2", leaf2)
	eventually(t, "rotated secret over the pipe cluster", func() string { return peerLeafSerial(srv.Addr("mtls"), client.TLS) }, serial(leaf2))
	if v := srv.Stat("sds." + serverID + ".update_success"); v < 2 {
		t.Errorf("sds.%s.update_success = %d, want 2", serverID, v)
	}
}

// A static listener whose secrets come from the Workload API is warming
// until the first SVIDs arrive: bound, but no handshake completes; then it
// serves them.
func TestSPIFFEWorkloadAPIListenerWarming(t *testing.T) {
	const clientID, serverID = "spiffe://example.org/client", "spiffe://example.org/server"
	ca := servertest.NewCA(t, "example.org")
	wl := startFakeWorkloadAPI(t)
	srv := servertest.StartOpts(t, serverSidecarYAML("default", "ROOTCA", "", clientID, appServer(t), ""),
		server.Options{DrainTime: time.Second, DrainImmediate: true, SPIFFEWorkloadAPI: wl.addr})
	client := ca.Issue(t, nil, clientID)
	for range 3 {
		c, err := tls.DialWithDialer(&net.Dialer{Deadline: time.Now().Add(300 * time.Millisecond)}, "tcp",
			srv.Addr("mtls"), &tls.Config{InsecureSkipVerify: true, Certificates: []tls.Certificate{client.TLS}})
		if err == nil {
			c.Close()
			t.Fatal("handshake completed before the Workload API delivered an SVID")
		}
	}
	leaf := ca.Issue(t, nil, serverID)
	wl.set(t, ca, []string{serverID}, []*servertest.Leaf{leaf})
	want, _ := x509.ParseCertificate(leaf.TLS.Certificate[0])
	eventually(t, "served after the first SVID", func() string { return peerLeafSerial(srv.Addr("mtls"), client.TLS) }, want.SerialNumber.String())
}
