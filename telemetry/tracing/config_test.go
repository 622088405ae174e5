package tracing_test

import (
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	tracev3 "github.com/envoyproxy/go-control-plane/envoy/config/trace/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/outrider-proxy/outrider/proxy/upstream"
	"github.com/outrider-proxy/outrider/telemetry/stats"
	"github.com/outrider-proxy/outrider/telemetry/tracing"
	_ "github.com/outrider-proxy/outrider/telemetry/tracing/otel"
	_ "github.com/outrider-proxy/outrider/telemetry/tracing/zipkin"
)

func provider(name string, m proto.Message) *tracev3.Tracing_Http {
	a, _ := anypb.New(m)
	return &tracev3.Tracing_Http{Name: name, ConfigType: &tracev3.Tracing_Http_TypedConfig{TypedConfig: a}}
}

func TestProviderConfigErrors(t *testing.T) {
	st := stats.NewStore()
	m := upstream.NewManager(st.Root())
	t.Cleanup(m.Close)
	if err := m.AddOrUpdate(&clusterv3.Cluster{
		Name: "c", ConnectTimeout: durationpb.New(time.Second),
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC},
		LoadAssignment:       &endpointv3.ClusterLoadAssignment{ClusterName: "c"},
	}); err != nil {
		t.Fatal(err)
	}
	zk := func(mod func(*tracev3.ZipkinConfig)) *tracev3.Tracing_Http {
		c := &tracev3.ZipkinConfig{CollectorCluster: "c", CollectorEndpoint: "/api/v2/spans", CollectorEndpointVersion: tracev3.ZipkinConfig_HTTP_JSON}
		mod(c)
		return provider("envoy.tracers.zipkin", c)
	}
	grpcSvc := func(cluster string) *corev3.GrpcService {
		return &corev3.GrpcService{TargetSpecifier: &corev3.GrpcService_EnvoyGrpc_{EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{ClusterName: cluster}}}
	}
	tests := []struct {
		p    *tracev3.Tracing_Http
		want string // "" means it compiles
	}{
		{zk(func(*tracev3.ZipkinConfig) {}), ""},
		{zk(func(c *tracev3.ZipkinConfig) { c.CollectorCluster = "nope" }), `envoy.tracers.zipkin: collector_cluster: unknown cluster "nope"`},
		{zk(func(c *tracev3.ZipkinConfig) { c.CollectorEndpointVersion = tracev3.ZipkinConfig_HTTP_PROTO }), "collector_endpoint_version: HTTP_PROTO is not supported"},
		{zk(func(c *tracev3.ZipkinConfig) { c.CollectorEndpoint = "" }), "collector_endpoint: required"},
		{zk(func(c *tracev3.ZipkinConfig) { c.SplitSpansForRequest = true }), "split_spans_for_request"},
		{zk(func(c *tracev3.ZipkinConfig) {
			c.CollectorCluster, c.CollectorEndpoint = "", ""
			c.CollectorService = &corev3.HttpService{HttpUri: &corev3.HttpUri{Uri: "http://z/api/v2/spans", HttpUpstreamType: &corev3.HttpUri_Cluster{Cluster: "c"}}}
		}), ""},
		{zk(func(c *tracev3.ZipkinConfig) {
			c.CollectorService = &corev3.HttpService{HttpUri: &corev3.HttpUri{Uri: "http://z/api/v2/spans", HttpUpstreamType: &corev3.HttpUri_Cluster{Cluster: "nope"}}}
		}), `collector_service.http_uri.cluster: unknown cluster "nope"`},
		{provider("envoy.tracers.opentelemetry", &tracev3.OpenTelemetryConfig{GrpcService: grpcSvc("c")}), ""},
		{provider("envoy.tracers.opentelemetry", &tracev3.OpenTelemetryConfig{GrpcService: grpcSvc("nope")}), `grpc_service.envoy_grpc.cluster_name: unknown cluster "nope"`},
		{provider("envoy.tracers.opentelemetry", &tracev3.OpenTelemetryConfig{}), "one of grpc_service or http_service is required"},
		{provider("envoy.tracers.opentelemetry", &tracev3.OpenTelemetryConfig{GrpcService: &corev3.GrpcService{
			TargetSpecifier: &corev3.GrpcService_GoogleGrpc_{GoogleGrpc: &corev3.GrpcService_GoogleGrpc{TargetUri: "x"}}}}), "only envoy_grpc is supported"},
		{provider("envoy.tracers.opentelemetry", &tracev3.OpenTelemetryConfig{GrpcService: grpcSvc("c"),
			Sampler: &corev3.TypedExtensionConfig{Name: "s"}}), "sampler"},
		{provider("envoy.tracers.opentelemetry", &tracev3.OpenTelemetryConfig{HttpService: &corev3.HttpService{
			HttpUri: &corev3.HttpUri{Uri: "/v1/traces", HttpUpstreamType: &corev3.HttpUri_Cluster{Cluster: "c"}}}}), "http_service.http_uri.uri"},
		{provider("envoy.tracers.datadog", &tracev3.DatadogConfig{}), `unsupported tracer "envoy.tracers.datadog"`},
	}
	for i, tc := range tests {
		tr, err := tracing.New(&tracing.Context{Clusters: m, Stats: st}, tc.p)
		if tc.want == "" {
			if err != nil {
				t.Errorf("%d: %v", i, err)
				continue
			}
			tr.Close()
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%d: error %v, want %q", i, err, tc.want)
		}
		if tr != nil {
			tr.Close()
		}
	}
}

func TestDuplicateTracerPanics(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Error("registering envoy.tracers.zipkin twice did not panic")
		}
	}()
	tracing.Registry.Register("envoy.tracers.zipkin", nil, nil)
}
