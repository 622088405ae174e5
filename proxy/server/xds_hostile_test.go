package server_test

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/outrider-proxy/outrider/proxy/server/servertest"
)

// hostileCP is an ADS server whose behaviour per stream the test scripts:
// it answers CDS with whatever serve returns, one response at a time.
type hostileCP struct {
	discoveryv3.UnimplementedAggregatedDiscoveryServiceServer
	port    int
	streams atomic.Int64
	mu      sync.Mutex
	nacks   []string
	acked   string // the last version ACKed
	serve   func(stream discoveryv3.AggregatedDiscoveryService_StreamAggregatedResourcesServer, n int64) error
}

func startHostileCP(t *testing.T) *hostileCP {
	cp := &hostileCP{}
	gs := grpc.NewServer()
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(gs, cp)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cp.port = ln.Addr().(*net.TCPAddr).Port
	go gs.Serve(ln)
	t.Cleanup(gs.Stop)
	return cp
}

func (cp *hostileCP) StreamAggregatedResources(s discoveryv3.AggregatedDiscoveryService_StreamAggregatedResourcesServer) error {
	n := cp.streams.Add(1)
	// Record ACKs and NACKs of every request on this stream.
	reqs := make(chan *discoveryv3.DiscoveryRequest, 1024)
	go func() {
		defer close(reqs)
		for {
			r, err := s.Recv()
			if err != nil {
				return
			}
			cp.mu.Lock()
			if r.GetErrorDetail() != nil {
				cp.nacks = append(cp.nacks, r.GetErrorDetail().GetMessage())
			} else if r.GetTypeUrl() == cdsURL && r.GetVersionInfo() != "" {
				cp.acked = r.GetVersionInfo()
			}
			cp.mu.Unlock()
			select {
			case reqs <- r:
			default: // the script does not read them all
			}
		}
	}()
	return cp.serve(s, n)
}

func (cp *hostileCP) state() (nacks []string, acked string) {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	return append([]string(nil), cp.nacks...), cp.acked
}

const cdsURL = "type.googleapis.com/envoy.config.cluster.v3.Cluster"

// staticCluster is a STATIC cluster resource named name with one endpoint.
func staticCluster(t *testing.T, name string, port int) *anypb.Any {
	a, err := anypb.New(&clusterv3.Cluster{
		Name: name, ConnectTimeout: durationpb.New(time.Second),
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC},
		LoadAssignment: &endpointv3.ClusterLoadAssignment{ClusterName: name, Endpoints: []*endpointv3.LocalityLbEndpoints{{
			LbEndpoints: []*endpointv3.LbEndpoint{{HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
				Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
					Address: "127.0.0.1", PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: uint32(port)}}}}}}}},
		}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// hostileBootstrap is CDS over ADS from cp, plus a static listener routing
// to the dynamic cluster "dyn", whose requests must keep succeeding.
func hostileBootstrap(cpPort int) string {
	return fmt.Sprintf(`
node: {id: %s, cluster: test}
admin: {address: {socket_address: {address: 127.0.0.1, port_value: 0}}}
dynamic_resources:
  ads_config:
    api_type: GRPC
    transport_api_version: V3
    grpc_services: [{envoy_grpc: {cluster_name: xds}}]
  cds_config: {ads: {}, resource_api_version: V3, initial_fetch_timeout: 1s}
static_resources:
  listeners:
  - name: front
    address: {socket_address: {address: 127.0.0.1, port_value: 0}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: front
          route_config:
            validate_clusters: false
            virtual_hosts: [{name: vh, domains: ["*"], routes: [{match: {prefix: "/"}, route: {cluster: dyn}}]}]
          http_filters:
          - name: envoy.filters.http.router
            typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}
  clusters:
  - name: xds
    type: STATIC
    connect_timeout: 1s
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {http2_protocol_options: {}}
    load_assignment:
      cluster_name: xds
      endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: %d}}}}]}]
`, xdsNode, cpPort)
}

