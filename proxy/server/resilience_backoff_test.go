package server_test

import (
	"io"
	"net/http"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/outrider-proxy/outrider/proxy/server/servertest"
)

// rate_limited_retry_back_off: a retriable response's reset header sets the
// wait before the retry (Retry-After seconds, or a Unix time), counted as
// upstream_rq_retry_backoff_ratelimited; a route timeout that ends during
// the wait answers 504 UT.
func TestRateLimitedRetryBackOff(t *testing.T) {
	tests := []struct {
		name      string
		header    func() (string, string)
		route     string
		wantCode  int
		minWait   time.Duration
		wantStats map[string]int64
	}{
		{"seconds", func() (string, string) { return "Retry-After", "1" }, "", 200, time.Second,
			map[string]int64{"upstream_rq_retry_backoff_ratelimited": 1, "upstream_rq_retry_success": 1}},
		{"unix timestamp", func() (string, string) {
			return "X-RateLimit-Reset", strconv.FormatInt(time.Now().Add(1500*time.Millisecond).Unix(), 10)
		}, "", 200, 0, map[string]int64{"upstream_rq_retry_backoff_ratelimited": 1}},
		{"above max_interval falls back to exponential", func() (string, string) { return "Retry-After", "60" }, "", 200, 0,
			map[string]int64{"upstream_rq_retry_backoff_exponential": 1}},
		{"route timeout during the wait", func() (string, string) { return "Retry-After", "5" }, ", timeout: 0.3s", 504, 300 * time.Millisecond,
			map[string]int64{"upstream_rq_retry_backoff_ratelimited": 1, "upstream_rq_timeout": 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var calls atomic.Int32
			up := startUpstream(t, func(w http.ResponseWriter, r *http.Request) {
				if calls.Add(1) == 1 {
					k, v := tt.header()
					w.Header().Set(k, v)
					w.WriteHeader(429)
					return
				}
				io.WriteString(w, "ok")
			})
			route := `, retry_policy: {retry_on: retriable-status-codes, retriable_status_codes: [429], num_retries: 1,
    retry_back_off: {base_interval: 0.001s},
    rate_limited_retry_back_off: {reset_headers: [{name: retry-after}, {name: x-ratelimit-reset, format: UNIX_TIMESTAMP}], max_interval: 10s}}` + tt.route
			p := servertest.Start(t, resilienceBootstrap(route, "", up.port()))
			start := time.Now()
			code, _, _ := getBody(t, p.URL("front", "/"))
			if waited := time.Since(start); code != tt.wantCode || waited < tt.minWait {
				t.Fatalf("status %d after %v, want %d after at least %v", code, waited, tt.wantCode, tt.minWait)
			}
			for k, v := range tt.wantStats {
				p.WaitStat("cluster.pool."+k, v)
			}
			if tt.wantCode == 200 && calls.Load() != 2 {
				t.Errorf("%d upstream calls", calls.Load())
			}
		})
	}
}
