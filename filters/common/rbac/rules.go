package rbac

import (
	"fmt"
	"net/netip"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"

	"github.com/outrider-proxy/outrider/proxy/matcher"
)

func compilePermission(p *rbacv3.Permission) (matchFn, error) {
	switch r := p.GetRule().(type) {
	case *rbacv3.Permission_Any:
		if !r.Any {
			return nil, fmt.Errorf("any: must be true")
		}
		return func(*Input) bool { return true }, nil
	case *rbacv3.Permission_AndRules:
		ms, err := compilePermissions(r.AndRules.GetRules(), "and_rules")
		if err != nil {
			return nil, err
		}
		return func(in *Input) bool { return allOf(ms, in) }, nil
	case *rbacv3.Permission_OrRules:
		ms, err := compilePermissions(r.OrRules.GetRules(), "or_rules")
		if err != nil {
			return nil, err
		}
		return func(in *Input) bool { return anyOf(ms, in) }, nil
	case *rbacv3.Permission_NotRule:
		m, err := compilePermission(r.NotRule)
		if err != nil {
			return nil, fmt.Errorf("not_rule: %w", err)
		}
		return func(in *Input) bool { return !m(in) }, nil
	case *rbacv3.Permission_Header:
		h, err := matcher.CompileHeader(r.Header)
		if err != nil {
			return nil, fmt.Errorf("header: %w", err)
		}
		return func(in *Input) bool { return h.Match(in.Headers) }, nil
	case *rbacv3.Permission_UrlPath:
		return compilePath(r.UrlPath)
	case *rbacv3.Permission_DestinationIp:
		pfx, err := matcher.CompileCIDR(r.DestinationIp)
		if err != nil {
			return nil, fmt.Errorf("destination_ip: %w", err)
		}
		return func(in *Input) bool { return matcher.Contains(pfx, in.Conn.LocalAddr.Addr()) }, nil
	case *rbacv3.Permission_DestinationPort:
		port := r.DestinationPort
		return func(in *Input) bool { return uint32(in.Conn.LocalAddr.Port()) == port }, nil
	case *rbacv3.Permission_DestinationPortRange:
		start, end := r.DestinationPortRange.GetStart(), r.DestinationPortRange.GetEnd()
		return func(in *Input) bool {
			p := int32(in.Conn.LocalAddr.Port())
			return p >= start && p < end
		}, nil
	case *rbacv3.Permission_RequestedServerName:
		m, err := matcher.CompileString(r.RequestedServerName)
		if err != nil {
			return nil, fmt.Errorf("requested_server_name: %w", err)
		}
		return func(in *Input) bool { return m.MatchString(in.Conn.RequestedServerName) }, nil
	case nil:
		return nil, fmt.Errorf("rule: required")
	case *rbacv3.Permission_Metadata:
		return nil, fmt.Errorf("metadata: %w", errUnsupported)
	case *rbacv3.Permission_Matcher:
		return nil, fmt.Errorf("matcher: %w", errUnsupported)
	case *rbacv3.Permission_UriTemplate:
		return nil, fmt.Errorf("uri_template: %w", errUnsupported)
	default:
		return nil, fmt.Errorf("rule %T: %w", r, errUnsupported)
	}
}

func compilePermissions(ps []*rbacv3.Permission, field string) ([]matchFn, error) {
	var ms []matchFn
	for i, p := range ps {
		m, err := compilePermission(p)
		if err != nil {
			return nil, fmt.Errorf("%s.rules[%d]: %w", field, i, err)
		}
		ms = append(ms, m)
	}
	return ms, nil
}

