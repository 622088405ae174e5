package hcm

import (
	"encoding/binary"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/proto"

	"github.com/outrider-proxy/outrider/proxy/confcheck"
	"github.com/outrider-proxy/outrider/proxy/headers"
	"github.com/outrider-proxy/outrider/proxy/netfilter"
	"github.com/outrider-proxy/outrider/proxy/router"
	"github.com/outrider-proxy/outrider/proxy/upstream"
)

// keyBuilder is a compiled scope_key_builder: it computes a request's scope
// key from its headers, as Envoy's ScopeKeyBuilderImpl does.
type keyBuilder struct {
	frags []fragmentBuilder
}

// fragmentBuilder is one header_value_extractor.
type fragmentBuilder struct {
	header  string // lower-case; "host" reads :authority, as Envoy's header map does
	sep     string // element_separator; "" keeps the value whole
	element bool   // element (key=value) rather than index
	index   int
	kvSep   string // element.separator
	kvKey   string // element.key
}

func compileKeyBuilder(p *hcmv3.ScopedRoutes_ScopeKeyBuilder) (*keyBuilder, error) {
	kb := &keyBuilder{}
	for i, f := range p.GetFragments() {
		path := fmt.Sprintf("scope_key_builder.fragments[%d]", i)
		hv := f.GetHeaderValueExtractor()
		if hv == nil {
			return nil, fmt.Errorf("%s: header_value_extractor is not set", path)
		}
		fb := fragmentBuilder{header: strings.ToLower(hv.GetName()), sep: hv.GetElementSeparator()}
		if fb.header == "host" {
			fb.header = headers.Authority
		}
		switch t := hv.GetExtractType().(type) {
		case *hcmv3.ScopedRoutes_ScopeKeyBuilder_FragmentBuilder_HeaderValueExtractor_Index:
			if t.Index != 0 && fb.sep == "" {
				return nil, fmt.Errorf("%s.header_value_extractor: Index > 0 for empty string element separator", path)
			}
			fb.index = int(t.Index)
		case *hcmv3.ScopedRoutes_ScopeKeyBuilder_FragmentBuilder_HeaderValueExtractor_Element:
			fb.element = true
			fb.kvSep, fb.kvKey = t.Element.GetSeparator(), t.Element.GetKey()
		default:
			return nil, fmt.Errorf("%s.header_value_extractor: HeaderValueExtractor extract_type not set", path)
		}
		kb.frags = append(kb.frags, fb)
	}
	return kb, nil
}

// appendKey appends the request's scope key to dst; false when a fragment
// has no value (the request then has no scope).
func (kb *keyBuilder) appendKey(dst []byte, h *headers.Map) ([]byte, bool) {
	for i := range kb.frags {
		v, ok := kb.frags[i].value(h)
		if !ok {
			return dst, false
		}
		dst = appendFragment(dst, v)
	}
	return dst, true
}

// value extracts the fragment from the first value of its header.
func (f *fragmentBuilder) value(h *headers.Map) ([]byte, bool) {
	v, ok := h.Get(f.header)
	if !ok {
		return nil, false
	}
	if !f.element {
		if f.sep == "" {
			return v, true // index is 0 here
		}
		for i := 0; ; i++ {
			j := indexOf(v, f.sep)
			if i == f.index {
				if j < 0 {
					return v, true
				}
				return v[:j], true
			}
			if j < 0 {
				return nil, false
			}
			v = v[j+len(f.sep):]
		}
	}
	for {
		el, rest, more := v, []byte(nil), false
		if f.sep != "" {
			if j := indexOf(v, f.sep); j >= 0 {
				el, rest, more = v[:j], v[j+len(f.sep):], true
			}
		}
		k, val := el, []byte{}
		if j := indexOf(el, f.kvSep); j >= 0 {
			k, val = el[:j], el[j+len(f.kvSep):]
		}
		if string(k) == f.kvKey {
			return val, true
		}
		if !more {
			return nil, false
		}
		v = rest
	}
}

func indexOf(b []byte, sep string) int {
	if sep == "" {
		return -1
	}
	return strings.Index(string(b), sep) // no allocation: the conversion is only read
}

// appendFragment encodes one fragment length-prefixed, so keys of several
// fragments compare fragment by fragment.
func appendFragment(dst, frag []byte) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(frag)))
	return append(dst, frag...)
}

