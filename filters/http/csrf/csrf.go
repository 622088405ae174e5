// Package csrf is Envoy's CSRF HTTP filter (envoy.filters.http.csrf): a
// mutating request (POST, PUT, DELETE, PATCH) whose Origin (else Referer)
// names another host than its own, or none, is answered 403 "Invalid
// origin", unless the origin matches additional_origins; shadow_enabled only
// counts. The policy is the most specific typed_per_filter_config (route,
// virtual host, route configuration), else the filter's own; stats are
// <stat_prefix>csrf.{missing_source_origin,request_invalid,request_valid}.
package csrf

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net/url"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	csrfv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/csrf/v3"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/outrider-proxy/outrider/proxy/confcheck"
	"github.com/outrider-proxy/outrider/proxy/headers"
	"github.com/outrider-proxy/outrider/proxy/httpfilter"
	"github.com/outrider-proxy/outrider/proxy/matcher"
	"github.com/outrider-proxy/outrider/proxy/runtime"
	"github.com/outrider-proxy/outrider/telemetry/stats"
)

// Name is the filter's Envoy name; typed_per_filter_config is looked up
// under it.
const Name = "envoy.filters.http.csrf"

func init() {
	httpfilter.Registry.Register(Name, []string{"envoy.extensions.filters.http.csrf.v3.CsrfPolicy"},
		httpfilter.Factory{Create: create})
}

// policy is a compiled CsrfPolicy.
type policy struct {
	// enabled is filter_enabled (required); shadow nil means off.
	enabled, shadow *corev3.RuntimeFractionalPercent
	origins         []*matcher.String
}

func compilePolicy(m *csrfv3.CsrfPolicy) (*policy, error) {
	if err := confcheck.Fields(m, "", "filter_enabled", "shadow_enabled", "additional_origins"); err != nil {
		return nil, err
	}
	if m.GetFilterEnabled() == nil {
		return nil, errors.New("filter_enabled: required")
	}
	p := &policy{enabled: m.GetFilterEnabled(), shadow: m.GetShadowEnabled()}
	for i, o := range m.GetAdditionalOrigins() {
		sm, err := matcher.CompileString(o)
		if err != nil {
			return nil, fmt.Errorf("additional_origins[%d].%w", i, err)
		}
		p.origins = append(p.origins, sm)
	}
	return p, nil
}

// on is CsrfPolicy::enabled.
func (p *policy) on() bool {
	return runtime.Process().FeatureEnabled(p.enabled.GetRuntimeKey(), p.enabled.GetDefaultValue(), rand.Uint64())
}

// shadowOn is CsrfPolicy::shadowEnabled: off unless shadow_enabled is set.
func (p *policy) shadowOn() bool {
	if p.shadow == nil {
		return false
	}
	return runtime.Process().FeatureEnabled(p.shadow.GetRuntimeKey(), p.shadow.GetDefaultValue(), rand.Uint64())
}

// config is the compiled filter, shared by every stream of the chain.
type config struct {
	policy                                      *policy
	missingOrigin, requestInvalid, requestValid *stats.Counter

	// routes caches compiled per-route policies by their Any.
	routes httpfilter.PerRoute[*anypb.Any, *policy]
}

func create(ctx *httpfilter.Context, a *anypb.Any) (httpfilter.Config, error) {
	m := &csrfv3.CsrfPolicy{}
	if err := httpfilter.UnmarshalConfig(a, m); err != nil {
		return nil, err
	}
	p, err := compilePolicy(m)
	if err != nil {
		return nil, err
	}
	store := ctx.StatsStore()
	prefix := ctx.StatPrefix + "csrf."
	return &config{
		policy:         p,
		missingOrigin:  store.Counter(prefix + "missing_source_origin"),
		requestInvalid: store.Counter(prefix + "request_invalid"),
		requestValid:   store.Counter(prefix + "request_valid"),
	}, nil
}

