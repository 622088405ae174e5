package zipkin

import (
	"net"
	"net/http"
	"strconv"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/outrider-proxy/outrider/proxy/upstream"
	"github.com/outrider-proxy/outrider/telemetry/stats"
)

func clusterTo(t *testing.T, st *stats.Store, port int) *upstream.Manager {
	m := upstream.NewManager(st.Root())
	t.Cleanup(m.Close)
	err := m.AddOrUpdate(&clusterv3.Cluster{
		Name: "zipkin", ConnectTimeout: durationpb.New(time.Second),
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC},
		LoadAssignment: &endpointv3.ClusterLoadAssignment{ClusterName: "zipkin", Endpoints: []*endpointv3.LocalityLbEndpoints{{
			LbEndpoints: []*endpointv3.LbEndpoint{{HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
				Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
					Address: "127.0.0.1", PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: uint32(port)}}}},
			}}}},
		}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func serve(t *testing.T, h http.HandlerFunc) int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().(*net.TCPAddr).Port
}

func deadPort(t *testing.T) int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	return p
}

func waitCounter(t *testing.T, st *stats.Store, name string, want int64) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		got, _ := st.Value(name)
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s = %d, want %d", name, got, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestReporterOutcomes(t *testing.T) {
	for _, tc := range []struct {
		name    string
		port    func(t *testing.T) int
		counter string
	}{
		{"accepted", func(t *testing.T) int {
			return serve(t, func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusAccepted) })
		}, "tracing.zipkin.reports_sent"},
		{"refused", func(t *testing.T) int {
			return serve(t, func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusInternalServerError) })
		}, "tracing.zipkin.reports_dropped"},
		{"down", deadPort, "tracing.zipkin.reports_failed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := stats.NewStore()
			m := clusterTo(t, st, tc.port(t))
			r := newReporter(m, collector{cluster: "zipkin", path: "/api/v2/spans", host: "zipkin", timeout: time.Second},
				st.Scope("tracing.zipkin"), nil, Options{MinFlushSpans: 2, FlushInterval: time.Hour})
			defer r.close()
			r.add(Span{TraceID: "1", ID: "1"})
			r.add(Span{TraceID: "1", ID: "2"}) // the second reaches min_flush_spans
			waitCounter(t, st, tc.counter, 1)
			waitCounter(t, st, "tracing.zipkin.spans_sent", 2)
		})
	}
}

func TestReporterTimerAndOverflow(t *testing.T) {
	st := stats.NewStore()
	block := make(chan struct{})
	got := make(chan struct{}, 16)
	m := clusterTo(t, st, serve(t, func(w http.ResponseWriter, _ *http.Request) {
		got <- struct{}{}
		<-block // the collector hangs: spans pile up behind the report in flight
		w.WriteHeader(http.StatusAccepted)
	}))
	r := newReporter(m, collector{cluster: "zipkin", path: "/api/v2/spans", host: "zipkin", timeout: 10 * time.Second},
		st.Scope("tracing.zipkin"), nil, Options{MinFlushSpans: 1000, FlushInterval: 20 * time.Millisecond})
	r.add(Span{TraceID: "1", ID: "1"})
	select {
	case <-got: // below min_flush_spans: only the timer sent it
	case <-time.After(5 * time.Second):
		t.Fatal("the flush timer sent nothing")
	}
	if v, _ := st.Value("tracing.zipkin.timer_flushed"); v < 1 {
		t.Errorf("timer_flushed %d", v)
	}
	start := time.Now()
	for i := range maxBufferedSpans + 10 {
		r.add(Span{TraceID: "1", ID: strconv.Itoa(i)})
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("adding spans blocked for %v", d)
	}
	waitCounter(t, st, "tracing.zipkin.reports_dropped", 10)
	close(block)
	r.close()
}
