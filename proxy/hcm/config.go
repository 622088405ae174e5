// Package hcm is Envoy's HTTP connection manager
// (envoy.filters.network.http_connection_manager): it decodes HTTP from a
// downstream connection, runs each request through the HTTP filter chain and
// the router, and encodes the responses. Its config compiles once into an
// immutable Config; the route table is an atomic pointer that RDS swaps while
// streams in flight keep the table they started with.
package hcm

import (
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	uuidv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/request_id/uuid/v3"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/outrider-proxy/outrider/proxy/confcheck"
	"github.com/outrider-proxy/outrider/proxy/drain"
	"github.com/outrider-proxy/outrider/proxy/http1"
	"github.com/outrider-proxy/outrider/proxy/httpfilter"
	"github.com/outrider-proxy/outrider/proxy/netfilter"
	"github.com/outrider-proxy/outrider/proxy/router"
	"github.com/outrider-proxy/outrider/proxy/upstream"
	"github.com/outrider-proxy/outrider/telemetry/accesslog"
)

// Name is the filter's Envoy name.
const Name = "envoy.filters.network.http_connection_manager"

func init() {
	netfilter.Registry.Register(Name,
		[]string{"envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"},
		func(ctx *netfilter.Context, a *anypb.Any) (any, error) {
			cfg := &hcmv3.HttpConnectionManager{}
			if err := a.UnmarshalTo(cfg); err != nil {
				return nil, fmt.Errorf("http_connection_manager: %w", err)
			}
			c, err := Compile(ctx, cfg)
			if err != nil {
				return nil, fmt.Errorf("http_connection_manager: %w", err)
			}
			return c, nil
		})
}

// Envoy's defaults.
const (
	defaultStreamIdleTimeout = 5 * time.Minute
	defaultIdleTimeout       = time.Hour
	defaultServerName        = "envoy"
)

// Config is a compiled connection manager, shared by every connection of its
// filter chain. Only routes changes after Compile.
type Config struct {
	Proto      *hcmv3.HttpConnectionManager
	statPrefix string
	routes     atomic.Pointer[router.Table]
	filters    []filterEntry

	clusters *upstream.Manager
	drain    *drain.Manager
	log      *slog.Logger
	stats    *hcmStats

	codec                 hcmv3.HttpConnectionManager_CodecType
	limits                http1.Limits
	useRemoteAddress      bool
	xffTrustedHops        int
	skipXffAppend         bool
	serverName            string
	serverHeader          hcmv3.HttpConnectionManager_ServerHeaderTransformation
	requestTimeout        time.Duration
	streamIdleTimeout     time.Duration
	requestHeadersTimeout time.Duration
	idleTimeout           time.Duration
	maxConnDuration       time.Duration
	maxRequestsPerConn    uint32
	normalizePath         bool
	mergeSlashes          bool
	generateRequestID     bool
	// addUserAgent is add_user_agent: the node's cluster (userAgent) and id
	// (nodeName) go into x-envoy-downstream-service-cluster/-node, and the
	// cluster into an empty user-agent.
	addUserAgent        bool
	userAgent, nodeName string
	preserveExternalID  bool
	alwaysSetRequestID  bool
	stripAnyHostPort    bool
	stripMatchingPort   bool
	accept10            bool
	accessLogs          *accesslog.Set  // nil logs nothing
	upgrades            map[string]bool // upgrade_configs: type (lower-case, "connect" for CONNECT) -> enabled
	allowConnect        bool            // http2_protocol_options.allow_connect: extended CONNECT accepted
	cancelRDS           func()          // stops the RDS watch; nil for inline routes
	scoped              *scopedRoutes   // scoped_routes; nil for rds and route_config
	internalCIDRs       []netip.Prefix  // internal_address_config.cidr_ranges
	underscores         corev3.HttpProtocolOptions_HeadersWithUnderscoresAction
	xfcc                hcmv3.HttpConnectionManager_ForwardClientCertDetails
	xfccDetails         xfccDetail     // set_current_client_cert_details, for APPEND_FORWARD and SANITIZE_SET
	tracing             *tracingConfig // nil: no tracing (tracing.go)

	h2      h2Server             // HTTP/2 server shared by the config's connections
	h2pool  sync.Pool            // of *h2Stream
	h2mu    sync.Mutex           // guards h2conns
	h2conns map[*h2Conn]struct{} // live HTTP/2 connections, for the drain
	// drainTimeout is drain_timeout: the time between the HTTP/2 shutdown
	// notice and the real GOAWAY (goaway.go); Envoy's default is 5 s.
	drainTimeout time.Duration
	// proxy100 is proxy_100_continue: an HTTP/1.1 client's Expect:
	// 100-continue goes upstream and the upstream's 100 Continue comes back,
	// instead of the connection manager answering it (see Continue100).
	proxy100 bool
	// localReply is local_reply_config (localreply.go); nil: Envoy's
	// default local replies.
	localReply *localReply
}

