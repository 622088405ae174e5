package h2

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"

	"github.com/outrider-proxy/outrider/proxy/headers"
)

// startXNet serves h2c with x/net's http2.Server on 127.0.0.1:0 until the
// test ends and returns the address.
func startXNet(tb testing.TB, srv *http2.Server, h http.Handler) string {
	return serveTCP(tb, func(nc net.Conn) { srv.ServeConn(nc, &http2.ServeConnOpts{Handler: h}) })
}

// xnetEcho answers 200 with the request body streamed back, x-method and
// x-path, and the request trailers as response trailers; "x-status" picks
// the status.
func xnetEcho(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("X-Method", r.Method)
	w.Header().Set("X-Path", r.URL.RequestURI())
	w.Header().Set("Trailer", "X-Tr")
	status := 200
	if v := r.Header.Get("X-Status"); v != "" {
		fmt.Sscan(v, &status)
	}
	w.WriteHeader(status)
	_, _ = io.Copy(w, r.Body)
	if v := r.Trailer.Get("X-Tr"); v != "" {
		w.Header().Set("X-Tr", v)
	}
}

func dialClient(tb testing.TB, addr string, cfg *ClientConfig) *ClientConn {
	tb.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		tb.Fatal(err)
	}
	cc, err := NewClientConn(nc, cfg)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { cc.Close() })
	return cc
}

// reqHeaders builds a request header map from pseudo and regular pairs.
func reqHeaders(method, path string, kv ...string) *headers.Map {
	var h headers.Map
	h.Set(":method", method)
	h.Set(":scheme", "http")
	h.Set(":authority", "test")
	h.Set(":path", path)
	for i := 0; i+1 < len(kv); i += 2 {
		h.Add(kv[i], kv[i+1])
	}
	return &h
}

type result struct {
	resp, trailers map[string]string
	body           []byte
	continued      bool
}

// exchange sends one request (body in pieces of up to 50000 bytes, then the
// trailers kv pairs if any) while it reads the response.
func exchange(cc *ClientConn, req *headers.Map, body []byte, trailers ...string) (*result, error) {
	end := len(body) == 0 && len(trailers) == 0
	s, err := cc.NewStream(req, end)
	if err != nil {
		return nil, err
	}
	defer s.Release()
	deadline := time.Now().Add(20 * time.Second)
	werr := make(chan error, 1)
	if end {
		werr <- nil
	} else {
		s.SetWriteDeadline(deadline)
		go func() {
			p := body
			for len(p) > 0 {
				n := min(len(p), 50000)
				if err := s.WriteData(p[:n], n == len(p) && len(trailers) == 0); err != nil {
					werr <- err
					return
				}
				p = p[n:]
			}
			if len(trailers) > 0 {
				var t headers.Map
				for i := 0; i+1 < len(trailers); i += 2 {
					t.Add(trailers[i], trailers[i+1])
				}
				werr <- s.WriteTrailers(&t)
				return
			}
			if len(body) == 0 {
				werr <- s.WriteData(nil, true)
				return
			}
			werr <- nil
		}()
	}
	h, err := s.ReadHeaders(deadline)
	if err != nil {
		<-werr
		return nil, err
	}
	r := &result{resp: toMap(h), trailers: map[string]string{}}
	for range 1 << 20 {
		p, err := s.ReadData(deadline)
		if err == io.EOF {
			break
		}
		if err != nil {
			<-werr
			return r, err
		}
		r.body = append(r.body, p...)
	}
	r.trailers = toMap(s.Trailers())
	r.continued = s.Continued()
	return r, <-werr
}

func toMap(h *headers.Map) map[string]string {
	m := map[string]string{}
	for _, f := range h.Fields() {
		m[string(f.Name)] = string(f.Value)
	}
	return m
}

