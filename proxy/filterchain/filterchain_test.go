package filterchain

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// spec is a compact filter_chain_match description for tests.
type spec struct {
	name   string
	port   uint32
	dst    []string
	names  []string
	tp     string
	alpn   []string
	direct []string
	st     listenerv3.FilterChainMatch_ConnectionSourceType
	src    []string
	sports []uint32
}

func cidrs(t testing.TB, list []string) []*corev3.CidrRange {
	var out []*corev3.CidrRange
	for _, s := range list {
		addr, bits, ok := strings.Cut(s, "/")
		if !ok {
			t.Fatalf("bad cidr %q", s)
		}
		var n uint32
		for _, c := range bits {
			n = n*10 + uint32(c-'0')
		}
		out = append(out, &corev3.CidrRange{AddressPrefix: addr, PrefixLen: wrapperspb.UInt32(n)})
	}
	return out
}

func (s spec) chain(t testing.TB) *listenerv3.FilterChain {
	m := &listenerv3.FilterChainMatch{
		PrefixRanges:             cidrs(t, s.dst),
		ServerNames:              s.names,
		TransportProtocol:        s.tp,
		ApplicationProtocols:     s.alpn,
		DirectSourcePrefixRanges: cidrs(t, s.direct),
		SourceType:               s.st,
		SourcePrefixRanges:       cidrs(t, s.src),
		SourcePorts:              s.sports,
	}
	if s.port != 0 {
		m.DestinationPort = wrapperspb.UInt32(s.port)
	}
	return &listenerv3.FilterChain{Name: s.name, FilterChainMatch: m}
}

func chains(t testing.TB, specs []spec) []*listenerv3.FilterChain {
	out := make([]*listenerv3.FilterChain, len(specs))
	for i, s := range specs {
		out[i] = s.chain(t)
	}
	return out
}

func ap(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }

// conn builds a ConnInfo: dst and src are "ip:port" or "" for a unix socket.
func conn(dst, src, sni, tp string, alpn ...string) *ConnInfo {
	ci := &ConnInfo{ServerName: sni, TransportProtocol: tp, ALPN: alpn}
	if dst != "" {
		ci.DstAddr = ap(dst)
	}
	if src != "" {
		ci.SrcAddr = ap(src)
	}
	return ci
}

const (
	local    = listenerv3.FilterChainMatch_SAME_IP_OR_LOOPBACK
	external = listenerv3.FilterChainMatch_EXTERNAL
)

