package router

import (
	"testing"
)

const domainsYAML = `
name: rc
virtual_hosts:
- name: exact
  domains: ["foo.com", "FOO.bar.com", "port.com:8080"]
  routes: [{match: {prefix: "/"}, direct_response: {status: 200}}]
- name: suffix-long
  domains: ["*.bar.foo.com"]
  routes: [{match: {prefix: "/"}, direct_response: {status: 200}}]
- name: suffix-short
  domains: ["*.foo.com", "*-bar.baz.com"]
  routes: [{match: {prefix: "/"}, direct_response: {status: 200}}]
- name: prefix-long
  domains: ["foo.bar.*"]
  routes: [{match: {prefix: "/"}, direct_response: {status: 200}}]
- name: prefix-short
  domains: ["foo.*"]
  routes: [{match: {prefix: "/"}, direct_response: {status: 200}}]
- name: default
  domains: ["*"]
  routes: [{match: {prefix: "/"}, direct_response: {status: 200}}]
`

func TestDomainPrecedence(t *testing.T) {
	tb := mustCompile(t, domainsYAML)
	tests := []struct{ host, want string }{
		{"foo.com", "exact"},
		{"FOO.COM", "exact"},
		{"foo.bar.com", "exact"},
		{"port.com:8080", "exact"},
		{"port.com", "default"},
		{"foo.com:80", "prefix-short"}, // ports are not stripped: only "foo.*" matches
		{"a.bar.foo.com", "suffix-long"},
		{"a.foo.com", "suffix-short"},
		{".foo.com", "default"}, // a wildcard must match at least one character
		{"x-bar.baz.com", "suffix-short"},
		{"-bar.baz.com", "default"},
		{"foo.bar.x", "prefix-long"},
		{"foo.x", "prefix-short"},
		{"foo.", "default"},
		{"other.org", "default"},
	}
	for _, tt := range tests {
		_, vh := tb.Select(req("GET "+tt.host+" /"), 0)
		got := "<nil>"
		if vh != nil {
			got = vh.Name
		}
		if got != tt.want {
			t.Errorf("host %q: vhost %s, want %s", tt.host, got, tt.want)
		}
	}
}

func TestIgnorePortInHostMatching(t *testing.T) {
	tb := mustCompile(t, `
ignore_port_in_host_matching: true
virtual_hosts:
- name: a
  domains: ["a.com", "[::1]"]
  routes: [{match: {prefix: "/"}, direct_response: {status: 200}}]
`)
	for _, h := range []string{"a.com", "a.com:9999", "A.com:1", "[::1]:80", "[::1]"} {
		if _, vh := tb.Select(req("GET "+h+" /"), 0); vh == nil || vh.Name != "a" {
			t.Errorf("host %q did not select vhost a", h)
		}
	}
	if _, vh := tb.Select(req("GET b.com:80 /"), 0); vh != nil {
		t.Errorf("b.com matched %s", vh.Name)
	}
}

func TestOnlyDefaultVirtualHostWithoutAuthority(t *testing.T) {
	tb := mustCompile(t, `
virtual_hosts:
- name: d
  domains: ["*"]
  routes: [{match: {prefix: "/"}, direct_response: {status: 200}}]
`)
	m := req("GET x /")
	m.Del(":authority")
	if _, vh := tb.Select(m, 0); vh == nil {
		t.Error("default-only table must match a request without :authority")
	}
	tb2 := mustCompile(t, domainsYAML)
	if _, vh := tb2.Select(m, 0); vh != nil {
		t.Error("a request without :authority must not match when other domains exist")
	}
}

func TestVhostHeader(t *testing.T) {
	tb := mustCompile(t, `
vhost_header: x-vhost
virtual_hosts:
- name: a
  domains: ["a.com"]
  routes: [{match: {prefix: "/"}, direct_response: {status: 200}}]
`)
	if _, vh := tb.Select(req("GET b.com /", "x-vhost: a.com"), 0); vh == nil {
		t.Error("vhost_header not used")
	}
}

func TestRequireTLS(t *testing.T) {
	tb := mustCompile(t, `
virtual_hosts:
- name: all
  domains: ["all.com"]
  require_tls: ALL
  routes: [{match: {prefix: "/"}, direct_response: {status: 200}}]
- name: ext
  domains: ["ext.com"]
  require_tls: EXTERNAL_ONLY
  routes: [{match: {prefix: "/"}, direct_response: {status: 200}}]
`)
	tests := []struct {
		line     string
		hdrs     []string
		redirect string
	}{
		{"GET all.com /p?q", nil, "https://all.com/p?q"},
		{"GET all.com /p", []string{"x-forwarded-proto: https"}, ""},
		{"GET all.com /p", []string{"x-envoy-internal: true"}, "https://all.com/p"},
		{"GET ext.com /p", []string{"x-envoy-internal: true"}, ""},
		{"GET ext.com /p", nil, "https://ext.com/p"},
	}
	for _, tt := range tests {
		r, _ := tb.Select(req(tt.line, tt.hdrs...), 0)
		if r == nil {
			t.Fatalf("%s: no route", tt.line)
		}
		if tt.redirect == "" {
			if r.Kind() != ActionDirectResponse {
				t.Errorf("%s %v: kind %v, want direct response", tt.line, tt.hdrs, r.Kind())
			}
			continue
		}
		st, loc := r.Redirect(req(tt.line, tt.hdrs...))
		if r.Kind() != ActionRedirect || st != 301 || loc != tt.redirect {
			t.Errorf("%s %v: %v %d %q, want redirect 301 %q", tt.line, tt.hdrs, r.Kind(), st, loc, tt.redirect)
		}
	}
}
