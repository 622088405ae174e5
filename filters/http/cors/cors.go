// Package cors is Envoy's CORS HTTP filter (envoy.filters.http.cors): it
// answers preflight requests itself and adds access-control-* headers to the
// responses of allowed origins, as the route's CorsPolicy says. The policy is
// merged field by field from typed_per_filter_config on the route, virtual
// host and route configuration (most specific first), or, when no level has
// one, from the deprecated cors field of the route action and virtual host.
package cors

import (
	"math/rand/v2"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	corsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/cors/v3"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/outrider-proxy/outrider/proxy/confcheck"
	"github.com/outrider-proxy/outrider/proxy/headers"
	"github.com/outrider-proxy/outrider/proxy/httpfilter"
	"github.com/outrider-proxy/outrider/proxy/router"
	"github.com/outrider-proxy/outrider/telemetry/stats"
)

// Name is the filter's Envoy name; typed_per_filter_config is looked up
// under it.
const Name = "envoy.filters.http.cors"

func init() {
	httpfilter.Registry.Register(Name, []string{"envoy.extensions.filters.http.cors.v3.Cors"},
		httpfilter.Factory{Create: create})
}

// config is the compiled filter, shared by every stream of the chain.
type config struct {
	originValid, originInvalid *stats.Counter

	// extPolicies and routePolicies cache the compiled per-route policies
	// by their config message: the filter's own CorsPolicy in
	// typed_per_filter_config, or the deprecated cors field of a route or
	// virtual host.
	extPolicies   httpfilter.PerRoute[*anypb.Any, *policy]
	routePolicies httpfilter.PerRoute[*routev3.CorsPolicy, *policy]
}

func create(ctx *httpfilter.Context, a *anypb.Any) (httpfilter.Config, error) {
	m := &corsv3.Cors{}
	if err := httpfilter.UnmarshalConfig(a, m); err != nil {
		return nil, err
	}
	if err := confcheck.Fields(m, ""); err != nil {
		return nil, err
	}
	store := ctx.StatsStore()
	return &config{
		originValid:   store.Counter(ctx.StatPrefix + "cors.origin_valid"),
		originInvalid: store.Counter(ctx.StatPrefix + "cors.origin_invalid"),
	}, nil
}

// offPolicy stands for a per-route policy that does not compile.
var offPolicy = &policy{off: true}

// anyPolicy is the compiled policy of a (the filter's own CorsPolicy in
// typed_per_filter_config), compiled once.
func (c *config) anyPolicy(a *anypb.Any) *policy { return c.extPolicies.Get(a, compileAny, offPolicy) }

// compileAny compiles the filter's own per-route CorsPolicy in a.
func compileAny(a *anypb.Any) (*policy, error) {
	m := &corsv3.CorsPolicy{}
	if err := a.UnmarshalTo(m); err != nil {
		return nil, err
	}
	return compileExt(m)
}

func (c *config) New(cb httpfilter.Callbacks) any { return &filter{cfg: c, cb: cb} }

// filter is one stream's CORS state.
type filter struct {
	cfg *config
	cb  httpfilter.Callbacks
	// pols are the route's policies, most specific first.
	pols []*policy
	buf  [3]*policy
	// isCORS: the filter is enabled (not shadow-only) and the request has an
	// Origin; latched is that origin when allowed ("" otherwise).
	isCORS  bool
	latched string
}

// Reset lets the connection manager reuse the filter.
func (f *filter) Reset() {
	f.pols, f.buf, f.isCORS, f.latched = nil, [3]*policy{}, false, ""
}

// policies is Envoy's CorsFilter::initializeCorsPolicies.
func (f *filter) policies(r *router.Route) {
	f.pols = f.buf[:0]
	for _, a := range r.PerFilterConfigs(Name) {
		f.pols = append(f.pols, f.cfg.anyPolicy(a))
	}
	if len(f.pols) > 0 {
		return
	}
	if rc := r.CorsPolicy(); rc != nil {
		f.pols = append(f.pols, f.cfg.routePolicies.Get(rc, compileRoute, offPolicy))
	}
	if vc := r.VirtualHost().CorsPolicy(); vc != nil {
		f.pols = append(f.pols, f.cfg.routePolicies.Get(vc, compileRoute, offPolicy))
	}
}

