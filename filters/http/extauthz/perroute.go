package extauthz

import (
	"errors"
	"fmt"

	extauthzv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/outrider-proxy/outrider/proxy/confcheck"
	"github.com/outrider-proxy/outrider/proxy/router"
)

// perRoute is one compiled ExtAuthzPerRoute.
type perRoute struct {
	// broken: the config could not be compiled (the route table was accepted
	// without knowing this filter); the check fails closed.
	broken   bool
	disabled bool
	// contextExtensions are check_settings.context_extensions (nil: none).
	contextExtensions map[string]string
	disableBuffering  bool
	// body is check_settings.with_request_body; nil keeps the filter's.
	body *bufferSettings
}

func compilePerRoute(a *anypb.Any) (*perRoute, error) {
	m := &extauthzv3.ExtAuthzPerRoute{}
	if err := a.UnmarshalTo(m); err != nil {
		return nil, fmt.Errorf("typed_per_filter_config: %w", err)
	}
	if err := confcheck.Fields(m, "", "override"); err != nil {
		return nil, err
	}
	p := &perRoute{disabled: m.GetDisabled()}
	if cs := m.GetCheckSettings(); cs != nil {
		if err := confcheck.Fields(cs, "check_settings", "context_extensions", "disable_request_body_buffering",
			"with_request_body"); err != nil {
			return nil, err
		}
		if cs.GetDisableRequestBodyBuffering() && cs.GetWithRequestBody() != nil {
			return nil, errors.New("check_settings: only one of disable_request_body_buffering or with_request_body can be set")
		}
		p.contextExtensions = cs.GetContextExtensions()
		p.disableBuffering = cs.GetDisableRequestBodyBuffering()
		if cs.GetWithRequestBody() != nil {
			b, err := compileBuffer(cs.GetWithRequestBody(), "check_settings.with_request_body")
			if err != nil {
				return nil, err
			}
			p.body = &b
		}
	}
	return p, nil
}

// routeConfig is the per-route config of a, compiled once.
func (c *config) routeConfig(a *anypb.Any) *perRoute {
	if p, ok := c.perRoute.Load(a); ok {
		return p.(*perRoute)
	}
	p, err := compilePerRoute(a)
	if err != nil {
		p = &perRoute{broken: true}
	}
	if c.cached.Add(1) > maxPerRoute {
		c.perRoute.Clear()
		c.cached.Store(1)
	}
	c.perRoute.Store(a, p)
	return p
}

// routeSettings is what the route's typed_per_filter_config says: the most
// specific level decides disabled and the check settings (Envoy's
// getPerRouteFlags), context extensions are merged over every level, the
// more specific winning. nil when no level has one.
func (c *config) routeSettings(r *router.Route) (specific *perRoute, ext map[string]string) {
	anys := r.PerFilterConfigs(Name)
	if len(anys) == 0 {
		return nil, nil
	}
	specific = c.routeConfig(anys[0])
	for i := len(anys) - 1; i >= 0; i-- {
		p := c.routeConfig(anys[i])
		if p.broken {
			return p, nil
		}
		for k, v := range p.contextExtensions {
			if ext == nil {
				ext = make(map[string]string, len(p.contextExtensions))
			}
			ext[k] = v
		}
	}
	return specific, ext
}
