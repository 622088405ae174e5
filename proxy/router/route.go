package router

import (
	"errors"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/outrider-proxy/outrider/proxy/headers"
	"github.com/outrider-proxy/outrider/telemetry/formatter"
)

// ActionKind is what a route does with a matched request.
type ActionKind uint8

const (
	// ActionNone: non_forwarding_action; the router filter does nothing.
	ActionNone ActionKind = iota
	// ActionCluster forwards to a cluster (route action).
	ActionCluster
	// ActionRedirect answers with a redirect.
	ActionRedirect
	// ActionDirectResponse answers with a fixed status and body.
	ActionDirectResponse
)

// defaultTimeout is Envoy's route timeout when none is configured.
const defaultTimeout = 15 * time.Second

// Route is a compiled route.
type Route struct {
	Name string

	vh          *VirtualHost
	match       routeMatch
	kind        ActionKind
	reqHeaders  *headerMutation
	respHeaders *headerMutation
	perFilter   map[string]*anypb.Any
	// ext holds the rarely set fields read outside the hot path's compiled
	// form; nil when the route sets none of them.
	ext *routeExtras

	// ActionCluster
	clusterName   string
	clusterHeader string
	weighted      *weightedClusters
	notFoundCode  int
	// rewrite is the host and path rewrites; nil when the route has none.
	rewrite     *routeRewrite
	autoHost    bool
	timeout     time.Duration
	idleTimeout time.Duration

	redirect *redirect       // ActionRedirect
	direct   *directResponse // ActionDirectResponse
}

// routeRewrite is a route action's host and path rewrites.
type routeRewrite struct {
	prefixRewrite string
	regexRewrite  *regexRewrite
	hostLiteral   string
	hostHeader    string
	hostPathRegex *regexRewrite
	appendXFH     bool
}

// directResponse is a direct_response route's answer.
type directResponse struct {
	status int
	body   []byte
}

// regexRewrite is a compiled RegexMatchAndSubstitute; sub is in Go's
// Expand syntax (Envoy's \1 becomes ${1}).
type regexRewrite struct {
	re  *regexp.Regexp
	sub string
}

func compileRoute(vh *VirtualHost, c *routev3.Route, where string, cc *compileCtx) (*Route, error) {
	if c.GetName() != "" {
		where = fmt.Sprintf("%s (%q)", where, c.GetName())
	}
	wrap := func(err error) error { return fmt.Errorf("%s.%w", where, err) }
	r := &Route{Name: c.GetName(), vh: vh, perFilter: c.GetTypedPerFilterConfig()}
	if c.GetTracing() != nil || c.GetDecorator() != nil {
		r.extras().tracing, r.extras().decorator = c.GetTracing(), c.GetDecorator()
	}
	if err := checkRouteUnsupported(c); err != nil {
		return nil, wrap(err)
	}
	var err error
	if r.match, err = compileMatch(c.GetMatch()); err != nil {
		return nil, wrap(err)
	}
	if r.reqHeaders, err = compileMutation(c.GetRequestHeadersToAdd(), c.GetRequestHeadersToRemove(), "request_headers_to"); err != nil {
		return nil, wrap(err)
	}
	if r.respHeaders, err = compileMutation(c.GetResponseHeadersToAdd(), c.GetResponseHeadersToRemove(), "response_headers_to"); err != nil {
		return nil, wrap(err)
	}
	switch a := c.GetAction().(type) {
	case *routev3.Route_Route:
		r.kind = ActionCluster
		err = r.compileRouteAction(a.Route, cc)
	case *routev3.Route_Redirect:
		r.kind = ActionRedirect
		r.redirect, err = compileRedirect(a.Redirect, r.match)
	case *routev3.Route_DirectResponse:
		r.kind = ActionDirectResponse
		err = r.compileDirectResponse(a.DirectResponse, cc.maxBody)
	case *routev3.Route_NonForwardingAction:
		r.kind = ActionNone
	case *routev3.Route_FilterAction:
		err = errors.New("filter_action: not supported")
	default:
		err = errors.New("action: one of route, redirect, direct_response or non_forwarding_action is required")
	}
	if err != nil {
		return nil, wrap(err)
	}
	return r, nil
}

