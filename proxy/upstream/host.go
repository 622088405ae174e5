package upstream

import (
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
)

// Health is a host's health as the load balancer sees it.
type Health uint8

// Host health values, as Envoy's Host::Health.
const (
	Healthy Health = iota
	Degraded
	Unhealthy
)

// Host is one upstream endpoint of one cluster. Hosts are shared between
// host-set snapshots of the same cluster while their address is unchanged, so
// their stats and connection pool survive DNS refreshes and EDS updates.
type Host struct {
	Addr     netip.AddrPort   // resolved address to connect to
	Hostname string           // endpoint hostname (DNS name or health_check_config/hostname); empty if none
	Weight   uint32           // load_balancing_weight; 1 when unset
	Priority int32            // locality priority; 0 is the highest
	Locality *corev3.Locality // nil when the endpoint has none
	Metadata *corev3.Metadata // endpoint metadata; nil when none

	// rt is the host's counters and connection pools; nil until the
	// host's first connection or request (runtime, Stats), as most hosts
	// of a large configuration may never see one.
	rt atomic.Pointer[hostRuntime]

	// localityWeight is the load_balancing_weight of the endpoint's
	// locality (LocalityLbEndpoints); 0 when unset.
	localityWeight uint32
	// edsHealth is the endpoint's configured health_status.
	edsHealth corev3.HealthStatus
	// flags are the host's changing states (hostFlag): failed and degraded
	// by active health checking, ejected by outlier detection, pending
	// removal, drained, HTTP/1 only.
	flags hostFlags
	// hcPort is endpoint.health_check_config's port_value; zero when unset.
	hcPort uint16
	// hcDisabled is health_check_config.disable_active_health_check: the
	// host is never actively checked and never fails active health checks.
	hcDisabled bool
	// hcCarried is set when the host took its active health check flags
	// from the replaced cluster's host (carryover.go): it is not reset to
	// failed and does not hold up warming.
	hcCarried bool

	cluster *Cluster
	// ext holds what only some hosts need: health_check_config's hostname
	// (set at creation), the pools per TLSOverride (auto_sni) and the
	// close_connections_on_host_health_failure closers (made at first use).
	// Nil while the host needs none of them, as most never do.
	ext atomic.Pointer[hostExtras]
}

// hostExtras are a host's rarely used parts (Host.ext).
type hostExtras struct {
	hcHostname string // health_check_config.hostname; never changes
	sni        overridePools
	closers    healthClosers
}

// extras returns h.ext, making it on first use.
func (h *Host) extras() *hostExtras {
	if e := h.ext.Load(); e != nil {
		return e
	}
	h.ext.CompareAndSwap(nil, new(hostExtras))
	return h.ext.Load()
}

// hostRuntime is what a host needs once it is used (Host.rt).
type hostRuntime struct {
	stats  HostStats
	pool   atomic.Pointer[Pool]
	h2pool atomic.Pointer[H2Pool]
	// outlier is the host's outlier detection state; nil when the cluster
	// has no outlier_detection. Set before the host is published (the
	// detector's sync, carry-over), so a host of such a cluster always has
	// its runtime.
	outlier *outlierHost
}

// outlierState is the host's outlier detection state; nil without
// outlier_detection.
func (h *Host) outlierState() *outlierHost {
	if r := h.rt.Load(); r != nil {
		return r.outlier
	}
	return nil
}

// runtime returns h.rt, making it on first use.
func (h *Host) runtime() *hostRuntime {
	if r := h.rt.Load(); r != nil {
		return r
	}
	h.rt.CompareAndSwap(nil, new(hostRuntime))
	return h.rt.Load()
}

// Stats is the host's counters, made at the first call: callers that
// update them use it. Readers that should not make them use StatsView.
func (h *Host) Stats() *HostStats { return &h.runtime().stats }

// zeroHostStats is what StatsView shows for a host without counters yet.
var zeroHostStats HostStats

// StatsView is the host's counters for reading (all zero, and shared, while
// the host has none yet); it never makes them. Do not modify it: update
// through Stats.
func (h *Host) StatsView() *HostStats {
	if r := h.rt.Load(); r != nil {
		return &r.stats
	}
	return &zeroHostStats
}

// hcHost is health_check_config's hostname, "" when unset.
func (h *Host) hcHost() string {
	if e := h.ext.Load(); e != nil {
		return e.hcHostname
	}
	return ""
}

// hostFlag is one bit of hostFlags.
type hostFlag uint32

const (
	// fFailedActiveHC: active health checking failed the host.
	fFailedActiveHC hostFlag = 1 << iota
	// fPendingRemoval is Envoy's PENDING_DYNAMIC_REMOVAL: EDS removed the
	// host, but active health checking still finds it healthy, so it stays
	// (and takes traffic) until it fails a check (setHosts, removePending).
	fPendingRemoval
	// fFailedOutlier: outlier detection ejected the host.
	fFailedOutlier
	// fDegradedActiveHC: an active health check answered x-envoy-degraded.
	fDegradedActiveHC
	// fActiveHCTimeout: the failed host's last active check timed out.
	fActiveHCTimeout
	// fH1Only: an auto_config host that did not negotiate h2.
	fH1Only
	// fDrained: the host was removed and its pools closed.
	fDrained
)

// hostFlags are a host's boolean states in one atomic word (seven
// atomic.Bools took 28 bytes of every host). The zero value has none set.
type hostFlags struct{ v atomic.Uint32 }