func TestMatch(t *testing.T) {
	type check struct {
		ci   *ConnInfo
		want string // chain name, "default" or "none"
	}
	tests := []struct {
		name   string
		specs  []spec
		def    bool
		checks []check
	}{
		{
			name:  "destination port beats a more specific destination IP",
			specs: []spec{{name: "port", port: 8080}, {name: "ip", dst: []string{"10.0.0.1/32"}}},
			checks: []check{
				{conn("10.0.0.1:8080", "1.2.3.4:5", "", "raw_buffer"), "port"},
				{conn("10.0.0.1:80", "1.2.3.4:5", "", "raw_buffer"), "ip"},
				{conn("10.0.0.2:80", "1.2.3.4:5", "", "raw_buffer"), "none"},
			},
		},
		{
			name:  "port-specific subtree never falls back to port 0",
			specs: []spec{{name: "p", port: 443, names: []string{"a.com"}}, {name: "any"}},
			def:   true,
			checks: []check{
				{conn("10.0.0.1:443", "1.2.3.4:5", "a.com", "tls"), "p"},
				{conn("10.0.0.1:443", "1.2.3.4:5", "b.com", "tls"), "default"},
				{conn("10.0.0.1:80", "1.2.3.4:5", "b.com", "tls"), "any"},
			},
		},
		{
			name: "destination IP longest prefix",
			specs: []spec{
				{name: "8", dst: []string{"10.0.0.0/8"}},
				{name: "16", dst: []string{"10.1.0.0/16"}},
				{name: "host", dst: []string{"10.1.2.3/32"}},
				{name: "any"},
			},
			checks: []check{
				{conn("10.1.2.3:80", "1.1.1.1:1", "", "raw_buffer"), "host"},
				{conn("10.1.9.9:80", "1.1.1.1:1", "", "raw_buffer"), "16"},
				{conn("10.2.0.0:80", "1.1.1.1:1", "", "raw_buffer"), "8"},
				{conn("192.168.0.1:80", "1.1.1.1:1", "", "raw_buffer"), "any"},
				{conn("[2001:db8::1]:80", "[2001:db8::2]:1", "", "raw_buffer"), "any"},
				// IPv4-mapped addresses are matched as IPv4, as Envoy converts them.
				{conn("[::ffff:10.1.2.3]:80", "[::ffff:1.1.1.1]:1", "", "raw_buffer"), "host"},
			},
		},
		{
			name: "host bits are masked and lengths clamped",
			specs: []spec{
				{name: "masked", dst: []string{"10.9.9.9/8"}},
				{name: "clamped", dst: []string{"192.168.1.1/40"}},
			},
			checks: []check{
				{conn("10.1.1.1:80", "1.1.1.1:1", "", ""), "masked"},
				{conn("192.168.1.1:80", "1.1.1.1:1", "", ""), "clamped"},
				{conn("192.168.1.2:80", "1.1.1.1:1", "", ""), "none"},
			},
		},
		{
			name:  "destination IP match does not fall back to the catch-all",
			specs: []spec{{name: "net", dst: []string{"10.0.0.0/8"}, names: []string{"x.com"}}, {name: "any"}},
			def:   true,
			checks: []check{
				{conn("10.1.1.1:80", "1.1.1.1:1", "x.com", "tls"), "net"},
				{conn("10.1.1.1:80", "1.1.1.1:1", "y.com", "tls"), "default"},
				{conn("11.1.1.1:80", "1.1.1.1:1", "y.com", "tls"), "any"},
			},
		},
		{
			name: "IPv6 prefixes",
			specs: []spec{
				{name: "32", dst: []string{"2001:db8::/32"}},
				{name: "48", dst: []string{"2001:db8:1::/48"}},
				{name: "v4", dst: []string{"0.0.0.0/0"}},
			},
			checks: []check{
				{conn("[2001:db8:1::5]:443", "[::1]:1", "", ""), "48"},
				{conn("[2001:db8:2::5]:443", "[::1]:1", "", ""), "32"},
				{conn("[2001:db9::5]:443", "[::1]:1", "", ""), "none"},
				{conn("8.8.8.8:443", "[::1]:1", "", ""), "v4"},
			},
		},
		{
			name: "server names: exact, then longest wildcard suffix, then unset",
			specs: []spec{
				{name: "exact", names: []string{"WWW.Example.com"}},
				{name: "wild", names: []string{"*.example.com"}},
				{name: "tld", names: []string{"*.com"}},
				{name: "bare", names: []string{".example.org"}},
				{name: "any"},
			},
			checks: []check{
				{conn("1.1.1.1:443", "2.2.2.2:1", "www.example.com", "tls"), "exact"},
				{conn("1.1.1.1:443", "2.2.2.2:1", "api.example.com", "tls"), "wild"},
				{conn("1.1.1.1:443", "2.2.2.2:1", "a.b.example.com", "tls"), "wild"},
				{conn("1.1.1.1:443", "2.2.2.2:1", "example.com", "tls"), "tld"},
				{conn("1.1.1.1:443", "2.2.2.2:1", "foo.com", "tls"), "tld"},
				{conn("1.1.1.1:443", "2.2.2.2:1", "a.example.org", "tls"), "bare"},
				{conn("1.1.1.1:443", "2.2.2.2:1", "example.org", "tls"), "any"},
				{conn("1.1.1.1:443", "2.2.2.2:1", "", "raw_buffer"), "any"},
				// "*.com" never matches the bare label, but (as in Envoy, which
				// stores it as ".com") an SNI of ".com" hits it exactly.
				{conn("1.1.1.1:443", "2.2.2.2:1", "com", "tls"), "any"},
				{conn("1.1.1.1:443", "2.2.2.2:1", ".com", "tls"), "tld"},
				{conn("1.1.1.1:443", "2.2.2.2:1", "x.com.", "tls"), "any"},
			},
		},
		{
			name: "server name is decided before transport protocol",
			specs: []spec{
				{name: "tls-x", names: []string{"x.com"}, tp: "tls"},
				{name: "raw", tp: "raw_buffer"},
			},
			def: true,
			checks: []check{
				{conn("1.1.1.1:443", "2.2.2.2:1", "x.com", "tls"), "tls-x"},
				{conn("1.1.1.1:443", "2.2.2.2:1", "x.com", "raw_buffer"), "default"},
				{conn("1.1.1.1:443", "2.2.2.2:1", "", "raw_buffer"), "raw"},
				{conn("1.1.1.1:443", "2.2.2.2:1", "", "tls"), "default"},
			},
		},
		{
			name:  "transport protocol exact then unset",
			specs: []spec{{name: "tls", tp: "tls"}, {name: "any"}},
			checks: []check{
				{conn("1.1.1.1:443", "2.2.2.2:1", "", "tls"), "tls"},
				{conn("1.1.1.1:443", "2.2.2.2:1", "", "raw_buffer"), "any"},
			},
		},
		{
			name: "application protocols in client order",
			specs: []spec{
				{name: "h2", alpn: []string{"h2"}},
				{name: "h1", alpn: []string{"http/1.1"}},
				{name: "any"},
			},
			checks: []check{
				{conn("1.1.1.1:443", "2.2.2.2:1", "", "tls", "http/1.1", "h2"), "h1"},
				{conn("1.1.1.1:443", "2.2.2.2:1", "", "tls", "h2", "http/1.1"), "h2"},
				{conn("1.1.1.1:443", "2.2.2.2:1", "", "tls", "h3"), "any"},
				{conn("1.1.1.1:443", "2.2.2.2:1", "", "tls"), "any"},
			},
		},
		{
			name:  "direct source IP uses the direct peer",
			specs: []spec{{name: "direct", direct: []string{"10.0.0.0/8"}}, {name: "any"}},
			checks: []check{
				{&ConnInfo{DstAddr: ap("1.1.1.1:80"), SrcAddr: ap("192.168.1.1:5"), DirectSrcAddr: ap("10.1.1.1:5")}, "direct"},
				{&ConnInfo{DstAddr: ap("1.1.1.1:80"), SrcAddr: ap("10.1.1.1:5"), DirectSrcAddr: ap("192.168.1.1:5")}, "any"},
				{&ConnInfo{DstAddr: ap("1.1.1.1:80"), SrcAddr: ap("10.1.1.1:5")}, "direct"},
			},
		},
		{
			name:  "direct source IP beats source type",
			specs: []spec{{name: "direct", direct: []string{"127.0.0.0/8"}, st: external}, {name: "local", st: local}},
			def:   true,
			checks: []check{
				// Direct source 127/8 selects "direct", which only takes EXTERNAL.
				{conn("127.0.0.1:80", "127.0.0.1:5", "", ""), "default"},
				{conn("10.0.0.1:80", "10.0.0.1:5", "", ""), "local"},
				{conn("10.0.0.1:80", "10.0.0.2:5", "", ""), "default"},
			},
		},
		{
			name:  "source type local, external, any",
			specs: []spec{{name: "local", st: local}, {name: "ext", st: external}, {name: "any"}},
			checks: []check{
				{conn("10.0.0.5:80", "127.0.0.1:5", "", ""), "local"},
				{conn("[::1]:80", "[::1]:5", "", ""), "local"},
				{conn("10.0.0.5:80", "10.0.0.5:5", "", ""), "local"},
				{conn("10.0.0.5:80", "10.0.0.6:5", "", ""), "ext"},
			},
		},
		{
			name:  "source type falls back to ANY",
			specs: []spec{{name: "local", st: local}, {name: "any", src: []string{"10.0.0.0/8"}}},
			checks: []check{
				{conn("10.0.0.5:80", "127.0.0.1:5", "", ""), "local"},
				{conn("10.0.0.5:80", "10.0.0.6:5", "", ""), "any"},
				{conn("10.0.0.5:80", "11.0.0.6:5", "", ""), "none"},
			},
		},
		{
			name:  "source type beats a more specific source IP",
			specs: []spec{{name: "ext", st: external}, {name: "src", src: []string{"10.1.1.1/32"}}},
			checks: []check{
				{conn("1.1.1.1:80", "10.1.1.1:5", "", ""), "ext"},
				{conn("1.1.1.1:80", "127.0.0.1:5", "", ""), "none"},
			},
		},
		{
			name: "source IP longest prefix then source port",
			specs: []spec{
				{name: "16", src: []string{"192.168.0.0/16"}},
				{name: "24", src: []string{"192.168.1.0/24"}},
				{name: "24p", src: []string{"192.168.1.0/24"}, sports: []uint32{1000, 1001}},
				{name: "any"},
			},
			def: true,
			checks: []check{
				{conn("1.1.1.1:80", "192.168.1.5:1000", "", ""), "24p"},
				{conn("1.1.1.1:80", "192.168.1.5:1001", "", ""), "24p"},
				{conn("1.1.1.1:80", "192.168.1.5:2000", "", ""), "24"},
				{conn("1.1.1.1:80", "192.168.2.5:2000", "", ""), "16"},
				{conn("1.1.1.1:80", "172.16.0.1:2000", "", ""), "any"},
			},
		},
		{
			name:  "source port without catch-all port",
			specs: []spec{{name: "p", src: []string{"10.0.0.0/8"}, sports: []uint32{1000}}, {name: "any"}},
			def:   true,
			checks: []check{
				{conn("1.1.1.1:80", "10.1.1.1:1000", "", ""), "p"},
				{conn("1.1.1.1:80", "10.1.1.1:2000", "", ""), "default"},
			},
		},
		{
			name: "unix socket connection",
			specs: []spec{
				{name: "port", port: 80},
				{name: "fake", dst: []string{"255.255.255.255/32"}, st: local},
				{name: "any"},
			},
			checks: []check{
				{conn("", "", "", "raw_buffer"), "fake"},
				{conn("1.1.1.1:80", "2.2.2.2:1", "", "raw_buffer"), "port"},
				{conn("1.1.1.1:81", "2.2.2.2:1", "", "raw_buffer"), "any"},
			},
		},
		{
			name:  "no chains with default",
			def:   true,
			specs: nil,
			checks: []check{
				{conn("1.1.1.1:80", "2.2.2.2:1", "", ""), "default"},
			},
		},
		{
			name:  "no chains without default",
			specs: nil,
			checks: []check{
				{conn("1.1.1.1:80", "2.2.2.2:1", "", ""), "none"},
			},
		},
		{
			name:  "match on everything",
			specs: []spec{{name: "all", port: 443, dst: []string{"10.0.0.0/8"}, names: []string{"*.a.com"}, tp: "tls", alpn: []string{"h2"}, direct: []string{"192.168.0.0/16"}, st: external, src: []string{"192.168.1.0/24"}, sports: []uint32{555}}},
			def:   true,
			checks: []check{
				{conn("10.0.0.1:443", "192.168.1.1:555", "x.a.com", "tls", "h2"), "all"},
				{conn("10.0.0.1:443", "192.168.1.1:556", "x.a.com", "tls", "h2"), "default"},
				{conn("10.0.0.1:443", "192.168.1.1:555", "x.a.com", "tls", "h3"), "default"},
				{conn("10.0.0.1:443", "192.168.1.1:555", "x.b.com", "tls", "h2"), "default"},
				{conn("10.0.0.1:443", "192.168.1.1:555", "x.a.com", "raw_buffer", "h2"), "default"},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var def *listenerv3.FilterChain
			if tt.def {
				def = &listenerv3.FilterChain{Name: "default"}
			}
			m, err := Compile(chains(t, tt.specs), def)
			if err != nil {
				t.Fatalf("Compile: %v", err)
			}
			for _, c := range tt.checks {
				got := m.Match(c.ci)
				var gotName string
				switch {
				case got == DefaultChain:
					gotName = "default"
				case got == NoMatch:
					gotName = "none"
				case got >= 0 && got < len(tt.specs):
					gotName = tt.specs[got].name
				default:
					t.Fatalf("Match returned out-of-range %d", got)
				}
				if gotName != c.want {
					t.Errorf("Match(dst=%v src=%v direct=%v sni=%q tp=%q alpn=%q) = %s, want %s",
						c.ci.DstAddr, c.ci.SrcAddr, c.ci.DirectSrcAddr, c.ci.ServerName, c.ci.TransportProtocol, c.ci.ALPN, gotName, c.want)
				}
			}
		})
	}
}

