package upstream

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"

	"github.com/outrider-proxy/outrider/proxy/sockopt"
	"github.com/outrider-proxy/outrider/proxy/transport"
	"github.com/outrider-proxy/outrider/telemetry/stats"
)

// Envoy's defaults.
const (
	DefaultConnectTimeout           = 5 * time.Second
	DefaultPerConnectionBufferLimit = 1 << 20
	DefaultIdleTimeout              = time.Hour
	DefaultDNSRefreshRate           = 5 * time.Second
	DefaultMaxIdlePerHost           = 1024
	defaultOverprovisioning         = 140
	defaultPanicThreshold           = 50.0
)

// Cluster is one compiled cluster. Its exported fields are set at compile
// time and read-only afterwards; the host set changes atomically underneath.
type Cluster struct {
	Name  string
	Stats *ClusterStats
	Type  clusterv3.Cluster_DiscoveryType
	// MaxRequestsPerConnection is the request limit of one pooled connection
	// (common_http_protocol_options.max_requests_per_connection, or the
	// deprecated cluster field); zero means unlimited.
	MaxRequestsPerConnection uint32

	ConnectTimeout           time.Duration // connect_timeout; default 5s
	PerConnectionBufferLimit int           // per_connection_buffer_limit_bytes; default 1 MiB
	// IdleTimeout closes pooled connections idle this long
	// (common_http_protocol_options.idle_timeout); default 1h, zero disables.
	IdleTimeout time.Duration
	// MaxConnectionDuration is common_http_protocol_options
	// .max_connection_duration: a pooled connection this old takes no new
	// request and closes once idle (upstream_cx_max_duration_reached); zero
	// means no limit.
	MaxConnectionDuration time.Duration
	// noWarmWait is wait_for_warm_on_init false: a DNS cluster is
	// initialized at once, before its first resolution.
	noWarmWait bool
	// ignoreHealthOnRemoval is ignore_health_on_host_removal: hosts EDS
	// removes go at once even when active health checking finds them
	// healthy.
	ignoreHealthOnRemoval bool
	// closeOnHealthFailure is close_connections_on_host_health_failure
	// (Host.CloseOnHealthFailure).
	closeOnHealthFailure bool
	// MaxResponseHeaders and MaxResponseHeaderKB are
	// common_http_protocol_options' max_headers_count and
	// max_response_headers_kb, the limits on an upstream response's
	// headers; zero means Envoy's defaults (ResponseLimits).
	MaxResponseHeaders, MaxResponseHeaderKB uint16
	// closeOnHostSetChange is common_lb_config's
	// close_connections_on_host_set_change (hostsetchange.go).
	closeOnHostSetChange bool
	// MaxIdlePerHost caps each host pool's idle list; zero means the default.
	MaxIdlePerHost int
	// SourceAddr is upstream_bind_config.source_address; the zero value lets
	// the kernel choose.
	SourceAddr netip.AddrPort

	// HealthChecks is health_checks (at most one, as Envoy), run by hc.
	HealthChecks []*corev3.HealthCheck
	// HealthCheck are the health_check.* stats; nil without health_checks.
	HealthCheck *HealthCheckStats

	// Outlier are the outlier_detection.* stats; nil without outlier_detection.
	Outlier *OutlierStats

	// TransportSocket is transport_socket, applied by the Manager.
	TransportSocket *corev3.TransportSocket

	transport      transport.Upstream // nil: plaintext
	protocol       protocolOptions
	policy         *lbConfig
	hc             *healthChecker   // nil without health_checks
	outlier        *outlierDetector // nil without outlier_detection
	res            *resources       // DEFAULT priority circuit breakers; never nil
	overprovision  uint32
	weightedHealth bool // load_assignment.policy.weighted_priority_health
	panicThreshold float64
	// x holds the rarely configured settings; &noExtras when none.
	x      *clusterExtras
	dialer *net.Dialer // defaultDialer unless the cluster sets keepalive or bind options

	// Discovery.
	edsService string
	edsCancel  func()
	// initCh is what Initialized hands out before initialization, closed
	// then; nil until someone asks (AfterInitialized waits without it).
	// initDone is set at initialization. Both guarded by initMu.
	initCh     chan struct{}
	initDone   bool
	initOnce   sync.Once
	initMu     sync.Mutex
	onInit     []*func()   // AfterInitialized callbacks not yet run; nil once initialized
	discovered atomic.Bool // the first host set is in

	hostMu sync.Mutex // serializes host-set updates
	set    atomic.Pointer[prioritySet]
	// prev is the cluster this staged one replaces, whose hosts' state new
	// hosts take over (carryover.go); nil when none or once activated.
	prev atomic.Pointer[Cluster]

	// connKey is the connection settings (connFields) in deterministic wire form: equal keys mean a
	// replaced cluster's connections can be adopted. The source proto itself is not kept.
	connKey string

	// stopCtx is cancelled by drain; made at the first stopContext (by DNS,
	// health checking, outlier detection, ORIGINAL_DST cleanup), guarded by
	// initMu: most EDS clusters never need one.
	stopCtx  context.Context
	stop     context.CancelFunc
	draining atomic.Bool
	wg       sync.WaitGroup // DNS goroutines
}

