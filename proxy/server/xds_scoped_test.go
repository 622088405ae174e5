package server_test

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/outrider-proxy/outrider/proxy/server/servertest"
)

var adsSource = &corev3.ConfigSource{ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}}, ResourceApiVersion: corev3.ApiVersion_V3}

// deltaSource is a per-type DELTA_GRPC source on the xds cluster.
var deltaSource = &corev3.ConfigSource{ResourceApiVersion: corev3.ApiVersion_V3,
	ConfigSourceSpecifier: &corev3.ConfigSource_ApiConfigSource{ApiConfigSource: &corev3.ApiConfigSource{
		ApiType: corev3.ApiConfigSource_DELTA_GRPC, TransportApiVersion: corev3.ApiVersion_V3,
		GrpcServices: []*corev3.GrpcService{{TargetSpecifier: &corev3.GrpcService_EnvoyGrpc_{
			EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{ClusterName: "xds"}}}},
	}}}

// hcmListener is listener name on port whose connection manager (stat
// prefix "dyn") uses spec.
func hcmListener(t *testing.T, name string, port int, spec func(*hcmv3.HttpConnectionManager)) *listenerv3.Listener {
	router, _ := anypb.New(&routerv3.Router{})
	h := &hcmv3.HttpConnectionManager{StatPrefix: "dyn",
		HttpFilters: []*hcmv3.HttpFilter{{Name: "envoy.filters.http.router", ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: router}}}}
	spec(h)
	a, err := anypb.New(h)
	if err != nil {
		t.Fatal(err)
	}
	return &listenerv3.Listener{Name: name, Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address: "127.0.0.1", PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: uint32(port)}}}},
		FilterChains: []*listenerv3.FilterChain{{Filters: []*listenerv3.Filter{{
			Name: "envoy.filters.network.http_connection_manager", ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: a}}}}}}
}

// withCluster adds xdsResources' EDS cluster "svc" to res: go-control-plane's
// snapshot cache may leave a wildcard CDS request with no clusters
// unanswered, which would hold LDS until the initial fetch timeout.
func withCluster(t *testing.T, res map[resourcev3.Type][]types.Resource) map[resourcev3.Type][]types.Resource {
	base := xdsResources(t, servertest.DeadPort(t), servertest.DeadPort(t), toCluster())
	res[resourcev3.ClusterType] = base[resourcev3.ClusterType]
	res[resourcev3.EndpointType] = base[resourcev3.EndpointType]
	return res
}

func directRC(name, domain, body string) *routev3.RouteConfiguration {
	return &routev3.RouteConfiguration{Name: name, VirtualHosts: []*routev3.VirtualHost{directVH(name, domain, body)}}
}

func directVH(name, domain, body string) *routev3.VirtualHost {
	return &routev3.VirtualHost{Name: name, Domains: []string{domain}, Routes: []*routev3.Route{direct(body)}}
}

func scope(name, rc string, key string) *routev3.ScopedRouteConfiguration {
	return &routev3.ScopedRouteConfiguration{Name: name, RouteConfigurationName: rc, Key: &routev3.ScopedRouteConfiguration_Key{
		Fragments: []*routev3.ScopedRouteConfiguration_Key_Fragment{{Type: &routev3.ScopedRouteConfiguration_Key_Fragment_StringKey{StringKey: key}}}}}
}

