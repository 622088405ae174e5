package zipkin

import (
	"math/rand/v2"
	"sync"
	"time"

	"github.com/outrider-proxy/outrider/proxy/headers"
	"github.com/outrider-proxy/outrider/telemetry/tracing"
)

// span is one Zipkin span; the stream's goroutine owns it until Finish.
type span struct {
	t      *Tracer
	ctx    spanContext
	name   string
	kind   tracing.Kind
	shared bool // a server span that reuses the client's span id
	start  time.Time
	tags   map[string]string
	logs   []Annotation
	once   sync.Once
}

func nonZero() uint64 {
	for {
		if v := rand.Uint64(); v != 0 {
			return v
		}
	}
}

func (s *span) SetOperation(name string) { s.name = name }

// SetTag records a tag; Envoy's Zipkin spans drop empty names and values.
func (s *span) SetTag(name, value string) {
	if name == "" || value == "" {
		return
	}
	if s.tags == nil {
		s.tags = make(map[string]string, 24)
	}
	s.tags[name] = value
}

// Log adds an annotation (verbose tracing).
func (s *span) Log(at time.Time, event string) {
	s.logs = append(s.logs, Annotation{Timestamp: at.UnixMicro(), Value: event})
}

func (s *span) InjectContext(h *headers.Map) { s.ctx.inject(h) }
func (s *span) SetSampled(v bool)            { s.ctx.sampled = v }
func (s *span) Sampled() bool                { return s.ctx.sampled }
func (s *span) TraceID() string              { return s.ctx.traceID() }

func (s *span) SpawnChild(name string, start time.Time) tracing.Span {
	c := &span{t: s.t, name: name, kind: tracing.KindClient, start: start, ctx: s.ctx}
	c.ctx.parent, c.ctx.id = s.ctx.id, nonZero()
	return c
}

func (s *span) Finish(end time.Time) {
	s.once.Do(func() {
		if s.ctx.sampled {
			s.t.rep.add(s.json(end))
		}
	})
}
