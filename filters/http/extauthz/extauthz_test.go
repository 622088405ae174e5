package extauthz_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	grpcstatus "google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/outrider-proxy/outrider/filters/http/internal/filtertest"
	"github.com/outrider-proxy/outrider/proxy/server/servertest"
)

// authzConfig has seven listeners, each with its connection manager's stat
// prefix as name: "g" checks with the gRPC service (timeout 300ms, bodies up
// to 8 bytes, partial allowed; /off disabled, /ctx with context extensions
// on the virtual host and route, /nobuf without body buffering, /other with
// the HTTP service, /ghost-* with services on an unknown cluster); "f" is
// failure_mode_allow with the header and stat_prefix "waf"; "s" answers
// errors with status_on_error 503; "h" checks with the HTTP service; "v"
// has validate_mutations; "c" has clear_route_cache for x-authz-user (routes
// answer 201 to x-authz-user: alice, 202 to x-flag: on) and
// max_denied_response_body_bytes 3; "d" is disabled by filter_enabled 0% with
// deny_at_disable.
func authzConfig(upPort, grpcPort, httpPort int) string {
	return filtertest.Config(upPort,
		authzListener("g", `
      virtual_hosts: [{name: v, domains: ["*"],
        typed_per_filter_config: {envoy.filters.http.ext_authz: {
          "@type": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute,
          check_settings: {context_extensions: {vh: v1, shared: vhost}}}},
        routes: [
        {match: {prefix: /off}, route: {cluster: up}, typed_per_filter_config: {envoy.filters.http.ext_authz: {
          "@type": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute, disabled: true}}},
        {match: {prefix: /ctx}, route: {cluster: up}, typed_per_filter_config: {envoy.filters.http.ext_authz: {
          "@type": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute,
          check_settings: {context_extensions: {route: r1, shared: route}}}}},
        {match: {prefix: /nobuf}, route: {cluster: up}, typed_per_filter_config: {envoy.filters.http.ext_authz: {
          "@type": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute,
          check_settings: {disable_request_body_buffering: true}}}},
        {match: {prefix: /other}, route: {cluster: up}, typed_per_filter_config: {envoy.filters.http.ext_authz: {
          "@type": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute,
          check_settings: {http_service: {server_uri: {uri: "http://a", cluster: authz_http, timeout: 1s}, path_prefix: /auth2}}}}},
        {match: {prefix: /ghost-http}, route: {cluster: up}, typed_per_filter_config: {envoy.filters.http.ext_authz: {
          "@type": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute,
          check_settings: {http_service: {server_uri: {uri: "http://a", cluster: ghost, timeout: 1s}}}}}},
        {match: {prefix: /ghost-grpc}, route: {cluster: up}, typed_per_filter_config: {envoy.filters.http.ext_authz: {
          "@type": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute,
          check_settings: {grpc_service: {envoy_grpc: {cluster_name: ghost}}}}}},
        {match: {prefix: /}, route: {cluster: up}}]}]`, `
        transport_api_version: V3,
        grpc_service: {envoy_grpc: {cluster_name: authz_grpc}, timeout: 0.3s},
        with_request_body: {max_request_bytes: 8, allow_partial_message: true}`),
		authzListener("f", "", `
        grpc_service: {envoy_grpc: {cluster_name: authz_grpc}},
        failure_mode_allow: true, failure_mode_allow_header_add: true, stat_prefix: waf`),
		authzListener("s", "", `
        grpc_service: {envoy_grpc: {cluster_name: authz_grpc}},
        status_on_error: {code: ServiceUnavailable}`),
		authzListener("h", "", `
        with_request_body: {max_request_bytes: 100}, charge_cluster_response_stats: false,
        http_service: {
          server_uri: {uri: "http://authz", cluster: authz_http, timeout: 1s},
          path_prefix: /auth,
          authorization_request: {
            allowed_headers: {patterns: [{exact: x-test}, {exact: x-case}, {prefix: x-keep-}]},
            headers_to_add: [{key: x-added, value: "%REQ(:METHOD)%-static"}]},
          authorization_response: {
            allowed_upstream_headers: {patterns: [{exact: x-current-user}]},
            allowed_upstream_headers_to_append: {patterns: [{exact: x-append}]},
            allowed_client_headers: {patterns: [{exact: x-deny-reason}]},
            allowed_client_headers_on_success: {patterns: [{exact: x-ok-client}]}}}`),
		authzListener("v", "", `
        grpc_service: {envoy_grpc: {cluster_name: authz_grpc}}, validate_mutations: true`),
		authzListener("c", `
      virtual_hosts: [{name: v, domains: ["*"], routes: [
        {match: {prefix: /, headers: [{name: x-authz-user, string_match: {exact: alice}}]}, direct_response: {status: 201}},
        {match: {prefix: /, headers: [{name: x-flag, string_match: {exact: "on"}}]}, direct_response: {status: 202}},
        {match: {prefix: /}, route: {cluster: up}}]}]`, `
        grpc_service: {envoy_grpc: {cluster_name: authz_grpc}},
        clear_route_cache: true, clear_route_cache_headers: [X-Authz-User], max_denied_response_body_bytes: 3`),
		authzListener("d", "", `
        grpc_service: {envoy_grpc: {cluster_name: authz_grpc}},
        filter_enabled: {default_value: {numerator: 0}},
        deny_at_disable: {default_value: true}`),
	) + fmt.Sprintf(`  - name: authz_grpc
    connect_timeout: 1s
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {http2_protocol_options: {}}
    load_assignment: {cluster_name: authz_grpc, endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: %d}}}}]}]}
  - name: authz_http
    connect_timeout: 1s
    load_assignment: {cluster_name: authz_http, endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: %d}}}}]}]}
`, grpcPort, httpPort)
}

