// Package router compiles an Envoy v3 RouteConfiguration into an immutable,
// lock-free Table that selects a virtual host and route for a request exactly
// as Envoy does. Configuration Envoy would reject, and behaviour-changing
// fields this package does not implement, make Compile fail naming the field.
package router

import (
	"fmt"
	"slices"
	"strings"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/outrider-proxy/outrider/proxy/headers"
	"github.com/outrider-proxy/outrider/telemetry/formatter"
)

// Options tune Compile. The zero Options validates nothing external.
type Options struct {
	// ClusterExists, when non-nil, is called for every statically named
	// cluster (route cluster, weighted_clusters entries); false makes Compile
	// fail like Envoy's validate_clusters ("route: unknown cluster 'x'"). It
	// is only consulted when rc.validate_clusters is unset or true. Envoy's
	// default is true for static (bootstrap) route configs and false for RDS:
	// callers compiling an RDS response should pass nil unless the config
	// sets validate_clusters explicitly.
	ClusterExists func(name string) bool
}

// Table is a compiled route configuration. It is immutable and safe for
// concurrent use.
type Table struct {
	Name string

	vhosts     []*VirtualHost
	exact      map[string]*VirtualHost
	suffixes   []wildcardSet // longest first
	prefixes   []wildcardSet // longest first
	def        *VirtualHost
	ignorePort bool
	hostHeader string // ":authority" unless vhost_header is set

	internalOnly     []string
	reqHeaders       *headerMutation // nil = none
	respHeaders      *headerMutation
	mostSpecificWins bool
	perFilter        map[string]*anypb.Any
}

// wildcardSet holds the wildcard domains whose fixed part has length n.
type wildcardSet struct {
	n int
	m map[string]*VirtualHost
}

// Compile validates and compiles rc. Errors name the offending element and
// field, e.g. "virtual_hosts[0].routes[2].match.safe_regex: ...".
func Compile(rc *routev3.RouteConfiguration, opts Options) (*Table, error) {
	if rc == nil {
		rc = &routev3.RouteConfiguration{}
	}
	if err := checkRouteConfigUnsupported(rc); err != nil {
		return nil, err
	}
	t := &Table{
		Name:             rc.GetName(),
		exact:            map[string]*VirtualHost{},
		ignorePort:       rc.GetIgnorePortInHostMatching(),
		hostHeader:       headers.Authority,
		mostSpecificWins: rc.GetMostSpecificHeaderMutationsWins(),
		perFilter:        rc.GetTypedPerFilterConfig(),
	}
	if h := rc.GetVhostHeader(); h != "" {
		t.hostHeader = strings.ToLower(h)
	}
	for i, h := range rc.GetInternalOnlyHeaders() {
		if h == "" {
			return nil, fmt.Errorf("internal_only_headers[%d]: empty header name", i)
		}
		t.internalOnly = append(t.internalOnly, strings.ToLower(h))
	}
	var err error
	if t.reqHeaders, err = compileMutation(rc.GetRequestHeadersToAdd(), rc.GetRequestHeadersToRemove(), "request_headers_to"); err != nil {
		return nil, err
	}
	if t.respHeaders, err = compileMutation(rc.GetResponseHeadersToAdd(), rc.GetResponseHeadersToRemove(), "response_headers_to"); err != nil {
		return nil, err
	}
	validate := opts.ClusterExists
	if v := rc.GetValidateClusters(); v != nil && !v.GetValue() {
		validate = nil
	}
	maxBody := uint32(4096)
	if v := rc.GetMaxDirectResponseBodySizeBytes(); v != nil {
		maxBody = v.GetValue()
	}
	cc := compileCtx{validate: validate, maxBody: maxBody}

	suffix := map[int]map[string]*VirtualHost{}
	prefix := map[int]map[string]*VirtualHost{}
	for i, vhc := range rc.GetVirtualHosts() {
		where := fmt.Sprintf("virtual_hosts[%d]", i)
		vh, err := compileVirtualHost(t, vhc, where, &cc)
		if err != nil {
			return nil, err
		}
		t.vhosts = append(t.vhosts, vh)
		if len(vhc.GetDomains()) == 0 {
			return nil, fmt.Errorf("%s (%q).domains: at least one domain is required", where, vhc.GetName())
		}
		for _, d := range vhc.GetDomains() {
			d = strings.ToLower(d)
			dup := false
			switch {
			case d == "*":
				if t.def != nil {
					return nil, fmt.Errorf("%s (%q).domains: only a single wildcard domain is permitted in route %s", where, vhc.GetName(), rc.GetName())
				}
				t.def = vh
			case strings.HasPrefix(d, "*"):
				dup = addWildcard(suffix, len(d)-1, d[1:], vh)
			case strings.HasSuffix(d, "*"):
				dup = addWildcard(prefix, len(d)-1, d[:len(d)-1], vh)
			default:
				if _, dup = t.exact[d]; !dup {
					t.exact[d] = vh
				}
			}
			if dup {
				return nil, fmt.Errorf("%s (%q).domains: only unique values for domains are permitted. Duplicate entry of domain %s in route %s", where, vhc.GetName(), d, rc.GetName())
			}
		}
	}
	t.suffixes = sortedSets(suffix)
	t.prefixes = sortedSets(prefix)
	return t, nil
}

