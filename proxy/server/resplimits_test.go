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
// (default 80 KiB for HTTP/1). A response past them is not forwarded.
func TestUpstreamResponseHeaderLimits(t *testing.T) {
	up := startUpstream(t, func(w http.ResponseWriter, r *http.Request) {
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
		{"default size ok", "", "kb=70", 200},
		{"default size exceeded", "", "kb=90", 502},
		{"configured count", "max_headers_count: 200", "n=150", 200},
		{"configured count exceeded", "max_headers_count: 20", "n=30", 502},
		{"configured size exceeded", "max_response_headers_kb: 4", "kb=5", 502},
	} {
		t.Run(tc.name, func(t *testing.T) {
			boot := httpBootstrap(up.port(), routes, "")
			if tc.cluster != "" {
				boot += "    common_http_protocol_options: {" + tc.cluster + "}\n"
			}
			p := servertest.Start(t, boot)
			resp, err := http.Get(fmt.Sprintf("http://%s/?%s", p.Addr("front"), tc.query))
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tc.want {
				t.Errorf("status %d, want %d", resp.StatusCode, tc.want)
			}
		})
	}
}
