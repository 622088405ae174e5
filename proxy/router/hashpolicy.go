package router

import (
	"errors"
	"fmt"
	"strings"
	"time"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
)

// HashKind says what a hash policy hashes.
type HashKind uint8

// The hash policy kinds of RouteAction.HashPolicy.
const (
	HashHeader HashKind = iota + 1
	HashCookie
	HashSourceIP
	HashQueryParameter
	HashFilterState
)

// HashPolicy is one compiled route hash_policy entry. The router filter
// evaluates the entries in order, combining the hashes they give, and
// stops after a Terminal entry once any hash exists (Envoy's
// HashPolicyImpl::generateHash).
type HashPolicy struct {
	Kind HashKind
	// Name is the lower-cased header name, the cookie name, the query
	// parameter name or the filter-state key.
	Name     string
	Terminal bool
	// Cookie only: GenerateCookie when ttl is set (a missing cookie is then
	// generated and set on the response), with CookieTTL (zero: a session
	// cookie) and CookiePath (empty: none).
	GenerateCookie bool
	CookieTTL      time.Duration
	CookiePath     string

	rewrite *regexRewrite // header regex_rewrite; nil: none
}

// Rewrite applies the header policy's regex_rewrite to v (v unchanged when
// there is none).
func (p *HashPolicy) Rewrite(v []byte) []byte {
	if p.rewrite == nil {
		return v
	}
	return p.rewrite.replaceAll(v)
}

// HashPolicies is the route's compiled hash_policy (nil when none).
func (r *Route) HashPolicies() []HashPolicy {
	if r.ext == nil {
		return nil
	}
	return r.ext.hashPolicies
}

func compileHashPolicies(ps []*routev3.RouteAction_HashPolicy) ([]HashPolicy, error) {
	var out []HashPolicy
	for i, p := range ps {
		hp, err := compileHashPolicy(p)
		if err != nil {
			return nil, fmt.Errorf("route.hash_policy[%d].%w", i, err)
		}
		if hp.Kind == 0 {
			continue // connection_properties with source_ip false hashes nothing
		}
		out = append(out, hp)
	}
	return out, nil
}

func compileHashPolicy(p *routev3.RouteAction_HashPolicy) (HashPolicy, error) {
	hp := HashPolicy{Terminal: p.GetTerminal()}
	switch s := p.GetPolicySpecifier().(type) {
	case *routev3.RouteAction_HashPolicy_Header_:
		if s.Header.GetHeaderName() == "" {
			return hp, errors.New("header.header_name: must not be empty")
		}
		hp.Kind, hp.Name = HashHeader, strings.ToLower(s.Header.GetHeaderName())
		if rr := s.Header.GetRegexRewrite(); rr != nil {
			var err error
			if hp.rewrite, err = newRegexRewrite(rr.GetPattern().GetRegex(), rr.GetSubstitution()); err != nil {
				return hp, fmt.Errorf("header.regex_rewrite: %w", err)
			}
		}
	case *routev3.RouteAction_HashPolicy_Cookie_:
		c := s.Cookie
		if c.GetName() == "" {
			return hp, errors.New("cookie.name: must not be empty")
		}
		if len(c.GetAttributes()) > 0 {
			return hp, errors.New("cookie.attributes: not supported")
		}
		hp.Kind, hp.Name, hp.CookiePath = HashCookie, c.GetName(), c.GetPath()
		if c.GetTtl() != nil {
			hp.GenerateCookie, hp.CookieTTL = true, c.GetTtl().AsDuration()
		}
	case *routev3.RouteAction_HashPolicy_ConnectionProperties_:
		if s.ConnectionProperties.GetSourceIp() {
			hp.Kind = HashSourceIP
		}
	case *routev3.RouteAction_HashPolicy_QueryParameter_:
		if s.QueryParameter.GetName() == "" {
			return hp, errors.New("query_parameter.name: must not be empty")
		}
		hp.Kind, hp.Name = HashQueryParameter, s.QueryParameter.GetName()
	case *routev3.RouteAction_HashPolicy_FilterState_:
		if s.FilterState.GetKey() == "" {
			return hp, errors.New("filter_state.key: must not be empty")
		}
		hp.Kind, hp.Name = HashFilterState, s.FilterState.GetKey()
	default:
		return hp, errors.New("policy_specifier: must be set")
	}
	return hp, nil
}
