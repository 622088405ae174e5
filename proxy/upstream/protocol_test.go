package upstream

import (
	"strings"
	"testing"

	"github.com/outrider-proxy/outrider/telemetry/stats"
)

func TestCompileProtocol(t *testing.T) {
	const hpo = `"typed_extension_protocol_options":{"envoy.extensions.upstreams.http.v3.HttpProtocolOptions":{"@type":"type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",`
	tests := []struct {
		name           string
		js             string
		wantErr        string
		want           Protocol
		h1Down, h2Down bool // UseHTTP2 for an HTTP/1 and an HTTP/2 downstream
		maxConc        uint32
	}{
		{name: "default", js: `{"name":"a"}`, want: ProtocolHTTP1, maxConc: DefaultMaxConcurrentStreams},
		{name: "explicit h2", js: `{"name":"a",` + hpo + `"explicit_http_config":{"http2_protocol_options":{"max_concurrent_streams":7}}}}}`,
			want: ProtocolHTTP2, h1Down: true, h2Down: true, maxConc: 7},
		{name: "explicit h1", js: `{"name":"a",` + hpo + `"explicit_http_config":{"http_protocol_options":{}}}}}`, want: ProtocolHTTP1, maxConc: DefaultMaxConcurrentStreams},
		{name: "downstream", js: `{"name":"a",` + hpo + `"use_downstream_protocol_config":{"http2_protocol_options":{}}}}}`,
			want: ProtocolDownstream, h2Down: true, maxConc: DefaultMaxConcurrentStreams},
		{name: "auto plaintext", js: `{"name":"a",` + hpo + `"auto_config":{"http2_protocol_options":{}}}}}`, want: ProtocolAuto, maxConc: DefaultMaxConcurrentStreams},
		{name: "deprecated field", js: `{"name":"a","http2_protocol_options":{"max_concurrent_streams":3}}`, want: ProtocolHTTP2, h1Down: true, h2Down: true, maxConc: 3},
		{name: "common options", js: `{"name":"a",` + hpo + `"common_http_protocol_options":{"max_requests_per_connection":5},"explicit_http_config":{"http2_protocol_options":{}}}}}`,
			want: ProtocolHTTP2, h1Down: true, h2Down: true, maxConc: DefaultMaxConcurrentStreams},
		{name: "h3 refused", js: `{"name":"a",` + hpo + `"explicit_http_config":{"http3_protocol_options":{}}}}}`, wantErr: "http3_protocol_options: upstream HTTP/3 is not supported"},
		{name: "window refused", js: `{"name":"a",` + hpo + `"explicit_http_config":{"http2_protocol_options":{"initial_stream_window_size":65536}}}}}`,
			wantErr: "http2_protocol_options.initial_stream_window_size"},
		{name: "other extension refused", js: `{"name":"a","typed_extension_protocol_options":{"x.other":{"@type":"type.googleapis.com/google.protobuf.Empty"}}}`,
			wantErr: `typed_extension_protocol_options["x.other"]: extension not supported`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := compile(parseCluster(t, tt.js), stats.NewStore().Root(), nil)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			h := &Host{}
			if c.Protocol() != tt.want || c.UseHTTP2(false, h) != tt.h1Down || c.UseHTTP2(true, h) != tt.h2Down || c.protocol.maxConc != tt.maxConc {
				t.Fatalf("protocol %d h1 %v h2 %v max %d", c.Protocol(), c.UseHTTP2(false, h), c.UseHTTP2(true, h), c.protocol.maxConc)
			}
			if tt.name == "common options" && c.MaxRequestsPerConnection != 5 {
				t.Fatalf("max_requests_per_connection %d", c.MaxRequestsPerConnection)
			}
		})
	}
}
