package extauthz_test

import (
	"io"
	"log/slog"
	"strings"
	"testing"

	"github.com/outrider-proxy/outrider/filters/http/internal/filtertest"
	"github.com/outrider-proxy/outrider/proxy/server"
	"github.com/outrider-proxy/outrider/xds/bootstrap"
)

// configYAML is one listener whose ext_authz typed_config has the fields
// cfg (YAML flow mapping entries), with clusters "authz" and "up".
func configYAML(cfg string) string {
	return filtertest.Config(1, authzListener("l", "", cfg)) + `  - name: authz
    load_assignment: {cluster_name: authz, endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: 1}}}}]}]}
`
}

// compileConfig loads and compiles yaml; the error is the loader's
// (proto validation) or the server's.
func compileConfig(t *testing.T, yaml string) error {
	t.Helper()
	b, err := bootstrap.LoadBytes("test.yaml", []byte(yaml))
	if err != nil {
		return err
	}
	_, err = server.New(server.Options{Bootstrap: b, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	return err
}

func TestConfigErrors(t *testing.T) {
	const grpcSvc = "grpc_service: {envoy_grpc: {cluster_name: authz}}"
	const httpSvc = "http_service: {server_uri: {uri: x, cluster: authz, timeout: 1s}}"
	tests := []struct {
		name, cfg, err string // err "" means valid
	}{
		{"grpc", grpcSvc, ""},
		{"http", httpSvc + ", with_request_body: {max_request_bytes: 10}", ""},
		{"no service", "failure_mode_allow: true", "grpc_service or http_service is required"},
		{"unknown grpc cluster", "grpc_service: {envoy_grpc: {cluster_name: nope}}", `unknown cluster "nope"`},
		{"unknown http cluster", "http_service: {server_uri: {uri: x, cluster: nope, timeout: 1s}}", `unknown cluster "nope"`},
		{"google_grpc", "grpc_service: {google_grpc: {target_uri: x, stat_prefix: s}}", "only envoy_grpc"},
		{"initial_metadata", grpcSvc[:len(grpcSvc)-1] + ", initial_metadata: [{key: a, value: b}]}", "grpc_service.initial_metadata: field not supported"},
		{"filter_enabled_metadata", grpcSvc + ", filter_enabled_metadata: {filter: f, path: [{key: k}], value: {present_match: true}}",
			"filter_enabled_metadata: field not supported"},
		{"encode_raw_headers", grpcSvc + ", encode_raw_headers: true", "encode_raw_headers: field not supported"},
		{"validate_mutations", grpcSvc + ", validate_mutations: true", ""},
		{"shadow_mode", grpcSvc + ", shadow_mode: true", "shadow_mode: field not supported"},
		{"metadata_context_namespaces", grpcSvc + ", metadata_context_namespaces: [a]", "metadata_context_namespaces: field not supported"},
		{"charge_cluster_response_stats false", grpcSvc + ", charge_cluster_response_stats: false", ""},
		{"transport v2", grpcSvc + ", transport_api_version: V2", "transport_api_version"},
		{"zero max_request_bytes", grpcSvc + ", with_request_body: {allow_partial_message: true}", "with_request_body.max_request_bytes"},
		{"duplicate allowed_headers", "allowed_headers: {patterns: [{exact: a}]}, http_service: {server_uri: {uri: x, cluster: authz, timeout: 1s}, authorization_request: {allowed_headers: {patterns: [{exact: b}]}}}",
			"allowed_headers: duplicate"},
		{"http retry_policy", "http_service: {server_uri: {uri: x, cluster: authz, timeout: 1s}, retry_policy: {num_retries: 1}}",
			"http_service.retry_policy: field not supported"},
		{"http no timeout", "http_service: {server_uri: {uri: x, cluster: authz}}", "server_uri.timeout"},
		{"dynamic_metadata_from_headers", "http_service: {server_uri: {uri: x, cluster: authz, timeout: 1s}, authorization_response: {dynamic_metadata_from_headers: {patterns: [{exact: a}]}}}",
			"authorization_response.dynamic_metadata_from_headers: field not supported"},
		{"bad header formatter", "http_service: {server_uri: {uri: x, cluster: authz, timeout: 1s}, authorization_request: {headers_to_add: [{key: a, value: '%NOPE%'}]}}",
			"headers_to_add[0].value"},
		{"bad regex", grpcSvc + ", allowed_headers: {patterns: [{safe_regex: {regex: '('}}]}", "allowed_headers.patterns[0]"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := compileConfig(t, configYAML(tc.cfg))
			switch {
			case tc.err == "" && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case tc.err != "" && err == nil:
				t.Fatalf("no error, want %q", tc.err)
			case tc.err != "" && !strings.Contains(err.Error(), tc.err):
				t.Fatalf("error %q, want it to contain %q", err, tc.err)
			}
		})
	}
}
