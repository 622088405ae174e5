// Package zipkin is Envoy's Zipkin tracer (envoy.tracers.zipkin): B3
// propagation (x-b3-* and the single b3 header) and spans reported as Zipkin
// v2 JSON by POST to collector_endpoint through collector_cluster. One
// goroutine per tracer sends batches; a full buffer drops spans rather than
// block a request.
package zipkin

import (
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"time"

	tracev3 "github.com/envoyproxy/go-control-plane/envoy/config/trace/v3"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/outrider-proxy/outrider/proxy/confcheck"
	"github.com/outrider-proxy/outrider/proxy/headers"
	"github.com/outrider-proxy/outrider/telemetry/stats"
	"github.com/outrider-proxy/outrider/telemetry/tracing"
)

// Name is the tracer's Envoy name.
const Name = "envoy.tracers.zipkin"

// Envoy's runtime defaults (tracing.zipkin.min_flush_spans,
// tracing.zipkin.flush_interval_ms, tracing.zipkin.request_timeout).
const (
	defaultMinFlushSpans  = 5
	defaultFlushInterval  = 5 * time.Second
	defaultRequestTimeout = 5 * time.Second
	maxBufferedSpans      = 1000 // outrider's bound; spans past it are dropped
)

func init() {
	tracing.Registry.Register(Name, []string{"envoy.config.trace.v3.ZipkinConfig"}, newTracer)
}

// Options tune the reporter; tests shorten the interval. Zero fields are
// Envoy's defaults.
type Options struct {
	MinFlushSpans int
	FlushInterval time.Duration
}

// DefaultOptions apply to tracers made from config.
var DefaultOptions Options

// Tracer is a configured Zipkin tracer.
type Tracer struct {
	shared bool // shared_span_context
	id128  bool // trace_id_128bit
	local  *Endpoint
	rep    *reporter
}

func newTracer(ctx *tracing.Context, a *anypb.Any) (tracing.Tracer, error) {
	c := &tracev3.ZipkinConfig{}
	if err := a.UnmarshalTo(c); err != nil {
		return nil, err
	}
	return New(ctx, c, DefaultOptions)
}

// New compiles a ZipkinConfig and starts its reporter.
func New(ctx *tracing.Context, c *tracev3.ZipkinConfig, o Options) (*Tracer, error) {
	if err := confcheck.Fields(c, "", "collector_cluster", "collector_endpoint", "trace_id_128bit",
		"shared_span_context", "collector_endpoint_version", "collector_hostname", "trace_context_option",
		"collector_service"); err != nil {
		return nil, err
	}
	dest, err := destination(ctx, c)
	if err != nil {
		return nil, err
	}
	switch c.GetCollectorEndpointVersion() {
	case tracev3.ZipkinConfig_HTTP_JSON:
	default:
		return nil, fmt.Errorf("collector_endpoint_version: %s is not supported by outrider yet (only HTTP_JSON)", c.GetCollectorEndpointVersion())
	}
	if c.GetTraceContextOption() != tracev3.ZipkinConfig_USE_B3 {
		return nil, fmt.Errorf("trace_context_option: %s is not supported by outrider yet", c.GetTraceContextOption())
	}
	st := ctx.Stats
	if st == nil {
		st = stats.NewStore()
	}
	log := ctx.Log
	if log == nil {
		log = slog.Default()
	}
	t := &Tracer{
		shared: c.GetSharedSpanContext() == nil || c.GetSharedSpanContext().GetValue(),
		id128:  c.GetTraceId_128Bit(),
		local:  &Endpoint{ServiceName: ctx.Node.GetCluster()},
	}
	if ip := ctx.LocalAddr; ip != nil {
		if ip4 := ip.To4(); ip4 != nil {
			t.local.IPv4 = ip4.String()
		} else {
			t.local.IPv6 = ip.String()
		}
	}
	t.rep = newReporter(ctx.Clusters, dest, st.Scope("tracing.zipkin"), log, o)
	return t, nil
}

