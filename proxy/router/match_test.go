package router

import (
	"fmt"
	"testing"
)

// oneRoute compiles a table with a single route using match (YAML flow map).
func oneRoute(t *testing.T, match string) *Table {
	t.Helper()
	return mustCompile(t, fmt.Sprintf(`
virtual_hosts:
- name: v
  domains: ["*"]
  routes: [{name: r, match: %s, direct_response: {status: 200}}]
`, match))
}

func TestRouteMatchers(t *testing.T) {
	tests := []struct {
		name  string
		match string
		line  string
		hdrs  []string
		rnd   uint64
		want  bool
	}{
		{"prefix", `{prefix: "/api"}`, "GET h /api/x?y", nil, 0, true},
		{"prefix miss", `{prefix: "/api"}`, "GET h /ap", nil, 0, false},
		{"prefix case", `{prefix: "/API"}`, "GET h /api", nil, 0, false},
		{"prefix case-insensitive", `{prefix: "/API", case_sensitive: false}`, "GET h /api", nil, 0, true},
		{"prefix ignores query", `{prefix: "/a?b"}`, "GET h /a?b", nil, 0, false},
		{"path", `{path: "/exact"}`, "GET h /exact?q=1", nil, 0, true},
		{"path longer", `{path: "/exact"}`, "GET h /exact/", nil, 0, false},
		{"path fragment", `{path: "/exact"}`, "GET h /exact#frag", nil, 0, true},
		{"path case-insensitive", `{path: "/Exact", case_sensitive: false}`, "GET h /eXACT", nil, 0, true},
		{"regex full", `{safe_regex: {regex: "/v[0-9]+/.*"}}`, "GET h /v12/x?z", nil, 0, true},
		{"regex is anchored", `{safe_regex: {regex: "/v[0-9]+"}}`, "GET h /v12/x", nil, 0, false},
		{"separated prefix exact", `{path_separated_prefix: "/api"}`, "GET h /api?x", nil, 0, true},
		{"separated prefix slash", `{path_separated_prefix: "/api"}`, "GET h /api/v1", nil, 0, true},
		{"separated prefix no sep", `{path_separated_prefix: "/api"}`, "GET h /apiv1", nil, 0, false},
		{"connect", `{connect_matcher: {}}`, "CONNECT h", nil, 0, true},
		{"connect not get", `{connect_matcher: {}}`, "GET h /", nil, 0, false},
		{"grpc", `{prefix: "/", grpc: {}}`, "POST h /s/m", []string{"content-type: application/grpc+proto"}, 0, true},
		{"grpc plain", `{prefix: "/", grpc: {}}`, "POST h /s/m", []string{"content-type: application/grpc"}, 0, true},
		{"grpc web no", `{prefix: "/", grpc: {}}`, "POST h /s/m", []string{"content-type: application/grpc-web"}, 0, false},
		{"runtime in", `{prefix: "/", runtime_fraction: {default_value: {numerator: 30}}}`, "GET h /", nil, 129, true},
		{"runtime out", `{prefix: "/", runtime_fraction: {default_value: {numerator: 30}}}`, "GET h /", nil, 130, false},
		{"runtime ten thousand", `{prefix: "/", runtime_fraction: {default_value: {numerator: 5, denominator: TEN_THOUSAND}}}`, "GET h /", nil, 10004, true},
		{"runtime million", `{prefix: "/", runtime_fraction: {default_value: {numerator: 5, denominator: MILLION}}}`, "GET h /", nil, 5, false},
		{"query present", `{prefix: "/", query_parameters: [{name: debug, present_match: true}]}`, "GET h /?a=1&debug", nil, 0, true},
		{"query absent", `{prefix: "/", query_parameters: [{name: debug, present_match: true}]}`, "GET h /?a=1", nil, 0, false},
		{"query no specifier", `{prefix: "/", query_parameters: [{name: debug}]}`, "GET h /?debug=1", nil, 0, true},
		{"query exact", `{prefix: "/", query_parameters: [{name: v, string_match: {exact: "2"}}]}`, "GET h /?v=2", nil, 0, true},
		{"query first value", `{prefix: "/", query_parameters: [{name: v, string_match: {exact: "2"}}]}`, "GET h /?v=1&v=2", nil, 0, false},
		{"query ignore case", `{prefix: "/", query_parameters: [{name: v, string_match: {prefix: "AB", ignore_case: true}}]}`, "GET h /?v=abc", nil, 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tb := oneRoute(t, tt.match)
			r, _ := tb.Select(req(tt.line, tt.hdrs...), tt.rnd)
			if (r != nil) != tt.want {
				t.Errorf("matched = %v, want %v", r != nil, tt.want)
			}
		})
	}
}