// A control plane that sends garbage, resets its stream over and over, and
// floods updates: the proxy NACKs the garbage naming the resource, keeps the
// last good cluster serving, reconnects with back-off instead of spinning,
// applies the last of the flood, and its heap does not grow with the flood.
func TestHostileControlPlane(t *testing.T) {
	up := startUpstream(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	cp := startHostileCP(t)
	good := staticCluster(t, "dyn", up.port())
	garbage := &anypb.Any{TypeUrl: cdsURL, Value: []byte("\x0a\xff\xff\xff\xff\x0fnot a cluster")}

	var phase atomic.Int32 // 0 good then garbage, 1 resets, 2 flood
	const floodN = 3000
	cp.serve = func(s discoveryv3.AggregatedDiscoveryService_StreamAggregatedResourcesServer, n int64) error {
		send := func(version string, res ...*anypb.Any) error {
			return s.Send(&discoveryv3.DiscoveryResponse{VersionInfo: version, TypeUrl: cdsURL, Resources: res, Nonce: version})
		}
		switch phase.Load() {
		case 0:
			if err := send("good", good); err != nil {
				return err
			}
			time.Sleep(100 * time.Millisecond)
			if err := send("garbage", garbage); err != nil {
				return err
			}
			for phase.Load() == 0 {
				select {
				case <-s.Context().Done():
					return nil
				case <-time.After(10 * time.Millisecond):
				}
			}
			return errors.New("reset by a hostile control plane")
		case 1:
			// Answer, then reset the stream at once, every time.
			send("good", good)
			return errors.New("reset by a hostile control plane")
		default:
			for i := range floodN {
				if err := send(fmt.Sprint("flood-", i), good); err != nil {
					return err
				}
			}
			<-s.Context().Done()
			return nil
		}
	}
	p := servertest.Start(t, hostileBootstrap(cp.port))
	get := func() string {
		resp, err := http.Get(p.URL("front", "/"))
		if err != nil {
			return err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	eventually(t, "the dynamic cluster serving", get, "ok")

	// Garbage: NACKed, naming what could not be decoded; the cluster stays.
	eventually(t, "garbage NACKed", func() string {
		nacks, _ := cp.state()
		if len(nacks) > 0 {
			return "nacked"
		}
		return "waiting"
	}, "nacked")
	if nacks, acked := cp.state(); !strings.Contains(nacks[0], "Cluster") || acked != "good" {
		t.Errorf("NACK %q (last ACK %q): want an error naming the resource type, and %q still ACKed", nacks[0], acked, "good")
	}
	if got := get(); got != "ok" {
		t.Fatalf("after the garbage: %q", got)
	}

	// Resets: for 2 s every stream ends right after its first response. The
	// client must back off (Envoy: jittered, from 500 ms) rather than spin,
	// and traffic goes on.
	phase.Store(1)
	before := cp.streams.Load()
	end := time.Now().Add(2 * time.Second)
	for time.Now().Before(end) {
		if got := get(); got != "ok" {
			t.Fatalf("while the control plane resets its streams: %q", got)
		}
		time.Sleep(50 * time.Millisecond)
	}
	resets := cp.streams.Load() - before
	t.Logf("%d streams during 2 s of resets", resets)
	if resets > 40 {
		t.Errorf("%d streams in 2 s: the client reconnects without back-off", resets)
	}

	// Flood: 3,000 versions as fast as gRPC takes them; the last is ACKed
	// and the heap is bounded.
	runtime.GC()
	var m0, m1 runtime.MemStats
	runtime.ReadMemStats(&m0)
	phase.Store(2)
	eventually(t, "the flood's last version ACKed", func() string {
		_, acked := cp.state()
		return acked
	}, fmt.Sprint("flood-", floodN-1))
	runtime.GC()
	runtime.ReadMemStats(&m1)
	grow := int64(m1.HeapInuse) - int64(m0.HeapInuse)
	t.Logf("heap grew by %d KiB over %d versions", grow>>10, floodN)
	if grow > 64<<20 {
		t.Errorf("heap grew by %d MiB during the flood", grow>>20)
	}
	if got := get(); got != "ok" {
		t.Fatalf("after the flood: %q", got)
	}
	if p.Stat("cluster_manager.cds.update_rejected") < 1 {
		t.Errorf("cluster_manager.cds.update_rejected = %d", p.Stat("cluster_manager.cds.update_rejected"))
	}
}
