package server

import (
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/proto"

	"github.com/outrider-proxy/outrider/xds/client"
)

// The applier keeps what it applied in wire form, as received (Resource.Raw), and decodes it again
// where the message is needed: a new watch of the same name, a pushed change to compare, VHDS merging.
// config_dump shows the bytes as they are.

// activeCluster is what the applier keeps of a dynamic cluster in force: its
// config in wire form (decoded again for a pushed change, shown as is by
// config_dump), not the decoded message, and the SDS secrets it uses.
type activeCluster struct {
	raw     string
	sds     []sdsRef // those with a config source; nil for most clusters
	version string   // of the response that brought it, for config_dump
	updated time.Time
}

func newActiveCluster(w *warmCluster, now time.Time) *activeCluster {
	var sds []sdsRef
	for _, r := range clusterSDSRefs("", w.cfg) {
		if r.cs != nil {
			sds = append(sds, r)
		}
	}
	return &activeCluster{raw: w.raw, sds: sds, version: w.version, updated: now}
}

// edsEntry is the last assignment applied under a service name, in wire form.
type edsEntry struct {
	raw     string
	version string // of the response that brought it, for config_dump
	updated time.Time
}

// config decodes the cluster's config.
func (a *activeCluster) config() (*clusterv3.Cluster, error) {
	c := new(clusterv3.Cluster)
	return c, proto.Unmarshal([]byte(a.raw), c)
}

// wireOf is a resource's wire bytes: as received, or marshalled (deterministically) when its source
// has none.
func wireOf(r client.Resource) (string, error) {
	if r.Raw != "" {
		return r.Raw, nil
	}
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(r.Msg)
	return string(b), err
}

// cachedRoutes decodes the route configuration last applied under name; nil
// when there is none. The caller holds d.mu.
func (d *dynamic) cachedRoutes(name string) *routev3.RouteConfiguration {
	raw, ok := d.rdsCache[name]
	if !ok {
		return nil
	}
	rc := new(routev3.RouteConfiguration)
	if err := proto.Unmarshal([]byte(raw), rc); err != nil {
		return nil // it was decoded once: cannot happen
	}
	return rc
}

// decodeCLA decodes an assignment kept in wire form.
func decodeCLA(raw string) (*endpointv3.ClusterLoadAssignment, error) {
	cla := new(endpointv3.ClusterLoadAssignment)
	return cla, proto.Unmarshal([]byte(raw), cla)
}
