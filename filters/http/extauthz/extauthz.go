// Package extauthz is Envoy's external authorization HTTP filter
// (envoy.filters.http.ext_authz): each request is checked with a gRPC
// (envoy.service.auth.v3.Authorization/Check) or raw HTTP authorization
// service reached through a cluster, then goes on with the service's header
// and query mutations, or is answered with its denial (status_on_error when
// the service fails). typed_per_filter_config (ExtAuthzPerRoute) disables the
// check for a route or gives it context extensions, body settings or its own
// service.
package extauthz

import (
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extauthzv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/outrider-proxy/outrider/proxy/confcheck"
	"github.com/outrider-proxy/outrider/proxy/httpfilter"
	"github.com/outrider-proxy/outrider/proxy/matcher"
	"github.com/outrider-proxy/outrider/proxy/upstream"
	"github.com/outrider-proxy/outrider/telemetry/stats"
)

// Name is the filter's Envoy name; typed_per_filter_config is looked up
// under it.
const Name = "envoy.filters.http.ext_authz"

func init() {
	httpfilter.Registry.Register(Name, []string{"envoy.extensions.filters.http.ext_authz.v3.ExtAuthz"},
		httpfilter.Factory{Create: create})
}

// defaultTimeout is Envoy's timeout of a grpc_service without one.
const defaultTimeout = 200 * time.Millisecond

// bufferSettings is with_request_body; maxBytes 0 means the body is not sent.
type bufferSettings struct {
	maxBytes     int
	allowPartial bool
	packAsBytes  bool
}

// config is the compiled filter, shared by every stream of the chain.
type config struct {
	client checker

	failureModeAllow, failureModeAllowHeaderAdd bool
	body                                        bufferSettings
	clearRouteCache                             bool
	clearRouteCacheHeaders                      []string // nil: any request mutation clears
	statusOnError                               int
	filterEnabled                               *corev3.RuntimeFractionalPercent // nil: always on
	denyAtDisable                               *corev3.RuntimeFeatureFlag       // nil: allow when disabled
	includePeerCert, includeTLSSession          bool
	maxDeniedBody                               int // 0: no limit
	// chargeCluster: a denial counts as a response of the route's cluster
	// (upstream_rq_<code>), as charge_cluster_response_stats (default true).
	chargeCluster bool
	// validateMutations rejects malformed mutations (validate_mutations).
	validateMutations bool
	// allowed selects the request headers sent to the service (nil: all);
	// disallowed removes some of them (nil: none).
	allowed, disallowed headerMatcher

	stats      filterStats
	store      *stats.Store
	clusters   *upstream.Manager
	statPrefix string // the filter's own stat_prefix ("" when none)

	// clusterStats holds the cluster-scoped counters by cluster name.
	clusterStats sync.Map
	// perRoute caches compiled ExtAuthzPerRoute by their *anypb.Any.
	perRoute httpfilter.PerRoute[*anypb.Any, *perRoute]
}

// filterStats are Envoy's ALL_EXT_AUTHZ_FILTER_STATS under
// <connection manager prefix>ext_authz.[<stat_prefix>.].
type filterStats struct {
	ok, denied, error, disabled, failureModeAllowed, invalid *stats.Counter
}

// clusterStats are the counters Envoy also keeps in the route target
// cluster's scope: cluster.<name>.ext_authz.[<stat_prefix>.]<name>.
type clusterStats struct {
	ok, denied, error, failureModeAllowed, invalid *stats.Counter
	cluster                                        *upstream.Cluster
}

// extAuthzFields are the ExtAuthz fields outrider implements.
var extAuthzFields = []string{
	"services", "transport_api_version", "failure_mode_allow", "failure_mode_allow_header_add",
	"with_request_body", "clear_route_cache", "clear_route_cache_headers", "status_on_error",
	"filter_enabled", "deny_at_disable", "include_peer_certificate", "include_tls_session",
	"stat_prefix", "allowed_headers", "disallowed_headers", "max_denied_response_body_bytes",
	"charge_cluster_response_stats", "validate_mutations",
}

