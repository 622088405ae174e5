package extauthz

import (
	"slices"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extauthzv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/outrider-proxy/outrider/proxy/headers"
)

func TestRewriteQuery(t *testing.T) {
	tests := []struct {
		path   string
		set    []kv
		remove []string
		want   string
	}{
		{"/p", []kv{{"b", "2"}, {"a", "1"}}, nil, "/p?a=1&b=2"},
		{"/p?z=1&y=2&y=3", nil, nil, "/p?y=2&y=3&z=1"},
		{"/p?z=1&y=2&y=3", []kv{{"y", "9"}}, nil, "/p?y=9&z=1"},
		{"/p?a=1&flag", nil, []string{"a"}, "/p?flag="},
		{"/p?a=1", nil, []string{"a"}, "/p"},
		{"/p?a=1&&b=2", nil, []string{"missing"}, "/p?a=1&b=2"},
	}
	for _, tc := range tests {
		if got := rewriteQuery(tc.path, tc.set, tc.remove); got != tc.want {
			t.Errorf("rewriteQuery(%q, %v, %v) = %q, want %q", tc.path, tc.set, tc.remove, got, tc.want)
		}
	}
}

func TestSanitize(t *testing.T) {
	for in, want := range map[string]string{"ok": "ok", "a\xffb": "a!b", "\xc3": "!", "é\xfe\xfe": "é!!"} {
		if got := sanitize(in); got != want {
			t.Errorf("sanitize(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestFromCheckResponse(t *testing.T) {
	hv := func(k, v string, app *wrapperspb.BoolValue, act corev3.HeaderValueOption_HeaderAppendAction) *corev3.HeaderValueOption {
		return &corev3.HeaderValueOption{Header: &corev3.HeaderValue{Key: k, Value: v}, Append: app, AppendAction: act}
	}
	ok := fromCheckResponse(&authv3.CheckResponse{Status: &status.Status{}, HttpResponse: &authv3.CheckResponse_OkResponse{
		OkResponse: &authv3.OkHttpResponse{
			Headers: []*corev3.HeaderValueOption{hv("s", "1", nil, 0), hv("a", "2", wrapperspb.Bool(true), 0),
				hv("f", "3", wrapperspb.Bool(false), 0)},
			ResponseHeadersToAdd: []*corev3.HeaderValueOption{
				hv("r-add", "1", nil, corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD),
				hv("r-absent", "2", nil, corev3.HeaderValueOption_ADD_IF_ABSENT),
				hv("r-over", "3", nil, corev3.HeaderValueOption_OVERWRITE_IF_EXISTS),
				hv("r-set", "4", nil, corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD),
				hv("r-set2", "5", wrapperspb.Bool(false), corev3.HeaderValueOption_ADD_IF_ABSENT),
				hv("r-add2", "6", wrapperspb.Bool(true), 0),
			},
		}}})
	if ok.status != statusOK ||
		!slices.Equal(ok.headersToSet, []kv{{"s", "1"}, {"f", "3"}}) || !slices.Equal(ok.headersToAppend, []kv{{"a", "2"}}) ||
		!slices.Equal(ok.respAdd, []kv{{"r-add", "1"}, {"r-add2", "6"}}) || !slices.Equal(ok.respSet, []kv{{"r-set", "4"}, {"r-set2", "5"}}) ||
		!slices.Equal(ok.respAddIfAbsent, []kv{{"r-absent", "2"}}) || !slices.Equal(ok.respOverwriteIfExists, []kv{{"r-over", "3"}}) {
		t.Errorf("ok response: %+v", ok)
	}
	denied := fromCheckResponse(&authv3.CheckResponse{Status: &status.Status{Code: 16}, HttpResponse: &authv3.CheckResponse_DeniedResponse{
		DeniedResponse: &authv3.DeniedHttpResponse{Status: &typev3.HttpStatus{Code: typev3.StatusCode_TooManyRequests},
			Headers: []*corev3.HeaderValueOption{hv("x", "1", nil, 0), hv("y", "2", wrapperspb.Bool(true), 0)}, Body: "b"}}})
	if denied.status != statusDenied || denied.statusCode != 429 || denied.body != "b" ||
		!slices.Equal(denied.headersToSet, []kv{{"x", "1"}}) {
		t.Errorf("denied response: %+v", denied)
	}
	// A denial without denied_response is a bare 403; an OK status with a
	// denied_response still allows.
	if r := fromCheckResponse(&authv3.CheckResponse{Status: &status.Status{Code: 7}}); r.status != statusDenied || r.statusCode != 403 {
		t.Errorf("bare denial: %+v", r)
	}
	if r := fromCheckResponse(&authv3.CheckResponse{}); r.status != statusOK {
		t.Errorf("empty response: %+v", r)
	}
}

func TestPerRoute(t *testing.T) {
	mk := func(m *extauthzv3.ExtAuthzPerRoute) *anypb.Any {
		a, err := anypb.New(m)
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	c := &config{}
	both := mk(&extauthzv3.ExtAuthzPerRoute{Override: &extauthzv3.ExtAuthzPerRoute_CheckSettings{CheckSettings: &extauthzv3.CheckSettings{
		DisableRequestBodyBuffering: true, WithRequestBody: &extauthzv3.BufferSettings{MaxRequestBytes: 1}}}})
	if p := c.routeConfig(both); !p.broken {
		t.Error("disable_request_body_buffering with with_request_body compiled")
	}
	other := mk(&extauthzv3.ExtAuthzPerRoute{Override: &extauthzv3.ExtAuthzPerRoute_CheckSettings{CheckSettings: &extauthzv3.CheckSettings{
		ServiceOverride: &extauthzv3.CheckSettings_GrpcService{GrpcService: &corev3.GrpcService{}}}}})
	if p := c.routeConfig(other); !p.broken {
		t.Error("check_settings.grpc_service compiled")
	}
	wrong, _ := anypb.New(&wrapperspb.BoolValue{})
	if p := c.routeConfig(wrong); !p.broken {
		t.Error("a wrong message type compiled")
	}
	body := mk(&extauthzv3.ExtAuthzPerRoute{Override: &extauthzv3.ExtAuthzPerRoute_CheckSettings{CheckSettings: &extauthzv3.CheckSettings{
		WithRequestBody: &extauthzv3.BufferSettings{MaxRequestBytes: 5, AllowPartialMessage: true}}}})
	p := c.routeConfig(body)
	if p.broken || p.body == nil || p.body.maxBytes != 5 || !p.body.allowPartial {
		t.Errorf("with_request_body: %+v", p)
	}
	if c.routeConfig(body) != p {
		t.Error("the compiled config is not cached")
	}
}

func TestIsUpgrade(t *testing.T) {
	mk := func(kv ...string) *headers.Map {
		h := &headers.Map{}
		for i := 0; i+1 < len(kv); i += 2 {
			h.Add(kv[i], kv[i+1])
		}
		return h
	}
	tests := []struct {
		h    *headers.Map
		want bool
	}{
		{mk(":method", "GET", "upgrade", "WebSocket", "connection", "keep-alive, Upgrade"), true},
		{mk(":method", "GET", "upgrade", "h2c", "connection", "upgrade"), false},
		{mk(":method", "GET", "upgrade", "websocket"), false},
		{mk(":method", "CONNECT", ":protocol", "websocket"), true},
		{mk(":method", "CONNECT", ":protocol", "bytestream"), false},
		{mk(":method", "CONNECT"), false},
	}
	for i, tc := range tests {
		if got := isUpgrade(tc.h); got != tc.want {
			t.Errorf("%d: isUpgrade = %v, want %v", i, got, tc.want)
		}
	}
}

func TestValidation(t *testing.T) {
	for n, want := range map[string]bool{"x-a": true, "X-A": true, ":path": true, ":Path": false, "": false, ":": false,
		"a b": false, "a:b": false, "a\x00": false} {
		if got := validName(n); got != want {
			t.Errorf("validName(%q) = %v", n, got)
		}
	}
	for v, want := range map[string]bool{"a b\tc": true, "é": true, "a\r\nb": false, "a\x00": false, "\x7f": false, "": true} {
		if got := validValue(v); got != want {
			t.Errorf("validValue(%q) = %v", v, got)
		}
	}
	for q, want := range map[string]bool{"a-b.c_d*": true, "%20": true, "a b": false, "a=b": false, "a&b": false, "~": false} {
		if got := urlEncoded(q); got != want {
			t.Errorf("urlEncoded(%q) = %v", q, got)
		}
	}
}
