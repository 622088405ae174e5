package bootstrap

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
)

var update = flag.Bool("update", false, "rewrite testdata/bad/*.err golden files")

// TestBadInputs loads every file in testdata/bad and compares the error with
// the golden line in the matching .err file.
func TestBadInputs(t *testing.T) {
	files, err := filepath.Glob("testdata/bad/*")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, f := range files {
		if strings.HasSuffix(f, ".err") {
			continue
		}
		n++
		t.Run(filepath.Base(f), func(t *testing.T) {
			_, err := Load(Source{Path: f})
			if err == nil {
				t.Fatalf("Load(%s) succeeded, want error", f)
			}
			got := err.Error()
			if strings.Contains(got, "\n") {
				t.Errorf("error is not one line: %q", got)
			}
			if !strings.HasPrefix(got, f) {
				t.Errorf("error does not start with the file name %q: %q", f, got)
			}
			golden := strings.TrimSuffix(f, filepath.Ext(f)) + ".err"
			if *update {
				if err := os.WriteFile(golden, []byte(got+"\n"), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("missing golden file (run with -update): %v", err)
			}
			if got != strings.TrimSuffix(string(want), "\n") {
				t.Errorf("error mismatch\n got: %s\nwant: %s", got, want)
			}
			// LoadBytes reports the same line for the same bytes.
			data, rerr := os.ReadFile(f)
			if rerr != nil {
				t.Fatal(rerr)
			}
			if _, err := LoadBytes(f, data); err == nil || err.Error() != got {
				t.Errorf("LoadBytes error = %v, want %s", err, got)
			}
		})
	}
	if n < 15 {
		t.Fatalf("only %d bad inputs found", n)
	}
}

const minimalYAML = `
node:
  id: n1
  cluster: c
admin:
  address:
    socket_address: {address: 127.0.0.1, port_value: 9901}
static_resources:
  clusters:
  - name: c0
    connect_timeout: 0.25s
`

func TestGoodInputs(t *testing.T) {
	tests := []struct {
		name  string
		file  string
		data  string
		check func(t *testing.T, b *bootstrapv3.Bootstrap)
	}{
		{
			name: "minimal yaml",
			file: "envoy.yaml",
			data: minimalYAML,
			check: func(t *testing.T, b *bootstrapv3.Bootstrap) {
				if got := b.GetStaticResources().GetClusters()[0].GetConnectTimeout().AsDuration(); got != 250*time.Millisecond {
					t.Errorf("connect_timeout = %v", got)
				}
				if b.GetNode().GetId() != "n1" {
					t.Errorf("node.id = %q", b.GetNode().GetId())
				}
			},
		},
		{
			name: "yml extension and upper-case suffix",
			file: "ENVOY.YML",
			data: "node: {id: n2}",
			check: func(t *testing.T, b *bootstrapv3.Bootstrap) {
				if b.GetNode().GetId() != "n2" {
					t.Errorf("node.id = %q", b.GetNode().GetId())
				}
			},
		},
		{
			name: "json with camelCase names",
			file: "envoy.json",
			data: `{"node": {"id": "j"}, "staticResources": {"clusters": [{"name": "c0", "connectTimeout": "2s"}]}}`,
			check: func(t *testing.T, b *bootstrapv3.Bootstrap) {
				if got := b.GetStaticResources().GetClusters()[0].GetConnectTimeout().AsDuration(); got != 2*time.Second {
					t.Errorf("connect_timeout = %v", got)
				}
			},
		},
		{
			name: "unknown extension is json",
			file: "envoy.conf",
			data: `{"node": {"id": "j"}}`,
			check: func(t *testing.T, b *bootstrapv3.Bootstrap) {
				if b.GetNode().GetId() != "j" {
					t.Errorf("node.id = %q", b.GetNode().GetId())
				}
			},
		},
		{
			name: "text proto",
			file: "envoy.pb_text",
			data: `node { id: "t" } static_resources { clusters { name: "c0" connect_timeout { seconds: 3 } } }`,
			check: func(t *testing.T, b *bootstrapv3.Bootstrap) {
				if got := b.GetStaticResources().GetClusters()[0].GetConnectTimeout().AsDuration(); got != 3*time.Second {
					t.Errorf("connect_timeout = %v", got)
				}
			},
		},
		{
			name: "duration as object",
			file: "envoy.yaml",
			data: "static_resources:\n  clusters:\n  - name: c0\n    connect_timeout: {seconds: 1, nanos: 500000000}\n",
			check: func(t *testing.T, b *bootstrapv3.Bootstrap) {
				if got := b.GetStaticResources().GetClusters()[0].GetConnectTimeout().AsDuration(); got != 1500*time.Millisecond {
					t.Errorf("connect_timeout = %v", got)
				}
			},
		},
		{
			name: "duration as object with string seconds and only nanos",
			file: "envoy.yaml",
			data: "static_resources:\n  clusters:\n  - name: c0\n    connect_timeout: {nanos: 5}\n  - name: c1\n    connect_timeout: {seconds: \"7\"}\n",
			check: func(t *testing.T, b *bootstrapv3.Bootstrap) {
				cs := b.GetStaticResources().GetClusters()
				if got := cs[0].GetConnectTimeout().AsDuration(); got != 5*time.Nanosecond {
					t.Errorf("c0 connect_timeout = %v", got)
				}
				if got := cs[1].GetConnectTimeout().AsDuration(); got != 7*time.Second {
					t.Errorf("c1 connect_timeout = %v", got)
				}
			},
		},
		{
			name: "single object in place of a list",
			file: "envoy.yaml",
			data: `
static_resources:
  clusters:
    name: xds
dynamic_resources:
  ads_config:
    api_type: GRPC
    grpc_services:
      envoy_grpc: {cluster_name: xds}
`,
			check: func(t *testing.T, b *bootstrapv3.Bootstrap) {
				if n := len(b.GetStaticResources().GetClusters()); n != 1 {
					t.Errorf("%d clusters, want 1", n)
				}
				gs := b.GetDynamicResources().GetAdsConfig().GetGrpcServices()
				if len(gs) != 1 || gs[0].GetEnvoyGrpc().GetClusterName() != "xds" {
					t.Errorf("grpc_services = %v", gs)
				}
			},
		},
		{
			name: "case-insensitive enum and wrapper as object",
			file: "envoy.yaml",
			data: `
static_resources:
  clusters:
  - name: c0
    lb_policy: least_request
    per_connection_buffer_limit_bytes: {value: 1024}
`,
			check: func(t *testing.T, b *bootstrapv3.Bootstrap) {
				c := b.GetStaticResources().GetClusters()[0]
				if c.GetLbPolicy().String() != "LEAST_REQUEST" {
					t.Errorf("lb_policy = %v", c.GetLbPolicy())
				}
				if c.GetPerConnectionBufferLimitBytes().GetValue() != 1024 {
					t.Errorf("per_connection_buffer_limit_bytes = %v", c.GetPerConnectionBufferLimitBytes())
				}
			},
		},
		{
			name: "typed_config resolves and leniencies apply inside Any",
			file: "envoy.yaml",
			data: `
static_resources:
  listeners:
  - name: l0
    address:
      socket_address: {address: 127.0.0.1, port_value: 10000}
    filter_chains:
      filters:
        name: hcm
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress
          codec_type: auto
          stream_idle_timeout: {seconds: 9}
          route_config:
            virtual_hosts:
              name: vh
              domains: "*"
              routes:
              - match: {prefix: /}
                direct_response: {status: 200}
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
`,
			check: func(t *testing.T, b *bootstrapv3.Bootstrap) {
				f := b.GetStaticResources().GetListeners()[0].GetFilterChains()[0].GetFilters()[0]
				hcm := &hcmv3.HttpConnectionManager{}
				if err := f.GetTypedConfig().UnmarshalTo(hcm); err != nil {
					t.Fatal(err)
				}
				if hcm.GetCodecType() != hcmv3.HttpConnectionManager_AUTO {
					t.Errorf("codec_type = %v", hcm.GetCodecType())
				}
				if !proto.Equal(hcm.GetStreamIdleTimeout(), durationpb.New(9*time.Second)) {
					t.Errorf("stream_idle_timeout = %v", hcm.GetStreamIdleTimeout())
				}
				if d := hcm.GetRouteConfig().GetVirtualHosts()[0].GetDomains(); len(d) != 1 || d[0] != "*" {
					t.Errorf("domains = %v", d)
				}
			},
		},
		{
			name: "TypedStruct with a valid known config and with an unknown type_url",
			file: "envoy.yaml",
			data: `
static_resources:
  listeners:
  - name: l0
    address:
      socket_address: {address: 127.0.0.1, port_value: 10000}
    filter_chains:
    - filters:
      - name: tcp
        typed_config:
          "@type": type.googleapis.com/xds.type.v3.TypedStruct
          type_url: type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          value: {stat_prefix: tcp, cluster: c0, idle_timeout: {seconds: 5}}
  - name: l1
    address:
      socket_address: {address: 127.0.0.1, port_value: 10001}
    filter_chains:
    - filters:
      - name: custom
        typed_config:
          "@type": type.googleapis.com/udpa.type.v1.TypedStruct
          type_url: type.googleapis.com/acme.Custom
          value: {anything: [1, 2]}
`,
			check: func(t *testing.T, b *bootstrapv3.Bootstrap) {
				if n := len(b.GetStaticResources().GetListeners()); n != 2 {
					t.Errorf("%d listeners, want 2", n)
				}
			},
		},
		{
			name: "no env var expansion",
			file: "envoy.yaml",
			data: "node: {id: $HOSTNAME}\n",
			check: func(t *testing.T, b *bootstrapv3.Bootstrap) {
				if b.GetNode().GetId() != "$HOSTNAME" {
					t.Errorf("node.id = %q", b.GetNode().GetId())
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := LoadBytes(tt.file, []byte(tt.data))
			if err != nil {
				t.Fatalf("LoadBytes: %v", err)
			}
			tt.check(t, b)
		})
	}
}

func TestBinaryProto(t *testing.T) {
	want := &bootstrapv3.Bootstrap{Node: &corev3.Node{Id: "bin"}}
	data, err := proto.Marshal(want)
	if err != nil {
		t.Fatal(err)
	}
	got, err := LoadBytes("envoy.pb", data)
	if err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
	// An unknown field (number 999) is rejected as Envoy's
	// checkForUnexpectedFields does.
	bad := append(append([]byte{}, data...), 0xb8, 0x3e, 0x01)
	_, err = LoadBytes("envoy.pb", bad)
	if err == nil || err.Error() != "envoy.pb: unknown fields in binary input" {
		t.Errorf("err = %v", err)
	}
}

func writeTemp(t *testing.T, name, data string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestConfigYAMLMerge(t *testing.T) {
	path := writeTemp(t, "envoy.yaml", minimalYAML)
	b, err := Load(Source{Path: path, YAML: `
node: {id: override}
admin: {profile_path: /tmp/prof}
static_resources:
  clusters:
  - name: c1
    connect_timeout: 1s
`})
	if err != nil {
		t.Fatal(err)
	}
	// Scalar replaced, sibling scalar kept.
	if b.GetNode().GetId() != "override" || b.GetNode().GetCluster() != "c" {
		t.Errorf("node = %v", b.GetNode())
	}
	// Message merged: address from the file, profile_path from the override.
	if b.GetAdmin().GetProfilePath() != "/tmp/prof" || b.GetAdmin().GetAddress().GetSocketAddress().GetPortValue() != 9901 {
		t.Errorf("admin = %v", b.GetAdmin())
	}
	// Repeated appended.
	cs := b.GetStaticResources().GetClusters()
	if len(cs) != 2 || cs[0].GetName() != "c0" || cs[1].GetName() != "c1" {
		t.Errorf("clusters = %v", cs)
	}
}

func TestLoadSources(t *testing.T) {
	good := writeTemp(t, "envoy.yaml", minimalYAML)
	tests := []struct {
		name    string
		src     Source
		wantErr string // "" for success
	}{
		{"yaml only", Source{YAML: "node: {id: n9}"}, ""},
		{"file only", Source{Path: good}, ""},
		{"neither", Source{}, "bootstrap: at least one of --config-path or --config-yaml must be non-empty"},
		{"missing file", Source{Path: "/nonexistent/envoy.yaml"}, "open /nonexistent/envoy.yaml: no such file or directory"},
		{"bad override", Source{Path: good, YAML: "nope: 1"}, `--config-yaml: unknown field "nope"`},
		{"override breaks validation", Source{Path: good, YAML: "static_resources: {clusters: [{name: c1, connect_timeout: -2s}]}"},
			good + ": static_resources.clusters[1].connect_timeout: value must be greater than 0s"},
		{"validation with yaml only", Source{YAML: "static_resources: {clusters: [{name: c, connect_timeout: -2s}]}"},
			"--config-yaml: static_resources.clusters[0].connect_timeout: value must be greater than 0s"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := Load(tt.src)
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("Load: %v", err)
			case tt.wantErr == "" && b == nil:
				t.Fatal("Load returned nil bootstrap")
			case tt.wantErr != "" && (err == nil || err.Error() != tt.wantErr):
				t.Fatalf("err = %v, want %s", err, tt.wantErr)
			}
		})
	}
}

func TestJSONRoundTrip(t *testing.T) {
	b, err := LoadBytes("envoy.yaml", []byte(minimalYAML))
	if err != nil {
		t.Fatal(err)
	}
	js, err := JSON(b)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(js), `"static_resources"`) {
		t.Errorf("JSON does not use proto field names: %s", js)
	}
	again, err := LoadBytes("dump.json", js)
	if err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(b, again) {
		t.Errorf("round trip differs:\n%v\n%v", b, again)
	}
	if _, err := Resolver().FindMessageByURL("type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"); err != nil {
		t.Errorf("Resolver lacks the router: %v", err)
	}
}
