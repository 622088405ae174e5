package upstream

import (
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	originaldstv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/clusters/original_dst/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/outrider-proxy/outrider/proxy/confcheck"
	"github.com/outrider-proxy/outrider/telemetry/stats"
)

// defaultOriginalDstHeader is the request header an ORIGINAL_DST cluster
// with use_http_header reads when http_header_name is unset.
const defaultOriginalDstHeader = "x-envoy-original-dst-host"

// originalDstClusterType is the cluster_type name of ORIGINAL_DST's typed
// form (Envoy's cluster factory name).
const originalDstClusterType = "envoy.cluster.original_dst"

// isOriginalDst reports whether cfg is an ORIGINAL_DST cluster, by type or
// by cluster_type.
func isOriginalDst(cfg *clusterv3.Cluster) bool {
	if ct := cfg.GetClusterType(); ct != nil {
		return ct.GetName() == originalDstClusterType
	}
	return cfg.GetType() == clusterv3.Cluster_ORIGINAL_DST
}

// defaultCleanupInterval is cleanup_interval's default.
const defaultCleanupInterval = 5 * time.Second

// originalDst is the host cache of an ORIGINAL_DST cluster (Envoy's
// OriginalDstCluster with its CLUSTER_PROVIDED load balancer): the host is
// the downstream connection's original destination, or the one a request
// header names, created on first use and removed by a cleanup round that
// finds it unused since the previous one.
type originalDst struct {
	c *Cluster
	// header is the lower-case request header naming the host; "" unless
	// original_dst_lb_config.use_http_header.
	header string
	// port replaces the destination's port (upstream_port_override); 0
	// keeps it.
	port    uint16
	cleanup time.Duration
	invalid *stats.Counter // original_dst_host_invalid

	hosts sync.Map   // netip.AddrPort -> *odEntry
	mu    sync.Mutex // serializes host additions and cleanup
}

type odEntry struct {
	h    *Host
	used atomic.Bool
}

// compileOriginalDst reads an ORIGINAL_DST cluster's options; errors name
// the field.
func compileOriginalDst(c *Cluster, cfg *clusterv3.Cluster) (*originalDst, error) {
	if cfg.GetLbPolicy() != clusterv3.Cluster_CLUSTER_PROVIDED || cfg.GetLoadBalancingPolicy() != nil {
		return nil, fmt.Errorf("lb_policy: LB policy %s is not valid for Cluster type ORIGINAL_DST. Only 'CLUSTER_PROVIDED' is allowed with cluster type 'ORIGINAL_DST'", cfg.GetLbPolicy())
	}
	if len(cfg.GetLoadAssignment().GetEndpoints()) > 0 {
		return nil, fmt.Errorf("load_assignment: ORIGINAL_DST clusters must have no load assignment configured")
	}
	o := &originalDst{c: c, cleanup: defaultCleanupInterval, invalid: c.Stats.Scope().Counter("original_dst_host_invalid")}
	if d := cfg.GetCleanupInterval(); d != nil {
		o.cleanup = d.AsDuration()
		if o.cleanup <= 0 {
			return nil, fmt.Errorf("cleanup_interval: must be greater than 0")
		}
	}
	// original_dst_lb_config, or the same fields in the typed cluster_type's
	// OriginalDstCluster.
	var lc interface {
		proto.Message
		GetUseHttpHeader() bool
		GetHttpHeaderName() string
		GetUpstreamPortOverride() *wrapperspb.UInt32Value
	}
	path := "original_dst_lb_config"
	if c := cfg.GetOriginalDstLbConfig(); c != nil {
		lc = c
	}
	if tc := cfg.GetClusterType().GetTypedConfig(); tc != nil {
		m := &originaldstv3.OriginalDstCluster{}
		if err := tc.UnmarshalTo(m); err != nil {
			return nil, fmt.Errorf("cluster_type.typed_config: %w", err)
		}
		lc, path = m, "cluster_type.typed_config"
	}
	if lc != nil {
		if err := confcheck.Fields(lc, path, "use_http_header", "http_header_name", "upstream_port_override"); err != nil {
			return nil, err
		}
		if lc.GetUseHttpHeader() {
			o.header = defaultOriginalDstHeader
			if n := lc.GetHttpHeaderName(); n != "" {
				o.header = strings.ToLower(n)
			}
		}
		if p := lc.GetUpstreamPortOverride(); p != nil {
			if p.GetValue() == 0 || p.GetValue() > 65535 {
				return nil, fmt.Errorf("%s.upstream_port_override: %d is not a valid port", path, p.GetValue())
			}
			o.port = uint16(p.GetValue())
		}
	}
	return o, nil
}

