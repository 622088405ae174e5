package router

import (
	"fmt"
	"strings"
	"testing"
)

// bench50 is a table of 50 routes over 5 virtual hosts; the request hits the
// last route of a wildcard-matched virtual host.
func bench50(b testing.TB) *Table {
	var y strings.Builder
	y.WriteString("virtual_hosts:\n")
	for v := 0; v < 5; v++ {
		fmt.Fprintf(&y, "- name: vh%d\n  domains: [\"host%d.com\", \"*.host%d.com\"]\n  routes:\n", v, v, v)
		for r := 0; r < 10; r++ {
			switch r % 3 {
			case 0:
				fmt.Fprintf(&y, "  - {match: {prefix: \"/p%d/\", headers: [{name: x-h, string_match: {exact: \"v%d\"}}]}, route: {cluster: c%d}}\n", r, r, r)
			case 1:
				fmt.Fprintf(&y, "  - {match: {path: \"/exact/%d\"}, route: {cluster: c%d}}\n", r, r)
			default:
				fmt.Fprintf(&y, "  - {match: {safe_regex: {regex: \"/re%d/[a-z]+\"}}, route: {cluster: c%d}}\n", r, r)
			}
		}
	}
	return mustCompile(b, y.String())
}

func BenchmarkSelect50(b *testing.B) {
	tb := bench50(b)
	m := req("GET api.host4.com /p9/users?id=1", "x-h: v9", "user-agent: bench")
	if r, vh := tb.Select(m, 1); r == nil || vh.Name != "vh4" {
		b.Fatalf("setup: got %v %v", r, vh)
	}
	b.ReportAllocs()
	for b.Loop() {
		tb.Select(m, 1)
	}
}

func TestSelectNoAlloc(t *testing.T) {
	tb := bench50(t)
	m := req("GET API.host4.com /p9/users?id=1", "x-h: v9")
	if n := testing.AllocsPerRun(50, func() { tb.Select(m, 1) }); n != 0 {
		t.Errorf("Select allocs/op = %v, want 0", n)
	}
}
