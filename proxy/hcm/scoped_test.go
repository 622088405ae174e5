package hcm

import (
	"strings"
	"testing"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/outrider-proxy/outrider/proxy/headers"
	"github.com/outrider-proxy/outrider/proxy/netfilter"
)

func mustJSON[T proto.Message](t *testing.T, js string, m T) T {
	t.Helper()
	if err := protojson.Unmarshal([]byte(js), m); err != nil {
		t.Fatalf("%s: %v", js, err)
	}
	return m
}

func reqHeaders(kv ...string) *headers.Map {
	h := &headers.Map{}
	for i := 0; i+1 < len(kv); i += 2 {
		h.Add(kv[i], kv[i+1])
	}
	return h
}

// keyOf encodes fragments as a scope's key is encoded.
func keyOf(frags ...string) string {
	var k []byte
	for _, f := range frags {
		k = appendFragment(k, []byte(f))
	}
	return string(k)
}

func TestScopeKeyBuilder(t *testing.T) {
	const idx = `{"fragments":[{"headerValueExtractor":{"name":"x-scope","elementSeparator":",","index":%s}}]}`
	tests := []struct {
		name    string
		builder string
		hdrs    []string
		want    []string // nil: no key
		wantErr string
	}{
		{"host whole value", `{"fragments":[{"headerValueExtractor":{"name":"Host","index":0}}]}`,
			[]string{":authority", "127.0.0.1:10001"}, []string{"127.0.0.1:10001"}, ""},
		{"header absent", `{"fragments":[{"headerValueExtractor":{"name":"x-scope","index":0}}]}`,
			[]string{"x-other", "a"}, nil, ""},
		{"index 0", strings.Replace(idx, "%s", "0", 1), []string{"x-scope", "a,b,c"}, []string{"a"}, ""},
		{"index 2", strings.Replace(idx, "%s", "2", 1), []string{"x-scope", "a,b,c"}, []string{"c"}, ""},
		{"index out of range", strings.Replace(idx, "%s", "3", 1), []string{"x-scope", "a,b,c"}, nil, ""},
		{"empty element", strings.Replace(idx, "%s", "1", 1), []string{"x-scope", "a,,c"}, []string{""}, ""},
		{"first value only", strings.Replace(idx, "%s", "0", 1), []string{"x-scope", "x", "x-scope", "y"}, []string{"x"}, ""},
		{"index without separator", `{"fragments":[{"headerValueExtractor":{"name":"x-scope","index":1}}]}`,
			nil, nil, "Index > 0 for empty string element separator"},
		{"element", `{"fragments":[{"headerValueExtractor":{"name":"cookie","elementSeparator":";","element":{"separator":"=","key":"team"}}}]}`,
			[]string{"cookie", "a=1;team=blue;z=2"}, []string{"blue"}, ""},
		{"element missing", `{"fragments":[{"headerValueExtractor":{"name":"cookie","elementSeparator":";","element":{"separator":"=","key":"team"}}}]}`,
			[]string{"cookie", "a=1;z=2"}, nil, ""},
		{"element without value", `{"fragments":[{"headerValueExtractor":{"name":"x","element":{"separator":"=","key":"team"}}}]}`,
			[]string{"x", "team"}, []string{""}, ""},
		{"element whole value", `{"fragments":[{"headerValueExtractor":{"name":"x","element":{"separator":"=","key":"k"}}}]}`,
			[]string{"x", "k=v=w"}, []string{"v=w"}, ""},
		{"two fragments", `{"fragments":[{"headerValueExtractor":{"name":"a","index":0}},{"headerValueExtractor":{"name":"b","index":0}}]}`,
			[]string{"a", "x", "b", "y"}, []string{"x", "y"}, ""},
		{"second fragment missing", `{"fragments":[{"headerValueExtractor":{"name":"a","index":0}},{"headerValueExtractor":{"name":"b","index":0}}]}`,
			[]string{"a", "x"}, nil, ""},
		{"extract type unset", `{"fragments":[{"headerValueExtractor":{"name":"a"}}]}`, nil, nil, "extract_type not set"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := mustJSON(t, `{"scopeKeyBuilder":`+tt.builder+`}`, &hcmv3.ScopedRoutes{})
			kb, err := compileKeyBuilder(p.GetScopeKeyBuilder())
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got, ok := kb.appendKey(nil, reqHeaders(tt.hdrs...))
			if ok != (tt.want != nil) {
				t.Fatalf("key found = %v, want %v", ok, tt.want != nil)
			}
			if ok && string(got) != keyOf(tt.want...) {
				t.Fatalf("key = %q, want %q", got, keyOf(tt.want...))
			}
		})
	}
}

// inlineScope is a scope with an inline route configuration named rc.
func inlineScope(name, rc string, key ...string) string {
	frags := make([]string, len(key))
	for i, k := range key {
		frags[i] = `{"stringKey":"` + k + `"}`
	}
	return `{"name":"` + name + `","key":{"fragments":[` + strings.Join(frags, ",") + `]},` +
		`"routeConfiguration":{"name":"` + rc + `","virtualHosts":[{"name":"vh","domains":["*"],` +
		`"routes":[{"match":{"prefix":"/"},"directResponse":{"status":200}}]}]}}`
}

