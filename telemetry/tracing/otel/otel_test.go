package otel

import "testing"

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
		{"01-" + trace + "-" + span + "-01-extra", true, true},   // a later version may add fields
		{"00-" + trace + "-" + span + "-01-extra", false, false}, // version 00 has exactly four
		{"ff-" + trace + "-" + span + "-01", false, false},       // version ff is invalid
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
