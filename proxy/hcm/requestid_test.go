package hcm

import (
	"strings"
	"testing"

	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
)

// request_id_extension is accepted as Envoy's default UUID behaviour (the
// one outrider implements) and refused by name otherwise.
func TestRequestIDExtension(t *testing.T) {
	for _, tc := range []struct {
		js, wantErr string
	}{
		{`{}`, ""},
		{`{"typedConfig": {"@type": "type.googleapis.com/envoy.extensions.request_id.uuid.v3.UuidRequestIdConfig"}}`, ""},
		{`{"typedConfig": {"@type": "type.googleapis.com/envoy.extensions.request_id.uuid.v3.UuidRequestIdConfig", "useRequestIdForTraceSampling": true, "packTraceReason": true}}`, ""},
		{`{"typedConfig": {"@type": "type.googleapis.com/envoy.extensions.request_id.uuid.v3.UuidRequestIdConfig", "packTraceReason": false}}`, "pack_trace_reason: false"},
		{`{"typedConfig": {"@type": "type.googleapis.com/envoy.extensions.request_id.uuid.v3.UuidRequestIdConfig", "useRequestIdForTraceSampling": false}}`, "use_request_id_for_trace_sampling: false"},
		{`{"typedConfig": {"@type": "type.googleapis.com/google.protobuf.Empty"}}`, "google.protobuf.Empty is not supported"},
	} {
		err := checkRequestIDExtension(mustJSON(t, tc.js, &hcmv3.RequestIDExtension{}))
		if tc.wantErr == "" && err != nil || tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
			t.Errorf("%s: error %v, want %q", tc.js, err, tc.wantErr)
		}
	}
}
