package upstream

import (
	"context"
	"errors"
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
)

// Resolver looks up the addresses of a DNS name; network is "ip4", "ip6" or
// "ip". *net.Resolver implements it.
type Resolver interface {
	LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error)
}

// resolve looks host up with Envoy's dns_lookup_family meaning: AUTO tries
// IPv6 then falls back to IPv4, V4_PREFERRED the reverse, V4_ONLY/V6_ONLY one
// family, ALL both. A name that does not exist is an empty, successful answer
// (as Envoy's resolver reports it); other errors are failures.
func resolve(ctx context.Context, r Resolver, family clusterv3.Cluster_DnsLookupFamily, host string) ([]netip.Addr, error) {
	if ip, err := netip.ParseAddr(host); err == nil {
		return []netip.Addr{ip.Unmap()}, nil
	}
	var order []string
	switch family {
	case clusterv3.Cluster_V4_ONLY:
		order = []string{"ip4"}
	case clusterv3.Cluster_V6_ONLY:
		order = []string{"ip6"}
	case clusterv3.Cluster_V4_PREFERRED:
		order = []string{"ip4", "ip6"}
	case clusterv3.Cluster_ALL:
		order = []string{"ip"}
	default: // AUTO
		order = []string{"ip6", "ip4"}
	}
	var firstErr error
	for _, network := range order {
		addrs, err := r.LookupNetIP(ctx, network, host)
		var dnsErr *net.DNSError
		if err != nil && !(errors.As(err, &dnsErr) && dnsErr.IsNotFound) {
			if firstErr == nil {
				firstErr = err
			}
			continue
		}
		out := addrs[:0:0]
		for _, a := range addrs {
			a = a.Unmap()
			if (network == "ip4" && !a.Is4()) || (network == "ip6" && !a.Is6()) {
				continue
			}
			out = append(out, a)
		}
		if len(out) > 0 {
			return out, nil
		}
	}
	return nil, firstErr
}

// startDNS runs the refresh loop of a STRICT_DNS or LOGICAL_DNS cluster:
// one resolution round at once, then one every dns_refresh_rate (or
// dns_failure_refresh_rate.base_interval after a failed round). The cluster
// is initialized after the first round, or at once with
// wait_for_warm_on_init false.
func (c *Cluster) startDNS() {
	if c.noWarmWait {
		c.markInitialized() // wait_for_warm_on_init: false
	}
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		// last[i] are the addresses of spec i from its last successful lookup.
		last := make([][]netip.Addr, len(c.x.specs))
		t := time.NewTimer(0)
		defer t.Stop()
		b := dnsBackOff{c: c}
		for {
			select {
			case <-c.stopContext().Done():
				return
			case <-t.C:
			}
			ok := c.resolveRound(last)
			c.markInitialized()
			t.Reset(b.next(ok))
		}
	}()
}

// dnsBackOff is the wait before a DNS cluster's next resolution round, as
// Envoy's: dns_refresh_rate plus up to dns_jitter after a successful round;
// after a failed one, with dns_failure_refresh_rate, Envoy's jittered
// exponential back-off (a random wait below base·(2^n−1), capped at
// max_interval), else dns_refresh_rate.
type dnsBackOff struct {
	c     *Cluster
	tries uint // Envoy's current_retry_: 0 after a success, then from 1
}

func (b *dnsBackOff) next(ok bool) time.Duration {
	c := b.c
	if ok || c.x.dns.failureMax == 0 {
		b.tries = 0
		d := c.x.dns.refresh
		if !ok {
			d = c.x.dns.failure
		}
		if c.x.dns.jitter > 0 {
			d += rand.N(c.x.dns.jitter)
		}
		return d
	}
	if b.tries == 0 {
		b.tries = 1
	}
	ceil := c.x.dns.failure * time.Duration(uint64(1)<<b.tries-1)
	if ceil <= 0 {
		return max(c.x.dns.failure, time.Millisecond)
	}
	if ceil <= c.x.dns.failureMax {
		b.tries++ // stops growing past max_interval, so ceil cannot overflow
	} else {
		ceil = c.x.dns.failureMax
	}
	return min(rand.N(ceil)+1, c.x.dns.failureMax)
}

// resolveRound resolves every endpoint once and installs the resulting hosts;
// an endpoint whose lookup fails keeps its previous addresses. It reports
// whether every lookup succeeded.
func (c *Cluster) resolveRound(last [][]netip.Addr) bool {
	allOK := true
	for i := range c.x.specs {
		c.Stats.UpdateAttempt().Inc()
		ctx, cancel := context.WithTimeout(c.stopContext(), max(c.x.dns.refresh, time.Second))
		addrs, err := resolve(ctx, c.x.dns.resolver, c.x.dns.family, c.x.specs[i].address)
		cancel()
		if err != nil {
			allOK = false
			c.Stats.UpdateFailure().Inc()
			continue
		}
		c.Stats.UpdateSuccess().Inc()
		if slices.Equal(addrs, last[i]) {
			c.Stats.UpdateNoRebuild().Inc()
			continue
		}
		last[i] = addrs
	}
	var hosts []*Host
	for i := range c.x.specs {
		s := &c.x.specs[i]
		addrs := last[i]
		if c.Type == clusterv3.Cluster_LOGICAL_DNS && len(addrs) > 1 {
			addrs = addrs[:1] // the logical host connects to the first address
		}
		for _, a := range addrs {
			hosts = append(hosts, s.host(c, netip.AddrPortFrom(a, s.port), s.address))
		}
	}
	c.setHosts(hosts)
	return allOK
}
