package upstream

import (
	"context"
	"io"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/outrider-proxy/outrider/proxy/h2"
)

// startH2CHold is an h2c server whose handlers answer 200 "ok" once
// release yields; it counts accepted connections.
func startH2CHold(t *testing.T, release <-chan struct{}) (string, *atomic.Int64) {
	return serveH2C(t, func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
			return
		}
		_, _ = io.WriteString(w, "ok")
	})
}

// TestH2PoolStreams: a connection takes up to the cluster's
// max_concurrent_streams, a further stream dials another, the request stats
// count, and Close shuts the idle connections.
func TestH2PoolStreams(t *testing.T) {
	release := make(chan struct{})
	addr, accepts := startH2CHold(t, release)
	m, st := newTestManager(t)
	c := mustAdd(t, m, poolCluster(addr, `,"http2_protocol_options":{"max_concurrent_streams":2}`))
	p := c.H2Pool(c.Hosts()[0])
	req := getRequest()
	ctx := context.Background()
	var open []*h2.ClientStream
	for range 3 {
		s, err := p.OpenStream(ctx, req, true)
		if err != nil {
			t.Fatal(err)
		}
		open = append(open, s)
	}
	if n := accepts.Load(); n != 2 {
		waitFor(t, "a second connection", func() bool { return accepts.Load() == 2 })
	}
	if p.Conns() != 2 {
		t.Fatalf("%d connections, want 2 (2 streams each at most)", p.Conns())
	}
	if v := st.Gauge("cluster.p.upstream_rq_active").Value(); v != 3 {
		t.Fatalf("upstream_rq_active %d", v)
	}
	go func() {
		for range open {
			release <- struct{}{}
		}
	}()
	for _, s := range open {
		h, err := s.ReadHeaders(time.Now().Add(10 * time.Second))
		if err != nil || h.StatusCode() != 200 {
			t.Fatalf("%v %v", h, err)
		}
		if body, err := s.ReadData(time.Now().Add(10 * time.Second)); err != nil || string(body) != "ok" {
			t.Fatalf("body %q %v", body, err)
		}
		p.DoneStream(ctx, s)
	}
	if a, tot := st.Gauge("cluster.p.upstream_rq_active").Value(), st.Counter("cluster.p.upstream_rq_total").Value(); a != 0 || tot != 3 {
		t.Fatalf("upstream_rq_active %d, upstream_rq_total %d", a, tot)
	}
	if v := st.Counter("cluster.p.upstream_cx_http2_total").Value(); v != 2 {
		t.Fatalf("upstream_cx_http2_total %d", v)
	}
	p.Close()
	waitFor(t, "the idle connections closed", func() bool {
		return p.Conns() == 0 && st.Gauge("cluster.p.upstream_cx_active").Value() == 0
	})
}

// TestH2PoolIdleTimeout: a connection idle for the cluster's idle_timeout
// closes and counts upstream_cx_idle_timeout; a busy one stays.
func TestH2PoolIdleTimeout(t *testing.T) {
	release := make(chan struct{})
	addr, _ := startH2CHold(t, release)
	m, st := newTestManager(t)
	c := mustAdd(t, m, poolCluster(addr, `,"http2_protocol_options":{},"common_http_protocol_options":{"idle_timeout":"0.1s"}`))
	p := c.H2Pool(c.Hosts()[0])
	req := getRequest()
	s, err := p.OpenStream(context.Background(), req, true)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(250 * time.Millisecond) // busy past the idle timeout
	if p.Conns() != 1 || st.Counter("cluster.p.upstream_cx_idle_timeout").Value() != 0 {
		t.Fatal("a busy connection was closed for idleness")
	}
	release <- struct{}{}
	if _, err := s.ReadHeaders(time.Now().Add(10 * time.Second)); err != nil {
		t.Fatal(err)
	}
	p.DoneStream(context.Background(), s)
	waitFor(t, "the idle connection closed", func() bool {
		return p.Conns() == 0 && st.Counter("cluster.p.upstream_cx_idle_timeout").Value() == 1 &&
			st.Gauge("cluster.p.upstream_cx_active").Value() == 0
	})
}
