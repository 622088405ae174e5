package hcm

import (
	"fmt"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tracingv3 "github.com/envoyproxy/go-control-plane/envoy/type/tracing/v3"

	"github.com/outrider-proxy/outrider/proxy/confcheck"
	"github.com/outrider-proxy/outrider/proxy/headers"
	"github.com/outrider-proxy/outrider/proxy/netfilter"
	"github.com/outrider-proxy/outrider/telemetry/stats"
	"github.com/outrider-proxy/outrider/telemetry/tracing"
)

// tracingConfig is the compiled HttpConnectionManager.tracing with its
// provider (its own, else the bootstrap's).
type tracingConfig struct {
	tracer        tracing.Tracer // nil: tracing is on but no provider (Envoy's null tracer)
	egress        bool           // the listener is OUTBOUND: "egress" spans of kind CLIENT
	sampling      tracing.Sampling
	tags          tracing.TagConfig
	spawnUpstream bool // spawn_upstream_span: the router starts a child span per upstream request
	noPropagation bool // no_context_propagation
	nodeID, zone  string

	randomSampling, serviceForced, clientEnabled, notTraceable *stats.Counter
}

// compileTracing compiles p.tracing; c.tracing stays nil without it, as
// Envoy traces nothing then even when the bootstrap names a provider.
func (c *Config) compileTracing(ctx *netfilter.Context, p *hcmv3.HttpConnectionManager) error {
	t := p.GetTracing()
	if t == nil {
		return nil
	}
	if err := confcheck.Fields(t, "tracing", "client_sampling", "random_sampling", "overall_sampling", "verbose",
		"max_path_tag_length", "custom_tags", "provider", "spawn_upstream_span", "no_context_propagation"); err != nil {
		return err
	}
	tags, err := tracing.CompileCustomTags(t.GetCustomTags())
	if err != nil {
		return fmt.Errorf("tracing.%w", err)
	}
	tc := &tracingConfig{
		egress: ctx.TrafficDirection == corev3.TrafficDirection_OUTBOUND,
		sampling: tracing.Sampling{
			Client:  tracing.FromPercent(t.GetClientSampling()),
			Random:  tracing.FromPercent(t.GetRandomSampling()),
			Overall: tracing.FromPercent(t.GetOverallSampling()),
		},
		tags:          tracing.TagConfig{MaxPathTagLength: tracing.DefaultMaxPathTagLength, CustomTags: tags, Verbose: t.GetVerbose()},
		spawnUpstream: t.GetSpawnUpstreamSpan().GetValue(),
		noPropagation: t.GetNoContextPropagation(),
	}
	if v := t.GetMaxPathTagLength(); v != nil {
		tc.tags.MaxPathTagLength = int(v.GetValue())
	}
	provider := t.GetProvider()
	if provider == nil {
		provider = ctx.Tracing
	}
	var node *corev3.Node
	if ctx.Clusters != nil {
		node = ctx.Clusters.Node
	}
	if node != nil {
		tc.nodeID, tc.zone = node.GetId(), node.GetLocality().GetZone()
	}
	if provider != nil {
		tc.tracer, err = tracing.New(&tracing.Context{Clusters: ctx.Clusters, Stats: ctx.Stats, Log: c.log, Node: node,
			LocalAddr: tracing.LocalAddress()}, provider)
		if err != nil {
			return fmt.Errorf("tracing.provider: %w", err)
		}
	}
	st := ctx.Stats
	if st == nil {
		st = stats.NewStore()
	}
	sc := st.Scope("http." + c.statPrefix + ".tracing")
	tc.randomSampling, tc.serviceForced = sc.Counter("random_sampling"), sc.Counter("service_forced")
	tc.clientEnabled, tc.notTraceable = sc.Counter("client_enabled"), sc.Counter("not_traceable")
	sc.Counter("health_check") // Envoy's, for checks the health_check filter answers
	c.tracing = tc
	return nil
}

func (tc *tracingConfig) close() {
	if tc != nil && tc.tracer != nil {
		_ = tc.tracer.Close()
	}
}

// streamTrace is a stream's tracing state.
type streamTrace struct {
	span         tracing.Span // the downstream span; nil when not tracing
	upstream     tracing.Span // the router's child span; nil when none
	decoratedOp  string       // the route decorator's operation, for x-envoy-decorator-operation
	propagateDec bool         // the decorator's propagate
}