func (r *Route) compileRouteAction(a *routev3.RouteAction, cc *compileCtx) error {
	if err := checkRouteActionUnsupported(a); err != nil {
		return fmt.Errorf("route.%w", err)
	}
	r.keepActionExtras(a)
	switch cs := a.GetClusterSpecifier().(type) {
	case *routev3.RouteAction_Cluster:
		if cs.Cluster == "" {
			return errors.New("route.cluster: must not be empty")
		}
		if cc.validate != nil && !cc.validate(cs.Cluster) {
			return fmt.Errorf("route.cluster: route: unknown cluster '%s'", cs.Cluster)
		}
		r.clusterName = cs.Cluster
	case *routev3.RouteAction_ClusterHeader:
		if cs.ClusterHeader == "" {
			return errors.New("route.cluster_header: must not be empty")
		}
		r.clusterHeader = strings.ToLower(cs.ClusterHeader)
	case *routev3.RouteAction_WeightedClusters:
		w, err := compileWeighted(cs.WeightedClusters, cc)
		if err != nil {
			return fmt.Errorf("route.weighted_clusters%w", err)
		}
		r.weighted = w
	default:
		return fmt.Errorf("route.cluster_specifier: %T not supported", cs)
	}
	switch a.GetClusterNotFoundResponseCode() {
	case routev3.RouteAction_SERVICE_UNAVAILABLE:
		r.notFoundCode = 503
	case routev3.RouteAction_NOT_FOUND:
		r.notFoundCode = 404
	case routev3.RouteAction_INTERNAL_SERVER_ERROR:
		r.notFoundCode = 500
	}
	rw := routeRewrite{prefixRewrite: a.GetPrefixRewrite(), appendXFH: a.GetAppendXForwardedHost()}
	if rr := a.GetRegexRewrite(); rr != nil {
		if rw.prefixRewrite != "" {
			return errors.New("route: cannot specify both prefix_rewrite and regex_rewrite")
		}
		var err error
		if rw.regexRewrite, err = newRegexRewrite(rr.GetPattern().GetRegex(), rr.GetSubstitution()); err != nil {
			return fmt.Errorf("route.regex_rewrite: %w", err)
		}
	}
	switch h := a.GetHostRewriteSpecifier().(type) {
	case *routev3.RouteAction_HostRewriteLiteral:
		rw.hostLiteral = h.HostRewriteLiteral
	case *routev3.RouteAction_AutoHostRewrite:
		r.autoHost = h.AutoHostRewrite.GetValue()
	case *routev3.RouteAction_HostRewriteHeader:
		rw.hostHeader = strings.ToLower(h.HostRewriteHeader)
	case *routev3.RouteAction_HostRewritePathRegex:
		var err error
		if rw.hostPathRegex, err = newRegexRewrite(h.HostRewritePathRegex.GetPattern().GetRegex(), h.HostRewritePathRegex.GetSubstitution()); err != nil {
			return fmt.Errorf("route.host_rewrite_path_regex: %w", err)
		}
	}
	if rw != (routeRewrite{}) {
		r.rewrite = &rw
	}
	r.timeout = defaultTimeout
	if d := a.GetTimeout(); d != nil {
		r.timeout = d.AsDuration()
	}
	if d := a.GetIdleTimeout(); d != nil {
		r.idleTimeout = d.AsDuration()
	}
	if err := checkRetryPolicy(a.GetRetryPolicy()); err != nil {
		return fmt.Errorf("route.%w", err)
	}
	hp, err := compileHashPolicies(a.GetHashPolicy())
	if err != nil {
		return err
	}
	if hp != nil {
		r.extras().hashPolicies = hp
	}
	return nil
}

