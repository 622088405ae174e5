package zipkin

import (
	"time"

	"github.com/outrider-proxy/outrider/telemetry/tracing"
)

// Span is a Zipkin v2 span as the JSON API (POST /api/v2/spans) takes it.
type Span struct {
	TraceID       string            `json:"traceId"`
	ParentID      string            `json:"parentId,omitempty"`
	ID            string            `json:"id"`
	Kind          string            `json:"kind,omitempty"`
	Name          string            `json:"name"`
	Timestamp     int64             `json:"timestamp"`
	Duration      int64             `json:"duration"`
	Shared        bool              `json:"shared,omitempty"`
	LocalEndpoint *Endpoint         `json:"localEndpoint,omitempty"`
	Tags          map[string]string `json:"tags,omitempty"`
	Annotations   []Annotation      `json:"annotations,omitempty"`
}

// Annotation is a timestamped event on a span.
type Annotation struct {
	Timestamp int64  `json:"timestamp"`
	Value     string `json:"value"`
}

// Endpoint is a Zipkin endpoint.
type Endpoint struct {
	ServiceName string `json:"serviceName,omitempty"`
	IPv4        string `json:"ipv4,omitempty"`
	IPv6        string `json:"ipv6,omitempty"`
	Port        int    `json:"port,omitempty"`
}

func (s *span) json(end time.Time) Span {
	out := Span{
		TraceID:       s.ctx.traceID(),
		ID:            string(appendHex64(nil, s.ctx.id)),
		Name:          s.name,
		Timestamp:     s.start.UnixMicro(),
		Duration:      max(end.Sub(s.start).Microseconds(), 1),
		Shared:        s.shared,
		LocalEndpoint: s.t.local,
		Tags:          s.tags,
		Annotations:   s.logs,
		Kind:          "SERVER",
	}
	if s.kind == tracing.KindClient {
		out.Kind = "CLIENT"
	}
	if s.ctx.parent != 0 {
		out.ParentID = string(appendHex64(nil, s.ctx.parent))
	}
	return out
}
