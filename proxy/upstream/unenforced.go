package upstream

import (
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
)

// Unenforced lists the field paths of c that are set but not yet honoured by
// this package (accepted so configs load; enforced by later work), in a
// stable order. Fields whose absence is the only supported value are
// rejected by AddOrUpdate instead and never appear here.
func Unenforced(c *clusterv3.Cluster) []string {
	var out []string
	add := func(set bool, path string) {
		if set {
			out = append(out, path)
		}
	}
	add(c.GetTransportSocketMatcher() != nil, "transport_socket_matcher")
	add(c.GetStatsMatcher() != nil, "stats_matcher")
	add(c.GetPerConnectionBufferHighWatermarkTimeout() != nil, "per_connection_buffer_high_watermark_timeout")
	if cb := c.GetCircuitBreakers(); cb != nil {
		perHostOther := false
		for _, t := range cb.GetPerHostThresholds() {
			perHostOther = perHostOther || t.GetMaxPendingRequests() != nil ||
				t.GetMaxRequests() != nil || t.GetMaxRetries() != nil || t.GetRetryBudget() != nil
		}
		add(perHostOther, "circuit_breakers.per_host_thresholds (other than max_connections)")
		pools := false
		for _, t := range cb.GetThresholds() {
			pools = pools || t.GetMaxConnectionPools() != nil
		}
		add(pools, "circuit_breakers.thresholds[].max_connection_pools")
	}
	if h := c.GetCommonHttpProtocolOptions(); h != nil {
		add(h.GetMaxStreamDuration() != nil, "common_http_protocol_options.max_stream_duration")
		add(h.GetHeadersWithUnderscoresAction() != 0, "common_http_protocol_options.headers_with_underscores_action")
	}
	add(c.GetRespectDnsTtl(), "respect_dns_ttl")
	add(c.GetWaitForWarmOnInit() != nil && c.GetType() != clusterv3.Cluster_STRICT_DNS && c.GetType() != clusterv3.Cluster_LOGICAL_DNS, "wait_for_warm_on_init (only DNS clusters)")
	if b := c.GetUpstreamBindConfig(); b != nil {
		add(len(b.GetExtraSourceAddresses()) > 0, "upstream_bind_config.extra_source_addresses")
		add(b.GetLocalAddressSelector() != nil, "upstream_bind_config.local_address_selector")
	}
	add(c.GetLbSubsetConfig() != nil, "lb_subset_config")
	add(c.GetOriginalDstLbConfig() != nil && !isOriginalDst(c), "original_dst_lb_config")
	if l := c.GetCommonLbConfig(); l != nil {
		add(l.GetUpdateMergeWindow() != nil, "common_lb_config.update_merge_window")
		add(l.GetIgnoreNewHostsUntilFirstHc(), "common_lb_config.ignore_new_hosts_until_first_hc")
		add(l.GetOverrideHostStatus() != nil, "common_lb_config.override_host_status")
	}
	add(c.GetProtocolSelection() != clusterv3.Cluster_USE_CONFIGURED_PROTOCOL, "protocol_selection")
	if o := c.GetUpstreamConnectionOptions(); o != nil {
		add(o.GetSetLocalInterfaceNameOnUpstreamConnections(), "upstream_connection_options.set_local_interface_name_on_upstream_connections")
		add(o.GetHappyEyeballsConfig() != nil, "upstream_connection_options.happy_eyeballs_config")
	}
	add(len(c.GetFilters()) > 0, "filters")
	add(c.GetLrsServer() != nil, "lrs_server")
	add(len(c.GetLrsReportEndpointMetrics()) > 0, "lrs_report_endpoint_metrics")
	add(c.GetTrackTimeoutBudgets(), "track_timeout_budgets")
	add(c.GetUpstreamConfig() != nil, "upstream_config")
	add(c.GetTrackClusterStats() != nil, "track_cluster_stats")
	add(c.GetPreconnectPolicy() != nil, "preconnect_policy")
	add(c.GetConnectionPoolPerDownstreamConnection(), "connection_pool_per_downstream_connection")
	add(c.GetQueuingPolicies() != nil, "queuing_policies")
	if la := c.GetLoadAssignment(); la != nil {
		add(len(la.GetPolicy().GetDropOverloads()) > 0, "load_assignment.policy.drop_overloads")
		add(la.GetPolicy().GetEndpointStaleAfter() != nil, "load_assignment.policy.endpoint_stale_after")
		addl := false
		for _, e := range la.GetEndpoints() {
			for _, le := range e.GetLbEndpoints() {
				addl = addl || len(le.GetEndpoint().GetAdditionalAddresses()) > 0
			}
		}
		add(addl, "load_assignment.endpoints[].lb_endpoints[].endpoint.additional_addresses")
	}
	return out
}
