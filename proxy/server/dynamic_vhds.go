package server

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/proto"

	"github.com/outrider-proxy/outrider/proxy/router"
	"github.com/outrider-proxy/outrider/telemetry/stats"
	"github.com/outrider-proxy/outrider/xds/client"
)

// vhdsState is the VHDS subscription of one route configuration with vhds:
// as Envoy's VhdsSubscription it subscribes over delta xDS to every
// VirtualHost (a wildcard first request) and keeps those named
// "<route configuration name>/<host>", which are added to the route
// configuration's own virtual hosts. Fields are guarded by dynamic.mu.
type vhdsState struct {
	name     string
	cs       *corev3.ConfigSource
	cancel   func()
	vhosts   map[string]*routev3.VirtualHost // by resource name
	received bool                            // first response or initial fetch timeout seen
	version  string
	updated  time.Time
	reload   *stats.Counter // http.<stat_prefix>.vhds.<name>.config_reload
	empty    *stats.Counter // ... .update_empty
}

var errVhdsDelta = errors.New("vhds: only 'DELTA_GRPC' is supported as an api_type.")

// vhdsRoutes returns the route configuration to apply for rc: rc itself
// without vhds, else rc with the virtual hosts VHDS delivered so far; hold
// is set until VHDS first answers. A new or changed vhds subscribes.
func (d *dynamic) vhdsRoutes(name string, rc *routev3.RouteConfiguration, st *rdsStats) (eff *routev3.RouteConfiguration, hold bool, err error) {
	if rc.GetVhds() == nil {
		d.mu.Lock()
		drop := d.dropVhdsLocked(name)
		d.mu.Unlock()
		if drop != nil {
			drop()
		}
		return rc, false, nil
	}
	cs := rc.GetVhds().GetConfigSource()
	if cs.GetApiConfigSource().GetApiType() != corev3.ApiConfigSource_DELTA_GRPC {
		return nil, false, errVhdsDelta
	}
	d.mu.Lock()
	vs := d.vhds[name]
	d.mu.Unlock()
	if vs == nil || !proto.Equal(vs.cs, cs) {
		src, err := d.clientFor("vhds.config_source", cs)
		if err != nil {
			return nil, false, err
		}
		prefix := ""
		if st != nil {
			prefix = st.prefix
		}
		sc := d.s.stats.Scope("http." + prefix + ".vhds." + name)
		nvs := &vhdsState{name: name, cs: cs, vhosts: map[string]*routev3.VirtualHost{},
			reload: sc.Counter("config_reload"), empty: sc.Counter("update_empty")}
		d.mu.Lock()
		drop := d.dropVhdsLocked(name)
		d.vhds[name] = nvs
		d.mu.Unlock()
		if drop != nil {
			drop()
		}
		c := src.Watch(client.VirtualHostType, nil, client.WatcherFunc(func(_ string, u client.Update) error {
			return d.onVirtualHosts(nvs, u)
		}))
		d.mu.Lock()
		nvs.cancel = c
		if d.vhds[name] != nvs { // dropped meanwhile
			nvs.cancel = nil
			defer c()
		}
		d.mu.Unlock()
		vs = nvs
	}
	d.mu.Lock()
	eff = mergeVhosts(rc, vs.vhosts)
	hold = !vs.received
	d.mu.Unlock()
	if hold { // still NACK an invalid route configuration now
		if _, err := router.Compile(eff, router.Options{}); err != nil {
			return nil, false, err
		}
	}
	return eff, hold, nil
}

// dropVhdsLocked forgets name's VHDS state; the returned func, if any,
// cancels its watch and must be called without d.mu.
func (d *dynamic) dropVhdsLocked(name string) func() {
	vs := d.vhds[name]
	if vs == nil {
		return nil
	}
	delete(d.vhds, name)
	return vs.cancel
}

