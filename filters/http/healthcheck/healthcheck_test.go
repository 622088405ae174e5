package healthcheck_test

import (
	"io"
	"net/http"
	"sync/atomic"
	"testing"

	"github.com/outrider-proxy/outrider/filters/http/internal/filtertest"
	"github.com/outrider-proxy/outrider/proxy/server/servertest"
)

// filter is the health check filter with the fields hc.
func filter(hc string) string {
	return `- name: envoy.filters.http.health_check
  typed_config:
    "@type": type.googleapis.com/envoy.extensions.filters.http.health_check.v3.HealthCheck
    ` + hc
}

const healthz = `headers: [{name: ":path", string_match: {exact: /healthz}}]`

func config(upPort int) string {
	var ls []string
	for _, l := range [][2]string{
		{"hc", "pass_through_mode: false\n    " + healthz},
		{"hdr", "pass_through_mode: false\n    headers: [{name: x-lb-check, present_match: true}, {name: ':method', string_match: {exact: GET}}]"},
		{"pt", "pass_through_mode: true\n    " + healthz},
		{"cache", "pass_through_mode: true\n    cache_time: 60s\n    " + healthz},
		{"cl", "pass_through_mode: false\n    cluster_min_healthy_percentages: {up: {value: 100}, empty: {value: 0}}\n    " + healthz},
		{"nocl", "pass_through_mode: false\n    cluster_min_healthy_percentages: {up: {value: 50}, nope: {value: 10}}\n    " + healthz},
		{"emptycl", "pass_through_mode: false\n    cluster_min_healthy_percentages: {empty: {value: 1}}\n    " + healthz},
	} {
		ls = append(ls, filtertest.Listener(l[0], "", filter(l[1])))
	}
	return "node: {cluster: front, id: n1}\n" + filtertest.Config(upPort, ls...) + `  - name: empty
    connect_timeout: 1s
    load_assignment: {cluster_name: empty}
`
}

// start runs the proxy in front of an upstream that counts requests and
// answers 503 with x-envoy-degraded when asked by x-want-degraded.
func start(t *testing.T) (*servertest.Proxy, *atomic.Int64) {
	t.Helper()
	hits := new(atomic.Int64)
	return filtertest.Start(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		io.Copy(io.Discard, r.Body)
		if r.Header.Get("X-Want-Degraded") != "" {
			w.Header().Set("X-Envoy-Degraded", "")
			w.WriteHeader(503)
		}
		io.WriteString(w, "upstream")
	}), config), hits
}

func do(t *testing.T, method, url, body string, hdr ...string) (*http.Response, string) {
	t.Helper()
	return filtertest.Do(t, nil, filtertest.NewRequest(t, method, url, body, hdr...))
}

type check struct {
	name, listener, method, path, body string
	hdr                                []string
	status                             int
	upstream                           bool   // reached the upstream
	cluster                            string // x-envoy-upstream-healthchecked-cluster; "-" for absent
	immediateFail                      bool   // x-envoy-immediate-health-check-fail: true
}

func run(t *testing.T, p *servertest.Proxy, hits *atomic.Int64, tests []check) {
	t.Helper()
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := hits.Load()
			method := tc.method
			if method == "" {
				method = "GET"
			}
			resp, body := do(t, method, p.URL(tc.listener, tc.path), tc.body, tc.hdr...)
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d", resp.StatusCode, tc.status)
			}
			if reached := hits.Load() > before; reached != tc.upstream {
				t.Errorf("reached upstream: %v, want %v", reached, tc.upstream)
			}
			if !tc.upstream && body != "" {
				t.Errorf("local answer has body %q", body)
			}
			got, ok := resp.Header["X-Envoy-Upstream-Healthchecked-Cluster"]
			switch {
			case tc.cluster == "-" && ok:
				t.Errorf("x-envoy-upstream-healthchecked-cluster %q on a non health check", got)
			case tc.cluster != "-" && (!ok || got[0] != tc.cluster):
				t.Errorf("x-envoy-upstream-healthchecked-cluster %q, want %q", got, tc.cluster)
			}
			if fail := resp.Header.Get("X-Envoy-Immediate-Health-Check-Fail") == "true"; fail != tc.immediateFail {
				t.Errorf("x-envoy-immediate-health-check-fail: %v, want %v", fail, tc.immediateFail)
			}
		})
	}
}

