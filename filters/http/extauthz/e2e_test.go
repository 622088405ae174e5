package extauthz_test

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"io"
	"maps"
	"net"
	"net/http"
	"strconv"
	"testing"
	"time"

	"golang.org/x/net/http2"
)

func TestGRPCService(t *testing.T) {
	fx := startFixture(t)
	_, gport, _ := net.SplitHostPort(fx.p.Addr("g"))

	t.Run("allow applies the mutations", func(t *testing.T) {
		resp, _, up := fx.do(t, "GET", "g", "/x?drop=1&a=2&a=3", "",
			"x-case", "allow", "x-existing", "orig", "x-remove-me", "1", "x-dup", "a", "x-dup", "b")
		if resp.StatusCode != 200 || up == nil {
			t.Fatalf("status %d, upstream reached %v", resp.StatusCode, up != nil)
		}
		for name, want := range map[string]string{
			"x-authz-user": "alice", "x-existing": "orig,extra", "x-remove-me": "", "x-absent": "",
		} {
			if got := up.Headers[name]; got != want {
				t.Errorf("upstream %s: %q, want %q", name, got, want)
			}
		}
		// Envoy rebuilds the query sorted by name.
		if up.Path != "/x?a=2&a=3&q=1" {
			t.Errorf("upstream path %q", up.Path)
		}
		for name, want := range map[string]string{"X-Resp-Add": "r1", "X-Up": "replaced", "X-Up-Absent": "added"} {
			if got := resp.Header.Get(name); got != want {
				t.Errorf("client %s: %q, want %q", name, got, want)
			}
		}
		req := fx.grpc.request(t, "allow")
		if req == nil {
			t.Fatal("the service saw no request")
		}
		a := req.GetAttributes()
		h := a.GetRequest().GetHttp()
		if h.GetMethod() != "GET" || h.GetPath() != "/x?drop=1&a=2&a=3" || h.GetHost() != fx.p.Addr("g") ||
			h.GetScheme() != "http" || h.GetProtocol() != "HTTP/1.1" || h.GetId() == "" {
			t.Errorf("http attributes: %v", h)
		}
		if h.GetHeaders()["x-dup"] != "a,b" || h.GetHeaders()[":method"] != "GET" || h.GetHeaders()["x-existing"] != "orig" {
			t.Errorf("headers: %v", h.GetHeaders())
		}
		if _, ok := h.GetHeaders()["x-envoy-auth-partial-body"]; ok || h.GetBody() != "" {
			t.Errorf("a body-less request sent a body: %v", h)
		}
		if got := a.GetSource().GetAddress().GetSocketAddress().GetAddress(); got != "127.0.0.1" {
			t.Errorf("source address %q", got)
		}
		if got := a.GetDestination().GetAddress().GetSocketAddress().GetPortValue(); strconv.Itoa(int(got)) != gport {
			t.Errorf("destination port %d, want %s", got, gport)
		}
		if len(a.GetContextExtensions()) != 2 || a.GetContextExtensions()["shared"] != "vhost" {
			t.Errorf("context extensions of the virtual host: %v", a.GetContextExtensions())
		}
		if a.GetRequest().GetTime() == nil {
			t.Error("no request time")
		}
	})

	tests := []struct {
		name, path, test string
		status           int
		body             string
		hdr              map[string]string
	}{
		{"denied_response", "/", "deny", 401, "go away", map[string]string{"X-Deny": "yes", "Content-Type": "text/x-denied"}},
		{"denied without denied_response", "/", "deny-default", 403, "", nil},
		{"error", "/", "error", 403, "", nil},
		{"timeout", "/", "slow", 403, "", nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp, body, up := fx.do(t, "GET", "g", tc.path, "", "x-case", tc.name, "x-test", tc.test)
			if resp.StatusCode != tc.status || up != nil {
				t.Fatalf("status %d, want %d; upstream reached %v", resp.StatusCode, tc.status, up != nil)
			}
			if body != tc.body {
				t.Errorf("body %q, want %q", body, tc.body)
			}
			for k, v := range tc.hdr {
				if got := resp.Header.Get(k); got != v {
					t.Errorf("%s: %q, want %q", k, got, v)
				}
			}
		})
	}

	t.Run("disabled route", func(t *testing.T) {
		resp, _, up := fx.do(t, "GET", "g", "/off", "", "x-case", "off", "x-test", "deny")
		if resp.StatusCode != 200 || up == nil {
			t.Fatalf("status %d, upstream reached %v", resp.StatusCode, up != nil)
		}
		if fx.grpc.request(t, "off") != nil {
			t.Error("the service was asked about a disabled route")
		}
	})

	t.Run("context extensions merged", func(t *testing.T) {
		resp, _, _ := fx.do(t, "GET", "g", "/ctx", "", "x-case", "ctx")
		if resp.StatusCode != 200 {
			t.Fatalf("status %d", resp.StatusCode)
		}
		got := fx.grpc.request(t, "ctx").GetAttributes().GetContextExtensions()
		want := map[string]string{"vh": "v1", "route": "r1", "shared": "route"}
		if !maps.Equal(got, want) {
			t.Errorf("context extensions %v, want %v", got, want)
		}
	})

	t.Run("partial body", func(t *testing.T) {
		resp, _, up := fx.do(t, "POST", "g", "/", "hello world!", "x-case", "body")
		if resp.StatusCode != 200 || up == nil || up.Body != "hello world!" {
			t.Fatalf("status %d, upstream %+v", resp.StatusCode, up)
		}
		h := fx.grpc.request(t, "body").GetAttributes().GetRequest().GetHttp()
		if h.GetBody() != "hello wo" || h.GetHeaders()["x-envoy-auth-partial-body"] != "true" {
			t.Errorf("body %q, partial %q", h.GetBody(), h.GetHeaders()["x-envoy-auth-partial-body"])
		}
	})

	t.Run("whole small body", func(t *testing.T) {
		resp, _, up := fx.do(t, "POST", "g", "/", "tiny", "x-case", "small")
		if resp.StatusCode != 200 || up == nil || up.Body != "tiny" {
			t.Fatalf("status %d, upstream %+v", resp.StatusCode, up)
		}
		h := fx.grpc.request(t, "small").GetAttributes().GetRequest().GetHttp()
		if h.GetBody() != "tiny" || h.GetHeaders()["x-envoy-auth-partial-body"] != "false" {
			t.Errorf("body %q, partial %q", h.GetBody(), h.GetHeaders()["x-envoy-auth-partial-body"])
		}
	})

	t.Run("body buffering disabled on the route", func(t *testing.T) {
		resp, _, up := fx.do(t, "POST", "g", "/nobuf", "hello world!", "x-case", "nobuf")
		if resp.StatusCode != 200 || up == nil || up.Body != "hello world!" {
			t.Fatalf("status %d, upstream %+v", resp.StatusCode, up)
		}
		h := fx.grpc.request(t, "nobuf").GetAttributes().GetRequest().GetHttp()
		if _, ok := h.GetHeaders()["x-envoy-auth-partial-body"]; ok || h.GetBody() != "" {
			t.Errorf("body sent: %q", h.GetBody())
		}
	})

	t.Run("service overrides on the route", func(t *testing.T) {
		resp, _, up := fx.do(t, "GET", "g", "/other", "", "x-case", "other")
		if resp.StatusCode != 200 || up == nil {
			t.Fatalf("status %d, upstream %+v", resp.StatusCode, up)
		}
		fx.mu.Lock()
		s := fx.https["other"]
		fx.mu.Unlock()
		if s.uri != "/auth2/other" || fx.grpc.request(t, "other") != nil {
			t.Errorf("HTTP service saw %q; gRPC service asked: %v", s.uri, fx.grpc.request(t, "other") != nil)
		}
		// A gRPC override on an unknown cluster falls back to the filter's
		// service; an HTTP one fails the check.
		resp, _, _ = fx.do(t, "GET", "g", "/ghost-grpc", "", "x-case", "ghost-grpc", "x-test", "deny")
		if resp.StatusCode != 401 {
			t.Errorf("ghost gRPC override: status %d, want the filter's service's 401", resp.StatusCode)
		}
		resp, _, up = fx.do(t, "GET", "g", "/ghost-http", "", "x-case", "ghost-http")
		if resp.StatusCode != 403 || up != nil {
			t.Errorf("ghost HTTP override: status %d, upstream reached %v", resp.StatusCode, up != nil)
		}
	})

	// allow, ctx, body, small, nobuf, other allowed; three denials; error,
	// timeout and the unknown HTTP cluster; the disabled route is not
	// counted.
	fx.p.WaitStat("http.g.ext_authz.ok", 6)
	fx.p.WaitStat("http.g.ext_authz.denied", 3)
	fx.p.WaitStat("http.g.ext_authz.error", 3)
	fx.p.WaitStat("http.g.ext_authz.disabled", 0)
	fx.p.WaitStat("cluster.up.ext_authz.ok", 6)
	fx.p.WaitStat("cluster.up.ext_authz.denied", 3)
	fx.p.WaitStat("cluster.up.ext_authz.error", 3)
	// charge_cluster_response_stats (default true): denials count as the
	// route cluster's responses.
	fx.p.WaitStat("cluster.up.upstream_rq_401", 2)
	fx.p.WaitStat("cluster.up.upstream_rq_403", 1)
}

