package h2

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"
)

func h2cClient() *http.Client {
	return &http.Client{
		Timeout: 20 * time.Second,
		Transport: &http2.Transport{
			AllowHTTP: true,
			DialTLSContext: func(ctx context.Context, network, addr string, _ *tls.Config) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, network, addr)
			},
		},
	}
}

// TestInteropXNet drives the server with x/net's own client: many
// concurrent streams on one connection, large bodies both ways, trailers.
func TestInteropXNet(t *testing.T) {
	addr := startServer(t, nil, HandlerFunc(echo))
	cl := h2cClient()
	defer cl.CloseIdleConnections()
	sizes := []int{0, 1, 100, 16384, 16385, 70000, 3 << 20}
	var wg sync.WaitGroup
	errs := make(chan error, 200)
	for i := range 100 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n := sizes[i%len(sizes)]
			body := bytes.Repeat([]byte{byte('a' + i%26)}, n)
			req, _ := http.NewRequest("POST", "http://"+addr+fmt.Sprintf("/p/%d", i), bytes.NewReader(body))
			req.Header.Add("Cookie", "a=1")
			req.Header.Add("Cookie", "b=2")
			if n > 0 {
				// x/net's client stalls the connection's other uploads
				// when a body-less request declares trailers (its own
				// server hangs the same way), so only bodies get them.
				req.Trailer = http.Header{"X-Tr": {fmt.Sprint(i)}}
			}
			resp, err := cl.Do(req)
			if err != nil {
				errs <- err
				return
			}
			defer resp.Body.Close()
			got, err := io.ReadAll(resp.Body)
			if err != nil {
				errs <- fmt.Errorf("stream %d: %v", i, err)
				return
			}
			switch {
			case resp.StatusCode != 200:
				errs <- fmt.Errorf("stream %d: status %d", i, resp.StatusCode)
			case !bytes.Equal(got, body):
				errs <- fmt.Errorf("stream %d: body %d bytes, want %d", i, len(got), n)
			case resp.Header.Get("X-Path") != fmt.Sprintf("/p/%d", i) || resp.Header.Get("X-Method") != "POST":
				errs <- fmt.Errorf("stream %d: headers %v", i, resp.Header)
			case resp.Header.Get("X-Cookie") != "a=1; b=2":
				errs <- fmt.Errorf("stream %d: cookie %q", i, resp.Header.Get("X-Cookie"))
			case n > 0 && resp.Trailer.Get("X-Tr") != fmt.Sprint(i):
				errs <- fmt.Errorf("stream %d: trailers %v", i, resp.Trailer)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// TestInteropGetAndStatus: body-less requests, other statuses, 100 Continue.
func TestInteropGetAndStatus(t *testing.T) {
	addr := startServer(t, nil, HandlerFunc(echo))
	cl := h2cClient()
	defer cl.CloseIdleConnections()
	for _, tc := range []struct {
		name, status string
		want         int
		cont         bool
	}{
		{"plain", "", 200, false},
		{"404", "404", 404, false},
		{"continue", "", 200, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest("GET", "http://"+addr+"/x?y=1", nil)
			if tc.status != "" {
				req.Header.Set("X-Status", tc.status)
			}
			if tc.cont {
				req.Header.Set("X-Continue", "1")
			}
			resp, err := cl.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tc.want || resp.Header.Get("X-Path") != "/x?y=1" {
				t.Fatalf("status %d headers %v", resp.StatusCode, resp.Header)
			}
		})
	}
	// Large response headers need CONTINUATION frames.
	req, _ := http.NewRequest("GET", "http://"+addr+"/"+strings.Repeat("p", 40000), nil)
	resp, err := cl.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if len(resp.Header.Get("X-Path")) != 40001 {
		t.Fatalf("x-path of %d bytes", len(resp.Header.Get("X-Path")))
	}
}
