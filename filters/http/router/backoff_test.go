package router

import (
	"strconv"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/outrider-proxy/outrider/proxy/headers"
	"github.com/outrider-proxy/outrider/proxy/upstream"
	"github.com/outrider-proxy/outrider/telemetry/stats"
)

func testCluster(t *testing.T) *upstream.Cluster {
	t.Helper()
	m := upstream.NewManager(stats.NewStore().Root())
	t.Cleanup(m.Close)
	c := &clusterv3.Cluster{}
	if err := protojson.Unmarshal([]byte(`{"name":"c","type":"STATIC","connect_timeout":"1s","load_assignment":{"cluster_name":"c","endpoints":[{"lb_endpoints":[{"endpoint":{"address":{"socket_address":{"address":"127.0.0.1","port_value":1}}}}]}]}}`), c); err != nil {
		t.Fatal(err)
	}
	if err := m.AddOrUpdate(c); err != nil {
		t.Fatal(err)
	}
	return m.Get("c")
}

func retryPolicyFrom(t *testing.T, js string) *retryPolicy {
	t.Helper()
	p := &routev3.RetryPolicy{}
	if err := protojson.Unmarshal([]byte(js), p); err != nil {
		t.Fatal(err)
	}
	return compileRetry(p)
}

// The exponential back-off draws below a ceiling that starts at
// base_interval and doubles up to max_interval, as Envoy's
// JitteredExponentialBackOffStrategy.
func TestExponentialBackOff(t *testing.T) {
	tests := []struct {
		name     string
		policy   string
		ceilings []time.Duration // the n of rnd(n) for each retry, in ms
	}{
		{"defaults", `{}`, []time.Duration{25, 50, 100, 200, 250, 250}},
		{"base and max", `{"retry_back_off":{"base_interval":"0.01s","max_interval":"0.05s"}}`, []time.Duration{10, 20, 40, 50, 50}},
		{"max only at half", `{"retry_back_off":{"base_interval":"0.1s","max_interval":"0.2s"}}`, []time.Duration{100, 200, 200}},
		{"base only", `{"retry_back_off":{"base_interval":"0.002s"}}`, []time.Duration{2, 4, 8, 16, 20, 20}},
		{"sub-millisecond base", `{"retry_back_off":{"base_interval":"0.0001s"}}`, []time.Duration{1, 2, 4, 8, 10, 10}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cl := testCluster(t)
			f := &filter{cluster: cl, policy: retryPolicyFrom(t, tt.policy)}
			for i, want := range tt.ceilings {
				var got int64
				// The largest draw (n-1) shows the ceiling; it is capped at max.
				d := f.nextBackOff(func(n int64) int64 { got = n; return n - 1 })
				if time.Duration(got) != want {
					t.Fatalf("retry %d: ceiling %d ms, want %d", i+1, got, want)
				}
				if d != (want-1)*time.Millisecond {
					t.Errorf("retry %d: back-off %v", i+1, d)
				}
			}
			if v := cl.Stats.UpstreamRqRetryBackoffExp().Value(); v != uint64(len(tt.ceilings)) {
				t.Errorf("upstream_rq_retry_backoff_exponential = %d", v)
			}
		})
	}
}

func TestRateLimitedInterval(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	unix := func(d int64) string { return strconv.FormatInt(now.Unix()+d, 10) }
	policy := `{"rate_limited_retry_back_off":{"reset_headers":[{"name":"Retry-After"},{"name":"X-RateLimit-Reset","format":"UNIX_TIMESTAMP"}],"max_interval":"30s"}}`
	tests := []struct {
		name string
		hdrs [][2]string
		want time.Duration
		ok   bool
	}{
		{"seconds", [][2]string{{"retry-after", "7"}}, 7 * time.Second, true},
		{"seconds with spaces", [][2]string{{"retry-after", " 3 "}}, 3 * time.Second, true},
		{"unix timestamp", [][2]string{{"x-ratelimit-reset", unix(12)}}, 12 * time.Second, true},
		{"first header wins", [][2]string{{"retry-after", "2"}, {"x-ratelimit-reset", unix(12)}}, 2 * time.Second, true},
		{"over max falls to the next header", [][2]string{{"retry-after", "31"}, {"x-ratelimit-reset", unix(5)}}, 5 * time.Second, true},
		{"at max", [][2]string{{"retry-after", "30"}}, 30 * time.Second, true},
		{"over max", [][2]string{{"retry-after", "31"}}, 0, false},
		{"huge", [][2]string{{"retry-after", "99999999999999"}}, 0, false},
		{"timestamp in the past", [][2]string{{"x-ratelimit-reset", unix(-1)}}, 0, false},
		{"not a number", [][2]string{{"retry-after", "Wed, 21 Oct 2015 07:28:00 GMT"}}, 0, false},
		{"negative", [][2]string{{"retry-after", "-5"}}, 0, false},
		{"absent", nil, 0, false},
	}
	p := retryPolicyFrom(t, policy)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var h headers.Map
			for _, kv := range tt.hdrs {
				h.Add(kv[0], kv[1])
			}
			got, ok := p.rateLimitedInterval(&h, now)
			if got != tt.want || ok != tt.ok {
				t.Errorf("got %v, %v; want %v, %v", got, ok, tt.want, tt.ok)
			}
		})
	}
	if d := retryPolicyFrom(t, `{"rate_limited_retry_back_off":{"reset_headers":[{"name":"r"}]}}`).rlMax; d != 300*time.Second {
		t.Errorf("default max_interval %v", d)
	}
}

// After a rate-limited response the next back-off is [interval, 1.5
// interval), for that retry only; then the exponential one resumes.
func TestRateLimitedBackOff(t *testing.T) {
	cl := testCluster(t)
	f := &filter{cluster: cl, policy: retryPolicyFrom(t, `{"rate_limited_retry_back_off":{"reset_headers":[{"name":"retry-after"}]}}`)}
	var h headers.Map
	h.Set("retry-after", "4")
	f.noteRateLimited(&h)
	var n int64
	if d := f.nextBackOff(func(x int64) int64 { n = x; return x - 1 }); n != 2000 || d != 5999*time.Millisecond {
		t.Errorf("rate-limited back-off %v (rnd %d)", d, n)
	}
	if d := f.nextBackOff(func(x int64) int64 { n = x; return 0 }); n != 25 || d != 0 {
		t.Errorf("then exponential: %v (rnd %d)", d, n)
	}
	h.Set("retry-after", "0") // one millisecond or less: no rate-limited back-off
	f.noteRateLimited(&h)
	if f.res.rateLimited != 0 {
		t.Errorf("retry-after 0 kept %v", f.res.rateLimited)
	}
	if cl.Stats.UpstreamRqRetryBackoffRateLim().Value() != 1 || cl.Stats.UpstreamRqRetryBackoffExp().Value() != 1 {
		t.Errorf("ratelimited %d, exponential %d", cl.Stats.UpstreamRqRetryBackoffRateLim().Value(), cl.Stats.UpstreamRqRetryBackoffExp().Value())
	}
}

func TestEnvoyRateLimitedResponse(t *testing.T) {
	var h headers.Map
	h.Set("x-envoy-ratelimited", "true")
	p := retryPolicyFrom(t, `{}`)
	if p.retriableResponse(503, &h, parseRetryOn("5xx")) {
		t.Error("an x-envoy-ratelimited 503 retried without envoy-ratelimited")
	}
	if !p.retriableResponse(429, &h, parseRetryOn("envoy-ratelimited")) {
		t.Error("not retried under envoy-ratelimited")
	}
}
