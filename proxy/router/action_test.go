package router

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/outrider-proxy/outrider/proxy/headers"
	"github.com/outrider-proxy/outrider/telemetry/formatter"
)

func routeFor(t *testing.T, route string) *Route {
	t.Helper()
	tb := mustCompile(t, fmt.Sprintf(`
virtual_hosts:
- name: v
  domains: ["*"]
  routes: [%s]
`, route))
	return tb.VirtualHosts()[0].Routes()[0]
}

func TestWeightedClusters(t *testing.T) {
	r := routeFor(t, `{match: {prefix: "/"}, route: {weighted_clusters: {clusters: [
		{name: a, weight: 10}, {name: zero, weight: 0}, {name: b, weight: 20}, {name: c, weight: 70}]}}}`)
	counts := map[string]int{}
	m := req("GET h /")
	for rnd := uint64(0); rnd < 1000; rnd++ {
		counts[r.Cluster(m, rnd)]++
	}
	want := map[string]int{"a": 100, "b": 200, "c": 700}
	if fmt.Sprint(counts) != fmt.Sprint(want) {
		t.Errorf("distribution %v, want %v", counts, want)
	}
	for _, tt := range []struct {
		rnd  uint64
		want string
	}{{0, "a"}, {9, "a"}, {10, "b"}, {29, "b"}, {30, "c"}, {99, "c"}, {100, "a"}} {
		if got := r.Cluster(m, tt.rnd); got != tt.want {
			t.Errorf("rnd %d: %s, want %s", tt.rnd, got, tt.want)
		}
	}

	hr := routeFor(t, `{match: {prefix: "/"}, route: {weighted_clusters: {header_name: x-rnd, clusters: [
		{name: a, weight: 1}, {cluster_header: x-c, weight: 1}]}}}`)
	if got := hr.Cluster(req("GET h /", "x-rnd: 1", "x-c: dyn"), 0); got != "dyn" {
		t.Errorf("header random value: got %q, want dyn", got)
	}
	if got := hr.Cluster(req("GET h /", "x-rnd: bad"), 0); got != "a" {
		t.Errorf("unparsable header: got %q, want a", got)
	}
}

func TestClusterSpecifiers(t *testing.T) {
	r := routeFor(t, `{match: {prefix: "/"}, route: {cluster: backend}}`)
	if r.Kind() != ActionCluster || r.Cluster(req("GET h /"), 0) != "backend" {
		t.Errorf("static cluster: %v %q", r.Kind(), r.Cluster(req("GET h /"), 0))
	}
	if r.Timeout() != 15*time.Second || r.IdleTimeout() != 0 || r.ClusterNotFoundResponseCode() != 503 {
		t.Errorf("defaults: timeout %v idle %v nf %d", r.Timeout(), r.IdleTimeout(), r.ClusterNotFoundResponseCode())
	}
	h := routeFor(t, `{match: {prefix: "/"}, route: {cluster_header: X-Cluster, timeout: 0s, idle_timeout: 3s, cluster_not_found_response_code: NOT_FOUND}}`)
	if got := h.Cluster(req("GET h /", "x-cluster: c1"), 0); got != "c1" {
		t.Errorf("cluster_header: %q", got)
	}
	if got := h.Cluster(req("GET h /"), 0); got != "" {
		t.Errorf("missing cluster_header: %q, want empty", got)
	}
	if h.Timeout() != 0 || h.IdleTimeout() != 3*time.Second || h.ClusterNotFoundResponseCode() != 404 {
		t.Errorf("timeouts: %v %v %d", h.Timeout(), h.IdleTimeout(), h.ClusterNotFoundResponseCode())
	}
}

