package router

import (
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
)

// highPriority reports whether the route's priority is HIGH: its requests
// then use the cluster's HIGH circuit breakers (circuit_breakers.thresholds
// with priority HIGH) for connections, pending requests, requests and
// retries, as Envoy's router picks the resource manager by route priority.
func (f *filter) highPriority() bool {
	return f.route != nil && f.route.Priority() == corev3.RoutingPriority_HIGH
}
