// Package rbac is Envoy's RBAC HTTP filter (envoy.filters.http.rbac): it
// evaluates shadow rules (stats only) and then the enforced rules on the
// request headers and the connection's identity, answering a denied request
// with 403 "RBAC: access denied". typed_per_filter_config (RBACPerRoute)
// replaces the rules for a route, or disables them when it has none.
package rbac

import (
	"fmt"

	cfgrbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	"google.golang.org/protobuf/types/known/anypb"

	common "github.com/outrider-proxy/outrider/filters/common/rbac"
	"github.com/outrider-proxy/outrider/proxy/confcheck"
	"github.com/outrider-proxy/outrider/proxy/headers"
	"github.com/outrider-proxy/outrider/proxy/httpfilter"
)

// Name is the filter's Envoy name; typed_per_filter_config is looked up
// under it.
const Name = "envoy.filters.http.rbac"

func init() {
	httpfilter.Registry.Register(Name, []string{"envoy.extensions.filters.http.rbac.v3.RBAC"},
		httpfilter.Factory{Create: create})
}

// engines is the enforced and shadow engine pair; a nil engine does not
// apply.
type engines struct {
	enforced, shadow *common.Engine
}

// config is the compiled filter, shared by every stream of the chain.
type config struct {
	engines
	stats *common.Stats
	// perRoute caches the compiled RBACPerRoute by the route's Any.
	perRoute httpfilter.PerRoute[*anypb.Any, *engines]
}

func compileRBAC(m *rbacv3.RBAC) (engines, error) {
	if err := confcheck.Fields(m, "", "rules", "shadow_rules", "rules_stat_prefix", "shadow_rules_stat_prefix"); err != nil {
		return engines{}, err
	}
	var e engines
	var err error
	if e.enforced, err = common.Compile(m.GetRules()); err != nil {
		return engines{}, fmt.Errorf("rules: %w", err)
	}
	if e.shadow, err = common.Compile(m.GetShadowRules()); err != nil {
		return engines{}, fmt.Errorf("shadow_rules: %w", err)
	}
	return e, nil
}

func create(ctx *httpfilter.Context, a *anypb.Any) (httpfilter.Config, error) {
	m := &rbacv3.RBAC{}
	if err := httpfilter.UnmarshalConfig(a, m); err != nil {
		return nil, err
	}
	e, err := compileRBAC(m)
	if err != nil {
		return nil, err
	}
	store := ctx.StatsStore()
	return &config{
		engines: e,
		stats:   common.NewStats(store, ctx.StatPrefix, m.GetRulesStatPrefix(), m.GetShadowRulesStatPrefix()),
	}, nil
}

// routeEngines is the per-route override for a, compiled once. An invalid
// per-route config (the route table was accepted without knowing this
// filter) denies: failing closed is the safe reading of a broken policy.
func (c *config) routeEngines(a *anypb.Any) *engines {
	return c.perRoute.Get(a, compilePerRoute, denyingEngines)
}

// compilePerRoute compiles an RBACPerRoute; one without rbac disables the
// filter's rules on its route.
func compilePerRoute(a *anypb.Any) (*engines, error) {
	pr := &rbacv3.RBACPerRoute{}
	if err := a.UnmarshalTo(pr); err != nil {
		return nil, err
	}
	e := &engines{}
	if pr.GetRbac() != nil {
		ce, err := compileRBAC(pr.GetRbac())
		if err != nil {
			return nil, err
		}
		*e = ce
	}
	return e, nil
}

// denyingEngines are the engines of a per-route config that does not
// compile.
var denyingEngines = &engines{enforced: denyAll}

// denyAll is an ALLOW engine without policies.
var denyAll = func() *common.Engine {
	e, err := common.Compile(&cfgrbacv3.RBAC{})
	if err != nil {
		panic(err)
	}
	return e
}()

func (c *config) New(cb httpfilter.Callbacks) any { return &filter{cfg: c, cb: cb} }

type filter struct {
	cfg *config
	cb  httpfilter.Callbacks
}

// Reset lets the connection manager reuse the filter.
func (f *filter) Reset() {}

// DecodeHeaders is Envoy's RoleBasedAccessControlFilter::decodeHeaders.
func (f *filter) DecodeHeaders(h *headers.Map, _ bool) httpfilter.Status {
	e := &f.cfg.engines
	if r := f.cb.Route(); r != nil {
		if a := r.PerFilterConfig(Name); a != nil {
			e = f.cfg.routeEngines(a)
		}
	}
	in := &common.Input{Conn: f.cb.Info().Conn, Headers: h}
	if e.shadow != nil {
		if ok, _ := e.shadow.Allowed(in); ok {
			f.cfg.stats.ShadowAllowed.Inc()
		} else {
			f.cfg.stats.ShadowDenied.Inc()
		}
	}
	if e.enforced == nil {
		return httpfilter.Continue
	}
	ok, policy := e.enforced.Allowed(in)
	if ok {
		f.cfg.stats.Allowed.Inc()
		return httpfilter.Continue
	}
	f.cfg.stats.Denied.Inc()
	f.cb.SendLocalReply(403, "RBAC: access denied", common.ResponseDetail(policy), 0)
	return httpfilter.Stop
}

func (f *filter) DecodeData([]byte, bool) httpfilter.Status     { return httpfilter.Continue }
func (f *filter) DecodeTrailers(*headers.Map) httpfilter.Status { return httpfilter.Continue }
