package server_test

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/outrider-proxy/outrider/proxy/server/servertest"
)

// sdsListener is an HTTPS listener on port answering "ok" whose
// certificate is the SDS secret "server-cert" from ADS.
func sdsListener(t *testing.T, port int) *listenerv3.Listener {
	router, _ := anypb.New(&routerv3.Router{})
	hcm, err := anypb.New(&hcmv3.HttpConnectionManager{
		StatPrefix: "sds",
		RouteSpecifier: &hcmv3.HttpConnectionManager_RouteConfig{RouteConfig: &routev3.RouteConfiguration{
			VirtualHosts: []*routev3.VirtualHost{{Name: "vh", Domains: []string{"*"}, Routes: []*routev3.Route{direct("ok")}}}}},
		HttpFilters: []*hcmv3.HttpFilter{{Name: "envoy.filters.http.router", ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: router}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	ads := &corev3.ConfigSource{ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}}, ResourceApiVersion: corev3.ApiVersion_V3}
	dtc, err := anypb.New(&tlsv3.DownstreamTlsContext{CommonTlsContext: &tlsv3.CommonTlsContext{
		TlsCertificateSdsSecretConfigs: []*tlsv3.SdsSecretConfig{{Name: "server-cert", SdsConfig: ads}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	return &listenerv3.Listener{
		Name: "https",
		Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
			Address: "127.0.0.1", PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: uint32(port)}}}},
		FilterChains: []*listenerv3.FilterChain{{
			TransportSocket: &corev3.TransportSocket{Name: "envoy.transport_sockets.tls", ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: dtc}},
			Filters: []*listenerv3.Filter{{
				Name: "envoy.filters.network.http_connection_manager", ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: hcm}}},
		}},
	}
}

func certSecret(name string, l *servertest.Leaf) *tlsv3.Secret {
	return &tlsv3.Secret{Name: name, Type: &tlsv3.Secret_TlsCertificate{TlsCertificate: &tlsv3.TlsCertificate{
		CertificateChain: &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: l.CertPEM}},
		PrivateKey:       &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: l.KeyPEM}},
	}}}
}

// handshakeSerial is the serial of the certificate a new TLS handshake to
// addr sees, or the error.
func handshakeSerial(addr string, ca *servertest.CA) string {
	d := &net.Dialer{Timeout: time.Second}
	c, err := tls.DialWithDialer(d, "tcp", addr, &tls.Config{RootCAs: ca.Pool, ServerName: "sds.test"})
	if err != nil {
		return "error: " + err.Error()
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0].SerialNumber.String()
}

// getOn sends one HTTP/1.1 request on an established connection.
func getOn(c net.Conn, r *bufio.Reader) string {
	c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: sds.test\r\n\r\n"); err != nil {
		return err.Error()
	}
	resp, err := http.ReadResponse(r, nil)
	if err != nil {
		return err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return fmt.Sprintf("%d %s", resp.StatusCode, b)
}