// authzListener is a listener named name whose ext_authz filter has the
// ExtAuthz fields cfg (YAML flow entries) and the route config routeConfig
// ("": every request to the cluster up).
func authzListener(name, routeConfig, cfg string) string {
	return filtertest.Listener(name, routeConfig, `
- {name: envoy.filters.http.ext_authz, typed_config: {
    "@type": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz,
`+filtertest.Indent(cfg, 4)+`}}`)
}

// echoed is what the upstream saw.
type echoed struct {
	Path    string
	Headers map[string]string
	Body    string
}

// grpcAuthz answers Check by the request's x-test header and keeps each
// request by its x-case header.
type grpcAuthz struct {
	authv3.UnimplementedAuthorizationServer
	mu   sync.Mutex
	seen map[string]*authv3.CheckRequest
}

func (s *grpcAuthz) Check(ctx context.Context, req *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	h := req.GetAttributes().GetRequest().GetHttp().GetHeaders()
	s.mu.Lock()
	s.seen[h["x-case"]] = req
	s.mu.Unlock()
	switch h["x-test"] {
	case "deny":
		return &authv3.CheckResponse{
			Status: &status.Status{Code: int32(codes.PermissionDenied)},
			HttpResponse: &authv3.CheckResponse_DeniedResponse{DeniedResponse: &authv3.DeniedHttpResponse{
				Status: &typev3.HttpStatus{Code: typev3.StatusCode_Unauthorized},
				Headers: []*corev3.HeaderValueOption{
					{Header: &corev3.HeaderValue{Key: "x-deny", Value: "yes"}},
					{Header: &corev3.HeaderValue{Key: "content-type", Value: "text/x-denied"}},
				},
				Body: "go away",
			}},
		}, nil
	case "deny-default":
		return &authv3.CheckResponse{Status: &status.Status{Code: int32(codes.PermissionDenied)}}, nil
	case "error":
		return nil, grpcstatus.Error(codes.Unavailable, "down")
	case "bad-header", "bad-query", "bad-remove", "bad-denial":
		ok := &authv3.OkHttpResponse{}
		switch h["x-test"] {
		case "bad-header":
			ok.Headers = []*corev3.HeaderValueOption{{Header: &corev3.HeaderValue{Key: "x-evil", Value: "a\r\nx-injected: b"}}}
		case "bad-query":
			ok.QueryParametersToSet = []*corev3.QueryParameter{{Key: "q", Value: "a b"}}
		case "bad-remove":
			ok.HeadersToRemove = []string{"bad name", "x-remove-me"}
		case "bad-denial":
			return &authv3.CheckResponse{Status: &status.Status{Code: int32(codes.PermissionDenied)},
				HttpResponse: &authv3.CheckResponse_DeniedResponse{DeniedResponse: &authv3.DeniedHttpResponse{
					Headers: []*corev3.HeaderValueOption{{Header: &corev3.HeaderValue{Key: "bad name", Value: "v"}}}}}}, nil
		}
		return &authv3.CheckResponse{Status: &status.Status{}, HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: ok}}, nil
	case "flag":
		return &authv3.CheckResponse{Status: &status.Status{}, HttpResponse: &authv3.CheckResponse_OkResponse{
			OkResponse: &authv3.OkHttpResponse{Headers: []*corev3.HeaderValueOption{
				{Header: &corev3.HeaderValue{Key: "x-flag", Value: "on"}}}}}}, nil
	case "slow":
		// Past the filter's timeout. The server's own deadline (from
		// grpc-timeout) can end this a hair before the client's does, so
		// that end must not be an OK.
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(3 * time.Second):
		}
		return &authv3.CheckResponse{Status: &status.Status{}}, nil
	}
	return &authv3.CheckResponse{
		Status: &status.Status{},
		HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: &authv3.OkHttpResponse{
			Headers: []*corev3.HeaderValueOption{
				{Header: &corev3.HeaderValue{Key: "x-authz-user", Value: "alice"}},
				{Header: &corev3.HeaderValue{Key: "x-existing", Value: "extra"}, Append: wrapperspb.Bool(true)},
				{Header: &corev3.HeaderValue{Key: "x-absent", Value: "never"}, Append: wrapperspb.Bool(true)},
			},
			HeadersToRemove: []string{"x-remove-me", ":path", "host"},
			ResponseHeadersToAdd: []*corev3.HeaderValueOption{
				{Header: &corev3.HeaderValue{Key: "x-resp-add", Value: "r1"}},
				{Header: &corev3.HeaderValue{Key: "x-up", Value: "replaced"},
					AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS},
				{Header: &corev3.HeaderValue{Key: "x-up-absent", Value: "added"},
					AppendAction: corev3.HeaderValueOption_ADD_IF_ABSENT},
			},
			QueryParametersToSet:    []*corev3.QueryParameter{{Key: "q", Value: "1"}},
			QueryParametersToRemove: []string{"drop"},
		}},
	}, nil
}

