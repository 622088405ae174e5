package upstream

import "github.com/outrider-proxy/outrider/telemetry/stats"

// The cluster's counters and gauges by their index in clusterLayout, in the
// order Envoy's ALL_CLUSTER_STATS lists them here (the order is only the
// layout's; names are what the store lists).
const (
	ciUpstreamCxTotal = iota
	ciUpstreamCxHttp1Total
	ciUpstreamCxHttp2Total
	ciUpstreamCxHttp3Total
	ciUpstreamCxConnectFail
	ciUpstreamCxConnectTimeout
	ciUpstreamCxConnectAttemptsExceeded
	ciUpstreamCxIdleTimeout
	ciUpstreamCxMaxDurationReached
	ciUpstreamCxMaxRequests
	ciUpstreamCxOverflow
	ciUpstreamCxPoolOverflow
	ciUpstreamCxProtocolError
	ciUpstreamCxNoneHealthy
	ciUpstreamCxCloseNotify
	ciUpstreamCxDestroy
	ciUpstreamCxDestroyLocal
	ciUpstreamCxDestroyRemote
	ciUpstreamCxDestroyWithActiveRq
	ciUpstreamCxDestroyLocalWithActiveRq
	ciUpstreamCxDestroyRemoteWithActiveRq
	ciUpstreamCxRxBytesTotal
	ciUpstreamCxTxBytesTotal
	ciBindErrors
	ciUpstreamRqTotal
	ciUpstreamRqCompleted
	ciUpstreamRqPendingTotal
	ciUpstreamRqPendingOverflow
	ciUpstreamRqPendingFailureEject
	ciUpstreamRqCancelled
	ciUpstreamRqMaintenanceMode
	ciUpstreamRqTimeout
	ciUpstreamRqMaxDurationReached
	ciUpstreamRqPerTryTimeout
	ciUpstreamRqPerTryIdleTimeout
	ciUpstreamRqRxReset
	ciUpstreamRqTxReset
	ciUpstreamRqRetry
	ciUpstreamRqRetryBackoffExp
	ciUpstreamRqRetryBackoffRateLim
	ciUpstreamRqRetryLimitExceeded
	ciUpstreamRqRetrySuccess
	ciUpstreamRqRetryOverflow
	ciUpstreamInternalRedirectFailed
	ciUpstreamInternalRedirectOK
	ciRetryOrShadowAbandoned
	ciUpstreamRq1xx
	ciUpstreamRq2xx
	ciUpstreamRq3xx
	ciUpstreamRq4xx
	ciUpstreamRq5xx
	ciLbHealthyPanic
	ciLbLocalClusterNotOk
	ciLbRecalculateZoneStructures
	ciLbZoneClusterTooSmall
	ciLbZoneNoCapacityLeft
	ciLbZoneNumberDiffers
	ciLbZoneRoutingAllDirectly
	ciLbZoneRoutingCrossZone
	ciLbZoneRoutingSampled
	ciMembershipChange
	ciUpdateAttempt
	ciUpdateSuccess
	ciUpdateFailure
	ciUpdateEmpty
	ciUpdateNoRebuild
	ciConfigReload
	numClusterCounters
)

const (
	giUpstreamCxActive = iota
	giUpstreamCxRxBytesBuffered
	giUpstreamCxTxBytesBuffered
	giUpstreamRqActive
	giUpstreamRqPendingActive
	giMembershipTotal
	giMembershipHealthy
	giMembershipDegraded
	giMembershipExcluded
	giMaxHostWeight
	giVersion
	giWarmingState
	numClusterGauges
)

