package server_test

import (
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/outrider-proxy/outrider/proxy/server/servertest"
)

// A cluster changed over CDS keeps what the old version knew about its
// unchanged endpoint: the host healthy by active health checking serves at
// once (the new version warms without waiting for a first check, which here
// would hang), and the pooled upstream TLS connection moves to the new
// version unless the TLS settings changed, in which case it is re-dialed.
// Every request during the change succeeds.
func TestChangedClusterKeepsHealthAndConnections(t *testing.T) {
	ca := servertest.NewCA(t, "up-ca")
	leaf := ca.Issue(t, []string{"backend.test"})
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, ca.PEM, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		change func(*clusterv3.Cluster)
		redial bool
	}{
		{"connect_timeout", func(c *clusterv3.Cluster) { c.ConnectTimeout = durationpb.New(2 * time.Second) }, false},
		{"tls settings", func(c *clusterv3.Cluster) {
			c.ConnectTimeout = durationpb.New(2 * time.Second)
			c.TransportSocket = upstreamTLS(t, caFile, "backend")
		}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var accepts atomic.Int64
			up := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
			up.TLS = &tls.Config{Certificates: []tls.Certificate{leaf.TLS}}
			up.Config.ConnState = func(_ net.Conn, s http.ConnState) {
				if s == http.StateNew {
					accepts.Add(1)
				}
			}
			up.StartTLS()
			t.Cleanup(up.Close)
			var stall atomic.Bool
			release := make(chan struct{}) // closed before the proxy stops
			hc := startUpstream(t, func(w http.ResponseWriter, r *http.Request) {
				if stall.Load() {
					select { // a check that never answers in time
					case <-r.Context().Done():
					case <-release:
					case <-time.After(10 * time.Second):
					}
				}
			})

			cp := startControlPlane(t)
			port := servertest.DeadPort(t)
			build := func(change func(*clusterv3.Cluster)) map[resourcev3.Type][]types.Resource {
				res := xdsResources(t, port, up.Listener.Addr().(*net.TCPAddr).Port, toCluster())
				cl := res[resourcev3.ClusterType][0].(*clusterv3.Cluster)
				cl.TransportSocket = upstreamTLS(t, caFile, "backend.test")
				cl.HealthChecks = []*corev3.HealthCheck{{
					Timeout: durationpb.New(10 * time.Second), Interval: durationpb.New(50 * time.Millisecond),
					NoTrafficInterval:  durationpb.New(50 * time.Millisecond),
					UnhealthyThreshold: wrapperspb.UInt32(3), HealthyThreshold: wrapperspb.UInt32(1),
					HealthChecker: &corev3.HealthCheck_HttpHealthCheck_{HttpHealthCheck: &corev3.HealthCheck_HttpHealthCheck{Path: "/health"}},
				}}
				ep := res[resourcev3.EndpointType][0].(*endpointv3.ClusterLoadAssignment).Endpoints[0].LbEndpoints[0].GetEndpoint()
				ep.HealthCheckConfig = &endpointv3.Endpoint_HealthCheckConfig{PortValue: uint32(hc.port())}
				if change != nil {
					change(cl)
				}
				return res
			}
			cp.set(t, "1", build(nil))
			p := servertest.Start(t, xdsBootstrap(cp.port, "GRPC"))
			t.Cleanup(func() { close(release) })

			client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1}, Timeout: 5 * time.Second}
			get := func() string {
				resp, err := client.Get(fmt.Sprintf("http://127.0.0.1:%d/", port))
				if err != nil {
					return err.Error()
				}
				defer resp.Body.Close()
				b, _ := io.ReadAll(resp.Body)
				return fmt.Sprintf("%d %s", resp.StatusCode, b)
			}
			eventually(t, "served through the healthy cluster", get, "200 ok")
			if n := accepts.Load(); n != 1 {
				t.Fatalf("%d upstream connections before the change, want 1", n)
			}

			stall.Store(true) // the new version's first checks would hang
			cp.set(t, "2", build(tc.change))
			active := func() bool {
				_, body := p.Admin("GET", "/config_dump?resource=dynamic_active_clusters")
				return strings.Contains(body, `"connect_timeout":"2s"`) || strings.Contains(body, `"connect_timeout": "2s"`)
			}
			deadline := time.Now().Add(5 * time.Second) // well under the 10 s check timeout
			for n := 0; !active(); n++ {
				if time.Now().After(deadline) || n > 500 {
					t.Fatalf("the changed cluster did not replace the old one while its checks hang (warming_clusters %d)",
						p.Stat("cluster_manager.warming_clusters"))
				}
				if got := get(); got != "200 ok" {
					t.Fatalf("request during the change: %q", got)
				}
			}
			for range 5 {
				if got := get(); got != "200 ok" {
					t.Fatalf("request after the change: %q", got)
				}
			}
			want := int64(1)
			if tc.redial {
				want = 2
			}
			if n := accepts.Load(); n != want {
				t.Errorf("%d upstream connections after the change, want %d", n, want)
			}
			if n := p.Stat("cluster.svc.upstream_cx_total"); n != want {
				t.Errorf("upstream_cx_total = %d, want %d", n, want)
			}
			p.WaitStat("cluster.svc.upstream_cx_active", 1) // a replaced connection closes once released
			if g := p.Stat("cluster.svc.health_check.healthy"); g != 1 {
				t.Errorf("health_check.healthy = %d, want 1", g)
			}
		})
	}
}

// upstreamTLS is a TLS transport socket trusting caFile and requiring a DNS
// SAN with the given prefix, with SNI backend.test.
func upstreamTLS(t *testing.T, caFile, sanPrefix string) *corev3.TransportSocket {
	t.Helper()
	utc, err := anypb.New(&tlsv3.UpstreamTlsContext{Sni: "backend.test", CommonTlsContext: &tlsv3.CommonTlsContext{
		ValidationContextType: &tlsv3.CommonTlsContext_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
			TrustedCa: &corev3.DataSource{Specifier: &corev3.DataSource_Filename{Filename: caFile}},
			MatchTypedSubjectAltNames: []*tlsv3.SubjectAltNameMatcher{{
				SanType: tlsv3.SubjectAltNameMatcher_DNS,
				Matcher: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: sanPrefix}},
			}},
		}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	return &corev3.TransportSocket{Name: "envoy.transport_sockets.tls", ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: utc}}
}
