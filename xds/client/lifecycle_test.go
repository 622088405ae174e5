package client

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// TestCascadeAndClose: a CDS watcher subscribes the EDS names of its clusters from inside OnUpdate (the
// ordering Envoy uses on ADS); after Close and the server's stop every goroutine is gone.
func TestCascadeAndClose(t *testing.T) {
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
			sc := cachev3.NewSnapshotCache(m.ads, cachev3.IDHash{}, nil)
			setSnapshot(t, sc, snapshot(t, "1", map[string][]types.Resource{
				ClusterURL:  {cluster("a", time.Second), cluster("b", time.Second)},
				EndpointURL: {cla("a", 0), cla("b", 0)},
			}))
			cp := &controlPlane{t: t, cache: sc}
			cp.start()
			c, _ := newClient(t, m, cp, nil)
			eds := newRecorder()
			c.Watch(EndpointType, []string{}, eds)
			c.Watch(ClusterType, nil, WatcherFunc(func(_ string, u Update) error {
				c.SetNames(EndpointType, names(u.Resources))
				return nil
			}))
			got := map[string]bool{}
			for len(got) < 2 {
				for n := range eds.next(t).Resources {
					got[n] = true
				}
			}
			c.Close()
			cp.stop()
		})
	}
}

// TestControlPlaneNeverAnswers: Dial and the stream hang; Watch, SetNames and Close still return, and
// the initial fetch timeout ends warming.
func TestControlPlaneNeverAnswers(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	c := New(Config{
		Dial: func(ctx context.Context) (grpc.ClientConnInterface, error) {
			<-ctx.Done()
			return nil, ctx.Err()
		},
		ADS:                 true,
		InitialFetchTimeout: 20 * time.Millisecond,
	})
	rec := newRecorder()
	for i := range 100 {
		c.Watch(ListenerType, nil, rec)
		c.SetNames(RouteType, []string{string(rune('a' + i%26))})
	}
	if u := rec.next(t); !u.InitialFetchTimeout {
		t.Fatalf("update %+v, want the initial fetch timeout", u)
	}
	c.Close()
	c.Close() // idempotent
	after := newRecorder()
	c.Watch(ClusterType, nil, after)
	after.none(t, 50*time.Millisecond)
}

func TestDefaultBackoff(t *testing.T) {
	tests := []struct {
		attempt int
		max     time.Duration
	}{{0, 500 * time.Millisecond}, {1, time.Second}, {3, 4 * time.Second}, {6, 30 * time.Second}, {60, 30 * time.Second}}
	for _, tt := range tests {
		for range 100 {
			if d := DefaultBackoff(tt.attempt); d < 0 || d >= tt.max {
				t.Fatalf("attempt %d: %v not in [0, %v)", tt.attempt, d, tt.max)
			}
		}
	}
}

func TestDecode(t *testing.T) {
	good, _ := anyOf(cla("x", 0))
	wrongType, _ := anyOf(cluster("x", time.Second))
	bad, _ := anyOf(cluster("x", -time.Second))
	tests := []struct {
		name    string
		rt      ResourceType
		in      []byte
		wantErr bool
	}{
		{"endpoint", EndpointType, good, false},
		{"type mismatch", EndpointType, wrongType, true},
		{"invalid", ClusterType, bad, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := mustAny(t, tt.in)
			name, msg, err := tt.rt.Decode(a)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err %v, wantErr %v", err, tt.wantErr)
			}
			if err == nil && (name != "x" || msg == nil) {
				t.Errorf("name %q msg %v", name, msg)
			}
		})
	}
	if !slices.Equal([]bool{ListenerType.AllResourcesRequired(), ClusterType.AllResourcesRequired(),
		RouteType.AllResourcesRequired(), EndpointType.AllResourcesRequired()}, []bool{true, true, false, false}) {
		t.Error("AllResourcesRequired wrong")
	}
}

// anyOf and mustAny carry an Any through a byte form so table rows stay comparable.
func anyOf(m proto.Message) ([]byte, error) {
	a, err := anypb.New(m)
	if err != nil {
		return nil, err
	}
	return proto.Marshal(a)
}

func mustAny(t *testing.T, b []byte) *anypb.Any {
	t.Helper()
	a := new(anypb.Any)
	if err := proto.Unmarshal(b, a); err != nil {
		t.Fatal(err)
	}
	return a
}
