package server_test

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/outrider-proxy/outrider/proxy/server/servertest"
)

// loadState is one version of the configuration TestXDSUpdatesUnderLoad
// pushes: which listener stat prefix, which clusters with which endpoints,
// and where the route sends requests.
type loadState struct {
	prefix   string           // the HCM stat_prefix: changing it changes the filter chain
	clusters map[string][]int // cluster name → endpoint ports
	timeout  time.Duration    // every cluster's connect_timeout: changing it changes the clusters
	route    map[string]uint32
}

func (s loadState) resources(t *testing.T, port int) map[resourcev3.Type][]types.Resource {
	ads := &corev3.ConfigSource{ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}}, ResourceApiVersion: corev3.ApiVersion_V3}
	addr := func(p int) *corev3.Address {
		return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
			Address: "127.0.0.1", PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: uint32(p)}}}}
	}
	router, _ := anypb.New(&routerv3.Router{})
	hcm, err := anypb.New(&hcmv3.HttpConnectionManager{
		StatPrefix:     s.prefix,
		RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{RouteConfigName: "load", ConfigSource: ads}},
		HttpFilters:    []*hcmv3.HttpFilter{{Name: "envoy.filters.http.router", ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: router}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	res := map[resourcev3.Type][]types.Resource{
		resourcev3.ListenerType: {&listenerv3.Listener{
			Name: "load", Address: addr(port),
			FilterChains: []*listenerv3.FilterChain{{Filters: []*listenerv3.Filter{{
				Name: "envoy.filters.network.http_connection_manager", ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: hcm}}}}},
		}},
	}
	for name, ports := range s.clusters {
		res[resourcev3.ClusterType] = append(res[resourcev3.ClusterType], &clusterv3.Cluster{
			Name: name, ConnectTimeout: durationpb.New(s.timeout),
			ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
			EdsClusterConfig:     &clusterv3.Cluster_EdsClusterConfig{EdsConfig: ads},
		})
		var eps []*endpointv3.LbEndpoint
		for _, p := range ports {
			eps = append(eps, &endpointv3.LbEndpoint{HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{Address: addr(p)}}})
		}
		res[resourcev3.EndpointType] = append(res[resourcev3.EndpointType], &endpointv3.ClusterLoadAssignment{
			ClusterName: name, Endpoints: []*endpointv3.LocalityLbEndpoints{{LbEndpoints: eps}}})
	}
	action := &routev3.RouteAction{}
	if len(s.route) == 1 {
		for c := range s.route {
			action.ClusterSpecifier = &routev3.RouteAction_Cluster{Cluster: c}
		}
	} else {
		wc := &routev3.WeightedCluster{}
		for c, w := range s.route {
			wc.Clusters = append(wc.Clusters, &routev3.WeightedCluster_ClusterWeight{Name: c, Weight: wrapperspb.UInt32(w)})
		}
		action.ClusterSpecifier = &routev3.RouteAction_WeightedClusters{WeightedClusters: wc}
	}
	res[resourcev3.RouteType] = []types.Resource{&routev3.RouteConfiguration{Name: "load", VirtualHosts: []*routev3.VirtualHost{{
		Name: "vh", Domains: []string{"*"}, Routes: []*routev3.Route{{
			Match:  &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
			Action: &routev3.Route_Route{Route: action},
		}}}}}}
	return res
}

