package server_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/outrider-proxy/outrider/proxy/server/servertest"
)

// pingPongUpstream echoes each line of the request body as soon as it
// arrives ("echo: " prefixed), then the request trailer x-req-trl as the
// response trailer x-echo-trl. Over HTTP/1 it enables full duplex.
func pingPongUpstream(w http.ResponseWriter, r *http.Request) {
	if r.ProtoMajor == 1 {
		_ = http.NewResponseController(w).EnableFullDuplex()
	}
	w.Header().Set("Trailer", "X-Echo-Trl")
	w.Header().Set("Content-Type", "text/plain")
	w.WriteHeader(200)
	w.(http.Flusher).Flush()
	br := bufio.NewReader(r.Body)
	for range 1000 {
		line, err := br.ReadString('\n')
		if line != "" {
			io.WriteString(w, "echo: "+line)
			w.(http.Flusher).Flush()
		}
		if err != nil {
			break
		}
	}
	w.Header().Set("X-Echo-Trl", r.Trailer.Get("X-Req-Trl"))
}

// flagLog is an HCM access log of the response flags alone.
func flagLog(path string) string {
	return "access_log:\n" + indent(fileLog(path, "%RESPONSE_FLAGS%\n"), 2)
}

// loggedFlags stops the proxy (flushing its access logs) and returns the
// one stream's logged response flags.
func loggedFlags(t *testing.T, p *servertest.Proxy, path string) string {
	t.Helper()
	p.Srv.Shutdown()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// duplexCombos are the four downstream × upstream protocol combinations.
var duplexCombos = []struct {
	name       string
	downH2     bool
	upH2       bool
	upstreamFn func(*testing.T, http.HandlerFunc) *upstream
}{
	{"h1-h1", false, false, startUpstream},
	{"h1-h2", false, true, startH2Upstream},
	{"h2-h1", true, false, startUpstream},
	{"h2-h2", true, true, startH2Upstream},
}

// duplexProxy starts an upstream with h and the proxy in front of it,
// speaking HTTP/2 upstream when upH2.
func duplexProxy(t *testing.T, upH2 bool, start func(*testing.T, http.HandlerFunc) *upstream, h http.HandlerFunc, hcmExtra string) *servertest.Proxy {
	up := start(t, h)
	y := httpBootstrap(up.port(), routeToUp, hcmExtra)
	if upH2 {
		y = h2Cluster(y, "{}")
	}
	return servertest.Start(t, y)
}

// duplexStream is one request whose body is written piece by piece while
// its response is read line by line.
type duplexStream struct {
	send    func(s string)
	finish  func(trailer string)
	lines   *bufio.Reader
	trailer func() string
	close   func()
	// connClosed (HTTP/1) reports whether the proxy closed the connection
	// after the response.
	connClosed func() bool
}

// openH1Duplex sends a chunked HTTP/1.1 request with a declared trailer on
// a raw connection.
func openH1Duplex(t *testing.T, addr string) *duplexStream {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c, "POST /duplex HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTrailer: x-req-trl\r\n\r\n")
	br := bufio.NewReader(c)
	ds := &duplexStream{
		send: func(s string) { fmt.Fprintf(c, "%x\r\n%s\r\n", len(s), s) },
		finish: func(trl string) {
			fmt.Fprintf(c, "0\r\nx-req-trl: %s\r\n\r\n", trl)
		},
		close: func() { c.Close() },
		connClosed: func() bool {
			_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
			_, err := br.ReadByte()
			return err == io.EOF
		},
	}
	var resp *http.Response
	ds.lines = bufio.NewReader(readerFunc(func(p []byte) (int, error) {
		if resp == nil {
			r, err := http.ReadResponse(br, nil)
			if err != nil {
				return 0, err
			}
			resp = r
		}
		return resp.Body.Read(p)
	}))
	ds.trailer = func() string { return resp.Trailer.Get("X-Echo-Trl") }
	return ds
}

type readerFunc func([]byte) (int, error)

func (f readerFunc) Read(p []byte) (int, error) { return f(p) }