func TestHeaderMatchers(t *testing.T) {
	tests := []struct {
		name string
		hm   string
		hdrs []string
		want bool
	}{
		{"exact", `{name: x-a, exact_match: "v"}`, []string{"x-a: v"}, true},
		{"exact miss", `{name: x-a, exact_match: "v"}`, []string{"x-a: w"}, false},
		{"name case", `{name: X-A, exact_match: "v"}`, []string{"x-a: v"}, true},
		{"prefix", `{name: x-a, prefix_match: "ab"}`, []string{"x-a: abc"}, true},
		{"suffix", `{name: x-a, suffix_match: "bc"}`, []string{"x-a: abc"}, true},
		{"contains", `{name: x-a, contains_match: "b"}`, []string{"x-a: abc"}, true},
		{"regex", `{name: x-a, safe_regex_match: {regex: "[0-9]{3}"}}`, []string{"x-a: 123"}, true},
		{"regex full", `{name: x-a, safe_regex_match: {regex: "[0-9]{3}"}}`, []string{"x-a: 1234"}, false},
		{"regex inverted", `{name: x-a, safe_regex_match: {regex: "[0-9]{3}"}, invert_match: true}`, []string{"x-a: 1234"}, true},
		{"present", `{name: x-a, present_match: true}`, []string{"x-a: "}, true},
		{"present missing", `{name: x-a, present_match: true}`, nil, false},
		{"present false missing", `{name: x-a, present_match: false}`, nil, true},
		{"present false present", `{name: x-a, present_match: false}`, []string{"x-a: 1"}, false},
		{"present inverted", `{name: x-a, present_match: true, invert_match: true}`, nil, true},
		{"no specifier is presence", `{name: x-a}`, []string{"x-a: 1"}, true},
		{"range in", `{name: x-a, range_match: {start: -10, end: 10}}`, []string{"x-a: -10"}, true},
		{"range end exclusive", `{name: x-a, range_match: {start: -10, end: 10}}`, []string{"x-a: 10"}, false},
		{"range not a number", `{name: x-a, range_match: {start: 0, end: 10}}`, []string{"x-a: 1x"}, false},
		{"string exact ignore case", `{name: x-a, string_match: {exact: "VaL", ignore_case: true}}`, []string{"x-a: vAl"}, true},
		{"string suffix", `{name: x-a, string_match: {suffix: "Z"}}`, []string{"x-a: az"}, false},
		{"string contains ignore case", `{name: x-a, string_match: {contains: "MID", ignore_case: true}}`, []string{"x-a: amidb"}, true},
		{"string regex", `{name: x-a, string_match: {safe_regex: {regex: "a.c"}}}`, []string{"x-a: abc"}, true},
		{"missing fails even inverted", `{name: x-a, exact_match: "v", invert_match: true}`, nil, false},
		{"missing as empty inverted", `{name: x-a, range_match: {start: 0, end: 10}, invert_match: true, treat_missing_header_as_empty: true}`, nil, true},
		{"missing as empty exact", `{name: x-a, string_match: {exact: ""}, treat_missing_header_as_empty: true}`, nil, true},
		{"multiple values joined", `{name: x-a, exact_match: "1,2"}`, []string{"x-a: 1", "x-a: 2"}, true},
		{"pseudo header", `{name: ":method", exact_match: "GET"}`, nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tb := oneRoute(t, `{prefix: "/", headers: [`+tt.hm+`]}`)
			r, _ := tb.Select(req("GET h /", tt.hdrs...), 0)
			if (r != nil) != tt.want {
				t.Errorf("matched = %v, want %v", r != nil, tt.want)
			}
		})
	}
}

func TestFirstMatchWins(t *testing.T) {
	tb := mustCompile(t, `
virtual_hosts:
- name: v
  domains: ["*"]
  routes:
  - {name: a, match: {prefix: "/a", headers: [{name: x, exact_match: "1"}]}, direct_response: {status: 200}}
  - {name: b, match: {prefix: "/a"}, direct_response: {status: 201}}
  - {name: c, match: {prefix: "/"}, direct_response: {status: 202}}
`)
	tests := []struct {
		line string
		hdrs []string
		want string
	}{
		{"GET h /a", []string{"x: 1"}, "a"},
		{"GET h /a", nil, "b"},
		{"GET h /b", nil, "c"},
	}
	for _, tt := range tests {
		r, _ := tb.Select(req(tt.line, tt.hdrs...), 0)
		if r == nil || r.Name != tt.want {
			t.Errorf("%s %v: got %v, want %s", tt.line, tt.hdrs, r, tt.want)
		}
	}
}
