package matcher

import (
	"net/netip"
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
