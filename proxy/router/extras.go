package router

import (
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
)

// routeExtras are the route's rarely set fields that other filters read as
// configuration messages. A compiled route keeps only these sub-messages,
// not the decoded Route and RouteAction (~1 KB a route at 10,000 routes).
type routeExtras struct {
	tracing           *routev3.Tracing
	decorator         *routev3.Decorator
	retryPolicy       *routev3.RetryPolicy
	hedgePolicy       *routev3.HedgePolicy
	upgrades          []*routev3.RouteAction_UpgradeConfig
	mirrors           []*routev3.RouteAction_RequestMirrorPolicy
	maxStreamDuration *routev3.RouteAction_MaxStreamDuration
	priority          corev3.RoutingPriority
	hashPolicies      []HashPolicy // compiled hash_policy
	cors              *routev3.CorsPolicy
}

// extras returns r.ext, allocating it on first use.
func (r *Route) extras() *routeExtras {
	if r.ext == nil {
		r.ext = new(routeExtras)
	}
	return r.ext
}

// keepActionExtras records the route action's fields read through the
// accessors below; a route action setting none of them allocates nothing.
func (r *Route) keepActionExtras(a *routev3.RouteAction) {
	if a.GetRetryPolicy() == nil && a.GetHedgePolicy() == nil && len(a.GetUpgradeConfigs()) == 0 &&
		len(a.GetRequestMirrorPolicies()) == 0 && a.GetMaxStreamDuration() == nil && a.GetPriority() == corev3.RoutingPriority_DEFAULT &&
		a.GetCors() == nil {
		return
	}
	e := r.extras()
	e.cors = a.GetCors()
	e.retryPolicy, e.hedgePolicy = a.GetRetryPolicy(), a.GetHedgePolicy()
	e.upgrades, e.mirrors = a.GetUpgradeConfigs(), a.GetRequestMirrorPolicies()
	e.maxStreamDuration, e.priority = a.GetMaxStreamDuration(), a.GetPriority()
}

func (e *routeExtras) getRetryPolicy() *routev3.RetryPolicy {
	if e == nil {
		return nil
	}
	return e.retryPolicy
}

// CorsPolicy is the route action's deprecated cors field, read by the CORS
// filter when no level has its typed_per_filter_config; nil when not set. Do
// not modify it.
func (r *Route) CorsPolicy() *routev3.CorsPolicy {
	if r.ext == nil {
		return nil
	}
	return r.ext.cors
}

// Tracing is the route's tracing settings; nil when not configured. Do not
// modify it.
func (r *Route) Tracing() *routev3.Tracing {
	if r.ext == nil {
		return nil
	}
	return r.ext.tracing
}

// Decorator is the route's decorator; nil when not configured. Do not
// modify it.
func (r *Route) Decorator() *routev3.Decorator {
	if r.ext == nil {
		return nil
	}
	return r.ext.decorator
}

// UpgradeConfigs is the route action's upgrade_configs; nil when none (or
// the route is not ActionCluster). Do not modify them.
func (r *Route) UpgradeConfigs() []*routev3.RouteAction_UpgradeConfig {
	if r.ext == nil {
		return nil
	}
	return r.ext.upgrades
}

// RequestMirrorPolicies is the route action's request_mirror_policies; nil
// when none. Do not modify them.
func (r *Route) RequestMirrorPolicies() []*routev3.RouteAction_RequestMirrorPolicy {
	if r.ext == nil {
		return nil
	}
	return r.ext.mirrors
}

// MaxStreamDuration is the route action's max_stream_duration; nil when not
// configured. Do not modify it.
func (r *Route) MaxStreamDuration() *routev3.RouteAction_MaxStreamDuration {
	if r.ext == nil {
		return nil
	}
	return r.ext.maxStreamDuration
}

// Priority is the route action's priority (DEFAULT unless configured).
func (r *Route) Priority() corev3.RoutingPriority {
	if r.ext == nil {
		return corev3.RoutingPriority_DEFAULT
	}
	return r.ext.priority
}
