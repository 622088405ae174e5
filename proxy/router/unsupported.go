package router

import (
	"errors"
	"fmt"
	"strings"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"

	"github.com/outrider-proxy/outrider/proxy/matcher"
)

// The checks below reject behaviour-changing fields this package does not
// implement, so a config is never half-applied. Observability-only fields
// (metadata, decorator, tracing, virtual_clusters, stat_prefix, priority,
// per_request_buffer_limit_bytes, request_body_buffer_limit) are accepted
// and ignored, or exposed through Proto/Action for the filters that use them.

func checkRouteConfigUnsupported(rc *routev3.RouteConfiguration) error {
	switch {
	case rc.GetVhds() != nil:
		return errors.New("vhds: not supported")
	case len(rc.GetClusterSpecifierPlugins()) > 0:
		return errors.New("cluster_specifier_plugins: not supported")
	case len(rc.GetRequestMirrorPolicies()) > 0:
		return errors.New("request_mirror_policies: not supported")
	case rc.GetIgnorePathParametersInPathMatching():
		return errors.New("ignore_path_parameters_in_path_matching: not supported")
	case len(rc.GetRouteSpecifiers()) > 0:
		return errors.New("route_specifiers: not supported")
	}
	return nil
}

func checkVirtualHostUnsupported(c *routev3.VirtualHost) error {
	switch {
	case c.GetMatcher() != nil:
		return errors.New("matcher: not supported")
	case len(c.GetRateLimits()) > 0:
		return errors.New("rate_limits: not supported")
	case checkCors(c.GetCors()) != nil:
		return checkCors(c.GetCors())
	case c.GetRetryPolicyTypedConfig() != nil:
		return errors.New("retry_policy_typed_config: not supported")
	case checkHedgePolicy(c.GetHedgePolicy()) != nil:
		return checkHedgePolicy(c.GetHedgePolicy())
	case len(c.GetRequestMirrorPolicies()) > 0:
		return errors.New("request_mirror_policies: not supported")
	case len(c.GetRouteSpecifiers()) > 0:
		return errors.New("route_specifiers: not supported")
	}
	return nil
}

func checkRouteUnsupported(c *routev3.Route) error {
	if len(c.GetRouteSpecifiers()) > 0 {
		return errors.New("route_specifiers: not supported")
	}
	return nil
}

func checkRouteActionUnsupported(a *routev3.RouteAction) error {
	switch {
	case a.GetMetadataMatch() != nil:
		return errors.New("metadata_match: not supported")
	case a.GetPathRewritePolicy() != nil:
		return errors.New("path_rewrite_policy: not supported")
	case a.GetRetryPolicyTypedConfig() != nil:
		return errors.New("retry_policy_typed_config: not supported")
	case len(a.GetRequestMirrorPolicies()) > 0 && mirrorUnsupported(a.GetRequestMirrorPolicies()) != nil:
		return mirrorUnsupported(a.GetRequestMirrorPolicies())
	case len(a.GetRateLimits()) > 0:
		return errors.New("rate_limits: not supported")
	case checkCors(a.GetCors()) != nil:
		return checkCors(a.GetCors())
	case a.GetInternalRedirectPolicy() != nil:
		return errors.New("internal_redirect_policy: not supported")
	case a.GetInternalRedirectAction() != routev3.RouteAction_PASS_THROUGH_INTERNAL_REDIRECT:
		return errors.New("internal_redirect_action: not supported")
	case a.GetMaxInternalRedirects() != nil:
		return errors.New("max_internal_redirects: not supported")
	case checkHedgePolicy(a.GetHedgePolicy()) != nil:
		return checkHedgePolicy(a.GetHedgePolicy())
	case a.GetMaxGrpcTimeout() != nil:
		return errors.New("max_grpc_timeout: not supported (use max_stream_duration)")
	case a.GetGrpcTimeoutOffset() != nil:
		return errors.New("grpc_timeout_offset: not supported (use max_stream_duration)")
	case a.GetFlushTimeout() != nil:
		return errors.New("flush_timeout: not supported")
	}
	return upgradeUnsupported(a.GetUpgradeConfigs())
}

// checkCors validates the deprecated cors field, which the CORS filter reads
// (filters/http/cors): its origin matchers must compile.
func checkCors(c *routev3.CorsPolicy) error {
	for i, m := range c.GetAllowOriginStringMatch() {
		if _, err := matcher.CompileString(m); err != nil {
			return fmt.Errorf("cors.allow_origin_string_match[%d].%w", i, err)
		}
	}
	return nil
}

// upgradeUnsupported refuses connect_config fields the router filter does
// not honour: it terminates CONNECT (and only CONNECT) as a raw TCP tunnel.
func upgradeUnsupported(us []*routev3.RouteAction_UpgradeConfig) error {
	for i, u := range us {
		cc := u.GetConnectConfig()
		if cc == nil {
			continue
		}
		switch {
		case !strings.EqualFold(u.GetUpgradeType(), "CONNECT"):
			return fmt.Errorf("upgrade_configs[%d].connect_config: only valid for upgrade_type CONNECT", i)
		case cc.GetAllowPost():
			return fmt.Errorf("upgrade_configs[%d].connect_config.allow_post: not supported", i)
		case cc.GetProxyProtocolConfig() != nil:
			return fmt.Errorf("upgrade_configs[%d].connect_config.proxy_protocol_config: not supported", i)
		}
	}
	return nil
}

// mirrorUnsupported refuses mirror policy fields the router filter does not
// honour: it mirrors to a named cluster, sampled by runtime_fraction's
// default.
func mirrorUnsupported(ps []*routev3.RouteAction_RequestMirrorPolicy) error {
	for _, p := range ps {
		switch {
		case p.GetCluster() != "" && p.GetClusterHeader() != "":
			return errors.New("request_mirror_policies: only one of cluster and cluster_header may be set")
		case p.GetCluster() == "" && p.GetClusterHeader() == "":
			return errors.New("request_mirror_policies: cluster or cluster_header is required")
		case len(p.GetRequestHeadersMutations()) > 0:
			return errors.New("request_mirror_policies.request_headers_mutations: not supported")
		case p.GetHostRewriteLiteral() != "":
			return errors.New("request_mirror_policies.host_rewrite_literal: not supported")
		}
	}
	return nil
}
