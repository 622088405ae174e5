package grpclog

import (
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	grpcalsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/grpc/v3"
	alssvcv3 "github.com/envoyproxy/go-control-plane/envoy/service/accesslog/v3"
	testv3 "github.com/envoyproxy/go-control-plane/pkg/test/v3"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/outrider-proxy/outrider/proxy/headers"
	"github.com/outrider-proxy/outrider/proxy/streaminfo"
	"github.com/outrider-proxy/outrider/proxy/upstream"
	"github.com/outrider-proxy/outrider/telemetry/accesslog"
	"github.com/outrider-proxy/outrider/telemetry/formatter"
	"github.com/outrider-proxy/outrider/telemetry/stats"
)

// alsServer starts go-control-plane's test access log service on 127.0.0.1:0.
func alsServer(t *testing.T) (*testv3.AccessLogService, int) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	als := &testv3.AccessLogService{}
	srv := grpc.NewServer()
	alssvcv3.RegisterAccessLogServiceServer(srv, als)
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(srv.Stop)
	return als, ln.Addr().(*net.TCPAddr).Port
}

// manager has one static cluster "als" to 127.0.0.1:port.
func manager(t *testing.T, st *stats.Store, port int) *upstream.Manager {
	t.Helper()
	m := upstream.NewManager(st.Root())
	t.Cleanup(m.Close)
	err := m.AddOrUpdate(&clusterv3.Cluster{
		Name:                 "als",
		ConnectTimeout:       durationpb.New(time.Second),
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC},
		LoadAssignment: &endpointv3.ClusterLoadAssignment{ClusterName: "als", Endpoints: []*endpointv3.LocalityLbEndpoints{{
			LbEndpoints: []*endpointv3.LbEndpoint{{HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
				Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
					Address: "127.0.0.1", PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: uint32(port)},
				}}},
			}}}},
		}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func httpConfig(cluster string, bufferSize uint32, flush time.Duration) *anypb.Any {
	a, err := anypb.New(&grpcalsv3.HttpGrpcAccessLogConfig{
		CommonConfig: &grpcalsv3.CommonGrpcAccessLogConfig{
			LogName:             "echo",
			TransportApiVersion: corev3.ApiVersion_V3,
			GrpcService: &corev3.GrpcService{TargetSpecifier: &corev3.GrpcService_EnvoyGrpc_{
				EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{ClusterName: cluster},
			}},
			BufferSizeBytes:     wrapperspb.UInt32(bufferSize),
			BufferFlushInterval: durationpb.New(flush),
		},
		AdditionalRequestHeadersToLog: []string{"X-Custom"},
	})
	if err != nil {
		panic(err)
	}
	return a
}

func compile(t *testing.T, cfg *anypb.Any, st *stats.Store, m *upstream.Manager) *accesslog.Set {
	t.Helper()
	set, err := accesslog.Compile([]*accesslogv3.AccessLog{{
		Name: "envoy.access_loggers.http_grpc", ConfigType: &accesslogv3.AccessLog_TypedConfig{TypedConfig: cfg},
	}}, accesslog.Options{Stats: st, Clusters: m})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = set.Close() })
	return set
}

func request(path string) *formatter.Context {
	req := &headers.Map{}
	req.Set(":method", "GET")
	req.Set(":scheme", "http")
	req.Set(":authority", "example.com")
	req.Set(":path", path)
	req.Set("x-request-id", "rid-"+path)
	req.Set("x-custom", "v1")
	conn := &streaminfo.Conn{RemoteAddr: netip.MustParseAddrPort("10.0.0.1:1234"), LocalAddr: netip.MustParseAddrPort("127.0.0.1:80")}
	s := &streaminfo.Stream{Conn: conn, StartTime: time.Now(), Protocol: "HTTP/1.1", ResponseCode: 200, UpstreamCluster: "backend"}
	return &formatter.Context{Stream: s, Request: req, Response: &headers.Map{}}
}

// dump waits (bounded) for n entries at the service.
func dump(t *testing.T, als *testv3.AccessLogService, n int) []string {
	t.Helper()
	var got []string
	deadline := time.Now().Add(10 * time.Second)
	for len(got) < n && time.Now().Before(deadline) {
		als.Dump(func(s string) { got = append(got, s) })
		if len(got) < n {
			time.Sleep(20 * time.Millisecond)
		}
	}
	return got
}

