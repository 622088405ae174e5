package upstream

import (
	"strconv"
	"sync/atomic"

	"github.com/outrider-proxy/outrider/telemetry/stats"
)

// ClusterStats are the Envoy cluster stats of one cluster, named
// "cluster.<name>.<stat>". Its counters and gauges are one stats block,
// reached through the accessor methods (UpstreamCxTotal and so on, in
// clusterstats.go) rather than ~80 pointers: every stat Envoy creates
// eagerly exists (at zero) from compile time on. A replaced cluster of the
// same name shares the same stat objects.
type ClusterStats struct {
	scope stats.Scope
	blk   *stats.Block // clusterLayout under scope

	UpstreamCxConnectMs *stats.Histogram
	UpstreamCxLengthMs  *stats.Histogram

	// byCode[c-100] is upstream_rq_<c>, created on first use; the table
	// itself is made on the first response.
	byCode atomic.Pointer[[500]atomic.Pointer[stats.Counter]]
}

func newClusterStats(scope stats.Scope) *ClusterStats {
	return &ClusterStats{
		scope:               scope,
		blk:                 scope.Block(clusterLayout),
		UpstreamCxConnectMs: scope.Histogram("upstream_cx_connect_ms", stats.Milliseconds),
		UpstreamCxLengthMs:  scope.Histogram("upstream_cx_length_ms", stats.Milliseconds),
	}
}

// Scope is the cluster's stats scope ("cluster.<name>."), for stats owned by
// later features (circuit breakers, health checks, outlier detection).
func (s *ClusterStats) Scope() stats.Scope { return s.scope }

// RecordResponse counts one upstream response with HTTP status code as Envoy's
// router does: upstream_rq_completed, upstream_rq_<N>xx and
// upstream_rq_<code>. Codes outside 100..599 only count as completed. It does
// not allocate once a code has been seen.
func (s *ClusterStats) RecordResponse(code int) {
	s.UpstreamRqCompleted().Inc()
	if code < 100 || code >= 600 {
		return
	}
	switch code / 100 {
	case 1:
		s.UpstreamRq1xx().Inc()
	case 2:
		s.UpstreamRq2xx().Inc()
	case 3:
		s.UpstreamRq3xx().Inc()
	case 4:
		s.UpstreamRq4xx().Inc()
	case 5:
		s.UpstreamRq5xx().Inc()
	}
	tab := s.byCode.Load()
	if tab == nil {
		s.byCode.CompareAndSwap(nil, new([500]atomic.Pointer[stats.Counter]))
		tab = s.byCode.Load()
	}
	p := &tab[code-100]
	ctr := p.Load()
	if ctr == nil {
		ctr = s.scope.Counter("upstream_rq_" + strconv.Itoa(code))
		p.Store(ctr)
	}
	ctr.Inc()
}

// HostStats are the per-host numbers shown by /clusters. The zero value is
// ready; every field is updated atomically.
type HostStats struct {
	CxTotal       atomic.Uint64
	CxActive      atomic.Int64
	CxConnectFail atomic.Uint64
	RqTotal       atomic.Uint64
	RqActive      atomic.Int64
	RqError       atomic.Uint64
	RqSuccess     atomic.Uint64
	RqTimeout     atomic.Uint64
}
