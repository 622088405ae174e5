package router

import (
	"strings"
	"testing"
)

// The deprecated cors fields are kept for the CORS filter, bad origin
// matchers are refused, and PerFilterConfigs lists every level, most
// specific first.
func TestCorsFieldAndPerFilterConfigs(t *testing.T) {
	tb := mustCompile(t, `
typed_per_filter_config:
  f: {"@type": type.googleapis.com/google.protobuf.StringValue, value: global}
virtual_hosts:
- name: v
  domains: ["*"]
  cors: {allow_methods: GET, allow_origin_string_match: [{exact: "http://a"}]}
  typed_per_filter_config:
    f: {"@type": type.googleapis.com/google.protobuf.StringValue, value: vhost}
  routes:
  - match: {prefix: "/c"}
    route: {cluster: c, cors: {allow_methods: PUT}}
    typed_per_filter_config:
      f: {"@type": type.googleapis.com/google.protobuf.StringValue, value: route}
  - match: {prefix: "/"}
    route: {cluster: c}
`)
	r, vh := tb.Select(req("GET h /c"), 0)
	if got := r.CorsPolicy().GetAllowMethods(); got != "PUT" {
		t.Errorf("route cors allow_methods %q", got)
	}
	if got := vh.CorsPolicy().GetAllowMethods(); got != "GET" {
		t.Errorf("vhost cors allow_methods %q", got)
	}
	var got []string
	for _, a := range r.PerFilterConfigs("f") {
		got = append(got, string(a.GetValue()[2:]))
	}
	if strings.Join(got, ",") != "route,vhost,global" {
		t.Errorf("PerFilterConfigs: %v", got)
	}
	r2, _ := tb.Select(req("GET h /x"), 0)
	if r2.CorsPolicy() != nil || len(r2.PerFilterConfigs("f")) != 2 || len(r2.PerFilterConfigs("none")) != 0 {
		t.Errorf("plain route: cors %v, configs %d", r2.CorsPolicy(), len(r2.PerFilterConfigs("f")))
	}

	_, err := Compile(parseRC(t, `
virtual_hosts:
- name: v
  domains: ["*"]
  routes:
  - match: {prefix: "/"}
    route: {cluster: c, cors: {allow_origin_string_match: [{safe_regex: {regex: "("}}]}}
`), Options{})
	if err == nil || !strings.Contains(err.Error(), "cors.allow_origin_string_match[0].safe_regex.regex") {
		t.Fatalf("bad cors regex: %v", err)
	}
}
