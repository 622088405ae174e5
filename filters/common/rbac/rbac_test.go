package rbac

import (
	"net/netip"
	"strings"
	"testing"

	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"sigs.k8s.io/yaml"

	"github.com/outrider-proxy/outrider/proxy/headers"
	"github.com/outrider-proxy/outrider/proxy/streaminfo"
	"github.com/outrider-proxy/outrider/telemetry/stats"
)

func compileYAML(t *testing.T, y string) (*Engine, error) {
	t.Helper()
	j, err := yaml.YAMLToJSON([]byte(y))
	if err != nil {
		t.Fatal(err)
	}
	m := &rbacv3.RBAC{}
	if err := protojson.Unmarshal(j, m); err != nil {
		t.Fatal(err)
	}
	return Compile(m)
}

func req(method, path string, hdrs ...string) *headers.Map {
	h := &headers.Map{}
	h.Add(headers.Method, method)
	h.Add(headers.Path, path)
	for i := 0; i+1 < len(hdrs); i += 2 {
		h.Add(hdrs[i], hdrs[i+1])
	}
	return h
}

func TestPermissionsAndPrincipals(t *testing.T) {
	mtls := &streaminfo.Conn{
		LocalAddr: netip.MustParseAddrPort("10.0.0.1:8443"), RemoteAddr: netip.MustParseAddrPort("192.168.1.5:4000"),
		DirectRemoteAddr: netip.MustParseAddrPort("172.16.0.9:4000"), RequestedServerName: "api.test",
		TLS: &streaminfo.TLSInfo{PeerPresented: true, PeerURISANs: []string{"spiffe://td/ns/a/sa/client"},
			PeerDNSSANs: []string{"client.test"}, PeerSubject: "CN=client,O=Org"},
	}
	plain := &streaminfo.Conn{LocalAddr: netip.MustParseAddrPort("[::ffff:10.0.0.1]:80"),
		RemoteAddr: netip.MustParseAddrPort("10.9.9.9:1"), DirectRemoteAddr: netip.MustParseAddrPort("10.9.9.9:1")}
	get := req("GET", "/api/v1?x=1", "x-team", "blue", "x-team", "red")
	tests := []struct {
		name       string
		permission string
		principal  string
		conn       *streaminfo.Conn
		h          *headers.Map
		want       bool
	}{
		{"any", "any: true", "any: true", plain, nil, true},
		{"header exact", "header: {name: ':method', string_match: {exact: GET}}", "any: true", plain, get, true},
		{"header multi joined", "header: {name: x-team, string_match: {exact: 'blue,red'}}", "any: true", plain, get, true},
		{"header without headers", "header: {name: ':method', present_match: true}", "any: true", plain, nil, false},
		{"header invert", "header: {name: x-missing, present_match: true, invert_match: true}", "any: true", plain, get, true},
		{"url_path strips query", "url_path: {path: {exact: /api/v1}}", "any: true", plain, get, true},
		{"url_path prefix ignore case", "url_path: {path: {prefix: /API, ignore_case: true}}", "any: true", plain, get, true},
		{"url_path no headers", "url_path: {path: {prefix: /}}", "any: true", plain, nil, false},
		{"destination_ip", "destination_ip: {address_prefix: 10.0.0.0, prefix_len: 8}", "any: true", mtls, nil, true},
		{"destination_ip mapped v4", "destination_ip: {address_prefix: 10.0.0.0, prefix_len: 8}", "any: true", plain, nil, true},
		{"destination_ip miss", "destination_ip: {address_prefix: 11.0.0.0, prefix_len: 8}", "any: true", mtls, nil, false},
		{"destination_port", "destination_port: 8443", "any: true", mtls, nil, true},
		{"destination_port_range end exclusive", "destination_port_range: {start: 8000, end: 8443}", "any: true", mtls, nil, false},
		{"destination_port_range", "destination_port_range: {start: 8000, end: 8444}", "any: true", mtls, nil, true},
		{"requested_server_name", "requested_server_name: {suffix: .test}", "any: true", mtls, nil, true},
		{"and_rules", "and_rules: {rules: [{destination_port: 8443}, {requested_server_name: {exact: other}}]}", "any: true", mtls, nil, false},
		{"or_rules", "or_rules: {rules: [{destination_port: 1}, {requested_server_name: {exact: api.test}}]}", "any: true", mtls, nil, true},
		{"not_rule", "not_rule: {destination_port: 8443}", "any: true", mtls, nil, false},
		{"principal uri san", "any: true", "authenticated: {principal_name: {exact: 'spiffe://td/ns/a/sa/client'}}", mtls, nil, true},
		{"principal dns san", "any: true", "authenticated: {principal_name: {exact: client.test}}", mtls, nil, true},
		{"principal subject", "any: true", "authenticated: {principal_name: {exact: 'CN=client,O=Org'}}", mtls, nil, true},
		{"principal regex", "any: true", "authenticated: {principal_name: {safe_regex: {regex: 'spiffe://td/ns/[a-z]+/sa/.*'}}}", mtls, nil, true},
		{"principal wrong", "any: true", "authenticated: {principal_name: {exact: 'spiffe://td/ns/a/sa/other'}}", mtls, nil, false},
		{"principal plaintext", "any: true", "authenticated: {principal_name: {prefix: ''}}", plain, nil, false},
		{"authenticated without name", "any: true", "authenticated: {}", mtls, nil, true},
		{"direct_remote_ip", "any: true", "direct_remote_ip: {address_prefix: 172.16.0.0, prefix_len: 12}", mtls, nil, true},
		{"remote_ip", "any: true", "remote_ip: {address_prefix: 192.168.1.5, prefix_len: 32}", mtls, nil, true},
		{"remote_ip is not direct", "any: true", "remote_ip: {address_prefix: 172.16.0.0, prefix_len: 12}", mtls, nil, false},
		{"source_ip", "any: true", "source_ip: {address_prefix: 10.9.9.0, prefix_len: 24}", plain, nil, true},
		{"principal header", "any: true", "header: {name: x-team, string_match: {contains: red}}", plain, get, true},
		{"principal url_path", "any: true", "url_path: {path: {suffix: v1}}", plain, get, true},
		{"and_ids", "any: true", "and_ids: {ids: [{authenticated: {}}, {remote_ip: {address_prefix: 10.0.0.0, prefix_len: 8}}]}", mtls, nil, false},
		{"or_ids", "any: true", "or_ids: {ids: [{authenticated: {}}, {remote_ip: {address_prefix: 10.0.0.0, prefix_len: 8}}]}", plain, nil, true},
		{"not_id", "any: true", "not_id: {authenticated: {}}", plain, nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, err := compileYAML(t, "action: ALLOW\npolicies:\n  p:\n    permissions: [{"+tt.permission+"}]\n    principals: [{"+tt.principal+"}]\n")
			if err != nil {
				t.Fatal(err)
			}
			got, id := e.Allowed(&Input{Conn: tt.conn, Headers: tt.h})
			if got != tt.want || (got && id != "p") {
				t.Fatalf("allowed = %v (%q), want %v", got, id, tt.want)
			}
		})
	}
}