func create(ctx *httpfilter.Context, a *anypb.Any) (httpfilter.Config, error) {
	m := &extauthzv3.ExtAuthz{}
	if err := httpfilter.UnmarshalConfig(a, m); err != nil {
		return nil, err
	}
	if err := confcheck.Fields(m, "", extAuthzFields...); err != nil {
		return nil, err
	}
	switch v := m.GetTransportApiVersion(); v {
	case corev3.ApiVersion_AUTO, corev3.ApiVersion_V3:
	default:
		return nil, fmt.Errorf("transport_api_version: %s is not supported", v)
	}
	store := ctx.StatsStore()
	c := &config{
		failureModeAllow:          m.GetFailureModeAllow(),
		failureModeAllowHeaderAdd: m.GetFailureModeAllowHeaderAdd(),
		clearRouteCache:           m.GetClearRouteCache(),
		clearRouteCacheHeaders:    m.GetClearRouteCacheHeaders(),
		statusOnError:             errorCode(uint32(m.GetStatusOnError().GetCode())),
		filterEnabled:             m.GetFilterEnabled(),
		denyAtDisable:             m.GetDenyAtDisable(),
		includePeerCert:           m.GetIncludePeerCertificate(),
		includeTLSSession:         m.GetIncludeTlsSession(),
		maxDeniedBody:             int(m.GetMaxDeniedResponseBodyBytes()),
		chargeCluster:             m.GetChargeClusterResponseStats() == nil || m.GetChargeClusterResponseStats().GetValue(),
		store:                     store,
		clusters:                  ctx.Clusters,
		statPrefix:                m.GetStatPrefix(),
		validateMutations:         m.GetValidateMutations(),
	}
	if m.GetStatusOnError() != nil {
		if err := confcheck.Fields(m.GetStatusOnError(), "status_on_error", "code"); err != nil {
			return nil, err
		}
	}
	var err error
	if c.body, err = compileBuffer(m.GetWithRequestBody(), "with_request_body"); err != nil {
		return nil, err
	}
	if m.GetHttpService() != nil && m.GetAllowedHeaders() != nil &&
		m.GetHttpService().GetAuthorizationRequest().GetAllowedHeaders() != nil {
		return nil, errors.New("allowed_headers: duplicate of http_service.authorization_request.allowed_headers")
	}
	if m.GetDisallowedHeaders() != nil {
		if c.disallowed, err = compileList(m.GetDisallowedHeaders(), "disallowed_headers"); err != nil {
			return nil, err
		}
	}
	if ctx.Clusters == nil {
		return nil, errors.New("services: no cluster manager to reach the authorization service")
	}
	switch {
	case m.GetGrpcService() != nil:
		if m.GetAllowedHeaders() != nil {
			if c.allowed, err = compileList(m.GetAllowedHeaders(), "allowed_headers"); err != nil {
				return nil, err
			}
		}
		if c.client, err = newGRPCClient(ctx.Clusters, m.GetGrpcService()); err != nil {
			return nil, err
		}
	case m.GetHttpService() != nil:
		// pack_as_bytes is implied: the HTTP body is the raw bytes.
		c.body.packAsBytes = true
		list, path := m.GetAllowedHeaders(), "allowed_headers"
		if l := m.GetHttpService().GetAuthorizationRequest().GetAllowedHeaders(); l != nil {
			list, path = l, "http_service.authorization_request.allowed_headers"
		}
		if c.allowed, err = compileList(list, path); err != nil {
			return nil, err
		}
		c.allowed = append(c.allowed, exactMatchers("authorization", ":method", ":path", ":authority")...)
		if c.client, err = newHTTPClient(ctx.Clusters, m.GetHttpService()); err != nil {
			return nil, fmt.Errorf("http_service.%w", err)
		}
	default:
		return nil, errors.New("services: grpc_service or http_service is required")
	}
	prefix := ctx.StatPrefix + "ext_authz."
	if c.statPrefix != "" {
		prefix += c.statPrefix + "."
	}
	c.stats = filterStats{
		ok: store.Counter(prefix + "ok"), denied: store.Counter(prefix + "denied"),
		error: store.Counter(prefix + "error"), disabled: store.Counter(prefix + "disabled"),
		failureModeAllowed: store.Counter(prefix + "failure_mode_allowed"), invalid: store.Counter(prefix + "invalid"),
	}
	// Envoy makes the rest of its counters up front too; outrider never
	// increments them.
	for _, n := range []string{"ignored_dynamic_metadata", "filter_state_name_collision", "omitted_response_headers",
		"request_header_limits_reached", "response_header_limits_reached"} {
		store.Counter(prefix + n)
	}
	return c, nil
}

