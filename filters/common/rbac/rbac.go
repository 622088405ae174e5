// Package rbac is Envoy's RBAC engine (envoy.config.rbac.v3.RBAC) shared by
// the HTTP and network RBAC filters: policies compile once into an immutable
// Engine whose Allowed reports the decision and the matched policy for one
// connection or request. Config that outrider cannot evaluate (metadata,
// CEL conditions, extension matchers) is refused with an error naming it.
package rbac

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"

	"github.com/outrider-proxy/outrider/proxy/confcheck"
	"github.com/outrider-proxy/outrider/proxy/headers"
	"github.com/outrider-proxy/outrider/proxy/matcher"
	"github.com/outrider-proxy/outrider/proxy/streaminfo"
	"github.com/outrider-proxy/outrider/telemetry/stats"
)

// Input is what the policies see. Conn is required; Headers is nil for the
// network filter (header and url_path rules then never match).
type Input struct {
	Conn    *streaminfo.Conn
	Headers *headers.Map
}

// Engine is a compiled RBAC: an action and policies sorted by name (Envoy
// keeps them in a std::map, so the first matching name is the effective one).
type Engine struct {
	action   rbacv3.RBAC_Action
	names    []string
	policies []*policy
}

type policy struct {
	permissions []matchFn
	principals  []matchFn
}

// matchFn is one compiled permission or principal.
type matchFn func(in *Input) bool

// Compile compiles r; a nil r yields a nil Engine (no enforcement).
func Compile(r *rbacv3.RBAC) (*Engine, error) {
	if r == nil {
		return nil, nil
	}
	if err := confcheck.Fields(r, "", "action", "policies"); err != nil {
		return nil, err
	}
	e := &Engine{action: r.GetAction()}
	if e.action > rbacv3.RBAC_LOG {
		return nil, fmt.Errorf("action: unknown value %d", e.action)
	}
	for name := range r.GetPolicies() {
		e.names = append(e.names, name)
	}
	slices.Sort(e.names)
	for _, name := range e.names {
		p := r.GetPolicies()[name]
		where := fmt.Sprintf("policies[%q]", name)
		if err := confcheck.Fields(p, where, "permissions", "principals"); err != nil {
			return nil, err
		}
		cp := &policy{}
		for i, perm := range p.GetPermissions() {
			m, err := compilePermission(perm)
			if err != nil {
				return nil, fmt.Errorf("%s.permissions[%d]: %w", where, i, err)
			}
			cp.permissions = append(cp.permissions, m)
		}
		for i, pr := range p.GetPrincipals() {
			m, err := compilePrincipal(pr)
			if err != nil {
				return nil, fmt.Errorf("%s.principals[%d]: %w", where, i, err)
			}
			cp.principals = append(cp.principals, m)
		}
		e.policies = append(e.policies, cp)
	}
	return e, nil
}

// Allowed evaluates the engine: with ALLOW a request is allowed when a
// policy matches, with DENY when none does, and LOG allows everything.
// policyID is the first matching policy's name ("" when none matched).
func (e *Engine) Allowed(in *Input) (allowed bool, policyID string) {
	for i, p := range e.policies {
		if anyOf(p.permissions, in) && anyOf(p.principals, in) {
			policyID = e.names[i]
			break
		}
	}
	switch e.action {
	case rbacv3.RBAC_ALLOW:
		return policyID != "", policyID
	case rbacv3.RBAC_DENY:
		return policyID == "", policyID
	}
	return true, policyID
}

func anyOf(ms []matchFn, in *Input) bool {
	for _, m := range ms {
		if m(in) {
			return true
		}
	}
	return false
}

func allOf(ms []matchFn, in *Input) bool {
	for _, m := range ms {
		if !m(in) {
			return false
		}
	}
	return true
}

// Stats are Envoy's RBAC counters: <prefix>rbac.<rules_stat_prefix>allowed
// and denied, <prefix>rbac.<shadow_rules_stat_prefix>shadow_allowed and
// shadow_denied.
type Stats struct {
	Allowed, Denied, ShadowAllowed, ShadowDenied *stats.Counter
}

// NewStats creates the counters the way Envoy's generateStats joins the
// prefixes (statPrefixJoin: a "." is added after a non-empty prefix that
// lacks one; the rules prefixes are prepended to the counter names as is).
func NewStats(store *stats.Store, prefix, rulesPrefix, shadowPrefix string) *Stats {
	base := statPrefixJoin(prefix, "rbac.")
	rules := statPrefixJoin(base, rulesPrefix)
	shadow := statPrefixJoin(base, shadowPrefix)
	return &Stats{
		Allowed:       store.Counter(rules + "allowed"),
		Denied:        store.Counter(rules + "denied"),
		ShadowAllowed: store.Counter(shadow + "shadow_allowed"),
		ShadowDenied:  store.Counter(shadow + "shadow_denied"),
	}
}

func statPrefixJoin(prefix, token string) string {
	switch {
	case prefix == "":
		return token
	case strings.HasSuffix(prefix, "."):
		return prefix + token
	}
	return prefix + "." + token
}

// ResponseDetail is Envoy's response code details for a denial:
// rbac_access_denied_matched_policy[<policy>] with white space replaced by
// '_', and "none" when no policy matched.
func ResponseDetail(policyID string) string {
	if policyID == "" {
		policyID = "none"
	}
	return "rbac_access_denied_matched_policy[" + strings.Map(func(r rune) rune {
		switch r {
		case ' ', '\t', '\f', '\v', '\n', '\r':
			return '_'
		}
		return r
	}, policyID) + "]"
}

var errUnsupported = errors.New("not supported by outrider yet")

// pathOf is the request path without query and fragment; ok=false when
// there is no :path.
func pathOf(h *headers.Map) ([]byte, bool) {
	if h == nil {
		return nil, false
	}
	p, ok := h.Get(headers.Path)
	if !ok {
		return nil, false
	}
	for i, c := range p {
		if c == '?' || c == '#' {
			return p[:i], true
		}
	}
	return p, true
}

// stringFn adapts a compiled string matcher to a path rule.
func pathRule(m *matcher.String) matchFn {
	return func(in *Input) bool {
		p, ok := pathOf(in.Headers)
		return ok && m.Match(p)
	}
}