func TestScopeSelection(t *testing.T) {
	kb := `{"fragments":[{"headerValueExtractor":{"name":"x-tenant","index":0}}]}`
	type step struct {
		changed []string // JSON scopes
		removed []string
		wantErr string
		// tenant -> route configuration name of the selected table ("" none)
		want map[string]string
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{"select by key", []step{{
			changed: []string{inlineScope("a", "rc-a", "t1"), inlineScope("b", "rc-b", "t2")},
			want:    map[string]string{"t1": "rc-a", "t2": "rc-b", "t3": "", "": ""},
		}}},
		{"key conflict refused whole", []step{
			{changed: []string{inlineScope("a", "rc-a", "t1")}, want: map[string]string{"t1": "rc-a"}},
			{changed: []string{inlineScope("b", "rc-b", "t2"), inlineScope("c", "rc-c", "t1")},
				wantErr: "scope key conflict found, first scope is 'a', second scope is 'c'",
				want:    map[string]string{"t1": "rc-a", "t2": ""}},
		}},
		{"replace and remove", []step{
			{changed: []string{inlineScope("a", "rc-a", "t1"), inlineScope("b", "rc-b", "t2")}},
			{changed: []string{inlineScope("a", "rc-a2", "t3")}, removed: []string{"b"},
				want: map[string]string{"t1": "", "t2": "", "t3": "rc-a2"}},
		}},
		{"key moves between scopes", []step{
			{changed: []string{inlineScope("a", "rc-a", "t1")}},
			{changed: []string{inlineScope("b", "rc-b", "t1")}, removed: []string{"a"}, want: map[string]string{"t1": "rc-b"}},
		}},
		{"duplicate name", []step{{
			changed: []string{inlineScope("a", "rc-a", "t1"), inlineScope("a", "rc-b", "t2")},
			wantErr: "duplicate scoped route configuration 'a' found", want: map[string]string{"t1": "", "t2": ""},
		}}},
		{"no route configuration", []step{{
			changed: []string{`{"name":"a","key":{"fragments":[{"stringKey":"t1"}]}}`},
			wantErr: "needs route_configuration_name or route_configuration",
		}}},
		{"rds scope without xds", []step{{
			changed: []string{`{"name":"a","routeConfigurationName":"r","key":{"fragments":[{"stringKey":"t1"}]}}`},
			wantErr: "needs dynamic_resources",
		}}},
		{"on demand scope has no routes", []step{{
			changed: []string{`{"name":"a","onDemand":true,"routeConfigurationName":"r","key":{"fragments":[{"stringKey":"t1"}]}}`},
			want:    map[string]string{"t1": ""},
		}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := mustJSON(t, `{"name":"s","scopeKeyBuilder":`+kb+`,"rdsConfigSource":{"ads":{}},`+
				`"scopedRouteConfigurationsList":{"scopedRouteConfigurations":[`+inlineScope("seed", "rc-seed", "seed")+`]}}`, &hcmv3.ScopedRoutes{})
			s, err := compileScoped(&netfilter.Context{}, "ingress", p)
			if err != nil {
				t.Fatal(err)
			}
			defer s.close()
			if got := s.current.Load().tableFor(reqHeaders("x-tenant", "seed")); got == nil || got.Name != "rc-seed" {
				t.Fatalf("inline list: seed scope not selected: %v", got)
			}
			for i, st := range tt.steps {
				var changed []*routev3.ScopedRouteConfiguration
				for _, js := range st.changed {
					changed = append(changed, mustJSON(t, js, &routev3.ScopedRouteConfiguration{}))
				}
				err := s.apply(changed, st.removed)
				if st.wantErr == "" && err != nil || st.wantErr != "" && (err == nil || !strings.Contains(err.Error(), st.wantErr)) {
					t.Fatalf("step %d: err = %v, want %q", i, err, st.wantErr)
				}
				for tenant, want := range st.want {
					h := reqHeaders()
					if tenant != "" {
						h = reqHeaders("x-tenant", tenant)
					}
					got := ""
					if tbl := s.current.Load().tableFor(h); tbl != nil {
						got = tbl.Name
					}
					if got != want {
						t.Errorf("step %d: tenant %q selects %q, want %q", i, tenant, got, want)
					}
				}
			}
		})
	}
}

func TestScopedRoutesCompileErrors(t *testing.T) {
	tests := []struct {
		name, js, wantErr string
	}{
		{"srds without xds", `{"name":"s","scopeKeyBuilder":{"fragments":[{"headerValueExtractor":{"name":"a","index":0}}]},` +
			`"rdsConfigSource":{"ads":{}},"scopedRds":{"scopedRdsConfigSource":{"ads":{}}}}`, "needs dynamic_resources"},
		{"missing name", `{"scopeKeyBuilder":{"fragments":[{"headerValueExtractor":{"name":"a","index":0}}]},` +
			`"rdsConfigSource":{"ads":{}},"scopedRds":{"scopedRdsConfigSource":{"ads":{}}}}`, "Name"},
		{"srds locator", `{"name":"s","scopeKeyBuilder":{"fragments":[{"headerValueExtractor":{"name":"a","index":0}}]},` +
			`"rdsConfigSource":{"ads":{}},"scopedRds":{"scopedRdsConfigSource":{"ads":{}},"srdsResourcesLocator":"xdstp://x/y"}}`, "srds_resources_locator"},
		{"inline key conflict", `{"name":"s","scopeKeyBuilder":{"fragments":[{"headerValueExtractor":{"name":"a","index":0}}]},` +
			`"rdsConfigSource":{"ads":{}},"scopedRouteConfigurationsList":{"scopedRouteConfigurations":[` +
			inlineScope("a", "r1", "k") + `,` + inlineScope("b", "r2", "k") + `]}}`, "scope key conflict"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := compileScoped(&netfilter.Context{}, "p", mustJSON(t, tt.js, &hcmv3.ScopedRoutes{}))
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err = %v, want %q", err, tt.wantErr)
			}
		})
	}
}