// openH2Duplex sends the request over HTTP/2 (h2c) with a pipe for body.
func openH2Duplex(t *testing.T, ctx context.Context, url string) *duplexStream {
	t.Helper()
	pr, pw := io.Pipe()
	req, _ := http.NewRequestWithContext(ctx, "POST", url, pr)
	req.Trailer = http.Header{"X-Req-Trl": nil}
	ds := &duplexStream{
		send:   func(s string) { io.WriteString(pw, s) },
		finish: func(trl string) { req.Trailer.Set("X-Req-Trl", trl); pw.Close() },
		close:  func() { pw.CloseWithError(io.ErrClosedPipe) },
	}
	respc := make(chan *http.Response, 1)
	errc := make(chan error, 1)
	go func() {
		resp, err := h2Client(t).Do(req)
		if err != nil {
			errc <- err
			return
		}
		respc <- resp
	}()
	var resp *http.Response
	ds.lines = bufio.NewReader(readerFunc(func(p []byte) (int, error) {
		if resp == nil {
			select {
			case resp = <-respc:
			case err := <-errc:
				return 0, err
			case <-time.After(10 * time.Second):
				return 0, fmt.Errorf("no response headers")
			}
		}
		return resp.Body.Read(p)
	}))
	ds.trailer = func() string { return resp.Trailer.Get("X-Echo-Trl") }
	return ds
}

// Every protocol combination streams both ways: each line comes back before
// the next is sent (ping-pong), and trailers cross in both directions.
func TestFullDuplexPingPong(t *testing.T) {
	for _, tc := range duplexCombos {
		t.Run(tc.name, func(t *testing.T) {
			p := duplexProxy(t, tc.upH2, tc.upstreamFn, pingPongUpstream, "")
			var ds *duplexStream
			if tc.downH2 {
				ds = openH2Duplex(t, context.Background(), p.URL("front", "/duplex"))
			} else {
				ds = openH1Duplex(t, p.Addr("front"))
			}
			defer ds.close()
			for i := range 5 {
				msg := fmt.Sprintf("ping %d\n", i)
				ds.send(msg)
				line, err := ds.lines.ReadString('\n')
				if err != nil || line != "echo: "+msg {
					t.Fatalf("round %d: %q, %v", i, line, err)
				}
			}
			ds.finish("bye")
			rest, err := io.ReadAll(ds.lines)
			if err != nil || len(rest) != 0 {
				t.Fatalf("after the request ended: %q, %v", rest, err)
			}
			if got := ds.trailer(); got != "bye" {
				t.Errorf("response trailer x-echo-trl %q, want the request trailer %q", got, "bye")
			}
		})
	}
}

// An upstream that answers completely before the request body ended ends
// the stream: the client gets the whole response; an HTTP/1 client's
// connection is closed after it, as Envoy does.
func TestFullDuplexEarlyResponse(t *testing.T) {
	early := func(w http.ResponseWriter, r *http.Request) {
		if r.ProtoMajor == 1 {
			_ = http.NewResponseController(w).EnableFullDuplex()
		}
		line, _ := bufio.NewReader(r.Body).ReadString('\n')
		w.Header().Set("Content-Length", fmt.Sprint(len("done: "+line)))
		io.WriteString(w, "done: "+line)
	}
	for _, tc := range duplexCombos {
		t.Run(tc.name, func(t *testing.T) {
			p := duplexProxy(t, tc.upH2, tc.upstreamFn, early, "")
			var ds *duplexStream
			if tc.downH2 {
				ds = openH2Duplex(t, context.Background(), p.URL("front", "/early"))
			} else {
				ds = openH1Duplex(t, p.Addr("front"))
			}
			defer ds.close()
			ds.send("first\n")
			body, err := io.ReadAll(ds.lines)
			if string(body) != "done: first\n" {
				t.Fatalf("body %q, %v", body, err)
			}
			if !tc.downH2 && !ds.connClosed() {
				t.Error("the HTTP/1 connection stayed open with its request unread")
			}
			p.WaitStat("http.ingress.downstream_rq_completed", 1)
		})
	}
}