// configKey is the encoded key of a ScopedRouteConfiguration.
func configKey(sc *routev3.ScopedRouteConfiguration) (string, error) {
	var k []byte
	for i, f := range sc.GetKey().GetFragments() {
		s, ok := f.GetType().(*routev3.ScopedRouteConfiguration_Key_Fragment_StringKey)
		if !ok {
			return "", fmt.Errorf("key.fragments[%d]: string_key is not set", i)
		}
		k = appendFragment(k, []byte(s.StringKey))
	}
	return string(k), nil
}

// scope is one routing scope: its key and the route table it selects.
type scope struct {
	cfg    *routev3.ScopedRouteConfiguration
	key    string
	table  atomic.Pointer[router.Table] // nil until its route configuration arrives, or on_demand
	cancel func()                       // stops its RDS watch; nil for inline or on_demand
}

// scopeTable is an immutable set of scopes by key, swapped on each update.
type scopeTable struct {
	kb    *keyBuilder
	byKey map[string]*scope
}

// tableFor is the route table of the request's scope; nil when the key
// cannot be built, no scope has it or its routes have not arrived (404 NR).
func (t *scopeTable) tableFor(h *headers.Map) *router.Table {
	var buf [128]byte
	k, ok := t.kb.appendKey(buf[:0], h)
	if !ok {
		return nil
	}
	sc := t.byKey[string(k)]
	if sc == nil {
		return nil
	}
	return sc.table.Load()
}

// scopedRoutes is a connection manager's scoped_routes: the scopes in
// force and how their route configurations are fetched.
type scopedRoutes struct {
	name     string
	kb       *keyBuilder
	current  atomic.Pointer[scopeTable]
	routes   netfilter.RouteSource // nil without dynamic configuration
	clusters *upstream.Manager

	mu     sync.Mutex
	byName map[string]*scope
	cancel func() // stops the SRDS watch
	closed bool
}

// compileScoped compiles scoped_routes: the key builder now, the scopes
// inline or through SRDS.
func compileScoped(ctx *netfilter.Context, statPrefix string, p *hcmv3.ScopedRoutes) (*scopedRoutes, error) {
	if err := confcheck.Fields(p, "scoped_routes", "name", "scope_key_builder", "rds_config_source",
		"scoped_route_configurations_list", "scoped_rds"); err != nil {
		return nil, err
	}
	if err := p.ValidateAll(); err != nil {
		return nil, fmt.Errorf("scoped_routes: %w", err)
	}
	kb, err := compileKeyBuilder(p.GetScopeKeyBuilder())
	if err != nil {
		return nil, fmt.Errorf("scoped_routes: %w", err)
	}
	s := &scopedRoutes{name: p.GetName(), kb: kb, clusters: ctx.Clusters, byName: map[string]*scope{}}
	s.current.Store(&scopeTable{kb: kb, byKey: map[string]*scope{}})
	w := &netfilter.ScopedRoutesWatch{Name: p.GetName(), StatPrefix: statPrefix, RDS: p.GetRdsConfigSource(), Apply: s.apply}
	var inline []*routev3.ScopedRouteConfiguration
	switch {
	case p.GetScopedRds() != nil:
		if p.GetScopedRds().GetSrdsResourcesLocator() != "" {
			return nil, fmt.Errorf("scoped_routes.scoped_rds.srds_resources_locator: xdstp resource locators are not supported by outrider yet")
		}
		w.SRDS = p.GetScopedRds().GetScopedRdsConfigSource()
	default:
		inline = p.GetScopedRouteConfigurationsList().GetScopedRouteConfigurations()
	}
	needsRDS := w.SRDS != nil
	for _, sc := range inline {
		needsRDS = needsRDS || (sc.GetRouteConfiguration() == nil && !sc.GetOnDemand())
	}
	if needsRDS {
		if ctx.Scoped == nil {
			return nil, fmt.Errorf("scoped_routes %q: scoped RDS needs dynamic_resources (xDS), which this bootstrap does not have", p.GetName())
		}
		routes, cancel, err := ctx.Scoped.WatchScopedRoutes(w)
		if err != nil {
			return nil, fmt.Errorf("scoped_routes %q: %w", p.GetName(), err)
		}
		s.routes, s.cancel = routes, cancel
	}
	if w.SRDS == nil {
		if err := s.apply(inline, nil); err != nil {
			s.close()
			return nil, fmt.Errorf("scoped_routes.scoped_route_configurations_list: %w", err)
		}
	}
	return s, nil
}