// OriginalDstFilterStateKey is the filter-state name whose "ip:port" value
// overrides an ORIGINAL_DST cluster's destination, as Envoy's
// envoy.network.transport_socket.original_dst_address.
const OriginalDstFilterStateKey = "envoy.network.transport_socket.original_dst_address"

// destination is where ctx says to connect, in Envoy's order: the
// connection's filter-state override, the request header when configured
// and valid, else the downstream connection's restored local address; the
// port override applies to each.
func (o *originalDst) destination(ctx *LBContext) (netip.AddrPort, bool) {
	if ctx == nil {
		return netip.AddrPort{}, false
	}
	var dst netip.AddrPort
	if dc := ctx.DownstreamConn; dc != nil {
		if obj := dc.FilterState.Get(OriginalDstFilterStateKey); obj != nil {
			if v, ok := obj.String(); ok {
				if ap, err := netip.ParseAddrPort(v); err == nil {
					dst = ap
				}
			}
		}
	}
	if !dst.IsValid() && o.header != "" && ctx.Headers != nil {
		if v, ok := ctx.Headers.Get(o.header); ok {
			ap, err := netip.ParseAddrPort(strings.TrimSpace(string(v)))
			if err != nil {
				o.invalid.Inc()
			} else {
				dst = ap
			}
		}
	}
	if !dst.IsValid() {
		dc := ctx.DownstreamConn
		if dc == nil || !dc.LocalAddrRestored || !dc.LocalAddr.IsValid() {
			return netip.AddrPort{}, false
		}
		dst = dc.LocalAddr
	}
	if o.port != 0 {
		dst = netip.AddrPortFrom(dst.Addr(), o.port)
	}
	return netip.AddrPortFrom(dst.Addr().Unmap(), dst.Port()), true
}

// choose is the cluster's host for ctx, created on demand; nil when ctx
// names no destination.
func (o *originalDst) choose(ctx *LBContext) *Host {
	dst, ok := o.destination(ctx)
	if !ok {
		return nil
	}
	if e, ok := o.hosts.Load(dst); ok {
		e := e.(*odEntry)
		e.used.Store(true)
		return e.h
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if e, ok := o.hosts.Load(dst); ok {
		e := e.(*odEntry)
		e.used.Store(true)
		return e.h
	}
	h := newHost(o.c, dst, "", 1, 0, nil, nil, corev3.HealthStatus_UNKNOWN)
	e := &odEntry{h: h}
	e.used.Store(true)
	o.hosts.Store(dst, e)
	next := append(append([]*Host(nil), o.c.set.Load().all...), h)
	o.c.setHosts(next)
	return h
}

// sweep removes the hosts not chosen since the previous sweep and without
// open connections, and marks the others unused for the next one.
func (o *originalDst) sweep() {
	o.mu.Lock()
	defer o.mu.Unlock()
	var keep []*Host
	removed := false
	for _, h := range o.c.set.Load().all { // in the order they were added
		v, ok := o.hosts.Load(h.Addr)
		if !ok {
			continue
		}
		if e := v.(*odEntry); e.used.Swap(false) || h.StatsView().CxActive.Load() > 0 {
			keep = append(keep, h)
		} else {
			o.hosts.Delete(h.Addr)
			removed = true
		}
	}
	if removed {
		o.c.setHosts(keep)
	}
}

// start runs the cleanup rounds until the cluster drains.
func (o *originalDst) start() {
	o.c.wg.Add(1)
	go func() {
		defer o.c.wg.Done()
		t := time.NewTicker(o.cleanup)
		defer t.Stop()
		for {
			select {
			case <-o.c.stopContext().Done():
				return
			case <-t.C:
				o.sweep()
			}
		}
	}()
}