func TestFailureModes(t *testing.T) {
	fx := startFixture(t)

	resp, _, up := fx.do(t, "GET", "f", "/", "", "x-case", "fma", "x-test", "error")
	if resp.StatusCode != 200 || up == nil {
		t.Fatalf("failure_mode_allow: status %d, upstream reached %v", resp.StatusCode, up != nil)
	}
	if got := up.Headers["x-envoy-auth-failure-mode-allowed"]; got != "true" {
		t.Errorf("x-envoy-auth-failure-mode-allowed: %q", got)
	}
	fx.p.WaitStat("http.f.ext_authz.waf.error", 1)
	fx.p.WaitStat("http.f.ext_authz.waf.failure_mode_allowed", 1)
	fx.p.WaitStat("cluster.up.ext_authz.waf.failure_mode_allowed", 1)

	resp, body, up := fx.do(t, "GET", "s", "/", "", "x-case", "soe", "x-test", "error")
	if resp.StatusCode != 503 || up != nil || body != "" {
		t.Fatalf("status_on_error: status %d body %q, upstream reached %v", resp.StatusCode, body, up != nil)
	}
	fx.p.WaitStat("http.s.ext_authz.error", 1)

	resp, _, up = fx.do(t, "GET", "d", "/", "", "x-case", "disabled")
	if resp.StatusCode != 403 || up != nil {
		t.Fatalf("deny_at_disable: status %d, upstream reached %v", resp.StatusCode, up != nil)
	}
	if fx.grpc.request(t, "disabled") != nil {
		t.Error("a disabled filter asked the service")
	}
	fx.p.WaitStat("http.d.ext_authz.disabled", 1)
	fx.p.WaitStat("http.d.ext_authz.ok", 0)
}

