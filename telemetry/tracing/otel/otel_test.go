package otel

import (
	"testing"

	"github.com/outrider-proxy/outrider/proxy/headers"
	"github.com/outrider-proxy/outrider/telemetry/tracing"
)

func TestParseTraceparent(t *testing.T) {
	const trace, span = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"
	tests := []struct {
		in      string
		ok      bool
		sampled bool
	}{
		{"00-" + trace + "-" + span + "-01", true, true},
		{"00-" + trace + "-" + span + "-00", true, false},
		{"00-" + trace + "-" + span + "-03", true, true},         // other flags kept out
		{"01-" + trace + "-" + span + "-01-extra", false, false}, // Envoy takes exactly 55 characters
		{"ff-" + trace + "-" + span + "-01", true, true},         // and does not check the version
		{"zz-" + trace + "-" + span + "-01", false, false},
		{"00-00000000000000000000000000000000-" + span + "-01", false, false},
		{"00-" + trace + "-0000000000000000-01", false, false},
		{"00-" + trace + "-" + span + "-0x", false, false},
		{"00-" + trace[:30] + "-" + span + "-01", false, false},
		{"", false, false},
	}
	for _, tc := range tests {
		c, ok := parseTraceparent([]byte(tc.in))
		if ok != tc.ok || (ok && c.sampled != tc.sampled) {
			t.Errorf("%q: ok %v sampled %v, want %v %v", tc.in, ok, c.sampled, tc.ok, tc.sampled)
		}
	}
}

func TestMalformedTraceparentIsNull(t *testing.T) {
	tr := &Tracer{}
	h := &headers.Map{}
	h.Set("traceparent", "00-nothex")
	if s := tr.StartSpan(&tracing.StartOptions{Request: h}); s != nil {
		t.Errorf("malformed traceparent started %T", s)
	}
}
