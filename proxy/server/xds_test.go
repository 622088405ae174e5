package server_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	routeservice "github.com/envoyproxy/go-control-plane/envoy/service/route/v3"
	secretv3 "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/outrider-proxy/outrider/proxy/server/servertest"
)

const xdsNode = "outrider-test"

// controlPlane is go-control-plane's real server with a snapshot cache, on
// 127.0.0.1:0, recording the error_detail of every NACK.
type controlPlane struct {
	cache cachev3.SnapshotCache
	port  int
	mu    sync.Mutex
	nacks []string
}

func startControlPlane(t *testing.T, opts ...grpc.ServerOption) *controlPlane {
	cp := &controlPlane{cache: cachev3.NewSnapshotCache(true, cachev3.IDHash{}, nil)}
	record := func(detail string) {
		cp.mu.Lock()
		cp.nacks = append(cp.nacks, detail)
		cp.mu.Unlock()
	}
	cb := serverv3.CallbackFuncs{
		StreamRequestFunc: func(_ int64, r *discoveryv3.DiscoveryRequest) error {
			if r.GetErrorDetail() != nil {
				record(r.GetErrorDetail().GetMessage())
			}
			return nil
		},
		StreamDeltaRequestFunc: func(_ int64, r *discoveryv3.DeltaDiscoveryRequest) error {
			if r.GetErrorDetail() != nil {
				record(r.GetErrorDetail().GetMessage())
			}
			return nil
		},
	}
	srv := serverv3.NewServer(context.Background(), cp.cache, cb)
	gs := grpc.NewServer(opts...)
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(gs, srv)
	secretv3.RegisterSecretDiscoveryServiceServer(gs, srv)
	// The per-type route services too (RDS, SRDS and VHDS, which is delta
	// only), as go-control-plane's conformance run serves them.
	routeservice.RegisterRouteDiscoveryServiceServer(gs, srv)
	routeservice.RegisterScopedRoutesDiscoveryServiceServer(gs, srv)
	routeservice.RegisterVirtualHostDiscoveryServiceServer(gs, srv)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cp.port = ln.Addr().(*net.TCPAddr).Port
	go gs.Serve(ln)
	t.Cleanup(gs.Stop)
	return cp
}

func (cp *controlPlane) set(t *testing.T, version string, res map[resourcev3.Type][]types.Resource) {
	t.Helper()
	snap, err := cachev3.NewSnapshot(version, res)
	if err != nil {
		t.Fatal(err)
	}
	if err := cp.cache.SetSnapshot(context.Background(), xdsNode, snap); err != nil {
		t.Fatal(err)
	}
}

func (cp *controlPlane) nacked() []string {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	return append([]string(nil), cp.nacks...)
}

// xdsResources is a listener on port with RDS "local", the route table,
// and the EDS cluster "svc" with one endpoint at upPort.
func xdsResources(t *testing.T, port, upPort int, route *routev3.Route) map[resourcev3.Type][]types.Resource {
	router, _ := anypb.New(&routerv3.Router{})
	hcm, err := anypb.New(&hcmv3.HttpConnectionManager{
		StatPrefix: "dyn",
		RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{
			RouteConfigName: "local",
			ConfigSource:    &corev3.ConfigSource{ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}}, ResourceApiVersion: corev3.ApiVersion_V3},
		}},
		HttpFilters: []*hcmv3.HttpFilter{{Name: "envoy.filters.http.router", ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: router}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	addr := func(p int) *corev3.Address {
		return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
			Address: "127.0.0.1", PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: uint32(p)}}}}
	}
	ads := &corev3.ConfigSource{ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}}, ResourceApiVersion: corev3.ApiVersion_V3}
	return map[resourcev3.Type][]types.Resource{
		resourcev3.ListenerType: {&listenerv3.Listener{
			Name: "dyn", Address: addr(port),
			FilterChains: []*listenerv3.FilterChain{{Filters: []*listenerv3.Filter{{
				Name: "envoy.filters.network.http_connection_manager", ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: hcm}}}}},
		}},
		resourcev3.RouteType: {&routev3.RouteConfiguration{Name: "local", VirtualHosts: []*routev3.VirtualHost{{
			Name: "vh", Domains: []string{"*"}, Routes: []*routev3.Route{route}}}}},
		resourcev3.ClusterType: {&clusterv3.Cluster{
			Name: "svc", ConnectTimeout: durationpb.New(time.Second),
			ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
			EdsClusterConfig:     &clusterv3.Cluster_EdsClusterConfig{EdsConfig: ads},
		}},
		resourcev3.EndpointType: {&endpointv3.ClusterLoadAssignment{ClusterName: "svc", Endpoints: []*endpointv3.LocalityLbEndpoints{{
			LbEndpoints: []*endpointv3.LbEndpoint{{HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{Address: addr(upPort)}}}},
		}}}},
	}
}

func toCluster() *routev3.Route {
	return &routev3.Route{
		Match:  &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
		Action: &routev3.Route_Route{Route: &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: "svc"}}},
	}
}

func direct(body string) *routev3.Route {
	return &routev3.Route{
		Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
		Action: &routev3.Route_DirectResponse{DirectResponse: &routev3.DirectResponseAction{Status: 200,
			Body: &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: body}}}},
	}
}