func TestClearRouteCacheAndDeniedBodyLimit(t *testing.T) {
	fx := startFixture(t)
	// The answer sets x-authz-user: alice, which the first route matches.
	resp, _, up := fx.do(t, "GET", "c", "/", "", "x-case", "clear")
	if resp.StatusCode != 201 || up != nil {
		t.Errorf("clear_route_cache: status %d, upstream reached %v", resp.StatusCode, up != nil)
	}
	// x-flag is not in clear_route_cache_headers: the route chosen before
	// the check stays.
	resp, _, up = fx.do(t, "GET", "c", "/", "", "x-case", "keep", "x-test", "flag")
	if resp.StatusCode != 200 || up == nil || up.Headers["x-flag"] != "on" {
		t.Errorf("header outside clear_route_cache_headers: status %d, upstream reached %v", resp.StatusCode, up != nil)
	}
	resp, body, _ := fx.do(t, "GET", "c", "/", "", "x-case", "cut", "x-test", "deny")
	if resp.StatusCode != 401 || body != "go " {
		t.Errorf("max_denied_response_body_bytes: status %d body %q", resp.StatusCode, body)
	}
}

func TestValidateMutations(t *testing.T) {
	fx := startFixture(t)
	for _, tc := range []struct {
		test   string
		status int
	}{{"bad-header", 500}, {"bad-query", 500}, {"bad-denial", 500}, {"bad-remove", 200}} {
		resp, _, up := fx.do(t, "GET", "v", "/", "", "x-case", tc.test, "x-test", tc.test, "x-remove-me", "1")
		if resp.StatusCode != tc.status || (up != nil) != (tc.status == 200) {
			t.Errorf("%s: status %d, want %d; upstream reached %v", tc.test, resp.StatusCode, tc.status, up != nil)
		}
		if up != nil && up.Headers["x-remove-me"] != "" {
			t.Errorf("%s: x-remove-me reached the upstream", tc.test)
		}
	}
	fx.p.WaitStat("http.v.ext_authz.invalid", 3)
	fx.p.WaitStat("cluster.up.ext_authz.invalid", 3)
	fx.p.WaitStat("http.v.ext_authz.ok", 1)
	fx.p.WaitStat("http.v.ext_authz.denied", 1)
}