func TestHTTPEntriesReachTheService(t *testing.T) {
	als, port := alsServer(t)
	st := stats.NewStore()
	set := compile(t, httpConfig("als", 1<<20, 50*time.Millisecond), st, manager(t, st, port))
	for _, p := range []string{"/a", "/b", "/c"} {
		set.Log(request(p))
	}
	got := dump(t, als, 3)
	if len(got) != 3 {
		t.Fatalf("the service got %d entries, want 3: %q", len(got), got)
	}
	for i, p := range []string{"/a", "/b", "/c"} {
		// go-control-plane's service prints "[<log_name><time>] authority path scheme code request_id cluster".
		if !strings.HasPrefix(got[i], "[echo") || !strings.HasSuffix(got[i], "] example.com "+p+" http 200 rid-"+p+" backend") {
			t.Errorf("entry %d = %q", i, got[i])
		}
	}
	if w := st.Root().Counter("access_logs.grpc_access_log.logs_written").Value(); w != 3 {
		t.Errorf("logs_written = %d, want 3", w)
	}
}

func TestFlushAtBufferSize(t *testing.T) {
	als, port := alsServer(t)
	st := stats.NewStore()
	// A one-hour interval: only buffer_size_bytes can make these go out.
	set := compile(t, httpConfig("als", 1, time.Hour), st, manager(t, st, port))
	set.Log(request("/now"))
	if got := dump(t, als, 1); len(got) != 1 {
		t.Fatalf("an entry above buffer_size_bytes was not flushed: %q", got)
	}
}

func TestServiceDownDropsWithoutBlocking(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close() // nothing listens: every dial is refused
	st := stats.NewStore()
	set := compile(t, httpConfig("als", 1, 10*time.Millisecond), st, manager(t, st, port))
	const n = 20
	start := time.Now()
	for range n {
		set.Log(request("/x"))
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("Log blocked for %v with the service down", d)
	}
	dropped := st.Root().Counter("access_logs.grpc_access_log.logs_dropped")
	deadline := time.Now().Add(10 * time.Second)
	for dropped.Value() < n && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if dropped.Value() != n {
		t.Errorf("logs_dropped = %d, want %d", dropped.Value(), n)
	}
}

func TestTCPEntries(t *testing.T) {
	als, port := alsServer(t)
	st := stats.NewStore()
	tc, _ := anypb.New(&grpcalsv3.TcpGrpcAccessLogConfig{CommonConfig: &grpcalsv3.CommonGrpcAccessLogConfig{
		LogName: "tcp", TransportApiVersion: corev3.ApiVersion_V3,
		GrpcService:         &corev3.GrpcService{TargetSpecifier: &corev3.GrpcService_EnvoyGrpc_{EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{ClusterName: "als"}}},
		BufferFlushInterval: durationpb.New(20 * time.Millisecond),
	}})
	set, err := accesslog.Compile([]*accesslogv3.AccessLog{{
		Name: "envoy.access_loggers.tcp_grpc", ConfigType: &accesslogv3.AccessLog_TypedConfig{TypedConfig: tc},
	}}, accesslog.Options{Stats: st, Clusters: manager(t, st, port)})
	if err != nil {
		t.Fatal(err)
	}
	defer set.Close()
	ctx := request("/")
	ctx.Stream.UpstreamLocalAddr = "127.0.0.1:5555"
	set.Log(ctx)
	got := dump(t, als, 1)
	// "[<log_name><time>] tcp <upstream_local_address> <cluster>"
	if len(got) != 1 || !strings.HasPrefix(got[0], "[tcp") || !strings.Contains(got[0], "] tcp ") ||
		!strings.Contains(got[0], "5555") || !strings.HasSuffix(got[0], " backend") {
		t.Errorf("tcp entries: %q", got)
	}
}

func TestHTTPEntryFields(t *testing.T) {
	l := &Logger{reqHeaders: []string{"x-custom"}}
	ctx := request("/p")
	ctx.Stream.Flags = streaminfo.UpstreamConnectionFailure | streaminfo.NoRouteFound
	e := l.httpEntry(ctx)
	c := e.GetCommonProperties()
	if c.GetDownstreamRemoteAddress().GetSocketAddress().GetAddress() != "10.0.0.1" ||
		c.GetDownstreamRemoteAddress().GetSocketAddress().GetPortValue() != 1234 {
		t.Errorf("downstream_remote_address = %v", c.GetDownstreamRemoteAddress())
	}
	if !c.GetResponseFlags().GetUpstreamConnectionFailure() || !c.GetResponseFlags().GetNoRouteFound() ||
		c.GetResponseFlags().GetLocalReset() {
		t.Errorf("response_flags = %v", c.GetResponseFlags())
	}
	r := e.GetRequest()
	if r.GetRequestMethod() != corev3.RequestMethod_GET || r.GetPath() != "/p" || r.GetRequestHeaders()["x-custom"] != "v1" {
		t.Errorf("request = %v", r)
	}
	if e.GetResponse().GetResponseCode().GetValue() != 200 || e.GetProtocolVersion().String() != "HTTP11" {
		t.Errorf("response %v protocol %v", e.GetResponse(), e.GetProtocolVersion())
	}
}

