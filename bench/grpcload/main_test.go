package main

import (
	"context"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	testpb "google.golang.org/grpc/interop/grpc_testing"
)

type echo struct {
	testpb.UnimplementedBenchmarkServiceServer
}

func (echo) UnaryCall(_ context.Context, r *testpb.SimpleRequest) (*testpb.SimpleResponse, error) {
	return &testpb.SimpleResponse{Payload: &testpb.Payload{Body: make([]byte, r.GetResponseSize())}}, nil
}

func (echo) StreamingCall(s grpc.BidiStreamingServer[testpb.SimpleRequest, testpb.SimpleResponse]) error {
	for {
		r, err := s.Recv()
		if err != nil {
			return nil
		}
		if err := s.Send(&testpb.SimpleResponse{Payload: &testpb.Payload{Body: make([]byte, r.GetResponseSize())}}); err != nil {
			return err
		}
	}
}

func TestRun(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer()
	testpb.RegisterBenchmarkServiceServer(s, echo{})
	go s.Serve(ln)
	defer s.Stop()
	for _, tc := range []struct {
		mode           string
		workers, conns int
	}{
		{"unary", 4, 1},
		{"unary", 3, 2},
		{"stream", 4, 2},
	} {
		t.Run(tc.mode, func(t *testing.T) {
			r, err := run(context.Background(), config{addr: ln.Addr().String(), mode: tc.mode,
				workers: tc.workers, conns: tc.conns, size: 8, warmup: 50 * time.Millisecond, dur: 200 * time.Millisecond})
			if err != nil {
				t.Fatal(err)
			}
			if r.errors != 0 || r.calls == 0 || len(r.lat) != r.calls {
				t.Fatalf("calls %d errors %d lat %d", r.calls, r.errors, len(r.lat))
			}
			if p50, p99 := quantile(r.lat, 0.5), quantile(r.lat, 0.99); p50 <= 0 || p99 < p50 {
				t.Fatalf("p50 %v p99 %v", p50, p99)
			}
		})
	}
}

func TestRunCountsErrors(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens: every call fails
	r, err := run(context.Background(), config{addr: addr, mode: "unary", workers: 2, conns: 1,
		warmup: 0, dur: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if r.calls != 0 || r.errors == 0 {
		t.Fatalf("calls %d errors %d", r.calls, r.errors)
	}
}

func TestQuantile(t *testing.T) {
	lat := []time.Duration{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}
	for _, tc := range []struct {
		q    float64
		want time.Duration
	}{{0.5, 5}, {0.9, 9}, {0.99, 10}, {0.999, 10}, {0, 1}} {
		if got := quantile(lat, tc.q); got != tc.want {
			t.Errorf("quantile(%v) = %v, want %v", tc.q, got, tc.want)
		}
	}
	if quantile(nil, 0.5) != 0 {
		t.Error("quantile of nothing")
	}
}
