package main

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	testpb "google.golang.org/grpc/interop/grpc_testing"
)

func TestHandlerBodies(t *testing.T) {
	srv := httptest.NewServer(newHandler())
	defer srv.Close()
	for _, tc := range []struct {
		path string
		n    int
	}{{"/", 2}, {"/16k", 16 << 10}, {"/1m", 1 << 20}, {"/other", 2}} {
		resp, err := http.Get(srv.URL + tc.path)
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || len(b) != tc.n || resp.ContentLength != int64(tc.n) {
			t.Errorf("%s: %d bytes (content-length %d), err %v; want %d", tc.path, len(b), resp.ContentLength, err, tc.n)
		}
	}
}

func TestEcho(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer()
	testpb.RegisterBenchmarkServiceServer(s, echo{})
	go s.Serve(ln)
	defer s.Stop()
	cc, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cl := testpb.NewBenchmarkServiceClient(cc)
	st, err := cl.StreamingCall(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		size, payload, want int
	}{{16, 3, 16}, {0, 5, 5}, {1024, 0, 1024}} {
		req := &testpb.SimpleRequest{ResponseSize: int32(tc.size), Payload: &testpb.Payload{Body: make([]byte, tc.payload)}}
		r, err := cl.UnaryCall(ctx, req)
		if err != nil || len(r.GetPayload().GetBody()) != tc.want {
			t.Errorf("unary size %d payload %d: %d bytes, %v; want %d", tc.size, tc.payload, len(r.GetPayload().GetBody()), err, tc.want)
		}
		if err := st.Send(req); err != nil {
			t.Fatal(err)
		}
		r, err = st.Recv()
		if err != nil || len(r.GetPayload().GetBody()) != tc.want {
			t.Errorf("stream size %d payload %d: %d bytes, %v; want %d", tc.size, tc.payload, len(r.GetPayload().GetBody()), err, tc.want)
		}
	}
	if err := st.CloseSend(); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Recv(); err != io.EOF {
		t.Errorf("after CloseSend: %v, want EOF", err)
	}
}