// TestClientInterop drives x/net's server and this package's with many
// concurrent streams on one connection: bodies from 0 to 3 MiB both ways,
// request and response trailers.
func TestClientInterop(t *testing.T) {
	servers := []struct {
		name string
		addr func(t *testing.T) string
	}{
		{"xnet", func(t *testing.T) string { return startXNet(t, &http2.Server{}, http.HandlerFunc(xnetEcho)) }},
		{"own", func(t *testing.T) string { return startServer(t, nil, HandlerFunc(echo)) }},
	}
	sizes := []int{0, 1, 100, 16384, 16385, 70000, 3 << 20}
	for _, sv := range servers {
		t.Run(sv.name, func(t *testing.T) {
			cc := dialClient(t, sv.addr(t), nil)
			var wg sync.WaitGroup
			errs := make(chan error, 100)
			for i := range 60 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					n := sizes[i%len(sizes)]
					body := bytes.Repeat([]byte{byte('a' + i%26)}, n)
					var tr []string
					if i%2 == 1 {
						tr = []string{"x-tr", fmt.Sprint(i)}
					}
					path := fmt.Sprintf("/p/%d?q=1", i)
					req := reqHeaders("POST", path)
					if tr != nil {
						req.Add("trailer", "x-tr") // x/net's server wants them declared
					}
					r, err := exchange(cc, req, body, tr...)
					switch {
					case err != nil:
						errs <- fmt.Errorf("stream %d: %w", i, err)
					case r.resp[":status"] != "200" || r.resp["x-method"] != "POST" || r.resp["x-path"] != path:
						errs <- fmt.Errorf("stream %d: headers %v", i, r.resp)
					case !bytes.Equal(r.body, body):
						errs <- fmt.Errorf("stream %d: body of %d bytes, want %d", i, len(r.body), n)
					case tr != nil && r.trailers["x-tr"] != tr[1]:
						errs <- fmt.Errorf("stream %d: trailers %v", i, r.trailers)
					}
				}()
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Error(err)
			}
			if n := cc.ActiveStreams(); n != 0 {
				t.Errorf("%d streams still active", n)
			}
		})
	}
}

// TestClientGRPCXNet is a gRPC-style unary call: a length-prefixed message
// each way, te: trailers, grpc-status in the response trailers.
func TestClientGRPCXNet(t *testing.T) {
	addr := startXNet(t, &http2.Server{}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		msg, _ := io.ReadAll(r.Body)
		if r.Header.Get("Te") != "trailers" || r.Header.Get("Content-Type") != "application/grpc" {
			w.WriteHeader(400)
			return
		}
		w.Header().Set("Content-Type", "application/grpc")
		w.Header().Set("Trailer", "Grpc-Status, Grpc-Message")
		w.WriteHeader(200)
		_, _ = w.Write(msg)
		w.Header().Set("Grpc-Status", "0")
		w.Header().Set("Grpc-Message", "ok")
	}))
	cc := dialClient(t, addr, nil)
	msg := []byte{0, 0, 0, 0, 5, 'h', 'e', 'l', 'l', 'o'}
	for i := range 3 {
		r, err := exchange(cc, reqHeaders("POST", "/pkg.Svc/Call", "content-type", "application/grpc", "te", "trailers"), msg)
		if err != nil {
			t.Fatal(i, err)
		}
		if r.resp[":status"] != "200" || !bytes.Equal(r.body, msg) || r.trailers["grpc-status"] != "0" || r.trailers["grpc-message"] != "ok" {
			t.Fatalf("call %d: %v %q %v", i, r.resp, r.body, r.trailers)
		}
	}
}

// TestClientXNetReset: a handler that aborts resets the stream; the error
// is a remote *StreamError, not retriable, and the connection stays usable.
func TestClientXNetReset(t *testing.T) {
	addr := startXNet(t, &http2.Server{}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/abort" {
			w.WriteHeader(200)
			_, _ = w.Write([]byte("partial"))
			w.(http.Flusher).Flush()
			panic(http.ErrAbortHandler)
		}
		w.WriteHeader(204)
	}))
	cc := dialClient(t, addr, nil)
	_, err := exchange(cc, reqHeaders("GET", "/abort"), nil)
	var se *StreamError
	if !errors.As(err, &se) || !se.Remote || IsRefused(err) {
		t.Fatalf("error %v", err)
	}
	r, err := exchange(cc, reqHeaders("GET", "/ok"), nil)
	if err != nil || r.resp[":status"] != "204" {
		t.Fatalf("after reset: %v %v", r, err)
	}
}

