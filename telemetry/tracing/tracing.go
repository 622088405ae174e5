// Package tracing is Envoy's HTTP tracing core: the tracer registry (by Envoy
// name, such as envoy.tracers.zipkin), the Span and Tracer contracts the
// connection manager and router drive, x-request-id sampling and span tags.
// A Tracer never blocks a request: finished spans are queued and reported by
// the provider's own goroutine, and dropped when the queue is full.
package tracing

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tracev3 "github.com/envoyproxy/go-control-plane/envoy/config/trace/v3"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/outrider-proxy/outrider/proxy/headers"
	"github.com/outrider-proxy/outrider/proxy/registry"
	"github.com/outrider-proxy/outrider/proxy/upstream"
	"github.com/outrider-proxy/outrider/telemetry/stats"
)

// Span is one traced operation. Methods are called by the goroutine owning
// the stream; Finish hands the span to the tracer's reporter.
type Span interface {
	// SetOperation renames the span (the route decorator's operation).
	SetOperation(name string)
	// SetTag sets a tag (an attribute for OpenTelemetry); a later value wins.
	SetTag(name, value string)
	// InjectContext writes the propagation headers for a request this span
	// makes upstream.
	InjectContext(h *headers.Map)
	// SpawnChild starts a child span (the router's upstream span, CLIENT).
	SpawnChild(name string, start time.Time) Span
	// Log records a timestamped event (verbose tracing).
	Log(at time.Time, event string)
	// SetSampled overrides the sampling decision (unsampled spans are not
	// reported but still propagate).
	SetSampled(sampled bool)
	// Sampled reports the sampling decision.
	Sampled() bool
	// TraceID is the hex trace id, for logs and tests.
	TraceID() string
	// Finish ends the span at end and reports it when sampled.
	Finish(end time.Time)
}

// Kind is the span's role, from the connection manager's traffic direction.
type Kind int

const (
	// KindServer is an ingress span (traffic_direction other than OUTBOUND).
	KindServer Kind = iota
	// KindClient is an egress span (OUTBOUND) and every upstream child span.
	KindClient
)

// Decision is the connection manager's sampling decision for a request.
type Decision struct {
	// Traced is whether the request is sampled (x-request-id trace status
	// other than no-trace).
	Traced bool
	// Reason is the trace status behind Traced, for the tracing stats.
	Reason Reason
}

// StartOptions describe the downstream span a request starts.
type StartOptions struct {
	Name     string       // operation name: "ingress" or "egress <host>"
	Kind     Kind         // KindServer for ingress, KindClient for egress
	Start    time.Time    // the stream's start
	Decision Decision     // the connection manager's sampling decision
	Request  *headers.Map // request headers: propagated context is extracted from them
}

// Tracer is a configured provider. StartSpan returns nil when the provider
// has nothing to trace; Close flushes what is queued and stops reporting.
type Tracer interface {
	StartSpan(o *StartOptions) Span
	Close() error
}

// Context is what a tracer factory may use.
type Context struct {
	// Clusters reaches collector clusters; nil refuses providers that need one.
	Clusters *upstream.Manager
	// Stats holds the tracer's stats (tracing.zipkin.*); nil uses a private store.
	Stats *stats.Store
	// Log receives report failures; nil is slog.Default().
	Log *slog.Logger
	// Node is the bootstrap node (service name, node_id and zone tags); nil is empty.
	Node *corev3.Node
	// LocalAddr is this proxy's address for span endpoints; invalid leaves it out.
	LocalAddr net.IP
}

// Factory builds a tracer from its typed config. Errors name the field.
type Factory func(ctx *Context, cfg *anypb.Any) (Tracer, error)

// Registry holds the tracers by Envoy name and config type URL.
var Registry = registry.New[Factory]("tracer")

// New builds the tracer a tracing.http provider names.
func New(ctx *Context, p *tracev3.Tracing_Http) (Tracer, error) {
	f, err := Registry.Lookup(p.GetName(), p.GetTypedConfig().GetTypeUrl())
	if err != nil {
		return nil, err
	}
	t, err := f(ctx, p.GetTypedConfig())
	if err != nil {
		return nil, fmt.Errorf("%s: %w", p.GetName(), err)
	}
	return t, nil
}

// ClusterHTTPClient is an HTTP client whose connections go to hosts the
// named cluster's load balancer picks, through its transport socket.
func ClusterHTTPClient(m *upstream.Manager, name string, timeout time.Duration) *http.Client {
	dial := func(ctx context.Context, _, _ string) (net.Conn, error) {
		return m.DialCluster(ctx, name)
	}
	return &http.Client{Timeout: timeout, Transport: &http.Transport{DialContext: dial, MaxIdleConnsPerHost: 2}}
}

// LocalAddress is this host's address as Envoy's local info finds it: the
// first non-loopback IPv4 address of an interface, else the loopback one.
// Zipkin puts it in the spans' local endpoint.
func LocalAddress() net.IP {
	localOnce.Do(func() {
		localIP = net.IPv4(127, 0, 0, 1)
		addrs, err := net.InterfaceAddrs()
		if err != nil {
			return
		}
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok && !n.IP.IsLoopback() && n.IP.To4() != nil {
				localIP = n.IP.To4()
				return
			}
		}
	})
	return localIP
}

var (
	localOnce sync.Once
	localIP   net.IP
)

// NoopSpan is a span that records nothing and propagates nothing.
type NoopSpan struct{}

func (NoopSpan) SetOperation(string)               {}
func (NoopSpan) SetTag(string, string)             {}
func (NoopSpan) Log(time.Time, string)             {}
func (NoopSpan) InjectContext(*headers.Map)        {}
func (NoopSpan) SpawnChild(string, time.Time) Span { return NoopSpan{} }
func (NoopSpan) SetSampled(bool)                   {}
func (NoopSpan) Sampled() bool                     { return false }
func (NoopSpan) TraceID() string                   { return "" }
func (NoopSpan) Finish(time.Time)                  {}