func TestRewriteRequest(t *testing.T) {
	tests := []struct {
		name, route, line  string
		hdrs               []string
		wantPath, wantHost string
		wantXFH            string
	}{
		{"prefix", `{match: {prefix: "/api/"}, route: {cluster: c, prefix_rewrite: "/"}}`, "GET h /api/v1?x=1", nil, "/v1?x=1", "h", ""},
		{"prefix case-insensitive", `{match: {prefix: "/API", case_sensitive: false}, route: {cluster: c, prefix_rewrite: "/x"}}`, "GET h /api/v1", nil, "/x/v1", "h", ""},
		{"path", `{match: {path: "/old"}, route: {cluster: c, prefix_rewrite: "/new"}}`, "GET h /old?q", nil, "/new?q", "h", ""},
		{"regex capture", `{match: {prefix: "/"}, route: {cluster: c, regex_rewrite: {pattern: {regex: "^/service/([^/]+)(/.*)$"}, substitution: "\\2/instance/\\1"}}}`,
			"GET h /service/foo/v1/api?q=/service/x/y", nil, "/v1/api/instance/foo?q=/service/x/y", "h", ""},
		{"regex all occurrences", `{match: {prefix: "/"}, route: {cluster: c, regex_rewrite: {pattern: {regex: "o"}, substitution: "0$"}}}`,
			"GET h /foo?o", nil, "/f0$0$?o", "h", ""},
		{"host literal", `{match: {prefix: "/"}, route: {cluster: c, host_rewrite_literal: new.com, append_x_forwarded_host: true}}`,
			"GET old.com /", []string{"x-forwarded-host: first"}, "/", "new.com", "first,old.com"},
		{"host header", `{match: {prefix: "/"}, route: {cluster: c, host_rewrite_header: x-host}}`, "GET h /", []string{"x-host: hh"}, "/", "hh", ""},
		{"host header missing", `{match: {prefix: "/"}, route: {cluster: c, host_rewrite_header: x-host}}`, "GET h /", nil, "/", "h", ""},
		{"host path regex", `{match: {prefix: "/"}, route: {cluster: c, append_x_forwarded_host: true, host_rewrite_path_regex: {pattern: {regex: "^/(.+)/.+$"}, substitution: "\\1"}}}`,
			"GET h /envoyproxy.io/latest?x", nil, "/envoyproxy.io/latest?x", "envoyproxy.io", "h"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := routeFor(t, tt.route)
			m := req(tt.line, tt.hdrs...)
			r.RewriteRequest(m)
			if got := m.GetString(":path"); got != tt.wantPath {
				t.Errorf(":path = %q, want %q", got, tt.wantPath)
			}
			if got := m.GetString(":authority"); got != tt.wantHost {
				t.Errorf(":authority = %q, want %q", got, tt.wantHost)
			}
			if got := m.GetString("x-forwarded-host"); got != tt.wantXFH {
				t.Errorf("x-forwarded-host = %q, want %q", got, tt.wantXFH)
			}
		})
	}
}

