package server_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"runtime/pprof"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http2"

	"github.com/outrider-proxy/outrider/proxy/server/servertest"
)

// faultServer is an upstream whose behaviour is chosen by the request
// path: /ok answers, /reset-mid-body resets after part of the body,
// /never reads the request and never answers, /close-after-headers closes
// the connection after the response headers, /read-body reads the request
// body and reports on aborted whether it was cut short.
type faultServer struct {
	port    int
	aborted chan bool
}

type connKey struct{}

const faultBodyLen = 100000

func faultHandler(aborted chan bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/ok":
			io.WriteString(w, "ok")
		case "/reset-mid-body":
			w.Header().Set("Content-Length", fmt.Sprint(faultBodyLen))
			w.Write(bytes.Repeat([]byte("r"), 1000))
			w.(http.Flusher).Flush()
			time.Sleep(100 * time.Millisecond) // HTTP/2 writes the frames on another goroutine
			if c, ok := r.Context().Value(connKey{}).(*net.TCPConn); ok {
				c.SetLinger(0) // HTTP/1: an RST for the whole connection
				c.Close()
			}
			panic(http.ErrAbortHandler) // HTTP/2: RST_STREAM
		case "/never":
			<-r.Context().Done() // until the proxy gives up on it
		case "/close-after-headers":
			w.Header().Set("Content-Length", fmt.Sprint(faultBodyLen))
			w.WriteHeader(200)
			w.(http.Flusher).Flush()
			time.Sleep(100 * time.Millisecond) // HTTP/2 writes the frame on another goroutine
			if c, ok := r.Context().Value(connKey{}).(net.Conn); ok {
				c.Close()
			}
			panic(http.ErrAbortHandler)
		case "/read-body":
			_, err := io.Copy(io.Discard, r.Body)
			select {
			case aborted <- err != nil:
			default:
			}
			io.WriteString(w, "read")
		}
	}
}

// startFaultServer serves HTTP/1.1, or HTTP/2 with prior knowledge (h2),
// on its own connections so that a handler can close its connection.
func startFaultServer(t *testing.T, h2 bool) *faultServer {
	t.Helper()
	fs := &faultServer{aborted: make(chan bool, 10)}
	h := faultHandler(fs.aborted)
	if h2 {
		srv := &http2.Server{}
		fs.port = servertest.ServeTCP(t, func(c net.Conn) {
			ctx := context.WithValue(context.Background(), connKey{}, c)
			srv.ServeConn(c, &http2.ServeConnOpts{Context: ctx, Handler: h})
		})
		return fs
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h, ConnContext: func(ctx context.Context, c net.Conn) context.Context {
		return context.WithValue(ctx, connKey{}, c)
	}}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	fs.port = ln.Addr().(*net.TCPAddr).Port
	return fs
}

// settledGoroutines waits (up to 5 s) for the goroutine count to stop
// changing for half a second and returns it.
func settledGoroutines() int {
	n, since := runtime.NumGoroutine(), time.Now()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); {
		time.Sleep(50 * time.Millisecond)
		if m := runtime.NumGoroutine(); m != n {
			n, since = m, time.Now()
		} else if time.Since(since) > 500*time.Millisecond {
			break
		}
	}
	return n
}

// waitGoroutines waits up to 10 s for the goroutine count to come back to
// base, and fails with every goroutine's stack when it does not. tidy (may
// be nil) runs before each look: closing the test clients' idle
// connections, which a slow run may find still busy the first time.
func waitGoroutines(t *testing.T, base int, tidy func()) {
	t.Helper()
	n := 0
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if tidy != nil {
			tidy()
		}
		if n = runtime.NumGoroutine(); n <= base {
			return
		}
	}
	var b strings.Builder
	pprof.Lookup("goroutine").WriteTo(&b, 1)
	t.Fatalf("%d goroutines, %d before the fault:\n%s", n, base, b.String())
}

