package cors_test

import (
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/outrider-proxy/outrider/filters/http/internal/filtertest"
	"github.com/outrider-proxy/outrider/proxy/server/servertest"
)

// corsFilter is the CORS filter; its policies are in the route configs.
const corsFilter = `- name: envoy.filters.http.cors
  typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors}`

// corsConfig has one listener "in" (stat prefix "in") with the CORS filter.
// The virtual host's policy allows https://*.example.com with credentials;
// /route overrides methods and max_age; /off disables the filter; /shadow is
// shadow-only; /keep does not forward non-matching preflights. Listener "old"
// uses the deprecated cors fields of its virtual host and route.
func corsConfig(upPort int) string {
	return filtertest.Config(upPort, filtertest.Listener("in", `
            typed_per_filter_config:
              envoy.filters.http.cors:
                "@type": type.googleapis.com/envoy.extensions.filters.http.cors.v3.CorsPolicy
                expose_headers: x-global
            virtual_hosts:
            - name: www
              domains: ["*"]
              typed_per_filter_config:
                envoy.filters.http.cors:
                  "@type": type.googleapis.com/envoy.extensions.filters.http.cors.v3.CorsPolicy
                  allow_origin_string_match:
                  - {safe_regex: {regex: 'https://[a-z]+\.example\.com'}}
                  - {exact: "HTTP://UPPER.TEST", ignore_case: true}
                  allow_methods: "GET, POST"
                  allow_headers: "content-type"
                  max_age: "600"
                  allow_credentials: true
                  allow_private_network_access: true
              routes:
              - match: {prefix: "/route"}
                route: {cluster: up}
                typed_per_filter_config:
                  envoy.filters.http.cors:
                    "@type": type.googleapis.com/envoy.extensions.filters.http.cors.v3.CorsPolicy
                    allow_methods: "PUT"
                    max_age: "5"
                    allow_credentials: false
              - match: {prefix: "/off"}
                route: {cluster: up}
                typed_per_filter_config:
                  envoy.filters.http.cors:
                    "@type": type.googleapis.com/envoy.extensions.filters.http.cors.v3.CorsPolicy
                    filter_enabled: {default_value: {numerator: 0, denominator: HUNDRED}}
              - match: {prefix: "/shadow"}
                route: {cluster: up}
                typed_per_filter_config:
                  envoy.filters.http.cors:
                    "@type": type.googleapis.com/envoy.extensions.filters.http.cors.v3.CorsPolicy
                    filter_enabled: {default_value: {numerator: 0, denominator: HUNDRED}}
                    shadow_enabled: {default_value: {numerator: 100, denominator: HUNDRED}}
              - match: {prefix: "/keep"}
                route: {cluster: up}
                typed_per_filter_config:
                  envoy.filters.http.cors:
                    "@type": type.googleapis.com/envoy.extensions.filters.http.cors.v3.CorsPolicy
                    forward_not_matching_preflights: false
              - match: {prefix: "/direct"}
                direct_response: {status: 204}
              - match: {prefix: "/"}
                route: {cluster: up}`, corsFilter), filtertest.Listener("old", `
            virtual_hosts:
            - name: legacy
              domains: ["*"]
              cors:
                allow_origin_string_match: [{exact: "http://old.test"}]
                allow_methods: "GET"
                max_age: "7"
              routes:
              - match: {prefix: "/"}
                route: {cluster: up, cors: {allow_methods: "*", allow_headers: "*"}}`, corsFilter))
}

// corsHeaders are the response headers the filter may set.
var corsHeaders = []string{
	"Access-Control-Allow-Origin", "Access-Control-Allow-Methods", "Access-Control-Allow-Headers",
	"Access-Control-Max-Age", "Access-Control-Allow-Credentials", "Access-Control-Expose-Headers",
	"Access-Control-Allow-Private-Network",
}

func startCORS(t *testing.T) (*servertest.Proxy, *atomic.Int64) {
	t.Helper()
	hits := new(atomic.Int64)
	return filtertest.Start(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		w.Header().Set("X-Upstream", r.Method)
		io.WriteString(w, "up")
	}), corsConfig), hits
}

func do(t *testing.T, p *servertest.Proxy, method, listener, path string, hdr ...string) *http.Response {
	t.Helper()
	resp, _ := filtertest.Do(t, nil, filtertest.NewRequest(t, method, p.URL(listener, path), "", hdr...))
	return resp
}

