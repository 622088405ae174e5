package server_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/interop"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/status"

	"github.com/outrider-proxy/outrider/proxy/server/servertest"
)

// grpcInteropCases are grpc-go's interop cases run through the proxy:
// every case of grpc-go's interop client that needs no credentials or cloud
// service. Left out: pick_first_unary (it needs a server that fills
// server_id, which interop.NewTestServer does not) and orca_per_rpc /
// orca_oob (they need an ORCA-reporting server and a client LB policy).
var grpcInteropCases = map[string]func(context.Context, *grpc.ClientConn){
	"empty_unary": func(ctx context.Context, cc *grpc.ClientConn) {
		interop.DoEmptyUnaryCall(ctx, testgrpc.NewTestServiceClient(cc))
	},
	"large_unary": func(ctx context.Context, cc *grpc.ClientConn) {
		interop.DoLargeUnaryCall(ctx, testgrpc.NewTestServiceClient(cc))
	},
	"client_streaming": func(ctx context.Context, cc *grpc.ClientConn) {
		interop.DoClientStreaming(ctx, testgrpc.NewTestServiceClient(cc))
	},
	"server_streaming": func(ctx context.Context, cc *grpc.ClientConn) {
		interop.DoServerStreaming(ctx, testgrpc.NewTestServiceClient(cc))
	},
	"ping_pong": func(ctx context.Context, cc *grpc.ClientConn) {
		interop.DoPingPong(ctx, testgrpc.NewTestServiceClient(cc))
	},
	"empty_stream": func(ctx context.Context, cc *grpc.ClientConn) {
		interop.DoEmptyStream(ctx, testgrpc.NewTestServiceClient(cc))
	},
	// grpc-go's DoCancelAfterBegin, but waiting with RecvMsg rather than
	// CloseAndRecv: CloseAndRecv's END_STREAM can leave before the cancel's
	// RST_STREAM, and through a fast proxy the server's OK answer then
	// sometimes reaches the client before it notices its own cancel.
	"cancel_after_begin": func(ctx context.Context, cc *grpc.ClientConn) {
		ctx, cancel := context.WithCancel(ctx)
		stream, err := testgrpc.NewTestServiceClient(cc).StreamingInputCall(ctx)
		if err != nil {
			panic(err)
		}
		cancel()
		if err := stream.RecvMsg(new(testgrpc.StreamingInputCallResponse)); status.Code(err) != codes.Canceled {
			panic(fmt.Sprintf("RecvMsg after cancel: %v, want Canceled", err))
		}
	},
	"cancel_after_first_response": func(ctx context.Context, cc *grpc.ClientConn) {
		interop.DoCancelAfterFirstResponse(ctx, testgrpc.NewTestServiceClient(cc))
	},
	"timeout_on_sleeping_server": func(ctx context.Context, cc *grpc.ClientConn) {
		interop.DoTimeoutOnSleepingServer(ctx, testgrpc.NewTestServiceClient(cc))
	},
	"status_code_and_message": func(ctx context.Context, cc *grpc.ClientConn) {
		interop.DoStatusCodeAndMessage(ctx, testgrpc.NewTestServiceClient(cc))
	},
	"special_status_message": func(ctx context.Context, cc *grpc.ClientConn) {
		interop.DoSpecialStatusMessage(ctx, testgrpc.NewTestServiceClient(cc))
	},
	"custom_metadata": func(ctx context.Context, cc *grpc.ClientConn) {
		interop.DoCustomMetadata(ctx, testgrpc.NewTestServiceClient(cc))
	},
	"rpc_soak": func(ctx context.Context, cc *grpc.ClientConn) {
		cfg := soakConfig()
		cfg.ChannelForTest = func() (*grpc.ClientConn, func()) { return cc, func() {} }
		interop.DoSoakTest(ctx, cfg)
	},
	"channel_soak": func(ctx context.Context, cc *grpc.ClientConn) {
		cfg := soakConfig()
		cfg.ChannelForTest = func() (*grpc.ClientConn, func()) {
			c, err := grpc.NewClient(cfg.ServerAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				panic(err)
			}
			return c, func() { c.Close() }
		}
		interop.DoSoakTest(ctx, cfg)
	},
	"unimplemented_method": func(ctx context.Context, cc *grpc.ClientConn) { interop.DoUnimplementedMethod(ctx, cc) },
	"unimplemented_service": func(ctx context.Context, cc *grpc.ClientConn) {
		interop.DoUnimplementedService(ctx, testgrpc.NewUnimplementedServiceClient(cc))
	},
}

// soakConfig is the interop client's default soak (10 large unary RPCs, no
// failure allowed), with a latency bound loose enough for -race runs.
func soakConfig() interop.SoakTestConfig {
	return interop.SoakTestConfig{RequestSize: 271828, ResponseSize: 314159, PerIterationMaxAcceptableLatency: 5 * time.Second,
		OverallTimeout: 15 * time.Second, ServerAddr: os.Getenv("OUTRIDER_INTEROP_ADDR"), NumWorkers: 1, Iterations: 10}
}

// TestGRPCInteropClient is the client half of TestGRPCInterop, run in a
// child process because the interop cases end the process on failure.
func TestGRPCInteropClient(t *testing.T) {
	name, addr := os.Getenv("OUTRIDER_INTEROP_CASE"), os.Getenv("OUTRIDER_INTEROP_ADDR")
	if name == "" {
		t.Skip("run by TestGRPCInterop")
	}
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	grpcInteropCases[name](ctx, cc)
}

// TestGRPCInterop runs grpc-go's interop cases from an h2c client through
// the proxy to a grpc-go interop server behind an HTTP/2 cluster.
func TestGRPCInterop(t *testing.T) {
	if os.Getenv("OUTRIDER_INTEROP_CASE") != "" {
		t.Skip("child process")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	testgrpc.RegisterTestServiceServer(gs, interop.NewTestServer())
	go gs.Serve(ln)
	t.Cleanup(gs.Stop)
	port := ln.Addr().(*net.TCPAddr).Port
	p := servertest.Start(t, h2Cluster(httpBootstrap(port, routeToUp, ""), "{}"))
	for name := range grpcInteropCases {
		t.Run(name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestGRPCInteropClient$", "-test.count=1")
			cmd.Env = append(os.Environ(), "OUTRIDER_INTEROP_CASE="+name, "OUTRIDER_INTEROP_ADDR="+p.Addr("front"))
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("%s through the proxy: %v\n%s", name, err, out)
			}
		})
	}
}