// clusterLayout is the counters and gauges of every cluster, by the indices above.
var clusterLayout = stats.NewLayout([]string{
	"upstream_cx_total",
	"upstream_cx_http1_total",
	"upstream_cx_http2_total",
	"upstream_cx_http3_total",
	"upstream_cx_connect_fail",
	"upstream_cx_connect_timeout",
	"upstream_cx_connect_attempts_exceeded",
	"upstream_cx_idle_timeout",
	"upstream_cx_max_duration_reached",
	"upstream_cx_max_requests",
	"upstream_cx_overflow",
	"upstream_cx_pool_overflow",
	"upstream_cx_protocol_error",
	"upstream_cx_none_healthy",
	"upstream_cx_close_notify",
	"upstream_cx_destroy",
	"upstream_cx_destroy_local",
	"upstream_cx_destroy_remote",
	"upstream_cx_destroy_with_active_rq",
	"upstream_cx_destroy_local_with_active_rq",
	"upstream_cx_destroy_remote_with_active_rq",
	"upstream_cx_rx_bytes_total",
	"upstream_cx_tx_bytes_total",
	"bind_errors",
	"upstream_rq_total",
	"upstream_rq_completed",
	"upstream_rq_pending_total",
	"upstream_rq_pending_overflow",
	"upstream_rq_pending_failure_eject",
	"upstream_rq_cancelled",
	"upstream_rq_maintenance_mode",
	"upstream_rq_timeout",
	"upstream_rq_max_duration_reached",
	"upstream_rq_per_try_timeout",
	"upstream_rq_per_try_idle_timeout",
	"upstream_rq_rx_reset",
	"upstream_rq_tx_reset",
	"upstream_rq_retry",
	"upstream_rq_retry_backoff_exponential",
	"upstream_rq_retry_backoff_ratelimited",
	"upstream_rq_retry_limit_exceeded",
	"upstream_rq_retry_success",
	"upstream_rq_retry_overflow",
	"upstream_internal_redirect_failed_total",
	"upstream_internal_redirect_succeeded_total",
	"retry_or_shadow_abandoned",
	"upstream_rq_1xx",
	"upstream_rq_2xx",
	"upstream_rq_3xx",
	"upstream_rq_4xx",
	"upstream_rq_5xx",
	"lb_healthy_panic",
	"lb_local_cluster_not_ok",
	"lb_recalculate_zone_structures",
	"lb_zone_cluster_too_small",
	"lb_zone_no_capacity_left",
	"lb_zone_number_differs",
	"lb_zone_routing_all_directly",
	"lb_zone_routing_cross_zone",
	"lb_zone_routing_sampled",
	"membership_change",
	"update_attempt",
	"update_success",
	"update_failure",
	"update_empty",
	"update_no_rebuild",
	"config_reload",
}, []string{
	"upstream_cx_active",
	"upstream_cx_rx_bytes_buffered",
	"upstream_cx_tx_bytes_buffered",
	"upstream_rq_active",
	"upstream_rq_pending_active",
	"membership_total",
	"membership_healthy",
	"membership_degraded",
	"membership_excluded",
	"max_host_weight",
	"version",
	"warming_state",
})

// UpstreamCxTotal is cluster.<name>.upstream_cx_total.
func (s *ClusterStats) UpstreamCxTotal() *stats.Counter { return s.blk.Counter(ciUpstreamCxTotal) }

// UpstreamCxHttp1Total is cluster.<name>.upstream_cx_http1_total.
func (s *ClusterStats) UpstreamCxHttp1Total() *stats.Counter {
	return s.blk.Counter(ciUpstreamCxHttp1Total)
}

// UpstreamCxHttp2Total is cluster.<name>.upstream_cx_http2_total.
func (s *ClusterStats) UpstreamCxHttp2Total() *stats.Counter {
	return s.blk.Counter(ciUpstreamCxHttp2Total)
}

// UpstreamCxHttp3Total is cluster.<name>.upstream_cx_http3_total.
func (s *ClusterStats) UpstreamCxHttp3Total() *stats.Counter {
	return s.blk.Counter(ciUpstreamCxHttp3Total)
}

// UpstreamCxConnectFail is cluster.<name>.upstream_cx_connect_fail.
func (s *ClusterStats) UpstreamCxConnectFail() *stats.Counter {
	return s.blk.Counter(ciUpstreamCxConnectFail)
}

// UpstreamCxConnectTimeout is cluster.<name>.upstream_cx_connect_timeout.
func (s *ClusterStats) UpstreamCxConnectTimeout() *stats.Counter {
	return s.blk.Counter(ciUpstreamCxConnectTimeout)
}

// UpstreamCxConnectAttemptsExceeded is cluster.<name>.upstream_cx_connect_attempts_exceeded.
func (s *ClusterStats) UpstreamCxConnectAttemptsExceeded() *stats.Counter {
	return s.blk.Counter(ciUpstreamCxConnectAttemptsExceeded)
}

