package server_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"testing"

	runtimev3 "github.com/envoyproxy/go-control-plane/envoy/service/runtime/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/outrider-proxy/outrider/proxy/server/servertest"
)

// runtimeDump is /runtime's JSON.
type runtimeDump struct {
	Layers  []string `json:"layers"`
	Entries map[string]struct {
		LayerValues []string `json:"layer_values"`
		FinalValue  string   `json:"final_value"`
	} `json:"entries"`
}

func getRuntime(t *testing.T, p *servertest.Proxy) runtimeDump {
	t.Helper()
	code, body := p.Admin("GET", "/runtime")
	var d runtimeDump
	if code != 200 || json.Unmarshal([]byte(body), &d) != nil {
		t.Fatalf("/runtime: %d %s", code, body)
	}
	return d
}

func statusOf(t *testing.T, url string) int {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// A route's runtime_fraction reads its runtime_key from the layered runtime: the static layer turns it
// off, an admin override (/runtime_modify) turns it on, and /runtime shows both layers.
func TestRuntimeFractionFollowsAdminOverride(t *testing.T) {
	routes := `- match:
    prefix: "/"
    runtime_fraction: {default_value: {numerator: 100}, runtime_key: feature.enabled}
  direct_response: {status: 201}
- match: {prefix: "/"}
  direct_response: {status: 202}`
	yaml := httpBootstrap(servertest.DeadPort(t), routes, "") + `
layered_runtime:
  layers:
  - name: static
    static_layer: {feature: {enabled: 0}, other: text}
  - name: admin
    admin_layer: {}
`
	p := servertest.Start(t, yaml)
	url := p.URL("front", "/")
	if got := statusOf(t, url); got != 202 {
		t.Fatalf("with feature.enabled 0: status %d, want 202 (the fraction route off)", got)
	}
	if code, body := p.Admin("POST", "/runtime_modify?feature.enabled=100"); code != 200 || body != "OK\n" {
		t.Fatalf("/runtime_modify: %d %q", code, body)
	}
	if got := statusOf(t, url); got != 201 {
		t.Fatalf("with feature.enabled 100: status %d, want 201", got)
	}
	d := getRuntime(t, p)
	if !slices.Equal(d.Layers, []string{"static", "admin"}) {
		t.Errorf("layers %v", d.Layers)
	}
	e := d.Entries["feature.enabled"]
	if !slices.Equal(e.LayerValues, []string{"0", "100"}) || e.FinalValue != "100" {
		t.Errorf("feature.enabled: %+v", e)
	}
	if e := d.Entries["other"]; e.FinalValue != "text" || !slices.Equal(e.LayerValues, []string{"text", ""}) {
		t.Errorf("other: %+v", e)
	}
	if p.Stat("runtime.admin_overrides_active") != 1 || p.Stat("runtime.num_keys") != 2 || p.Stat("runtime.num_layers") != 2 {
		t.Errorf("stats: admin_overrides_active %d num_keys %d num_layers %d", p.Stat("runtime.admin_overrides_active"),
			p.Stat("runtime.num_keys"), p.Stat("runtime.num_layers"))
	}
	// An empty value removes the override.
	p.Admin("POST", "/runtime_modify?feature.enabled=")
	if got := statusOf(t, url); got != 202 {
		t.Errorf("after removing the override: status %d, want 202", got)
	}
	if code, _ := p.Admin("POST", "/runtime_modify"); code != 400 {
		t.Errorf("/runtime_modify without parameters: %d, want 400", code)
	}
}

// RTDS over ADS from go-control-plane's server: the Runtime resource fills its layer, and a new version
// replaces the values.
func TestRTDSLayerFromControlPlane(t *testing.T) {
	cp := startControlPlane(t)
	res := func(v float64) map[resourcev3.Type][]types.Resource {
		r := xdsResources(t, 0, servertest.DeadPort(t), direct("x"))
		layer, _ := structpb.NewStruct(map[string]any{"limit": v, "nested": map[string]any{"key": "s"}})
		r[resourcev3.RuntimeType] = []types.Resource{&runtimev3.Runtime{Name: "rt", Layer: layer}}
		return r
	}
	cp.set(t, "v1", res(5))
	yaml := xdsBootstrap(cp.port, "GRPC") + `
layered_runtime:
  layers:
  - name: base
    static_layer: {limit: 1}
  - name: rtds
    rtds_layer: {name: rt, rtds_config: {ads: {}, resource_api_version: V3}}
`
	p := servertest.Start(t, yaml)
	final := func(key string) func() string {
		return func() string { return getRuntime(t, p).Entries[key].FinalValue }
	}
	eventually(t, "limit from RTDS", final("limit"), "5")
	eventually(t, "nested key", final("nested.key"), "s")
	if d := getRuntime(t, p); !slices.Equal(d.Entries["limit"].LayerValues, []string{"1", "5"}) {
		t.Errorf("limit layers %v", d.Entries["limit"].LayerValues)
	}
	cp.set(t, "v2", res(7))
	eventually(t, "limit after v2", final("limit"), "7")
	if n := cp.nacked(); len(n) != 0 {
		t.Errorf("NACKs: %v", n)
	}
	if got := fmt.Sprint(p.Stat("runtime.num_layers")); got != "2" {
		t.Errorf("runtime.num_layers = %s", got)
	}
}
