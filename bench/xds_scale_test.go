package bench

import (
	"context"
	"fmt"
	"net"
	"os"
	"runtime"
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
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/outrider-proxy/outrider/proxy/server/servertest"
	"github.com/outrider-proxy/outrider/telemetry/stats"
)

// The scale the xDS issue sets: 10,000 EDS clusters of 10 endpoints each,
// 10,000 routes in 100 route configurations served by 100 listeners.
const (
	scaleClusters  = 10000
	scaleEndpoints = 10
	scaleRouteCfgs = 100
)

// scaleSnapshot builds the resources; timeout is every cluster's
// connect_timeout, except changed's (a cluster name) which gets 2 s.
func scaleSnapshot(tb testing.TB, version string, changed string) *cachev3.Snapshot {
	ads := &corev3.ConfigSource{ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}}, ResourceApiVersion: corev3.ApiVersion_V3}
	addr := func(ip string, p int) *corev3.Address {
		return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
			Address: ip, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: uint32(p)}}}}
	}
	res := map[resourcev3.Type][]types.Resource{}
	for i := range scaleClusters {
		name := fmt.Sprintf("svc-%05d", i)
		timeout := time.Second
		if name == changed {
			timeout = 2 * time.Second
		}
		res[resourcev3.ClusterType] = append(res[resourcev3.ClusterType], &clusterv3.Cluster{
			Name: name, ConnectTimeout: durationpb.New(timeout),
			ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
			EdsClusterConfig:     &clusterv3.Cluster_EdsClusterConfig{EdsConfig: ads},
		})
		eps := make([]*endpointv3.LbEndpoint, scaleEndpoints)
		for j := range eps {
			eps[j] = &endpointv3.LbEndpoint{HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
				Address: addr(fmt.Sprintf("10.%d.%d.%d", i/256%256, i%256, j+1), 8080)}}}
		}
		res[resourcev3.EndpointType] = append(res[resourcev3.EndpointType], &endpointv3.ClusterLoadAssignment{
			ClusterName: name, Endpoints: []*endpointv3.LocalityLbEndpoints{{LbEndpoints: eps}}})
	}
	router, _ := anypb.New(&routerv3.Router{})
	perCfg := scaleClusters / scaleRouteCfgs
	for r := range scaleRouteCfgs {
		rcName := fmt.Sprintf("routes-%03d", r)
		var vhs []*routev3.VirtualHost
		for k := range perCfg {
			c := fmt.Sprintf("svc-%05d", r*perCfg+k)
			vhs = append(vhs, &routev3.VirtualHost{Name: c, Domains: []string{c + ".mesh"}, Routes: []*routev3.Route{{
				Match:  &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
				Action: &routev3.Route_Route{Route: &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: c}}},
			}}})
		}
		res[resourcev3.RouteType] = append(res[resourcev3.RouteType], &routev3.RouteConfiguration{Name: rcName, VirtualHosts: vhs})
		hcm, err := anypb.New(&hcmv3.HttpConnectionManager{
			StatPrefix:     rcName,
			RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{RouteConfigName: rcName, ConfigSource: ads}},
			HttpFilters:    []*hcmv3.HttpFilter{{Name: "envoy.filters.http.router", ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: router}}},
		})
		if err != nil {
			tb.Fatal(err)
		}
		res[resourcev3.ListenerType] = append(res[resourcev3.ListenerType], &listenerv3.Listener{
			Name: rcName, Address: addr("127.0.0.1", 0),
			FilterChains: []*listenerv3.FilterChain{{Filters: []*listenerv3.Filter{{
				Name: "envoy.filters.network.http_connection_manager", ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: hcm}}}}},
		})
	}
	snap, err := cachev3.NewSnapshot(version, res)
	if err != nil {
		tb.Fatal(err)
	}
	return snap
}

// startScaleCP serves cache with go-control-plane's ADS server on 127.0.0.1:0.
func startScaleCP(tb testing.TB, cache cachev3.SnapshotCache) int {
	srv := serverv3.NewServer(context.Background(), cache, nil)
	gs := grpc.NewServer(grpc.MaxRecvMsgSize(1 << 30))
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(gs, srv)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	go gs.Serve(ln)
	tb.Cleanup(gs.Stop)
	return ln.Addr().(*net.TCPAddr).Port
}

