package zipkin

import (
	"testing"
	"time"

	"github.com/outrider-proxy/outrider/telemetry/tracing"
)

func TestStartSpanContexts(t *testing.T) {
	in := hdrs("x-b3-traceid", "0000000000000001", "x-b3-spanid", "0000000000000002", "x-b3-parentspanid", "0000000000000003")
	tests := []struct {
		name       string
		kind       tracing.Kind
		shared     bool
		h          bool // the request carries the context
		wantShared bool
		reuseID    bool // the span takes the caller's id and parent
	}{
		{"server shared", tracing.KindServer, true, true, true, true},
		{"server not shared", tracing.KindServer, false, true, false, false},
		{"client", tracing.KindClient, true, true, false, false},
		{"root server", tracing.KindServer, true, false, true, false},
		{"root client", tracing.KindClient, true, false, false, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tr := &Tracer{shared: tc.shared}
			h := hdrs()
			if tc.h {
				h = in
			}
			s := tr.StartSpan(&tracing.StartOptions{Kind: tc.kind, Start: time.Now(), Decision: tracing.Decision{Traced: true}, Request: h}).(*span)
			if s.shared != tc.wantShared {
				t.Errorf("shared %v", s.shared)
			}
			switch {
			case tc.reuseID:
				if s.ctx.id != 2 || s.ctx.parent != 3 || s.ctx.traceLow != 1 {
					t.Errorf("shared context: %+v", s.ctx)
				}
			case tc.h:
				if s.ctx.id == 2 || s.ctx.parent != 2 || s.ctx.traceLow != 1 {
					t.Errorf("child context: %+v", s.ctx)
				}
			default:
				if s.ctx.parent != 0 || s.ctx.id != s.ctx.traceLow || s.ctx.traceHigh != 0 {
					t.Errorf("root context: %+v", s.ctx)
				}
			}
			if !s.Sampled() {
				t.Error("not sampled")
			}
		})
	}
}

func TestStartSpanMalformedIsNull(t *testing.T) {
	tr := &Tracer{shared: true}
	if s := tr.StartSpan(&tracing.StartOptions{Request: hdrs("b3", "garbage-1")}); s != nil {
		t.Errorf("malformed b3 started %T", s)
	}
	s := tr.StartSpan(&tracing.StartOptions{Request: hdrs(":authority", "example.com")}).(*span)
	if s.name != "example.com" {
		t.Errorf("span named %q, want the host", s.name)
	}
}
