package hcm

import (
	"strings"
	"testing"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// compileLocalReply checks what the bootstrap's proto validation would
// otherwise catch, since xDS configs may reach it unvalidated, and sets the
// body formats' content types.
func TestCompileLocalReply(t *testing.T) {
	anyFilter := &accesslogv3.AccessLogFilter{FilterSpecifier: &accesslogv3.AccessLogFilter_NotHealthCheckFilter{
		NotHealthCheckFilter: &accesslogv3.NotHealthCheckFilter{}}}
	text := func(s string) *corev3.SubstitutionFormatString {
		return &corev3.SubstitutionFormatString{Format: &corev3.SubstitutionFormatString_TextFormat{TextFormat: s}}
	}
	for _, tc := range []struct {
		name  string
		cfg   *hcmv3.LocalReplyConfig
		err   string
		ctype string // the body_format's content type
	}{
		{"no filter", &hcmv3.LocalReplyConfig{Mappers: []*hcmv3.ResponseMapper{{}}}, "local_reply_config.mappers[0].filter: required", ""},
		{"status 199", &hcmv3.LocalReplyConfig{Mappers: []*hcmv3.ResponseMapper{{Filter: anyFilter, StatusCode: wrapperspb.UInt32(199)}}},
			"local_reply_config.mappers[0].status_code: 199 is not in [200, 600)", ""},
		{"text", &hcmv3.LocalReplyConfig{BodyFormat: text("%LOCAL_REPLY_BODY%")}, "", "text/plain"},
		{"content type", &hcmv3.LocalReplyConfig{BodyFormat: &corev3.SubstitutionFormatString{
			Format: &corev3.SubstitutionFormatString_TextFormat{TextFormat: "x"}, ContentType: "text/html"}}, "", "text/html"},
		{"bad text", &hcmv3.LocalReplyConfig{BodyFormat: text("%BAD(%")}, "local_reply_config.body_format.text_format: ", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			lr, err := compileLocalReply(tc.cfg)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if lr.format.contentType != tc.ctype {
				t.Fatalf("content type %q, want %q", lr.format.contentType, tc.ctype)
			}
		})
	}
	if lr, err := compileLocalReply(nil); lr != nil || err != nil {
		t.Fatalf("nil config: %v %v", lr, err)
	}
}
