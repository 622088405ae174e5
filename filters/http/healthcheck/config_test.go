package healthcheck_test

import (
	"strings"
	"testing"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/health_check/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/outrider-proxy/outrider/filters/http/healthcheck"
	"github.com/outrider-proxy/outrider/proxy/httpfilter"
	"github.com/outrider-proxy/outrider/telemetry/stats"
)

func TestConfigErrors(t *testing.T) {
	tests := []struct {
		name string
		cfg  *hcv3.HealthCheck
		want string // "" for valid
	}{
		{"minimal", &hcv3.HealthCheck{PassThroughMode: wrapperspb.Bool(false)}, ""},
		{"pass_through_mode required", &hcv3.HealthCheck{}, "pass_through_mode: required"},
		{"cache_time without pass through", &hcv3.HealthCheck{PassThroughMode: wrapperspb.Bool(false), CacheTime: durationpb.New(1e9)},
			"cache_time: cache_time_ms must not be set when path_through_mode is disabled"},
		{"cache_time with pass through", &hcv3.HealthCheck{PassThroughMode: wrapperspb.Bool(true), CacheTime: durationpb.New(1e9)}, ""},
		{"header without name", &hcv3.HealthCheck{PassThroughMode: wrapperspb.Bool(false), Headers: []*routev3.HeaderMatcher{{}}}, "headers[0].name: required"},
		{"percentage above 100", &hcv3.HealthCheck{PassThroughMode: wrapperspb.Bool(false),
			ClusterMinHealthyPercentages: map[string]*typev3.Percent{"c": {Value: 101}}}, `cluster_min_healthy_percentages["c"]`},
	}
	f, err := httpfilter.Registry.Lookup(healthcheck.Name, "")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a, err := anypb.New(tc.cfg)
			if err != nil {
				t.Fatal(err)
			}
			_, err = f.Create(&httpfilter.Context{Stats: stats.NewStore()}, a)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			}
		})
	}
}
