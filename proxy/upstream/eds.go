package upstream

import (
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
)

// EndpointSource delivers ClusterLoadAssignments to EDS clusters; the xDS
// client implements it. A Manager with a nil Endpoints leaves EDS clusters
// empty until Cluster.UpdateLoadAssignment is called.
type EndpointSource interface {
	// WatchEndpoints calls update with every assignment of serviceName
	// (eds_cluster_config.service_name, or the cluster name) until cancel is
	// called; update's error is the NACK reason. It must not call update
	// synchronously.
	WatchEndpoints(serviceName string, update func(*endpointv3.ClusterLoadAssignment) error) (cancel func())
}

// startEDS subscribes an EDS cluster to src.
func (c *Cluster) startEDS(src EndpointSource) {
	if src == nil {
		c.markInitialized()
		return
	}
	cancel := src.WatchEndpoints(c.edsService, c.UpdateLoadAssignment)
	c.hostMu.Lock()
	if c.draining.Load() {
		c.hostMu.Unlock()
		cancel()
		return
	}
	c.edsCancel = cancel
	c.hostMu.Unlock()
}