// UpstreamCxIdleTimeout is cluster.<name>.upstream_cx_idle_timeout.
func (s *ClusterStats) UpstreamCxIdleTimeout() *stats.Counter {
	return s.blk.Counter(ciUpstreamCxIdleTimeout)
}

// UpstreamCxMaxDurationReached is cluster.<name>.upstream_cx_max_duration_reached.
func (s *ClusterStats) UpstreamCxMaxDurationReached() *stats.Counter {
	return s.blk.Counter(ciUpstreamCxMaxDurationReached)
}

// UpstreamCxMaxRequests is cluster.<name>.upstream_cx_max_requests.
func (s *ClusterStats) UpstreamCxMaxRequests() *stats.Counter {
	return s.blk.Counter(ciUpstreamCxMaxRequests)
}

// UpstreamCxOverflow is cluster.<name>.upstream_cx_overflow.
func (s *ClusterStats) UpstreamCxOverflow() *stats.Counter {
	return s.blk.Counter(ciUpstreamCxOverflow)
}

// UpstreamCxPoolOverflow is cluster.<name>.upstream_cx_pool_overflow.
func (s *ClusterStats) UpstreamCxPoolOverflow() *stats.Counter {
	return s.blk.Counter(ciUpstreamCxPoolOverflow)
}

// UpstreamCxProtocolError is cluster.<name>.upstream_cx_protocol_error.
func (s *ClusterStats) UpstreamCxProtocolError() *stats.Counter {
	return s.blk.Counter(ciUpstreamCxProtocolError)
}

// UpstreamCxNoneHealthy is cluster.<name>.upstream_cx_none_healthy.
func (s *ClusterStats) UpstreamCxNoneHealthy() *stats.Counter {
	return s.blk.Counter(ciUpstreamCxNoneHealthy)
}

// UpstreamCxCloseNotify is cluster.<name>.upstream_cx_close_notify.
func (s *ClusterStats) UpstreamCxCloseNotify() *stats.Counter {
	return s.blk.Counter(ciUpstreamCxCloseNotify)
}

// UpstreamCxDestroy is cluster.<name>.upstream_cx_destroy.
func (s *ClusterStats) UpstreamCxDestroy() *stats.Counter { return s.blk.Counter(ciUpstreamCxDestroy) }

// UpstreamCxDestroyLocal is cluster.<name>.upstream_cx_destroy_local.
func (s *ClusterStats) UpstreamCxDestroyLocal() *stats.Counter {
	return s.blk.Counter(ciUpstreamCxDestroyLocal)
}

// UpstreamCxDestroyRemote is cluster.<name>.upstream_cx_destroy_remote.
func (s *ClusterStats) UpstreamCxDestroyRemote() *stats.Counter {
	return s.blk.Counter(ciUpstreamCxDestroyRemote)
}

// UpstreamCxDestroyWithActiveRq is cluster.<name>.upstream_cx_destroy_with_active_rq.
func (s *ClusterStats) UpstreamCxDestroyWithActiveRq() *stats.Counter {
	return s.blk.Counter(ciUpstreamCxDestroyWithActiveRq)
}

// UpstreamCxDestroyLocalWithActiveRq is cluster.<name>.upstream_cx_destroy_local_with_active_rq.
func (s *ClusterStats) UpstreamCxDestroyLocalWithActiveRq() *stats.Counter {
	return s.blk.Counter(ciUpstreamCxDestroyLocalWithActiveRq)
}

// UpstreamCxDestroyRemoteWithActiveRq is cluster.<name>.upstream_cx_destroy_remote_with_active_rq.
func (s *ClusterStats) UpstreamCxDestroyRemoteWithActiveRq() *stats.Counter {
	return s.blk.Counter(ciUpstreamCxDestroyRemoteWithActiveRq)
}

// UpstreamCxRxBytesTotal is cluster.<name>.upstream_cx_rx_bytes_total.
func (s *ClusterStats) UpstreamCxRxBytesTotal() *stats.Counter {
	return s.blk.Counter(ciUpstreamCxRxBytesTotal)
}

// UpstreamCxTxBytesTotal is cluster.<name>.upstream_cx_tx_bytes_total.
func (s *ClusterStats) UpstreamCxTxBytesTotal() *stats.Counter {
	return s.blk.Counter(ciUpstreamCxTxBytesTotal)
}

// BindErrors is cluster.<name>.bind_errors.
func (s *ClusterStats) BindErrors() *stats.Counter { return s.blk.Counter(ciBindErrors) }

