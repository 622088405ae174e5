package router

import (
	"flag"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"testing"

	"github.com/outrider-proxy/outrider/proxy/headers"
	"github.com/outrider-proxy/outrider/proxy/streaminfo"
	"github.com/outrider-proxy/outrider/telemetry/formatter"
)

var update = flag.Bool("update", false, "rewrite golden files")

// TestGolden routes a fixed set of requests through testdata/route_config.yaml
// and compares every decision with testdata/route_config.golden.
func TestGolden(t *testing.T) {
	y, err := os.ReadFile("testdata/route_config.yaml")
	if err != nil {
		t.Fatal(err)
	}
	tb, err := Compile(parseRC(t, string(y)), Options{ClusterExists: func(string) bool { return true }})
	if err != nil {
		t.Fatal(err)
	}
	requests := []struct {
		line string
		hdrs []string
		rnd  uint64
	}{
		{"GET example.com /", nil, 0},
		{"GET WWW.Example.com /index.html?x=1", nil, 0},
		{"POST example.com /pkg.Svc/Call", []string{"content-type: application/grpc"}, 0},
		{"GET example.com /api/users?id=3", []string{"x-version: v2"}, 0},
		{"GET example.com /api/users", nil, 5},
		{"GET example.com /api/users", nil, 95},
		{"GET example.com /old?keep=1", nil, 0},
		{"GET example.com /healthz", nil, 0},
		{"GET secure.example.org /x", []string{"x-forwarded-proto: http"}, 0},
		{"GET secure.example.org /x", []string{"x-forwarded-proto: https"}, 0},
		{"GET unknown.net /", nil, 0},
	}
	conn := &streaminfo.Conn{RemoteAddr: netip.MustParseAddrPort("192.0.2.7:5000")}
	var out strings.Builder
	for _, rq := range requests {
		m := req(rq.line, rq.hdrs...)
		fmt.Fprintf(&out, "== %s %v rnd=%d\n", rq.line, rq.hdrs, rq.rnd)
		r, vh := tb.Select(m, rq.rnd)
		if vh == nil {
			out.WriteString("no virtual host\n")
			continue
		}
		fmt.Fprintf(&out, "vhost %s\n", vh.Name)
		if r == nil {
			out.WriteString("no route (404 NR)\n")
			continue
		}
		fmt.Fprintf(&out, "route %q\n", r.Name)
		ctx := &formatter.Context{Request: m, Stream: &streaminfo.Stream{Conn: conn}}
		switch r.Kind() {
		case ActionCluster:
			fmt.Fprintf(&out, "cluster %s timeout %v idle %v\n", r.Cluster(m, rq.rnd), r.Timeout(), r.IdleTimeout())
			r.ApplyRequestHeaders(m, ctx)
			r.RewriteRequest(m)
			out.WriteString(dump(m))
		case ActionRedirect:
			st, loc := r.Redirect(m)
			fmt.Fprintf(&out, "redirect %d %s\n", st, loc)
		case ActionDirectResponse:
			st, body := r.DirectResponse()
			fmt.Fprintf(&out, "direct %d %q\n", st, body)
		}
		resp := &headers.Map{}
		r.ApplyResponseHeaders(resp, ctx)
		out.WriteString("response " + strings.TrimSpace(dump(resp)) + "\n")
	}
	const golden = "testdata/route_config.golden"
	if *update {
		if err := os.WriteFile(golden, []byte(out.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run with -update to create)", err)
	}
	if out.String() != string(want) {
		t.Errorf("golden mismatch:\n%s", out.String())
	}
}
