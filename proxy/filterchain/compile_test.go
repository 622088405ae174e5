package filterchain

import (
	"strings"
	"testing"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
)

func TestCompileErrors(t *testing.T) {
	tests := []struct {
		name   string
		chains func(t *testing.T) []*listenerv3.FilterChain
		want   []string // substrings of the error
	}{
		{
			name: "identical matching rules",
			chains: func(t *testing.T) []*listenerv3.FilterChain {
				return chains(t, []spec{{name: "a", names: []string{"x.com"}}, {name: "b"}, {name: "c", names: []string{"x.com"}}})
			},
			want: []string{`filter_chains[2] "c" has the same matching rules defined as filter_chains[0] "a"`},
		},
		{
			name: "unset and empty filter_chain_match are identical",
			chains: func(t *testing.T) []*listenerv3.FilterChain {
				return []*listenerv3.FilterChain{{}, {FilterChainMatch: &listenerv3.FilterChainMatch{}}}
			},
			want: []string{"filter_chains[1] has the same matching rules defined as filter_chains[0]"},
		},
		{
			name: "overlapping rules",
			chains: func(t *testing.T) []*listenerv3.FilterChain {
				return chains(t, []spec{{name: "a", names: []string{"x.com", "y.com"}}, {name: "b", names: []string{"y.com"}}})
			},
			want: []string{`filter_chains[1] "b"`, "multiple filter chains with overlapping matching rules are defined", `filter_chains[0] "a"`},
		},
		{
			name: "overlap through an equal masked CIDR",
			chains: func(t *testing.T) []*listenerv3.FilterChain {
				return chains(t, []spec{{name: "a", dst: []string{"10.0.0.0/8"}}, {name: "b", dst: []string{"10.1.2.3/8"}}})
			},
			want: []string{"overlapping matching rules"},
		},
		{
			name: "malformed CIDR",
			chains: func(t *testing.T) []*listenerv3.FilterChain {
				return chains(t, []spec{{name: "a", src: []string{"10.0.0/8"}}})
			},
			want: []string{`filter_chains[0] "a"`, "source_prefix_ranges[0]: malformed IP address: 10.0.0"},
		},
		{
			name: "hostname as CIDR",
			chains: func(t *testing.T) []*listenerv3.FilterChain {
				return chains(t, []spec{{dst: []string{"localhost/32"}}})
			},
			want: []string{"prefix_ranges[0]: malformed IP address: localhost"},
		},
		{
			name: "partial wildcard",
			chains: func(t *testing.T) []*listenerv3.FilterChain {
				return chains(t, []spec{{names: []string{"a.com", "foo*.com"}}})
			},
			want: []string{`server_names[1] "foo*.com": partial wildcards are not supported in "server_names"`},
		},
		{
			name: "bare star",
			chains: func(t *testing.T) []*listenerv3.FilterChain {
				return chains(t, []spec{{names: []string{"*"}}})
			},
			want: []string{"partial wildcards"},
		},
		{
			name: "address_suffix",
			chains: func(t *testing.T) []*listenerv3.FilterChain {
				return []*listenerv3.FilterChain{{Name: "s", FilterChainMatch: &listenerv3.FilterChainMatch{AddressSuffix: "::1"}}}
			},
			want: []string{`filter_chains[0] "s": contains unimplemented fields`},
		},
		{
			name: "destination port out of range",
			chains: func(t *testing.T) []*listenerv3.FilterChain {
				return chains(t, []spec{{port: 70000}})
			},
			want: []string{"destination_port: 70000"},
		},
		{
			name: "nil chain",
			chains: func(t *testing.T) []*listenerv3.FilterChain {
				return []*listenerv3.FilterChain{nil}
			},
			want: []string{"filter_chains[0]: filter chain is null"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := Compile(tt.chains(t), nil)
			if err == nil {
				t.Fatalf("Compile succeeded (%v), want error", m)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

func TestCompileDistinctRulesOK(t *testing.T) {
	// Same server name but different transport protocols, and an explicit
	// /0 next to the catch-all, are not overlaps.
	specs := []spec{
		{name: "a", names: []string{"x.com"}, tp: "tls"},
		{name: "b", names: []string{"x.com"}, tp: "raw_buffer"},
		{name: "c", dst: []string{"0.0.0.0/0"}},
		{name: "d"},
	}
	m, err := Compile(chains(t, specs), nil)
	if err != nil {
		t.Fatal(err)
	}
	// The explicit 0.0.0.0/0 wins over the catch-all for IPv4 ...
	if got := m.Match(conn("1.1.1.1:80", "2.2.2.2:1", "", "")); got != 2 {
		t.Errorf("IPv4: got %d, want 2", got)
	}
	// ... and IPv6 only has the catch-all.
	if got := m.Match(conn("[2001:db8::1]:80", "[2001:db8::2]:1", "", "")); got != 3 {
		t.Errorf("IPv6: got %d, want 3", got)
	}
}

func TestNeedsTLSInspection(t *testing.T) {
	tests := []struct {
		name  string
		specs []spec
		want  bool
	}{
		{"no chains", nil, false},
		{"plain", []spec{{port: 80}, {src: []string{"10.0.0.0/8"}}}, false},
		{"transport tls", []spec{{tp: "tls"}}, true},
		{"server names", []spec{{}, {names: []string{"a.com"}}}, true},
		{"alpn", []spec{{alpn: []string{"h2"}}}, true},
		{"server names on raw_buffer", []spec{{tp: "raw_buffer", names: []string{"a.com"}}}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := Compile(chains(t, tt.specs), nil)
			if err != nil {
				t.Fatal(err)
			}
			if got := m.NeedsTLSInspection(); got != tt.want {
				t.Errorf("NeedsTLSInspection() = %v, want %v", got, tt.want)
			}
		})
	}
}
