package bench

import (
	"fmt"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/outrider-proxy/outrider/proxy/upstream"
	"github.com/outrider-proxy/outrider/telemetry/stats"
)

// edsAssignment is n endpoints 10.<net>.x.y:80 in one locality, the one at
// index odd (if any) on port 81 instead.
func edsAssignment(n int, net byte, odd int) *endpointv3.ClusterLoadAssignment {
	les := make([]*endpointv3.LbEndpoint, n)
	for i := range les {
		port := uint32(80)
		if i == odd {
			port = 81
		}
		les[i] = &endpointv3.LbEndpoint{HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
			Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
				Address: fmt.Sprintf("10.%d.%d.%d", net, i>>8&255, i&255), PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port}}}},
		}}}
	}
	return &endpointv3.ClusterLoadAssignment{ClusterName: "eds", Endpoints: []*endpointv3.LocalityLbEndpoints{{LbEndpoints: les}}}
}

// BenchmarkEDSUpdate applies EDS updates of 10,000 hosts to a cluster,
// alternating between two assignments so that every op changes it: one
// host changed (one endpoint's port), or all of them (every address). Each op
// parses the assignment, diffs it against the current hosts and rebuilds
// the load balancer (the ring or the Maglev table).
func BenchmarkEDSUpdate(b *testing.B) {
	const n = 10000
	for _, policy := range []clusterv3.Cluster_LbPolicy{clusterv3.Cluster_ROUND_ROBIN, clusterv3.Cluster_RING_HASH, clusterv3.Cluster_MAGLEV} {
		for _, change := range []string{"unchanged", "one", "all"} {
			b.Run(fmt.Sprintf("%s/%s", policy, change), func(b *testing.B) {
				m := upstream.NewManager(stats.NewStore().Root())
				defer m.Close()
				err := m.AddOrUpdate(&clusterv3.Cluster{
					Name:                 "eds",
					ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
					EdsClusterConfig:     &clusterv3.Cluster_EdsClusterConfig{EdsConfig: &corev3.ConfigSource{ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}}}},
					ConnectTimeout:       durationpb.New(1e9),
					LbPolicy:             policy,
				})
				if err != nil {
					b.Fatal(err)
				}
				c := m.Get("eds")
				a := edsAssignment(n, 0, -1)
				next := map[string]*endpointv3.ClusterLoadAssignment{
					"unchanged": edsAssignment(n, 0, -1), "one": edsAssignment(n, 0, n/2), "all": edsAssignment(n, 1, -1),
				}[change]
				if err := c.UpdateLoadAssignment(a); err != nil {
					b.Fatal(err)
				}
				b.ReportAllocs()
				b.ResetTimer()
				for i := range b.N {
					cla := a
					if i%2 == 0 {
						cla = next
					}
					if err := c.UpdateLoadAssignment(cla); err != nil {
						b.Fatal(err)
					}
				}
				b.StopTimer()
				if got := len(c.Hosts()); got != n {
					b.Fatalf("%d hosts", got)
				}
			})
		}
	}
}
