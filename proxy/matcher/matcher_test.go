package matcher

import (
	"net/netip"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/outrider-proxy/outrider/proxy/headers"
)

func TestString(t *testing.T) {
	re := func(r string) *matcherv3.StringMatcher {
		return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: r}}}
	}
	tests := []struct {
		m    *matcherv3.StringMatcher
		v    string
		want bool
	}{
		{&matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: "abc"}}, "abc", true},
		{&matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: "abc"}}, "ABC", false},
		{&matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: "abc"}, IgnoreCase: true}, "ABC", true},
		{&matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: "spiffe://td/"}}, "spiffe://td/x", true},
		{&matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Suffix{Suffix: ".test"}}, "a.test", true},
		{&matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Contains{Contains: "Mid"}, IgnoreCase: true}, "amidb", true},
		{re("a.c"), "abc", true},
		{re("a.c"), "abcd", false}, // anchored
	}
	for _, tt := range tests {
		m, err := CompileString(tt.m)
		if err != nil {
			t.Fatal(err)
		}
		if got := m.MatchString(tt.v); got != tt.want {
			t.Errorf("%v on %q = %v", tt.m, tt.v, got)
		}
	}
	if _, err := CompileString(&matcherv3.StringMatcher{}); err == nil {
		t.Error("empty matcher compiled")
	}
	if _, err := CompileString(re("(")); err == nil {
		t.Error("bad regex compiled")
	}
}

func TestHeader(t *testing.T) {
	h := &headers.Map{}
	h.Add("x-a", "1")
	h.Add("x-a", "2")
	h.Add("x-n", "42")
	tests := []struct {
		m    *routev3.HeaderMatcher
		want bool
	}{
		{&routev3.HeaderMatcher{Name: "X-A"}, true},
		{&routev3.HeaderMatcher{Name: "x-b", HeaderMatchSpecifier: &routev3.HeaderMatcher_PresentMatch{PresentMatch: false}}, true},
		{&routev3.HeaderMatcher{Name: "x-a", HeaderMatchSpecifier: &routev3.HeaderMatcher_ExactMatch{ExactMatch: "1,2"}}, true},
		{&routev3.HeaderMatcher{Name: "x-a", HeaderMatchSpecifier: &routev3.HeaderMatcher_ExactMatch{ExactMatch: "1"}, InvertMatch: true}, true},
		{&routev3.HeaderMatcher{Name: "x-n", HeaderMatchSpecifier: &routev3.HeaderMatcher_RangeMatch{RangeMatch: &typev3.Int64Range{Start: 40, End: 43}}}, true},
		{&routev3.HeaderMatcher{Name: "x-n", HeaderMatchSpecifier: &routev3.HeaderMatcher_RangeMatch{RangeMatch: &typev3.Int64Range{Start: 40, End: 42}}}, false},
		{&routev3.HeaderMatcher{Name: "x-b", HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: ""}}}}, false},
		{&routev3.HeaderMatcher{Name: "x-b", TreatMissingHeaderAsEmpty: true, HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: ""}}}}, true},
	}
	for _, tt := range tests {
		m, err := CompileHeader(tt.m)
		if err != nil {
			t.Fatal(err)
		}
		if got := m.Match(h); got != tt.want {
			t.Errorf("%v = %v", tt.m, got)
		}
	}
	m, _ := CompileHeader(&routev3.HeaderMatcher{Name: "x-a"})
	if m.Match(nil) {
		t.Error("a nil map has a header")
	}
}

func TestCIDR(t *testing.T) {
	p, err := CompileCIDR(&corev3.CidrRange{AddressPrefix: "10.1.0.0", PrefixLen: wrapperspb.UInt32(16)})
	if err != nil {
		t.Fatal(err)
	}
	for addr, want := range map[string]bool{"10.1.2.3": true, "::ffff:10.1.2.3": true, "10.2.0.1": false} {
		if got := Contains(p, netip.MustParseAddr(addr)); got != want {
			t.Errorf("%s in %s = %v", addr, p, got)
		}
	}
	if Contains(p, netip.Addr{}) {
		t.Error("the zero address is contained")
	}
	if _, err := CompileCIDR(&corev3.CidrRange{AddressPrefix: "10.0.0.0", PrefixLen: wrapperspb.UInt32(33)}); err == nil {
		t.Error("prefix_len 33 accepted")
	}
}