func TestRedirects(t *testing.T) {
	tests := []struct {
		name, route, line string
		hdrs              []string
		status            int
		loc               string
	}{
		{"https", `{match: {prefix: "/"}, redirect: {https_redirect: true}}`, "GET h.com /p?q", []string{"x-forwarded-proto: http"}, 301, "https://h.com/p?q"},
		{"https strips :80", `{match: {prefix: "/"}, redirect: {https_redirect: true}}`, "GET h.com:80 /p", []string{"x-forwarded-proto: http"}, 301, "https://h.com/p"},
		{"https keeps :8080", `{match: {prefix: "/"}, redirect: {https_redirect: true}}`, "GET h.com:8080 /p", []string{"x-forwarded-proto: http"}, 301, "https://h.com:8080/p"},
		{"scheme keeps port", `{match: {prefix: "/"}, redirect: {scheme_redirect: "HTTP"}}`, "GET h.com:80 /p", []string{"x-forwarded-proto: http"}, 301, "http://h.com:80/p"},
		{"host and port", `{match: {prefix: "/"}, redirect: {host_redirect: n.com, port_redirect: 8443, response_code: FOUND}}`, "GET h.com:80 /p", nil, 302, "http://n.com:8443/p"},
		{"port only", `{match: {prefix: "/"}, redirect: {port_redirect: 8443}}`, "GET [::1]:80 /p", nil, 301, "http://[::1]:8443/p"},
		{"path keeps query", `{match: {prefix: "/"}, redirect: {path_redirect: "/new", response_code: SEE_OTHER}}`, "GET h /old?a=1", nil, 303, "http://h/new?a=1"},
		{"path with query wins", `{match: {prefix: "/"}, redirect: {path_redirect: "/new?b=2", strip_query: true}}`, "GET h /old?a=1", nil, 301, "http://h/new?b=2"},
		{"strip query", `{match: {prefix: "/"}, redirect: {path_redirect: "/new", strip_query: true, response_code: TEMPORARY_REDIRECT}}`, "GET h /old?a=1", nil, 307, "http://h/new"},
		{"prefix rewrite", `{match: {prefix: "/old/"}, redirect: {prefix_rewrite: "/new/", response_code: PERMANENT_REDIRECT}}`, "GET h /old/x?y", nil, 308, "http://h/new/x?y"},
		{"regex rewrite", `{match: {prefix: "/"}, redirect: {regex_rewrite: {pattern: {regex: "^/a/(.*)$"}, substitution: "/b/\\1"}}}`, "GET h /a/z?k", nil, 301, "http://h/b/z?k"},
		{"path without slash", `{match: {prefix: "/"}, redirect: {path_redirect: "x"}}`, "GET h /", nil, 301, "http://h/x"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := routeFor(t, tt.route)
			if r.Kind() != ActionRedirect {
				t.Fatalf("kind %v", r.Kind())
			}
			st, loc := r.Redirect(req(tt.line, tt.hdrs...))
			if st != tt.status || loc != tt.loc {
				t.Errorf("got %d %q, want %d %q", st, loc, tt.status, tt.loc)
			}
		})
	}
}

func TestDirectResponse(t *testing.T) {
	r := routeFor(t, `{match: {prefix: "/"}, direct_response: {status: 418, body: {inline_string: "teapot"}}}`)
	if st, body := r.DirectResponse(); r.Kind() != ActionDirectResponse || st != 418 || string(body) != "teapot" {
		t.Errorf("got %v %d %q", r.Kind(), st, body)
	}
	f := routeFor(t, `{match: {prefix: "/"}, direct_response: {status: 200, body: {filename: "testdata/body.txt"}}}`)
	if _, body := f.DirectResponse(); string(body) != "from file\n" {
		t.Errorf("filename body %q", body)
	}
	n := routeFor(t, `{match: {prefix: "/"}, non_forwarding_action: {}}`)
	if n.Kind() != ActionNone {
		t.Errorf("non_forwarding_action kind %v", n.Kind())
	}
}

const mutationYAML = `
request_headers_to_add:
- {header: {key: x-level, value: global}, append_action: OVERWRITE_IF_EXISTS_OR_ADD}
- {header: {key: x-g, value: "%%REQ(x-in)%%"}}
request_headers_to_remove: [x-drop-global]
response_headers_to_add:
- {header: {key: x-resp, value: global}}
most_specific_header_mutations_wins: %v
virtual_hosts:
- name: v
  domains: ["*"]
  request_headers_to_add:
  - {header: {key: x-level, value: vhost}, append_action: OVERWRITE_IF_EXISTS_OR_ADD}
  - {header: {key: x-absent, value: vhost}, append_action: ADD_IF_ABSENT}
  response_headers_to_add:
  - {header: {key: x-resp, value: vhost}}
  routes:
  - match: {prefix: "/"}
    route: {cluster: c}
    request_headers_to_remove: [x-drop]
    request_headers_to_add:
    - {header: {key: x-level, value: route}, append_action: OVERWRITE_IF_EXISTS_OR_ADD}
    - {header: {key: x-append, value: r1}}
    - {header: {key: x-append, value: r2}, append: true}
    - {header: {key: x-overwrite-existing, value: new}, append_action: OVERWRITE_IF_EXISTS}
    - {header: {key: x-overwrite-missing, value: new}, append_action: OVERWRITE_IF_EXISTS}
    - {header: {key: x-absent, value: route}, append_action: ADD_IF_ABSENT}
    - {header: {key: x-empty, value: "%%REQ(x-none)%%"}}
    - {header: {key: x-kept-empty, value: "%%REQ(x-none)%%"}, keep_empty_value: true}
    - {header: {key: x-addr, value: "[%%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%%]"}}
    - {header: {key: x-set, value: "set"}, append: false}
    - {header: {key: x-drop, value: "re-added"}}
    response_headers_to_add:
    - {header: {key: x-resp, value: route}}
`

