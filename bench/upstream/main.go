// Command upstream is the fixed upstream of the load comparison: HTTP/1.1 on
// -addr (and HTTP/1.1 plus h2c prior knowledge on -h2c) answers "/" with "ok",
// "/16k" with 16 KiB and "/1m" with 1 MiB; the gRPC server on -grpc serves
// grpc.testing.BenchmarkService (payload echo, unary and ping-pong
// streaming); the raw TCP server on -bulk sinks ("u") or sources ("d") bytes
// after a one-byte mode. All serve connections until the peer closes.
package main

import (
	"context"
	"flag"
	"log"
	"net"
	"net/http"
	"strconv"

	"google.golang.org/grpc"
	testpb "google.golang.org/grpc/interop/grpc_testing"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:18080", "HTTP/1.1 listen address")
	h2c := flag.String("h2c", "", "HTTP/1.1 + h2c (prior knowledge) listen address (empty: none)")
	grpcAddr := flag.String("grpc", "", "gRPC BenchmarkService listen address (empty: none)")
	bulk := flag.String("bulk", "", "raw TCP bulk listen address (empty: none)")
	flag.Parse()
	if *bulk != "" {
		ln, err := net.Listen("tcp", *bulk)
		if err != nil {
			log.Fatal(err)
		}
		go serveBulk(ln)
	}
	if *h2c != "" {
		var p http.Protocols
		p.SetHTTP1(true)
		p.SetUnencryptedHTTP2(true)
		srv := &http.Server{Addr: *h2c, Handler: newHandler(), Protocols: &p}
		go func() { log.Fatal(srv.ListenAndServe()) }()
	}
	if *grpcAddr != "" {
		ln, err := net.Listen("tcp", *grpcAddr)
		if err != nil {
			log.Fatal(err)
		}
		s := grpc.NewServer()
		testpb.RegisterBenchmarkServiceServer(s, echo{})
		go func() { log.Fatal(s.Serve(ln)) }()
	}
	log.Fatal(http.ListenAndServe(*addr, newHandler()))
}

// newHandler serves the fixed bodies by path; any other path gets "ok".
func newHandler() http.Handler {
	bodies := map[string][]byte{
		"/16k": make([]byte, 16<<10),
		"/1m":  make([]byte, 1<<20),
	}
	small := []byte("ok")
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, ok := bodies[r.URL.Path]
		if !ok {
			body = small
		}
		w.Header().Set("Content-Type", "text/plain")
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		w.Write(body)
	})
}

// echo is the gRPC BenchmarkService: each response carries a zero payload
// of the requested size (the client's payload when the size is 0).
type echo struct {
	testpb.UnimplementedBenchmarkServiceServer
}

func reply(req *testpb.SimpleRequest) *testpb.SimpleResponse {
	if n := req.GetResponseSize(); n > 0 {
		return &testpb.SimpleResponse{Payload: &testpb.Payload{Body: make([]byte, n)}}
	}
	return &testpb.SimpleResponse{Payload: req.GetPayload()}
}

func (echo) UnaryCall(_ context.Context, req *testpb.SimpleRequest) (*testpb.SimpleResponse, error) {
	return reply(req), nil
}

func (echo) StreamingCall(s grpc.BidiStreamingServer[testpb.SimpleRequest, testpb.SimpleResponse]) error {
	for {
		req, err := s.Recv()
		if err != nil {
			return nil // io.EOF at the client's CloseSend, or the stream's reset
		}
		if err := s.Send(reply(req)); err != nil {
			return err
		}
	}
}

// serveBulk accepts connections whose first byte selects the direction:
// 'u' reads and discards until EOF, 'd' writes until the peer goes away.
func serveBulk(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			buf := make([]byte, 256<<10)
			if _, err := c.Read(buf[:1]); err != nil {
				return
			}
			switch buf[0] {
			case 'u':
				for {
					if _, err := c.Read(buf); err != nil {
						return
					}
				}
			case 'd':
				for {
					if _, err := c.Write(buf); err != nil {
						return
					}
				}
			}
		}()
	}
}
