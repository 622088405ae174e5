package upstream

import (
	"net"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"

	"github.com/outrider-proxy/outrider/telemetry/stats"
)

// defaultDialer is the dialer of every cluster without tcp_keepalive or
// upstream_bind_config: Envoy sets no keepalive unless configured.
var defaultDialer = &net.Dialer{KeepAlive: -1}

// dnsSettings are a DNS cluster's resolver and refresh timing.
type dnsSettings struct {
	resolver Resolver
	family   clusterv3.Cluster_DnsLookupFamily
	refresh  time.Duration // dns_refresh_rate; default 5s
	failure  time.Duration // dns_failure_refresh_rate.base_interval, else refresh
	// failureMax is dns_failure_refresh_rate.max_interval: failed rounds
	// back off exponentially from failure up to it; zero without
	// dns_failure_refresh_rate (failures then wait refresh).
	failureMax time.Duration
	// jitter is dns_jitter: each refresh waits up to this much longer.
	jitter time.Duration
}

// clusterExtras are the settings only some clusters have. A cluster
// without any shares noExtras (never written: compile time writes go through
// Cluster.extras), so readers need no nil check.
type clusterExtras struct {
	// socketMatches are transport_socket_matches in order (see
	// TransportFor); defaultMatchCount counts hosts none matched.
	socketMatches     []socketMatch
	defaultMatchCount *stats.Counter
	// perDownstreamMatch: a transport of socketMatches is per downstream
	// connection (transport.PerDownstream).
	perDownstreamMatch bool
	autoSNI            autoSNI        // upstream_http_protocol_options
	specs              []endpointSpec // STATIC/DNS endpoints
	origDst            *originalDst   // ORIGINAL_DST's host cache; nil for other types
	// dns is the resolution settings of STRICT_DNS and LOGICAL_DNS
	// clusters; nil for other types.
	dns *dnsSettings
}

var noExtras clusterExtras

// extras returns the cluster's own extras for compile time to fill,
// replacing the shared noExtras at the first call.
func (c *Cluster) extras() *clusterExtras {
	if c.x == nil || c.x == &noExtras {
		c.x = new(clusterExtras)
	}
	return c.x
}
