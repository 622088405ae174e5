package upstream

import (
	"strconv"
	"sync/atomic"

	"github.com/outrider-proxy/outrider/telemetry/stats"
)

// ClusterStats are the Envoy cluster stats of one cluster, named
// "cluster.<name>.<stat>". Pointers are taken once at compile time; every
// stat Envoy creates eagerly exists (at zero) from then on. A replaced
// cluster of the same name shares the same stat objects.
type ClusterStats struct {
	scope stats.Scope

	// Connection stats.
	UpstreamCxTotal                     *stats.Counter
	UpstreamCxHttp1Total                *stats.Counter
	UpstreamCxHttp2Total                *stats.Counter
	UpstreamCxHttp3Total                *stats.Counter
	UpstreamCxConnectFail               *stats.Counter
	UpstreamCxConnectTimeout            *stats.Counter
	UpstreamCxConnectAttemptsExceeded   *stats.Counter
	UpstreamCxIdleTimeout               *stats.Counter
	UpstreamCxMaxDurationReached        *stats.Counter
	UpstreamCxMaxRequests               *stats.Counter
	UpstreamCxOverflow                  *stats.Counter
	UpstreamCxPoolOverflow              *stats.Counter
	UpstreamCxProtocolError             *stats.Counter
	UpstreamCxNoneHealthy               *stats.Counter
	UpstreamCxCloseNotify               *stats.Counter
	UpstreamCxDestroy                   *stats.Counter
	UpstreamCxDestroyLocal              *stats.Counter
	UpstreamCxDestroyRemote             *stats.Counter
	UpstreamCxDestroyWithActiveRq       *stats.Counter
	UpstreamCxDestroyLocalWithActiveRq  *stats.Counter
	UpstreamCxDestroyRemoteWithActiveRq *stats.Counter
	UpstreamCxRxBytesTotal              *stats.Counter
	UpstreamCxTxBytesTotal              *stats.Counter
	BindErrors                          *stats.Counter

	UpstreamCxActive          *stats.Gauge
	UpstreamCxRxBytesBuffered *stats.Gauge
	UpstreamCxTxBytesBuffered *stats.Gauge

	UpstreamCxConnectMs *stats.Histogram
	UpstreamCxLengthMs  *stats.Histogram

	// Request stats.
	UpstreamRqTotal                *stats.Counter
	UpstreamRqCompleted            *stats.Counter
	UpstreamRqPendingTotal         *stats.Counter
	UpstreamRqPendingOverflow      *stats.Counter
	UpstreamRqPendingFailureEject  *stats.Counter
	UpstreamRqCancelled            *stats.Counter
	UpstreamRqMaintenanceMode      *stats.Counter
	UpstreamRqTimeout              *stats.Counter
	UpstreamRqMaxDurationReached   *stats.Counter
	UpstreamRqPerTryTimeout        *stats.Counter
	UpstreamRqPerTryIdleTimeout    *stats.Counter
	UpstreamRqRxReset              *stats.Counter
	UpstreamRqTxReset              *stats.Counter
	UpstreamRqRetry                *stats.Counter
	UpstreamRqRetryBackoffExp      *stats.Counter
	UpstreamRqRetryBackoffRateLim  *stats.Counter
	UpstreamRqRetryLimitExceeded   *stats.Counter
	UpstreamRqRetrySuccess         *stats.Counter
	UpstreamRqRetryOverflow        *stats.Counter
	UpstreamInternalRedirectFailed *stats.Counter
	UpstreamInternalRedirectOK     *stats.Counter
	RetryOrShadowAbandoned         *stats.Counter
	UpstreamRq1xx                  *stats.Counter
	UpstreamRq2xx                  *stats.Counter
	UpstreamRq3xx                  *stats.Counter
	UpstreamRq4xx                  *stats.Counter
	UpstreamRq5xx                  *stats.Counter

	UpstreamRqActive        *stats.Gauge
	UpstreamRqPendingActive *stats.Gauge

	// Load balancer and membership stats.
	LbHealthyPanic              *stats.Counter
	LbLocalClusterNotOk         *stats.Counter
	LbRecalculateZoneStructures *stats.Counter
	LbZoneClusterTooSmall       *stats.Counter
	LbZoneNoCapacityLeft        *stats.Counter
	LbZoneNumberDiffers         *stats.Counter // never incremented, as in current Envoy
	LbZoneRoutingAllDirectly    *stats.Counter
	LbZoneRoutingCrossZone      *stats.Counter
	LbZoneRoutingSampled        *stats.Counter
	MembershipChange            *stats.Counter

	MembershipTotal    *stats.Gauge
	MembershipHealthy  *stats.Gauge
	MembershipDegraded *stats.Gauge
	MembershipExcluded *stats.Gauge
	MaxHostWeight      *stats.Gauge

	// Config update stats.
	UpdateAttempt   *stats.Counter
	UpdateSuccess   *stats.Counter
	UpdateFailure   *stats.Counter
	UpdateEmpty     *stats.Counter
	UpdateNoRebuild *stats.Counter
	ConfigReload    *stats.Counter

	Version      *stats.Gauge
	WarmingState *stats.Gauge

	// byCode[c-100] is upstream_rq_<c>, created on first use; the table
	// itself is made on the first response.
	byCode atomic.Pointer[[500]atomic.Pointer[stats.Counter]]
}