// A listener whose certificate comes from SDS over ADS warms until the
// secret arrives; a rotated secret is used by new handshakes while an
// established connection keeps working; a bad secret is NACKed naming it
// and the last good one stays; stats, /certs and /config_dump show it.
func TestSDSOverADSRotation(t *testing.T) {
	cp := startControlPlane(t)
	ca := servertest.NewCA(t, "sds-ca")
	v1 := ca.Issue(t, []string{"sds.test"}, "spiffe://td/ns/a/sa/server")
	v2 := ca.Issue(t, []string{"sds.test"}, "spiffe://td/ns/a/sa/server")
	port := servertest.DeadPort(t)
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	res := func(sec ...types.Resource) map[resourcev3.Type][]types.Resource {
		return map[resourcev3.Type][]types.Resource{
			resourcev3.ListenerType: {sdsListener(t, port)},
			resourcev3.SecretType:   sec,
			resourcev3.ClusterType: {&clusterv3.Cluster{Name: "other", ConnectTimeout: durationpb.New(time.Second),
				ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC},
				LoadAssignment:       &endpointv3.ClusterLoadAssignment{ClusterName: "other"}}},
		}
	}
	cp.set(t, "1", res())
	p := servertest.Start(t, xdsBootstrap(cp.port, "GRPC"))

	// Warming: the listener is built but not in service without its secret.
	p.WaitStat("listener_manager.total_listeners_warming", 1)
	if _, body := p.Admin("GET", "/config_dump"); !strings.Contains(body, `"dynamic_warming_secrets"`) || !strings.Contains(body, `"server-cert"`) {
		t.Fatalf("config_dump without the warming secret:\n%s", body)
	}
	if got := handshakeSerial(addr, ca); !strings.HasPrefix(got, "error") {
		t.Fatalf("a handshake succeeded before the secret arrived: %s", got)
	}

	cp.set(t, "2", res(certSecret("server-cert", v1)))
	eventually(t, "v1 certificate after the secret arrived", func() string { return handshakeSerial(addr, ca) }, v1.TLS.Leaf.SerialNumber.String())
	p.WaitStat("listener_manager.total_listeners_warming", 0)
	p.WaitStat("sds.server-cert.update_success", 1)

	// A long-lived connection made with v1.
	lc, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: ca.Pool, ServerName: "sds.test"})
	if err != nil {
		t.Fatal(err)
	}
	defer lc.Close()
	lr := bufio.NewReader(lc)
	if got := getOn(lc, lr); got != "200 ok" {
		t.Fatalf("long-lived connection: %q", got)
	}

	// Rotation: new handshakes see v2 within a second.
	cp.set(t, "3", res(certSecret("server-cert", v2)))
	start := time.Now()
	eventually(t, "v2 certificate after rotation", func() string { return handshakeSerial(addr, ca) }, v2.TLS.Leaf.SerialNumber.String())
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("rotation took %v", d)
	}
	if got := getOn(lc, lr); got != "200 ok" {
		t.Fatalf("the established connection broke on rotation: %q", got)
	}
	if s := lc.ConnectionState().PeerCertificates[0].SerialNumber.String(); s != v1.TLS.Leaf.SerialNumber.String() {
		t.Errorf("established connection's certificate changed to %s", s)
	}
	p.WaitStat(fmt.Sprintf("listener.%s.server_ssl_socket_factory.ssl_context_update_by_sds", strings.ReplaceAll(addr, ":", "_")), 2)

	// A bad secret (key of another certificate) is NACKed naming it.
	bad := certSecret("server-cert", v2)
	bad.GetTlsCertificate().PrivateKey = &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: v1.KeyPEM}}
	cp.set(t, "4", res(bad))
	deadline := time.Now().Add(5 * time.Second)
	for len(cp.nacked()) == 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if n := cp.nacked(); len(n) == 0 || !strings.Contains(n[0], `secret "server-cert"`) {
		t.Fatalf("NACK error_detail %q, want one naming the secret", n)
	}
	// go-control-plane answers every NACK with the same response again, so
	// the count is at least one.
	if n := p.Stat("sds.server-cert.update_rejected"); n < 1 {
		t.Errorf("sds.server-cert.update_rejected = %d", n)
	}
	if got := handshakeSerial(addr, ca); got != v2.TLS.Leaf.SerialNumber.String() {
		t.Fatalf("after a NACK: %s, want the last good certificate", got)
	}
	if got := getOn(lc, lr); got != "200 ok" {
		t.Fatalf("the established connection broke on a NACK: %q", got)
	}

	// /certs lists the current certificate; config_dump redacts the key.
	_, certs := p.Admin("GET", "/certs")
	serialHex := fmt.Sprintf("%x", v2.TLS.Leaf.SerialNumber.Bytes())
	for _, want := range []string{`"certificates"`, `"cert_chain"`, `"serial_number": "` + serialHex + `"`, `"dns": "sds.test"`,
		`"uri": "spiffe://td/ns/a/sa/server"`, `"days_until_expiration": "0"`, `"valid_from"`, `"expiration_time"`, `"path": "<inline>"`} {
		if !strings.Contains(certs, want) {
			t.Errorf("/certs lacks %s:\n%s", want, certs)
		}
	}
	_, dump := p.Admin("GET", "/config_dump")
	if !strings.Contains(dump, `"dynamic_active_secrets"`) || strings.Contains(dump, "PRIVATE KEY") || strings.Contains(dump, string(v2.KeyPEM[:20])) {
		t.Errorf("config_dump secrets not active or key not redacted:\n%s", dump)
	}
	if !strings.Contains(dump, "W3JlZGFjdGVkXQ==") { // base64 of "[redacted]" in inline_bytes
		t.Errorf("config_dump: private key not shown as [redacted]")
	}
}

// A CDS cluster whose client certificate is an SDS secret that has not
// arrived is warming; it becomes active when the secret arrives.
func TestSDSClusterWarming(t *testing.T) {
	cp := startControlPlane(t)
	ca := servertest.NewCA(t, "sds-ca")
	leaf := ca.Issue(t, nil, "spiffe://td/ns/a/sa/client")
	ads := &corev3.ConfigSource{ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}}, ResourceApiVersion: corev3.ApiVersion_V3}
	utc, err := anypb.New(&tlsv3.UpstreamTlsContext{CommonTlsContext: &tlsv3.CommonTlsContext{
		TlsCertificateSdsSecretConfigs: []*tlsv3.SdsSecretConfig{{Name: "client-cert", SdsConfig: ads}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	res := func(sec ...types.Resource) map[resourcev3.Type][]types.Resource {
		return map[resourcev3.Type][]types.Resource{
			resourcev3.SecretType: sec,
			resourcev3.ClusterType: {&clusterv3.Cluster{Name: "mtls", ConnectTimeout: durationpb.New(time.Second),
				ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC},
				LoadAssignment:       &endpointv3.ClusterLoadAssignment{ClusterName: "mtls"},
				TransportSocket:      &corev3.TransportSocket{Name: "envoy.transport_sockets.tls", ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: utc}}}},
		}
	}
	cp.set(t, "1", res())
	p := servertest.Start(t, xdsBootstrap(cp.port, "GRPC"))
	p.WaitStat("cluster_manager.warming_clusters", 1)
	if p.Stat("cluster_manager.active_clusters") != 1 { // the static xds cluster only
		t.Errorf("active_clusters = %d while the secret is missing", p.Stat("cluster_manager.active_clusters"))
	}
	cp.set(t, "2", res(certSecret("client-cert", leaf)))
	p.WaitStat("cluster_manager.warming_clusters", 0)
	p.WaitStat("cluster_manager.active_clusters", 2)
	p.WaitStat("cluster.mtls.client_ssl_socket_factory.ssl_context_update_by_sds", 1)
	_, certs := p.Admin("GET", "/certs")
	if !strings.Contains(certs, `"uri": "spiffe://td/ns/a/sa/client"`) {
		t.Errorf("/certs lacks the client certificate:\n%s", certs)
	}
}