// UpstreamRqTotal is cluster.<name>.upstream_rq_total.
func (s *ClusterStats) UpstreamRqTotal() *stats.Counter { return s.blk.Counter(ciUpstreamRqTotal) }

// UpstreamRqCompleted is cluster.<name>.upstream_rq_completed.
func (s *ClusterStats) UpstreamRqCompleted() *stats.Counter {
	return s.blk.Counter(ciUpstreamRqCompleted)
}

// UpstreamRqPendingTotal is cluster.<name>.upstream_rq_pending_total.
func (s *ClusterStats) UpstreamRqPendingTotal() *stats.Counter {
	return s.blk.Counter(ciUpstreamRqPendingTotal)
}

// UpstreamRqPendingOverflow is cluster.<name>.upstream_rq_pending_overflow.
func (s *ClusterStats) UpstreamRqPendingOverflow() *stats.Counter {
	return s.blk.Counter(ciUpstreamRqPendingOverflow)
}

// UpstreamRqPendingFailureEject is cluster.<name>.upstream_rq_pending_failure_eject.
func (s *ClusterStats) UpstreamRqPendingFailureEject() *stats.Counter {
	return s.blk.Counter(ciUpstreamRqPendingFailureEject)
}

// UpstreamRqCancelled is cluster.<name>.upstream_rq_cancelled.
func (s *ClusterStats) UpstreamRqCancelled() *stats.Counter {
	return s.blk.Counter(ciUpstreamRqCancelled)
}

// UpstreamRqMaintenanceMode is cluster.<name>.upstream_rq_maintenance_mode.
func (s *ClusterStats) UpstreamRqMaintenanceMode() *stats.Counter {
	return s.blk.Counter(ciUpstreamRqMaintenanceMode)
}

// UpstreamRqTimeout is cluster.<name>.upstream_rq_timeout.
func (s *ClusterStats) UpstreamRqTimeout() *stats.Counter { return s.blk.Counter(ciUpstreamRqTimeout) }

// UpstreamRqMaxDurationReached is cluster.<name>.upstream_rq_max_duration_reached.
func (s *ClusterStats) UpstreamRqMaxDurationReached() *stats.Counter {
	return s.blk.Counter(ciUpstreamRqMaxDurationReached)
}

// UpstreamRqPerTryTimeout is cluster.<name>.upstream_rq_per_try_timeout.
func (s *ClusterStats) UpstreamRqPerTryTimeout() *stats.Counter {
	return s.blk.Counter(ciUpstreamRqPerTryTimeout)
}

// UpstreamRqPerTryIdleTimeout is cluster.<name>.upstream_rq_per_try_idle_timeout.
func (s *ClusterStats) UpstreamRqPerTryIdleTimeout() *stats.Counter {
	return s.blk.Counter(ciUpstreamRqPerTryIdleTimeout)
}

// UpstreamRqRxReset is cluster.<name>.upstream_rq_rx_reset.
func (s *ClusterStats) UpstreamRqRxReset() *stats.Counter { return s.blk.Counter(ciUpstreamRqRxReset) }

// UpstreamRqTxReset is cluster.<name>.upstream_rq_tx_reset.
func (s *ClusterStats) UpstreamRqTxReset() *stats.Counter { return s.blk.Counter(ciUpstreamRqTxReset) }

// UpstreamRqRetry is cluster.<name>.upstream_rq_retry.
func (s *ClusterStats) UpstreamRqRetry() *stats.Counter { return s.blk.Counter(ciUpstreamRqRetry) }

// UpstreamRqRetryBackoffExp is cluster.<name>.upstream_rq_retry_backoff_exponential.
func (s *ClusterStats) UpstreamRqRetryBackoffExp() *stats.Counter {
	return s.blk.Counter(ciUpstreamRqRetryBackoffExp)
}

// UpstreamRqRetryBackoffRateLim is cluster.<name>.upstream_rq_retry_backoff_ratelimited.
func (s *ClusterStats) UpstreamRqRetryBackoffRateLim() *stats.Counter {
	return s.blk.Counter(ciUpstreamRqRetryBackoffRateLim)
}

// UpstreamRqRetryLimitExceeded is cluster.<name>.upstream_rq_retry_limit_exceeded.
func (s *ClusterStats) UpstreamRqRetryLimitExceeded() *stats.Counter {
	return s.blk.Counter(ciUpstreamRqRetryLimitExceeded)
}