// onVirtualHosts applies a VHDS update to the route configuration of vs:
// its virtual hosts are added, replaced or removed and the merged route
// configuration goes to every connection manager using it. An invalid
// result is NACKed and the previous virtual hosts stay.
func (d *dynamic) onVirtualHosts(vs *vhdsState, u client.Update) error {
	prefix := vs.name + "/"
	d.mu.Lock()
	if d.vhds[vs.name] != vs {
		d.mu.Unlock()
		return nil
	}
	next := make(map[string]*routev3.VirtualHost, len(vs.vhosts))
	for k, v := range vs.vhosts {
		next[k] = v
	}
	changed := false
	for n, r := range u.Resources {
		if strings.HasPrefix(n, prefix) {
			next[n] = r.Msg.(*routev3.VirtualHost)
			changed = true
		}
	}
	for _, n := range u.Removed {
		if _, ok := next[n]; ok {
			delete(next, n)
			changed = true
		}
	}
	first := !vs.received
	rc := d.cachedRoutes(vs.name)
	ws := slices.Clone(d.rds[vs.name])
	d.mu.Unlock()
	if !changed && !first {
		return nil
	}
	if !changed && !u.InitialFetchTimeout {
		vs.empty.Inc()
	}
	if rc != nil && (changed || first) {
		eff := mergeVhosts(rc, next)
		for _, w := range ws {
			if err := w.apply(eff); err != nil {
				return fmt.Errorf("vhds of route configuration %q: %v", vs.name, err)
			}
		}
	}
	d.mu.Lock()
	vs.vhosts, vs.received = next, true
	if !u.InitialFetchTimeout {
		vs.version, vs.updated = u.Version, time.Now()
	}
	d.mu.Unlock()
	if changed {
		vs.reload.Inc()
	}
	if rc == nil {
		d.vhdsCatchUp(vs.name) // RDS may have arrived meanwhile, holding for this
	}
	return nil
}

// vhdsCatchUp applies name's route configuration held for VHDS if VHDS
// answered meanwhile (it may run on another client's goroutine and find no
// route configuration yet).
func (d *dynamic) vhdsCatchUp(name string) {
	d.mu.Lock()
	vs, rc := d.vhds[name], d.cachedRoutes(name)
	if vs == nil || !vs.received || rc == nil {
		d.mu.Unlock()
		return
	}
	eff := mergeVhosts(rc, vs.vhosts)
	ws := slices.Clone(d.rds[name])
	d.mu.Unlock()
	for _, w := range ws {
		if err := w.apply(eff); err != nil {
			d.s.log.Warn("route configuration with VHDS virtual hosts refused", "route_config", name, "err", err)
		}
	}
}

// routesToApply is what a new watch of name gets from the cache (under
// d.mu): rc, merged with its VHDS virtual hosts; false while rc's VHDS has
// not answered (or there is no rc).
func (d *dynamic) routesToApply(name string, rc *routev3.RouteConfiguration) (*routev3.RouteConfiguration, bool) {
	if rc == nil {
		return nil, false
	}
	if rc.GetVhds() == nil {
		return rc, true
	}
	vs := d.vhds[name]
	if vs == nil || !vs.received {
		return nil, false
	}
	return mergeVhosts(rc, vs.vhosts), true
}

// dumpedRoutes is the route configuration config_dump shows (under d.mu):
// with VHDS, the virtual hosts received are included, as Envoy shows them.
func (d *dynamic) dumpedRoutes(name string) *routev3.RouteConfiguration {
	rc := d.cachedRoutes(name)
	if vs := d.vhds[name]; vs != nil && rc.GetVhds() != nil {
		m := mergeVhosts(rc, vs.vhosts)
		m.Vhds = rc.GetVhds()
		return m
	}
	return rc
}

// mergeVhosts is rc with the VHDS virtual hosts after its own, by name,
// and without vhds: what the connection managers compile.
func mergeVhosts(rc *routev3.RouteConfiguration, vhosts map[string]*routev3.VirtualHost) *routev3.RouteConfiguration {
	out := proto.Clone(rc).(*routev3.RouteConfiguration)
	out.Vhds = nil
	for _, n := range sortedKeys(vhosts) {
		out.VirtualHosts = append(out.VirtualHosts, vhosts[n])
	}
	return out
}
