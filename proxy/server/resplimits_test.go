package server_test

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/outrider-proxy/outrider/proxy/server/servertest"
)

// A cluster's common_http_protocol_options bound the upstream response's
// headers: max_headers_count (default 100) and max_response_headers_kb
// (default 80 KiB for HTTP/1, 60 KiB for HTTP/2). A response past them is
// not forwarded.
func TestUpstreamResponseHeaderLimits(t *testing.T) {
	for _, h2 := range []bool{false, true} {
		name, start := "http1", startUpstream
		if h2 {
			name, start = "http2", startH2Upstream
		}
		t.Run(name, func(t *testing.T) { testResponseHeaderLimits(t, h2, start) })
	}
}

func testResponseHeaderLimits(t *testing.T, h2 bool, start func(*testing.T, http.HandlerFunc) *upstream) {
	up := start(t, func(w http.ResponseWriter, r *http.Request) {
		var n, size int
		fmt.Sscan(r.URL.Query().Get("n"), &n)
		fmt.Sscan(r.URL.Query().Get("kb"), &size)
		for i := range n {
			w.Header().Set(fmt.Sprintf("x-h%d", i), "v")
		}
		if size > 0 {
			w.Header().Set("x-big", strings.Repeat("b", size<<10))
		}
		io.WriteString(w, "ok")
	})
	routes := `- match: {prefix: "/"}
  route: {cluster: up}`
	for _, tc := range []struct {
		name, cluster string
		query         string
		want          int
	}{
		{"default count ok", "", "n=90", 200},
		{"default count exceeded", "", "n=120", 502},
		{"default size ok", "", "kb=" + map[bool]string{false: "70", true: "50"}[h2], 200},
		{"default size exceeded", "", "kb=" + map[bool]string{false: "90", true: "65"}[h2], 502},
		{"configured count", "max_headers_count: 200", "n=150", 200},
		{"configured count exceeded", "max_headers_count: 20", "n=30", 502},
		{"configured size exceeded", "max_response_headers_kb: 4", "kb=5", 502},
	} {
		t.Run(tc.name, func(t *testing.T) {
			boot := httpBootstrap(up.port(), routes, "")
			if tc.cluster != "" {
				boot += "    common_http_protocol_options: {" + tc.cluster + "}\n"
			}
			if h2 {
				boot = h2Cluster(boot, "{}")
			}
			p := servertest.Start(t, boot)
			resp, err := http.Get(fmt.Sprintf("http://%s/?%s", p.Addr("front"), tc.query))
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			want := tc.want
			if h2 && want == 502 {
				// Envoy's HTTP/2 codec resets a stream whose response
				// headers overflow (header_overflow), and the router
				// answers the upstream reset before the response 503.
				want = 503
			}
			if resp.StatusCode != want {
				t.Errorf("status %d, want %d", resp.StatusCode, want)
			}
		})
	}
}