func TestMatchNilMatcher(t *testing.T) {
	var m *Matcher
	if got := m.Match(conn("1.1.1.1:80", "2.2.2.2:1", "", "")); got != NoMatch {
		t.Errorf("nil Matcher: got %d, want NoMatch", got)
	}
	if m.NeedsTLSInspection() {
		t.Error("nil Matcher needs TLS inspection")
	}
}

func benchMatcher(tb testing.TB) (*Matcher, []*ConnInfo) {
	var specs []spec
	for i := range 20 {
		specs = append(specs, spec{name: "sni" + string(rune('a'+i)), names: []string{string(rune('a'+i)) + ".example.com"}, tp: "tls"})
	}
	specs = append(specs,
		spec{name: "wild", names: []string{"*.example.com"}, tp: "tls", alpn: []string{"h2", "http/1.1"}},
		spec{name: "net", dst: []string{"10.0.0.0/8"}, src: []string{"192.168.0.0/16"}, st: external},
		spec{name: "v6", dst: []string{"2001:db8::/32"}},
		spec{name: "port", port: 8443, sports: []uint32{1, 2, 3}},
		spec{name: "any"},
	)
	m, err := Compile(chains(tb, specs), &listenerv3.FilterChain{})
	if err != nil {
		tb.Fatal(err)
	}
	cis := []*ConnInfo{
		conn("1.1.1.1:443", "2.2.2.2:1000", "c.example.com", "tls", "h2"),
		conn("1.1.1.1:443", "2.2.2.2:1000", "zz.example.com", "tls", "h2"),
		conn("10.1.1.1:443", "192.168.1.1:1000", "", "raw_buffer"),
		conn("[2001:db8::1]:443", "[2001:db8::2]:1000", "", "raw_buffer"),
		conn("1.1.1.1:8443", "2.2.2.2:2", "", "raw_buffer"),
	}
	return m, cis
}

func TestMatchZeroAllocs(t *testing.T) {
	m, cis := benchMatcher(t)
	allocs := testing.AllocsPerRun(100, func() {
		for _, ci := range cis {
			m.Match(ci)
		}
	})
	if allocs != 0 {
		t.Errorf("Match allocates %v times per run, want 0", allocs)
	}
}

func BenchmarkMatch(b *testing.B) {
	m, cis := benchMatcher(b)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		m.Match(cis[i%len(cis)])
		i++
	}
}

func TestMatchConcurrent(t *testing.T) {
	m, cis := benchMatcher(t)
	want := make([]int, len(cis))
	for i, ci := range cis {
		want[i] = m.Match(ci)
	}
	errs := make(chan string, 4)
	for g := range 4 {
		go func() {
			for n := range 1000 {
				i := (n + g) % len(cis)
				if got := m.Match(cis[i]); got != want[i] {
					errs <- fmt.Sprintf("goroutine %d: Match(cis[%d]) = %d, want %d", g, i, got, want[i])
					return
				}
			}
			errs <- ""
		}()
	}
	for range 4 {
		if e := <-errs; e != "" {
			t.Error(e)
		}
	}
}
