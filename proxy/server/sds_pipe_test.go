package server

import (
	"strings"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	"google.golang.org/protobuf/encoding/protojson"
)

func TestPipeClusterPath(t *testing.T) {
	tests := []struct {
		name, json, want, err string
	}{
		{"SPIRE agent socket", `{"name":"spire_agent","load_assignment":{"cluster_name":"spire_agent","endpoints":[{"lb_endpoints":[{"endpoint":{"address":{"pipe":{"path":"/run/spire/sockets/agent.sock"}}}}]}]}}`, "/run/spire/sockets/agent.sock", ""},
		{"socket address", `{"name":"x","load_assignment":{"cluster_name":"x","endpoints":[{"lb_endpoints":[{"endpoint":{"address":{"socket_address":{"address":"127.0.0.1","port_value":1}}}}]}]}}`, "", ""},
		{"two endpoints", `{"name":"x","load_assignment":{"cluster_name":"x","endpoints":[{"lb_endpoints":[{"endpoint":{"address":{"pipe":{"path":"/a"}}}},{"endpoint":{"address":{"pipe":{"path":"/b"}}}}]}]}}`, "", "exactly one endpoint"},
		{"with TLS", `{"name":"x","transport_socket":{"name":"envoy.transport_sockets.tls"},"load_assignment":{"cluster_name":"x","endpoints":[{"lb_endpoints":[{"endpoint":{"address":{"pipe":{"path":"/a"}}}}]}]}}`, "", "transport_socket"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := &clusterv3.Cluster{}
			if err := protojson.Unmarshal([]byte(tc.json), c); err != nil {
				t.Fatal(err)
			}
			got, err := pipeClusterPath(c)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("got %q, %v; want %q", got, err, tc.want)
			}
		})
	}
}
