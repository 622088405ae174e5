package server_test

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/outrider-proxy/outrider/proxy/server/servertest"
)

// A route of priority HIGH uses the cluster's HIGH circuit breakers: with
// the DEFAULT ones full (503 UO, x-envoy-overloaded), HIGH requests still
// go through, over both HTTP/1 and HTTP/2 upstreams.
func TestCircuitBreakerHighPriority(t *testing.T) {
	for _, proto := range []string{"http1", "http2"} {
		t.Run(proto, func(t *testing.T) {
			release := make(chan struct{})
			h := func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path == "/slow" {
					<-release
				}
				io.WriteString(w, "served "+r.URL.Path)
			}
			var port int
			clusterExtra := `circuit_breakers: {thresholds: [{max_requests: 1, max_pending_requests: 1, max_connections: 1}, {priority: HIGH, max_requests: 5, track_remaining: true}]}`
			if proto == "http2" {
				port = startH2Upstream(t, h).port()
				clusterExtra += "\n" + `typed_extension_protocol_options: {envoy.extensions.upstreams.http.v3.HttpProtocolOptions: {"@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions, explicit_http_config: {http2_protocol_options: {}}}}`
			} else {
				port = startUpstream(t, h).port()
			}
			yaml := httpBootstrap(port, `- match: {prefix: "/high"}
  route: {cluster: pool, priority: HIGH}
- match: {prefix: "/"}
  route: {cluster: pool}`, "")
			i := strings.Index(yaml, "  clusters:\n")
			p := servertest.Start(t, yaml[:i]+"  clusters:\n"+clusterYAML("pool", clusterExtra, port))

			var wg sync.WaitGroup
			wg.Add(1)
			go func() { defer wg.Done(); getBody(t, p.URL("front", "/slow")) }()
			defer wg.Wait()
			defer close(release)
			p.WaitStat("cluster.pool.upstream_rq_active", 1)
			p.WaitStat("cluster.pool.circuit_breakers.default.rq_open", 1)

			code, _, hdr := getBody(t, p.URL("front", "/default"))
			if code != 503 || hdr.Get("X-Envoy-Overloaded") != "true" {
				t.Fatalf("DEFAULT over max_requests: %d overloaded=%q, want 503 and x-envoy-overloaded", code, hdr.Get("X-Envoy-Overloaded"))
			}
			for i := range 3 {
				if code, body, _ := getBody(t, p.URL("front", fmt.Sprintf("/high/%d", i))); code != 200 || body != fmt.Sprintf("served /high/%d", i) {
					t.Fatalf("HIGH request %d with DEFAULT full: %d %q, want 200", i, code, body)
				}
			}
			if n := p.Stat("cluster.pool.upstream_rq_pending_overflow"); n != 1 {
				t.Errorf("upstream_rq_pending_overflow = %d, want 1 (the DEFAULT request only)", n)
			}
			p.WaitStat("cluster.pool.circuit_breakers.high.remaining_rq", 5)
			p.WaitStat("cluster.pool.circuit_breakers.high.rq_open", 0)
		})
	}
}
