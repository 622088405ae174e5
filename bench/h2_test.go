package bench

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"testing"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/h2c"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/interop"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"

	"github.com/outrider-proxy/outrider/proxy/server/servertest"
)

// h2Config is an HTTP/2 (prior knowledge) listener routing to an HTTP/2
// cluster: the sidecar's gRPC path.
// h2UpstreamOptions makes h2Config's cluster speak HTTP/2.
const h2UpstreamOptions = `    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {http2_protocol_options: {}}
`

const h2Config = `
static_resources:
  listeners:
  - name: front
    address: {socket_address: {address: 127.0.0.1, port_value: 0}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: bench
          codec_type: HTTP2
          route_config:
            virtual_hosts: [{name: vh, domains: ["*"], routes: [{match: {prefix: "/"}, route: {cluster: up}}]}]
          http_filters:
          - name: envoy.filters.http.router
            typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}
  clusters:
  - name: up
` + h2UpstreamOptions + `    load_assignment:
      cluster_name: up
      endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: %d}}}}]}]
`

func listen(b *testing.B) net.Listener {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { ln.Close() })
	return ln
}

// BenchmarkHTTP2Proxy multiplexes GETs over one h2c client connection
// (RunParallel: GOMAXPROCS × -cpu goroutines share it) through the proxy to
// an h2c upstream. allocs/op counts the whole process: client, proxy and
// upstream.
func BenchmarkHTTP2Proxy(b *testing.B) {
	ln := listen(b)
	up := &http.Server{Handler: h2c.NewHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok")
	}), &http2.Server{})}
	go up.Serve(ln)
	b.Cleanup(func() { up.Close() })
	p := servertest.Start(b, fmt.Sprintf(h2Config, ln.Addr().(*net.TCPAddr).Port))
	tr := &http2.Transport{AllowHTTP: true, DialTLSContext: func(ctx context.Context, network, addr string, _ *tls.Config) (net.Conn, error) {
		return net.Dial(network, addr)
	}}
	b.Cleanup(tr.CloseIdleConnections)
	url := "http://" + p.Addr("front") + "/bench"
	get := func() {
		resp, err := tr.RoundTrip(mustReq(b, url))
		if err != nil {
			b.Error(err)
			return
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			b.Errorf("status %d", resp.StatusCode)
		}
	}
	for range 100 {
		get()
	}
	b.ReportAllocs()
	b.ResetTimer()
	b.SetParallelism(8)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			get()
		}
	})
}

func mustReq(b *testing.B, url string) *http.Request {
	req, err := http.NewRequest("GET", url, nil)
	if err != nil {
		b.Fatal(err)
	}
	return req
}

// BenchmarkGRPCUnary sends grpc-go's interop EmptyCall and UnaryCall (a
// 1 KiB payload) through the proxy to grpc-go's interop server, from 8
// concurrent callers on one client connection.
func BenchmarkGRPCUnary(b *testing.B) {
	ln := listen(b)
	gs := grpc.NewServer()
	testgrpc.RegisterTestServiceServer(gs, interop.NewTestServer())
	go gs.Serve(ln)
	b.Cleanup(gs.Stop)
	p := servertest.Start(b, fmt.Sprintf(h2Config, ln.Addr().(*net.TCPAddr).Port))
	cc, err := grpc.NewClient(p.Addr("front"), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { cc.Close() })
	client := testgrpc.NewTestServiceClient(cc)
	req := &testgrpc.SimpleRequest{ResponseSize: 1024, Payload: &testgrpc.Payload{Body: make([]byte, 1024)}}
	call := func() {
		if _, err := client.UnaryCall(context.Background(), req); err != nil {
			b.Error(err)
		}
	}
	for range 100 {
		call()
	}
	b.ReportAllocs()
	b.ResetTimer()
	b.SetParallelism(4)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			call()
		}
	})
}