// collector is where reports go: a cluster, the request path, the Host
// header and extra headers.
type collector struct {
	cluster, path, host string
	timeout             time.Duration
	headers             [][2]string
}

// destination reads collector_service when set (Envoy then ignores the
// collector_cluster, collector_endpoint and collector_hostname fields), else those.
func destination(ctx *tracing.Context, c *tracev3.ZipkinConfig) (collector, error) {
	d := collector{cluster: c.GetCollectorCluster(), path: c.GetCollectorEndpoint(), host: c.GetCollectorHostname(), timeout: defaultRequestTimeout}
	field := "collector_cluster"
	if cs := c.GetCollectorService(); cs != nil {
		if err := confcheck.Fields(cs, "collector_service", "http_uri", "request_headers_to_add"); err != nil {
			return d, err
		}
		field = "collector_service.http_uri.cluster"
		u, err := url.Parse(cs.GetHttpUri().GetUri())
		if err != nil || u.Path == "" {
			return d, fmt.Errorf("collector_service.http_uri.uri: %q has no path", cs.GetHttpUri().GetUri())
		}
		d.cluster, d.path, d.host = cs.GetHttpUri().GetCluster(), u.RequestURI(), u.Host
		if t := cs.GetHttpUri().GetTimeout(); t != nil && t.AsDuration() > 0 {
			d.timeout = t.AsDuration()
		}
		for i, h := range cs.GetRequestHeadersToAdd() {
			if h.GetHeader().GetKey() == "" {
				return d, fmt.Errorf("collector_service.request_headers_to_add[%d].header.key: required", i)
			}
			d.headers = append(d.headers, [2]string{h.GetHeader().GetKey(), h.GetHeader().GetValue()})
		}
	} else if d.path == "" {
		return d, errors.New("collector_endpoint: required")
	}
	if d.cluster == "" {
		return d, errors.New(field + ": required")
	}
	if ctx.Clusters == nil || ctx.Clusters.Get(d.cluster) == nil {
		return d, fmt.Errorf("%s: unknown cluster %q", field, d.cluster)
	}
	if d.host == "" {
		d.host = d.cluster
	}
	return d, nil
}

// Close flushes the buffered spans and stops the reporter.
func (t *Tracer) Close() error {
	t.rep.close()
	return nil
}

// StartSpan starts the downstream span, joining the B3 context the request
// carries: a server span shares the caller's span id (shared_span_context),
// a client span or one with shared_span_context off is its child. The
// sender's sampling decision wins over the connection manager's.
func (t *Tracer) StartSpan(o *tracing.StartOptions) tracing.Span {
	in, ok, err := extract(o.Request)
	if err != nil {
		return nil // Envoy's null span: nothing traced, nothing propagated
	}
	// Envoy's Zipkin driver names the span after the request's host; the
	// route decorator may rename it.
	s := &span{t: t, name: o.Request.GetString(headers.Authority), kind: o.Kind, start: o.Start}
	s.ctx.sampled = o.Decision.Traced
	if in.sampledSet {
		s.ctx.sampled = in.sampled
	}
	// Envoy marks every server span shared when shared_span_context is on.
	s.shared = o.Kind == tracing.KindServer && t.shared
	switch {
	case ok && s.shared:
		s.ctx.traceHigh, s.ctx.traceLow, s.ctx.id, s.ctx.parent = in.traceHigh, in.traceLow, in.id, in.parent
	case ok:
		s.ctx.traceHigh, s.ctx.traceLow, s.ctx.id, s.ctx.parent = in.traceHigh, in.traceLow, nonZero(), in.id
	default:
		s.ctx.traceLow, s.ctx.id = nonZero(), 0
		if t.id128 {
			s.ctx.traceHigh = nonZero()
		}
		s.ctx.id = s.ctx.traceLow // a root span's id is its trace id, as Envoy's
	}
	return s
}
