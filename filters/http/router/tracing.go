package router

import "github.com/outrider-proxy/outrider/proxy/headers"

// upstreamTracer is implemented by a connection manager stream that traces:
// it writes the trace context (its span's, or a child span's it starts)
// into the upstream request headers.
type upstreamTracer interface {
	InjectUpstreamTrace(h *headers.Map, cluster string, childSpan bool)
}

// traceUpstream propagates the stream's trace to the upstream request once
// its headers are final; start_child_span asks for a child span.
func (f *filter) traceUpstream(h *headers.Map, cluster string) {
	if t, ok := f.cb.(upstreamTracer); ok {
		t.InjectUpstreamTrace(h, cluster, f.cfg.startChildSpan)
	}
}
