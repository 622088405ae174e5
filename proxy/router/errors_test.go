package router

import (
	"strings"
	"testing"
)

func TestCompileErrors(t *testing.T) {
	wrap := func(routes string) string {
		return "virtual_hosts:\n- name: v\n  domains: [\"*\"]\n  routes: [" + routes + "]\n"
	}
	tests := []struct {
		name, yaml, want string
		clusters         []string // nil = no validation
	}{
		{"bad regex", wrap(`{match: {prefix: "/"}, direct_response: {status: 200}}, {match: {prefix: "/"}, direct_response: {status: 200}}, {match: {safe_regex: {regex: "("}}, route: {cluster: c}}`),
			"virtual_hosts[0] (\"v\").routes[2].match.safe_regex: error parsing regexp", nil},
		{"duplicate domain", "virtual_hosts:\n- {name: a, domains: [A.com]}\n- {name: b, domains: [a.com]}\n",
			"Duplicate entry of domain a.com", nil},
		{"duplicate wildcard", "virtual_hosts:\n- {name: a, domains: [\"*.a.com\"]}\n- {name: b, domains: [\"*.a.com\"]}\n",
			"Duplicate entry of domain *.a.com", nil},
		{"two defaults", "virtual_hosts:\n- {name: a, domains: [\"*\"]}\n- {name: b, domains: [\"*\"]}\n",
			"only a single wildcard domain is permitted", nil},
		{"unknown cluster", wrap(`{match: {prefix: "/"}, route: {cluster: nope}}`), "routes[0].route.cluster: route: unknown cluster 'nope'", []string{"c"}},
		{"unknown weighted", wrap(`{match: {prefix: "/"}, route: {weighted_clusters: {clusters: [{name: c, weight: 1}, {name: nope, weight: 1}]}}}`),
			"route.weighted_clusters.clusters[1].name: route: unknown weighted cluster 'nope'", []string{"c"}},
		{"zero weights", wrap(`{match: {prefix: "/"}, route: {weighted_clusters: {clusters: [{name: c, weight: 0}]}}}`),
			"sum of weights in the weighted_cluster must be greater than 0", nil},
		{"path_match_policy", wrap(`{match: {path_match_policy: {name: x, typed_config: {"@type": type.googleapis.com/google.protobuf.Empty}}}, route: {cluster: c}}`),
			"match.path_match_policy: not supported", nil},
		{"filter_action", wrap(`{match: {prefix: "/"}, filter_action: {}}`), "filter_action: not supported", nil},
		{"vhost matcher", "virtual_hosts:\n- {name: a, domains: [\"*\"], matcher: {}}\n", "matcher: not supported", nil},
		{"hedge initial_requests", wrap(`{match: {prefix: "/"}, route: {cluster: c, hedge_policy: {initial_requests: 2}}}`), "route.hedge_policy.initial_requests: not supported", nil},
		{"hedge additional_request_chance", wrap(`{match: {prefix: "/"}, route: {cluster: c, hedge_policy: {additional_request_chance: {numerator: 5}}}}`),
			"route.hedge_policy.additional_request_chance: not supported", nil},
		{"vhost hedge initial_requests", "virtual_hosts:\n- {name: v, domains: [\"*\"], hedge_policy: {initial_requests: 3}}\n", "hedge_policy.initial_requests: not supported", nil},
		{"metadata_match", wrap(`{match: {prefix: "/"}, route: {cluster: c, metadata_match: {}}}`), "route.metadata_match: not supported", nil},
		{"pseudo header add", wrap(`{match: {prefix: "/"}, route: {cluster: c}, request_headers_to_add: [{header: {key: ":path", value: x}}]}`),
			"request_headers_to_add[0].header.key: :-prefixed or host headers may not be modified", nil},
		{"host header remove", wrap(`{match: {prefix: "/"}, route: {cluster: c}, response_headers_to_remove: [Host]}`),
			"response_headers_to_remove[0]: :-prefixed or host headers may not be removed", nil},
		{"append and append_action", wrap(`{match: {prefix: "/"}, route: {cluster: c}, request_headers_to_add: [{header: {key: x, value: "v"}, append: true, append_action: ADD_IF_ABSENT}]}`),
			"both append and append_action are set", nil},
		{"bad formatter", wrap(`{match: {prefix: "/"}, route: {cluster: c}, request_headers_to_add: [{header: {key: x, value: "%NOPE%"}}]}`),
			"request_headers_to_add[0].header.value: not supported field in StreamInfo: NOPE", nil},
		{"big body", "max_direct_response_body_size_bytes: 3\n" + wrap(`{match: {prefix: "/"}, direct_response: {status: 200, body: {inline_string: "toolong"}}}`),
			"response body size is 7 bytes; maximum is 3", nil},
		{"bad substitution group", wrap(`{match: {prefix: "/"}, route: {cluster: c, regex_rewrite: {pattern: {regex: "a"}, substitution: "\\1"}}}`),
			"route.regex_rewrite: substitution", nil},
		{"vhds", "vhds: {config_source: {ads: {}}}\n", "vhds: not supported", nil},
		{"no action", wrap(`{match: {prefix: "/"}}`), "action: one of", nil},
		{"retry back-off max below base", wrap(`{match: {prefix: "/"}, route: {cluster: c, retry_policy: {retry_back_off: {base_interval: 0.1s, max_interval: 0.05s}}}}`),
			"route.retry_policy.retry_back_off.max_interval: must be greater than or equal to the base_interval", nil},
		{"vhost retry back-off max below base", "virtual_hosts:\n- {name: v, domains: [\"*\"], retry_policy: {retry_back_off: {base_interval: 1s, max_interval: 0.5s}}}\n",
			"virtual_hosts[0] (\"v\").retry_policy.retry_back_off.max_interval: must be", nil},
		{"hash policy empty", wrap(`{match: {prefix: "/"}, route: {cluster: c, hash_policy: [{header: {header_name: x}}, {terminal: true}]}}`),
			"route.hash_policy[1].policy_specifier: must be set", nil},
		{"hash filter_state key", wrap(`{match: {prefix: "/"}, route: {cluster: c, hash_policy: [{filter_state: {key: ""}}]}}`),
			"route.hash_policy[0].filter_state.key: must not be empty", nil},
		{"hash cookie attributes", wrap(`{match: {prefix: "/"}, route: {cluster: c, hash_policy: [{cookie: {name: s, attributes: [{name: a}]}}]}}`),
			"route.hash_policy[0].cookie.attributes: not supported", nil},
		{"hash header rewrite", wrap(`{match: {prefix: "/"}, route: {cluster: c, hash_policy: [{header: {header_name: x, regex_rewrite: {pattern: {regex: "("}, substitution: ""}}}]}}`),
			"route.hash_policy[0].header.regex_rewrite: ", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var opts Options
			if tt.clusters != nil {
				opts.ClusterExists = func(n string) bool {
					for _, c := range tt.clusters {
						if c == n {
							return true
						}
					}
					return false
				}
			}
			_, err := Compile(parseRC(t, tt.yaml), opts)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error = %v\nwant containing %q", err, tt.want)
			}
		})
	}
}

func TestValidateClustersFalse(t *testing.T) {
	rc := parseRC(t, `
validate_clusters: false
virtual_hosts:
- {name: v, domains: ["*"], routes: [{match: {prefix: "/"}, route: {cluster: nope}}]}
`)
	if _, err := Compile(rc, Options{ClusterExists: func(string) bool { return false }}); err != nil {
		t.Errorf("validate_clusters=false still validated: %v", err)
	}
}