// UpstreamRqRetrySuccess is cluster.<name>.upstream_rq_retry_success.
func (s *ClusterStats) UpstreamRqRetrySuccess() *stats.Counter {
	return s.blk.Counter(ciUpstreamRqRetrySuccess)
}

// UpstreamRqRetryOverflow is cluster.<name>.upstream_rq_retry_overflow.
func (s *ClusterStats) UpstreamRqRetryOverflow() *stats.Counter {
	return s.blk.Counter(ciUpstreamRqRetryOverflow)
}

// UpstreamInternalRedirectFailed is cluster.<name>.upstream_internal_redirect_failed_total.
func (s *ClusterStats) UpstreamInternalRedirectFailed() *stats.Counter {
	return s.blk.Counter(ciUpstreamInternalRedirectFailed)
}

// UpstreamInternalRedirectOK is cluster.<name>.upstream_internal_redirect_succeeded_total.
func (s *ClusterStats) UpstreamInternalRedirectOK() *stats.Counter {
	return s.blk.Counter(ciUpstreamInternalRedirectOK)
}

// RetryOrShadowAbandoned is cluster.<name>.retry_or_shadow_abandoned.
func (s *ClusterStats) RetryOrShadowAbandoned() *stats.Counter {
	return s.blk.Counter(ciRetryOrShadowAbandoned)
}

// UpstreamRq1xx is cluster.<name>.upstream_rq_1xx.
func (s *ClusterStats) UpstreamRq1xx() *stats.Counter { return s.blk.Counter(ciUpstreamRq1xx) }

// UpstreamRq2xx is cluster.<name>.upstream_rq_2xx.
func (s *ClusterStats) UpstreamRq2xx() *stats.Counter { return s.blk.Counter(ciUpstreamRq2xx) }

// UpstreamRq3xx is cluster.<name>.upstream_rq_3xx.
func (s *ClusterStats) UpstreamRq3xx() *stats.Counter { return s.blk.Counter(ciUpstreamRq3xx) }

// UpstreamRq4xx is cluster.<name>.upstream_rq_4xx.
func (s *ClusterStats) UpstreamRq4xx() *stats.Counter { return s.blk.Counter(ciUpstreamRq4xx) }

// UpstreamRq5xx is cluster.<name>.upstream_rq_5xx.
func (s *ClusterStats) UpstreamRq5xx() *stats.Counter { return s.blk.Counter(ciUpstreamRq5xx) }

// LbHealthyPanic is cluster.<name>.lb_healthy_panic.
func (s *ClusterStats) LbHealthyPanic() *stats.Counter { return s.blk.Counter(ciLbHealthyPanic) }

// LbLocalClusterNotOk is cluster.<name>.lb_local_cluster_not_ok.
func (s *ClusterStats) LbLocalClusterNotOk() *stats.Counter {
	return s.blk.Counter(ciLbLocalClusterNotOk)
}

// LbRecalculateZoneStructures is cluster.<name>.lb_recalculate_zone_structures.
func (s *ClusterStats) LbRecalculateZoneStructures() *stats.Counter {
	return s.blk.Counter(ciLbRecalculateZoneStructures)
}

// LbZoneClusterTooSmall is cluster.<name>.lb_zone_cluster_too_small.
func (s *ClusterStats) LbZoneClusterTooSmall() *stats.Counter {
	return s.blk.Counter(ciLbZoneClusterTooSmall)
}

// LbZoneNoCapacityLeft is cluster.<name>.lb_zone_no_capacity_left.
func (s *ClusterStats) LbZoneNoCapacityLeft() *stats.Counter {
	return s.blk.Counter(ciLbZoneNoCapacityLeft)
}

// LbZoneNumberDiffers is cluster.<name>.lb_zone_number_differs.
func (s *ClusterStats) LbZoneNumberDiffers() *stats.Counter {
	return s.blk.Counter(ciLbZoneNumberDiffers)
}

// LbZoneRoutingAllDirectly is cluster.<name>.lb_zone_routing_all_directly.
func (s *ClusterStats) LbZoneRoutingAllDirectly() *stats.Counter {
	return s.blk.Counter(ciLbZoneRoutingAllDirectly)
}

