package upstream

import (
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// connKeyOf decides whether a replaced cluster's connections move: only the
// connection fields count.
func TestConnKeyOf(t *testing.T) {
	base := func() *clusterv3.Cluster {
		return &clusterv3.Cluster{Name: "c", ConnectTimeout: durationpb.New(time.Second)}
	}
	withBuffer := func(n uint32) *clusterv3.Cluster {
		c := base()
		c.PerConnectionBufferLimitBytes = wrapperspb.UInt32(n)
		return c
	}
	withTS := func(name string) *clusterv3.Cluster {
		c := base()
		c.TransportSocket = &corev3.TransportSocket{Name: name}
		return c
	}
	otherTimeout := base()
	otherTimeout.ConnectTimeout = durationpb.New(2 * time.Second)
	otherTimeout.Name = "d"
	for _, tt := range []struct {
		name string
		a, b *clusterv3.Cluster
		same bool
	}{
		{"no connection fields", base(), base(), true},
		{"other non-connection fields", base(), otherTimeout, true},
		{"same buffer limit", withBuffer(10), withBuffer(10), true},
		{"buffer limit added", base(), withBuffer(10), false},
		{"buffer limit changed", withBuffer(10), withBuffer(20), false},
		{"same transport socket", withTS("tls"), withTS("tls"), true},
		{"transport socket changed", withTS("tls"), withTS("raw"), false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := connKeyOf(tt.a) == connKeyOf(tt.b); got != tt.same {
				t.Errorf("same key = %v, want %v", got, tt.same)
			}
		})
	}
	if k := connKeyOf(base()); k != "" {
		t.Errorf("key of a cluster without connection fields = %q, want empty", k)
	}
}
