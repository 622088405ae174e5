package router

import (
	"fmt"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/outrider-proxy/outrider/proxy/headers"
)

// VirtualHost is a compiled virtual host.
type VirtualHost struct {
	Name string

	table      *Table
	routes     []*Route
	requireTLS routev3.VirtualHost_TlsRequirementType
	// hedgeOnPerTryTimeout is hedge_policy.hedge_on_per_try_timeout.
	hedgeOnPerTryTimeout bool
	tlsRedirect          *Route // synthetic route answering require_tls
	reqHeaders           *headerMutation
	respHeaders          *headerMutation
	perFilter            map[string]*anypb.Any
	retryPolicy          *routev3.RetryPolicy // nil: none
	cors                 *routev3.CorsPolicy  // deprecated cors field; nil: none
}

// CorsPolicy is the virtual host's deprecated cors field, read by the CORS
// filter when no level has its typed_per_filter_config; nil when not set. Do
// not modify it.
func (vh *VirtualHost) CorsPolicy() *routev3.CorsPolicy { return vh.cors }

// Routes lists the compiled routes in match order.
func (vh *VirtualHost) Routes() []*Route { return vh.routes }

// Table is the table vh belongs to.
func (vh *VirtualHost) Table() *Table { return vh.table }

// compileCtx carries table-wide settings into route compilation.
type compileCtx struct {
	validate func(string) bool // nil = no cluster validation
	maxBody  uint32
}

func compileVirtualHost(t *Table, c *routev3.VirtualHost, where string, cc *compileCtx) (*VirtualHost, error) {
	where = fmt.Sprintf("%s (%q)", where, c.GetName())
	if err := checkVirtualHostUnsupported(c); err != nil {
		return nil, fmt.Errorf("%s.%w", where, err)
	}
	if err := checkRetryPolicy(c.GetRetryPolicy()); err != nil {
		return nil, fmt.Errorf("%s.%w", where, err)
	}
	vh := &VirtualHost{
		Name:        c.GetName(),
		table:       t,
		requireTLS:  c.GetRequireTls(),
		perFilter:   c.GetTypedPerFilterConfig(),
		retryPolicy: c.GetRetryPolicy(),
		cors:        c.GetCors(),

		hedgeOnPerTryTimeout: c.GetHedgePolicy().GetHedgeOnPerTryTimeout(),
	}
	var err error
	if vh.reqHeaders, err = compileMutation(c.GetRequestHeadersToAdd(), c.GetRequestHeadersToRemove(), "request_headers_to"); err != nil {
		return nil, fmt.Errorf("%s.%w", where, err)
	}
	if vh.respHeaders, err = compileMutation(c.GetResponseHeadersToAdd(), c.GetResponseHeadersToRemove(), "response_headers_to"); err != nil {
		return nil, fmt.Errorf("%s.%w", where, err)
	}
	if vh.requireTLS != routev3.VirtualHost_NONE {
		vh.tlsRedirect = &Route{vh: vh, kind: ActionRedirect, redirect: &redirect{sslRedirect: true, status: 301}}
	}
	for j, rc := range c.GetRoutes() {
		r, err := compileRoute(vh, rc, fmt.Sprintf("%s.routes[%d]", where, j), cc)
		if err != nil {
			return nil, err
		}
		vh.routes = append(vh.routes, r)
	}
	return vh, nil
}

// selectRoute applies require_tls, then returns the first matching route.
func (vh *VirtualHost) selectRoute(req *headers.Map, rnd uint64) *Route {
	if vh.tlsRedirect != nil && vh.needsTLSRedirect(req) {
		return vh.tlsRedirect
	}
	for _, r := range vh.routes {
		if r.match.matches(req, rnd) {
			return r
		}
	}
	return nil
}

// needsTLSRedirect follows Envoy: the request's forwarded protocol
// (x-forwarded-proto, else :scheme) must be https; EXTERNAL_ONLY exempts
// requests marked x-envoy-internal: true.
func (vh *VirtualHost) needsTLSRedirect(req *headers.Map) bool {
	proto, ok := req.Get("x-forwarded-proto")
	if !ok {
		proto, _ = req.Get(headers.Scheme)
	}
	if string(proto) == "https" {
		return false
	}
	if vh.requireTLS == routev3.VirtualHost_EXTERNAL_ONLY {
		if v, ok := req.Get("x-envoy-internal"); ok && string(v) == "true" {
			return false
		}
	}
	return true
}