// startTrace samples the request, starts its span and applies the route's
// decorator (ConnectionManagerImpl::ActiveStream::traceRequest).
func (s *stream) startTrace() {
	s.trace = streamTrace{}
	tc := s.cfg.tracing
	if tc == nil {
		return
	}
	sampling := tc.sampling
	r := s.Route()
	if r != nil {
		if rt := r.Tracing(); rt != nil {
			sampling.Client = tracing.FromFractional(rt.GetClientSampling(), sampling.Client)
			sampling.Random = tracing.FromFractional(rt.GetRandomSampling(), sampling.Random)
			sampling.Overall = tracing.FromFractional(rt.GetOverallSampling(), sampling.Overall)
		}
	}
	dec := tracing.MutateTraceStatus(&s.req, sampling)
	switch dec.Reason {
	case tracing.RandomSampling:
		tc.randomSampling.Inc()
	case tracing.ServiceForced:
		tc.serviceForced.Inc()
	case tracing.ClientForced:
		tc.clientEnabled.Inc()
	default:
		tc.notTraceable.Inc()
	}
	if tc.tracer == nil {
		return
	}
	o := tracing.StartOptions{Name: "ingress", Kind: tracing.KindServer, Start: s.info.StartTime, Decision: dec, Request: &s.req}
	if tc.egress {
		o.Name = "egress " + s.req.GetString(headers.Authority)
		// With an upstream span of its own, the downstream span is the
		// server side of this hop whatever the direction, as Envoy's.
		if !tc.spawnUpstream {
			o.Kind = tracing.KindClient
		}
	}
	sp := tc.tracer.StartSpan(&o)
	if sp == nil {
		return
	}
	s.trace.span = sp
	sp.SetTag(tracing.TagNodeID, tc.nodeID)
	sp.SetTag(tracing.TagZone, tc.zone)
	if r != nil {
		if d := r.Decorator(); d != nil {
			if d.GetOperation() != "" {
				sp.SetOperation(d.GetOperation())
				s.trace.decoratedOp = d.GetOperation()
			}
			s.trace.propagateDec = d.GetPropagate() == nil || d.GetPropagate().GetValue()
		}
	}
	if tc.egress {
		// The receiving side names its server span after this operation.
		if s.trace.decoratedOp != "" && s.trace.propagateDec {
			s.req.Set("x-envoy-decorator-operation", s.trace.decoratedOp)
		}
		return
	}
	if op, ok := s.req.Get("x-envoy-decorator-operation"); ok {
		if len(op) > 0 {
			sp.SetOperation(string(op))
			s.trace.decoratedOp = ""
		}
		s.req.Del("x-envoy-decorator-operation")
	}
}

// traceResponseHeaders applies x-envoy-decorator-operation to the
// response: an ingress span tells the client its operation, an egress span
// takes the one the server answered with.
func (s *stream) traceResponseHeaders(h *headers.Map) {
	if s.trace.span == nil {
		return
	}
	if !s.cfg.tracing.egress {
		if s.trace.decoratedOp != "" && s.trace.propagateDec {
			h.Set("x-envoy-decorator-operation", s.trace.decoratedOp)
		}
		return
	}
	if op, ok := h.Get("x-envoy-decorator-operation"); ok {
		if len(op) > 0 {
			s.trace.span.SetOperation(string(op))
		}
		h.Del("x-envoy-decorator-operation")
	}
}

// InjectUpstreamTrace is the router's hook, called once the upstream
// request headers are final: it writes the trace context (of a child span
// "router <cluster> egress" when spawn_upstream_span or the router's
// start_child_span ask for one) into h.
func (s *stream) InjectUpstreamTrace(h *headers.Map, cluster string, childSpan bool) {
	sp := s.trace.span
	if sp == nil {
		return
	}
	if childSpan || s.cfg.tracing.spawnUpstream {
		if s.trace.upstream == nil { // retries reuse the attempt's span
			s.trace.upstream = sp.SpawnChild("router "+cluster+" egress", time.Now())
		}
		sp = s.trace.upstream
	}
	if !s.cfg.tracing.noPropagation {
		sp.InjectContext(h)
	}
}

// ActiveSpan is the stream's downstream span; nil when not tracing.
func (s *stream) ActiveSpan() tracing.Span { return s.trace.span }

// finishTrace tags and finishes the stream's spans.
func (s *stream) finishTrace(end time.Time) {
	if s.trace.span == nil {
		return
	}
	tc := s.cfg.tracing
	tags := &tc.tags
	if s.route != nil {
		if rt := s.route.Tracing(); rt != nil && len(rt.GetCustomTags()) > 0 {
			// The route's custom tags are applied after the connection
			// manager's, so a tag both name takes the route's value.
			tags = &tracing.TagConfig{MaxPathTagLength: tc.tags.MaxPathTagLength, Verbose: tc.tags.Verbose,
				CustomTags: append(append([]tracing.CustomTag(nil), tc.tags.CustomTags...), routeTags(rt)...)}
		}
	}
	if s.trace.upstream != nil {
		tracing.FinalizeUpstream(s.trace.upstream, tags, &s.req, &s.info, end)
	}
	tracing.FinalizeDownstream(s.trace.span, tags, &s.req, &s.resp, s.respTrailers, &s.info, end)
	s.trace = streamTrace{}
}

// routeTags compiles a route's custom tags (the route table accepts them
// without compiling); tags that do not compile (metadata, value) are left
// out. This runs per traced request only for routes that set custom tags.
func routeTags(rt *routev3.Tracing) []tracing.CustomTag {
	var out []tracing.CustomTag
	for _, t := range rt.GetCustomTags() {
		if ct, err := tracing.CompileCustomTags([]*tracingv3.CustomTag{t}); err == nil {
			out = append(out, ct...)
		}
	}
	return out
}
