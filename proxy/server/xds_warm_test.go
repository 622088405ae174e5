package server_test

import (
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

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
