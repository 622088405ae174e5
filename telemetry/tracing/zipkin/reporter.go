package zipkin

import (
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/outrider-proxy/outrider/proxy/upstream"
	"github.com/outrider-proxy/outrider/telemetry/stats"
	"github.com/outrider-proxy/outrider/telemetry/tracing"
)

// reporter buffers finished spans and posts them from its own goroutine.
type reporter struct {
	clusters *upstream.Manager
	cluster  string
	url      string
	host     string
	headers  [][2]string
	client   *http.Client
	log      *slog.Logger
	minFlush int
	interval time.Duration

	spansSent, reportsSent, reportsDropped, reportsFailed, timerFlushed, skippedNoCluster *stats.Counter

	mu      sync.Mutex
	pending []Span
	closed  bool

	kick chan struct{}
	stop chan struct{}
	done chan struct{}
	once sync.Once
}

func newReporter(m *upstream.Manager, d collector, sc stats.Scope, log *slog.Logger, o Options) *reporter {
	r := &reporter{
		clusters: m, cluster: d.cluster, host: d.host, url: "http://" + d.cluster + d.path, headers: d.headers,
		client: tracing.ClusterHTTPClient(m, d.cluster, d.timeout), log: log,
		minFlush: defaultMinFlushSpans, interval: defaultFlushInterval,
		spansSent: sc.Counter("spans_sent"), reportsSent: sc.Counter("reports_sent"),
		reportsDropped: sc.Counter("reports_dropped"), reportsFailed: sc.Counter("reports_failed"),
		timerFlushed: sc.Counter("timer_flushed"), skippedNoCluster: sc.Counter("reports_skipped_no_cluster"),
		kick: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{}),
	}
	if r.log == nil {
		r.log = slog.Default()
	}
	if o.MinFlushSpans > 0 {
		r.minFlush = o.MinFlushSpans
	}
	if o.FlushInterval > 0 {
		r.interval = o.FlushInterval
	}
	go r.run()
	return r
}

// add queues a span; it never blocks on the network.
func (r *reporter) add(s Span) {
	r.mu.Lock()
	if r.closed || len(r.pending) >= maxBufferedSpans {
		r.mu.Unlock()
		r.reportsDropped.Inc()
		return
	}
	r.pending = append(r.pending, s)
	full := len(r.pending) >= r.minFlush
	r.mu.Unlock()
	if full {
		select {
		case r.kick <- struct{}{}:
		default:
		}
	}
}

func (r *reporter) take() []Span {
	r.mu.Lock()
	defer r.mu.Unlock()
	p := r.pending
	r.pending = nil
	return p
}

func (r *reporter) run() {
	defer close(r.done)
	tick := time.NewTicker(r.interval)
	defer tick.Stop()
	for {
		select {
		case <-r.stop:
			r.flush(r.take())
			return
		case <-tick.C:
			r.timerFlushed.Inc()
			r.flush(r.take())
		case <-r.kick:
			r.flush(r.take())
		}
	}
}

// flush posts spans as one report, counted as Envoy counts it: spans_sent
// at send time, then reports_sent (202), reports_dropped (another status)
// or reports_failed (no response).
func (r *reporter) flush(spans []Span) {
	if len(spans) == 0 {
		return
	}
	if r.clusters.Get(r.cluster) == nil {
		r.skippedNoCluster.Inc()
		return
	}
	body, err := json.Marshal(spans)
	if err != nil {
		r.reportsFailed.Inc()
		return
	}
	r.spansSent.Add(uint64(len(spans)))
	req, err := http.NewRequest(http.MethodPost, r.url, bytes.NewReader(body))
	if err != nil {
		r.reportsFailed.Inc()
		return
	}
	req.Host = r.host
	req.Header.Set("Content-Type", "application/json")
	for _, h := range r.headers {
		req.Header.Set(h[0], h[1])
	}
	resp, err := r.client.Do(req)
	if err != nil {
		r.reportsFailed.Inc()
		r.log.Debug("zipkin report failed", "cluster", r.cluster, "err", err)
		return
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		r.reportsDropped.Inc()
		return
	}
	r.reportsSent.Inc()
}

func (r *reporter) close() {
	r.once.Do(func() {
		r.mu.Lock()
		r.closed = true
		r.mu.Unlock()
		close(r.stop)
		<-r.done
		r.client.CloseIdleConnections()
	})
}