// clusterLayout is the counters and gauges of every cluster, in fill order.
var clusterLayout = stats.LayoutOf((&ClusterStats{}).fill)

func newClusterStats(scope stats.Scope) *ClusterStats {
	s := &ClusterStats{
		scope:               scope,
		UpstreamCxConnectMs: scope.Histogram("upstream_cx_connect_ms", stats.Milliseconds),
		UpstreamCxLengthMs:  scope.Histogram("upstream_cx_length_ms", stats.Milliseconds),
	}
	scope.Block(clusterLayout).Fill(s.fill)
	return s
}

// fill sets the counters and gauges (every stat but the histograms) from c
// and g, always in the same order.
func (s *ClusterStats) fill(c func(string) *stats.Counter, g func(string) *stats.Gauge) {
	*s = ClusterStats{
		scope:               s.scope,
		UpstreamCxConnectMs: s.UpstreamCxConnectMs,
		UpstreamCxLengthMs:  s.UpstreamCxLengthMs,

		UpstreamCxTotal:                     c("upstream_cx_total"),
		UpstreamCxHttp1Total:                c("upstream_cx_http1_total"),
		UpstreamCxHttp2Total:                c("upstream_cx_http2_total"),
		UpstreamCxHttp3Total:                c("upstream_cx_http3_total"),
		UpstreamCxConnectFail:               c("upstream_cx_connect_fail"),
		UpstreamCxConnectTimeout:            c("upstream_cx_connect_timeout"),
		UpstreamCxConnectAttemptsExceeded:   c("upstream_cx_connect_attempts_exceeded"),
		UpstreamCxIdleTimeout:               c("upstream_cx_idle_timeout"),
		UpstreamCxMaxDurationReached:        c("upstream_cx_max_duration_reached"),
		UpstreamCxMaxRequests:               c("upstream_cx_max_requests"),
		UpstreamCxOverflow:                  c("upstream_cx_overflow"),
		UpstreamCxPoolOverflow:              c("upstream_cx_pool_overflow"),
		UpstreamCxProtocolError:             c("upstream_cx_protocol_error"),
		UpstreamCxNoneHealthy:               c("upstream_cx_none_healthy"),
		UpstreamCxCloseNotify:               c("upstream_cx_close_notify"),
		UpstreamCxDestroy:                   c("upstream_cx_destroy"),
		UpstreamCxDestroyLocal:              c("upstream_cx_destroy_local"),
		UpstreamCxDestroyRemote:             c("upstream_cx_destroy_remote"),
		UpstreamCxDestroyWithActiveRq:       c("upstream_cx_destroy_with_active_rq"),
		UpstreamCxDestroyLocalWithActiveRq:  c("upstream_cx_destroy_local_with_active_rq"),
		UpstreamCxDestroyRemoteWithActiveRq: c("upstream_cx_destroy_remote_with_active_rq"),
		UpstreamCxRxBytesTotal:              c("upstream_cx_rx_bytes_total"),
		UpstreamCxTxBytesTotal:              c("upstream_cx_tx_bytes_total"),
		BindErrors:                          c("bind_errors"),

		UpstreamCxActive:          g("upstream_cx_active"),
		UpstreamCxRxBytesBuffered: g("upstream_cx_rx_bytes_buffered"),
		UpstreamCxTxBytesBuffered: g("upstream_cx_tx_bytes_buffered"),

		UpstreamRqTotal:                c("upstream_rq_total"),
		UpstreamRqCompleted:            c("upstream_rq_completed"),
		UpstreamRqPendingTotal:         c("upstream_rq_pending_total"),
		UpstreamRqPendingOverflow:      c("upstream_rq_pending_overflow"),
		UpstreamRqPendingFailureEject:  c("upstream_rq_pending_failure_eject"),
		UpstreamRqCancelled:            c("upstream_rq_cancelled"),
		UpstreamRqMaintenanceMode:      c("upstream_rq_maintenance_mode"),
		UpstreamRqTimeout:              c("upstream_rq_timeout"),
		UpstreamRqMaxDurationReached:   c("upstream_rq_max_duration_reached"),
		UpstreamRqPerTryTimeout:        c("upstream_rq_per_try_timeout"),
		UpstreamRqPerTryIdleTimeout:    c("upstream_rq_per_try_idle_timeout"),
		UpstreamRqRxReset:              c("upstream_rq_rx_reset"),
		UpstreamRqTxReset:              c("upstream_rq_tx_reset"),
		UpstreamRqRetry:                c("upstream_rq_retry"),
		UpstreamRqRetryBackoffExp:      c("upstream_rq_retry_backoff_exponential"),
		UpstreamRqRetryBackoffRateLim:  c("upstream_rq_retry_backoff_ratelimited"),
		UpstreamRqRetryLimitExceeded:   c("upstream_rq_retry_limit_exceeded"),
		UpstreamRqRetrySuccess:         c("upstream_rq_retry_success"),
		UpstreamRqRetryOverflow:        c("upstream_rq_retry_overflow"),
		UpstreamInternalRedirectFailed: c("upstream_internal_redirect_failed_total"),
		UpstreamInternalRedirectOK:     c("upstream_internal_redirect_succeeded_total"),
		RetryOrShadowAbandoned:         c("retry_or_shadow_abandoned"),
		// The Nxx counters are created lazily by Envoy (on first response);
		// taking them here only creates the objects, they stay unused (and so
		// hidden from "used only" dumps) until RecordResponse.
		UpstreamRq1xx: c("upstream_rq_1xx"),
		UpstreamRq2xx: c("upstream_rq_2xx"),
		UpstreamRq3xx: c("upstream_rq_3xx"),
		UpstreamRq4xx: c("upstream_rq_4xx"),
		UpstreamRq5xx: c("upstream_rq_5xx"),

		UpstreamRqActive:        g("upstream_rq_active"),
		UpstreamRqPendingActive: g("upstream_rq_pending_active"),

		LbHealthyPanic:              c("lb_healthy_panic"),
		LbLocalClusterNotOk:         c("lb_local_cluster_not_ok"),
		LbRecalculateZoneStructures: c("lb_recalculate_zone_structures"),
		LbZoneClusterTooSmall:       c("lb_zone_cluster_too_small"),
		LbZoneNoCapacityLeft:        c("lb_zone_no_capacity_left"),
		LbZoneNumberDiffers:         c("lb_zone_number_differs"),
		LbZoneRoutingAllDirectly:    c("lb_zone_routing_all_directly"),
		LbZoneRoutingCrossZone:      c("lb_zone_routing_cross_zone"),
		LbZoneRoutingSampled:        c("lb_zone_routing_sampled"),
		MembershipChange:            c("membership_change"),

		MembershipTotal:    g("membership_total"),
		MembershipHealthy:  g("membership_healthy"),
		MembershipDegraded: g("membership_degraded"),
		MembershipExcluded: g("membership_excluded"),
		MaxHostWeight:      g("max_host_weight"),

		UpdateAttempt:   c("update_attempt"),
		UpdateSuccess:   c("update_success"),
		UpdateFailure:   c("update_failure"),
		UpdateEmpty:     c("update_empty"),
		UpdateNoRebuild: c("update_no_rebuild"),
		ConfigReload:    c("config_reload"),

		Version:      g("version"),
		WarmingState: g("warming_state"),
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
	s.UpstreamRqCompleted.Inc()
	if code < 100 || code >= 600 {
		return
	}
	switch code / 100 {
	case 1:
		s.UpstreamRq1xx.Inc()
	case 2:
		s.UpstreamRq2xx.Inc()
	case 3:
		s.UpstreamRq3xx.Inc()
	case 4:
		s.UpstreamRq4xx.Inc()
	case 5:
		s.UpstreamRq5xx.Inc()
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