// compile builds a cluster from its proto without starting discovery.
func compile(cfg *clusterv3.Cluster, root stats.Scope, res Resolver) (*Cluster, error) {
	name := cfg.GetName()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("cluster %q: %w", name, err)
	}
	statName := name
	if alt := cfg.GetAltStatName(); alt != "" {
		statName = alt
	}
	c := &Cluster{
		x:                        &noExtras,
		Name:                     name,
		Stats:                    newClusterStats(root.Scope("cluster").Scope(statName)),
		Type:                     cfg.GetType(),
		ConnectTimeout:           DefaultConnectTimeout,
		PerConnectionBufferLimit: DefaultPerConnectionBufferLimit,
		IdleTimeout:              DefaultIdleTimeout,
		MaxIdlePerHost:           DefaultMaxIdlePerHost,
		HealthChecks:             cfg.GetHealthChecks(),
		TransportSocket:          cfg.GetTransportSocket(),
		overprovision:            defaultOverprovisioning,
		panicThreshold:           defaultPanicThreshold,
	}
	c.connKey = connKeyOf(cfg)
	if c.Type == clusterv3.Cluster_STRICT_DNS || c.Type == clusterv3.Cluster_LOGICAL_DNS {
		r, err := compileResolver(cfg, res)
		if err != nil {
			return nil, fmt.Errorf("cluster %q: %w", name, err)
		}
		c.extras().dns = &dnsSettings{resolver: r, family: cfg.GetDnsLookupFamily()}
	}
	if err := c.compileOptions(cfg); err != nil {
		return nil, fmt.Errorf("cluster %q: %w", name, err)
	}
	if err := c.compileProtocol(cfg); err != nil {
		return nil, fmt.Errorf("cluster %q: %w", name, err)
	}
	if err := c.compileDiscovery(cfg); err != nil {
		return nil, fmt.Errorf("cluster %q: %w", name, err)
	}
	if hcs := cfg.GetHealthChecks(); len(hcs) > 1 {
		return nil, fmt.Errorf("cluster %q: health_checks: Multiple health checks not supported", name)
	} else if len(hcs) == 1 {
		hc, err := compileHealthCheck(c, hcs[0])
		if err != nil {
			return nil, fmt.Errorf("cluster %q: health_checks[0].%w", name, err)
		}
		c.hc, c.HealthCheck = hc, hc.stats
	}
	compileCircuitBreakers(c, cfg.GetCircuitBreakers())
	if od := cfg.GetOutlierDetection(); od != nil {
		d, err := compileOutlier(c, od)
		if err != nil {
			return nil, fmt.Errorf("cluster %q: %w", name, err)
		}
		c.outlier, c.Outlier = d, d.stats
	}
	c.policy.loc.stats = c.Stats
	c.set.Store(buildPrioritySet(nil, c.policy, c.psOptions()))
	return c, nil
}

