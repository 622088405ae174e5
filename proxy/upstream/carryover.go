package upstream

import (
	"fmt"
	"net/netip"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// Carry-over of host state and connections from a replaced cluster.
//
// Envoy itself builds a changed cluster from scratch: its hosts start
// without health flags (failed_active_hc until the first check when it has
// health checks), outlier ejections are forgotten and the old cluster's
// connection pools are drained (envoyproxy/envoy#13070). Within one cluster,
// Envoy keeps an endpoint's active health check flags when an update keeps the
// endpoint with the same health check address
// (envoy.reloadable_features.keep_endpoint_active_hc_status). Outrider applies
// that same rule across a cluster update, so a changed cluster does not lose
// what it knows about unchanged endpoints:
//
//   - Active health checking: a new host takes the failed_active_hc,
//     degraded_active_hc and active_hc_timeout flags of the old cluster's host
//     with the same address when both clusters run the same health check
//     (equal health_checks protos) and both hosts are checked at the same
//     health check address (port_value and hostname of health_check_config).
//     Such a host does not hold up warming, and its first check is not a
//     "first check" (healthy_threshold applies). Consecutive counters restart.
//   - Outlier detection: when both clusters have outlier_detection, a new
//     host takes the old host's ejection state (ejected or not, the time of
//     the ejection, the number of ejections and the back-off), so an ejected
//     host stays ejected until its ejection time (computed with the new
//     cluster's base_ejection_time) is up.
//   - Connections: when the connection-level settings are equal (see
//     connFields) the old host's idle HTTP/1 connections and its HTTP/2
//     connections move to the new cluster's host with the same address at
//     activation, and HTTP/1 connections in use at that moment move when
//     released; otherwise they drain as before. A moved connection holds a
//     max_connections slot of the new cluster, its host's cx_active moves
//     with it, and the cluster stats are the same objects (a replaced cluster
//     shares its stats block).
//
// The state is taken when a host first appears in the new (warming) cluster;
// the new cluster's own health checks and outlier detection run from there.

// connFields are the Cluster fields that shape an upstream connection: when
// they are equal, a connection of the old cluster is as good as a new one.
var connFields = []protoreflect.Name{
	"transport_socket", "transport_socket_matches", "typed_extension_protocol_options",
	"http_protocol_options", "http2_protocol_options", "common_http_protocol_options",
	"upstream_http_protocol_options", "protocol_selection", "upstream_bind_config",
	"upstream_connection_options", "per_connection_buffer_limit_bytes", "max_requests_per_connection",
}

// connView is a Cluster with only c's connFields set.
func connView(c *clusterv3.Cluster) proto.Message {
	src := c.ProtoReflect()
	dst := (&clusterv3.Cluster{}).ProtoReflect()
	fds := src.Descriptor().Fields()
	for _, n := range connFields {
		if fd := fds.ByName(n); fd != nil && src.Has(fd) {
			dst.Set(fd, src.Get(fd))
		}
	}
	return dst.Interface()
}

// connKeyOf is c's connection settings (connView) in deterministic wire
// form: clusters with equal keys can share connections.
func connKeyOf(c *clusterv3.Cluster) string {
	src := c.ProtoReflect()
	fds := src.Descriptor().Fields()
	set := false
	for _, n := range connFields {
		if fd := fds.ByName(n); fd != nil && src.Has(fd) {
			set = true
			break
		}
	}
	if !set {
		return "" // what connView marshals to: no copy made for the common cluster
	}
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(connView(c))
	if err != nil {
		return fmt.Sprintf("\x00%p", c) // unequal to any other cluster's key: connections are not moved
	}
	return string(b)
}

// setPredecessor records old as the cluster nc replaces, so hosts nc
// discovers take over old's host state; nil clears it.
func (nc *Cluster) setPredecessor(old *Cluster) {
	if old == nc {
		old = nil
	}
	nc.prev.Store(old)
}

// oldHostsByAddr indexes old's current hosts by address (the first of each).
func oldHostsByAddr(old *Cluster) map[netip.AddrPort]*Host {
	all := old.set.Load().all
	m := make(map[netip.AddrPort]*Host, len(all))
	for _, h := range all {
		if _, dup := m[h.Addr]; !dup {
			m[h.Addr] = h
		}
	}
	return m
}

// inherit gives hosts added to c the health check and outlier state of the
// predecessor's host with the same address. c.hostMu is held and the hosts
// are not yet synced to the health checker and outlier detector.
func (c *Cluster) inherit(added []*Host) {
	old := c.prev.Load()
	if old == nil || len(added) == 0 {
		return
	}
	byAddr := oldHostsByAddr(old)
	sameHC := c.hc != nil && old.hc != nil && proto.Equal(c.HealthChecks[0], old.HealthChecks[0])
	od := old.outlier
	if c.outlier == nil {
		od = nil
	}
	for _, h := range added {
		oh := byAddr[h.Addr]
		if oh == nil {
			continue
		}
		if sameHC && !h.hcDisabled && !oh.hcDisabled && h.hcPort == oh.hcPort && h.hcHost() == oh.hcHost() {
			h.flags.store(fFailedActiveHC, oh.flags.load(fFailedActiveHC))
			h.flags.store(fDegradedActiveHC, oh.flags.load(fDegradedActiveHC))
			h.flags.store(fActiveHCTimeout, oh.flags.load(fActiveHCTimeout))
			h.hcCarried = true
		}
		if od != nil {
			od.mu.Lock()
			if o := oh.outlierState(); o != nil {
				n := &outlierHost{numEjections: o.numEjections, backoff: o.backoff, ejectedAt: o.ejectedAt, jitter: o.jitter}
				n.srExt.Store(minusOne)
				n.srLocal.Store(minusOne)
				h.runtime().outlier = n
				h.flags.store(fFailedOutlier, oh.flags.load(fFailedOutlier))
			}
			od.mu.Unlock()
		}
	}
}

// adoptConns moves the connections of old's hosts to nc's hosts of the same
// address when their connection settings are equal; it runs at activation,
// before old drains. Auto-SNI pools are not moved.
func (nc *Cluster) adoptConns(old *Cluster) {
	if old.connKey != nc.connKey {
		return
	}
	byAddr := oldHostsByAddr(old)
	for _, h := range nc.set.Load().all {
		oh := byAddr[h.Addr]
		if oh == nil || (len(nc.x.socketMatches) > 0 && !proto.Equal(h.Metadata, oh.Metadata)) {
			continue
		}
		ort := oh.rt.Load()
		if ort == nil {
			continue // never used: no pools
		}
		if op := ort.pool.Load(); op != nil {
			op.handOver(nc.Pool(h))
		}
		if op := ort.h2pool.Load(); op != nil {
			op.handOver(nc.H2Pool(h))
		}
	}
}

// handOver closes p and moves its idle connections to np; connections in
// use move to np when released reusable (see Release).
func (p *Pool) handOver(np *Pool) {
	p.mu.Lock()
	p.closed = true
	p.next = np
	idle := p.takeIdleLocked()
	p.mu.Unlock()
	for _, pc := range idle {
		if pc.timer != nil && !pc.timer.Stop() {
			pc.destroy() // its idle timeout fired: it would close now anyway
			continue
		}
		np.adopt(pc)
	}
}

// adopt takes over an idle connection of another cluster's pool for the
// same address: it moves the max_connections slot and the host's cx_active,
// and puts it on the idle list with what remains of its idle timeout. It
// closes the connection when np cannot take it.
func (np *Pool) adopt(pc *PooledConn) {
	c := np.cluster
	if np.host.flags.load(fDrained) || !c.res.cx.tryAcquire(c.res.cx.max) {
		pc.destroy()
		return
	}
	if pc.cxDone != nil {
		pc.cxDone()
	}
	pc.cxDone = c.res.releaseCx
	oh := pc.pool.host
	oh.Stats().CxActive.Add(-1)
	np.host.Stats().CxActive.Add(1)
	pc.uc.host, pc.uc.cluster = np.host, c
	pc.pool = np
	left := time.Duration(0)
	if c.IdleTimeout > 0 {
		if left = c.IdleTimeout - time.Since(pc.idleSince); left <= 0 {
			c.Stats.UpstreamCxIdleTimeout().Inc()
			pc.destroy()
			return
		}
	}
	np.mu.Lock()
	pc.gen = np.drains
	if np.closed || len(np.idle) >= max(c.MaxIdlePerHost, 1) {
		np.mu.Unlock()
		pc.destroy()
		return
	}
	pc.inIdle = true
	np.idle = append(np.idle, pc)
	if left > 0 {
		if pc.timer == nil {
			pc.timer = time.AfterFunc(left, pc.onIdleTimeout)
		} else {
			pc.timer.Reset(left)
		}
	}
	np.mu.Unlock()
	c.res.freed.notify()
}

// handOver closes p and moves its open HTTP/2 connections that still take
// streams to np; streams in flight continue on them. Each moved connection
// holds a max_connections slot of np's cluster (it is closed when there is
// none) and counts in np's host's cx_active.
func (p *H2Pool) handOver(np *H2Pool) {
	p.mu.Lock()
	p.closed = true
	conns := p.conns
	p.conns = nil
	p.mu.Unlock()
	c := np.cluster
	for _, oc := range conns {
		p.mu.Lock()
		ended := false
		select {
		case <-oc.cc.Done():
			ended = true
		default:
		}
		if ended || oc.full || oc.cc.GoAwayReceived() || oc.conn == nil || np.host.flags.load(fDrained) ||
			!c.res.cx.tryAcquire(c.res.cx.max) {
			if !ended {
				p.conns = append(p.conns, oc) // drains with p
				oc.full = true
			}
			p.mu.Unlock()
			continue
		}
		p.mu.Unlock()
		oh, nh := p.host, np.host
		nh.Stats().CxActive.Add(1)
		oh.Stats().CxActive.Add(-1)
		// UpstreamConn.Close counts the old host; the new release undoes that.
		if !oc.conn.swapDone(func() {
			c.res.releaseCx()
			nh.Stats().CxActive.Add(-1)
			oh.Stats().CxActive.Add(1)
		}) {
			c.res.releaseCx()
			nh.Stats().CxActive.Add(-1)
			oh.Stats().CxActive.Add(1)
			continue
		}
		p.mu.Lock()
		oc.pool.Store(np) // under p.mu, which oc's timers hold while they use p (lockPool)
		p.mu.Unlock()
		np.mu.Lock()
		if np.closed {
			oc.full = true
		}
		np.conns = append(np.conns, oc)
		np.mu.Unlock()
	}
	p.sweep()
	np.sweep()
}
