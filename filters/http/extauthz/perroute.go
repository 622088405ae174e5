package extauthz

import (
	"context"
	"errors"
	"fmt"
	"time"

	extauthzv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/outrider-proxy/outrider/proxy/confcheck"
	"github.com/outrider-proxy/outrider/proxy/router"
	"github.com/outrider-proxy/outrider/telemetry/formatter"
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
	// client is check_settings.grpc_service or http_service; nil keeps the
	// filter's.
	client checker
}

// compilePerRoute compiles a; a service override on an unknown cluster
// falls back to the filter's service (gRPC) or fails each check (HTTP), as
// Envoy does.
func (c *config) compilePerRoute(a *anypb.Any) (*perRoute, error) {
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
			"with_request_body", "service_override"); err != nil {
			return nil, err
		}
		if gs := cs.GetGrpcService(); gs != nil {
			if n := gs.GetEnvoyGrpc().GetClusterName(); gs.GetEnvoyGrpc() == nil || c.clusters.Get(n) != nil {
				gc, err := newGRPCClient(c.clusters, gs)
				if err != nil {
					return nil, fmt.Errorf("check_settings.%w", err)
				}
				p.client = gc
			}
		}
		if hs := cs.GetHttpService(); hs != nil {
			if c.clusters.Get(hs.GetServerUri().GetCluster()) == nil {
				p.client = failingChecker{}
			} else {
				hc, err := newHTTPClient(c.clusters, hs)
				if err != nil {
					return nil, fmt.Errorf("check_settings.http_service.%w", err)
				}
				p.client = hc
			}
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
	return c.perRoute.Get(a, c.compilePerRoute, brokenPerRoute)
}

// brokenPerRoute stands for a per-route config that does not compile.
var brokenPerRoute = &perRoute{broken: true}

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

// failingChecker is a service that cannot be reached.
type failingChecker struct{}

func (failingChecker) check(context.Context, *authv3.CheckRequest, *formatter.Context) *response {
	return errorResponse
}

func (failingChecker) timeout() time.Duration { return 0 }
