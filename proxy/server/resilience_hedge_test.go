package server_test

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/outrider-proxy/outrider/proxy/server/servertest"
)

// hedge_on_per_try_timeout: a per-try timeout starts another try without
// cancelling the first; the first response wins and the other try is reset.
func TestHedgeOnPerTryTimeout(t *testing.T) {
	tests := []struct {
		name      string
		delays    []time.Duration // per call, by arrival order
		route     string
		wantCode  int
		wantBody  string
		wantStats map[string]int64
		canceled  int // calls whose request must be reset
	}{
		{"the second try wins", []time.Duration{2 * time.Second, 0}, "", 200, "call 2",
			map[string]int64{"upstream_rq_retry": 1, "upstream_rq_per_try_timeout": 0, "upstream_rq_200": 1}, 1},
		{"the first try still wins", []time.Duration{350 * time.Millisecond, 3 * time.Second}, "", 200, "call 1",
			map[string]int64{"upstream_rq_retry": 1, "upstream_rq_per_try_timeout": 0}, 1},
		{"two hedges, the third wins", []time.Duration{3 * time.Second, 3 * time.Second, 0}, "", 200, "call 3",
			map[string]int64{"upstream_rq_retry": 2}, 2},
		{"no retry left: the first is not cancelled", []time.Duration{400 * time.Millisecond}, "num_retries: 0, ", 200, "call 1",
			map[string]int64{"upstream_rq_retry": 0, "upstream_rq_retry_limit_exceeded": 1}, 0},
		{"route timeout ends every try", []time.Duration{5 * time.Second, 5 * time.Second, 5 * time.Second}, "", 504, "upstream request timeout",
			map[string]int64{"upstream_rq_timeout": 1, "upstream_rq_retry": 2}, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var calls atomic.Int32
			canceled := make(chan int, 10)
			up := startUpstream(t, func(w http.ResponseWriter, r *http.Request) {
				n := int(calls.Add(1))
				var d time.Duration
				if n <= len(tt.delays) {
					d = tt.delays[n-1]
				}
				select {
				case <-time.After(d):
					fmt.Fprintf(w, "call %d", n)
				case <-r.Context().Done():
					canceled <- n
				}
			})
			route := `, timeout: 1.5s, retry_policy: {retry_on: 5xx, ` + tt.route + `num_retries: 2, per_try_timeout: 0.25s, retry_back_off: {base_interval: 0.001s}},
    hedge_policy: {hedge_on_per_try_timeout: true}`
			if strings.Contains(tt.route, "num_retries") {
				route = strings.Replace(route, "num_retries: 2, ", "", 1)
			}
			p := servertest.Start(t, resilienceBootstrap(route, "", up.port()))
			code, body, _ := getBody(t, p.URL("front", "/"))
			if code != tt.wantCode || !strings.Contains(body, tt.wantBody) {
				t.Fatalf("got %d %q, want %d %q", code, body, tt.wantCode, tt.wantBody)
			}
			for k, v := range tt.wantStats {
				if v == 0 {
					if got := p.Stat("cluster.pool." + k); got != 0 {
						t.Errorf("%s = %d, want 0", k, got)
					}
					continue
				}
				p.WaitStat("cluster.pool."+k, v)
			}
			for i := 0; i < tt.canceled; i++ {
				select {
				case <-canceled:
				case <-time.After(5 * time.Second):
					t.Fatalf("%d of %d losing tries were not reset", i, tt.canceled)
				}
			}
			// The proxy still serves.
			if code, _, _ := getBody(t, p.URL("front", "/")); code != 200 {
				t.Errorf("next request: %d", code)
			}
		})
	}
}

// Without hedging a per-try timeout cancels the try (upstream_rq_per_try_timeout).
func TestPerTryTimeoutWithoutHedge(t *testing.T) {
	var calls atomic.Int32
	up := startUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		if calls.Add(1) == 1 {
			select {
			case <-time.After(400 * time.Millisecond):
			case <-r.Context().Done():
				return
			}
		}
		io.WriteString(w, "ok")
	})
	p := servertest.Start(t, resilienceBootstrap(`, retry_policy: {retry_on: reset, num_retries: 1, per_try_timeout: 0.1s, retry_back_off: {base_interval: 0.001s}},
    hedge_policy: {hedge_on_per_try_timeout: false}`, "", up.port()))
	if code, body, _ := getBody(t, p.URL("front", "/")); code != 200 || body != "ok" {
		t.Fatalf("got %d %q", code, body)
	}
	p.WaitStat("cluster.pool.upstream_rq_per_try_timeout", 1)
}

// A hedged request with a body sends the same body on every try, and a
// virtual host's hedge_policy applies to its routes.
func TestHedgeWithBodyFromVirtualHost(t *testing.T) {
	var calls atomic.Int32
	bodies := make(chan string, 4)
	up := startUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		n := calls.Add(1)
		b, _ := io.ReadAll(r.Body)
		bodies <- string(b)
		if n == 1 {
			select {
			case <-time.After(3 * time.Second):
			case <-r.Context().Done():
				return
			}
		}
		fmt.Fprintf(w, "call %d", n)
	})
	yaml := resilienceBootstrap(`, retry_policy: {retry_on: 5xx, num_retries: 1, per_try_timeout: 0.2s, retry_back_off: {base_interval: 0.001s}}`, "", up.port())
	yaml = strings.Replace(yaml, `domains: ["*"]`, `domains: ["*"]
              hedge_policy: {hedge_on_per_try_timeout: true}`, 1)
	p := servertest.Start(t, yaml)
	resp, err := http.Post(p.URL("front", "/"), "text/plain", strings.NewReader("the body"))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(b) != "call 2" {
		t.Fatalf("got %d %q, want the hedged try's answer", resp.StatusCode, b)
	}
	for i := 0; i < 2; i++ {
		select {
		case got := <-bodies:
			if got != "the body" {
				t.Errorf("try %d got body %q", i+1, got)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("try %d never arrived", i+1)
		}
	}
	p.WaitStat("cluster.pool.upstream_rq_retry", 1)
	// Hedged, not cancelled: the per-try timeout was soft.
	if n := p.Stat("cluster.pool.upstream_rq_per_try_timeout"); n != 0 {
		t.Errorf("upstream_rq_per_try_timeout = %d, want 0 for a hedged try", n)
	}
}