func TestCompileErrors(t *testing.T) {
	sm := func(p *matcherv3.StringMatcher) *routev3.HeaderMatcher_StringMatch {
		return &routev3.HeaderMatcher_StringMatch{StringMatch: p}
	}
	re := func(r string) *matcherv3.StringMatcher_SafeRegex {
		return &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: r}}
	}
	tests := []struct {
		name string
		h    *routev3.HeaderMatcher
		want string
	}{
		{"nil", nil, "name: required"},
		{"no name", &routev3.HeaderMatcher{}, "name: required"},
		{"bad safe_regex_match", &routev3.HeaderMatcher{Name: "x", HeaderMatchSpecifier: &routev3.HeaderMatcher_SafeRegexMatch{SafeRegexMatch: &matcherv3.RegexMatcher{Regex: "("}}},
			"safe_regex_match.regex: error parsing regexp: missing closing ): `(`"},
		{"empty safe_regex_match", &routev3.HeaderMatcher{Name: "x", HeaderMatchSpecifier: &routev3.HeaderMatcher_SafeRegexMatch{}}, "safe_regex_match.regex: required"},
		{"bad string_match regex", &routev3.HeaderMatcher{Name: "x", HeaderMatchSpecifier: sm(&matcherv3.StringMatcher{MatchPattern: re("x**")})},
			"string_match.safe_regex.regex: error parsing regexp: invalid nested repetition operator: `**`"},
		{"empty string_match", &routev3.HeaderMatcher{Name: "x", HeaderMatchSpecifier: sm(&matcherv3.StringMatcher{})}, "string_match.match_pattern: required"},
	}
	for _, tt := range tests {
		_, err := CompileHeader(tt.h)
		if err == nil || err.Error() != tt.want && !strings.HasPrefix(err.Error(), tt.want) {
			t.Errorf("%s: err = %v, want %q", tt.name, err, tt.want)
		}
	}
	if _, err := CompileString(nil); err == nil || err.Error() != "match_pattern: required" {
		t.Errorf("CompileString(nil) = %v", err)
	}
}

func TestIgnoreCaseIsASCII(t *testing.T) {
	tests := []struct {
		pattern, v string
		kind       func(string) *matcherv3.StringMatcher
		want       bool
	}{
		{"Ab", "xaBy", contains, true},
		{"AB", "ab", exact, true},
		{"É", "É", exact, true},  // the pattern is not Unicode-folded
		{"É", "é", exact, false}, // nor is the value: Envoy folds ASCII only
		{"PRE", "prefix", prefix, true},
		{"FIX", "suffix", suffix, true},
		{"long", "lon", suffix, false},
	}
	for _, tt := range tests {
		m, err := CompileString(with(tt.kind(tt.pattern), true))
		if err != nil {
			t.Fatal(err)
		}
		if got := m.MatchString(tt.v); got != tt.want {
			t.Errorf("%q on %q = %v, want %v", tt.pattern, tt.v, got, tt.want)
		}
		if got := m.Match([]byte(tt.v)); got != tt.want {
			t.Errorf("Match: %q on %q = %v, want %v", tt.pattern, tt.v, got, tt.want)
		}
	}
}

func TestExact(t *testing.T) {
	m, _ := CompileString(with(exact("Example.COM"), true))
	if s, ok := m.Exact(); !ok || s != "example.com" {
		t.Errorf("Exact() = %q, %v", s, ok)
	}
	m, _ = CompileString(prefix("a"))
	if s, ok := m.Exact(); ok || s != "" {
		t.Errorf("prefix Exact() = %q, %v", s, ok)
	}
}

func TestNoAllocs(t *testing.T) {
	m, _ := CompileString(with(contains("needle"), true))
	h := &headers.Map{}
	h.Add("x-a", "haystack with a NEEDLE in it")
	hm, _ := CompileHeader(&routev3.HeaderMatcher{Name: "x-a", HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: contains("needle")}})
	v := strings.Repeat("x", 64) + "Needle"
	if n := testing.AllocsPerRun(100, func() {
		if !m.MatchString(v) || hm.Match(h) {
			t.Fatal("wrong result")
		}
	}); n != 0 {
		t.Errorf("%v allocs per match", n)
	}
}

func exact(s string) *matcherv3.StringMatcher {
	return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: s}}
}

func prefix(s string) *matcherv3.StringMatcher {
	return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: s}}
}

func suffix(s string) *matcherv3.StringMatcher {
	return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Suffix{Suffix: s}}
}

func contains(s string) *matcherv3.StringMatcher {
	return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Contains{Contains: s}}
}

func with(m *matcherv3.StringMatcher, ignoreCase bool) *matcherv3.StringMatcher {
	m.IgnoreCase = ignoreCase
	return m
}
