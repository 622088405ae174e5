package otel

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"sync"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	resourcepb "go.opentelemetry.io/proto/otlp/resource/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"github.com/outrider-proxy/outrider/proxy/confcheck"
	"github.com/outrider-proxy/outrider/telemetry/accesslog/grpclog"
	"github.com/outrider-proxy/outrider/telemetry/stats"
	"github.com/outrider-proxy/outrider/telemetry/tracing"
)

// sender delivers one export request.
type sender interface {
	send(ctx context.Context, req *coltracepb.ExportTraceServiceRequest) error
	close()
}

// grpcSender exports through an envoy_grpc cluster.
type grpcSender struct {
	dial    func(context.Context) (grpc.ClientConnInterface, error)
	timeout time.Duration
	conn    grpc.ClientConnInterface
}

func newGRPCSender(ctx *tracing.Context, gs *corev3.GrpcService) (*grpcSender, error) {
	if gs.GetEnvoyGrpc() == nil {
		return nil, errors.New("grpc_service: only envoy_grpc is supported by outrider yet")
	}
	if err := confcheck.Fields(gs, "grpc_service", "envoy_grpc", "timeout"); err != nil {
		return nil, err
	}
	if err := confcheck.Fields(gs.GetEnvoyGrpc(), "grpc_service.envoy_grpc", "cluster_name", "authority"); err != nil {
		return nil, err
	}
	name := gs.GetEnvoyGrpc().GetClusterName()
	if ctx.Clusters.Get(name) == nil {
		return nil, fmt.Errorf("grpc_service.envoy_grpc.cluster_name: unknown cluster %q", name)
	}
	s := &grpcSender{dial: grpclog.ClusterDialer(ctx.Clusters, name, gs.GetEnvoyGrpc().GetAuthority()), timeout: defaultTimeout}
	if d := gs.GetTimeout(); d != nil && d.AsDuration() > 0 {
		s.timeout = d.AsDuration()
	}
	return s, nil
}

func (s *grpcSender) send(ctx context.Context, req *coltracepb.ExportTraceServiceRequest) error {
	if s.conn == nil {
		c, err := s.dial(ctx)
		if err != nil {
			return err
		}
		s.conn = c
	}
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	_, err := coltracepb.NewTraceServiceClient(s.conn).Export(ctx, req)
	return err
}

func (s *grpcSender) close() {
	if c, ok := s.conn.(io.Closer); ok {
		_ = c.Close()
	}
}

// httpSender posts OTLP protobuf to an http_service.
type httpSender struct {
	client *http.Client
	url    string
	host   string
	hdrs   [][2]string
}

func newHTTPSender(ctx *tracing.Context, hs *corev3.HttpService) (*httpSender, error) {
	if err := confcheck.Fields(hs, "http_service", "http_uri", "request_headers_to_add"); err != nil {
		return nil, err
	}
	u := hs.GetHttpUri()
	cluster := u.GetCluster()
	if ctx.Clusters.Get(cluster) == nil {
		return nil, fmt.Errorf("http_service.http_uri.cluster: unknown cluster %q", cluster)
	}
	pu, err := url.Parse(u.GetUri())
	if err != nil || pu.Host == "" {
		return nil, fmt.Errorf("http_service.http_uri.uri: %q is not a URL", u.GetUri())
	}
	timeout := defaultTimeout
	if d := u.GetTimeout(); d != nil && d.AsDuration() > 0 {
		timeout = d.AsDuration()
	}
	s := &httpSender{client: tracing.ClusterHTTPClient(ctx.Clusters, cluster, timeout), host: pu.Host}
	pu.Scheme, pu.Host = "http", cluster
	s.url = pu.String()
	for i, h := range hs.GetRequestHeadersToAdd() {
		if h.GetHeader().GetKey() == "" {
			return nil, fmt.Errorf("http_service.request_headers_to_add[%d].header.key: required", i)
		}
		s.hdrs = append(s.hdrs, [2]string{h.GetHeader().GetKey(), h.GetHeader().GetValue()})
	}
	return s, nil
}

