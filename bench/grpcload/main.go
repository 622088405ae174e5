// Command grpcload is the gRPC load generator of the load comparison: -c
// workers share -conns h2c client connections and call
// grpc.testing.BenchmarkService back to back for a fixed time, unary calls
// or ping-pong messages on one long-lived stream per worker (-mode stream).
// It prints one summary line (key=value): calls per second over the measured
// time, latency percentiles of each call (or each message round trip) and
// the error count.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	testpb "google.golang.org/grpc/interop/grpc_testing"
)

// config is one run; zero values are invalid (main checks them).
type config struct {
	addr    string
	mode    string // "unary" or "stream"
	workers int
	conns   int
	size    int // request and response payload bytes
	warmup  time.Duration
	dur     time.Duration
}

// result is what a run measured after the warm-up.
type result struct {
	calls  int
	errors int
	secs   float64
	lat    []time.Duration // sorted
}

func main() {
	var c config
	flag.StringVar(&c.addr, "addr", "127.0.0.1:18381", "host:port of the proxy (h2c)")
	flag.StringVar(&c.mode, "mode", "unary", "unary or stream (ping-pong on one stream per worker)")
	flag.IntVar(&c.workers, "c", 32, "concurrent calls (workers)")
	flag.IntVar(&c.conns, "conns", 1, "HTTP/2 connections the workers share round-robin")
	flag.IntVar(&c.size, "size", 16, "payload bytes in each request and response")
	flag.DurationVar(&c.warmup, "warmup", time.Second, "unmeasured time before the measurement")
	flag.DurationVar(&c.dur, "d", 5*time.Second, "measured time")
	flag.Parse()
	if (c.mode != "unary" && c.mode != "stream") || c.workers <= 0 || c.conns <= 0 || c.dur <= 0 || c.size < 0 {
		fmt.Fprintln(os.Stderr, "grpcload: -mode unary|stream, positive -c, -conns, -d; -size >= 0")
		os.Exit(2)
	}
	r, err := run(context.Background(), c)
	if err != nil {
		fmt.Fprintln(os.Stderr, "grpcload:", err)
		os.Exit(1)
	}
	fmt.Printf("mode=%s rps=%.1f ok=%d errors=%d p50_ms=%.3f p99_ms=%.3f p999_ms=%.3f\n", c.mode,
		float64(r.calls)/r.secs, r.calls, r.errors, ms(quantile(r.lat, 0.5)), ms(quantile(r.lat, 0.99)),
		ms(quantile(r.lat, 0.999)))
}

func ms(d time.Duration) float64 { return float64(d) / 1e6 }

// quantile of sorted latencies (nearest rank); 0 when there are none.
func quantile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(q*float64(len(sorted))+0.999999) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

// run dials the connections and runs the workers for warmup+dur. A worker
// that fails a call counts the error and, in stream mode, opens a new stream.
func run(ctx context.Context, c config) (result, error) {
	ccs := make([]*grpc.ClientConn, c.conns)
	for i := range ccs {
		cc, err := grpc.NewClient(c.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			return result{}, fmt.Errorf("dial %s: %w", c.addr, err)
		}
		defer cc.Close()
		ccs[i] = cc
	}
	start := time.Now()
	measure, stop := start.Add(c.warmup), start.Add(c.warmup+c.dur)
	ctx, cancel := context.WithDeadline(ctx, stop.Add(5*time.Second))
	defer cancel()
	req := &testpb.SimpleRequest{ResponseSize: int32(c.size), Payload: &testpb.Payload{Body: make([]byte, c.size)}}
	var (
		mu  sync.Mutex
		all result
		wg  sync.WaitGroup
	)
	for w := range c.workers {
		cl := testpb.NewBenchmarkServiceClient(ccs[w%len(ccs)])
		wg.Go(func() {
			var lat []time.Duration
			errs := 0
			var st grpc.BidiStreamingClient[testpb.SimpleRequest, testpb.SimpleResponse]
			for {
				t0 := time.Now()
				if !t0.Before(stop) {
					break
				}
				err := error(nil)
				if c.mode == "unary" {
					_, err = cl.UnaryCall(ctx, req)
				} else {
					if st == nil {
						if st, err = cl.StreamingCall(ctx); err != nil {
							st = nil
						}
					}
					if st != nil {
						if err = st.Send(req); err == nil {
							_, err = st.Recv()
						}
						if err != nil {
							st = nil
						}
					}
				}
				if err != nil { // counted in the warm-up too: a stream that hangs fails there
					errs++
					if errs > 1000 && len(lat) == 0 {
						break // nothing works: do not spin
					}
					continue
				}
				if !t0.Before(measure) {
					lat = append(lat, time.Since(t0))
				}
			}
			if st != nil {
				if err := st.CloseSend(); err == nil {
					if _, err := st.Recv(); err != nil && !errors.Is(err, io.EOF) {
						errs++
					}
				}
			}
			mu.Lock()
			all.lat = append(all.lat, lat...)
			all.errors += errs
			mu.Unlock()
		})
	}
	wg.Wait()
	all.calls = len(all.lat)
	all.secs = c.dur.Seconds()
	slices.Sort(all.lat)
	return all, nil
}
