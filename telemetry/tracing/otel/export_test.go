package otel

import (
	"context"
	"errors"
	"testing"
	"time"

	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"

	"github.com/outrider-proxy/outrider/telemetry/stats"
)

// fakeSender records export requests; fail makes every export fail and
// hold blocks each one until released.
type fakeSender struct {
	got  chan *coltracepb.ExportTraceServiceRequest
	fail bool
	hold chan struct{}
}

func (f *fakeSender) send(_ context.Context, r *coltracepb.ExportTraceServiceRequest) error {
	if f.hold != nil {
		<-f.hold
	}
	f.got <- r
	if f.fail {
		return errors.New("collector down")
	}
	return nil
}

func (f *fakeSender) close() {}

func counter(st *stats.Store, name string) int64 { v, _ := st.Value(name); return v }

func TestExporterBatchesAndCounts(t *testing.T) {
	st := stats.NewStore()
	f := &fakeSender{got: make(chan *coltracepb.ExportTraceServiceRequest, 8), fail: true}
	e := newExporter(f, nil, 10, st.Scope("tracing.opentelemetry"), nil, Options{MinFlushSpans: 3, FlushInterval: time.Hour})
	for range 3 {
		e.add(&tracepb.Span{Name: "s"})
	}
	select {
	case r := <-f.got:
		if n := len(r.GetResourceSpans()[0].GetScopeSpans()[0].GetSpans()); n != 3 {
			t.Errorf("batch of %d spans, want 3", n)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("min_flush_spans did not export")
	}
	e.close()
	if counter(st, "tracing.opentelemetry.spans_sent") != 3 || counter(st, "tracing.opentelemetry.export_failed") != 1 {
		t.Errorf("spans_sent %d export_failed %d", counter(st, "tracing.opentelemetry.spans_sent"), counter(st, "tracing.opentelemetry.export_failed"))
	}
	e.add(&tracepb.Span{}) // after close: dropped, not blocked
	if counter(st, "tracing.opentelemetry.spans_dropped") != 1 {
		t.Errorf("spans_dropped after close %d", counter(st, "tracing.opentelemetry.spans_dropped"))
	}
}

func TestExporterOverflowDoesNotBlock(t *testing.T) {
	st := stats.NewStore()
	f := &fakeSender{got: make(chan *coltracepb.ExportTraceServiceRequest, 8), hold: make(chan struct{})}
	e := newExporter(f, nil, 5, st.Scope("tracing.opentelemetry"), nil, Options{MinFlushSpans: 1, FlushInterval: time.Hour})
	e.add(&tracepb.Span{}) // taken by the export that hangs
	deadline := time.Now().Add(5 * time.Second)
	for {
		e.mu.Lock()
		n := len(e.pending)
		e.mu.Unlock()
		if n == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the first span was not taken")
		}
		time.Sleep(time.Millisecond)
	}
	for range 8 {
		e.add(&tracepb.Span{})
	}
	if got := counter(st, "tracing.opentelemetry.spans_dropped"); got != 3 {
		t.Errorf("spans_dropped %d, want 3 (max_cache_size 5)", got)
	}
	close(f.hold)
	e.close()
}
