package server

import (
	"fmt"
	"slices"
	"strings"
	"time"

	adminv3 "github.com/envoyproxy/go-control-plane/envoy/admin/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/outrider-proxy/outrider/proxy/netfilter"
	"github.com/outrider-proxy/outrider/xds/client"
)

// scopedWatch is one connection manager's scoped_routes as the applier
// sees it: its SRDS subscription (a wildcard one, SotW complete state or
// delta, as Envoy's ScopedRdsConfigSubscription), the RDS watches of its
// scopes, and what config_dump shows. Its warm stand-in holds the
// listener's warming until SRDS has answered and every scope it watches has
// its routes. Fields below req are guarded by dynamic.mu.
type scopedWatch struct {
	d      *dynamic
	req    *netfilter.ScopedRoutesWatch
	src    source // SRDS; nil for an inline list
	rdsSrc source // rds_config_source

	srdsDone bool // first SRDS update applied (always for inline)
	timedOut bool // SRDS initial fetch timeout
	watches  []*rdsWatch
	scopes   map[string]*routev3.ScopedRouteConfiguration // applied, by name
	version  string
	updated  time.Time
	stats    *rdsStats // http.<stat_prefix>.scoped_rds.<name>.*; nil for inline
}

// ready reports whether SRDS answered and every scope watched has its
// routes (or timed out).
func (sw *scopedWatch) ready() bool {
	if !sw.srdsDone && !sw.timedOut {
		return false
	}
	for _, w := range sw.watches {
		if !w.ready() {
			return false
		}
	}
	return true
}

// ready reports whether the watch no longer holds its listener's warming.
func (w *rdsWatch) ready() bool {
	if w.scoped != nil {
		return w.scoped.ready()
	}
	return w.applied || w.timedOut
}

// WatchRoutes implements netfilter.RouteSource for the scopes: their
// route configurations come from rds_config_source and hold the warming.
func (sw *scopedWatch) WatchRoutes(name string, apply func(*routev3.RouteConfiguration) error) (cancel func()) {
	sw.d.ensureRDSStats(sw.req.StatPrefix, name)
	return sw.d.watchRoutes(name, apply, sw, sw.rdsSrc)
}

// WatchScopedRoutes implements netfilter.ScopedRouteSource.
func (d *dynamic) WatchScopedRoutes(req *netfilter.ScopedRoutesWatch) (netfilter.RouteSource, func(), error) {
	sw := &scopedWatch{d: d, req: req, scopes: map[string]*routev3.ScopedRouteConfiguration{}}
	var err error
	if req.RDS != nil {
		if sw.rdsSrc, err = d.clientFor("rds_config_source", req.RDS); err != nil {
			return nil, nil, err
		}
	}
	if req.SRDS != nil {
		if sw.src, err = d.clientFor("scoped_rds.scoped_rds_config_source", req.SRDS); err != nil {
			return nil, nil, err
		}
		sc := d.s.stats.Scope("http." + req.StatPrefix + ".scoped_rds." + req.Name)
		sw.stats = &rdsStats{prefix: req.StatPrefix, attemptC: sc.Counter("update_attempt"), success: sc.Counter("update_success"),
			rejected: sc.Counter("update_rejected"), reload: sc.Counter("config_reload"), version: sc.Gauge("version")}
		sc.Counter("update_failure")
		sc.Counter("update_empty")
	}
	d.mu.Lock()
	sw.srdsDone = req.SRDS == nil
	if d.building != nil {
		d.building.watches = append(d.building.watches, &rdsWatch{scoped: sw})
	}
	d.scoped = append(d.scoped, sw)
	d.mu.Unlock()
	var cancelSRDS func()
	if sw.src != nil {
		cancelSRDS = sw.src.Watch(client.ScopedRouteType, nil, client.WatcherFunc(sw.onUpdate))
	}
	return sw, func() {
		if cancelSRDS != nil {
			cancelSRDS()
		}
		d.mu.Lock()
		d.scoped = slices.DeleteFunc(d.scoped, func(x *scopedWatch) bool { return x == sw })
		d.mu.Unlock()
	}, nil
}

