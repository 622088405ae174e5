package server_test

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/outrider-proxy/outrider/proxy/server/servertest"
)

// mirroredBody is what a shadow upstream saw of one request.
type mirroredBody struct {
	host, method, trailer string
	sum                   [32]byte
	n                     int
}

// Requests with bodies are mirrored: the shadow gets the same body (fixed
// length or chunked, with trailers) while the primary is answered by its
// own upstream.
func TestMirrorRequestBody(t *testing.T) {
	seen := make(chan mirroredBody, 10)
	shadow := startUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		seen <- mirroredBody{host: r.Host, method: r.Method, trailer: r.Trailer.Get("x-t"), sum: sha256.Sum256(b), n: len(b)}
		w.WriteHeader(503) // discarded
	})
	primary := startUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "primary %d", len(b))
	})
	yaml := resilienceBootstrap(`, request_mirror_policies: [{cluster: shadow}]`, "", primary.port())
	yaml += clusterYAML("shadow", "", shadow.port())
	p := servertest.Start(t, yaml)
	big := bytes.Repeat([]byte("0123456789abcdef"), 64<<10) // 1 MiB, many reads
	tests := []struct {
		name    string
		body    []byte
		chunked bool
		trailer string
	}{
		{"small fixed length", []byte("hello shadow"), false, ""},
		{"big fixed length", big[:512<<10], false, ""},
		{"chunked", big[:300<<10], true, ""},
		{"chunked with trailers", []byte("with trailers"), true, "tv"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var body io.Reader = bytes.NewReader(tt.body)
			if tt.chunked {
				body = io.MultiReader(bytes.NewReader(tt.body)) // unknown length: chunked
			}
			req, _ := http.NewRequest("POST", p.URL("front", "/upload"), body)
			req.Host = "api.test"
			if tt.trailer != "" {
				req.Trailer = http.Header{"X-T": {tt.trailer}}
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if want := fmt.Sprintf("primary %d", len(tt.body)); resp.StatusCode != 200 || string(b) != want {
				t.Fatalf("primary answered %d %q, want 200 %q", resp.StatusCode, b, want)
			}
			select {
			case m := <-seen:
				if m.host != "api.test-shadow" || m.method != "POST" || m.n != len(tt.body) || m.sum != sha256.Sum256(tt.body) || m.trailer != tt.trailer {
					t.Errorf("shadow saw %s %s, %d bytes, trailer %q", m.method, m.host, m.n, m.trailer)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("no shadow request")
			}
		})
	}
	p.WaitStat("cluster.shadow.upstream_rq_503", int64(len(tests)))
}

// A shadow that never reads its body is abandoned; the primary is never
// held back by it.
func TestMirrorStalledShadow(t *testing.T) {
	accepted := make(chan struct{}, 10)
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	stalled := servertest.ServeTCP(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		if _, err := http.ReadRequest(br); err != nil {
			return
		}
		accepted <- struct{}{}
		select { // read nothing more until the test ends
		case <-release:
		case <-time.After(30 * time.Second):
		}
	})
	primary := startUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		fmt.Fprintf(w, "primary %d", n)
	})
	yaml := resilienceBootstrap(`, request_mirror_policies: [{cluster: shadow}]`, "", primary.port())
	yaml += clusterYAML("shadow", "", stalled)
	p := servertest.Start(t, yaml)
	body := bytes.Repeat([]byte("x"), 32<<20) // far more than socket buffers and the buffer limit
	resp, err := http.Post(p.URL("front", "/"), "application/octet-stream", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if want := fmt.Sprintf("primary %d", len(body)); string(b) != want {
		t.Fatalf("primary answered %q, want %q", b, want)
	}
	select {
	case <-accepted:
	case <-time.After(5 * time.Second):
		t.Fatal("the shadow never got the request headers")
	}
}

// runtime_fraction samples mirrored requests by its default_value.
func TestMirrorRuntimeFraction(t *testing.T) {
	for _, tt := range []struct {
		fraction string
		want     int
	}{{"{numerator: 0}", 0}, {"{numerator: 100}", 20}, {"{numerator: 1000000, denominator: MILLION}", 20}} {
		t.Run(tt.fraction, func(t *testing.T) {
			count := make(chan struct{}, 100)
			shadow := startUpstream(t, func(w http.ResponseWriter, r *http.Request) { count <- struct{}{} })
			primary := startUpstream(t, func(w http.ResponseWriter, r *http.Request) {})
			yaml := resilienceBootstrap(`, request_mirror_policies: [{cluster: shadow, runtime_fraction: {default_value: `+tt.fraction+`, runtime_key: mirror.x}}]`, "", primary.port())
			yaml += clusterYAML("shadow", "", shadow.port())
			p := servertest.Start(t, yaml)
			for i := 0; i < 20; i++ {
				resp, err := http.Post(p.URL("front", "/"), "text/plain", strings.NewReader("b"))
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
			}
			if tt.want > 0 {
				p.WaitStat("cluster.shadow.upstream_rq_200", int64(tt.want))
			} else {
				// A sentinel mirrored GET would not exist here: give any stray
				// shadow time to arrive, then count none.
				time.Sleep(200 * time.Millisecond)
			}
			if len(count) != tt.want {
				t.Errorf("%d shadow requests, want %d", len(count), tt.want)
			}
		})
	}
}