func TestHeaderMutations(t *testing.T) {
	tests := []struct {
		mostSpecific bool
		want         string
	}{
		{false, `:method: GET
:authority: h
:path: /
:scheme: http
x-in: in
x-overwrite-existing: new
x-set: set
x-level: global
x-append: r1
x-append: r2
x-absent: route
x-kept-empty: 
x-addr: []
x-drop: re-added
x-g: in
`},
		{true, `:method: GET
:authority: h
:path: /
:scheme: http
x-in: in
x-overwrite-existing: new
x-set: set
x-level: route
x-g: in
x-absent: vhost
x-append: r1
x-append: r2
x-kept-empty: 
x-addr: []
x-drop: re-added
`},
	}
	for _, tt := range tests {
		tb := mustCompile(t, fmt.Sprintf(mutationYAML, tt.mostSpecific))
		m := req("GET h /", "x-in: in", "x-drop: 1", "x-drop-global: 1", "x-overwrite-existing: old", "x-set: a", "x-set: b")
		r, _ := tb.Select(m, 0)
		r.ApplyRequestHeaders(m, &formatter.Context{Request: m})
		if got := dump(m); got != tt.want {
			t.Errorf("most_specific=%v:\n%s\nwant:\n%s", tt.mostSpecific, got, tt.want)
		}
		resp := &headers.Map{}
		r.ApplyResponseHeaders(resp, &formatter.Context{Request: m, Response: resp})
		var vals []string
		resp.Values("x-resp", func(v []byte) bool { vals = append(vals, string(v)); return true })
		want := "route,vhost,global"
		if tt.mostSpecific {
			want = "global,vhost,route"
		}
		if strings.Join(vals, ",") != want {
			t.Errorf("most_specific=%v response order %v, want %s", tt.mostSpecific, vals, want)
		}
		noRoute := &headers.Map{}
		tb.ApplyResponseHeadersNoRoute(noRoute, nil)
		if noRoute.GetString("x-resp") != "global" {
			t.Errorf("no-route response headers: %q", dump(noRoute))
		}
	}
}

func TestPerFilterConfigAndInternalHeaders(t *testing.T) {
	tb := mustCompile(t, `
internal_only_headers: [X-Internal]
typed_per_filter_config:
  f.global: {"@type": type.googleapis.com/google.protobuf.StringValue, value: global}
  f.both: {"@type": type.googleapis.com/google.protobuf.StringValue, value: global}
virtual_hosts:
- name: v
  domains: ["*"]
  typed_per_filter_config:
    f.both: {"@type": type.googleapis.com/google.protobuf.StringValue, value: vhost}
    f.vh: {"@type": type.googleapis.com/google.protobuf.StringValue, value: vhost}
  routes:
  - match: {prefix: "/"}
    route: {cluster: c}
    typed_per_filter_config:
      f.vh: {"@type": type.googleapis.com/google.protobuf.StringValue, value: route}
`)
	r, _ := tb.Select(req("GET h /"), 0)
	for name, want := range map[string]string{"f.global": "global", "f.both": "vhost", "f.vh": "route", "none": ""} {
		a := r.PerFilterConfig(name)
		got := ""
		if a != nil {
			got = string(a.GetValue()[2:]) // StringValue wire: tag, len, bytes
		}
		if got != want {
			t.Errorf("%s: %q, want %q", name, got, want)
		}
	}
	m := req("GET h /", "x-internal: 1", "x-other: 2")
	tb.StripInternalOnlyHeaders(m)
	if m.Has("x-internal") || !m.Has("x-other") {
		t.Errorf("internal-only strip: %s", dump(m))
	}
}