func (r *Route) compileDirectResponse(d *routev3.DirectResponseAction, maxBody uint32) error {
	if d.GetBodyFormat() != nil {
		return errors.New("direct_response.body_format: not supported")
	}
	s := d.GetStatus()
	if s < 200 || s >= 600 {
		return fmt.Errorf("direct_response.status: %d out of range [200, 600)", s)
	}
	r.direct = &directResponse{status: int(s)}
	if b := d.GetBody(); b != nil {
		body, err := readDataSource(b)
		if err != nil {
			return fmt.Errorf("direct_response.body: %w", err)
		}
		if uint64(len(body)) > uint64(maxBody) {
			return fmt.Errorf("direct_response.body: response body size is %d bytes; maximum is %d", len(body), maxBody)
		}
		r.direct.body = body
	}
	return nil
}

func readDataSource(ds *corev3.DataSource) ([]byte, error) {
	switch s := ds.GetSpecifier().(type) {
	case *corev3.DataSource_InlineString:
		return []byte(s.InlineString), nil
	case *corev3.DataSource_InlineBytes:
		return s.InlineBytes, nil
	case *corev3.DataSource_Filename:
		b, err := os.ReadFile(s.Filename)
		if err != nil {
			return nil, fmt.Errorf("filename: %w", err)
		}
		return b, nil
	case *corev3.DataSource_EnvironmentVariable:
		v, ok := os.LookupEnv(s.EnvironmentVariable)
		if !ok {
			return nil, fmt.Errorf("environment_variable: %s is not set", s.EnvironmentVariable)
		}
		return []byte(v), nil
	}
	return nil, nil
}

// newRegexRewrite compiles pattern (matched anywhere, all occurrences
// replaced, like RE2::GlobalReplace) and translates Envoy's substitution
// syntax (\1 .. \9, \\) into Go's (${1}, \, with $ escaped).
func newRegexRewrite(pattern, sub string) (*regexRewrite, error) {
	if pattern == "" {
		return nil, errors.New("pattern.regex: required")
	}
	re, err := regexp.Compile(pattern)
	if err != nil {
		return nil, fmt.Errorf("pattern.regex: %w", err)
	}
	var b strings.Builder
	for i := 0; i < len(sub); i++ {
		c := sub[i]
		switch {
		case c == '$':
			b.WriteString("$$")
		case c == '\\' && i+1 < len(sub) && sub[i+1] >= '0' && sub[i+1] <= '9':
			g := int(sub[i+1] - '0')
			if g > re.NumSubexp() {
				return nil, fmt.Errorf("substitution: %q refers to group %d but the pattern has %d", sub, g, re.NumSubexp())
			}
			b.WriteString("${" + strconv.Itoa(g) + "}")
			i++
		case c == '\\' && i+1 < len(sub) && sub[i+1] == '\\':
			b.WriteByte('\\')
			i++
		case c == '\\':
			return nil, fmt.Errorf("substitution: %q has an invalid escape at %d", sub, i)
		default:
			b.WriteByte(c)
		}
	}
	return &regexRewrite{re: re, sub: b.String()}, nil
}

func (rr *regexRewrite) replaceAll(s []byte) []byte {
	return rr.re.ReplaceAll(s, []byte(rr.sub))
}

// Kind is the route's action.
func (r *Route) Kind() ActionKind { return r.kind }

// VirtualHost is the virtual host the route belongs to.
func (r *Route) VirtualHost() *VirtualHost { return r.vh }

// RetryPolicy is the route's retry policy, else the virtual host's, else nil.
func (r *Route) RetryPolicy() *routev3.RetryPolicy {
	if p := r.ext.getRetryPolicy(); p != nil {
		return p
	}
	if r.vh == nil {
		return nil
	}
	return r.vh.retryPolicy
}

// ClusterNotFoundResponseCode is the status for a missing cluster: 503 unless
// cluster_not_found_response_code says otherwise.
func (r *Route) ClusterNotFoundResponseCode() int {
	if r.notFoundCode == 0 {
		return 503
	}
	return r.notFoundCode
}

