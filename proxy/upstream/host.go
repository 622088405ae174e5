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
	Priority int              // locality priority; 0 is the highest
	Locality *corev3.Locality // nil when the endpoint has none
	Metadata *corev3.Metadata // endpoint metadata; nil when none
	Stats    HostStats        // per-host counters for /clusters

	// localityWeight is the load_balancing_weight of the endpoint's
	// locality (LocalityLbEndpoints); 0 when unset.
	localityWeight uint32

	// edsHealth is the endpoint's configured health_status.
	edsHealth corev3.HealthStatus
	// failedActiveHC and failedOutlier are set by active health checking and
	// outlier detection; either makes the host unhealthy. degradedActiveHC
	// (an x-envoy-degraded answer) makes a healthy host degraded;
	// activeHCTimeout marks a failed host whose last check timed out.
	failedActiveHC atomic.Bool
	// pendingRemoval is Envoy's PENDING_DYNAMIC_REMOVAL: EDS removed the
	// host, but active health checking still finds it healthy, so it stays
	// (and takes traffic) until it fails a check (setHosts, removePending).
	pendingRemoval   atomic.Bool
	failedOutlier    atomic.Bool
	degradedActiveHC atomic.Bool
	activeHCTimeout  atomic.Bool

	// hcHostname and hcPort are endpoint.health_check_config's hostname and
	// port_value; empty and zero when unset.
	hcHostname string
	hcPort     uint16
	// hcDisabled is health_check_config.disable_active_health_check: the
	// host is never actively checked and never fails active health checks.
	hcDisabled bool
	// hcCarried is set when the host took its active health check flags
	// from the replaced cluster's host (carryover.go): it is not reset to
	// failed and does not hold up warming.
	hcCarried bool
	// outlier is the host's outlier detection state; nil when the cluster
	// has no outlier_detection.
	outlier *outlierHost

	cluster *Cluster
	pool    atomic.Pointer[Pool]
	h2pool  atomic.Pointer[H2Pool]
	// sni holds the pools per TLSOverride (auto_sni); nil until the first
	// (most hosts never have one, and two sync.Maps are ~100 bytes).
	sni     atomic.Pointer[overridePools]
	closers healthClosers // close_connections_on_host_health_failure
	h1Only  atomic.Bool   // an auto_config host that did not negotiate h2
	drained atomic.Bool
	addrStr string
}

// overridePools are a host's pools per TLSOverride: TLSOverride → *Pool in
// h1, → *H2Pool in h2.
type overridePools struct{ h1, h2 sync.Map }

// overrides returns h's override pools, making them on first use.
func (h *Host) overrides() *overridePools {
	if p := h.sni.Load(); p != nil {
		return p
	}
	h.sni.CompareAndSwap(nil, &overridePools{})
	return h.sni.Load()
}

// String is "ip:port".
func (h *Host) String() string { return h.addrStr }

// HealthStatus is the endpoint's health_status from config or EDS.
func (h *Host) HealthStatus() corev3.HealthStatus { return h.edsHealth }

// Health is the host's coarse health: EDS UNKNOWN and HEALTHY count as
// healthy, DEGRADED as degraded, and UNHEALTHY, DRAINING and TIMEOUT, like a
// failed active health check or an outlier ejection, as unhealthy.
func (h *Host) Health() Health {
	if h.failedActiveHC.Load() || h.failedOutlier.Load() {
		return Unhealthy
	}
	switch h.edsHealth {
	case corev3.HealthStatus_UNKNOWN, corev3.HealthStatus_HEALTHY:
		if h.degradedActiveHC.Load() {
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
func (h *Host) SetActiveHealthCheckFailed(failed bool) { h.failedActiveHC.Store(failed) }

// SetOutlierEjected is the seam for outlier detection; callers must then call
// Cluster.RefreshHealth so the load balancer sees the change.
func (h *Host) SetOutlierEjected(ejected bool) { h.failedOutlier.Store(ejected) }

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
	add(h.failedActiveHC.Load(), "failed_active_hc")
	add(h.failedOutlier.Load(), "failed_outlier_check")
	add(h.edsUnhealthy(), "failed_eds_health")
	add(h.degradedActiveHC.Load(), "degraded_active_hc")
	add(h.edsHealth == corev3.HealthStatus_DEGRADED, "degraded_eds_health")
	add(h.pendingRemoval.Load(), "pending_dynamic_removal")
	add(h.activeHCTimeout.Load(), "active_hc_timeout")
	add(h.edsHealth == corev3.HealthStatus_DRAINING, "eds_status_draining")
	if b.Len() == 0 {
		return "healthy"
	}
	return b.String()
}

// Cluster is the cluster the host belongs to.
func (h *Host) Cluster() *Cluster { return h.cluster }

func newHost(c *Cluster, addr netip.AddrPort, hostname string, weight uint32, prio int,
	loc *corev3.Locality, md *corev3.Metadata, hs corev3.HealthStatus) *Host {
	if weight == 0 {
		weight = 1
	}
	return &Host{
		Addr: addr, Hostname: hostname, Weight: weight, Priority: prio,
		Locality: loc, Metadata: md, edsHealth: hs,
		cluster: c, addrStr: addr.String(),
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
	h.drained.Store(true)
	if p := h.pool.Load(); p != nil {
		p.Close()
	}
	if p := h.h2pool.Load(); p != nil {
		p.Close()
	}
	h.closeOverridePools()
}

// sortHosts orders hosts by priority, keeping config order within one.
func sortHosts(hs []*Host) {
	slices.SortStableFunc(hs, func(a, b *Host) int { return a.Priority - b.Priority })
}
