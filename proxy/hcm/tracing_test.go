package hcm

import (
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	tracev3 "github.com/envoyproxy/go-control-plane/envoy/config/trace/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tracingv3 "github.com/envoyproxy/go-control-plane/envoy/type/tracing/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/outrider-proxy/outrider/proxy/netfilter"
	"github.com/outrider-proxy/outrider/telemetry/stats"
	"github.com/outrider-proxy/outrider/telemetry/tracing"
	_ "github.com/outrider-proxy/outrider/telemetry/tracing/zipkin"
)

func TestCompileTracing(t *testing.T) {
	zipkinAny, _ := anypb.New(&tracev3.ZipkinConfig{CollectorCluster: "zipkin", CollectorEndpoint: "/api/v2/spans",
		CollectorEndpointVersion: tracev3.ZipkinConfig_HTTP_JSON})
	zipkin := &tracev3.Tracing_Http{Name: "envoy.tracers.zipkin", ConfigType: &tracev3.Tracing_Http_TypedConfig{TypedConfig: zipkinAny}}
	datadog := &tracev3.Tracing_Http{Name: "envoy.tracers.datadog"}
	for _, tc := range []struct {
		name      string
		tr        *hcmv3.HttpConnectionManager_Tracing
		dir       corev3.TrafficDirection
		bootstrap *tracev3.Tracing_Http
		wantErr   string
		check     func(t *testing.T, tc *tracingConfig)
	}{
		{name: "no tracing block", bootstrap: datadog, check: func(t *testing.T, tc *tracingConfig) {
			if tc != nil {
				t.Fatal("tracing compiled without a tracing block")
			}
		}},
		{name: "defaults", tr: &hcmv3.HttpConnectionManager_Tracing{}, check: func(t *testing.T, tc *tracingConfig) {
			if tc.tracer != nil || tc.egress || tc.sampling != tracing.FullSampling || tc.tags.MaxPathTagLength != 256 || tc.spawnUpstream {
				t.Fatalf("%+v", tc)
			}
		}},
		{name: "fields", dir: corev3.TrafficDirection_OUTBOUND, tr: &hcmv3.HttpConnectionManager_Tracing{
			RandomSampling: &typev3.Percent{Value: 25}, OverallSampling: &typev3.Percent{Value: 50}, ClientSampling: &typev3.Percent{Value: 0},
			MaxPathTagLength: wrapperspb.UInt32(10), SpawnUpstreamSpan: wrapperspb.Bool(true), Verbose: true, NoContextPropagation: true,
			CustomTags: []*tracingv3.CustomTag{{Tag: "a", Type: &tracingv3.CustomTag_Literal_{Literal: &tracingv3.CustomTag_Literal{Value: "b"}}}},
		}, check: func(t *testing.T, tc *tracingConfig) {
			want := tracing.Sampling{Client: tracing.Fraction{Num: 0, Den: 10000}, Random: tracing.Fraction{Num: 2500, Den: 10000}, Overall: tracing.Fraction{Num: 5000, Den: 10000}}
			if !tc.egress || tc.sampling != want || tc.tags.MaxPathTagLength != 10 || !tc.spawnUpstream || !tc.tags.Verbose ||
				!tc.noPropagation || len(tc.tags.CustomTags) != 1 {
				t.Fatalf("%+v", tc)
			}
		}},
		{name: "bootstrap provider", tr: &hcmv3.HttpConnectionManager_Tracing{}, bootstrap: datadog, wantErr: `tracing.provider: unsupported tracer "envoy.tracers.datadog"`},
		{name: "own provider wins", tr: &hcmv3.HttpConnectionManager_Tracing{Provider: zipkin}, bootstrap: datadog,
			wantErr: `tracing.provider: envoy.tracers.zipkin: collector_cluster: unknown cluster "zipkin"`},
		{name: "operation", tr: &hcmv3.HttpConnectionManager_Tracing{Operation: "%REQ(x)%"}, wantErr: "tracing.operation"},
		{name: "metadata tag", tr: &hcmv3.HttpConnectionManager_Tracing{CustomTags: []*tracingv3.CustomTag{
			{Tag: "m", Type: &tracingv3.CustomTag_Metadata_{Metadata: &tracingv3.CustomTag_Metadata{}}}}},
			wantErr: "tracing.custom_tags[0] (m).metadata: not supported"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := &hcmv3.HttpConnectionManager{
				StatPrefix:     "t",
				Tracing:        tc.tr,
				RouteSpecifier: &hcmv3.HttpConnectionManager_RouteConfig{RouteConfig: &routev3.RouteConfiguration{}},
			}
			c, err := Compile(&netfilter.Context{Stats: stats.NewStore(), TrafficDirection: tc.dir, Tracing: tc.bootstrap}, p)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err %v, want one with %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			tc.check(t, c.tracing)
		})
	}
}
