package healthcheck_test

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/outrider-proxy/outrider/proxy/server/servertest"
)

// listener is one listener named name with a health check filter (its
// fields in hc) in front of the router.
const listener = `
  - name: %[1]s
    address: {socket_address: {address: 127.0.0.1, port_value: 0}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: %[1]s
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {prefix: "/"}
                route: {cluster: up}
          http_filters:
          - name: envoy.filters.http.health_check
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.health_check.v3.HealthCheck
              %[2]s
          - name: envoy.filters.http.router
            typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}
`

const healthz = `headers: [{name: ":path", string_match: {exact: /healthz}}]`

func config(upPort int) string {
	var b strings.Builder
	b.WriteString("node: {cluster: front, id: n1}\nadmin: {address: {socket_address: {address: 127.0.0.1, port_value: 0}}}\nstatic_resources:\n  listeners:")
	for _, l := range [][2]string{
		{"hc", "pass_through_mode: false\n              " + healthz},
		{"hdr", "pass_through_mode: false\n              headers: [{name: x-lb-check, present_match: true}, {name: ':method', string_match: {exact: GET}}]"},
		{"pt", "pass_through_mode: true\n              " + healthz},
		{"cache", "pass_through_mode: true\n              cache_time: 60s\n              " + healthz},
		{"cl", "pass_through_mode: false\n              cluster_min_healthy_percentages: {up: {value: 100}, empty: {value: 0}}\n              " + healthz},
		{"nocl", "pass_through_mode: false\n              cluster_min_healthy_percentages: {up: {value: 50}, nope: {value: 10}}\n              " + healthz},
		{"emptycl", "pass_through_mode: false\n              cluster_min_healthy_percentages: {empty: {value: 1}}\n              " + healthz},
	} {
		fmt.Fprintf(&b, listener, l[0], l[1])
	}
	fmt.Fprintf(&b, `  clusters:
  - name: up
    connect_timeout: 1s
    load_assignment: {cluster_name: up, endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: %d}}}}]}]}
  - name: empty
    connect_timeout: 1s
    load_assignment: {cluster_name: empty}
`, upPort)
	return b.String()
}

// start runs the proxy in front of an upstream that counts requests and
// answers 503 with x-envoy-degraded when asked by x-want-degraded.
func start(t *testing.T) (*servertest.Proxy, *atomic.Int64) {
	t.Helper()
	hits := new(atomic.Int64)
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		io.Copy(io.Discard, r.Body)
		if r.Header.Get("X-Want-Degraded") != "" {
			w.Header().Set("X-Envoy-Degraded", "")
			w.WriteHeader(503)
		}
		io.WriteString(w, "upstream")
	}))
	t.Cleanup(up.Close)
	return servertest.Start(t, config(up.Listener.Addr().(*net.TCPAddr).Port)), hits
}

var client = &http.Client{Timeout: 5 * time.Second}

func do(t *testing.T, method, url, body string, hdr ...string) (*http.Response, string) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, _ := http.NewRequest(method, url, rd)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
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