func scaleBootstrap(cpPort int, apiType string) string {
	return fmt.Sprintf(`
node: {id: scale, cluster: bench}
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
`, apiType, cpPort)
}

// waitFor polls cond every 5 ms for at most a minute.
func waitFor(tb testing.TB, what string, cond func() bool) {
	for deadline := time.Now().Add(time.Minute); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out waiting for %s", what)
		}
	}
}

// stat is a counter or gauge of p, 0 while it does not exist.
func stat(p *servertest.Proxy, name string) int64 {
	v, _ := p.Srv.Stats().Value(name)
	return v
}

func heapInUse() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse
}

// BenchmarkXDSScale: a cold start from one ADS push of 10,000 clusters
// (10 endpoints each), 100 listeners and 100 route configurations of 100
// virtual hosts, timed until every cluster and listener is active and every
// route configuration applied; then one changed cluster on top, timed until
// it is in service. Reports cold-ms, incremental-ms (of which cp-ms is
// go-control-plane's SetSnapshot, diffing and hashing on the same cores)
// and heap bytes per
// cluster (the proxy's heap growth, endpoints and routes included, divided
// by the cluster count). Run with -benchtime=1x; state of the world (GRPC)
// and incremental (DELTA_GRPC) ADS. SCALE_HEAPPROFILE=file writes a heap
// profile right after the cold start (go tool pprof -sample_index=inuse_space).
func BenchmarkXDSScale(b *testing.B) {
	for _, api := range []string{"GRPC", "DELTA_GRPC"} {
		b.Run(api, func(b *testing.B) { benchScale(b, api) })
	}
}

func benchScale(b *testing.B, apiType string) {
	for range b.N {
		b.StopTimer()
		cache := cachev3.NewSnapshotCache(true, cachev3.IDHash{}, nil)
		if err := cache.SetSnapshot(context.Background(), "scale", scaleSnapshot(b, "1", "")); err != nil {
			b.Fatal(err)
		}
		port := startScaleCP(b, cache)
		before := heapInUse()
		b.StartTimer()

		start := time.Now()
		p := servertest.Start(b, scaleBootstrap(port, apiType))
		waitFor(b, "clusters active", func() bool { return stat(p, "cluster_manager.active_clusters") == scaleClusters+1 })
		waitFor(b, "listeners active", func() bool { return stat(p, "listener_manager.total_listeners_active") == scaleRouteCfgs })
		waitFor(b, "routes applied", func() bool {
			for r := range scaleRouteCfgs {
				if stat(p, fmt.Sprintf("http.routes-%03d.rds.routes-%03d.update_success", r, r)) == 0 {
					return false
				}
			}
			return true
		})
		cold := time.Since(start)
		b.StopTimer()
		after := heapInUse()
		if path := os.Getenv("SCALE_HEAPPROFILE"); path != "" {
			writeHeapProfile(b, path) // right after the cold start
		}

		modified := stat(p, "cluster_manager.cluster_modified")
		cdsApply := p.Srv.Stats().Histogram("cluster_manager.cds.update_duration", stats.Milliseconds)
		cdsApplied := cdsApply.Sum()
		next := scaleSnapshot(b, "2", "svc-04242")
		start = time.Now()
		if err := cache.SetSnapshot(context.Background(), "scale", next); err != nil {
			b.Fatal(err)
		}
		cpTime := time.Since(start)
		waitFor(b, "the changed cluster", func() bool {
			return stat(p, "cluster_manager.cluster_modified") == modified+1 && stat(p, "cluster_manager.warming_clusters") == 0
		})
		incr := time.Since(start)

		b.ReportMetric(float64(cold.Milliseconds()), "cold-ms")
		b.ReportMetric(float64(incr.Microseconds())/1000, "incremental-ms")
		b.ReportMetric(float64(cpTime.Microseconds())/1000, "cp-ms")
		// The proxy's own time for the CDS response of the change, from its
		// arrival to its acceptance (cluster_manager.cds.update_duration).
		b.ReportMetric(float64(cdsApply.Sum()-cdsApplied), "cds-apply-ms")
		p.Srv.Shutdown()
		time.Sleep(100 * time.Millisecond) // let the goroutines of the drained clusters end
		released := heapInUse()
		b.ReportMetric(float64(after-min(before, released))/scaleClusters, "heap-B/cluster")
		b.StartTimer()
	}
}