// applyCommonHTTP reads common_http_protocol_options (of the cluster or of
// its HttpProtocolOptions extension); nil changes nothing.
func (c *Cluster) applyCommonHTTP(hpo *corev3.HttpProtocolOptions) {
	if hpo == nil {
		return
	}
	if d := hpo.GetIdleTimeout(); d != nil {
		c.IdleTimeout = d.AsDuration()
	}
	if v := hpo.GetMaxRequestsPerConnection(); v != nil {
		c.MaxRequestsPerConnection = v.GetValue()
	}
	if d := hpo.GetMaxConnectionDuration(); d != nil {
		c.MaxConnectionDuration = d.AsDuration()
	}
	if v := hpo.GetMaxHeadersCount(); v != nil {
		c.MaxResponseHeaders = uint16(min(v.GetValue(), 65535))
	}
	if v := hpo.GetMaxResponseHeadersKb(); v != nil {
		c.MaxResponseHeaderKB = uint16(min(v.GetValue(), 8192)) // the proto's own bound
	}
}

// Envoy's defaults for an upstream response's headers.
const (
	defMaxResponseHeaders    = 100
	defMaxH1ResponseHeaderKB = 80
	defMaxH2ResponseHeaderKB = 60
)

// ResponseLimits is the most fields and bytes an upstream response's header
// block may have: max_headers_count (default 100) and
// max_response_headers_kb (default 80 KiB for HTTP/1, 60 KiB for HTTP/2).
func (c *Cluster) ResponseLimits(http2 bool) (fields, bytes int) {
	fields, kb := int(c.MaxResponseHeaders), int(c.MaxResponseHeaderKB)
	if fields == 0 {
		fields = defMaxResponseHeaders
	}
	if kb == 0 {
		kb = defMaxH1ResponseHeaderKB
		if http2 {
			kb = defMaxH2ResponseHeaderKB
		}
	}
	return fields, kb << 10
}

func (c *Cluster) compileOptions(cfg *clusterv3.Cluster) error {
	if d := cfg.GetConnectTimeout(); d != nil {
		c.ConnectTimeout = d.AsDuration()
	}
	if v := cfg.GetPerConnectionBufferLimitBytes(); v != nil {
		c.PerConnectionBufferLimit = int(v.GetValue())
	}
	c.applyCommonHTTP(cfg.GetCommonHttpProtocolOptions())
	c.closeOnHealthFailure = cfg.GetCloseConnectionsOnHostHealthFailure()
	c.closeOnHostSetChange = cfg.GetCommonLbConfig().GetCloseConnectionsOnHostSetChange()
	c.ignoreHealthOnRemoval = cfg.GetIgnoreHealthOnHostRemoval()
	c.noWarmWait = cfg.GetWaitForWarmOnInit() != nil && !cfg.GetWaitForWarmOnInit().GetValue()
	if c.MaxRequestsPerConnection == 0 {
		if v := cfg.GetMaxRequestsPerConnection(); v != nil {
			c.MaxRequestsPerConnection = v.GetValue()
		}
	}

	lb, err := compileLB(cfg, c.Stats.Scope())
	if err != nil {
		return err
	}
	c.policy = lb
	if t := cfg.GetCommonLbConfig().GetHealthyPanicThreshold(); t != nil {
		c.panicThreshold = t.GetValue()
	}
	if f := cfg.GetLoadAssignment().GetPolicy().GetOverprovisioningFactor(); f != nil {
		c.overprovision = f.GetValue()
	}
	c.weightedHealth = cfg.GetLoadAssignment().GetPolicy().GetWeightedPriorityHealth()

	c.dialer = defaultDialer
	custom := func() *net.Dialer {
		if c.dialer == defaultDialer {
			d := *defaultDialer
			c.dialer = &d
		}
		return c.dialer
	}
	if ka := cfg.GetUpstreamConnectionOptions().GetTcpKeepalive(); ka != nil {
		kc := net.KeepAliveConfig{Enable: true, Idle: -1, Interval: -1, Count: -1}
		if v := ka.GetKeepaliveTime(); v != nil {
			kc.Idle = time.Duration(v.GetValue()) * time.Second
		}
		if v := ka.GetKeepaliveInterval(); v != nil {
			kc.Interval = time.Duration(v.GetValue()) * time.Second
		}
		if v := ka.GetKeepaliveProbes(); v != nil {
			kc.Count = int(v.GetValue())
		}
		custom().KeepAliveConfig = kc
	}
	if b := cfg.GetUpstreamBindConfig(); b != nil {
		custom().Control = sockopt.DialControl(b.GetFreebind().GetValue(), b.GetSocketOptions())
	}
	if sa := cfg.GetUpstreamBindConfig().GetSourceAddress(); sa != nil {
		ip, err := netip.ParseAddr(sa.GetAddress())
		if err != nil {
			return fmt.Errorf("upstream_bind_config.source_address: malformed IP address: %s", sa.GetAddress())
		}
		if sa.GetPortValue() > 65535 {
			return fmt.Errorf("upstream_bind_config.source_address.port_value: %d out of range", sa.GetPortValue())
		}
		c.SourceAddr = netip.AddrPortFrom(ip.Unmap(), uint16(sa.GetPortValue()))
		custom().LocalAddr = net.TCPAddrFromAddrPort(c.SourceAddr)
	}
	return nil
}