// A client that resets its stream (HTTP/2 RST_STREAM, or closes its HTTP/1
// connection) mid-exchange resets the upstream at once: the upstream
// handler sees its request cancelled, and the stats count the resets.
func TestFullDuplexDownstreamReset(t *testing.T) {
	for _, tc := range duplexCombos {
		t.Run(tc.name, func(t *testing.T) {
			cancelled := make(chan struct{}, 1)
			h := func(w http.ResponseWriter, r *http.Request) {
				if r.ProtoMajor == 1 {
					_ = http.NewResponseController(w).EnableFullDuplex()
				}
				w.WriteHeader(200)
				io.WriteString(w, "started\n")
				w.(http.Flusher).Flush()
				// A reset fails the body read (HTTP/2 RST_STREAM, or the
				// HTTP/1 connection closed before the body's end).
				go func() {
					if _, err := io.Copy(io.Discard, r.Body); err != nil {
						cancelled <- struct{}{}
					}
				}()
				select {
				case <-r.Context().Done():
				case <-time.After(10 * time.Second):
				}
			}
			logPath := filepath.Join(t.TempDir(), "access.log")
			p := duplexProxy(t, tc.upH2, tc.upstreamFn, h, flagLog(logPath))
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			var ds *duplexStream
			if tc.downH2 {
				ds = openH2Duplex(t, ctx, p.URL("front", "/reset"))
			} else {
				ds = openH1Duplex(t, p.Addr("front"))
			}
			ds.send("x\n")
			if line, err := ds.lines.ReadString('\n'); line != "started\n" {
				t.Fatalf("first line %q, %v", line, err)
			}
			cancel() // HTTP/2: RST_STREAM CANCEL, once the body's writer notices
			ds.close()
			select {
			case <-cancelled:
			case <-time.After(5 * time.Second):
				t.Fatal("the upstream request was not reset after the client's reset")
			}
			p.WaitStat("http.ingress.downstream_rq_rx_reset", 1)
			p.WaitStat("cluster.up.upstream_rq_tx_reset", 1)
			if got := loggedFlags(t, p, logPath); got != "DC" {
				t.Errorf("response flags %q, want DC", got)
			}
		})
	}
}

// An upstream that resets the stream (HTTP/2 RST_STREAM) or drops its
// connection mid-response reaches the client as a reset stream (HTTP/2) or a
// closed connection (HTTP/1), counted as upstream_rq_rx_reset.
func TestFullDuplexUpstreamReset(t *testing.T) {
	for _, tc := range duplexCombos {
		t.Run(tc.name, func(t *testing.T) {
			h := func(w http.ResponseWriter, r *http.Request) {
				if r.ProtoMajor == 1 {
					_ = http.NewResponseController(w).EnableFullDuplex()
				}
				w.WriteHeader(200)
				io.WriteString(w, "partial\n")
				w.(http.Flusher).Flush()
				bufio.NewReader(r.Body).ReadString('\n')
				if r.ProtoMajor == 1 {
					// Drop the connection mid-response (net/http would first
					// read the rest of the body).
					if c, _, err := http.NewResponseController(w).Hijack(); err == nil {
						c.Close()
						return
					}
				}
				panic(http.ErrAbortHandler) // RST_STREAM
			}
			logPath := filepath.Join(t.TempDir(), "access.log")
			p := duplexProxy(t, tc.upH2, tc.upstreamFn, h, flagLog(logPath))
			var ds *duplexStream
			if tc.downH2 {
				ds = openH2Duplex(t, context.Background(), p.URL("front", "/upreset"))
			} else {
				ds = openH1Duplex(t, p.Addr("front"))
			}
			defer ds.close()
			ds.send("x\n")
			if line, err := ds.lines.ReadString('\n'); line != "partial\n" {
				t.Fatalf("first line %q, %v", line, err)
			}
			rest, err := io.ReadAll(ds.lines)
			if err == nil {
				t.Fatalf("the client saw a clean end (%q) after the upstream reset", rest)
			}
			p.WaitStat("cluster.up.upstream_rq_rx_reset", 1)
			p.WaitStat("http.ingress.downstream_rq_tx_reset", 1)
			want := "UC" // an HTTP/1 upstream closed its connection
			if tc.upH2 {
				want = "UR" // an HTTP/2 upstream reset the stream
			}
			if got := loggedFlags(t, p, logPath); got != want {
				t.Errorf("response flags %q, want %s", got, want)
			}
		})
	}
}

