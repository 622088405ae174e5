package server_test

import (
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/outrider-proxy/outrider/proxy/server/servertest"
)

// A listener whose route configuration has not arrived warms: it is not in
// service, total_listeners_warming counts it, /ready says INITIALIZING with
// 503 and config_dump shows its warming_state; the routes put it in service
// and the server goes LIVE.
func TestListenerWarmsUntilRoutes(t *testing.T) {
	cp := startControlPlane(t)
	up := startUpstream(t, func(w http.ResponseWriter, r *http.Request) {})
	port := servertest.DeadPort(t)
	res := xdsResources(t, port, up.port(), direct("warm"))
	routes := res[resourcev3.RouteType]
	delete(res, resourcev3.RouteType)
	cp.set(t, "1", res)
	p := servertest.Start(t, xdsBootstrap(cp.port, "GRPC"))
	p.WaitStat("listener_manager.total_listeners_warming", 1)
	if code, body := p.Admin("GET", "/ready"); code != 503 || strings.TrimSpace(body) != "INITIALIZING" {
		t.Errorf("/ready while warming: %d %q", code, body)
	}
	if _, body := p.Admin("GET", "/config_dump?resource=dynamic_listeners"); !strings.Contains(body, "warming_state") || strings.Contains(body, "active_state") {
		t.Errorf("config_dump while warming: %s", body)
	}
	if c, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), 200*time.Millisecond); err == nil {
		// Bound (as Envoy binds a new warming listener) but not served.
		c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		c.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
		if n, _ := c.Read(make([]byte, 10)); n > 0 {
			t.Errorf("a warming listener answered")
		}
		c.Close()
	}
	res[resourcev3.RouteType] = routes
	cp.set(t, "2", res)
	p.WaitStat("listener_manager.total_listeners_warming", 0)
	p.WaitStat("listener_manager.total_listeners_active", 1)
	eventually(t, "/ready", func() string { _, b := p.Admin("GET", "/ready"); return strings.TrimSpace(b) }, "LIVE")
	if p.Stat("http.dyn.rds.local.update_success") != 1 {
		t.Errorf("http.dyn.rds.local.update_success = %d", p.Stat("http.dyn.rds.local.update_success"))
	}
}

// A changed cluster warms while the old one keeps serving: the new version
// names an EDS service the control plane does not have yet, so requests go
// on reaching the old endpoints, config_dump lists the new version under
// dynamic_warming_clusters, and warming_clusters counts it; its endpoints
// put it in service.
func TestChangedClusterWarmsWhileOldServes(t *testing.T) {
	cp := startControlPlane(t)
	oldUp := startUpstream(t, func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("old")) })
	newUp := startUpstream(t, func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("new")) })
	port := servertest.DeadPort(t)
	res := xdsResources(t, port, oldUp.port(), toCluster())
	cp.set(t, "1", res)
	p := servertest.Start(t, xdsBootstrap(cp.port, "GRPC"))
	get := func() string {
		resp, err := http.Get("http://127.0.0.1:" + strconv.Itoa(port) + "/")
		if err != nil {
			return err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	eventually(t, "v1", get, "old")

	changed := xdsResources(t, port, oldUp.port(), toCluster())
	cl := changed[resourcev3.ClusterType][0].(*clusterv3.Cluster)
	cl.EdsClusterConfig.ServiceName = "svc-v2"
	cp.set(t, "2", changed)
	p.WaitStat("cluster_manager.warming_clusters", 1)
	for range 10 {
		if got := get(); got != "old" {
			t.Fatalf("while the changed cluster warms: %q, want the old cluster serving", got)
		}
	}
	if _, body := p.Admin("GET", "/config_dump?resource=dynamic_warming_clusters"); !strings.Contains(body, "svc-v2") {
		t.Errorf("config_dump warming clusters: %s", body)
	}
	if _, body := p.Admin("GET", "/config_dump?resource=dynamic_active_clusters"); strings.Contains(body, "svc-v2") {
		t.Errorf("the warming version is listed as active: %s", body)
	}

	withEDS := xdsResources(t, port, newUp.port(), toCluster())
	withEDS[resourcev3.ClusterType] = changed[resourcev3.ClusterType]
	withEDS[resourcev3.EndpointType][0].(*endpointv3.ClusterLoadAssignment).ClusterName = "svc-v2"
	cp.set(t, "3", withEDS)
	eventually(t, "the new cluster in service", get, "new")
	p.WaitStat("cluster_manager.warming_clusters", 0)
	if p.Stat("cluster_manager.active_clusters") != 2 {
		t.Errorf("active_clusters = %d, want 2 (xds and svc)", p.Stat("cluster_manager.active_clusters"))
	}
}