func (c *Cluster) compileDiscovery(cfg *clusterv3.Cluster) error {
	if ct := cfg.GetClusterType(); ct != nil {
		if ct.GetName() != originalDstClusterType {
			return fmt.Errorf("cluster_type %q: unsupported cluster type", ct.GetName())
		}
		c.Type = clusterv3.Cluster_ORIGINAL_DST // its typed form, as Envoy names the factory
	}
	d := dnsSettings{refresh: DefaultDNSRefreshRate}
	if r := cfg.GetDnsRefreshRate(); r != nil {
		d.refresh = r.AsDuration()
	}
	d.failure = d.refresh
	if b := cfg.GetDnsFailureRefreshRate().GetBaseInterval(); b != nil {
		d.failure = b.AsDuration()
		// Envoy's default max_interval is ten times base_interval.
		d.failureMax = 10 * d.failure
		if m := cfg.GetDnsFailureRefreshRate().GetMaxInterval(); m != nil {
			if d.failureMax = m.AsDuration(); d.failureMax < d.failure {
				return fmt.Errorf("dns_failure_refresh_rate: max_interval %v is less than base_interval %v", d.failureMax, d.failure)
			}
		}
	}
	d.jitter = cfg.GetDnsJitter().AsDuration()
	if c.x.dns != nil {
		d.resolver, d.family = c.x.dns.resolver, c.x.dns.family
		*c.x.dns = d
	}
	switch c.Type {
	case clusterv3.Cluster_STATIC:
		specs, err := parseAssignment(cfg.GetLoadAssignment())
		if err != nil {
			return err
		}
		for i := range specs {
			if _, err := specs[i].staticAddr(); err != nil {
				return err
			}
		}
		c.extras().specs = specs
	case clusterv3.Cluster_STRICT_DNS, clusterv3.Cluster_LOGICAL_DNS:
		specs, err := parseAssignment(cfg.GetLoadAssignment())
		if err != nil {
			return err
		}
		if c.Type == clusterv3.Cluster_LOGICAL_DNS {
			eps := cfg.GetLoadAssignment().GetEndpoints()
			if len(eps) != 1 || len(eps[0].GetLbEndpoints()) != 1 {
				return fmt.Errorf("load_assignment: LOGICAL_DNS clusters must have a single locality_lb_endpoint and a single lb_endpoint")
			}
		}
		c.extras().specs = specs
	case clusterv3.Cluster_EDS:
		c.edsService = cfg.GetEdsClusterConfig().GetServiceName()
		if c.edsService == "" {
			c.edsService = c.Name
		}
	case clusterv3.Cluster_ORIGINAL_DST:
		od, err := compileOriginalDst(c, cfg)
		if err != nil {
			return err
		}
		c.extras().origDst = od
	default:
		return fmt.Errorf("type %s: unsupported cluster type", c.Type)
	}
	return nil
}

// ChooseHost picks a host by the cluster's load balancing policy across
// priorities (Envoy's priority load with overprovisioning and panic mode).
// It returns nil only when no host can be chosen, e.g. an empty cluster or a
// panicking one with panic disabled. It does not allocate.
//
// Hashing policies (RING_HASH, MAGLEV) use ctx.HashKey when ctx.HasHash and a
// random hash otherwise, as Envoy does; LEAST_REQUEST reads the hosts'
// active request counts (HostStats.RqActive).
//
// An ORIGINAL_DST cluster's host is the destination ctx names (its
// downstream connection's restored local address, or the configured request
// header), created on demand.
func (c *Cluster) ChooseHost(ctx *LBContext) *Host {
	if c.x.origDst != nil {
		return c.x.origDst.choose(ctx)
	}
	h, panicked := c.set.Load().choose(ctx)
	if panicked {
		c.Stats.LbHealthyPanic().Inc()
	}
	return h
}