// DecodeHeaders is Envoy's CorsFilter::decodeHeaders: it answers a preflight
// (OPTIONS with Origin and Access-Control-Request-Method) itself.
func (f *filter) DecodeHeaders(h *headers.Map, _ bool) httpfilter.Status {
	r := f.cb.Route()
	if r == nil || r.Kind() == router.ActionRedirect || r.Kind() == router.ActionDirectResponse {
		return httpfilter.Continue // no route entry
	}
	f.policies(r)
	if len(f.pols) == 0 {
		return httpfilter.Continue
	}
	enabled, shadow := f.pols[0].enabled(rand.Uint64()), f.pols[0].shadow(rand.Uint64())
	if !enabled && !shadow {
		return httpfilter.Continue
	}
	origin, _ := h.Get("origin")
	if len(origin) == 0 {
		return httpfilter.Continue
	}
	allowed := f.originAllowed(origin)
	if allowed {
		f.cfg.originValid.Inc()
		f.latched = string(origin)
	} else {
		f.cfg.originInvalid.Inc()
	}
	if !enabled {
		return httpfilter.Continue // shadow only
	}
	f.isCORS = true
	if m, _ := h.Get(headers.Method); string(m) != "OPTIONS" {
		return httpfilter.Continue
	}
	reqMethod, _ := h.Get("access-control-request-method")
	if len(reqMethod) == 0 {
		return httpfilter.Continue
	}
	if !allowed && f.forwardNotMatching() {
		return httpfilter.Continue
	}
	resp := f.cb.ResponseHeaders()
	resp.SetInt(headers.Status, 200)
	if allowed {
		resp.Set("access-control-allow-origin", f.latched)
	}
	if f.flag(func(p *policy) optBool { return p.allowCredentials }) {
		resp.Set("access-control-allow-credentials", "true")
	}
	if m := f.str(func(p *policy) string { return p.allowMethods }); m == "*" {
		resp.SetBytes("access-control-allow-methods", reqMethod)
	} else if m != "" {
		resp.Set("access-control-allow-methods", m)
	}
	if ah := f.str(func(p *policy) string { return p.allowHeaders }); ah == "*" {
		v, _ := h.Get("access-control-request-headers")
		resp.SetBytes("access-control-allow-headers", v)
	} else if ah != "" {
		resp.Set("access-control-allow-headers", ah)
	}
	if ma := f.str(func(p *policy) string { return p.maxAge }); ma != "" {
		resp.Set("access-control-max-age", ma)
	}
	if f.flag(func(p *policy) optBool { return p.allowPrivateNetwork }) {
		if v, _ := h.Get("access-control-request-private-network"); string(v) == "true" {
			resp.Set("access-control-allow-private-network", "true")
		}
	}
	f.cb.Info().ResponseCodeDetails = "cors_response"
	f.cb.EncodeHeaders(resp, true)
	return httpfilter.Stop
}

// originAllowed is CorsFilter::isOriginAllowed: the most specific level
// with origin matchers decides; a matcher that matches "*" allows any.
func (f *filter) originAllowed(origin []byte) bool {
	for _, p := range f.pols {
		if len(p.origins) == 0 {
			continue
		}
		for _, m := range p.origins {
			if m.MatchString("*") || m.Match(origin) {
				return true
			}
		}
		return false
	}
	return false
}

// str is the most specific non-empty value of a string field.
func (f *filter) str(get func(*policy) string) string {
	for _, p := range f.pols {
		if v := get(p); v != "" {
			return v
		}
	}
	return ""
}

// flag is the most specific set value of a boolean field; false when unset
// everywhere.
func (f *filter) flag(get func(*policy) optBool) bool {
	for _, p := range f.pols {
		if v := get(p); v != unset {
			return v == isTrue
		}
	}
	return false
}

// forwardNotMatching is forward_not_matching_preflights, true by default.
func (f *filter) forwardNotMatching() bool {
	for _, p := range f.pols {
		if p.forwardNoMatch != unset {
			return p.forwardNoMatch == isTrue
		}
	}
	return true
}

func (f *filter) DecodeData([]byte, bool) httpfilter.Status     { return httpfilter.Continue }
func (f *filter) DecodeTrailers(*headers.Map) httpfilter.Status { return httpfilter.Continue }

// EncodeHeaders is CorsFilter::encodeHeaders: a CORS request from an allowed
// origin gets access-control-allow-origin (and credentials, expose-headers).
func (f *filter) EncodeHeaders(h *headers.Map, _ bool) httpfilter.Status {
	if !f.isCORS || f.latched == "" {
		return httpfilter.Continue
	}
	h.Set("access-control-allow-origin", f.latched)
	if f.flag(func(p *policy) optBool { return p.allowCredentials }) {
		h.Set("access-control-allow-credentials", "true")
	}
	if e := f.str(func(p *policy) string { return p.exposeHeaders }); e != "" {
		h.Set("access-control-expose-headers", e)
	}
	return httpfilter.Continue
}

func (f *filter) EncodeData([]byte, bool) httpfilter.Status     { return httpfilter.Continue }
func (f *filter) EncodeTrailers(*headers.Map) httpfilter.Status { return httpfilter.Continue }