// A client that stops reading holds the upstream back: the proxy buffers a
// bounded amount (one piece per direction plus the sockets' and HTTP/2
// windows), never the whole response.
func TestFullDuplexBackpressure(t *testing.T) {
	const total = 256 << 20
	for _, tc := range duplexCombos {
		t.Run(tc.name, func(t *testing.T) {
			var written atomic.Int64
			h := func(w http.ResponseWriter, r *http.Request) {
				if r.ProtoMajor == 1 {
					_ = http.NewResponseController(w).EnableFullDuplex()
				}
				chunk := []byte(strings.Repeat("z", 32<<10))
				for written.Load() < total {
					if _, err := w.Write(chunk); err != nil {
						return
					}
					written.Add(int64(len(chunk)))
				}
			}
			p := duplexProxy(t, tc.upH2, tc.upstreamFn, h, "")
			var ds *duplexStream
			if tc.downH2 {
				ds = openH2Duplex(t, context.Background(), p.URL("front", "/slow"))
			} else {
				ds = openH1Duplex(t, p.Addr("front"))
			}
			defer ds.close()
			ds.send("x\n")
			if _, err := ds.lines.ReadByte(); err != nil {
				t.Fatal(err)
			}
			// The client reads nothing more: the upstream must stall.
			var last int64
			for range 50 {
				time.Sleep(100 * time.Millisecond)
				n := written.Load()
				if n == last {
					break
				}
				last = n
			}
			if n := written.Load(); n > 64<<20 {
				t.Fatalf("upstream wrote %d MiB while the client read nothing", n>>20)
			}
		})
	}
}

// An upstream that answers 503 while the request body is still streaming
// is retried, as Envoy does while the body so far is buffered: the body
// read so far is replayed to the next attempt and the rest follows.
func TestFullDuplexRetryReplaysBody(t *testing.T) {
	routes := `- match: {prefix: "/"}
  route: {cluster: up, retry_policy: {retry_on: "5xx", num_retries: 1, retry_back_off: {base_interval: 0.001s}}}`
	for _, tc := range duplexCombos {
		t.Run(tc.name, func(t *testing.T) {
			var attempts atomic.Int32
			refused := make(chan struct{}, 1)
			h := func(w http.ResponseWriter, r *http.Request) {
				if r.ProtoMajor == 1 {
					// Answer without reading the body first.
					_ = http.NewResponseController(w).EnableFullDuplex()
				}
				if attempts.Add(1) == 1 {
					w.WriteHeader(503)
					w.(http.Flusher).Flush()
					refused <- struct{}{}
					return
				}
				b, _ := io.ReadAll(r.Body)
				w.Write(b)
			}
			up := tc.upstreamFn(t, h)
			y := httpBootstrap(up.port(), routes, "")
			if tc.upH2 {
				y = h2Cluster(y, "{}")
			}
			p := servertest.Start(t, y)
			var ds *duplexStream
			if tc.downH2 {
				ds = openH2Duplex(t, context.Background(), p.URL("front", "/retry"))
			} else {
				ds = openH1Duplex(t, p.Addr("front"))
			}
			defer ds.close()
			ds.send("one\n")
			select {
			case <-refused:
			case <-time.After(5 * time.Second):
				_, st := p.Admin("GET", "/stats?filter=cluster.up.upstream_rq")
				t.Fatalf("the first attempt never reached the upstream (%d attempts)\n%s", attempts.Load(), st)
			}
			p.WaitStat("cluster.up.upstream_rq_retry", 1)
			ds.send("two\n")
			ds.finish("t")
			body, err := io.ReadAll(ds.lines)
			if string(body) != "one\ntwo\n" {
				t.Fatalf("body %q, %v; want both pieces from the retried attempt", body, err)
			}
			if n := attempts.Load(); n != 2 {
				t.Fatalf("%d attempts, want 2", n)
			}
		})
	}
}

