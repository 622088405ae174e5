package client

import (
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
)

// A SotW request that replaces a queued one of its type keeps the node the
// replaced one carried (set_node_on_first_message_only: it may have been the
// stream's first), and a request of another type is not touched.
func TestSendQueueCoalescingKeepsNode(t *testing.T) {
	const rds, cds = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration", "type.googleapis.com/envoy.config.cluster.v3.Cluster"
	node := &corev3.Node{Id: "n"}
	q := newSendQueue(&Client{cfg: Config{}})
	q.push(rds, &discoveryv3.DiscoveryRequest{TypeUrl: rds, Node: node, ResourceNames: []string{"a"}})
	q.push(cds, &discoveryv3.DiscoveryRequest{TypeUrl: cds})
	q.push(rds, &discoveryv3.DiscoveryRequest{TypeUrl: rds, ResourceNames: []string{"a", "b"}})
	if len(q.reqs) != 2 {
		t.Fatalf("%d queued requests, want 2 (one per type)", len(q.reqs))
	}
	got := q.reqs[0].msg.(*discoveryv3.DiscoveryRequest)
	if got.GetNode().GetId() != "n" || len(got.GetResourceNames()) != 2 {
		t.Errorf("coalesced request: node %v, names %v; want the node kept and the newer names", got.GetNode(), got.GetResourceNames())
	}
	if n := q.reqs[1].msg.(*discoveryv3.DiscoveryRequest).GetNode(); n != nil {
		t.Errorf("the other type's request got node %v", n)
	}
}
