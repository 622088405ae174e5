package extauthz_test

import (
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/h2c"

	"github.com/outrider-proxy/outrider/filters/http/internal/filtertest"
	"github.com/outrider-proxy/outrider/proxy/server/servertest"
)

// h2ServiceConfig checks with an HTTP service on an HTTP/2 (prior
// knowledge) cluster.
func h2ServiceConfig(upPort, authzPort int) string {
	return filtertest.Config(upPort, authzListener("l", "", `
        http_service: {server_uri: {uri: "http://authz", cluster: authz, timeout: 1s},
          authorization_response: {allowed_upstream_headers: {patterns: [{exact: x-current-user}]}}}`)) + fmt.Sprintf(`  - name: authz
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {http2_protocol_options: {}}
    load_assignment: {cluster_name: authz, endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: %d}}}}]}]}
`, authzPort)
}

func TestHTTPServiceOverHTTP2(t *testing.T) {
	var h2Checks atomic.Int32
	authz := httptest.NewServer(h2c.NewHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ProtoMajor == 2 {
			h2Checks.Add(1)
		}
		if r.Header.Get("x-test") == "deny" {
			w.WriteHeader(http.StatusForbidden)
			return
		}
		w.Header().Set("x-current-user", "carol")
	}), &http2.Server{}))
	t.Cleanup(authz.Close)
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("x-saw-user", r.Header.Get("x-current-user"))
	}))
	t.Cleanup(up.Close)
	p := servertest.Start(t, h2ServiceConfig(up.Listener.Addr().(*net.TCPAddr).Port,
		authz.Listener.Addr().(*net.TCPAddr).Port))
	resp := servertest.Get(t, p.URL("l", "/"))
	if resp.StatusCode != 200 || resp.Header.Get("x-saw-user") != "carol" {
		t.Fatalf("status %d, upstream saw user %q", resp.StatusCode, resp.Header.Get("x-saw-user"))
	}
	// x-test is not an allowed header, so the denial case cannot reach the
	// service: every check is allowed.
	resp = servertest.Get(t, p.URL("l", "/"), "x-test", "deny")
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	if n := h2Checks.Load(); n != 2 {
		t.Fatalf("%d checks over HTTP/2, want 2", n)
	}
	p.WaitStat("http.l.ext_authz.ok", 2)
}