func TestActions(t *testing.T) {
	conn := &streaminfo.Conn{LocalAddr: netip.MustParseAddrPort("10.0.0.1:80")}
	policies := `
policies:
  zeta: {permissions: [{any: true}], principals: [{any: true}]}
  alpha: {permissions: [{destination_port: 80}], principals: [{any: true}]}
  never: {permissions: [{destination_port: 1}], principals: [{any: true}]}
`
	tests := []struct {
		action string
		want   bool
		id     string
	}{
		{"ALLOW", true, "alpha"}, // the first name in order wins
		{"DENY", false, "alpha"},
		{"LOG", true, "alpha"},
	}
	for _, tt := range tests {
		e, err := compileYAML(t, "action: "+tt.action+policies)
		if err != nil {
			t.Fatal(err)
		}
		if got, id := e.Allowed(&Input{Conn: conn}); got != tt.want || id != tt.id {
			t.Errorf("%s: allowed = %v (%q), want %v (%q)", tt.action, got, id, tt.want, tt.id)
		}
	}
	for action, want := range map[string]bool{"ALLOW": false, "DENY": true} {
		e, err := compileYAML(t, "action: "+action)
		if err != nil {
			t.Fatal(err)
		}
		if got, id := e.Allowed(&Input{Conn: conn}); got != want || id != "" {
			t.Errorf("%s without policies: allowed = %v (%q), want %v", action, got, id, want)
		}
	}
	if e, err := Compile(nil); e != nil || err != nil {
		t.Fatalf("Compile(nil) = %v, %v; want no engine", e, err)
	}
}

func TestUnsupported(t *testing.T) {
	for _, tt := range []struct{ yaml, want string }{
		{"policies: {p: {permissions: [{metadata: {filter: f, path: [{key: k}], value: {present_match: true}}}], principals: [{any: true}]}}", `policies["p"].permissions[0]: metadata: not supported`},
		{"policies: {p: {permissions: [{any: true}], principals: [{metadata: {filter: f, path: [{key: k}], value: {present_match: true}}}]}}", `policies["p"].principals[0]: metadata: not supported`},
		{"policies: {p: {permissions: [{and_rules: {rules: [{any: true}, {metadata: {filter: f}}]}}], principals: [{any: true}]}}", `and_rules.rules[1]: metadata`},
		{"policies: {p: {permissions: [{any: true}], principals: [{any: true}], condition: {const_expr: {bool_value: true}}}}", `condition`},
		{"policies: {p: {permissions: [{header: {name: x, string_match: {safe_regex: {regex: '('}}}}], principals: [{any: true}]}}", `header: string_match.safe_regex.regex: error parsing regexp`},
		{"policies: {p: {permissions: [{any: true}], principals: [{remote_ip: {address_prefix: nope, prefix_len: 8}}]}}", `remote_ip: address_prefix`},
	} {
		_, err := compileYAML(t, tt.yaml)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: err = %v, want it to mention %q", tt.yaml, err, tt.want)
		}
	}
}

func TestStatsAndDetail(t *testing.T) {
	store := stats.NewStore()
	for _, tt := range []struct{ prefix, rules, shadow, allowed, shadowDenied string }{
		{"http.ing.", "", "", "http.ing.rbac.allowed", "http.ing.rbac.shadow_denied"},
		{"tcp", "", "sh_", "tcp.rbac.allowed", "tcp.rbac.sh_shadow_denied"},
		{"http.x.", "r1.", "", "http.x.rbac.r1.allowed", "http.x.rbac.shadow_denied"},
	} {
		s := NewStats(store, tt.prefix, tt.rules, tt.shadow)
		if s.Allowed.Name() != tt.allowed || s.ShadowDenied.Name() != tt.shadowDenied {
			t.Errorf("%+v: got %s, %s", tt, s.Allowed.Name(), s.ShadowDenied.Name())
		}
	}
	if d := ResponseDetail("deny all\tnow"); d != "rbac_access_denied_matched_policy[deny_all_now]" {
		t.Errorf("detail %q", d)
	}
	if d := ResponseDetail(""); d != "rbac_access_denied_matched_policy[none]" {
		t.Errorf("detail %q", d)
	}
}