func (s *httpSender) send(ctx context.Context, req *coltracepb.ExportTraceServiceRequest) error {
	body, err := proto.Marshal(req)
	if err != nil {
		return err
	}
	hr, err := http.NewRequestWithContext(ctx, http.MethodPost, s.url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	hr.Host = s.host
	hr.Header.Set("Content-Type", "application/x-protobuf")
	for _, h := range s.hdrs {
		hr.Header.Set(h[0], h[1])
	}
	resp, err := s.client.Do(hr)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("collector answered %d", resp.StatusCode)
	}
	return nil
}

func (s *httpSender) close() { s.client.CloseIdleConnections() }

// exporter buffers spans and exports them from its own goroutine.
type exporter struct {
	send     sender
	resource *resourcepb.Resource
	maxSpans int
	minFlush int
	interval time.Duration
	log      *slog.Logger

	spansSent, spansDropped, timerFlushed, httpFailed *stats.Counter

	mu      sync.Mutex
	pending []*tracepb.Span
	closed  bool

	kick, stop, done chan struct{}
	once             sync.Once
}

func newExporter(s sender, res []*commonpb.KeyValue, maxSpans int, sc stats.Scope, log *slog.Logger, o Options) *exporter {
	e := &exporter{
		send: s, resource: &resourcepb.Resource{Attributes: res}, maxSpans: maxSpans, log: log,
		minFlush: defaultMinFlushSpans, interval: defaultFlushInterval,
		spansSent: sc.Counter("spans_sent"), spansDropped: sc.Counter("spans_dropped"),
		timerFlushed: sc.Counter("timer_flushed"), httpFailed: sc.Counter("export_failed"),
		kick: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{}),
	}
	if e.log == nil {
		e.log = slog.Default()
	}
	if o.MinFlushSpans > 0 {
		e.minFlush = o.MinFlushSpans
	}
	if o.FlushInterval > 0 {
		e.interval = o.FlushInterval
	}
	go e.run()
	return e
}

func (e *exporter) add(s *tracepb.Span) {
	e.mu.Lock()
	if e.closed || len(e.pending) >= e.maxSpans {
		e.mu.Unlock()
		e.spansDropped.Inc()
		return
	}
	e.pending = append(e.pending, s)
	full := len(e.pending) >= e.minFlush
	e.mu.Unlock()
	if full {
		select {
		case e.kick <- struct{}{}:
		default:
		}
	}
}

func (e *exporter) take() []*tracepb.Span {
	e.mu.Lock()
	defer e.mu.Unlock()
	p := e.pending
	e.pending = nil
	return p
}

func (e *exporter) run() {
	defer close(e.done)
	tick := time.NewTicker(e.interval)
	defer tick.Stop()
	for {
		select {
		case <-e.stop:
			e.flush(e.take())
			return
		case <-tick.C:
			e.timerFlushed.Inc()
			e.flush(e.take())
		case <-e.kick:
			e.flush(e.take())
		}
	}
}

func (e *exporter) flush(spans []*tracepb.Span) {
	if len(spans) == 0 {
		return
	}
	req := &coltracepb.ExportTraceServiceRequest{ResourceSpans: []*tracepb.ResourceSpans{{
		Resource: e.resource,
		ScopeSpans: []*tracepb.ScopeSpans{{
			Scope: &commonpb.InstrumentationScope{Name: "envoy"},
			Spans: spans,
		}},
	}}}
	e.spansSent.Add(uint64(len(spans)))
	if err := e.send.send(context.Background(), req); err != nil {
		e.httpFailed.Inc()
		e.log.Debug("opentelemetry export failed", "err", err)
	}
}

func (e *exporter) close() {
	e.once.Do(func() {
		e.mu.Lock()
		e.closed = true
		e.mu.Unlock()
		close(e.stop)
		<-e.done
		e.send.close()
	})
}