// Cluster names the upstream cluster for req: the static cluster, the value
// of cluster_header, or a weighted pick using rnd (or the value of
// weighted_clusters.header_name when it parses as an integer). It returns ""
// when cluster_header is absent or empty; the router filter then behaves as
// Envoy does for an unknown cluster: it answers ClusterNotFoundResponseCode()
// (503 by default) with response flag NC and details "cluster_not_found".
func (r *Route) Cluster(req *headers.Map, rnd uint64) string {
	switch {
	case r.clusterName != "":
		return r.clusterName
	case r.clusterHeader != "":
		v, _ := req.Get(r.clusterHeader)
		return string(v)
	case r.weighted != nil:
		return r.weighted.pick(req, rnd)
	}
	return ""
}

// AutoHostRewrite reports auto_host_rewrite: the router filter sets
// :authority to the chosen endpoint's hostname.
func (r *Route) AutoHostRewrite() bool { return r.autoHost }

// AppendXForwardedHost reports append_x_forwarded_host (also honoured by
// RewriteRequest for the rewrites it performs).
func (r *Route) AppendXForwardedHost() bool { return r.rewrite != nil && r.rewrite.appendXFH }

// Timeout is the upstream request timeout: 15s unless configured, 0 when
// disabled.
func (r *Route) Timeout() time.Duration { return r.timeout }

// IdleTimeout is the route's stream idle timeout; 0 means none configured.
func (r *Route) IdleTimeout() time.Duration { return r.idleTimeout }

// DirectResponse is the status and body of a direct_response route. body is
// shared: do not modify it.
func (r *Route) DirectResponse() (status int, body []byte) {
	if r.direct == nil {
		return 0, nil
	}
	return r.direct.status, r.direct.body
}

// PerFilterConfig returns typed_per_filter_config for filterName from the
// most specific level that has it: route, then virtual host, then route
// configuration. nil when none; filters wanting merge semantics can walk the
// levels themselves through Proto.
func (r *Route) PerFilterConfig(filterName string) *anypb.Any {
	if a, ok := r.perFilter[filterName]; ok {
		return a
	}
	if a, ok := r.vh.perFilter[filterName]; ok {
		return a
	}
	if a, ok := r.vh.table.perFilter[filterName]; ok {
		return a
	}
	return nil
}

// PerFilterConfigs returns typed_per_filter_config for filterName from every
// level that has it, most specific first (route, virtual host, route
// configuration), for filters that merge the levels field by field (CORS).
func (r *Route) PerFilterConfigs(filterName string) []*anypb.Any {
	var out []*anypb.Any
	for _, m := range [...]map[string]*anypb.Any{r.perFilter, r.vh.perFilter, r.vh.table.perFilter} {
		if a, ok := m[filterName]; ok {
			out = append(out, a)
		}
	}
	return out
}

// ApplyRequestHeaders applies request_headers_to_remove/add of the route,
// its virtual host and the route configuration, in Envoy's order: route,
// virtual host, route configuration (the last one wins on overwrite), or the
// reverse with most_specific_header_mutations_wins. Call it before
// RewriteRequest, as Envoy's finalizeRequestHeaders does.
func (r *Route) ApplyRequestHeaders(req *headers.Map, ctx *formatter.Context) {
	t := r.vh.table
	if t.mostSpecificWins {
		t.reqHeaders.apply(req, ctx)
		r.vh.reqHeaders.apply(req, ctx)
		r.reqHeaders.apply(req, ctx)
		return
	}
	r.reqHeaders.apply(req, ctx)
	r.vh.reqHeaders.apply(req, ctx)
	t.reqHeaders.apply(req, ctx)
}

// ApplyResponseHeaders is ApplyRequestHeaders for response_headers_to_*.
func (r *Route) ApplyResponseHeaders(resp *headers.Map, ctx *formatter.Context) {
	t := r.vh.table
	if t.mostSpecificWins {
		t.respHeaders.apply(resp, ctx)
		r.vh.respHeaders.apply(resp, ctx)
		r.respHeaders.apply(resp, ctx)
		return
	}
	r.respHeaders.apply(resp, ctx)
	r.vh.respHeaders.apply(resp, ctx)
	t.respHeaders.apply(resp, ctx)
}