type filterEntry struct {
	name string
	cfg  httpfilter.Config
}

// Routes is the route table in force; nil until RDS delivers one.
func (c *Config) Routes() *router.Table { return c.routes.Load() }

// SetRoutes swaps the route table (RDS).
func (c *Config) SetRoutes(t *router.Table) { c.routes.Store(t) }

// Close stops the RDS watch and flushes and releases the access logs, its
// own and its filters'.
func (c *Config) Close() error {
	if c.cancelRDS != nil {
		c.cancelRDS()
	}
	if c.scoped != nil {
		c.scoped.close()
	}
	c.tracing.close()
	for _, f := range c.filters {
		if cl, ok := f.cfg.(io.Closer); ok {
			_ = cl.Close()
		}
	}
	return c.accessLogs.Close()
}

// StatPrefix is the configured stat_prefix.
func (c *Config) StatPrefix() string { return c.statPrefix }

// Compile validates and compiles an HttpConnectionManager.
func Compile(ctx *netfilter.Context, p *hcmv3.HttpConnectionManager) (*Config, error) {
	if err := confcheck.Fields(p, "", "codec_type", "stat_prefix", "http_filters", "common_http_protocol_options",
		"http_protocol_options", "server_name", "server_header_transformation", "max_request_headers_kb",
		"stream_idle_timeout", "request_timeout", "request_headers_timeout", "drain_timeout", "delayed_close_timeout",
		"access_log", "use_remote_address", "xff_num_trusted_hops", "skip_xff_append", "generate_request_id",
		"preserve_external_request_id", "always_set_request_id_in_response", "normalize_path", "merge_slashes",
		"route_specifier", "strip_port_mode", "stream_error_on_invalid_http_message", "internal_address_config",
		"path_with_escaped_slashes_action", "http2_protocol_options", "upgrade_configs", "forward_client_cert_details",
		"set_current_client_cert_details", "tracing", "proxy_100_continue", "request_id_extension", "add_user_agent",
		"local_reply_config"); err != nil {
		return nil, err
	}
	if err := checkRequestIDExtension(p.GetRequestIdExtension()); err != nil {
		return nil, err
	}
	localReply, err := compileLocalReply(p.GetLocalReplyConfig())
	if err != nil {
		return nil, err
	}
	switch p.GetCodecType() {
	case hcmv3.HttpConnectionManager_AUTO, hcmv3.HttpConnectionManager_HTTP1, hcmv3.HttpConnectionManager_HTTP2:
	default:
		return nil, fmt.Errorf("codec_type: %s is not supported by outrider yet", p.GetCodecType())
	}
	c := &Config{
		Proto:              p,
		codec:              p.GetCodecType(),
		statPrefix:         p.GetStatPrefix(),
		clusters:           ctx.Clusters,
		drain:              ctx.Drain,
		log:                ctx.Log,
		useRemoteAddress:   p.GetUseRemoteAddress().GetValue(),
		xffTrustedHops:     int(p.GetXffNumTrustedHops()),
		skipXffAppend:      p.GetSkipXffAppend(),
		serverName:         defaultServerName,
		serverHeader:       p.GetServerHeaderTransformation(),
		streamIdleTimeout:  defaultStreamIdleTimeout,
		idleTimeout:        defaultIdleTimeout,
		normalizePath:      p.GetNormalizePath().GetValue(),
		mergeSlashes:       p.GetMergeSlashes(),
		generateRequestID:  p.GetGenerateRequestId() == nil || p.GetGenerateRequestId().GetValue(),
		preserveExternalID: p.GetPreserveExternalRequestId(),
		alwaysSetRequestID: p.GetAlwaysSetRequestIdInResponse(),
		stripAnyHostPort:   p.GetStripAnyHostPort(),
		stripMatchingPort:  p.GetStripMatchingHostPort(),
		accept10:           p.GetHttpProtocolOptions().GetAcceptHttp_10(),
		drainTimeout:       5 * time.Second,
		proxy100:           p.GetProxy_100Continue(),
		localReply:         localReply,
	}
	if p.GetAddUserAgent().GetValue() {
		c.addUserAgent = true
		if ctx.Clusters != nil && ctx.Clusters.Node != nil {
			c.userAgent, c.nodeName = ctx.Clusters.Node.GetCluster(), ctx.Clusters.Node.GetId()
		}
	}
	if d := p.GetDrainTimeout(); d != nil {
		c.drainTimeout = d.AsDuration()
	}
	if c.log == nil {
		c.log = slog.Default()
	}
	for i, r := range p.GetInternalAddressConfig().GetCidrRanges() {
		a, err := netip.ParseAddr(r.GetAddressPrefix())
		if err != nil {
			return nil, fmt.Errorf("internal_address_config.cidr_ranges[%d].address_prefix: %w", i, err)
		}
		pfx, err := a.Unmap().Prefix(int(r.GetPrefixLen().GetValue()))
		if err != nil {
			return nil, fmt.Errorf("internal_address_config.cidr_ranges[%d].prefix_len: %w", i, err)
		}
		c.internalCIDRs = append(c.internalCIDRs, pfx)
	}
	if err := c.compileXFCC(p); err != nil {
		return nil, err
	}
	if p.GetServerName() != "" {
		c.serverName = p.GetServerName()
	}
	if kb := p.GetMaxRequestHeadersKb(); kb != nil {
		c.limits.MaxHeaderBytes = int(kb.GetValue()) * 1024
	}
	if p.GetPathWithEscapedSlashesAction() > hcmv3.HttpConnectionManager_KEEP_UNCHANGED {
		return nil, fmt.Errorf("path_with_escaped_slashes_action: %s is not supported by outrider yet", p.GetPathWithEscapedSlashesAction())
	}
	if cp := p.GetCommonHttpProtocolOptions(); cp != nil {
		if err := confcheck.Fields(cp, "common_http_protocol_options", "idle_timeout", "max_headers_count",
			"max_connection_duration", "max_requests_per_connection", "headers_with_underscores_action"); err != nil {
			return nil, err
		}
		if d := cp.GetIdleTimeout(); d != nil {
			c.idleTimeout = d.AsDuration()
		}
		if n := cp.GetMaxHeadersCount(); n != nil {
			c.limits.MaxHeaders = int(n.GetValue())
		}
		if d := cp.GetMaxConnectionDuration(); d != nil {
			c.maxConnDuration = d.AsDuration()
		}
		c.maxRequestsPerConn = cp.GetMaxRequestsPerConnection().GetValue()
		c.underscores = cp.GetHeadersWithUnderscoresAction()
	}
	if err := c.compileHTTP2(p.GetHttp2ProtocolOptions()); err != nil {
		return nil, err
	}
	if d := p.GetStreamIdleTimeout(); d != nil {
		c.streamIdleTimeout = d.AsDuration()
	}
	if d := p.GetRequestTimeout(); d != nil {
		c.requestTimeout = d.AsDuration()
	}
	if d := p.GetRequestHeadersTimeout(); d != nil {
		c.requestHeadersTimeout = d.AsDuration()
	}
	logs, err := accesslog.Compile(p.GetAccessLog(), accesslog.Options{Stats: ctx.Stats, Log: c.log, Clusters: ctx.Clusters})
	if err != nil {
		return nil, err
	}
	c.accessLogs = logs

	for i, u := range p.GetUpgradeConfigs() {
		if len(u.GetFilters()) > 0 {
			return nil, fmt.Errorf("upgrade_configs[%d].filters: upgrade filter chains are not supported by outrider yet", i)
		}
		if c.upgrades == nil {
			c.upgrades = map[string]bool{}
		}
		c.upgrades[strings.ToLower(u.GetUpgradeType())] = u.GetEnabled() == nil || u.GetEnabled().GetValue()
	}
	rdsName := ""
	switch {
	case p.GetRouteConfig() != nil:
		t, err := router.Compile(p.GetRouteConfig(), router.Options{ClusterExists: func(name string) bool {
			return ctx.Clusters == nil || ctx.Clusters.Get(name) != nil
		}})
		if err != nil {
			return nil, fmt.Errorf("route_config: %w", err)
		}
		c.routes.Store(t)
	case p.GetRds() != nil:
		name := p.GetRds().GetRouteConfigName()
		if ctx.Routes == nil {
			return nil, fmt.Errorf("rds: route configuration %q needs dynamic_resources (xDS), which this bootstrap does not have", name)
		}
		rdsName = name
	case p.GetScopedRoutes() != nil: // compiled last, as it subscribes
	default:
		return nil, fmt.Errorf("route_specifier: one of rds, route_config or scoped_routes is required")
	}

	fctx := &httpfilter.Context{Clusters: ctx.Clusters, Stats: ctx.Stats, StatPrefix: "http." + c.statPrefix + ".", Log: c.log}
	httpFilters := p.GetHttpFilters()
	if len(httpFilters) == 0 {
		// Envoy runs the router alone when no HTTP filter is configured.
		httpFilters = []*hcmv3.HttpFilter{{Name: "envoy.filters.http.router"}}
	}
	for i, hf := range httpFilters {
		path := fmt.Sprintf("http_filters[%d]", i)
		if hf.GetConfigDiscovery() != nil {
			return nil, fmt.Errorf("%s (%s).config_discovery: not supported by outrider yet", path, hf.GetName())
		}
		if hf.GetDisabled() {
			continue
		}
		f, err := httpfilter.Registry.Lookup(hf.GetName(), hf.GetTypedConfig().GetTypeUrl())
		if err != nil {
			if hf.GetIsOptional() {
				c.log.Warn("skipping optional HTTP filter", "filter", hf.GetName(), "err", err)
				continue
			}
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		fc, err := f.Create(fctx, hf.GetTypedConfig())
		if err != nil {
			return nil, fmt.Errorf("%s (%s): %w", path, hf.GetName(), err)
		}
		last := i == len(httpFilters)-1
		if f.Terminal != last {
			if last {
				return nil, fmt.Errorf("%s: non-terminal filter %q is the last filter of the chain", path, hf.GetName())
			}
			return nil, fmt.Errorf("%s: terminal filter %q must be the last filter of the chain", path, hf.GetName())
		}
		c.filters = append(c.filters, filterEntry{name: hf.GetName(), cfg: fc})
	}
	if len(c.filters) == 0 {
		return nil, fmt.Errorf("http_filters: the chain must end with a terminal filter such as envoy.filters.http.router")
	}
	c.stats = newHCMStats(ctx.Stats, c.statPrefix)
	if err := c.compileTracing(ctx, p); err != nil {
		return nil, err
	}
	if c.drain != nil {
		c.drain.OnStart(c.goAwayAll) // HTTP/2 connections get GOAWAY
	}
	if sr := p.GetScopedRoutes(); sr != nil {
		if c.scoped, err = compileScoped(ctx, c.statPrefix, sr); err != nil {
			c.tracing.close() // its reporter goroutine
			return nil, err
		}
	}
	if rdsName != "" {
		name := rdsName
		// Until the first RDS response the table is nil: requests get 404 NR.
		c.cancelRDS = ctx.Routes.WatchRoutes(name, func(rc *routev3.RouteConfiguration) error {
			var opts router.Options
			if rc.GetValidateClusters().GetValue() { // RDS does not validate clusters unless asked
				opts.ClusterExists = func(n string) bool { return ctx.Clusters.Get(n) != nil }
			}
			t, err := router.Compile(rc, opts)
			if err != nil {
				return fmt.Errorf("route configuration %q: %w", name, err)
			}
			c.routes.Store(t)
			return nil
		})
	}
	return c, nil
}

// checkRequestIDExtension accepts request_id_extension when it is Envoy's
// default, envoy.request_id.uuid with the trace reason packed into the
// UUID and trace sampling by request id: what outrider does (see
// telemetry/tracing's trace status). Anything else is refused by name.
func checkRequestIDExtension(e *hcmv3.RequestIDExtension) error {
	if e == nil {
		return nil
	}
	cfg := &uuidv3.UuidRequestIdConfig{}
	if tc := e.GetTypedConfig(); tc == nil || tc.MessageIs(cfg) {
		if tc != nil {
			if err := tc.UnmarshalTo(cfg); err != nil {
				return fmt.Errorf("request_id_extension.typed_config: %w", err)
			}
		}
		if v := cfg.GetPackTraceReason(); v != nil && !v.GetValue() {
			return fmt.Errorf("request_id_extension: pack_trace_reason: false is not supported by outrider yet")
		}
		if v := cfg.GetUseRequestIdForTraceSampling(); v != nil && !v.GetValue() {
			return fmt.Errorf("request_id_extension: use_request_id_for_trace_sampling: false is not supported by outrider yet")
		}
		return nil
	}
	return fmt.Errorf("request_id_extension: %s is not supported by outrider yet (only envoy.extensions.request_id.uuid.v3.UuidRequestIdConfig)", e.GetTypedConfig().GetTypeUrl())
}