// onUpdate applies an SRDS update to the connection manager; its error is
// the NACK reason.
func (sw *scopedWatch) onUpdate(_ string, u client.Update) error {
	d := sw.d
	if u.InitialFetchTimeout {
		d.mu.Lock()
		sw.timedOut = true
		d.mu.Unlock()
		d.checkWarming()
		return nil
	}
	sw.stats.attempt()
	names := sortedKeys(u.Resources)
	changed := make([]*routev3.ScopedRouteConfiguration, 0, len(names))
	for _, n := range names {
		sc := u.Resources[n].Msg.(*routev3.ScopedRouteConfiguration)
		changed = append(changed, sc)
		if rc := sc.GetRouteConfigurationName(); rc != "" && sc.GetRouteConfiguration() == nil {
			d.ensureRDSStats(sw.req.StatPrefix, rc)
		}
	}
	if err := sw.req.Apply(changed, u.Removed); err != nil {
		sw.stats.result(false, "")
		return fmt.Errorf("scoped routes %q: %v", sw.req.Name, err)
	}
	sw.stats.result(true, u.Version)
	d.mu.Lock()
	for _, sc := range changed {
		sw.scopes[sc.GetName()] = sc
	}
	for _, n := range u.Removed {
		delete(sw.scopes, n)
	}
	sw.version, sw.updated = u.Version, time.Now()
	sw.srdsDone = true
	d.mu.Unlock()
	d.checkWarming()
	return nil
}

// ensureRDSStats registers http.<prefix>.rds.<name>.* for a route
// configuration a scope names.
func (d *dynamic) ensureRDSStats(prefix, name string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.rdsStats[name] != nil {
		return
	}
	sc := d.s.stats.Scope("http." + prefix + ".rds." + name)
	d.rdsStats[name] = &rdsStats{prefix: prefix, attemptC: sc.Counter("update_attempt"), success: sc.Counter("update_success"),
		rejected: sc.Counter("update_rejected"), reload: sc.Counter("config_reload"), version: sc.Gauge("version")}
	sc.Counter("update_failure")
	sc.Counter("update_empty")
}

// dumpScoped fills config_dump's scoped routes: one dynamic entry per
// scoped_routes name fetched over SRDS, with its scopes, and the inline
// lists of dynamic listeners.
func (d *dynamic) dumpScoped(out *adminv3.ScopedRoutesConfigDump) {
	d.mu.Lock()
	defer d.mu.Unlock()
	seen := map[string]bool{}
	for _, sw := range d.scoped {
		if sw.src == nil || seen[sw.req.Name] || !sw.srdsDone {
			continue
		}
		seen[sw.req.Name] = true
		e := &adminv3.ScopedRoutesConfigDump_DynamicScopedRouteConfigs{
			Name: sw.req.Name, VersionInfo: sw.version, LastUpdated: timestamppb.New(sw.updated)}
		for _, n := range sortedKeys(sw.scopes) {
			a, _ := anypb.New(sw.scopes[n])
			e.ScopedRouteConfigs = append(e.ScopedRouteConfigs, a)
		}
		out.DynamicScopedRouteConfigs = append(out.DynamicScopedRouteConfigs, e)
	}
	for _, name := range sortedKeys(d.listeners) {
		l := d.listeners[name]
		inlineScopedDump(out, []*listenerv3.Listener{l.Proto}, timestamppb.New(d.lstate[l].updated))
	}
	slices.SortFunc(out.DynamicScopedRouteConfigs, func(a, b *adminv3.ScopedRoutesConfigDump_DynamicScopedRouteConfigs) int {
		return strings.Compare(a.GetName(), b.GetName())
	})
}