// Hosts is the current host snapshot across priorities, in priority order.
// The slice is shared and must not be modified.
func (c *Cluster) Hosts() []*Host { return c.set.Load().all }

// RefreshHealth rebuilds the load balancer after host health changed
// (the seam for active health checking and outlier detection).
func (c *Cluster) RefreshHealth() {
	c.hostMu.Lock()
	defer c.hostMu.Unlock()
	c.publish(c.set.Load().all)
}

// UpdateLoadAssignment replaces the hosts of an EDS cluster with the
// assignment's endpoints (IP addresses only). Errors name the field; the old
// hosts are kept then.
func (c *Cluster) UpdateLoadAssignment(cla *endpointv3.ClusterLoadAssignment) error {
	c.Stats.UpdateAttempt().Inc()
	specs, err := parseAssignment(cla)
	if err == nil {
		for i := range specs {
			if _, err = specs[i].staticAddr(); err != nil {
				break
			}
		}
	}
	if err != nil {
		c.Stats.UpdateFailure().Inc()
		return fmt.Errorf("cluster %q: %w", c.Name, err)
	}
	c.Stats.UpdateSuccess().Inc()
	if len(specs) == 0 {
		c.Stats.UpdateEmpty().Inc()
	}
	c.hostMu.Lock()
	if f := cla.GetPolicy().GetOverprovisioningFactor(); f != nil {
		c.overprovision = f.GetValue()
	}
	c.weightedHealth = cla.GetPolicy().GetWeightedPriorityHealth()
	c.hostMu.Unlock()
	if !c.setHosts(c.hostsFor(specs)) {
		c.Stats.UpdateNoRebuild().Inc()
	}
	c.markInitialized()
	return nil
}

// hostsFor makes the hosts of an assignment's (valid, IP) specs, reusing
// the current Host of each endpoint that setHosts would keep anyway, so an
// update that changes few endpoints allocates few hosts.
func (c *Cluster) hostsFor(specs []endpointSpec) []*Host {
	cur := c.set.Load().all
	byAddr := make(map[netip.AddrPort]*Host, len(cur))
	for _, h := range cur {
		if _, dup := byAddr[h.Addr]; !dup {
			byAddr[h.Addr] = h
		}
	}
	hosts := make([]*Host, 0, len(specs))
	for i := range specs {
		e := &specs[i]
		a, _ := e.staticAddr()
		if h := byAddr[a]; h != nil && e.sameAs(h) {
			hosts = append(hosts, h)
			delete(byAddr, a)
			continue
		}
		hosts = append(hosts, e.host(c, a, ""))
	}
	return hosts
}

// setHosts installs a new host list, keeping existing Host objects for
// unchanged endpoints and draining the pools of removed ones. It reports
// whether membership changed.
func (c *Cluster) setHosts(next []*Host) bool {
	c.hostMu.Lock()
	defer c.hostMu.Unlock()
	if c.draining.Load() {
		return false
	}
	old := c.set.Load().all
	// The first old host of each address, then (rarely) the others.
	first := make(map[netip.AddrPort]*Host, len(old))
	var more map[netip.AddrPort][]*Host
	for _, h := range old {
		if _, dup := first[h.Addr]; !dup {
			first[h.Addr] = h
			continue
		}
		if more == nil {
			more = make(map[netip.AddrPort][]*Host)
		}
		more[h.Addr] = append(more[h.Addr], h)
	}
	changed := len(old) != len(next)
	var added []*Host
	for i, n := range next {
		found := false
		if h := first[n.Addr]; h != nil && sameEndpoint(h, n) {
			next[i], first[n.Addr], found = h, nil, true
		} else {
			cands := more[n.Addr]
			for j, h := range cands {
				if h != nil && sameEndpoint(h, n) {
					next[i], cands[j], found = h, nil, true
					break
				}
			}
		}
		changed = changed || !found
		if !found {
			added = append(added, n)
		} else {
			next[i].flags.store(fPendingRemoval, false) // listed again
		}
	}
	if c.hc != nil && !c.ignoreHealthOnRemoval {
		next = c.keepHealthyRemoved(next, first, more)
	}
	sortHosts(next)
	if !changed {
		return false
	}
	for _, h := range first {
		if h != nil {
			h.drain()
		}
	}
	for _, cands := range more {
		for _, h := range cands {
			if h != nil {
				h.drain()
			}
		}
	}
	c.inherit(added)
	if c.closeOnHostSetChange {
		for _, h := range next {
			h.drainConns()
		}
	}
	if c.outlier != nil {
		c.outlier.sync(next)
	}
	if c.hc != nil {
		c.hc.sync(next)
	}
	c.publish(next)
	c.Stats.MembershipChange().Inc()
	return true
}