// eventually polls fetch until it returns want, for at most 15 s (the race
// detector on a busy CI machine is slow).
func eventually(t *testing.T, what string, fetch func() string, want string) {
	t.Helper()
	var got string
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if got = fetch(); got == want {
			return
		}
	}
	t.Fatalf("%s: got %q, want %q", what, got, want)
}

func xdsBootstrap(cpPort int, apiType string) string {
	return fmt.Sprintf(`
node: {id: %s, cluster: test}
admin: {address: {socket_address: {address: 127.0.0.1, port_value: 0}}}
dynamic_resources:
  ads_config:
    api_type: %s
    transport_api_version: V3
    grpc_services: [{envoy_grpc: {cluster_name: xds}}]
  cds_config: {ads: {}, resource_api_version: V3}
  lds_config: {ads: {}, resource_api_version: V3}
static_resources:
  clusters:
  - name: xds
    type: STATIC
    connect_timeout: 1s
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {http2_protocol_options: {}}
    load_assignment:
      cluster_name: xds
      endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: %d}}}}]}]
`, xdsNode, apiType, cpPort)
}

// Everything comes from a real go-control-plane server over ADS, in state
// of the world and in delta: the listener, its routes (RDS), the cluster
// (CDS) and its endpoints (EDS). Updates apply to new requests without
// closing connections; an invalid update is NACKed naming the resource and
// the last good version keeps serving.
func TestXDSFromControlPlane(t *testing.T) {
	for _, apiType := range []string{"GRPC", "DELTA_GRPC"} {
		t.Run(apiType, func(t *testing.T) {
			cp := startControlPlane(t)
			up := startUpstream(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "from upstream") })
			port := servertest.DeadPort(t)
			cp.set(t, "1", xdsResources(t, port, up.port(), toCluster()))
			p := servertest.Start(t, xdsBootstrap(cp.port, apiType))

			client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1}, Timeout: 2 * time.Second}
			get := func() string {
				resp, err := client.Get(fmt.Sprintf("http://127.0.0.1:%d/", port))
				if err != nil {
					return err.Error()
				}
				defer resp.Body.Close()
				b, _ := io.ReadAll(resp.Body)
				return fmt.Sprintf("%d %s", resp.StatusCode, b)
			}
			eventually(t, "v1 through LDS, RDS, CDS and EDS", get, "200 from upstream")
			accepts := len(up.accepts)

			cp.set(t, "2", xdsResources(t, port, up.port(), direct("v2")))
			eventually(t, "v2 route", get, "200 v2")
			if p.Stat("http.dyn.downstream_cx_total") != 1 {
				t.Errorf("a route update closed the client connection: %d connections", p.Stat("http.dyn.downstream_cx_total"))
			}

			bad := direct("v3")
			bad.Match = &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: "a("}}}
			cp.set(t, "3", xdsResources(t, port, up.port(), bad))
			deadline := time.Now().Add(5 * time.Second)
			for len(cp.nacked()) == 0 && time.Now().Before(deadline) {
				time.Sleep(20 * time.Millisecond)
			}
			if n := cp.nacked(); len(n) == 0 || !strings.Contains(n[0], `route configuration "local"`) || !strings.Contains(n[0], "safe_regex") {
				t.Fatalf("NACK error_detail %q, want one naming the route configuration and the field", n)
			}
			if got := get(); got != "200 v2" {
				t.Fatalf("after a NACK: %q, want the last good version", got)
			}

			cp.set(t, "4", xdsResources(t, port, up.port(), toCluster()))
			eventually(t, "back to the cluster", get, "200 from upstream")
			if len(up.accepts) != accepts {
				t.Errorf("the unchanged cluster's pool was not kept: %d upstream connections, had %d", len(up.accepts), accepts)
			}

			// A removed listener stops accepting.
			res := xdsResources(t, port, up.port(), toCluster())
			delete(res, resourcev3.ListenerType)
			cp.set(t, "5", res)
			client.CloseIdleConnections()
			eventually(t, "listener removed", func() string {
				c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), time.Second)
				if err != nil {
					return "refused"
				}
				c.Close()
				return "accepted"
			}, "refused")
			if p.Stat("control_plane.connected_state") != 1 {
				t.Errorf("control_plane.connected_state = %d", p.Stat("control_plane.connected_state"))
			}
		})
	}
}

// The management server can be reached over TLS: the xds cluster's
// UpstreamTlsContext wraps the gRPC connection (ALPN h2, as gRPC requires).
func TestXDSOverTLS(t *testing.T) {
	ca := servertest.NewCA(t, "xds-ca")
	leaf := ca.Issue(t, []string{"xds.test"})
	cp := startControlPlane(t, grpc.Creds(credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{leaf.TLS}})))
	up := startUpstream(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "over tls") })
	port := servertest.DeadPort(t)
	cp.set(t, "1", xdsResources(t, port, up.port(), toCluster()))
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	os.WriteFile(caFile, ca.PEM, 0o600)
	yaml := strings.Replace(xdsBootstrap(cp.port, "GRPC"), "    load_assignment:\n      cluster_name: xds", fmt.Sprintf(`    transport_socket:
      name: envoy.transport_sockets.tls
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
        sni: xds.test
        common_tls_context:
          alpn_protocols: [h2]
          validation_context: {trusted_ca: {filename: %s}}
    load_assignment:
      cluster_name: xds`, caFile), 1)
	servertest.Start(t, yaml)
	eventually(t, "config over TLS", func() string {
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/", port))
		if err != nil {
			return err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}, "over tls")
}
