// Package otel is Envoy's OpenTelemetry tracer (envoy.tracers.opentelemetry):
// W3C traceparent/tracestate propagation and spans exported as OTLP, by gRPC
// through an envoy_grpc cluster or by HTTP through an http_service cluster.
// One goroutine per tracer exports batches; a full queue drops spans rather
// than block a request.
package otel

import (
	"encoding/hex"
	"errors"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"time"

	tracev3 "github.com/envoyproxy/go-control-plane/envoy/config/trace/v3"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/outrider-proxy/outrider/proxy/confcheck"
	"github.com/outrider-proxy/outrider/proxy/headers"
	"github.com/outrider-proxy/outrider/telemetry/stats"
	"github.com/outrider-proxy/outrider/telemetry/tracing"
)

// Name is the tracer's Envoy name.
const Name = "envoy.tracers.opentelemetry"

// Envoy's defaults (runtime tracing.opentelemetry.flush_interval_ms and
// min_flush_spans; the default service name).
const (
	defaultFlushInterval = 5 * time.Second
	defaultMinFlushSpans = 5
	defaultMaxSpans      = 1024 // max_cache_size's default
	defaultServiceName   = "unknown_service:envoy"
	defaultTimeout       = 5 * time.Second
)

func init() {
	tracing.Registry.Register(Name, []string{"envoy.config.trace.v3.OpenTelemetryConfig"}, newTracer)
}

// Options tune the exporter; zero fields are Envoy's defaults.
type Options struct {
	MinFlushSpans int
	FlushInterval time.Duration
}

// DefaultOptions apply to tracers made from config.
var DefaultOptions Options

// Tracer is a configured OpenTelemetry tracer.
type Tracer struct {
	exp *exporter
}

func newTracer(ctx *tracing.Context, a *anypb.Any) (tracing.Tracer, error) {
	c := &tracev3.OpenTelemetryConfig{}
	if err := a.UnmarshalTo(c); err != nil {
		return nil, err
	}
	return New(ctx, c, DefaultOptions)
}

// New compiles an OpenTelemetryConfig and starts its exporter.
func New(ctx *tracing.Context, c *tracev3.OpenTelemetryConfig, o Options) (*Tracer, error) {
	if err := confcheck.Fields(c, "", "grpc_service", "http_service", "service_name", "max_cache_size"); err != nil {
		return nil, err
	}
	if ctx.Clusters == nil {
		return nil, errors.New("no cluster manager to reach the collector")
	}
	st := ctx.Stats
	if st == nil {
		st = stats.NewStore()
	}
	log := ctx.Log
	if log == nil {
		log = slog.Default()
	}
	name := c.GetServiceName()
	if name == "" {
		name = defaultServiceName
	}
	var send sender
	var err error
	switch {
	case c.GetGrpcService() != nil && c.GetHttpService() != nil:
		return nil, errors.New("grpc_service, http_service: only one may be set")
	case c.GetGrpcService() != nil:
		send, err = newGRPCSender(ctx, c.GetGrpcService())
	case c.GetHttpService() != nil:
		send, err = newHTTPSender(ctx, c.GetHttpService())
	default:
		return nil, errors.New("grpc_service: one of grpc_service or http_service is required by outrider (no-op export is not supported)")
	}
	if err != nil {
		return nil, err
	}
	maxSpans := defaultMaxSpans
	if v := c.GetMaxCacheSize(); v != nil {
		maxSpans = int(v.GetValue())
	}
	res := []*commonpb.KeyValue{strAttr("service.name", name)}
	return &Tracer{exp: newExporter(send, res, maxSpans, st.Scope("tracing.opentelemetry"), log, o)}, nil
}

// Close exports what is buffered and stops the exporter.
func (t *Tracer) Close() error {
	t.exp.close()
	return nil
}

func strAttr(k, v string) *commonpb.KeyValue {
	return &commonpb.KeyValue{Key: k, Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: v}}}
}

// spanContext is a W3C trace context.
type spanContext struct {
	trace   [16]byte
	id      [8]byte
	parent  [8]byte
	sampled bool
	state   string // tracestate, propagated as is
}

// parseTraceparent reads "<2 hex>-<32 hex>-<16 hex>-<2 hex>" as Envoy's
// extractor does: exactly 55 characters, hex fields, ids not all zero
// (the version is not checked further).
func parseTraceparent(v []byte) (c spanContext, ok bool) {
	if len(v) != 55 || v[2] != '-' || v[35] != '-' || v[52] != '-' {
		return c, false
	}
	var ver, flags [1]byte
	if _, err := hex.Decode(ver[:], v[:2]); err != nil {
		return c, false
	}
	if _, err := hex.Decode(c.trace[:], v[3:35]); err != nil {
		return c, false
	}
	if _, err := hex.Decode(c.id[:], v[36:52]); err != nil {
		return c, false
	}
	if _, err := hex.Decode(flags[:], v[53:55]); err != nil {
		return c, false
	}
	if c.trace == [16]byte{} || c.id == [8]byte{} {
		return c, false
	}
	c.sampled = flags[0]&1 != 0
	return c, true
}

