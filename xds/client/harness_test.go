package client

import (
	"context"
	"fmt"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	clusterservice "github.com/envoyproxy/go-control-plane/envoy/service/cluster/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	endpointservice "github.com/envoyproxy/go-control-plane/envoy/service/endpoint/v3"
	listenerservice "github.com/envoyproxy/go-control-plane/envoy/service/listener/v3"
	routeservice "github.com/envoyproxy/go-control-plane/envoy/service/route/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/outrider-proxy/outrider/telemetry/stats"
)

const nodeID = "test-node"

// mode is one of the four transport variants.
type mode struct {
	name       string
	delta, ads bool
}

var modes = []mode{
	{"sotw-ads", false, true},
	{"sotw-xds", false, false},
	{"delta-ads", true, true},
	{"delta-xds", true, false},
}

// request is one request the management server saw (SotW or delta).
type request struct {
	sotw  *discoveryv3.DiscoveryRequest
	delta *discoveryv3.DeltaDiscoveryRequest
}

func (r request) typeURL() string {
	if r.sotw != nil {
		return r.sotw.GetTypeUrl()
	}
	return r.delta.GetTypeUrl()
}

// controlPlane is go-control-plane's real server on 127.0.0.1:0, recording every request.
type controlPlane struct {
	t     *testing.T
	cache cachev3.Cache
	addr  atomic.Value // string
	mu    sync.Mutex
	reqs  []request
	gs    *grpc.Server
}

func newControlPlane(t *testing.T, cache cachev3.Cache) *controlPlane {
	cp := &controlPlane{t: t, cache: cache}
	cp.start()
	t.Cleanup(cp.stop)
	return cp
}

func (cp *controlPlane) start() {
	// Requests are recorded as they come off the wire: the server's callbacks see the node filled in.
	record := func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, h grpc.StreamHandler) error {
		return h(srv, &recordingStream{ServerStream: ss, cp: cp})
	}
	srv := serverv3.NewServer(context.Background(), cp.cache, nil)
	gs := grpc.NewServer(grpc.StreamInterceptor(record))
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(gs, srv)
	clusterservice.RegisterClusterDiscoveryServiceServer(gs, srv)
	endpointservice.RegisterEndpointDiscoveryServiceServer(gs, srv)
	listenerservice.RegisterListenerDiscoveryServiceServer(gs, srv)
	routeservice.RegisterRouteDiscoveryServiceServer(gs, srv)
	ln := listen(cp.t)
	cp.addr.Store(ln.Addr().String())
	cp.gs = gs
	go gs.Serve(ln)
}

type recordingStream struct {
	grpc.ServerStream
	cp *controlPlane
}

func (s *recordingStream) RecvMsg(m any) error {
	if err := s.ServerStream.RecvMsg(m); err != nil {
		return err
	}
	var r request
	switch m := m.(type) {
	case *discoveryv3.DiscoveryRequest:
		r.sotw = proto.Clone(m).(*discoveryv3.DiscoveryRequest)
	case *discoveryv3.DeltaDiscoveryRequest:
		r.delta = proto.Clone(m).(*discoveryv3.DeltaDiscoveryRequest)
	}
	s.cp.mu.Lock()
	s.cp.reqs = append(s.cp.reqs, r)
	s.cp.mu.Unlock()
	return nil
}

func (cp *controlPlane) stop() { cp.gs.Stop() }

// restart stops the server and starts a new one on a fresh port (the client's Dial follows addr).
func (cp *controlPlane) restart() {
	cp.stop()
	cp.start()
}

func (cp *controlPlane) dial(ctx context.Context) (grpc.ClientConnInterface, error) {
	return grpc.NewClient(cp.addr.Load().(string), grpc.WithTransportCredentials(insecure.NewCredentials()))
}

// waitRequest waits (bounded) for a request of typeURL matching pred, after the first skip requests.
func (cp *controlPlane) waitRequest(typeURL string, pred func(request) bool) request {
	cp.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		cp.mu.Lock()
		reqs := slices.Clone(cp.reqs)
		cp.mu.Unlock()
		for _, r := range reqs {
			if r.typeURL() == typeURL && pred(r) {
				return r
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	cp.t.Fatalf("no matching %s request; saw %d requests", typeURL, len(cp.reqs))
	return request{}
}

func (cp *controlPlane) requests() []request {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	return slices.Clone(cp.reqs)
}

// recorder is a Watcher that queues updates and answers with reject's error.
type recorder struct {
	ch     chan Update
	reject atomic.Value // func(Update) error
}

func newRecorder() *recorder { return &recorder{ch: make(chan Update, 100)} }

func (r *recorder) OnUpdate(_ string, u Update) error {
	// Never block the client: go-control-plane resends a NACKed version at
	// once, and a flood must not wedge the client's one goroutine (and the
	// test's Close) when nobody reads; the oldest queued update goes.
	for {
		select {
		case r.ch <- u:
		default:
			select {
			case <-r.ch:
			default:
			}
			continue
		}
		break
	}
	if f, ok := r.reject.Load().(func(Update) error); ok && f != nil {
		return f(u)
	}
	return nil
}

func (r *recorder) next(t *testing.T) Update {
	t.Helper()
	select {
	case u := <-r.ch:
		return u
	case <-time.After(10 * time.Second):
		t.Fatal("no update")
		return Update{}
	}
}

// none checks that no update arrives for a short while.
func (r *recorder) none(t *testing.T, d time.Duration) {
	t.Helper()
	select {
	case u := <-r.ch:
		t.Fatalf("unexpected update %+v", u)
	case <-time.After(d):
	}
}

func newClient(t *testing.T, m mode, cp *controlPlane, mod func(*Config)) (*Client, *stats.Store) {
	st := stats.NewStore()
	cfg := Config{
		Node:    &corev3.Node{Id: nodeID},
		Delta:   m.delta,
		ADS:     m.ads,
		Backoff: func(int) time.Duration { return 20 * time.Millisecond },
		Stats:   st,
	}
	if cp != nil {
		cfg.Dial = cp.dial
	}
	if mod != nil {
		mod(&cfg)
	}
	c := New(cfg)
	t.Cleanup(c.Close)
	return c, st
}

func cluster(name string, timeout time.Duration) *clusterv3.Cluster {
	return &clusterv3.Cluster{Name: name, ConnectTimeout: durationpb.New(timeout)}
}

func cla(name string, priority uint32) *endpointv3.ClusterLoadAssignment {
	return &endpointv3.ClusterLoadAssignment{ClusterName: name,
		Endpoints: []*endpointv3.LocalityLbEndpoints{{Priority: priority}}}
}

func names(m map[string]Resource) []string {
	out := make([]string, 0, len(m))
	for n := range m {
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}

func timeoutOf(t *testing.T, r Resource) time.Duration {
	t.Helper()
	c, ok := r.Msg.(*clusterv3.Cluster)
	if !ok {
		t.Fatalf("resource is %T", r.Msg)
	}
	return c.GetConnectTimeout().AsDuration()
}

func snapshot(t *testing.T, version string, res map[string][]types.Resource) *cachev3.Snapshot {
	t.Helper()
	s, err := cachev3.NewSnapshot(version, res)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func setSnapshot(t *testing.T, c cachev3.SnapshotCache, s *cachev3.Snapshot) {
	t.Helper()
	if err := c.SetSnapshot(context.Background(), nodeID, s); err != nil {
		t.Fatal(fmt.Errorf("set snapshot: %w", err))
	}
}

func listen(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}