// errorCode is Envoy's FilterConfig::toErrorCode: a known HTTP status, else
// 403.
func errorCode(code uint32) int {
	if code >= 100 && code <= 511 {
		return int(code)
	}
	return http.StatusForbidden
}

func compileBuffer(b *extauthzv3.BufferSettings, path string) (bufferSettings, error) {
	if b == nil {
		return bufferSettings{}, nil
	}
	if err := confcheck.Fields(b, path, "max_request_bytes", "allow_partial_message", "pack_as_bytes"); err != nil {
		return bufferSettings{}, err
	}
	if b.GetMaxRequestBytes() == 0 {
		return bufferSettings{}, fmt.Errorf("%s.max_request_bytes: must be greater than 0", path)
	}
	return bufferSettings{maxBytes: int(b.GetMaxRequestBytes()), allowPartial: b.GetAllowPartialMessage(),
		packAsBytes: b.GetPackAsBytes()}, nil
}

// headerMatcher matches header names: any of its string matchers.
type headerMatcher []*matcher.String

func (hm headerMatcher) matches(name string) bool {
	for _, m := range hm {
		if m.MatchString(name) {
			return true
		}
	}
	return false
}

func compileList(l *matcherv3.ListStringMatcher, path string) (headerMatcher, error) {
	if l == nil {
		return headerMatcher{}, nil
	}
	if err := confcheck.Fields(l, path, "patterns"); err != nil {
		return nil, err
	}
	hm := make(headerMatcher, 0, len(l.GetPatterns()))
	for i, p := range l.GetPatterns() {
		sm, err := matcher.CompileString(p)
		if err != nil {
			return nil, fmt.Errorf("%s.patterns[%d].%w", path, i, err)
		}
		hm = append(hm, sm)
	}
	return hm, nil
}

func exactMatchers(names ...string) headerMatcher {
	hm := make(headerMatcher, 0, len(names))
	for _, n := range names {
		sm, err := matcher.CompileString(&matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: n}})
		if err != nil {
			panic(err)
		}
		hm = append(hm, sm)
	}
	return hm
}

// clusterCounters are the cluster-scoped counters of the named cluster;
// nil when the cluster does not exist (Envoy's clusterInfo() is null).
func (c *config) clusterCounters(name string) *clusterStats {
	if name == "" {
		return nil
	}
	cl := c.clusters.Get(name)
	if cl == nil {
		return nil
	}
	if v, ok := c.clusterStats.Load(name); ok {
		if cs := v.(*clusterStats); cs.cluster == cl {
			return cs
		}
	}
	prefix := "cluster." + name + ".ext_authz."
	if c.statPrefix != "" {
		prefix += c.statPrefix + "."
	}
	cs := &clusterStats{
		ok: c.store.Counter(prefix + "ok"), denied: c.store.Counter(prefix + "denied"),
		error: c.store.Counter(prefix + "error"), failureModeAllowed: c.store.Counter(prefix + "failure_mode_allowed"),
		invalid: c.store.Counter(prefix + "invalid"), cluster: cl,
	}
	c.clusterStats.Store(name, cs) // a CDS update replaced the cluster: its new stats
	return cs
}
