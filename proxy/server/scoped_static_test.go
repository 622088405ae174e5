package server_test

import (
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

// An inline scoped_route_configurations_list in a static bootstrap: the
// scope key is the "team" element of the Cookie header; each scope has its
// own inline route configuration. A request without a key, or with a key no
// scope has, gets 404 with the NR response flag, as in Envoy.
func TestScopedRoutesInline(t *testing.T) {
	logPath := filepath.Join(t.TempDir(), "access.log")
	scope := func(name, key, body string) string {
		return fmt.Sprintf(`
              - name: %s
                key: {fragments: [{string_key: %s}]}
                route_configuration:
                  name: rc-%s
                  virtual_hosts:
                  - name: vh
                    domains: ["*"]
                    routes: [{match: {prefix: "/"}, direct_response: {status: 200, body: {inline_string: %s}}}]`, name, key, name, body)
	}
	yaml := `
admin: {address: {socket_address: {address: 127.0.0.1, port_value: 0}}}
static_resources:
  listeners:
  - name: front
    address: {socket_address: {address: 127.0.0.1, port_value: 0}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress
          http_filters: [{name: envoy.filters.http.router, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}]
          access_log:
` + indent(fileLog(logPath, "%RESPONSE_CODE% %RESPONSE_FLAGS%\n"), 10) + `
          scoped_routes:
            name: by-team
            rds_config_source: {ads: {}}
            scope_key_builder:
              fragments:
              - header_value_extractor: {name: cookie, element_separator: ";", element: {separator: "=", key: team}}
            scoped_route_configurations_list:
              scoped_route_configurations:` + scope("blue", "blue", "blue team") + scope("red", "red", "red team") + "\n"
	p := servertest.Start(t, yaml)
	tests := []struct {
		cookie, want string
	}{
		{"a=1;team=blue", "200 blue team"},
		{"team=red;x=y", "200 red team"},
		{"team=green", "404 "},
		{"", "404 "},
	}
	client := &http.Client{Timeout: 2 * time.Second}
	for _, tt := range tests {
		req, _ := http.NewRequest("GET", p.URL("front", "/"), nil)
		if tt.cookie != "" {
			req.Header.Set("Cookie", tt.cookie)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if got := fmt.Sprintf("%d %s", resp.StatusCode, b); got != tt.want {
			t.Errorf("cookie %q: %q, want %q", tt.cookie, got, tt.want)
		}
	}
	code, dump := p.Admin("GET", "/config_dump?resource=inline_scoped_route_configs")
	if code != 200 || !strings.Contains(dump, "by-team") || !strings.Contains(dump, "rc-red") {
		t.Errorf("config_dump inline_scoped_route_configs: %d %s", code, dump)
	}
	eventually(t, "access log", func() string {
		b, _ := os.ReadFile(logPath)
		return string(b)
	}, "200 -\n200 -\n404 NR\n404 NR\n")
}
