package client

import (
	"context"
	"slices"
	"testing"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
)

func ttlSnapshot(t *testing.T, version string, ttl time.Duration) *cachev3.Snapshot {
	t.Helper()
	s, err := cachev3.NewSnapshotWithTTLs(version, map[string][]types.ResourceWithTTL{
		ClusterURL: {{Resource: cluster("a", time.Second), TTL: &ttl}}})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestSotWTTL: go-control-plane wraps resources with a TTL in the Resource wrapper (SotW only); without
// heartbeats the resource is removed when the TTL expires, with heartbeats it stays.
func TestSotWTTL(t *testing.T) {
	for _, m := range modes[:2] {
		t.Run(m.name+"/expiry", func(t *testing.T) {
			sc := cachev3.NewSnapshotCache(m.ads, cachev3.IDHash{}, nil)
			setSnapshot(t, sc, ttlSnapshot(t, "1", 200*time.Millisecond))
			c, _ := newClient(t, m, newControlPlane(t, sc), nil)
			rec := newRecorder()
			c.Watch(ClusterType, nil, rec)
			if u := rec.next(t); !slices.Equal(names(u.Resources), []string{"a"}) {
				t.Fatalf("first update %+v", u)
			}
			if u := rec.next(t); !slices.Equal(u.Removed, []string{"a"}) || len(u.Resources) > 0 {
				t.Fatalf("after TTL: %+v, want a removed", u)
			}
		})
		t.Run(m.name+"/heartbeat", func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			sc := cachev3.NewSnapshotCacheWithHeartbeating(ctx, m.ads, cachev3.IDHash{}, nil, 50*time.Millisecond)
			setSnapshot(t, sc, ttlSnapshot(t, "1", time.Second))
			cp := newControlPlane(t, sc)
			c, _ := newClient(t, m, cp, nil)
			rec := newRecorder()
			c.Watch(ClusterType, nil, rec)
			rec.next(t)
			rec.none(t, 1500*time.Millisecond) // heartbeats every 50 ms keep a alive past its 1 s TTL
		})
	}
}

// deltaTTLServer sends cluster a with a TTL, heartbeats it a few times, then goes quiet.
type deltaTTLServer struct {
	discoveryv3.UnimplementedAggregatedDiscoveryServiceServer
	ttl        time.Duration
	heartbeats int
}

func (s *deltaTTLServer) DeltaAggregatedResources(stream discoveryv3.AggregatedDiscoveryService_DeltaAggregatedResourcesServer) error {
	if _, err := stream.Recv(); err != nil {
		return err
	}
	go func() { // drain ACKs
		for {
			if _, err := stream.Recv(); err != nil {
				return
			}
		}
	}()
	body, err := anypb.New(cluster("a", time.Second))
	if err != nil {
		return err
	}
	res := &discoveryv3.Resource{Name: "a", Version: "1", Resource: body, Ttl: durationpb.New(s.ttl)}
	if err := stream.Send(&discoveryv3.DeltaDiscoveryResponse{TypeUrl: ClusterURL, Nonce: "n0", Resources: []*discoveryv3.Resource{res}}); err != nil {
		return err
	}
	for i := range s.heartbeats {
		time.Sleep(100 * time.Millisecond)
		hb := &discoveryv3.Resource{Name: "a", Version: "1", Ttl: durationpb.New(s.ttl)}
		nonce := "h" + string(rune('0'+i))
		if err := stream.Send(&discoveryv3.DeltaDiscoveryResponse{TypeUrl: ClusterURL, Nonce: nonce, Resources: []*discoveryv3.Resource{hb}}); err != nil {
			return err
		}
	}
	<-stream.Context().Done()
	return nil
}

func TestDeltaTTLHeartbeatThenExpiry(t *testing.T) {
	gs := grpc.NewServer()
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(gs, &deltaTTLServer{ttl: time.Second, heartbeats: 10})
	cp := &controlPlane{t: t, gs: gs}
	ln := listen(t)
	cp.addr.Store(ln.Addr().String())
	go gs.Serve(ln)
	defer gs.Stop()
	c, _ := newClient(t, modes[2], cp, nil)
	rec := newRecorder()
	c.Watch(ClusterType, nil, rec)
	if u := rec.next(t); !slices.Equal(names(u.Resources), []string{"a"}) || u.Resources["a"].Version != "1" {
		t.Fatalf("first update %+v", u)
	}
	rec.none(t, 800*time.Millisecond) // heartbeats every 100 ms for 1 s, TTL 1 s
	if u := rec.next(t); !slices.Equal(u.Removed, []string{"a"}) {
		t.Fatalf("after heartbeats stopped: %+v, want a removed", u)
	}
	c.Close()
}