// LbZoneRoutingCrossZone is cluster.<name>.lb_zone_routing_cross_zone.
func (s *ClusterStats) LbZoneRoutingCrossZone() *stats.Counter {
	return s.blk.Counter(ciLbZoneRoutingCrossZone)
}

// LbZoneRoutingSampled is cluster.<name>.lb_zone_routing_sampled.
func (s *ClusterStats) LbZoneRoutingSampled() *stats.Counter {
	return s.blk.Counter(ciLbZoneRoutingSampled)
}

// MembershipChange is cluster.<name>.membership_change.
func (s *ClusterStats) MembershipChange() *stats.Counter { return s.blk.Counter(ciMembershipChange) }

// UpdateAttempt is cluster.<name>.update_attempt.
func (s *ClusterStats) UpdateAttempt() *stats.Counter { return s.blk.Counter(ciUpdateAttempt) }

// UpdateSuccess is cluster.<name>.update_success.
func (s *ClusterStats) UpdateSuccess() *stats.Counter { return s.blk.Counter(ciUpdateSuccess) }

// UpdateFailure is cluster.<name>.update_failure.
func (s *ClusterStats) UpdateFailure() *stats.Counter { return s.blk.Counter(ciUpdateFailure) }

// UpdateEmpty is cluster.<name>.update_empty.
func (s *ClusterStats) UpdateEmpty() *stats.Counter { return s.blk.Counter(ciUpdateEmpty) }

// UpdateNoRebuild is cluster.<name>.update_no_rebuild.
func (s *ClusterStats) UpdateNoRebuild() *stats.Counter { return s.blk.Counter(ciUpdateNoRebuild) }

// ConfigReload is cluster.<name>.config_reload.
func (s *ClusterStats) ConfigReload() *stats.Counter { return s.blk.Counter(ciConfigReload) }

// UpstreamCxActive is cluster.<name>.upstream_cx_active.
func (s *ClusterStats) UpstreamCxActive() *stats.Gauge { return s.blk.Gauge(giUpstreamCxActive) }

// UpstreamCxRxBytesBuffered is cluster.<name>.upstream_cx_rx_bytes_buffered.
func (s *ClusterStats) UpstreamCxRxBytesBuffered() *stats.Gauge {
	return s.blk.Gauge(giUpstreamCxRxBytesBuffered)
}

// UpstreamCxTxBytesBuffered is cluster.<name>.upstream_cx_tx_bytes_buffered.
func (s *ClusterStats) UpstreamCxTxBytesBuffered() *stats.Gauge {
	return s.blk.Gauge(giUpstreamCxTxBytesBuffered)
}

// UpstreamRqActive is cluster.<name>.upstream_rq_active.
func (s *ClusterStats) UpstreamRqActive() *stats.Gauge { return s.blk.Gauge(giUpstreamRqActive) }

// UpstreamRqPendingActive is cluster.<name>.upstream_rq_pending_active.
func (s *ClusterStats) UpstreamRqPendingActive() *stats.Gauge {
	return s.blk.Gauge(giUpstreamRqPendingActive)
}

// MembershipTotal is cluster.<name>.membership_total.
func (s *ClusterStats) MembershipTotal() *stats.Gauge { return s.blk.Gauge(giMembershipTotal) }

// MembershipHealthy is cluster.<name>.membership_healthy.
func (s *ClusterStats) MembershipHealthy() *stats.Gauge { return s.blk.Gauge(giMembershipHealthy) }

// MembershipDegraded is cluster.<name>.membership_degraded.
func (s *ClusterStats) MembershipDegraded() *stats.Gauge { return s.blk.Gauge(giMembershipDegraded) }

// MembershipExcluded is cluster.<name>.membership_excluded.
func (s *ClusterStats) MembershipExcluded() *stats.Gauge { return s.blk.Gauge(giMembershipExcluded) }

// MaxHostWeight is cluster.<name>.max_host_weight.
func (s *ClusterStats) MaxHostWeight() *stats.Gauge { return s.blk.Gauge(giMaxHostWeight) }

// Version is cluster.<name>.version.
func (s *ClusterStats) Version() *stats.Gauge { return s.blk.Gauge(giVersion) }

// WarmingState is cluster.<name>.warming_state.
func (s *ClusterStats) WarmingState() *stats.Gauge { return s.blk.Gauge(giWarmingState) }