func TestHealthCheck(t *testing.T) {
	p, hits := start(t)
	run(t, p, hits, []check{
		{name: "answered by the filter", listener: "hc", path: "/healthz", status: 200, cluster: "front"},
		{name: "with a request body", listener: "hc", method: "POST", path: "/healthz", body: "ping", status: 200, cluster: "front"},
		{name: "query does not match exact", listener: "hc", path: "/healthz?x=1", status: 200, upstream: true, cluster: "-"},
		{name: "other paths forwarded", listener: "hc", path: "/app", status: 200, upstream: true, cluster: "-"},
		{name: "every header matcher matches", listener: "hdr", path: "/x", hdr: []string{"X-Lb-Check", "1"}, status: 200, cluster: "front"},
		{name: "one matcher fails", listener: "hdr", method: "POST", path: "/x", body: "b", hdr: []string{"X-Lb-Check", "1"}, status: 200, upstream: true, cluster: "-"},
		{name: "pass through forwards", listener: "pt", path: "/healthz", status: 200, upstream: true, cluster: "front"},
		{name: "clusters healthy", listener: "cl", path: "/healthz", status: 200, cluster: "front"},
		{name: "missing cluster", listener: "nocl", path: "/healthz", status: 503, cluster: "front"},
		{name: "empty cluster", listener: "emptycl", path: "/healthz", status: 503, cluster: "front"},
	})
}

// /healthcheck/fail makes health checks fail (pass-through ones too, not
// forwarded) and marks other responses; /healthcheck/ok restores them.
func TestHealthCheckFail(t *testing.T) {
	p, hits := start(t)
	if code, _ := p.Admin("POST", "/healthcheck/fail"); code != 200 {
		t.Fatalf("/healthcheck/fail: %d", code)
	}
	if p.Stat("server.live") != 0 {
		t.Fatal("server.live not 0 after /healthcheck/fail")
	}
	run(t, p, hits, []check{
		{name: "failing", listener: "hc", path: "/healthz", status: 503, cluster: "front"},
		{name: "failing pass through", listener: "pt", path: "/healthz", status: 503, cluster: "front"},
		{name: "other requests marked", listener: "hc", path: "/app", status: 200, upstream: true, cluster: "-", immediateFail: true},
	})
	if code, _ := p.Admin("POST", "/healthcheck/ok"); code != 200 {
		t.Fatalf("/healthcheck/ok: %d", code)
	}
	run(t, p, hits, []check{
		{name: "ok again", listener: "hc", path: "/healthz", status: 200, cluster: "front"},
		{name: "other requests unmarked", listener: "hc", path: "/app", status: 200, upstream: true, cluster: "-"},
	})
}

// cache_time: the upstream's answer to a pass-through health check is
// reused, x-envoy-degraded included, without reaching the upstream.
func TestCache(t *testing.T) {
	p, hits := start(t)
	run(t, p, hits, []check{
		{name: "first forwarded", listener: "cache", path: "/healthz", hdr: []string{"X-Want-Degraded", "1"}, status: 503, upstream: true, cluster: "front"},
	})
	for i := range 2 {
		before := hits.Load()
		resp, _ := do(t, "GET", p.URL("cache", "/healthz"), "")
		if resp.StatusCode != 503 || hits.Load() != before {
			t.Fatalf("cached answer %d: status %d, upstream reached: %v", i, resp.StatusCode, hits.Load() != before)
		}
		if _, ok := resp.Header["X-Envoy-Degraded"]; !ok {
			t.Fatalf("cached answer %d lost x-envoy-degraded", i)
		}
	}
	// Without a cache every check is forwarded.
	for range 2 {
		run(t, p, hits, []check{{name: "no cache", listener: "pt", path: "/healthz", status: 200, upstream: true, cluster: "front"}})
	}
}