func TestHTTPService(t *testing.T) {
	fx := startFixture(t)

	t.Run("allow", func(t *testing.T) {
		resp, _, up := fx.do(t, "GET", "h", "/p?x=1", "", "x-case", "allow", "authorization", "Bearer t",
			"x-keep-me", "k", "x-unlisted", "no", "x-remove-me", "1", "x-remove-too", "2", "x-append", "one")
		if resp.StatusCode != 200 || up == nil {
			t.Fatalf("status %d, upstream reached %v", resp.StatusCode, up != nil)
		}
		for name, want := range map[string]string{
			"x-current-user": "bob", "x-append": "one|two", "x-remove-me": "", "x-remove-too": "",
			"x-not-allowed": "", "x-ok-client": "", "x-unlisted": "no",
		} {
			if got := up.Headers[name]; got != want {
				t.Errorf("upstream %s: %q, want %q", name, got, want)
			}
		}
		if got := resp.Header.Get("x-ok-client"); got != "yes" {
			t.Errorf("client x-ok-client %q", got)
		}
		fx.mu.Lock()
		s := fx.https["allow"]
		fx.mu.Unlock()
		if s.method != "GET" || s.uri != "/auth/p?x=1" || s.host != fx.p.Addr("h") || s.body != "" {
			t.Errorf("service saw %s %s host %q body %q", s.method, s.uri, s.host, s.body)
		}
		for name, want := range map[string]string{
			"Authorization": "Bearer t", "X-Keep-Me": "k", "X-Unlisted": "", "X-Added": "GET-static",
			"X-Test": "", "User-Agent": "", "Accept-Encoding": "",
		} {
			if got := s.header.Get(name); got != want {
				t.Errorf("service %s: %q, want %q", name, got, want)
			}
		}
	})

	t.Run("deny", func(t *testing.T) {
		resp, body, up := fx.do(t, "GET", "h", "/", "", "x-case", "deny", "x-test", "deny")
		if resp.StatusCode != 401 || up != nil || body != "denied by http" {
			t.Fatalf("status %d body %q, upstream reached %v", resp.StatusCode, body, up != nil)
		}
		if resp.Header.Get("x-deny-reason") != "nope" || resp.Header.Get("x-other") != "" {
			t.Errorf("client headers %v", resp.Header)
		}
	})

	t.Run("5xx is an error", func(t *testing.T) {
		resp, body, up := fx.do(t, "GET", "h", "/", "", "x-case", "error", "x-test", "error")
		if resp.StatusCode != 403 || up != nil || body != "" {
			t.Fatalf("status %d body %q, upstream reached %v", resp.StatusCode, body, up != nil)
		}
	})

	t.Run("body", func(t *testing.T) {
		resp, _, up := fx.do(t, "POST", "h", "/upload", "payload", "x-case", "post")
		if resp.StatusCode != 200 || up == nil || up.Body != "payload" {
			t.Fatalf("status %d, upstream %+v", resp.StatusCode, up)
		}
		fx.mu.Lock()
		s := fx.https["post"]
		fx.mu.Unlock()
		if s.method != "POST" || s.uri != "/auth/upload" || s.body != "payload" ||
			s.header.Get("X-Envoy-Auth-Partial-Body") != "false" {
			t.Errorf("service saw %s %s body %q partial %q", s.method, s.uri, s.body, s.header.Get("X-Envoy-Auth-Partial-Body"))
		}
	})

	t.Run("body over max_request_bytes without partial", func(t *testing.T) {
		big := string(make([]byte, 200))
		resp, _, up := fx.do(t, "POST", "h", "/upload", big, "x-case", "big")
		if resp.StatusCode != 413 || up != nil {
			t.Fatalf("status %d, upstream reached %v", resp.StatusCode, up != nil)
		}
	})

	fx.p.WaitStat("http.h.ext_authz.ok", 2)
	fx.p.WaitStat("http.h.ext_authz.denied", 1)
	fx.p.WaitStat("http.h.ext_authz.error", 1)
	// charge_cluster_response_stats: false on this listener.
	if v, _ := fx.p.Srv.Stats().Value("cluster.up.upstream_rq_401"); v != 0 {
		t.Errorf("cluster.up.upstream_rq_401 = %d, want 0", v)
	}
}