func (s *grpcAuthz) request(t *testing.T, c string) *authv3.CheckRequest {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.seen[c]
}

// httpSeen is what the HTTP authorization service saw.
type httpSeen struct {
	method, uri, host, body string
	header                  http.Header
}

type fixture struct {
	p     *servertest.Proxy
	grpc  *grpcAuthz
	mu    sync.Mutex
	https map[string]httpSeen // by x-case
	hits  map[string]int      // upstream requests by x-case
}

func startFixture(t *testing.T) *fixture {
	t.Helper()
	fx := &fixture{grpc: &grpcAuthz{seen: map[string]*authv3.CheckRequest{}},
		https: map[string]httpSeen{}, hits: map[string]int{}}
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		e := echoed{Path: r.URL.RequestURI(), Headers: map[string]string{}, Body: string(b)}
		for k, v := range r.Header {
			e.Headers[strings.ToLower(k)] = strings.Join(v, "|")
		}
		fx.mu.Lock()
		fx.hits[r.Header.Get("x-case")]++
		fx.mu.Unlock()
		w.Header().Set("x-up", "original")
		json.NewEncoder(w).Encode(e)
	}))
	t.Cleanup(up.Close)
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		fx.mu.Lock()
		fx.https[r.Header.Get("x-case")] = httpSeen{method: r.Method, uri: r.RequestURI, host: r.Host, body: string(b), header: r.Header.Clone()}
		fx.mu.Unlock()
		switch r.Header.Get("x-test") {
		case "deny":
			w.Header().Set("x-deny-reason", "nope")
			w.Header().Set("x-other", "hidden")
			w.WriteHeader(http.StatusUnauthorized)
			io.WriteString(w, "denied by http")
		case "error":
			w.WriteHeader(http.StatusInternalServerError)
		default:
			w.Header().Set("x-current-user", "bob")
			w.Header().Set("x-append", "two")
			w.Header().Set("x-ok-client", "yes")
			w.Header().Set("x-not-allowed", "z")
			w.Header().Set("x-envoy-auth-headers-to-remove", "x-remove-me, x-remove-too")
		}
	}))
	t.Cleanup(hs.Close)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	authv3.RegisterAuthorizationServer(gs, fx.grpc)
	go gs.Serve(ln)
	t.Cleanup(gs.Stop)
	fx.p = servertest.Start(t, authzConfig(up.Listener.Addr().(*net.TCPAddr).Port,
		ln.Addr().(*net.TCPAddr).Port, hs.Listener.Addr().(*net.TCPAddr).Port))
	return fx
}

// do sends a request with the header pairs hdr and returns the response,
// its body and what the upstream saw (nil when it was not reached).
func (fx *fixture) do(t *testing.T, method, listener, path, body string, hdr ...string) (*http.Response, string, *echoed) {
	t.Helper()
	var rb io.Reader
	if body != "" {
		rb = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, fx.p.URL(listener, path), rb)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Add(hdr[i], hdr[i+1])
	}
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	fx.mu.Lock()
	reached := fx.hits[req.Header.Get("x-case")] > 0
	fx.mu.Unlock()
	if !reached {
		return resp, string(b), nil
	}
	e := &echoed{}
	if err := json.Unmarshal(b, e); err != nil {
		t.Fatalf("upstream answer %q: %v", b, err)
	}
	return resp, string(b), e
}
