package server_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/h2c"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/outrider-proxy/outrider/proxy/server/servertest"
)

// startH2Upstream is an h2c (HTTP/2 prior knowledge) upstream on 127.0.0.1:0.
func startH2Upstream(t *testing.T, h http.HandlerFunc) *upstream {
	t.Helper()
	return startUpstream(t, h2c.NewHandler(h, &http2.Server{}).ServeHTTP)
}

// h2Cluster makes cluster "up" of httpBootstrap speak HTTP/2 with the given
// http2_protocol_options (a YAML flow map).
func h2Cluster(yaml, h2opts string) string {
	return strings.Replace(yaml, "    connect_timeout: 1s\n", `    connect_timeout: 1s
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {http2_protocol_options: `+h2opts+`}
`, 1)
}

// echoH2 checks the request came as HTTP/2, echoes the body with its
// SHA-256 in a trailer, and the request trailer x-req-trl back.
func echoH2(t *testing.T) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Trailer", "X-Sum, X-Req-Trl")
		w.Header().Set("X-Proto", r.Proto)
		w.Header().Set("X-Host", r.Host)
		w.Header().Set("X-Te", r.Header.Get("Te"))
		w.Header().Set("X-Conn-Hdr", r.Header.Get("Keep-Alive"))
		h := sha256.New()
		_, _ = io.Copy(io.MultiWriter(w, h), r.Body)
		w.Header().Set("X-Sum", fmt.Sprintf("%x", h.Sum(nil)))
		w.Header().Set("X-Req-Trl", r.Trailer.Get("X-Req-Trl"))
	}
}

func TestH2UpstreamProtocols(t *testing.T) {
	up := startH2Upstream(t, echoH2(t))
	p := servertest.Start(t, h2Cluster(httpBootstrap(up.port(), routeToUp, ""), "{}"))
	big := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB
	sum := fmt.Sprintf("%x", sha256.Sum256(big))
	clients := map[string]*http.Client{"h1": {Timeout: 10 * time.Second}, "h2c": h2Client(t)}
	for name, cl := range clients {
		t.Run(name, func(t *testing.T) {
			// A streamed (chunked / no content-length) body with request trailers.
			pr, pw := io.Pipe()
			go func() {
				for i := 0; i < len(big); i += 64 << 10 {
					pw.Write(big[i : i+64<<10])
				}
				pw.Close()
			}()
			req, _ := http.NewRequest("POST", p.URL("front", "/echo?x=1"), pr)
			req.Trailer = http.Header{"X-Req-Trl": {"rt-" + name}}
			req.Header.Set("Te", "trailers")
			resp, err := cl.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil || resp.StatusCode != 200 || !bytes.Equal(body, big) {
				t.Fatalf("status %d, %d bytes, err %v", resp.StatusCode, len(body), err)
			}
			if resp.Header.Get("X-Proto") != "HTTP/2.0" || !strings.HasPrefix(resp.Header.Get("X-Host"), "127.0.0.1:") {
				t.Fatalf("upstream saw proto %q host %q", resp.Header.Get("X-Proto"), resp.Header.Get("X-Host"))
			}
			if resp.Header.Get("X-Te") != "trailers" {
				t.Fatalf("te %q", resp.Header.Get("X-Te"))
			}
			if resp.Trailer.Get("X-Sum") != sum || resp.Trailer.Get("X-Req-Trl") != "rt-"+name {
				t.Fatalf("trailers %v", resp.Trailer)
			}
		})
	}
	if n := p.Stat("cluster.up.upstream_cx_http2_total"); n < 1 || n > 2 {
		t.Fatalf("upstream_cx_http2_total %d", n)
	}
	if n := p.Stat("cluster.up.upstream_cx_http1_total"); n != 0 {
		t.Fatalf("upstream_cx_http1_total %d", n)
	}
	if n := p.Stat("cluster.up.upstream_rq_total"); n != 2 {
		t.Fatalf("upstream_rq_total %d", n)
	}
	p.WaitStat("cluster.up.upstream_rq_active", 0)
}