// Under every upstream fault the client gets Envoy's answer (or a reset
// once the response started), the proxy keeps serving, and no goroutine is
// left behind: upstream connections are closed, not leaked.
func TestUpstreamFaultsLeakNothing(t *testing.T) {
	for _, proto := range []string{"http1", "http2"} {
		t.Run(proto, func(t *testing.T) {
			fs := startFaultServer(t, proto == "http2")
			yaml := httpBootstrap(fs.port, `- match: {prefix: "/"}
  route: {cluster: up, timeout: 0.5s}`, "")
			// Idle upstream connections close quickly, so that the count
			// settles between faults.
			opts := `common_http_protocol_options: {idle_timeout: 0.2s}`
			if proto == "http2" {
				opts += "\n        explicit_http_config: {http2_protocol_options: {}}"
			} else {
				opts += "\n        explicit_http_config: {http_protocol_options: {}}"
			}
			yaml = strings.Replace(yaml, "    connect_timeout: 1s\n", `    connect_timeout: 1s
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        `+opts+"\n", 1)
			p := servertest.Start(t, yaml)
			client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 10 * time.Second}
			h2tr := &http2.Transport{AllowHTTP: true, DialTLSContext: func(ctx context.Context, network, addr string, _ *tls.Config) (net.Conn, error) {
				return (&net.Dialer{Timeout: 2 * time.Second}).DialContext(ctx, network, addr)
			}}
			h2c := &http.Client{Transport: h2tr, Timeout: 10 * time.Second}
			get := func(path string) (int, []byte, error) {
				resp, err := client.Get(p.URL("front", path))
				if err != nil {
					return 0, nil, err
				}
				defer resp.Body.Close()
				b, err := io.ReadAll(resp.Body)
				return resp.StatusCode, b, err
			}
			if code, b, err := get("/ok"); code != 200 || string(b) != "ok" || err != nil {
				t.Fatalf("warm-up: %d %q %v", code, b, err)
			}
			// The base counts one more goroutine: each fault's subtest runs
			// on its own while this one waits for it.
			base := settledGoroutines() + 1
			faults := []struct {
				name        string
				run         func(t *testing.T)
				stats       map[string]int64
				needsHCMFix bool
			}{
				{"upstream resets mid-body", func(t *testing.T) {
					code, b, err := get("/reset-mid-body")
					if code != 200 || err == nil || len(b) >= faultBodyLen {
						t.Errorf("got %d, %d bytes, err %v: want a 200 cut short", code, len(b), err)
					}
				}, nil, false},
				{"upstream never answers", func(t *testing.T) {
					if code, b, err := get("/never"); code != 504 || string(b) != "upstream request timeout" || err != nil {
						t.Errorf("got %d %q %v, want 504", code, b, err)
					}
				}, map[string]int64{"cluster.up.upstream_rq_timeout": 1}, false},
				{"upstream closes after headers", func(t *testing.T) {
					code, b, err := get("/close-after-headers")
					if code != 200 || err == nil || len(b) != 0 {
						t.Errorf("got %d, %d bytes, err %v: want a 200 cut short", code, len(b), err)
					}
				}, nil, false},
				{"client disconnects mid-request", func(t *testing.T) {
					c, err := net.Dial("tcp", p.Addr("front"))
					if err != nil {
						t.Fatal(err)
					}
					fmt.Fprintf(c, "POST /read-body HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s", faultBodyLen, strings.Repeat("b", 5000))
					time.Sleep(100 * time.Millisecond) // let the request reach the upstream
					c.Close()
					select {
					case cut := <-fs.aborted:
						if !cut {
							t.Error("the upstream read a whole body")
						}
					case <-time.After(5 * time.Second):
						t.Error("the upstream request was not ended")
					}
				}, nil, true},
				{"HTTP/2 client resets mid-request", func(t *testing.T) {
					ctx, cancel := context.WithCancel(context.Background())
					pr, pw := io.Pipe()
					req, _ := http.NewRequestWithContext(ctx, "POST", p.URL("front", "/read-body"), pr)
					done := make(chan struct{})
					go func() {
						defer close(done)
						if resp, err := h2c.Do(req); err == nil {
							resp.Body.Close()
						}
					}()
					pw.Write(bytes.Repeat([]byte("b"), 5000))
					time.Sleep(100 * time.Millisecond)
					cancel() // RST_STREAM
					pw.CloseWithError(context.Canceled)
					<-done
					h2tr.CloseIdleConnections()
					select {
					case cut := <-fs.aborted:
						if !cut {
							t.Error("the upstream read a whole body")
						}
					case <-time.After(5 * time.Second):
						t.Error("the upstream request was not ended")
					}
				}, nil, true},
				{"client disconnects waiting for the response", func(t *testing.T) {
					c, err := net.Dial("tcp", p.Addr("front"))
					if err != nil {
						t.Fatal(err)
					}
					fmt.Fprintf(c, "GET /never HTTP/1.1\r\nHost: x\r\n\r\n")
					time.Sleep(100 * time.Millisecond)
					c.Close()
					// The proxy answers (to nobody) at the route timeout at the
					// latest; the upstream stream ends then.
				}, nil, false},
			}
			for _, f := range faults {
				t.Run(f.name, func(t *testing.T) {
					f.run(t)
					for k, v := range f.stats {
						p.WaitStat(k, v)
					}
					waitGoroutines(t, base, h2tr.CloseIdleConnections)
					if code, b, err := get("/ok"); code != 200 || string(b) != "ok" || err != nil {
						t.Fatalf("after the fault: %d %q %v", code, b, err)
					}
					waitGoroutines(t, base, h2tr.CloseIdleConnections)
				})
			}
		})
	}
}
