package upstream

import (
	"fmt"
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
	priority int
	locality *corev3.Locality
	locW     uint32 // the locality's load_balancing_weight; 0 when unset
	metadata *corev3.Metadata
	health   corev3.HealthStatus
	hcHost   string // health_check_config.hostname
	hcPort   uint16 // health_check_config.port_value
	hcOff    bool   // health_check_config.disable_active_health_check
	path     string // field path for errors, e.g. "load_assignment.endpoints[0].lb_endpoints[1]"
}

// parseAssignment flattens a load assignment into endpoint specs, rejecting
// what this implementation (or Envoy) cannot use.
func parseAssignment(cla *endpointv3.ClusterLoadAssignment) ([]endpointSpec, error) {
	var out []endpointSpec
	for i, lle := range cla.GetEndpoints() {
		lpath := fmt.Sprintf("load_assignment.endpoints[%d]", i)
		if lle.GetLedsClusterLocalityConfig() != nil {
			return nil, fmt.Errorf("%s.leds_cluster_locality_config: LEDS is not supported", lpath)
		}
		for j, le := range lle.GetLbEndpoints() {
			path := fmt.Sprintf("%s.lb_endpoints[%d]", lpath, j)
			if le.GetEndpointName() != "" {
				return nil, fmt.Errorf("%s.endpoint_name: named endpoints are not supported", path)
			}
			ep := le.GetEndpoint()
			sa := ep.GetAddress().GetSocketAddress()
			if sa == nil {
				return nil, fmt.Errorf("%s.endpoint.address: only socket_address is supported", path)
			}
			if sa.GetProtocol() != corev3.SocketAddress_TCP {
				return nil, fmt.Errorf("%s.endpoint.address.socket_address.protocol: %s upstreams are not supported", path, sa.GetProtocol())
			}
			if sa.GetNamedPort() != "" {
				return nil, fmt.Errorf("%s.endpoint.address.socket_address.named_port: not supported", path)
			}
			if sa.GetResolverName() != "" {
				return nil, fmt.Errorf("%s.endpoint.address.socket_address.resolver_name: custom resolvers are not supported", path)
			}
			if sa.GetPortValue() > 65535 {
				return nil, fmt.Errorf("%s.endpoint.address.socket_address.port_value: %d out of range", path, sa.GetPortValue())
			}
			w := uint32(1)
			if lw := le.GetLoadBalancingWeight(); lw != nil {
				if lw.GetValue() == 0 {
					return nil, fmt.Errorf("%s.load_balancing_weight: must be at least 1", path)
				}
				w = lw.GetValue()
			}
			hcc := ep.GetHealthCheckConfig()
			if hcc.GetAddress() != nil {
				return nil, fmt.Errorf("%s.endpoint.health_check_config.address: not supported yet", path)
			}
			if hcc.GetPortValue() > 65535 {
				return nil, fmt.Errorf("%s.endpoint.health_check_config.port_value: %d out of range", path, hcc.GetPortValue())
			}
			out = append(out, endpointSpec{
				hcHost:   hcc.GetHostname(),
				hcPort:   uint16(hcc.GetPortValue()),
				hcOff:    hcc.GetDisableActiveHealthCheck(),
				address:  sa.GetAddress(),
				port:     uint16(sa.GetPortValue()),
				hostname: ep.GetHostname(),
				weight:   w,
				priority: int(lle.GetPriority()),
				locality: lle.GetLocality(),
				locW:     lle.GetLoadBalancingWeight().GetValue(),
				metadata: le.GetMetadata(),
				health:   le.GetHealthStatus(),
				path:     path,
			})
		}
	}
	return out, nil
}

// staticAddr parses an endpoint's address as an IP literal, with Envoy's
// error for a name.
func (e *endpointSpec) staticAddr() (netip.AddrPort, error) {
	ip, err := netip.ParseAddr(e.address)
	if err != nil || ip.Zone() != "" {
		return netip.AddrPort{}, fmt.Errorf("%s: malformed IP address: %s. Consider setting resolver_name or setting cluster type to 'STRICT_DNS' or 'LOGICAL_DNS'", e.path, e.address)
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
	h.hcHostname, h.hcPort, h.hcDisabled = e.hcHost, e.hcPort, e.hcOff
	h.localityWeight = e.locW
	return h
}