func TestConfigErrors(t *testing.T) {
	st := stats.NewStore()
	m := manager(t, st, 1)
	google, _ := anypb.New(&grpcalsv3.HttpGrpcAccessLogConfig{CommonConfig: &grpcalsv3.CommonGrpcAccessLogConfig{
		LogName: "x", TransportApiVersion: corev3.ApiVersion_V3,
		GrpcService: &corev3.GrpcService{TargetSpecifier: &corev3.GrpcService_GoogleGrpc_{GoogleGrpc: &corev3.GrpcService_GoogleGrpc{TargetUri: "x", StatPrefix: "x"}}},
	}})
	tagged := proto.Clone(&grpcalsv3.HttpGrpcAccessLogConfig{}).(*grpcalsv3.HttpGrpcAccessLogConfig)
	_ = httpConfig("als", 1, time.Second).UnmarshalTo(tagged)
	tagged.CommonConfig.FilterStateObjectsToLog = []string{"k"}
	taggedAny, _ := anypb.New(tagged)
	tests := []struct {
		cfg      *anypb.Any
		clusters *upstream.Manager
		want     string
	}{
		{httpConfig("nope", 1, time.Second), m, `grpc_service.envoy_grpc.cluster_name: unknown cluster "nope"`},
		{httpConfig("als", 1, time.Second), nil, "no cluster manager"},
		{google, m, "grpc_service: only envoy_grpc is supported"},
		{taggedAny, m, "filter_state_objects_to_log: field not supported"},
	}
	for _, tc := range tests {
		_, err := accesslog.Compile([]*accesslogv3.AccessLog{{
			Name: "envoy.access_loggers.http_grpc", ConfigType: &accesslogv3.AccessLog_TypedConfig{TypedConfig: tc.cfg},
		}}, accesslog.Options{Stats: st, Clusters: tc.clusters})
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.HasPrefix(err.Error(), "access_log[0].typed_config: common_config.") {
			t.Errorf("got %v, want an error with %q", err, tc.want)
		}
	}
}

// recordingALS keeps every message it receives.
type recordingALS struct {
	alssvcv3.UnimplementedAccessLogServiceServer
	mu   sync.Mutex
	msgs []*alssvcv3.StreamAccessLogsMessage
}

func (r *recordingALS) StreamAccessLogs(s alssvcv3.AccessLogService_StreamAccessLogsServer) error {
	for {
		m, err := s.Recv()
		if err != nil {
			return nil
		}
		r.mu.Lock()
		r.msgs = append(r.msgs, m)
		r.mu.Unlock()
	}
}

func (r *recordingALS) got() []*alssvcv3.StreamAccessLogsMessage {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]*alssvcv3.StreamAccessLogsMessage(nil), r.msgs...)
}

// The first message of a stream identifies the node and the log; the next ones on it do not.
func TestIdentifierOnFirstMessageOnly(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	rec := &recordingALS{}
	srv := grpc.NewServer()
	alssvcv3.RegisterAccessLogServiceServer(srv, rec)
	go func() { _ = srv.Serve(ln) }()
	defer srv.Stop()
	st := stats.NewStore()
	m := manager(t, st, ln.Addr().(*net.TCPAddr).Port)
	m.Node = &corev3.Node{Id: "node-1", Cluster: "fleet"}
	set := compile(t, httpConfig("als", 1, time.Hour), st, m)
	set.Log(request("/1"))
	deadline := time.Now().Add(10 * time.Second)
	for len(rec.got()) < 1 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	set.Log(request("/2"))
	for len(rec.got()) < 2 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	msgs := rec.got()
	if len(msgs) != 2 {
		t.Fatalf("got %d messages, want 2", len(msgs))
	}
	id := msgs[0].GetIdentifier()
	if id.GetLogName() != "echo" || id.GetNode().GetId() != "node-1" || id.GetNode().GetCluster() != "fleet" {
		t.Errorf("first identifier = %v", id)
	}
	if msgs[1].GetIdentifier() != nil {
		t.Errorf("second message repeats the identifier: %v", msgs[1].GetIdentifier())
	}
	if p := msgs[1].GetHttpLogs().GetLogEntry()[0].GetRequest().GetPath(); p != "/2" {
		t.Errorf("second message path %q", p)
	}
}
