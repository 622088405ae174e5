package server_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"

	"github.com/outrider-proxy/outrider/proxy/server/servertest"
)

// idleUpstream answers by path: /stall-first never answers its first
// request and answers "fresh" after; /stall never answers; /stall-body
// sends the headers and 3 of 10 body bytes, then stalls; /trickle sends
// its 6 body bytes one every 100 ms.
func idleUpstream(first *atomic.Int32) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		stall := func() {
			select {
			case <-r.Context().Done():
			case <-time.After(5 * time.Second):
			}
		}
		switch r.URL.Path {
		case "/stall-first":
			if first.Add(1) == 1 {
				stall()
				return
			}
			io.WriteString(w, "fresh")
		case "/stall":
			stall()
		case "/stall-body":
			w.Header().Set("Content-Length", "10")
			io.WriteString(w, "abc")
			w.(http.Flusher).Flush()
			stall()
		case "/trickle":
			w.Header().Set("Content-Length", "6")
			for _, c := range "abcdef" {
				io.WriteString(w, string(c))
				w.(http.Flusher).Flush()
				time.Sleep(100 * time.Millisecond)
			}
		}
	}
}

// per_try_idle_timeout resets a try that gets no response bytes for the
// timeout, before the headers (retried) and during the body (the client's
// stream is reset), while a slow but steady response is not cut.
func TestPerTryIdleTimeout(t *testing.T) {
	for _, proto := range []string{"http1", "http2"} {
		t.Run(proto, func(t *testing.T) {
			var first atomic.Int32
			h := idleUpstream(&first)
			var port int
			clusterExtra := ""
			if proto == "http2" {
				srv := &http2.Server{}
				port = servertest.ServeTCP(t, func(c net.Conn) {
					srv.ServeConn(c, &http2.ServeConnOpts{Context: context.Background(), Handler: h})
				})
				clusterExtra = `typed_extension_protocol_options: {envoy.extensions.upstreams.http.v3.HttpProtocolOptions: {"@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions, explicit_http_config: {http2_protocol_options: {}}}}`
			} else {
				port = startUpstream(t, h).port()
			}
			p := servertest.Start(t, resilienceBootstrap(`, timeout: 5s, retry_policy: {retry_on: reset, num_retries: 1, per_try_idle_timeout: 0.25s, retry_back_off: {base_interval: 0.001s}}`, clusterExtra, port))
			client := &http.Client{Timeout: 10 * time.Second}
			get := func(path string) (int, string, error) {
				resp, err := client.Get(p.URL("front", path))
				if err != nil {
					return 0, "", err
				}
				defer resp.Body.Close()
				b, err := io.ReadAll(resp.Body)
				return resp.StatusCode, string(b), err
			}

			// Stalled before the headers: reset and retried on a new try.
			start := time.Now()
			if code, body, err := get("/stall-first"); code != 200 || body != "fresh" || err != nil {
				t.Fatalf("/stall-first: %d %q %v, want the retried 200", code, body, err)
			}
			if d := time.Since(start); d < 250*time.Millisecond {
				t.Errorf("/stall-first answered after %v, before the idle timeout", d)
			}
			p.WaitStat("cluster.pool.upstream_rq_per_try_idle_timeout", 1)
			p.WaitStat("cluster.pool.upstream_rq_retry", 1)
			p.WaitStat("cluster.pool.upstream_rq_retry_success", 1)

			// Every try stalls: 504 once the retries are spent, well
			// before the route timeout.
			start = time.Now()
			if code, body, _ := get("/stall"); code != 504 || body != "upstream request timeout" {
				t.Fatalf("/stall: %d %q, want 504 upstream request timeout", code, body)
			}
			if d := time.Since(start); d > 3*time.Second {
				t.Errorf("/stall took %v: the route timeout, not the per-try idle timeout, ended it", d)
			}
			p.WaitStat("cluster.pool.upstream_rq_per_try_idle_timeout", 3)
			p.WaitStat("cluster.pool.upstream_rq_retry", 2)
			p.WaitStat("cluster.pool.upstream_rq_retry_limit_exceeded", 1)
			p.WaitStat("cluster.pool.upstream_rq_504", 1)

			// Stalled mid-body: the response started, so the client's
			// stream is reset, not retried.
			code, body, err := get("/stall-body")
			if code != 200 || err == nil || body != "abc" {
				t.Fatalf("/stall-body: %d %q %v, want 200 then a reset after %q", code, body, err, "abc")
			}
			p.WaitStat("cluster.pool.upstream_rq_per_try_idle_timeout", 4)
			if n := p.Stat("cluster.pool.upstream_rq_retry"); n != 2 {
				t.Errorf("upstream_rq_retry = %d after a mid-body idle timeout, want 2 (no retry)", n)
			}

			// Each body byte restarts the timer: 600 ms in all but never
			// 250 ms without a byte.
			if code, body, err := get("/trickle"); code != 200 || body != "abcdef" || err != nil {
				t.Fatalf("/trickle: %d %q %v, want the whole body", code, body, err)
			}
			if n := p.Stat("cluster.pool.upstream_rq_per_try_idle_timeout"); n != 4 {
				t.Errorf("upstream_rq_per_try_idle_timeout = %d after a steady response, want 4", n)
			}
		})
	}
}
