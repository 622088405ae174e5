package upstream

import (
	"errors"
	"fmt"
	"math"
	"net/netip"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
)

// endpointSpec is one configured lb_endpoint before name resolution.
type endpointSpec struct {
	address  string // IP literal or DNS name, as configured
	port     uint16
	hostname string // endpoint.hostname; empty if unset
	weight   uint32
	priority int32
	locality *corev3.Locality
	locW     uint32 // the locality's load_balancing_weight; 0 when unset
	metadata *corev3.Metadata
	health   corev3.HealthStatus
	hcHost   string // health_check_config.hostname
	hcPort   uint16 // health_check_config.port_value
	hcOff    bool   // health_check_config.disable_active_health_check
	li, ei   int    // indexes of its locality and of it there, for error paths
}

// pathOf is the field path of lb_endpoints[ei] of endpoints[li], for errors.
func pathOf(li, ei int) string {
	return fmt.Sprintf("load_assignment.endpoints[%d].lb_endpoints[%d]", li, ei)
}

// path is e's field path for errors, e.g.
// "load_assignment.endpoints[0].lb_endpoints[1]".
func (e *endpointSpec) path() string { return pathOf(e.li, e.ei) }

// parseAssignment flattens a load assignment into endpoint specs, rejecting
// what this implementation (or Envoy) cannot use.
func parseAssignment(cla *endpointv3.ClusterLoadAssignment) ([]endpointSpec, error) {
	n := 0
	for _, lle := range cla.GetEndpoints() {
		n += len(lle.GetLbEndpoints())
	}
	out := make([]endpointSpec, 0, n)
	for i, lle := range cla.GetEndpoints() {
		if lle.GetLedsClusterLocalityConfig() != nil {
			return nil, fmt.Errorf("load_assignment.endpoints[%d].leds_cluster_locality_config: LEDS is not supported", i)
		}
		if lle.GetPriority() > math.MaxInt32 {
			return nil, fmt.Errorf("load_assignment.endpoints[%d].priority: %d out of range", i, lle.GetPriority())
		}
		for j, le := range lle.GetLbEndpoints() {
			if err := checkEndpoint(le); err != nil {
				return nil, fmt.Errorf("%s.%w", pathOf(i, j), err)
			}
			ep := le.GetEndpoint()
			sa := ep.GetAddress().GetSocketAddress()
			hcc := ep.GetHealthCheckConfig()
			w := uint32(1)
			if lw := le.GetLoadBalancingWeight(); lw != nil {
				w = lw.GetValue()
			}
			out = append(out, endpointSpec{
				hcHost:   hcc.GetHostname(),
				hcPort:   uint16(hcc.GetPortValue()),
				hcOff:    hcc.GetDisableActiveHealthCheck(),
				address:  sa.GetAddress(),
				port:     uint16(sa.GetPortValue()),
				hostname: ep.GetHostname(),
				weight:   w,
				priority: int32(lle.GetPriority()),
				locality: lle.GetLocality(),
				locW:     lle.GetLoadBalancingWeight().GetValue(),
				metadata: le.GetMetadata(),
				health:   le.GetHealthStatus(),
				li:       i,
				ei:       j,
			})
		}
	}
	return out, nil
}

// checkEndpoint refuses what outrider (or Envoy) cannot use in an
// lb_endpoint; errors start with the field below it.
func checkEndpoint(le *endpointv3.LbEndpoint) error {
	if le.GetEndpointName() != "" {
		return errors.New("endpoint_name: named endpoints are not supported")
	}
	ep := le.GetEndpoint()
	sa := ep.GetAddress().GetSocketAddress()
	switch {
	case sa == nil:
		return errors.New("endpoint.address: only socket_address is supported")
	case sa.GetProtocol() != corev3.SocketAddress_TCP:
		return fmt.Errorf("endpoint.address.socket_address.protocol: %s upstreams are not supported", sa.GetProtocol())
	case sa.GetNamedPort() != "":
		return errors.New("endpoint.address.socket_address.named_port: not supported")
	case sa.GetResolverName() != "":
		return errors.New("endpoint.address.socket_address.resolver_name: custom resolvers are not supported")
	case sa.GetPortValue() > 65535:
		return fmt.Errorf("endpoint.address.socket_address.port_value: %d out of range", sa.GetPortValue())
	case le.GetLoadBalancingWeight() != nil && le.GetLoadBalancingWeight().GetValue() == 0:
		return errors.New("load_balancing_weight: must be at least 1")
	}
	hcc := ep.GetHealthCheckConfig()
	switch {
	case hcc.GetAddress() != nil:
		return errors.New("endpoint.health_check_config.address: not supported yet")
	case hcc.GetPortValue() > 65535:
		return fmt.Errorf("endpoint.health_check_config.port_value: %d out of range", hcc.GetPortValue())
	}
	return nil
}

// staticAddr parses an endpoint's address as an IP literal, with Envoy's
// error for a name.
func (e *endpointSpec) staticAddr() (netip.AddrPort, error) {
	ip, err := netip.ParseAddr(e.address)
	if err != nil || ip.Zone() != "" {
		return netip.AddrPort{}, fmt.Errorf("%s: malformed IP address: %s. Consider setting resolver_name or setting cluster type to 'STRICT_DNS' or 'LOGICAL_DNS'", e.path(), e.address)
	}
	return netip.AddrPortFrom(ip.Unmap(), e.port), nil
}

// host makes the Host of spec e at addr.
func (e *endpointSpec) host(c *Cluster, addr netip.AddrPort, dnsName string) *Host {
	hn := e.hostname
	if hn == "" {
		hn = dnsName
	}
	h := newHost(c, addr, hn, e.weight, e.priority, e.locality, e.metadata, e.health)
	h.hcPort, h.hcDisabled = e.hcPort, e.hcOff
	if e.hcHost != "" {
		h.ext.Store(&hostExtras{hcHostname: e.hcHost})
	}
	h.localityWeight = e.locW
	return h
}

// sameAs reports whether h already stands for e (the fields sameEndpoint
// compares), so that h can be kept without making a new Host.
func (e *endpointSpec) sameAs(h *Host) bool {
	return h.Weight == max(e.weight, 1) && h.Priority == e.priority && h.edsHealth == e.health &&
		h.Hostname == e.hostname && h.localityWeight == e.locW && keyOf(h.Locality) == keyOf(e.locality)
}