func randomBytes(b []byte) {
	for {
		for i := range b {
			b[i] = byte(rand.Uint32())
		}
		for _, c := range b {
			if c != 0 {
				return
			}
		}
	}
}

// StartSpan starts the downstream span: a child of the traceparent the
// request carries (whose sampled flag then wins), else a new trace; a
// malformed traceparent traces nothing (nil), as Envoy's.
func (t *Tracer) StartSpan(o *tracing.StartOptions) tracing.Span {
	s := &span{t: t, name: o.Name, kind: o.Kind, start: o.Start}
	s.ctx.sampled = o.Decision.Traced
	if v, ok := o.Request.Get("traceparent"); ok {
		in, ok := parseTraceparent(v)
		if !ok {
			return nil // Envoy's null span: nothing traced, nothing propagated
		}
		s.ctx.trace, s.ctx.parent, s.ctx.sampled = in.trace, in.id, in.sampled
		if st, ok := o.Request.Get("tracestate"); ok {
			s.ctx.state = string(st)
		}
	}
	if s.ctx.trace == [16]byte{} {
		randomBytes(s.ctx.trace[:])
	}
	randomBytes(s.ctx.id[:])
	return s
}

// span is one OpenTelemetry span; the stream's goroutine owns it until Finish.
type span struct {
	t      *Tracer
	ctx    spanContext
	name   string
	kind   tracing.Kind
	start  time.Time
	attrs  []*commonpb.KeyValue
	events []*tracepb.Span_Event
	err    bool
	once   sync.Once
}

func (s *span) SetOperation(name string) { s.name = name }

// SetTag sets a string attribute (an empty name is dropped, a repeated
// one overwritten, as Envoy's); error=true also sets the ERROR status.
func (s *span) SetTag(name, value string) {
	if name == "" {
		return
	}
	if name == tracing.TagError && value == "true" {
		s.err = true
	}
	for _, a := range s.attrs {
		if a.Key == name {
			a.Value = &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: value}}
			return
		}
	}
	s.attrs = append(s.attrs, strAttr(name, value))
}

// Log adds a span event (verbose tracing).
func (s *span) Log(at time.Time, event string) {
	s.events = append(s.events, &tracepb.Span_Event{TimeUnixNano: uint64(at.UnixNano()), Name: event})
}

func (s *span) traceparent() string {
	var b strings.Builder
	b.Grow(55)
	b.WriteString("00-")
	b.WriteString(hex.EncodeToString(s.ctx.trace[:]))
	b.WriteByte('-')
	b.WriteString(hex.EncodeToString(s.ctx.id[:]))
	if s.ctx.sampled {
		b.WriteString("-01")
	} else {
		b.WriteString("-00")
	}
	return b.String()
}

func (s *span) InjectContext(h *headers.Map) {
	h.Set("traceparent", s.traceparent())
	if s.ctx.state != "" {
		h.Set("tracestate", s.ctx.state)
	}
}

func (s *span) SetSampled(v bool) { s.ctx.sampled = v }
func (s *span) Sampled() bool     { return s.ctx.sampled }
func (s *span) TraceID() string   { return hex.EncodeToString(s.ctx.trace[:]) }

func (s *span) SpawnChild(name string, start time.Time) tracing.Span {
	c := &span{t: s.t, name: name, kind: tracing.KindClient, start: start, ctx: s.ctx}
	c.ctx.parent = s.ctx.id
	randomBytes(c.ctx.id[:])
	return c
}

func (s *span) Finish(end time.Time) {
	s.once.Do(func() {
		if !s.ctx.sampled {
			return
		}
		p := &tracepb.Span{
			TraceId:           s.ctx.trace[:],
			SpanId:            s.ctx.id[:],
			TraceState:        s.ctx.state,
			Name:              s.name,
			Kind:              tracepb.Span_SPAN_KIND_SERVER,
			StartTimeUnixNano: uint64(s.start.UnixNano()),
			EndTimeUnixNano:   uint64(end.UnixNano()),
			Attributes:        s.attrs,
			Events:            s.events,
		}
		if s.kind == tracing.KindClient {
			p.Kind = tracepb.Span_SPAN_KIND_CLIENT
		}
		if s.ctx.parent != [8]byte{} {
			p.ParentSpanId = s.ctx.parent[:]
		}
		if s.err {
			p.Status = &tracepb.Status{Code: tracepb.Status_STATUS_CODE_ERROR}
		}
		s.t.exp.add(p)
	})
}