func TestCORS(t *testing.T) {
	p, hits := startCORS(t)
	const good = "https://app.example.com"
	preflight := []string{"Origin", good, "Access-Control-Request-Method", "POST",
		"Access-Control-Request-Headers", "x-a", "Access-Control-Request-Private-Network", "true"}
	tests := []struct {
		name, method, listener, path string
		hdr                          []string
		status                       int
		upstream                     bool // reached the upstream
		want                         map[string]string
	}{
		{"preflight answered by the filter", "OPTIONS", "in", "/", preflight, 200, false, map[string]string{
			"Access-Control-Allow-Origin": good, "Access-Control-Allow-Methods": "GET, POST",
			"Access-Control-Allow-Headers": "content-type", "Access-Control-Max-Age": "600",
			"Access-Control-Allow-Credentials": "true", "Access-Control-Allow-Private-Network": "true",
			// The filter's own encodeHeaders runs on its answer too.
			"Access-Control-Expose-Headers": "x-global"}},
		{"route level overrides field by field", "OPTIONS", "in", "/route", preflight, 200, false, map[string]string{
			"Access-Control-Allow-Origin": good, "Access-Control-Allow-Methods": "PUT",
			"Access-Control-Allow-Headers": "content-type", "Access-Control-Max-Age": "5",
			"Access-Control-Allow-Private-Network": "true", "Access-Control-Expose-Headers": "x-global"}},
		{"ignore_case exact", "OPTIONS", "in", "/", []string{"Origin", "http://upper.test", "Access-Control-Request-Method", "GET"}, 200, false,
			map[string]string{"Access-Control-Allow-Origin": "http://upper.test", "Access-Control-Allow-Methods": "GET, POST",
				"Access-Control-Allow-Headers": "content-type", "Access-Control-Max-Age": "600",
				"Access-Control-Allow-Credentials": "true", "Access-Control-Expose-Headers": "x-global"}},
		{"non-matching preflight forwarded", "OPTIONS", "in", "/", []string{"Origin", "https://evil.test", "Access-Control-Request-Method", "GET"}, 200, true, nil},
		{"non-matching preflight answered without CORS headers", "OPTIONS", "in", "/keep", []string{"Origin", "https://evil.test", "Access-Control-Request-Method", "GET"}, 200, false,
			map[string]string{"Access-Control-Allow-Methods": "GET, POST", "Access-Control-Allow-Headers": "content-type",
				"Access-Control-Max-Age": "600", "Access-Control-Allow-Credentials": "true"}},
		{"OPTIONS without request method is forwarded", "OPTIONS", "in", "/", []string{"Origin", good}, 200, true, map[string]string{
			"Access-Control-Allow-Origin": good, "Access-Control-Allow-Credentials": "true", "Access-Control-Expose-Headers": "x-global"}},
		{"simple request from an allowed origin", "GET", "in", "/", []string{"Origin", good}, 200, true, map[string]string{
			"Access-Control-Allow-Origin": good, "Access-Control-Allow-Credentials": "true", "Access-Control-Expose-Headers": "x-global"}},
		{"simple request from another origin", "GET", "in", "/", []string{"Origin", "https://example.com"}, 200, true, nil},
		{"no origin", "GET", "in", "/", nil, 200, true, nil},
		{"filter disabled on the route", "OPTIONS", "in", "/off", preflight, 200, true, nil},
		{"shadow only", "GET", "in", "/shadow", []string{"Origin", good}, 200, true, nil},
		{"direct response has no route entry", "OPTIONS", "in", "/direct", preflight, 204, false, nil},
		{"deprecated cors fields, * echoes the request", "OPTIONS", "old", "/", []string{"Origin", "http://old.test",
			"Access-Control-Request-Method", "DELETE", "Access-Control-Request-Headers", "x-a, x-b"}, 200, false, map[string]string{
			"Access-Control-Allow-Origin": "http://old.test", "Access-Control-Allow-Methods": "DELETE",
			"Access-Control-Allow-Headers": "x-a, x-b", "Access-Control-Max-Age": "7"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := hits.Load()
			resp := do(t, p, tc.method, tc.listener, tc.path, tc.hdr...)
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d", resp.StatusCode, tc.status)
			}
			if reached := hits.Load() > before; reached != tc.upstream {
				t.Errorf("reached upstream: %v, want %v", reached, tc.upstream)
			}
			for _, name := range corsHeaders {
				if got, want := strings.Join(resp.Header.Values(name), "|"), tc.want[name]; got != want {
					t.Errorf("%s: %q, want %q", name, got, want)
				}
			}
		})
	}
	// Requests with an Origin count as valid or invalid (shadow ones too);
	// disabled and origin-less ones do not count.
	p.WaitStat("http.in.cors.origin_valid", 6)
	p.WaitStat("http.in.cors.origin_invalid", 3)
	p.WaitStat("http.old.cors.origin_valid", 1)
}
