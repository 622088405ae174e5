package otel_test

import (
	"context"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"github.com/outrider-proxy/outrider/proxy/server/servertest"
	"github.com/outrider-proxy/outrider/telemetry/tracing/otel"
)

// exported is one span with its resource's service.name.
type exported struct {
	span    *tracepb.Span
	service string
}

func collect(out chan<- exported, reqs []*tracepb.ResourceSpans) {
	for _, rs := range reqs {
		svc := ""
		for _, a := range rs.GetResource().GetAttributes() {
			if a.GetKey() == "service.name" {
				svc = a.GetValue().GetStringValue()
			}
		}
		for _, ss := range rs.GetScopeSpans() {
			for _, s := range ss.GetSpans() {
				out <- exported{s, svc}
			}
		}
	}
}

// grpcCollector is a real OTLP gRPC trace service.
type grpcCollector struct {
	coltracepb.UnimplementedTraceServiceServer
	out chan exported
}

func (c *grpcCollector) Export(_ context.Context, r *coltracepb.ExportTraceServiceRequest) (*coltracepb.ExportTraceServiceResponse, error) {
	collect(c.out, r.GetResourceSpans())
	return &coltracepb.ExportTraceServiceResponse{}, nil
}

func listen(t *testing.T) net.Listener {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

func startGRPCCollector(t *testing.T, out chan exported) int {
	ln := listen(t)
	srv := grpc.NewServer()
	coltracepb.RegisterTraceServiceServer(srv, &grpcCollector{out: out})
	go srv.Serve(ln)
	t.Cleanup(srv.Stop)
	return ln.Addr().(*net.TCPAddr).Port
}

// startHTTPCollector takes OTLP/HTTP protobuf on /v1/traces.
func startHTTPCollector(t *testing.T, out chan exported, hosts chan string) int {
	ln := listen(t)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		var req coltracepb.ExportTraceServiceRequest
		if r.URL.Path != "/v1/traces" || r.Header.Get("Content-Type") != "application/x-protobuf" || proto.Unmarshal(body, &req) != nil {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		hosts <- r.Host + " " + r.Header.Get("x-api-key")
		collect(out, req.GetResourceSpans())
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().(*net.TCPAddr).Port
}

func startBackend(t *testing.T, got chan http.Header) int {
	ln := listen(t)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got <- r.Header.Clone()
		io.WriteString(w, "ok")
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().(*net.TCPAddr).Port
}

const proxyYAML = `
static_resources:
  listeners:
  - name: grpc
    address: {socket_address: {address: 127.0.0.1, port_value: 0}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress_http
          tracing:
            verbose: true
            provider:
              name: envoy.tracers.opentelemetry
              typed_config:
                "@type": type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig
                grpc_service:
                  envoy_grpc: {cluster_name: otlp_grpc}
                  timeout: 1s
                service_name: front-envoy
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {prefix: /}
                route: {cluster: backend}
                decorator: {operation: routeToBackend}
  - name: http
    address: {socket_address: {address: 127.0.0.1, port_value: 0}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: http_export
          tracing:
            provider:
              name: envoy.tracers.opentelemetry
              typed_config:
                "@type": type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig
                http_service:
                  http_uri: {uri: "http://collector.example:4318/v1/traces", cluster: otlp_http, timeout: 1s}
                  request_headers_to_add:
                  - header: {key: x-api-key, value: secret}
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
              start_child_span: true
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {prefix: /}
                route: {cluster: backend}
  clusters:
  - name: backend
    connect_timeout: 1s
    load_assignment:
      cluster_name: backend
      endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: %d}}}}]}]
  - name: otlp_grpc
    connect_timeout: 1s
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {http2_protocol_options: {}}
    load_assignment:
      cluster_name: otlp_grpc
      endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: %d}}}}]}]
  - name: otlp_http
    connect_timeout: 1s
    load_assignment:
      cluster_name: otlp_http
      endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: %d}}}}]}]
`

func next[T any](t *testing.T, c chan T) T {
	t.Helper()
	select {
	case v := <-c:
		return v
	case <-time.After(5 * time.Second):
		t.Fatal("timed out")
	}
	var zero T
	return zero
}

type env struct {
	p       *servertest.Proxy
	spans   chan exported
	hosts   chan string
	backend chan http.Header
}

func setup(t *testing.T) *env {
	otel.DefaultOptions = otel.Options{MinFlushSpans: 1, FlushInterval: 50 * time.Millisecond}
	t.Cleanup(func() { otel.DefaultOptions = otel.Options{} })
	e := &env{spans: make(chan exported, 64), hosts: make(chan string, 64), backend: make(chan http.Header, 64)}
	gport := startGRPCCollector(t, e.spans)
	hport := startHTTPCollector(t, e.spans, e.hosts)
	bport := startBackend(t, e.backend)
	e.p = servertest.Start(t, fmt.Sprintf(proxyYAML, bport, gport, hport))
	return e
}

func TestOTLPGRPCJoinsTraceparent(t *testing.T) {
	e := setup(t)
	const trace, parent = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"

	// Not sampled by the caller: propagated, not exported.
	servertest.Get(t, e.p.URL("grpc", "/a"), "traceparent", "00-"+trace+"-"+parent+"-00")
	up := next(t, e.backend)
	if tp := up.Get("traceparent"); len(tp) != 55 || tp[3:35] != trace || tp[53:] != "00" {
		t.Errorf("unsampled traceparent upstream %q", tp)
	}

	servertest.Get(t, e.p.URL("grpc", "/a"), "traceparent", "00-"+trace+"-"+parent+"-01", "tracestate", "vendor=x")
	up = next(t, e.backend)
	x := next(t, e.spans) // the first exported span: the unsampled one was not
	s := x.span
	if hex.EncodeToString(s.GetTraceId()) != trace || hex.EncodeToString(s.GetParentSpanId()) != parent {
		t.Errorf("span trace %x parent %x", s.GetTraceId(), s.GetParentSpanId())
	}
	want := "00-" + trace + "-" + hex.EncodeToString(s.GetSpanId()) + "-01"
	if up.Get("traceparent") != want || up.Get("tracestate") != "vendor=x" {
		t.Errorf("upstream traceparent %q tracestate %q, want %q", up.Get("traceparent"), up.Get("tracestate"), want)
	}
	if s.GetName() != "routeToBackend" || s.GetKind() != tracepb.Span_SPAN_KIND_SERVER || x.service != "front-envoy" || s.GetTraceState() != "vendor=x" {
		t.Errorf("span name %q kind %v service %q state %q", s.GetName(), s.GetKind(), x.service, s.GetTraceState())
	}
	attrs := map[string]string{}
	for _, a := range s.GetAttributes() {
		attrs[a.GetKey()] = a.GetValue().GetStringValue()
	}
	if attrs["http.status_code"] != "200" || attrs["component"] != "proxy" || attrs["upstream_cluster"] != "backend" || attrs["http.method"] != "GET" {
		t.Errorf("attributes %v", attrs)
	}
	if s.GetEndTimeUnixNano() < s.GetStartTimeUnixNano() || s.GetStartTimeUnixNano() == 0 {
		t.Errorf("times %d..%d", s.GetStartTimeUnixNano(), s.GetEndTimeUnixNano())
	}
	events := map[string]bool{}
	for _, ev := range s.GetEvents() {
		events[ev.GetName()] = ev.GetTimeUnixNano() >= s.GetStartTimeUnixNano()
	}
	if !events["first_upstream_rx_byte_received"] || !events["first_downstream_tx_byte_sent"] {
		t.Errorf("verbose events %v", events)
	}
	e.p.WaitStat("tracing.opentelemetry.spans_sent", 1)

	// No traceparent: a new root trace, sampled by the connection manager.
	servertest.Get(t, e.p.URL("grpc", "/b"))
	up = next(t, e.backend)
	s = next(t, e.spans).span
	if len(s.GetParentSpanId()) != 0 || up.Get("traceparent") != "00-"+hex.EncodeToString(s.GetTraceId())+"-"+hex.EncodeToString(s.GetSpanId())+"-01" {
		t.Errorf("root span parent %x, upstream traceparent %q", s.GetParentSpanId(), up.Get("traceparent"))
	}
}

func TestOTLPHTTPChildSpan(t *testing.T) {
	e := setup(t)
	servertest.Get(t, e.p.URL("http", "/c"))
	up := next(t, e.backend)
	byName := map[string]*tracepb.Span{}
	for range 2 {
		s := next(t, e.spans)
		if s.service != "unknown_service:envoy" {
			t.Errorf("service.name %q", s.service)
		}
		byName[s.span.GetName()] = s.span
	}
	down, child := byName["ingress"], byName["router backend egress"]
	if down == nil || child == nil {
		t.Fatalf("spans %v", byName)
	}
	if string(child.GetParentSpanId()) != string(down.GetSpanId()) || child.GetKind() != tracepb.Span_SPAN_KIND_CLIENT {
		t.Errorf("child parent %x, downstream id %x, kind %v", child.GetParentSpanId(), down.GetSpanId(), child.GetKind())
	}
	if want := "00-" + hex.EncodeToString(child.GetTraceId()) + "-" + hex.EncodeToString(child.GetSpanId()) + "-01"; up.Get("traceparent") != want {
		t.Errorf("upstream traceparent %q, want the child's %q", up.Get("traceparent"), want)
	}
	if h := next(t, e.hosts); h != "collector.example:4318 secret" {
		t.Errorf("collector got Host and x-api-key %q", h)
	}
}
