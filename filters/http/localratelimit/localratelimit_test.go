package localratelimit_test

import (
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/outrider-proxy/outrider/filters/http/internal/filtertest"
	"github.com/outrider-proxy/outrider/proxy/server/servertest"
)

// listener is an HCM listener named name (stat prefix name) with the local
// rate limit filter's config lrl (YAML) and the routes (YAML list) before a
// catch-all route to cluster up.
func listener(name, lrl, routes string) string {
	return filtertest.Listener(name, `
virtual_hosts:
- name: vh
  domains: ["*"]
  routes:
`+filtertest.Indent(routes, 2)+`
  - {match: {prefix: "/"}, route: {cluster: up}}`, `
- name: envoy.filters.http.local_ratelimit
  typed_config:
    "@type": type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit
`+filtertest.Indent(lrl, 4))
}

const always = `filter_enabled: {runtime_key: lrl_enabled, default_value: {numerator: 100, denominator: HUNDRED}}
filter_enforced: {runtime_key: lrl_enforced, default_value: {numerator: 100, denominator: HUNDRED}}
`

func start(t *testing.T) *servertest.Proxy {
	t.Helper()
	return filtertest.Start(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Seen-Rl", r.Header.Get("X-Rl"))
		io.WriteString(w, "up")
	}), func(port int) string {
		return filtertest.Config(port, listener("in", `stat_prefix: in_rl
token_bucket: {max_tokens: 2, tokens_per_fill: 2, fill_interval: 1000s}
`+always+`response_headers_to_add:
- {append_action: OVERWRITE_IF_EXISTS_OR_ADD, header: {key: x-local-rate-limit, value: 'true'}}
- {header: {key: x-path, value: '%REQ(:PATH)%'}}
`, `- match: {prefix: "/route"}
  route: {cluster: up}
  typed_per_filter_config:
    envoy.filters.http.local_ratelimit:
      "@type": type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit
      stat_prefix: route_rl
      status: {code: ServiceUnavailable}
      token_bucket: {max_tokens: 1, fill_interval: 1000s}
      filter_enabled: {default_value: {numerator: 100, denominator: HUNDRED}}
      filter_enforced: {default_value: {numerator: 100, denominator: HUNDRED}}
- match: {prefix: "/shadow"}
  route: {cluster: up}
  typed_per_filter_config:
    envoy.filters.http.local_ratelimit:
      "@type": type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit
      stat_prefix: shadow_rl
      token_bucket: {max_tokens: 1, fill_interval: 1000s}
      filter_enabled: {default_value: {numerator: 100, denominator: HUNDRED}}
      request_headers_to_add_when_not_enforced:
      - {header: {key: x-rl, value: limited}}
`),
			listener("conn", "stat_prefix: conn_rl\nlocal_rate_limit_per_downstream_connection: true\n"+
				"token_bucket: {max_tokens: 1, fill_interval: 1000s}\n"+always, ""),
			listener("refill", "stat_prefix: refill_rl\ntoken_bucket: {max_tokens: 1, tokens_per_fill: 1, fill_interval: 1.5s}\n"+always, ""),
			listener("idle", "stat_prefix: idle_rl\ntoken_bucket: {max_tokens: 1, fill_interval: 1000s}\n", ""))
	})
}

// get sends GET path through client (nil: a new connection) and returns the
// response with its body read.
func get(t *testing.T, c *http.Client, url string) (*http.Response, string) {
	t.Helper()
	if c == nil {
		c = &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	}
	c.Timeout = 5 * time.Second
	return filtertest.Do(t, c, filtertest.NewRequest(t, "GET", url, ""))
}