// routePolicy compiles a per-route CsrfPolicy once; one that does not
// compile leaves the filter's own policy in force.
func (c *config) routePolicy(a *anypb.Any) *policy {
	return c.routes.Get(a, compileAny, c.policy)
}

// compileAny compiles the CsrfPolicy in a.
func compileAny(a *anypb.Any) (*policy, error) {
	m := &csrfv3.CsrfPolicy{}
	if err := a.UnmarshalTo(m); err != nil {
		return nil, err
	}
	return compilePolicy(m)
}

func (c *config) New(cb httpfilter.Callbacks) any { return &filter{cfg: c, cb: cb} }

// filter is one stream's CSRF check; it keeps no state between streams.
type filter struct {
	cfg *config
	cb  httpfilter.Callbacks
}

// Reset lets the connection manager reuse the filter.
func (f *filter) Reset() {}

// DecodeHeaders is CsrfFilter::decodeHeaders.
func (f *filter) DecodeHeaders(h *headers.Map, _ bool) httpfilter.Status {
	p := f.cfg.policy
	if r := f.cb.Route(); r != nil {
		if a := r.PerFilterConfig(Name); a != nil {
			p = f.cfg.routePolicy(a)
		}
	}
	enabled := p.on()
	if !enabled && !p.shadowOn() {
		return httpfilter.Continue
	}
	if !modifyMethod(h) {
		return httpfilter.Continue
	}
	valid := true
	source := sourceOrigin(h)
	if source == "" {
		valid = false
		f.cfg.missingOrigin.Inc()
	}
	if !p.allowed(source, h) {
		valid = false
		f.cfg.requestInvalid.Inc()
	}
	if valid {
		f.cfg.requestValid.Inc()
		return httpfilter.Continue
	}
	if !enabled { // shadow mode only counts
		return httpfilter.Continue
	}
	f.cb.SendLocalReply(403, "Invalid origin", "csrf_origin_mismatch", 0)
	return httpfilter.Stop
}

func (f *filter) DecodeData([]byte, bool) httpfilter.Status     { return httpfilter.Continue }
func (f *filter) DecodeTrailers(*headers.Map) httpfilter.Status { return httpfilter.Continue }

// allowed is CsrfFilter::isValid: the source is the request's own origin or
// matches an additional origin.
func (p *policy) allowed(source string, h *headers.Map) bool {
	if source == targetOrigin(h) {
		return true
	}
	for _, m := range p.origins {
		if m.MatchString(source) {
			return true
		}
	}
	return false
}

// modifyMethod is isModifyMethod: POST, PUT, DELETE or PATCH, exactly.
func modifyMethod(h *headers.Map) bool {
	switch m, _ := h.Get(":method"); string(m) {
	case "POST", "PUT", "DELETE", "PATCH":
		return true
	}
	return false
}

// sourceOrigin is the host and port of Origin, else of Referer.
func sourceOrigin(h *headers.Map) string {
	o, _ := h.Get("origin")
	if s := hostAndPort(string(o)); s != "" {
		return s
	}
	r, _ := h.Get("referer")
	return hostAndPort(string(r))
}

// targetOrigin is the host and port of the request's own authority ("" with
// none), read as a URL with the request's scheme (http without one).
func targetOrigin(h *headers.Map) string {
	host, _ := h.Get(":authority")
	if len(host) == 0 {
		return ""
	}
	scheme, _ := h.Get(":scheme")
	if len(scheme) == 0 {
		scheme = []byte("http")
	}
	return hostAndPort(string(scheme) + "://" + string(host))
}

// hostAndPort is the authority of an absolute URL (without user info), or
// the value itself when it is not one ("null" stays "null").
func hostAndPort(v string) string {
	if v == "" {
		return ""
	}
	u, err := url.Parse(v)
	if err != nil || u.Scheme == "" || u.Host == "" {
		return v
	}
	return u.Host
}