func compilePrincipal(p *rbacv3.Principal) (matchFn, error) {
	switch id := p.GetIdentifier().(type) {
	case *rbacv3.Principal_Any:
		if !id.Any {
			return nil, fmt.Errorf("any: must be true")
		}
		return func(*Input) bool { return true }, nil
	case *rbacv3.Principal_AndIds:
		ms, err := compilePrincipals(id.AndIds.GetIds(), "and_ids")
		if err != nil {
			return nil, err
		}
		return func(in *Input) bool { return allOf(ms, in) }, nil
	case *rbacv3.Principal_OrIds:
		ms, err := compilePrincipals(id.OrIds.GetIds(), "or_ids")
		if err != nil {
			return nil, err
		}
		return func(in *Input) bool { return anyOf(ms, in) }, nil
	case *rbacv3.Principal_NotId:
		m, err := compilePrincipal(id.NotId)
		if err != nil {
			return nil, fmt.Errorf("not_id: %w", err)
		}
		return func(in *Input) bool { return !m(in) }, nil
	case *rbacv3.Principal_Authenticated_:
		return compileAuthenticated(id.Authenticated)
	case *rbacv3.Principal_SourceIp:
		return compileIP(id.SourceIp, "source_ip", func(in *Input) netip.AddrPort { return in.Conn.RemoteAddr })
	case *rbacv3.Principal_DirectRemoteIp:
		return compileIP(id.DirectRemoteIp, "direct_remote_ip", func(in *Input) netip.AddrPort { return in.Conn.DirectRemoteAddr })
	case *rbacv3.Principal_RemoteIp:
		return compileIP(id.RemoteIp, "remote_ip", func(in *Input) netip.AddrPort { return in.Conn.RemoteAddr })
	case *rbacv3.Principal_Header:
		h, err := matcher.CompileHeader(id.Header)
		if err != nil {
			return nil, fmt.Errorf("header: %w", err)
		}
		return func(in *Input) bool { return h.Match(in.Headers) }, nil
	case *rbacv3.Principal_UrlPath:
		return compilePath(id.UrlPath)
	case nil:
		return nil, fmt.Errorf("identifier: required")
	case *rbacv3.Principal_Metadata:
		return nil, fmt.Errorf("metadata: %w", errUnsupported)
	case *rbacv3.Principal_FilterState:
		return nil, fmt.Errorf("filter_state: %w", errUnsupported)
	case *rbacv3.Principal_Custom:
		return nil, fmt.Errorf("custom: %w", errUnsupported)
	default:
		return nil, fmt.Errorf("identifier %T: %w", id, errUnsupported)
	}
}

func compilePrincipals(ps []*rbacv3.Principal, field string) ([]matchFn, error) {
	var ms []matchFn
	for i, p := range ps {
		m, err := compilePrincipal(p)
		if err != nil {
			return nil, fmt.Errorf("%s.ids[%d]: %w", field, i, err)
		}
		ms = append(ms, m)
	}
	return ms, nil
}

// compileAuthenticated is Envoy's AuthenticatedMatcher: the connection must
// be TLS; without principal_name that is enough, otherwise the name is
// matched against each URI SAN, then each DNS SAN, then the subject of the
// peer certificate.
func compileAuthenticated(a *rbacv3.Principal_Authenticated) (matchFn, error) {
	if a.GetPrincipalName() == nil {
		return func(in *Input) bool { return in.Conn.TLS != nil }, nil
	}
	m, err := matcher.CompileString(a.GetPrincipalName())
	if err != nil {
		return nil, fmt.Errorf("authenticated.principal_name: %w", err)
	}
	return func(in *Input) bool {
		t := in.Conn.TLS
		if t == nil {
			return false
		}
		for _, s := range t.PeerURISANs {
			if m.MatchString(s) {
				return true
			}
		}
		for _, s := range t.PeerDNSSANs {
			if m.MatchString(s) {
				return true
			}
		}
		return m.MatchString(t.PeerSubject)
	}, nil
}

func compileIP(r *corev3.CidrRange, field string, addr func(*Input) netip.AddrPort) (matchFn, error) {
	pfx, err := matcher.CompileCIDR(r)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", field, err)
	}
	return func(in *Input) bool { return matcher.Contains(pfx, addr(in).Addr()) }, nil
}

func compilePath(p *matcherv3.PathMatcher) (matchFn, error) {
	m, err := matcher.CompileString(p.GetPath())
	if err != nil {
		return nil, fmt.Errorf("url_path.path: %w", err)
	}
	return pathRule(m), nil
}
