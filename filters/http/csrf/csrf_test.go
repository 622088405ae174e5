package csrf_test

import (
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"

	"github.com/outrider-proxy/outrider/filters/http/internal/filtertest"
	"github.com/outrider-proxy/outrider/proxy/server"
	"github.com/outrider-proxy/outrider/proxy/server/servertest"
	"github.com/outrider-proxy/outrider/xds/bootstrap"
)

// config has the listener "site", whose filter policy checks every request,
// with routes that disable it, shadow it or add origins, and the listener
// "vhost", whose virtual host's policy enables the disabled filter.
func config(upPort int) string {
	return filtertest.Config(upPort, filtertest.Listener("site", `
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {prefix: "/disabled"}
                route: {cluster: up}
                typed_per_filter_config:
                  envoy.filters.http.csrf:
                    "@type": type.googleapis.com/envoy.extensions.filters.http.csrf.v3.CsrfPolicy
                    filter_enabled: {default_value: {numerator: 0}}
              - match: {prefix: "/shadow"}
                route: {cluster: up}
                typed_per_filter_config:
                  envoy.filters.http.csrf:
                    "@type": type.googleapis.com/envoy.extensions.filters.http.csrf.v3.CsrfPolicy
                    filter_enabled: {default_value: {numerator: 0}}
                    shadow_enabled: {default_value: {numerator: 100}}
              - match: {prefix: "/additional"}
                route: {cluster: up}
                typed_per_filter_config:
                  envoy.filters.http.csrf:
                    "@type": type.googleapis.com/envoy.extensions.filters.http.csrf.v3.CsrfPolicy
                    filter_enabled: {default_value: {numerator: 100}}
                    additional_origins:
                    - safe_regex: {regex: '.*\.example\.com'}
                    - exact: partner.test:8443
              - match: {prefix: "/"}
                route: {cluster: up}`, `
          - name: envoy.filters.http.csrf
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.csrf.v3.CsrfPolicy
              filter_enabled: {default_value: {numerator: 100}}`), filtertest.Listener("vhost", `
            virtual_hosts:
            - name: all
              domains: ["*"]
              typed_per_filter_config:
                envoy.filters.http.csrf:
                  "@type": type.googleapis.com/envoy.extensions.filters.http.csrf.v3.CsrfPolicy
                  filter_enabled: {default_value: {numerator: 100}, runtime_key: csrf.vhost.enabled}
              routes:
              - match: {prefix: "/"}
                route: {cluster: up}`, `
          - name: envoy.filters.http.csrf
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.csrf.v3.CsrfPolicy
              filter_enabled: {default_value: {numerator: 0}}`))
}

func start(t *testing.T) *servertest.Proxy {
	t.Helper()
	return filtertest.Start(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		io.WriteString(w, "upstream")
	}), config)
}

// send makes method to path on listener with origin and referer ("SELF"
// stands for the listener's own http://host:port) and returns status and
// body.
func send(t *testing.T, p *servertest.Proxy, listener, method, path, origin, referer string) (int, string) {
	t.Helper()
	self := "http://" + p.Addr(listener)
	var hdr []string
	if origin != "" {
		hdr = append(hdr, "Origin", strings.ReplaceAll(origin, "SELF", self))
	}
	if referer != "" {
		hdr = append(hdr, "Referer", strings.ReplaceAll(referer, "SELF", self))
	}
	resp, body := filtertest.Do(t, nil, filtertest.NewRequest(t, method, p.URL(listener, path), "body", hdr...))
	return resp.StatusCode, body
}

func TestCsrf(t *testing.T) {
	p := start(t)
	for _, tc := range []struct {
		name, listener, method, path, origin, referer string
		status                                        int
		missing, invalid, valid                       int64 // stat increments
	}{
		{"same origin", "site", "POST", "/", "SELF", "", 200, 0, 0, 1},
		{"same origin with a path", "site", "PUT", "/", "SELF/app?x=1", "", 200, 0, 0, 1},
		{"cross origin", "site", "POST", "/", "http://evil.test", "", 403, 0, 1, 0},
		{"other port", "site", "DELETE", "/", "http://127.0.0.1:1", "", 403, 0, 1, 0},
		{"PATCH checked", "site", "PATCH", "/", "http://evil.test", "", 403, 0, 1, 0},
		{"GET not checked", "site", "GET", "/", "http://evil.test", "", 200, 0, 0, 0},
		{"OPTIONS not checked", "site", "OPTIONS", "/", "", "", 200, 0, 0, 0},
		{"no origin or referer", "site", "POST", "/", "", "", 403, 1, 1, 0},
		{"referer without origin", "site", "POST", "/", "", "SELF/page.html", 200, 0, 0, 1},
		{"cross-origin referer", "site", "POST", "/", "", "https://evil.test/page", 403, 0, 1, 0},
		{"origin wins over referer", "site", "POST", "/", "http://evil.test", "SELF/", 403, 0, 1, 0},
		{"opaque origin null", "site", "POST", "/", "null", "", 403, 0, 1, 0},
		{"route disabled", "site", "POST", "/disabled", "http://evil.test", "", 200, 0, 0, 0},
		{"shadow counts only", "site", "POST", "/shadow", "http://evil.test", "", 200, 0, 1, 0},
		{"shadow, valid", "site", "POST", "/shadow", "SELF", "", 200, 0, 0, 1},
		{"additional origin regex", "site", "POST", "/additional", "https://app.example.com", "", 200, 0, 0, 1},
		{"additional origin exact host:port", "site", "POST", "/additional", "https://partner.test:8443", "", 200, 0, 0, 1},
		{"additional origin, none matches", "site", "POST", "/additional", "https://partner.test", "", 403, 0, 1, 0},
		{"additional origin, own origin", "site", "POST", "/additional", "SELF", "", 200, 0, 0, 1},
		{"virtual host policy over the filter's", "vhost", "POST", "/", "http://evil.test", "", 403, 0, 1, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pre := "http." + tc.listener + ".csrf."
			before := [3]int64{p.Stat(pre + "missing_source_origin"), p.Stat(pre + "request_invalid"), p.Stat(pre + "request_valid")}
			status, body := send(t, p, tc.listener, tc.method, tc.path, tc.origin, tc.referer)
			if status != tc.status {
				t.Fatalf("status %d, want %d", status, tc.status)
			}
			if want := map[int]string{200: "upstream", 403: "Invalid origin"}[status]; tc.method != "OPTIONS" && body != want {
				t.Errorf("body %q, want %q", body, want)
			}
			p.WaitStat(pre+"missing_source_origin", before[0]+tc.missing)
			p.WaitStat(pre+"request_invalid", before[1]+tc.invalid)
			p.WaitStat(pre+"request_valid", before[2]+tc.valid)
		})
	}
}

// filter_enabled is required, in the filter's policy as in Envoy.
func TestFilterEnabledRequired(t *testing.T) {
	yaml := strings.Replace(config(1), "filter_enabled: {default_value: {numerator: 0}}\n          - name: envoy.filters.http.router",
		"shadow_enabled: {default_value: {numerator: 0}}\n          - name: envoy.filters.http.router", 1)
	b, err := bootstrap.Load(bootstrap.Source{YAML: yaml})
	if err == nil {
		_, err = server.New(server.Options{Bootstrap: b, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	}
	if err == nil || !strings.Contains(err.Error(), "filter_enabled") {
		t.Fatalf("error %v, want one naming filter_enabled", err)
	}
}
