package formatter

import (
	"testing"

	accesslogdatav3 "github.com/envoyproxy/go-control-plane/envoy/data/accesslog/v3"
)

func TestAppendValue(t *testing.T) {
	ctx := testContext()
	ctx.LogType = accesslogdatav3.AccessLogType_DownstreamEnd
	tests := []struct {
		format string
		want   string
		typ    ValueType
	}{
		{"%RESPONSE_CODE%", "200", ValueNumber},
		{"%BYTES_SENT%", "22", ValueNumber},
		{"%DURATION%", "25", ValueNumber},
		{"%DOWNSTREAM_REMOTE_PORT%", "5555", ValueNumber},
		{"%CONNECTION_ID%", "42", ValueNumber},
		{"%PROTOCOL%", "HTTP/1.1", ValueString},
		{"%REQ(:METHOD)%", "GET", ValueString},
		{"%REQ(X-MISSING)%", "", ValueMissing},
		{"%UPSTREAM_TRANSPORT_FAILURE_REASON%", "", ValueMissing},
		{"%ACCESS_LOG_TYPE%", "DownstreamEnd", ValueString},
		{"code %RESPONSE_CODE%", "code 200", ValueString},
		{"%REQ(X-MISSING)% x", "- x", ValueString},
		{"plain", "plain", ValueString},
	}
	for _, tt := range tests {
		f, err := Compile(tt.format)
		if err != nil {
			t.Fatalf("%q: %v", tt.format, err)
		}
		got, typ := f.AppendValue([]byte("pre:"), ctx)
		if string(got) != "pre:"+tt.want || typ != tt.typ {
			t.Errorf("%q: got %q type %d, want %q type %d", tt.format, got, typ, "pre:"+tt.want, tt.typ)
		}
	}
}