// Over HTTP/2 the body arrives in DATA frames: the check waits for
// max_request_bytes of it, and the upstream still gets all of it.
func TestHTTP2Downstream(t *testing.T) {
	fx := startFixture(t)
	h2 := &http.Client{Timeout: 5 * time.Second, Transport: &http2.Transport{AllowHTTP: true,
		DialTLSContext: func(ctx context.Context, network, addr string, _ *tls.Config) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, addr)
		}}}
	defer h2.CloseIdleConnections()

	pr, pw := io.Pipe()
	go func() {
		for _, piece := range []string{"hell", "o wor", "ld!"} {
			if _, err := io.WriteString(pw, piece); err != nil {
				return
			}
		}
		pw.Close()
	}()
	req, _ := http.NewRequest("POST", fx.p.URL("g", "/stream"), pr)
	req.Header.Set("x-case", "h2")
	resp, err := h2.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var up echoed
	if resp.StatusCode != 200 || json.Unmarshal(b, &up) != nil || up.Body != "hello world!" {
		t.Fatalf("status %d, upstream answer %q", resp.StatusCode, b)
	}
	h := fx.grpc.request(t, "h2").GetAttributes().GetRequest().GetHttp()
	if h.GetProtocol() != "HTTP/2" || h.GetBody() != "hello wo" || h.GetHeaders()["x-envoy-auth-partial-body"] != "true" {
		t.Errorf("protocol %q body %q partial %q", h.GetProtocol(), h.GetBody(), h.GetHeaders()["x-envoy-auth-partial-body"])
	}

	req, _ = http.NewRequest("GET", fx.p.URL("g", "/"), nil)
	req.Header.Set("x-case", "h2deny")
	req.Header.Set("x-test", "deny")
	resp, err = h2.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 401 || string(b) != "go away" || resp.Header.Get("x-deny") != "yes" {
		t.Errorf("denial over HTTP/2: %d %q %v", resp.StatusCode, b, resp.Header)
	}
}