func TestSharedBucketAndRouteOverride(t *testing.T) {
	p := start(t)
	for i := range 2 {
		if resp, _ := get(t, nil, p.URL("in", "/a")); resp.StatusCode != 200 {
			t.Fatalf("request %d: %d", i+1, resp.StatusCode)
		}
	}
	resp, body := get(t, nil, p.URL("in", "/a"))
	if resp.StatusCode != 429 || body != "local_rate_limited" {
		t.Fatalf("third request: %d %q", resp.StatusCode, body)
	}
	for name, want := range map[string]string{"X-Local-Rate-Limit": "true", "X-Path": "/a",
		"Content-Type": "text/plain", "X-Envoy-Ratelimited": ""} {
		if got := resp.Header.Get(name); got != want {
			t.Errorf("%s: %q, want %q", name, got, want)
		}
	}
	// The route's own bucket is not the exhausted one; its limit answers
	// with its own status and no response headers.
	if resp, _ := get(t, nil, p.URL("in", "/route")); resp.StatusCode != 200 {
		t.Fatalf("route's first request: %d", resp.StatusCode)
	}
	resp, _ = get(t, nil, p.URL("in", "/route"))
	if resp.StatusCode != 503 || resp.Header.Get("X-Local-Rate-Limit") != "" {
		t.Fatalf("route's second request: %d %v", resp.StatusCode, resp.Header)
	}
	// Not enforced: limited requests go on with the configured header.
	for i, want := range []string{"", "limited", "limited"} {
		resp, _ := get(t, nil, p.URL("in", "/shadow"))
		if resp.StatusCode != 200 || resp.Header.Get("X-Seen-Rl") != want {
			t.Fatalf("shadow request %d: %d, upstream saw x-rl %q, want %q", i+1, resp.StatusCode, resp.Header.Get("X-Seen-Rl"), want)
		}
	}
	for name, want := range map[string]int64{
		"in_rl.http_local_rate_limit.enabled": 3, "in_rl.http_local_rate_limit.ok": 2,
		"in_rl.http_local_rate_limit.rate_limited": 1, "in_rl.http_local_rate_limit.enforced": 1,
		"route_rl.http_local_rate_limit.enabled": 2, "route_rl.http_local_rate_limit.enforced": 1,
		"shadow_rl.http_local_rate_limit.rate_limited": 2, "shadow_rl.http_local_rate_limit.enforced": 0,
	} {
		p.WaitStat(name, want)
	}
}

func TestPerConnectionBuckets(t *testing.T) {
	p := start(t)
	a := &http.Client{Transport: &http.Transport{MaxConnsPerHost: 1}}
	b := &http.Client{Transport: &http.Transport{MaxConnsPerHost: 1}}
	for _, step := range []struct {
		c    *http.Client
		want int
	}{{a, 200}, {a, 429}, {b, 200}, {b, 429}, {a, 429}} {
		if resp, _ := get(t, step.c, p.URL("conn", "/")); resp.StatusCode != step.want {
			t.Fatalf("status %d, want %d", resp.StatusCode, step.want)
		}
	}
	p.WaitStat("conn_rl.http_local_rate_limit.ok", 2)
}

func TestRefillAndDisabled(t *testing.T) {
	p := start(t)
	if resp, _ := get(t, nil, p.URL("refill", "/")); resp.StatusCode != 200 {
		t.Fatalf("first: %d", resp.StatusCode)
	}
	if resp, _ := get(t, nil, p.URL("refill", "/")); resp.StatusCode != 429 {
		t.Fatalf("second, within fill_interval: %d", resp.StatusCode)
	}
	deadline := time.Now().Add(6 * time.Second)
	for {
		time.Sleep(100 * time.Millisecond)
		resp, _ := get(t, nil, p.URL("refill", "/"))
		if resp.StatusCode == 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no token after the fill interval")
		}
	}
	// Without filter_enabled the filter does nothing, as Envoy.
	for i := range 3 {
		if resp, _ := get(t, nil, p.URL("idle", "/")); resp.StatusCode != 200 {
			t.Fatalf("disabled filter, request %d: %d", i+1, resp.StatusCode)
		}
	}
	p.WaitStat("idle_rl.http_local_rate_limit.enabled", 0)
}