// A client that resets its stream while the request waits for an upstream
// connection (max_connections reached) cancels the pending request:
// upstream_rq_cancelled, and the request never reaches the upstream.
func TestPendingRequestCancelled(t *testing.T) {
	up, arrived, release := gatedUpstream(t)
	y := strings.Replace(httpBootstrap(up.port(), routeToUp, ""), "    connect_timeout: 1s\n",
		"    connect_timeout: 1s\n    circuit_breakers: {thresholds: [{max_connections: 1}]}\n", 1)
	p := servertest.Start(t, y)
	client := h2Client(t)
	done := make(chan error, 1)
	go func() {
		resp, err := client.Get(p.URL("front", "/holder"))
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		done <- err
	}()
	waitArrived(t, arrived, 1)
	ctx, cancel := context.WithCancel(context.Background())
	waiting := make(chan error, 1)
	go func() {
		req, _ := http.NewRequestWithContext(ctx, "GET", p.URL("front", "/waiting"), nil)
		resp, err := client.Do(req)
		if err == nil {
			resp.Body.Close()
		}
		waiting <- err
	}()
	p.WaitStat("cluster.up.upstream_cx_overflow", 1) // the second request waits for the connection
	cancel()
	if err := <-waiting; err == nil {
		t.Fatal("the cancelled request succeeded")
	}
	p.WaitStat("cluster.up.upstream_rq_cancelled", 1)
	p.WaitStat("http.ingress.downstream_rq_rx_reset", 1)
	release()
	if err := <-done; err != nil {
		t.Fatalf("the request holding the connection: %v", err)
	}
	select {
	case path := <-arrived:
		t.Fatalf("the cancelled request reached the upstream (%s)", path)
	default:
	}
}

// An HTTP/1 client that closes its connection while its body-less request
// waits for the upstream's answer resets the upstream request (the
// connection manager watches the client's socket while the router waits).
func TestHTTP1ClientCloseResetsUpstream(t *testing.T) {
	for _, upH2 := range []bool{false, true} {
		name, start := "h1-h1", startUpstream
		if upH2 {
			name, start = "h1-h2", startH2Upstream
		}
		t.Run(name, func(t *testing.T) {
			arrived, cancelled, h := waitingUpstream()
			logPath := filepath.Join(t.TempDir(), "access.log")
			p := duplexProxy(t, upH2, start, h, flagLog(logPath))
			c, err := net.DialTimeout("tcp", p.Addr("front"), 2*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			io.WriteString(c, "GET /wait HTTP/1.1\r\nHost: a\r\n\r\n")
			select {
			case <-arrived:
			case <-time.After(5 * time.Second):
				t.Fatal("the request never reached the upstream")
			}
			c.Close()
			select {
			case <-cancelled:
			case <-time.After(5 * time.Second):
				t.Fatal("the upstream request was not reset after the client closed")
			}
			p.WaitStat("http.ingress.downstream_rq_rx_reset", 1)
			p.WaitStat("cluster.up.upstream_rq_tx_reset", 1)
			if got := loggedFlags(t, p, logPath); got != "DC" {
				t.Errorf("response flags %q, want DC", got)
			}
		})
	}
}

// Requests with a body keep their HTTP/1 connection alive: the response
// pump does not make the connection close when the request ends first.
func TestHTTP1BodyKeepAlive(t *testing.T) {
	up := startUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		w.Write(b)
	})
	p := servertest.Start(t, httpBootstrap(up.port(), routeToUp, ""))
	client := &http.Client{Timeout: 5 * time.Second}
	for i := range 20 {
		resp, err := client.Post(p.URL("front", "/echo"), "text/plain", strings.NewReader(fmt.Sprint("body ", i)))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(b) != fmt.Sprint("body ", i) || resp.Close {
			t.Fatalf("request %d: %q, connection close %v", i, b, resp.Close)
		}
	}
	if n := p.Stat("http.ingress.downstream_cx_total"); n != 1 {
		t.Fatalf("%d client connections for 20 keep-alive requests, want 1", n)
	}
}