// keepHealthyRemoved appends to next the hosts left in first and more (the
// ones the update removed) that active health checking does not find
// failing and EDS does not mark unhealthy, flagged pendingRemoval, and
// takes them out of first and more: Envoy removes such a host only once it
// fails a check, unless ignore_health_on_host_removal. A removed host whose
// address is listed again (with other attributes) goes. hostMu held.
func (c *Cluster) keepHealthyRemoved(next []*Host, first map[netip.AddrPort]*Host, more map[netip.AddrPort][]*Host) []*Host {
	listed := make(map[netip.AddrPort]bool, len(next))
	for _, n := range next {
		listed[n.Addr] = true
	}
	keep := func(h *Host) bool {
		if h == nil || listed[h.Addr] || h.flags.load(fFailedActiveHC) || h.edsUnhealthy() {
			return false
		}
		h.flags.store(fPendingRemoval, true)
		next = append(next, h)
		return true
	}
	for a, h := range first {
		if keep(h) {
			first[a] = nil
		}
	}
	for _, cands := range more {
		for j, h := range cands {
			if keep(h) {
				cands[j] = nil
			}
		}
	}
	return next
}

// removePending removes h, kept by keepHealthyRemoved, now that it failed
// active health checking.
func (c *Cluster) removePending(h *Host) {
	c.hostMu.Lock()
	defer c.hostMu.Unlock()
	if c.draining.Load() || !h.flags.load(fPendingRemoval) {
		return
	}
	old := c.set.Load().all
	next := make([]*Host, 0, len(old))
	for _, x := range old {
		if x != h {
			next = append(next, x)
		}
	}
	if len(next) == len(old) {
		return
	}
	h.drain()
	if c.outlier != nil {
		c.outlier.sync(next)
	}
	c.hc.sync(next)
	c.publish(next)
	c.Stats.MembershipChange().Inc()
}

// publish builds and stores the load balancer state for hosts; hostMu held.
func (c *Cluster) publish(hosts []*Host) {
	ps := buildPrioritySet(hosts, c.policy, c.psOptions())
	c.set.Store(ps)
	var maxW uint32
	for _, h := range hosts {
		maxW = max(maxW, h.Weight)
	}
	c.Stats.MembershipTotal().Set(int64(len(hosts)))
	c.Stats.MembershipHealthy().Set(int64(ps.nHealthy))
	c.Stats.MembershipDegraded().Set(int64(ps.nDegraded))
	c.Stats.MembershipExcluded().Set(0)
	c.Stats.MaxHostWeight().Set(int64(maxW))
}

func (c *Cluster) psOptions() psOptions {
	return psOptions{overprovision: c.overprovision, panicThreshold: c.panicThreshold, weightedHealth: c.weightedHealth}
}

// drain stops discovery and closes idle pooled connections; connections in
// use are closed when released.
func (c *Cluster) drain() {
	c.hostMu.Lock()
	if c.draining.Swap(true) {
		c.hostMu.Unlock()
		return
	}
	c.initMu.Lock()
	if c.stop != nil {
		c.stop()
	}
	c.initMu.Unlock()
	cancel := c.edsCancel
	c.hostMu.Unlock()
	if cancel != nil {
		cancel()
	}
	c.wg.Wait()
	if c.hc != nil {
		c.hc.close()
	}
	for _, h := range c.set.Load().all {
		h.drain()
	}
}

// Draining reports whether the cluster was removed or replaced.
func (c *Cluster) Draining() bool { return c.draining.Load() }
