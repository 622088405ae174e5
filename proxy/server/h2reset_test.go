package server_test

import (
	"context"
	"net/http"
	"path/filepath"
	"testing"
	"time"
)

// An HTTP/2 client that resets a body-less stream while the router waits
// for the upstream's response headers resets the upstream request at once:
// an HTTP/1 upstream's read is interrupted (its connection closes), an
// HTTP/2 upstream's stream gets RST_STREAM.
func TestHTTP2ClientResetWhileAwaitingHeaders(t *testing.T) {
	for _, tc := range duplexCombos {
		if !tc.downH2 {
			continue
		}
		t.Run(tc.name, func(t *testing.T) {
			arrived, cancelled, h := waitingUpstream()
			logPath := filepath.Join(t.TempDir(), "access.log")
			p := duplexProxy(t, tc.upH2, tc.upstreamFn, h, flagLog(logPath))
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			req, _ := http.NewRequestWithContext(ctx, "GET", p.URL("front", "/wait"), nil)
			errc := make(chan error, 1)
			go func() {
				resp, err := h2Client(t).Do(req)
				if err == nil {
					resp.Body.Close()
				}
				errc <- err
			}()
			select {
			case <-arrived:
			case <-time.After(5 * time.Second):
				t.Fatal("the request never reached the upstream")
			}
			cancel() // RST_STREAM CANCEL
			select {
			case <-cancelled:
			case <-time.After(5 * time.Second):
				t.Fatal("the upstream request was not reset after the client's reset")
			}
			if err := <-errc; err == nil {
				t.Fatal("the cancelled request got a response")
			}
			p.WaitStat("http.ingress.downstream_rq_rx_reset", 1)
			p.WaitStat("cluster.up.upstream_rq_tx_reset", 1)
			if got := loggedFlags(t, p, logPath); got != "DC" {
				t.Errorf("response flags %q, want DC", got)
			}
		})
	}
}

// waitingUpstream is an upstream handler that says when a request arrived
// and then waits (at most 10 s) for it to be cancelled, saying so.
func waitingUpstream() (arrived, cancelled chan struct{}, h http.HandlerFunc) {
	arrived, cancelled = make(chan struct{}, 1), make(chan struct{}, 1)
	h = func(w http.ResponseWriter, r *http.Request) {
		arrived <- struct{}{}
		select {
		case <-r.Context().Done():
			cancelled <- struct{}{}
		case <-time.After(10 * time.Second):
		}
	}
	return arrived, cancelled, h
}