// TestClientMaxConcurrent: the server's SETTINGS_MAX_CONCURRENT_STREAMS,
// and our own cap, bound the streams NewStream opens.
func TestClientMaxConcurrent(t *testing.T) {
	release := make(chan struct{})
	addr := startXNet(t, &http2.Server{MaxConcurrentStreams: 3}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-release
	}))
	for _, tc := range []struct {
		own  uint32
		want int
	}{{0, 3}, {2, 2}} {
		cc := dialClient(t, addr, &ClientConfig{MaxConcurrentStreams: tc.own})
		// A first exchange makes sure the server's SETTINGS arrived.
		if tc.own == 0 {
			go func() { time.Sleep(50 * time.Millisecond); release <- struct{}{} }()
			if _, err := exchange(cc, reqHeaders("GET", "/"), nil); err != nil {
				t.Fatal(err)
			}
		}
		var open []*ClientStream
		for range tc.want {
			s, err := cc.NewStream(reqHeaders("GET", "/"), true)
			if err != nil {
				t.Fatal(err)
			}
			open = append(open, s)
		}
		if cc.CanTakeNewStream() {
			t.Errorf("own %d: can take a stream past %d", tc.own, tc.want)
		}
		if _, err := cc.NewStream(reqHeaders("GET", "/"), true); !errors.Is(err, ErrCannotTakeStream) || !IsRefused(err) {
			t.Errorf("own %d: NewStream past the limit: %v", tc.own, err)
		}
		go func() {
			for range open {
				release <- struct{}{}
			}
		}()
		for _, s := range open {
			if _, err := s.ReadHeaders(time.Now().Add(10 * time.Second)); err != nil {
				t.Fatal(err)
			}
			s.Release()
		}
		if !cc.CanTakeNewStream() || cc.ActiveStreams() != 0 {
			t.Errorf("own %d: after the streams ended: can take %v, active %d", tc.own, cc.CanTakeNewStream(), cc.ActiveStreams())
		}
	}
}

// TestClientLargeHeaders: request and response header blocks larger than
// a frame travel in CONTINUATION frames.
func TestClientLargeHeaders(t *testing.T) {
	cc := dialClient(t, startServer(t, nil, HandlerFunc(echo)), nil)
	path := "/" + strings.Repeat("p", 20000)
	r, err := exchange(cc, reqHeaders("GET", path, "x-big", strings.Repeat("v", 30000)), nil)
	if err != nil {
		t.Fatal(err)
	}
	if r.resp["x-path"] != path {
		t.Fatalf("x-path of %d bytes", len(r.resp["x-path"]))
	}
}

// TestClientContinue: a 100 (Continue) is skipped by ReadHeaders and
// reported by Continued.
func TestClientContinue(t *testing.T) {
	cc := dialClient(t, startServer(t, nil, HandlerFunc(echo)), nil)
	r, err := exchange(cc, reqHeaders("POST", "/c", "x-continue", "1"), []byte("body"))
	if err != nil {
		t.Fatal(err)
	}
	if r.resp[":status"] != "200" || !r.continued || string(r.body) != "body" {
		t.Fatalf("%v continued %v body %q", r.resp, r.continued, r.body)
	}
}

// TestClientDeadline: ReadHeaders gives up at its deadline; Release then
// resets the stream and the connection goes on.
func TestClientDeadline(t *testing.T) {
	block := make(chan struct{})
	defer close(block)
	addr := startXNet(t, &http2.Server{}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			select {
			case <-block:
			case <-r.Context().Done():
			}
			return
		}
		w.WriteHeader(200)
	}))
	cc := dialClient(t, addr, nil)
	s, err := cc.NewStream(reqHeaders("GET", "/slow"), true)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.ReadHeaders(time.Now().Add(50 * time.Millisecond)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("ReadHeaders: %v", err)
	}
	s.Release()
	if r, err := exchange(cc, reqHeaders("GET", "/fast"), nil); err != nil || r.resp[":status"] != "200" {
		t.Fatalf("%v %v", r, err)
	}
}