func addWildcard(sets map[int]map[string]*VirtualHost, n int, key string, vh *VirtualHost) (dup bool) {
	m := sets[n]
	if m == nil {
		m = map[string]*VirtualHost{}
		sets[n] = m
	}
	if _, ok := m[key]; ok {
		return true
	}
	m[key] = vh
	return false
}

func sortedSets(sets map[int]map[string]*VirtualHost) []wildcardSet {
	out := make([]wildcardSet, 0, len(sets))
	for n, m := range sets {
		out = append(out, wildcardSet{n: n, m: m})
	}
	slices.SortFunc(out, func(a, b wildcardSet) int { return b.n - a.n })
	return out
}

// VirtualHosts lists the compiled virtual hosts in configuration order.
func (t *Table) VirtualHosts() []*VirtualHost { return t.vhosts }

// InternalOnlyHeaders are the lower-case names the connection manager must
// strip from requests it does not consider internal.
func (t *Table) InternalOnlyHeaders() []string { return t.internalOnly }

// StripInternalOnlyHeaders removes every internal-only header from req. The
// caller decides whether the request is external.
func (t *Table) StripInternalOnlyHeaders(req *headers.Map) {
	for _, h := range t.internalOnly {
		req.Del(h)
	}
}

// Select finds the virtual host for req's :authority (or vhost_header) and
// the first of its routes that matches. rnd is the stream's random value,
// used by runtime_fraction. A nil route means Envoy's 404 with flag NR; a nil
// virtual host means no domain matched.
//
// The host is matched as received, port included, and case-insensitively;
// the connection manager's strip_matching_host_port / strip_any_host_port
// must already have been applied. With ignore_port_in_host_matching the port
// is dropped before matching.
func (t *Table) Select(req *headers.Map, rnd uint64) (*Route, *VirtualHost) {
	vh := t.FindVirtualHost(req)
	if vh == nil {
		return nil, nil
	}
	return vh.selectRoute(req, rnd), vh
}

// FindVirtualHost is the virtual-host half of Select.
func (t *Table) FindVirtualHost(req *headers.Map) *VirtualHost {
	if len(t.exact) == 0 && len(t.suffixes) == 0 && len(t.prefixes) == 0 {
		return t.def
	}
	host, ok := req.Get(t.hostHeader)
	if !ok {
		return nil
	}
	if t.ignorePort {
		if i := portStart(host); i >= 0 {
			host = host[:i]
		}
	}
	var stack [128]byte
	var lower []byte
	if len(host) <= len(stack) {
		lower = stack[:len(host)]
	} else {
		lower = make([]byte, len(host))
	}
	for i, c := range host {
		if c >= 'A' && c <= 'Z' {
			c += 'a' - 'A'
		}
		lower[i] = c
	}
	if vh, ok := t.exact[string(lower)]; ok {
		return vh
	}
	for _, s := range t.suffixes {
		if s.n >= len(lower) {
			continue // the wildcard must match at least one character
		}
		if vh, ok := s.m[string(lower[len(lower)-s.n:])]; ok {
			return vh
		}
	}
	for _, s := range t.prefixes {
		if s.n >= len(lower) {
			continue
		}
		if vh, ok := s.m[string(lower[:s.n])]; ok {
			return vh
		}
	}
	return t.def
}

// portStart is Envoy's HeaderUtility::getPortStart: the index of the ':'
// before the port, or -1 (bracketed IPv6 literals are handled).
func portStart(host []byte) int {
	i := lastIndexByte(host, ':')
	if i < 0 {
		return -1
	}
	if j := lastIndexByte(host, ']'); j >= 0 && j > i {
		return -1
	}
	if host[0] == '[' && (i == 0 || host[i-1] != ']') {
		return -1
	}
	return i
}

func lastIndexByte(b []byte, c byte) int {
	for i := len(b) - 1; i >= 0; i-- {
		if b[i] == c {
			return i
		}
	}
	return -1
}

// ApplyResponseHeadersNoRoute applies the route-configuration-level response
// header mutations, for local replies that matched no route.
func (t *Table) ApplyResponseHeadersNoRoute(resp *headers.Map, ctx *formatter.Context) {
	t.respHeaders.apply(resp, ctx)
}
