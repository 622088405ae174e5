package server_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/outrider-proxy/outrider/proxy/server/servertest"
)

// sharedFS finds the example files from the main checkout or a worktree.
func sharedFS() string {
	for _, d := range []string{"../../../shared", "../../../../shared"} {
		if _, err := os.Stat(d); err == nil {
			return d + "/envoy-configs/envoyproxy-examples__dynamic-config-fs__"
		}
	}
	return "missing/"
}

// writeMv writes content next to path and moves it into place, as the
// dynamic-config-fs example's users do.
func writeMv(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path+".new", []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(path+".new", path); err != nil {
		t.Fatal(err)
	}
}

// The envoyproxy-examples dynamic-config-fs bootstrap serves from its lds.yaml
// and cds.yaml (addresses made local); moving a new file into place
// reconfigures the running proxy; a bad file is counted and the last good
// version keeps serving; /config_dump shows the dynamic resources with
// their versions, and ?resource= and ?mask= filter it as Envoy's do.
func TestFileBasedXDS(t *testing.T) {
	fs := sharedFS()
	boot, err := os.ReadFile(fs + "envoy.yaml")
	if err != nil {
		t.Skip("shared configs not present")
	}
	lds, _ := os.ReadFile(fs + "configs__lds.yaml")
	cds, _ := os.ReadFile(fs + "configs__cds.yaml")
	up := startUpstream(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "from service1") })
	port := servertest.DeadPort(t)
	dir := t.TempDir()
	ldsPath, cdsPath := filepath.Join(dir, "lds.yaml"), filepath.Join(dir, "cds.yaml")
	ldsText := strings.NewReplacer("0.0.0.0", "127.0.0.1", "10000", fmt.Sprint(port)).Replace(string(lds))
	writeMv(t, ldsPath, ldsText)
	writeMv(t, cdsPath, strings.NewReplacer("service1", "127.0.0.1", "8080", fmt.Sprint(up.port())).Replace(string(cds)))
	bootText := strings.NewReplacer("/var/lib/envoy/lds.yaml", ldsPath, "/var/lib/envoy/cds.yaml", cdsPath,
		"0.0.0.0", "127.0.0.1", "19000", "0").Replace(string(boot))
	p := servertest.Start(t, bootText)

	get := func() string {
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/", port))
		if err != nil {
			return err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return fmt.Sprintf("%d %s", resp.StatusCode, b)
	}
	eventually(t, "served from the files", get, "200 from service1")
	eventually(t, "/ready", func() string { _, b := p.Admin("GET", "/ready"); return strings.TrimSpace(b) }, "LIVE")

	direct := strings.Replace(ldsText, "route:\n                cluster: example_proxy_cluster", "direct_response: {status: 200, body: {inline_string: v2}}", 1)
	if direct == ldsText {
		t.Fatal("could not rewrite the route")
	}
	writeMv(t, ldsPath, "version_info: v2\n"+direct)
	eventually(t, "after mv", get, "200 v2")

	writeMv(t, ldsPath, "version_info: v3\n"+strings.Replace(direct, "stat_prefix", "bogus_field: 1\n        stat_prefix", 1))
	p.WaitStat("listener_manager.lds.update_failure", 1)
	writeMv(t, ldsPath, "version_info: v4\n"+strings.Replace(direct, "inline_string: v2", "inline_string: v4}, response_headers_to_add: [{header: {key: '', value: x}}], x: {", 1))
	for deadline := time.Now().Add(5 * time.Second); p.Stat("listener_manager.lds.update_rejected")+p.Stat("listener_manager.lds.update_failure") < 2 && time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
	}
	if got := get(); got != "200 v2" {
		t.Fatalf("after bad files: %q, want the last good version", got)
	}
	if n := p.Stat("listener_manager.lds.update_success"); n != 2 {
		t.Errorf("lds.update_success = %d, want 2", n)
	}

	// config_dump.
	_, body := p.Admin("GET", "/config_dump")
	var dump struct {
		Configs []map[string]any `json:"configs"`
	}
	if err := json.Unmarshal([]byte(body), &dump); err != nil {
		t.Fatal(err)
	}
	var types []string
	for _, c := range dump.Configs {
		types = append(types, strings.TrimPrefix(c["@type"].(string), "type.googleapis.com/envoy.admin.v3."))
	}
	if got := strings.Join(types, ","); got != "BootstrapConfigDump,ClustersConfigDump,ListenersConfigDump,ScopedRoutesConfigDump,RoutesConfigDump,SecretsConfigDump" {
		t.Errorf("config dump types: %s", got)
	}
	ls := dump.Configs[2]
	if ls["version_info"] != "v2" {
		t.Errorf("listeners version_info = %v", ls["version_info"])
	}
	dl := ls["dynamic_listeners"].([]any)[0].(map[string]any)
	as := dl["active_state"].(map[string]any)
	if dl["name"] != "listener_0" || as["version_info"] != "v2" || as["last_updated"] == nil || as["listener"].(map[string]any)["name"] != "listener_0" {
		t.Errorf("dynamic listener: %v", dl)
	}
	cl := dump.Configs[1]["dynamic_active_clusters"].([]any)[0].(map[string]any)
	if cl["cluster"].(map[string]any)["name"] != "example_proxy_cluster" || cl["last_updated"] == nil {
		t.Errorf("dynamic cluster: %v", cl)
	}

	_, body = p.Admin("GET", "/config_dump?resource=dynamic_active_clusters&mask=cluster.name")
	if !strings.Contains(body, `"@type": "type.googleapis.com/envoy.admin.v3.ClustersConfigDump.DynamicCluster"`) ||
		!strings.Contains(body, `"name": "example_proxy_cluster"`) || strings.Contains(body, "load_assignment") || strings.Contains(body, "last_updated") {
		t.Errorf("?resource&mask: %s", body)
	}
	if code, _ := p.Admin("GET", "/config_dump?resource=nope"); code != 404 {
		t.Errorf("unknown resource: %d, want 404", code)
	}
	if code, _ := p.Admin("GET", "/config_dump?resource=version_info"); code != 400 {
		t.Errorf("non-repeated resource: %d, want 400", code)
	}
	_, body = p.Admin("GET", "/config_dump?include_eds")
	if !strings.Contains(body, "EndpointsConfigDump") || !strings.Contains(body, "static_endpoint_configs") {
		t.Errorf("include_eds: no endpoints dump")
	}
	_, body = p.Admin("GET", "/config_dump?mask=version_info")
	if !strings.Contains(body, `"dynamic_listeners": []`) || !strings.Contains(body, `"version_info": "v2"`) {
		t.Errorf("?mask=version_info kept other fields or lost it: %s", body)
	}
	if g := p.Stat("listener_manager.total_listeners_active"); g != 1 {
		t.Errorf("total_listeners_active = %d", g)
	}
	if g := p.Stat("cluster_manager.active_clusters"); g != 1 {
		t.Errorf("active_clusters = %d", g)
	}
}