// getHost sends GET / with the Host header to port and returns "status body".
func getHost(client *http.Client, port int, host string) string {
	req, _ := http.NewRequest("GET", fmt.Sprintf("http://127.0.0.1:%d/", port), nil)
	req.Host = host
	resp, err := client.Do(req)
	if err != nil {
		return err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return fmt.Sprintf("%d %s", resp.StatusCode, b)
}

func waitNACK(t *testing.T, cp *controlPlane, want string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		for _, n := range cp.nacked() {
			if strings.Contains(n, want) {
				return
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("no NACK containing %q; NACKs: %q", want, cp.nacked())
}

// Scoped routes over SRDS (ADS, SotW and delta), as go-control-plane's
// conformance run configures them: the Host header is the scope key, each
// scope names a route configuration fetched over RDS. A request whose key
// has no scope gets 404 NR; two scopes with one key are NACKed and the last
// good scopes keep serving.
func TestScopedRoutesFromControlPlane(t *testing.T) {
	for _, apiType := range []string{"GRPC", "DELTA_GRPC"} {
		t.Run(apiType, func(t *testing.T) {
			cp := startControlPlane(t)
			port := servertest.DeadPort(t)
			lis := hcmListener(t, "scoped", port, func(h *hcmv3.HttpConnectionManager) {
				h.RouteSpecifier = &hcmv3.HttpConnectionManager_ScopedRoutes{ScopedRoutes: &hcmv3.ScopedRoutes{
					Name: "by-host",
					ScopeKeyBuilder: &hcmv3.ScopedRoutes_ScopeKeyBuilder{Fragments: []*hcmv3.ScopedRoutes_ScopeKeyBuilder_FragmentBuilder{{
						Type: &hcmv3.ScopedRoutes_ScopeKeyBuilder_FragmentBuilder_HeaderValueExtractor_{
							HeaderValueExtractor: &hcmv3.ScopedRoutes_ScopeKeyBuilder_FragmentBuilder_HeaderValueExtractor{
								Name: "Host", ExtractType: &hcmv3.ScopedRoutes_ScopeKeyBuilder_FragmentBuilder_HeaderValueExtractor_Index{Index: 0}}}}}},
					RdsConfigSource: adsSource,
					ConfigSpecifier: &hcmv3.ScopedRoutes_ScopedRds{ScopedRds: &hcmv3.ScopedRds{ScopedRdsConfigSource: adsSource}},
				}}
			})
			res := func(scopes ...types.Resource) map[resourcev3.Type][]types.Resource {
				return withCluster(t, map[resourcev3.Type][]types.Resource{
					resourcev3.ListenerType:    {lis},
					resourcev3.ScopedRouteType: scopes,
					resourcev3.RouteType:       {directRC("rc-a", "*", "scope a"), directRC("rc-b", "*", "scope b")},
				})
			}
			cp.set(t, "1", res(scope("a", "rc-a", "a.test"), scope("b", "rc-b", "b.test")))
			p := servertest.Start(t, xdsBootstrap(cp.port, apiType))
			client := &http.Client{Timeout: 2 * time.Second}

			eventually(t, "scope a", func() string { return getHost(client, port, "a.test") }, "200 scope a")
			if got := getHost(client, port, "b.test"); got != "200 scope b" {
				t.Fatalf("scope b: %q", got)
			}
			if got := getHost(client, port, "c.test"); got != "404 " {
				t.Fatalf("no scope: %q, want 404", got)
			}
			p.WaitStat("http.dyn.scoped_rds.by-host.update_success", 1)
			p.WaitStat("http.dyn.rds.rc-a.update_success", 1)

			// A scope moves to another route configuration; one is removed.
			cp.set(t, "2", res(scope("a", "rc-b", "a.test")))
			eventually(t, "scope a on rc-b", func() string { return getHost(client, port, "a.test") }, "200 scope b")
			eventually(t, "scope b removed", func() string { return getHost(client, port, "b.test") }, "404 ")

			// Two scopes with one key: NACKed, the last good scopes stay.
			cp.set(t, "3", res(scope("a", "rc-a", "a.test"), scope("b", "rc-b", "a.test")))
			waitNACK(t, cp, "scope key conflict found, first scope is 'a', second scope is 'b'")
			// go-control-plane answers a NACK with the same snapshot again, so
			// the count keeps growing.
			if n := p.Stat("http.dyn.scoped_rds.by-host.update_rejected"); n < 1 {
				t.Fatalf("http.dyn.scoped_rds.by-host.update_rejected = %d after a NACK", n)
			}
			if got := getHost(client, port, "a.test"); got != "200 scope b" {
				t.Fatalf("after the NACK: %q, want the last good scopes", got)
			}

			code, body := p.Admin("GET", "/config_dump?resource=dynamic_scoped_route_configs")
			if code != 200 || !strings.Contains(body, `"name": "by-host"`) && !strings.Contains(body, `"name":"by-host"`) ||
				!strings.Contains(body, `"version_info": "2"`) && !strings.Contains(body, `"version_info":"2"`) {
				t.Fatalf("config_dump dynamic_scoped_route_configs: %d %s", code, body)
			}
		})
	}
}

// VHDS over a per-type delta source: the route configuration has no
// virtual hosts of its own and gets those named "<route config>/<host>"
// (only those), as go-control-plane's conformance run serves them. A VHDS
// update applies to new requests; vhds over ADS is refused as Envoy does.
func TestVHDSFromControlPlane(t *testing.T) {
	cp := startControlPlane(t)
	port := servertest.DeadPort(t)
	lis := hcmListener(t, "vhds", port, func(h *hcmv3.HttpConnectionManager) {
		h.RouteSpecifier = &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{RouteConfigName: "vr", ConfigSource: deltaSource}}
	})
	res := func(rc *routev3.RouteConfiguration, vhosts ...types.Resource) map[resourcev3.Type][]types.Resource {
		return withCluster(t, map[resourcev3.Type][]types.Resource{
			resourcev3.ListenerType:    {lis},
			resourcev3.RouteType:       {rc},
			resourcev3.VirtualHostType: vhosts,
		})
	}
	vr := &routev3.RouteConfiguration{Name: "vr", Vhds: &routev3.Vhds{ConfigSource: deltaSource}}
	cp.set(t, "1", res(vr, directVH("vr/one.test", "one.test", "vhost one"), directVH("other/any", "*", "not mine")))
	p := servertest.Start(t, xdsBootstrap(cp.port, "DELTA_GRPC"))
	client := &http.Client{Timeout: 2 * time.Second}
	eventually(t, "vhost from VHDS", func() string { return getHost(client, port, "one.test") }, "200 vhost one")
	if got := getHost(client, port, "two.test"); got != "404 " {
		t.Fatalf("host of another route configuration's vhost: %q, want 404", got)
	}

	cp.set(t, "2", res(vr, directVH("vr/one.test", "one.test", "vhost one v2"), directVH("vr/two.test", "two.test", "vhost two")))
	eventually(t, "changed vhost", func() string { return getHost(client, port, "one.test") }, "200 vhost one v2")
	eventually(t, "added vhost", func() string { return getHost(client, port, "two.test") }, "200 vhost two")
	if n := p.Stat("http.dyn.vhds.vr.config_reload"); n < 2 {
		t.Errorf("http.dyn.vhds.vr.config_reload = %d, want >= 2", n)
	}

	cp.set(t, "3", res(vr, directVH("vr/two.test", "two.test", "vhost two")))
	eventually(t, "removed vhost", func() string { return getHost(client, port, "one.test") }, "404 ")

	code, body := p.Admin("GET", "/config_dump?resource=dynamic_route_configs")
	if code != 200 || !strings.Contains(body, "vr/two.test") || !strings.Contains(body, "vhds") {
		t.Fatalf("config_dump dynamic_route_configs: %d %s", code, body)
	}

	adsVR := &routev3.RouteConfiguration{Name: "vr", Vhds: &routev3.Vhds{ConfigSource: adsSource}}
	cp.set(t, "4", res(adsVR, directVH("vr/two.test", "two.test", "vhost two")))
	waitNACK(t, cp, "vhds: only 'DELTA_GRPC' is supported as an api_type.")
	if got := getHost(client, port, "two.test"); got != "200 vhost two" {
		t.Fatalf("after the NACK: %q", got)
	}
}

// A listener with scoped routes warms, as Envoy's does, until SRDS has
// answered and every scope's route configuration has arrived.
func TestScopedRoutesWarming(t *testing.T) {
	cp := startControlPlane(t)
	port := servertest.DeadPort(t)
	lis := hcmListener(t, "scoped", port, func(h *hcmv3.HttpConnectionManager) {
		h.RouteSpecifier = &hcmv3.HttpConnectionManager_ScopedRoutes{ScopedRoutes: &hcmv3.ScopedRoutes{
			Name: "by-tenant",
			ScopeKeyBuilder: &hcmv3.ScopedRoutes_ScopeKeyBuilder{Fragments: []*hcmv3.ScopedRoutes_ScopeKeyBuilder_FragmentBuilder{{
				Type: &hcmv3.ScopedRoutes_ScopeKeyBuilder_FragmentBuilder_HeaderValueExtractor_{
					HeaderValueExtractor: &hcmv3.ScopedRoutes_ScopeKeyBuilder_FragmentBuilder_HeaderValueExtractor{
						Name: "x-tenant", ExtractType: &hcmv3.ScopedRoutes_ScopeKeyBuilder_FragmentBuilder_HeaderValueExtractor_Index{Index: 0}}}}}},
			RdsConfigSource: adsSource,
			ConfigSpecifier: &hcmv3.ScopedRoutes_ScopedRds{ScopedRds: &hcmv3.ScopedRds{ScopedRdsConfigSource: adsSource}},
		}}
	})
	res := withCluster(t, map[resourcev3.Type][]types.Resource{
		resourcev3.ListenerType:    {lis},
		resourcev3.ScopedRouteType: {scope("a", "rc-a", "t1")},
	})
	cp.set(t, "1", res)
	p := servertest.Start(t, xdsBootstrap(cp.port, "GRPC"))
	eventually(t, "warming while rc-a is missing", func() string {
		return fmt.Sprint(p.Stat("listener_manager.total_listeners_warming"))
	}, "1")
	time.Sleep(200 * time.Millisecond) // still warming a moment later
	if n := p.Stat("listener_manager.total_listeners_warming"); n != 1 {
		t.Fatalf("total_listeners_warming = %d while rc-a is missing", n)
	}

	res[resourcev3.RouteType] = []types.Resource{directRC("rc-a", "*", "scope a")}
	cp.set(t, "2", res)
	client := &http.Client{Timeout: 2 * time.Second}
	eventually(t, "in service once rc-a arrived", func() string {
		req, _ := http.NewRequest("GET", fmt.Sprintf("http://127.0.0.1:%d/", port), nil)
		req.Header.Set("x-tenant", "t1")
		resp, err := client.Do(req)
		if err != nil {
			return err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return fmt.Sprintf("%d %s", resp.StatusCode, b)
	}, "200 scope a")
	if n := p.Stat("listener_manager.total_listeners_warming"); n != 0 {
		t.Errorf("total_listeners_warming = %d after the routes arrived", n)
	}
}
