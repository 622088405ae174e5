package main

import (
	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
)

// applyNodeFlags lets --service-cluster, --service-node and --service-zone
// override the bootstrap's node, as Envoy does.
func applyNodeFlags(b *bootstrapv3.Bootstrap, f *flags) {
	if f.serviceCluster == "" && f.serviceNode == "" && f.serviceZone == "" {
		return
	}
	if b.Node == nil {
		b.Node = &corev3.Node{}
	}
	if f.serviceCluster != "" {
		b.Node.Cluster = f.serviceCluster
	}
	if f.serviceNode != "" {
		b.Node.Id = f.serviceNode
	}
	if f.serviceZone != "" {
		if b.Node.Locality == nil {
			b.Node.Locality = &corev3.Locality{}
		}
		b.Node.Locality.Zone = f.serviceZone
	}
}
