package bootstrap

import (
	"strings"
	"testing"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
)

// A file-based xDS DiscoveryResponse decodes as Envoy reads it: YAML with a
// single object where the proto has a list, JSON, and errors naming the field.
func TestLoadMessage(t *testing.T) {
	lds := `
version_info: "7"
resources:
- "@type": type.googleapis.com/envoy.config.listener.v3.Listener
  name: listener_0
  address: {socket_address: {address: 0.0.0.0, port_value: 10000}}
  filter_chains:
  - filters:
      name: envoy.filters.network.tcp_proxy
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
        stat_prefix: t
        cluster: c
`
	tests := []struct {
		name, file, data, wantErr string
	}{
		{"yaml", "lds.yaml", lds, ""},
		{"json", "lds.json", `{"version_info":"7","resources":[{"@type":"type.googleapis.com/envoy.config.listener.v3.Listener","name":"listener_0"}]}`, ""},
		{"unknown field", "lds.yaml", "version_info: x\nbogus: 1\n", "bogus"},
		{"bad yaml", "lds.yml", "resources: [\n", "lds.yml"},
		{"unknown type", "lds.yaml", "resources: [{'@type': type.googleapis.com/nope.Nope}]\n", "nope.Nope"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var dr discoveryv3.DiscoveryResponse
			err := LoadMessage(tt.file, []byte(tt.data), &dr)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if dr.GetVersionInfo() != "7" || len(dr.GetResources()) != 1 {
				t.Fatalf("got %v", &dr)
			}
			var l listenerv3.Listener
			if err := dr.GetResources()[0].UnmarshalTo(&l); err != nil || l.GetName() != "listener_0" {
				t.Fatalf("resource: %v %v", err, l.GetName())
			}
			if tt.name == "yaml" && len(l.GetFilterChains()[0].GetFilters()) != 1 {
				t.Fatalf("single object as list: %v", l.GetFilterChains())
			}
		})
	}
}
