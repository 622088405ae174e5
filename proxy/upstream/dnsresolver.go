package upstream

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync/atomic"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	caresv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/network/dns_resolver/cares/v3"
	getaddrinfov3 "github.com/envoyproxy/go-control-plane/envoy/extensions/network/dns_resolver/getaddrinfo/v3"
	"google.golang.org/protobuf/types/known/anypb"
)

// dnsServers is the DNS servers and options a cluster names, from
// typed_dns_resolver_config (c-ares), dns_resolution_config, or the
// deprecated dns_resolvers with use_tcp_for_dns_lookups.
type dnsServers struct {
	servers  []string // ip:port
	tcp      bool     // use_tcp_for_dns_lookups
	noSearch bool     // no_default_search_domain
}

// compileResolver returns def unless the cluster names DNS servers; then a
// resolver that asks them (in turn, each query attempt taking the next),
// over TCP when use_tcp_for_dns_lookups is set. The getaddrinfo resolver
// and c-ares' use_resolvers_as_fallback mean the system resolver (def).
func compileResolver(cfg *clusterv3.Cluster, def Resolver) (Resolver, error) {
	var ds dnsServers
	var err error
	switch {
	case cfg.GetTypedDnsResolverConfig() != nil:
		tc := cfg.GetTypedDnsResolverConfig()
		ds, err = typedDNSServers(tc.GetTypedConfig())
		if err != nil {
			return nil, fmt.Errorf("typed_dns_resolver_config (%s): %w", tc.GetName(), err)
		}
	case cfg.GetDnsResolutionConfig() != nil:
		rc := cfg.GetDnsResolutionConfig()
		ds, err = serversOf(rc.GetResolvers(), rc.GetDnsResolverOptions(), "dns_resolution_config.resolvers")
	default:
		ds, err = serversOf(cfg.GetDnsResolvers(), &corev3.DnsResolverOptions{UseTcpForDnsLookups: cfg.GetUseTcpForDnsLookups()}, "dns_resolvers")
	}
	if err != nil || len(ds.servers) == 0 {
		return def, err
	}
	var next atomic.Uint32
	r := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		if ds.tcp {
			network = "tcp"
		}
		server := ds.servers[int(next.Add(1)-1)%len(ds.servers)]
		var d net.Dialer
		return d.DialContext(ctx, network, server)
	}}
	if ds.noSearch {
		return absoluteNames{r}, nil
	}
	return r, nil
}

func typedDNSServers(a *anypb.Any) (dnsServers, error) {
	if a == nil {
		return dnsServers{}, fmt.Errorf("typed_config: missing")
	}
	switch a.GetTypeUrl() {
	case "type.googleapis.com/envoy.extensions.network.dns_resolver.getaddrinfo.v3.GetAddrInfoDnsResolverConfig":
		var g getaddrinfov3.GetAddrInfoDnsResolverConfig
		return dnsServers{}, a.UnmarshalTo(&g)
	case "type.googleapis.com/envoy.extensions.network.dns_resolver.cares.v3.CaresDnsResolverConfig":
		var c caresv3.CaresDnsResolverConfig
		if err := a.UnmarshalTo(&c); err != nil {
			return dnsServers{}, err
		}
		if c.GetUseResolversAsFallback() {
			return dnsServers{}, nil
		}
		return serversOf(c.GetResolvers(), c.GetDnsResolverOptions(), "resolvers")
	}
	return dnsServers{}, fmt.Errorf("DNS resolver %s is not supported (c-ares and getaddrinfo are)", a.GetTypeUrl())
}

// serversOf converts resolver addresses (port 53 when zero) and options.
func serversOf(addrs []*corev3.Address, o *corev3.DnsResolverOptions, field string) (dnsServers, error) {
	ds := dnsServers{tcp: o.GetUseTcpForDnsLookups(), noSearch: o.GetNoDefaultSearchDomain()}
	for i, a := range addrs {
		sa := a.GetSocketAddress()
		ip, err := netip.ParseAddr(sa.GetAddress())
		if sa == nil || err != nil {
			return ds, fmt.Errorf("%s[%d]: want a socket_address with an IP, got %v", field, i, a)
		}
		port := sa.GetPortValue()
		if port == 0 {
			port = 53
		}
		if port > 65535 {
			return ds, fmt.Errorf("%s[%d].port_value: %d out of range", field, i, port)
		}
		ds.servers = append(ds.servers, netip.AddrPortFrom(ip, uint16(port)).String())
	}
	return ds, nil
}

// absoluteNames looks names up as fully qualified (a trailing dot), so the
// system's search domains are not tried (no_default_search_domain).
type absoluteNames struct{ r *net.Resolver }

func (a absoluteNames) LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error) {
	if !strings.HasSuffix(host, ".") {
		host += "."
	}
	return a.r.LookupNetIP(ctx, network, host)
}
