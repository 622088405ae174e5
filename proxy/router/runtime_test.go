package router

import (
	"testing"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/outrider-proxy/outrider/proxy/runtime"
)

// runtime_fraction with a runtime_key reads the process runtime: an integer is a percentage, a
// {numerator, denominator} value its own fraction, and an absent key the default_value.
func TestRuntimeFractionKey(t *testing.T) {
	lr := &bootstrapv3.LayeredRuntime{}
	if err := protojson.Unmarshal([]byte(`{"layers":[{"name":"s","static_layer":{
		"pct": 10, "frac": {"numerator": 2, "denominator": "TEN_THOUSAND"}}}]}`), lr); err != nil {
		t.Fatal(err)
	}
	l, err := runtime.New(lr, nil)
	if err != nil {
		t.Fatal(err)
	}
	runtime.SetProcess(l)
	defer runtime.ClearProcess(l)
	tests := []struct {
		key  string
		rnd  uint64
		want bool
	}{
		{"pct", 9, true}, {"pct", 10, false}, {"pct", 109, true},
		{"frac", 1, true}, {"frac", 2, false}, {"frac", 10001, true},
		{"absent", 49, true}, {"absent", 50, false}, // default_value 50%
	}
	for _, tc := range tests {
		tb := oneRoute(t, `{prefix: "/", runtime_fraction: {default_value: {numerator: 50}, runtime_key: `+tc.key+`}}`)
		r, _ := tb.Select(req("GET h /"), tc.rnd)
		if (r != nil) != tc.want {
			t.Errorf("key %s rnd %d: matched %v, want %v", tc.key, tc.rnd, r != nil, tc.want)
		}
	}
}