func (f *hostFlags) load(b hostFlag) bool { return f.v.Load()&uint32(b) != 0 }

func (f *hostFlags) store(b hostFlag, on bool) {
	if on {
		f.v.Or(uint32(b))
	} else {
		f.v.And(^uint32(b))
	}
}

// overridePools are a host's pools per TLSOverride: TLSOverride → *Pool in
// h1, → *H2Pool in h2.
type overridePools struct{ h1, h2 sync.Map }

// overrides returns h's override pools, making them on first use.
func (h *Host) overrides() *overridePools {
	return &h.extras().sni
}

// String is "ip:port" ("[ip]:port" for IPv6), made on each call: hosts do
// not keep it (~48 bytes a host).
func (h *Host) String() string { return h.Addr.String() }

// HealthStatus is the endpoint's health_status from config or EDS.
func (h *Host) HealthStatus() corev3.HealthStatus { return h.edsHealth }

// Health is the host's coarse health: EDS UNKNOWN and HEALTHY count as
// healthy, DEGRADED as degraded, and UNHEALTHY, DRAINING and TIMEOUT, like a
// failed active health check or an outlier ejection, as unhealthy.
func (h *Host) Health() Health {
	if h.flags.load(fFailedActiveHC) || h.flags.load(fFailedOutlier) {
		return Unhealthy
	}
	switch h.edsHealth {
	case corev3.HealthStatus_UNKNOWN, corev3.HealthStatus_HEALTHY:
		if h.flags.load(fDegradedActiveHC) {
			return Degraded
		}
		return Healthy
	case corev3.HealthStatus_DEGRADED:
		return Degraded
	default:
		return Unhealthy
	}
}

// Healthy reports whether Health is Healthy.
func (h *Host) Healthy() bool { return h.Health() == Healthy }

// SetActiveHealthCheckFailed is the seam for active health checking; callers
// must then call Cluster.RefreshHealth so the load balancer sees the change.
func (h *Host) SetActiveHealthCheckFailed(failed bool) { h.flags.store(fFailedActiveHC, failed) }

// SetOutlierEjected is the seam for outlier detection; callers must then call
// Cluster.RefreshHealth so the load balancer sees the change.
func (h *Host) SetOutlierEjected(ejected bool) { h.flags.store(fFailedOutlier, ejected) }

// edsUnhealthy is Envoy's FAILED_EDS_HEALTH: EDS says UNHEALTHY or TIMEOUT.
func (h *Host) edsUnhealthy() bool {
	return h.edsHealth == corev3.HealthStatus_UNHEALTHY || h.edsHealth == corev3.HealthStatus_TIMEOUT
}

// HealthFlags is the host's health as Envoy's /clusters prints it:
// "healthy", or the set flags each preceded by a slash, e.g.
// "/failed_active_hc/failed_outlier_check".
func (h *Host) HealthFlags() string {
	var b strings.Builder
	add := func(set bool, name string) {
		if set {
			b.WriteString("/" + name)
		}
	}
	add(h.flags.load(fFailedActiveHC), "failed_active_hc")
	add(h.flags.load(fFailedOutlier), "failed_outlier_check")
	add(h.edsUnhealthy(), "failed_eds_health")
	add(h.flags.load(fDegradedActiveHC), "degraded_active_hc")
	add(h.edsHealth == corev3.HealthStatus_DEGRADED, "degraded_eds_health")
	add(h.flags.load(fPendingRemoval), "pending_dynamic_removal")
	add(h.flags.load(fActiveHCTimeout), "active_hc_timeout")
	add(h.edsHealth == corev3.HealthStatus_DRAINING, "eds_status_draining")
	if b.Len() == 0 {
		return "healthy"
	}
	return b.String()
}

// Cluster is the cluster the host belongs to.
func (h *Host) Cluster() *Cluster { return h.cluster }

func newHost(c *Cluster, addr netip.AddrPort, hostname string, weight uint32, prio int32,
	loc *corev3.Locality, md *corev3.Metadata, hs corev3.HealthStatus) *Host {
	if weight == 0 {
		weight = 1
	}
	return &Host{
		Addr: addr, Hostname: hostname, Weight: weight, Priority: prio,
		Locality: loc, Metadata: md, edsHealth: hs,
		cluster: c,
	}
}

// sameEndpoint reports whether h can stand for n in a new host set (same
// address, weight, priority, locality and its weight, and health), so h is
// kept with its pool and stats.
func sameEndpoint(h, n *Host) bool {
	return h.Addr == n.Addr && h.Weight == n.Weight && h.Priority == n.Priority &&
		h.edsHealth == n.edsHealth && h.Hostname == n.Hostname &&
		keyOf(h.Locality) == keyOf(n.Locality) && h.localityWeight == n.localityWeight
}

// drain marks the host removed and closes its pool's idle connections.
func (h *Host) drain() {
	h.flags.store(fDrained, true)
	if r := h.rt.Load(); r != nil {
		if p := r.pool.Load(); p != nil {
			p.Close()
		}
		if p := r.h2pool.Load(); p != nil {
			p.Close()
		}
	}
	h.closeOverridePools()
}

// sortHosts orders hosts by priority, keeping config order within one.
func sortHosts(hs []*Host) {
	slices.SortStableFunc(hs, func(a, b *Host) int { return int(a.Priority - b.Priority) })
}
