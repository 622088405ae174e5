package cors

import (
	"fmt"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	corsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/cors/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/outrider-proxy/outrider/proxy/confcheck"
	"github.com/outrider-proxy/outrider/proxy/matcher"
	"github.com/outrider-proxy/outrider/proxy/runtime"
)

// optBool is a BoolValue that may be unset: a level that leaves it unset
// lets a less specific level decide.
type optBool uint8

const (
	unset optBool = iota
	isFalse
	isTrue
)

func optOf(b *wrapperspb.BoolValue) optBool {
	switch {
	case b == nil:
		return unset
	case b.GetValue():
		return isTrue
	}
	return isFalse
}

// policy is one level's compiled CorsPolicy (Envoy's CorsPolicyImplBase).
// Empty strings, a nil origins list and unset booleans are "not set at this
// level".
type policy struct {
	origins                                               []*matcher.String
	allowMethods, allowHeaders, exposeHeaders, maxAge     string
	allowCredentials, allowPrivateNetwork, forwardNoMatch optBool
	// filterEnabled nil means enabled; shadowEnabled nil means off.
	filterEnabled, shadowEnabled *corev3.RuntimeFractionalPercent
	// off marks a per-route config that could not be compiled: the filter
	// does nothing for its routes (no CORS headers is the safe reading).
	off bool
}

// fields are the CorsPolicy fields outrider honours, all of them.
var fields = []string{
	"allow_origin_string_match", "allow_methods", "allow_headers", "expose_headers", "max_age",
	"allow_credentials", "filter_enabled", "shadow_enabled", "allow_private_network_access",
	"forward_not_matching_preflights",
}

// compileExt compiles the filter's own per-route CorsPolicy.
func compileExt(m *corsv3.CorsPolicy) (*policy, error) {
	if err := confcheck.Fields(m, "", fields...); err != nil {
		return nil, err
	}
	return compile(m.GetAllowOriginStringMatch(), m.GetAllowMethods(), m.GetAllowHeaders(), m.GetExposeHeaders(),
		m.GetMaxAge(), m.GetAllowCredentials(), m.GetAllowPrivateNetworkAccess(), m.GetForwardNotMatchingPreflights(),
		m.GetFilterEnabled(), m.GetShadowEnabled())
}

// compileRoute compiles the deprecated cors field of a virtual host or route
// action.
func compileRoute(m *routev3.CorsPolicy) (*policy, error) {
	if err := confcheck.Fields(m, "", fields...); err != nil {
		return nil, err
	}
	return compile(m.GetAllowOriginStringMatch(), m.GetAllowMethods(), m.GetAllowHeaders(), m.GetExposeHeaders(),
		m.GetMaxAge(), m.GetAllowCredentials(), m.GetAllowPrivateNetworkAccess(), m.GetForwardNotMatchingPreflights(),
		m.GetFilterEnabled(), m.GetShadowEnabled())
}

func compile(origins []*matcherv3.StringMatcher, methods, hdrs, expose, maxAge string,
	creds, pna, fwd *wrapperspb.BoolValue, enabled, shadow *corev3.RuntimeFractionalPercent) (*policy, error) {
	p := &policy{
		allowMethods: methods, allowHeaders: hdrs, exposeHeaders: expose, maxAge: maxAge,
		allowCredentials: optOf(creds), allowPrivateNetwork: optOf(pna), forwardNoMatch: optOf(fwd),
		filterEnabled: enabled, shadowEnabled: shadow,
	}
	for i, o := range origins {
		sm, err := matcher.CompileString(o)
		if err != nil {
			return nil, fmt.Errorf("allow_origin_string_match[%d].%w", i, err)
		}
		p.origins = append(p.origins, sm)
	}
	return p, nil
}

// enabled is Envoy's CorsPolicyImplBase::enabled: on unless filter_enabled
// says otherwise for this request.
func (p *policy) enabled(rnd uint64) bool {
	if p.off {
		return false
	}
	if p.filterEnabled == nil {
		return true
	}
	return runtime.Process().FeatureEnabled(p.filterEnabled.GetRuntimeKey(), p.filterEnabled.GetDefaultValue(), rnd)
}

// shadow is CorsPolicyImplBase::shadowEnabled: off unless shadow_enabled is
// set and on for this request.
func (p *policy) shadow(rnd uint64) bool {
	if p.off || p.shadowEnabled == nil {
		return false
	}
	return runtime.Process().FeatureEnabled(p.shadowEnabled.GetRuntimeKey(), p.shadowEnabled.GetDefaultValue(), rnd)
}