// Routes, clusters, endpoints and the listener change while clients keep
// sending requests over keep-alive connections: not one request fails. The
// changes cover a route moving between clusters, endpoints added and removed
// (connections to removed hosts drain), a changed cluster (which warms while
// the old one serves), a changed filter chain (whose connections drain with
// Connection: close, on a listen socket the new listener takes over),
// weighted clusters, a new cluster routed to once it is there (make before
// break, as control planes order it), and removed clusters no longer routed
// to.
func TestXDSUpdatesUnderLoad(t *testing.T) {
	for _, apiType := range []string{"GRPC", "DELTA_GRPC"} {
		t.Run(apiType, func(t *testing.T) {
			var ups [5]*upstream
			var ports [5]int
			for i := range ups {
				name := fmt.Sprintf("up%d", i)
				ups[i] = startUpstream(t, func(w http.ResponseWriter, r *http.Request) {
					io.Copy(io.Discard, r.Body)
					io.WriteString(w, name)
				})
				ports[i] = ups[i].port()
			}
			versions := []loadState{
				{prefix: "v1", timeout: time.Second, clusters: map[string][]int{"a": {ports[0]}, "b": {ports[1]}}, route: map[string]uint32{"a": 1}},
				{prefix: "v1", timeout: time.Second, clusters: map[string][]int{"a": {ports[0]}, "b": {ports[1]}}, route: map[string]uint32{"b": 1}},
				{prefix: "v1", timeout: time.Second, clusters: map[string][]int{"a": {ports[0]}, "b": {ports[1], ports[2]}}, route: map[string]uint32{"b": 1}},
				{prefix: "v1", timeout: time.Second, clusters: map[string][]int{"a": {ports[0]}, "b": {ports[2]}}, route: map[string]uint32{"b": 1}},
				{prefix: "v1", timeout: 2 * time.Second, clusters: map[string][]int{"a": {ports[0]}, "b": {ports[2]}}, route: map[string]uint32{"b": 1}},
				{prefix: "v2", timeout: 2 * time.Second, clusters: map[string][]int{"a": {ports[0]}, "b": {ports[2]}}, route: map[string]uint32{"a": 1, "b": 1}},
				{prefix: "v2", timeout: 2 * time.Second, clusters: map[string][]int{"a": {ports[0]}, "b": {ports[2]}, "c": {ports[3], ports[4]}}, route: map[string]uint32{"a": 1, "b": 1}},
				{prefix: "v2", timeout: 2 * time.Second, clusters: map[string][]int{"a": {ports[0]}, "b": {ports[2]}, "c": {ports[3], ports[4]}}, route: map[string]uint32{"c": 1}},
				{prefix: "v3", timeout: 2 * time.Second, clusters: map[string][]int{"c": {ports[3], ports[4]}}, route: map[string]uint32{"c": 1}},
			}

			cp := startControlPlane(t)
			port := servertest.DeadPort(t)
			cp.set(t, "1", versions[0].resources(t, port))
			p := servertest.Start(t, xdsBootstrap(cp.port, apiType))
			url := fmt.Sprintf("http://127.0.0.1:%d/", port)
			eventually(t, "v1 serving", func() string {
				resp, err := http.Get(url)
				if err != nil {
					return err.Error()
				}
				resp.Body.Close()
				return resp.Status
			}, "200 OK")

			// The load: 4 keep-alive clients, each bounded to 6,000 requests and
			// stopped when the updates are done. POSTs with a body, which a
			// client may not silently retry, so a connection closed under a
			// request is a failure here.
			const clients, perClient = 4, 6000
			var (
				stop, phase  atomic.Int64
				sent, failed atomic.Int64
				mu           sync.Mutex
				firstErrs    []string
				wg           sync.WaitGroup
			)
			for range clients {
				wg.Add(1)
				go func() {
					defer wg.Done()
					c := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1, DisableCompression: true}, Timeout: 5 * time.Second}
					defer c.CloseIdleConnections()
					for i := 0; i < perClient && stop.Load() == 0; i++ {
						sent.Add(1)
						resp, err := c.Post(url, "text/plain", strings.NewReader("payload"))
						var msg string
						if err != nil {
							msg = err.Error()
						} else {
							b, _ := io.ReadAll(resp.Body)
							resp.Body.Close()
							if resp.StatusCode != 200 {
								msg = fmt.Sprintf("%s: %s", resp.Status, b)
							}
						}
						if msg != "" {
							failed.Add(1)
							mu.Lock()
							if len(firstErrs) < 5 {
								firstErrs = append(firstErrs, fmt.Sprintf("at version %d: %s", phase.Load(), msg))
							}
							mu.Unlock()
						}
					}
				}()
			}

			for i, v := range versions[1:] {
				time.Sleep(250 * time.Millisecond)
				cp.set(t, fmt.Sprint(i+2), v.resources(t, port))
				phase.Store(int64(i + 2))
			}
			// The last version is in force: cluster "a" and "b" are gone, c serves.
			p.WaitStat("cluster_manager.active_clusters", 2) // xds and c
			eventually(t, "the last version serving", func() string {
				resp, err := http.Get(url)
				if err != nil {
					return err.Error()
				}
				defer resp.Body.Close()
				b, _ := io.ReadAll(resp.Body)
				if s := string(b); s == "up3" || s == "up4" {
					return "c"
				}
				return string(b)
			}, "c")
			time.Sleep(200 * time.Millisecond)
			stop.Store(1)
			wg.Wait()

			if n := failed.Load(); n > 0 {
				t.Fatalf("%d of %d requests failed during updates; first: %q", n, sent.Load(), firstErrs)
			}
			if sent.Load() < 100 {
				t.Fatalf("only %d requests were sent: the load did not run alongside the updates", sent.Load())
			}
			t.Logf("%d requests, none failed", sent.Load())
		})
	}
}
