package cors

import (
	"testing"

	corsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/cors/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/outrider-proxy/outrider/proxy/httpfilter"
)

func regex(r string) *matcherv3.StringMatcher {
	return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: r}}}
}

func TestPolicies(t *testing.T) {
	c, err := create(&httpfilter.Context{StatPrefix: "http.x."}, nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg := c.(*config)
	if n := cfg.originValid.Name(); n != "http.x.cors.origin_valid" {
		t.Errorf("stat %q", n)
	}
	// A matcher that matches "*" allows every origin (the envoyproxy CORS
	// example's `safe_regex: \*`); the most specific level with matchers
	// decides alone.
	star, _ := anypb.New(&corsv3.CorsPolicy{AllowOriginStringMatch: []*matcherv3.StringMatcher{regex(`\*`)}})
	narrow, _ := anypb.New(&corsv3.CorsPolicy{AllowOriginStringMatch: []*matcherv3.StringMatcher{regex(`https://a\.test`)},
		AllowCredentials: wrapperspb.Bool(false)})
	empty, _ := anypb.New(&corsv3.CorsPolicy{})
	bad, _ := anypb.New(&corsv3.CorsPolicy{AllowOriginStringMatch: []*matcherv3.StringMatcher{regex(`(`)}})
	wrongType, _ := anypb.New(&corsv3.Cors{})
	tests := []struct {
		name    string
		levels  []*anypb.Any
		origin  string
		allowed bool
		enabled bool
	}{
		{"star", []*anypb.Any{star}, "https://anything", true, true},
		{"narrow wins over star", []*anypb.Any{narrow, star}, "https://b.test", false, true},
		{"narrow matches", []*anypb.Any{narrow, star}, "https://a.test", true, true},
		{"empty level defers", []*anypb.Any{empty, star}, "https://b.test", true, true},
		{"no matchers anywhere", []*anypb.Any{empty}, "https://b.test", false, true},
		{"bad regex disables", []*anypb.Any{bad, star}, "https://b.test", true, false},
		{"wrong type disables", []*anypb.Any{wrongType}, "https://b.test", false, false},
	}
	for _, tc := range tests {
		f := &filter{cfg: cfg}
		for _, a := range tc.levels {
			f.pols = append(f.pols, cfg.anyPolicy(a))
		}
		if got := f.originAllowed([]byte(tc.origin)); got != tc.allowed {
			t.Errorf("%s: allowed %v", tc.name, got)
		}
		if got := f.pols[0].enabled(0); got != tc.enabled {
			t.Errorf("%s: enabled %v", tc.name, got)
		}
	}
	// Unset booleans defer to less specific levels; set ones decide.
	creds, _ := anypb.New(&corsv3.CorsPolicy{AllowCredentials: wrapperspb.Bool(true)})
	f := &filter{cfg: cfg, pols: []*policy{cfg.anyPolicy(empty), cfg.anyPolicy(creds)}}
	if !f.flag(func(p *policy) optBool { return p.allowCredentials }) || !f.forwardNotMatching() {
		t.Errorf("credentials from the less specific level, forwarding by default")
	}
	f.pols = []*policy{cfg.anyPolicy(narrow), cfg.anyPolicy(creds)}
	if f.flag(func(p *policy) optBool { return p.allowCredentials }) {
		t.Errorf("most specific allow_credentials false ignored")
	}
}