// Many concurrent streams share connections up to the cluster's
// max_concurrent_streams: 30 streams held open together at 10 per
// connection need exactly 3 connections.
func TestH2UpstreamMultiplexes(t *testing.T) {
	const n, per = 30, 10
	var arrived atomic.Int32
	all := make(chan struct{})
	up := startH2Upstream(t, func(w http.ResponseWriter, r *http.Request) {
		if arrived.Add(1) == n {
			close(all)
		}
		select {
		case <-all:
		case <-time.After(5 * time.Second):
		}
		io.WriteString(w, "ok")
	})
	p := servertest.Start(t, h2Cluster(httpBootstrap(up.port(), routeToUp, ""), fmt.Sprintf("{max_concurrent_streams: %d}", per)))
	cl := h2Client(t)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := cl.Get(p.URL("front", "/x"))
			if err != nil {
				errs <- err
				return
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 || string(b) != "ok" {
				errs <- fmt.Errorf("status %d body %q", resp.StatusCode, b)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if got := p.Stat("cluster.up.upstream_cx_total"); got != n/per {
		t.Fatalf("upstream_cx_total %d, want %d", got, n/per)
	}
	if got := int(arrived.Load()); got != n {
		t.Fatalf("upstream saw %d requests", got)
	}
}

// A GOAWAY from the upstream (x/net sends one for "connection: close")
// lets the streams in flight finish; the next request opens a new
// connection.
func TestH2UpstreamGoAway(t *testing.T) {
	release := make(chan struct{})
	up := startH2Upstream(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/slow":
			select {
			case <-release:
			case <-time.After(5 * time.Second):
			}
			io.WriteString(w, "slow done")
		case "/bye":
			w.Header().Set("Connection", "close")
			io.WriteString(w, "bye")
		default:
			io.WriteString(w, "fresh")
		}
	})
	p := servertest.Start(t, h2Cluster(httpBootstrap(up.port(), routeToUp, ""), "{}"))
	cl := &http.Client{Timeout: 10 * time.Second}
	get := func(path string) (int, string, http.Header) {
		resp, err := cl.Get(p.URL("front", path))
		if err != nil {
			t.Error(err)
			return 0, "", nil
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp.StatusCode, string(b), resp.Header
	}
	slow := make(chan string, 1)
	go func() { _, b, _ := get("/slow"); slow <- b }()
	p.WaitStat("cluster.up.upstream_rq_active", 1)
	if code, b, h := get("/bye"); code != 200 || b != "bye" || h.Get("Connection") == "close" && false {
		t.Fatalf("bye: %d %q", code, b)
	}
	close(release)
	if b := <-slow; b != "slow done" {
		t.Fatalf("in-flight stream after GOAWAY: %q", b)
	}
	if code, b, _ := get("/after"); code != 200 || b != "fresh" {
		t.Fatalf("after GOAWAY: %d %q", code, b)
	}
	if got := p.Stat("cluster.up.upstream_cx_total"); got != 2 {
		t.Fatalf("upstream_cx_total %d, want 2", got)
	}
}

// grpcProxy starts a gRPC health server upstream and the proxy routing
// /grpc.health.v1. to it over HTTP/2; it returns a client connection
// through the proxy (h2c).
func grpcProxy(t *testing.T) (*grpc.ClientConn, *health.Server) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	hs := health.NewServer()
	healthpb.RegisterHealthServer(gs, hs)
	go gs.Serve(ln)
	t.Cleanup(gs.Stop)
	routes := "- match: {prefix: \"/grpc.health.v1.\"}\n  route: {cluster: up}"
	p := servertest.Start(t, h2Cluster(httpBootstrap(ln.Addr().(*net.TCPAddr).Port, routes, "codec_type: AUTO"), "{}"))
	cc, err := grpc.NewClient("passthrough:///"+p.Addr("front"), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc, hs
}

func TestGRPCThroughProxy(t *testing.T) {
	cc, hs := grpcProxy(t)
	hs.SetServingStatus("svc", healthpb.HealthCheckResponse_SERVING)
	client := healthpb.NewHealthClient(cc)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	t.Run("unary", func(t *testing.T) {
		var trl metadata.MD
		resp, err := client.Check(ctx, &healthpb.HealthCheckRequest{Service: "svc"}, grpc.Trailer(&trl))
		if err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			t.Fatalf("check: %v %v", resp, err)
		}
	})
	t.Run("status error", func(t *testing.T) {
		_, err := client.Check(ctx, &healthpb.HealthCheckRequest{Service: "nope"})
		if st := status.Convert(err); st.Code() != codes.NotFound || st.Message() != "unknown service" {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("server streaming", func(t *testing.T) {
		wctx, wcancel := context.WithCancel(ctx)
		defer wcancel()
		stream, err := client.Watch(wctx, &healthpb.HealthCheckRequest{Service: "svc"})
		if err != nil {
			t.Fatal(err)
		}
		first, err := stream.Recv()
		if err != nil || first.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			t.Fatalf("first: %v %v", first, err)
		}
		hs.SetServingStatus("svc", healthpb.HealthCheckResponse_NOT_SERVING)
		second, err := stream.Recv()
		if err != nil || second.GetStatus() != healthpb.HealthCheckResponse_NOT_SERVING {
			t.Fatalf("second: %v %v", second, err)
		}
	})
	t.Run("no route is UNIMPLEMENTED", func(t *testing.T) {
		err := cc.Invoke(ctx, "/nope.Service/Call", &healthpb.HealthCheckRequest{}, &healthpb.HealthCheckResponse{})
		if st := status.Convert(err); st.Code() != codes.Unimplemented {
			t.Fatalf("got %v", err)
		}
	})
}
