package server_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/outrider-proxy/outrider/proxy/server/servertest"
)

// dumped is what config_dump?include_eds shows of the dynamic cluster, its
// endpoints and its route configuration.
type dumped struct{ timeout, endpoints, routes string }

func dumpOf(t *testing.T, p *servertest.Proxy) dumped {
	t.Helper()
	_, body := p.Admin("GET", "/config_dump?include_eds")
	var dump struct {
		Configs []map[string]any `json:"configs"`
	}
	if err := json.Unmarshal([]byte(body), &dump); err != nil {
		t.Fatalf("config_dump: %v", err)
	}
	var d dumped
	for _, c := range dump.Configs {
		for _, cl := range asList(c["dynamic_active_clusters"]) {
			if m := asMap(asMap(cl)["cluster"]); m["name"] == "svc" {
				d.timeout = fmt.Sprint(m["connect_timeout"])
			}
		}
		for _, e := range asList(c["dynamic_endpoint_configs"]) {
			b, _ := json.Marshal(asMap(e)["endpoint_config"])
			d.endpoints = string(b)
		}
		for _, r := range asList(c["dynamic_route_configs"]) {
			d.routes = fmt.Sprint(asMap(asMap(r)["route_config"])["name"])
		}
	}
	return d
}

func asList(v any) []any         { l, _ := v.([]any); return l }
func asMap(v any) map[string]any { m, _ := v.(map[string]any); return m }

// Resources pushed again unchanged are not applied again (state of the
// world: counted as accepted RDS updates without a config reload, no
// cluster modified); config_dump shows the cluster, endpoints and routes
// kept in wire form; a changed cluster gets the endpoints its name already
// has, from that wire form.
func TestXDSUnchangedAndWireForm(t *testing.T) {
	for _, apiType := range []string{"GRPC", "DELTA_GRPC"} {
		t.Run(apiType, func(t *testing.T) {
			cp := startControlPlane(t)
			up := startUpstream(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "from upstream") })
			port := servertest.DeadPort(t)
			cp.set(t, "1", xdsResources(t, port, up.port(), toCluster()))
			p := servertest.Start(t, xdsBootstrap(cp.port, apiType))
			client := &http.Client{Transport: &http.Transport{}, Timeout: 2 * time.Second}
			get := func() string {
				resp, err := client.Get(fmt.Sprintf("http://127.0.0.1:%d/", port))
				if err != nil {
					return err.Error()
				}
				defer resp.Body.Close()
				b, _ := io.ReadAll(resp.Body)
				return fmt.Sprintf("%d %s", resp.StatusCode, b)
			}
			eventually(t, "v1", get, "200 from upstream")
			d := dumpOf(t, p)
			want := fmt.Sprintf(`"port_value":%d`, up.port())
			if d.timeout != "1s" || d.routes != "local" || !strings.Contains(d.endpoints, want) {
				t.Fatalf("config_dump: %+v, want connect_timeout 1s, routes local, endpoints with %s", d, want)
			}

			cp.set(t, "2", xdsResources(t, port, up.port(), toCluster()))
			if apiType == "GRPC" { // go-control-plane's delta server sends nothing for unchanged resources
				eventually(t, "v2 accepted", func() string {
					return fmt.Sprint(p.Stat("http.dyn.rds.local.update_success"))
				}, "2")
				if n := p.Stat("http.dyn.rds.local.config_reload"); n != 1 {
					t.Errorf("config_reload %d after an unchanged route configuration, want 1", n)
				}
			}
			if n, _ := p.Srv.Stats().Value("cluster_manager.cluster_modified"); n != 0 {
				t.Errorf("cluster_modified %d after an unchanged push, want 0", n)
			}

			res := xdsResources(t, port, up.port(), toCluster())
			res[resourcev3.ClusterType][0].(*clusterv3.Cluster).ConnectTimeout = durationpb.New(2 * time.Second)
			cp.set(t, "3", res)
			eventually(t, "cluster modified", func() string {
				n, _ := p.Srv.Stats().Value("cluster_manager.cluster_modified")
				return fmt.Sprint(n, p.Stat("cluster_manager.warming_clusters"))
			}, "1 0")
			if got := get(); got != "200 from upstream" {
				t.Errorf("after the cluster changed: %q", got)
			}
			if d := dumpOf(t, p); d.timeout != "2s" || !strings.Contains(d.endpoints, want) {
				t.Errorf("config_dump after the change: %+v", d)
			}
		})
	}
}