// apply adds, replaces and removes scopes as Envoy's scoped RDS does: the
// whole update is refused on an invalid scope, a duplicate name or two
// scopes with one key.
func (s *scopedRoutes) apply(changed []*routev3.ScopedRouteConfiguration, removed []string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	next := make(map[string]*scope, len(s.byName)+len(changed))
	for n, sc := range s.byName {
		next[n] = sc
	}
	for _, n := range removed {
		delete(next, n)
	}
	var added []*scope
	seen := map[string]bool{}
	for _, c := range changed {
		name := c.GetName()
		if seen[name] {
			return fmt.Errorf("duplicate scoped route configuration '%s' found", name)
		}
		seen[name] = true
		if old := next[name]; old != nil && proto.Equal(old.cfg, c) {
			continue
		}
		sc, err := s.newScope(c)
		if err != nil {
			return fmt.Errorf("scoped route configuration %q: %w", name, err)
		}
		if old := next[name]; old != nil && old.cfg.GetRouteConfigurationName() == c.GetRouteConfigurationName() && sc.table.Load() == nil {
			sc.table.Store(old.table.Load()) // keep serving until the watch delivers again
		}
		next[name] = sc
		added = append(added, sc)
	}
	byKey := make(map[string]*scope, len(next))
	for _, n := range sortedNames(next) {
		sc := next[n]
		if first := byKey[sc.key]; first != nil {
			return fmt.Errorf("scope key conflict found, first scope is '%s', second scope is '%s'", first.cfg.GetName(), n)
		}
		byKey[sc.key] = sc
	}
	for _, sc := range added {
		s.watch(sc)
	}
	for n, sc := range s.byName {
		if next[n] != sc && sc.cancel != nil {
			sc.cancel()
		}
	}
	s.byName = next
	s.current.Store(&scopeTable{kb: s.kb, byKey: byKey})
	return nil
}

// newScope validates c and compiles its inline route configuration.
func (s *scopedRoutes) newScope(c *routev3.ScopedRouteConfiguration) (*scope, error) {
	key, err := configKey(c)
	if err != nil {
		return nil, err
	}
	sc := &scope{cfg: c, key: key}
	switch {
	case c.GetRouteConfiguration() != nil:
		t, err := router.Compile(c.GetRouteConfiguration(), s.routerOptions(c.GetRouteConfiguration()))
		if err != nil {
			return nil, fmt.Errorf("route_configuration: %w", err)
		}
		sc.table.Store(t)
	case c.GetRouteConfigurationName() == "":
		return nil, fmt.Errorf("needs route_configuration_name or route_configuration")
	case s.routes == nil && !c.GetOnDemand():
		return nil, fmt.Errorf("route_configuration_name %q needs dynamic_resources (xDS)", c.GetRouteConfigurationName())
	}
	return sc, nil
}

// watch subscribes a scope to its route configuration, unless inline or
// on_demand (fetched only by the on_demand filter, which outrider does not
// have: its requests get 404 NR, as in Envoy without that filter).
func (s *scopedRoutes) watch(sc *scope) {
	name := sc.cfg.GetRouteConfigurationName()
	if sc.cfg.GetRouteConfiguration() != nil || sc.cfg.GetOnDemand() || name == "" {
		return
	}
	sc.cancel = s.routes.WatchRoutes(name, func(rc *routev3.RouteConfiguration) error {
		t, err := router.Compile(rc, s.routerOptions(rc))
		if err != nil {
			return fmt.Errorf("route configuration %q: %w", name, err)
		}
		sc.table.Store(t)
		return nil
	})
}

func (s *scopedRoutes) routerOptions(rc *routev3.RouteConfiguration) router.Options {
	var opts router.Options
	if rc.GetValidateClusters().GetValue() && s.clusters != nil {
		opts.ClusterExists = func(n string) bool { return s.clusters.Get(n) != nil }
	}
	return opts
}

// close stops the SRDS and RDS watches.
func (s *scopedRoutes) close() {
	s.mu.Lock()
	s.closed = true
	scopes := s.byName
	s.byName = nil
	cancel := s.cancel
	s.mu.Unlock()
	if cancel != nil {
		cancel()
	}
	for _, sc := range scopes {
		if sc.cancel != nil {
			sc.cancel()
		}
	}
}

func sortedNames(m map[string]*scope) []string { return slices.Sorted(maps.Keys(m)) }
