package server

import (
	"context"
	"fmt"
	"time"

	adminv3 "github.com/envoyproxy/go-control-plane/envoy/admin/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/timestamppb"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"

	"github.com/outrider-proxy/outrider/proxy/listener"
	"github.com/outrider-proxy/outrider/proxy/upstream"
	"github.com/outrider-proxy/outrider/telemetry/stats"
	"github.com/outrider-proxy/outrider/xds/client"
)

// warmListener is a new or changed listener waiting, as Envoy's warming
// listeners do, for the first response of each of its RDS subscriptions
// (or their initial fetch timeout) before it replaces old.
type warmListener struct {
	name, version string
	l, old        *listener.Listener // old: nil for a new listener
	bound         bool
	since         time.Time
	watches       []*rdsWatch
	secrets       []string // SDS names it waits for

	// inPlace: l was built by listener.BuildInPlace from old, whose
	// unchanged filter chains it shares; it replaces old in place.
	inPlace bool
}

func (w *warmListener) ready() bool {
	for _, rw := range w.watches {
		if !rw.ready() {
			return false
		}
	}
	return true
}

// listenerState is what config_dump says of a listener put in service.
type listenerState struct {
	name, version string
	updated       time.Time
}

// rdsStats are Envoy's per route configuration RDS stats,
// http.<stat_prefix>.rds.<route_config_name>.*; nil is none.
type rdsStats struct {
	prefix                              string // the connection manager's stat_prefix
	attemptC, success, rejected, reload *stats.Counter
	version                             *stats.Gauge
}

func (r *rdsStats) attempt() {
	if r != nil {
		r.attemptC.Inc()
	}
}

func (r *rdsStats) result(ok bool, version string) {
	if r == nil {
		return
	}
	if !ok {
		r.rejected.Inc()
		return
	}
	r.success.Inc()
	r.reload.Inc()
	r.version.Set(int64(fnv64(version)))
}

// unchanged counts a response that carried the route configuration with the
// bytes last accepted: an accepted update, but no reload, as Envoy's hash
// check in RdsRouteConfigSubscription.
func (r *rdsStats) unchanged(version string) {
	if r == nil {
		return
	}
	r.attemptC.Inc()
	r.success.Inc()
	r.version.Set(int64(fnv64(version)))
}

// fnv64 stands in for Envoy's xxHash64 of a version string.
func fnv64(s string) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= 1099511628211
	}
	return h
}

// scanListener records, for each connection manager of lp using RDS, the
// source its route configuration comes from and its stats, before the
// listener is built (which subscribes).
func (d *dynamic) scanListener(path string, lp *listenerv3.Listener) ([]string, error) {
	var names []string
	chains := lp.GetFilterChains()
	if dc := lp.GetDefaultFilterChain(); dc != nil {
		chains = append(chains[:len(chains):len(chains)], dc)
	}
	for i, fc := range chains {
		for j, f := range fc.GetFilters() {
			h := &hcmv3.HttpConnectionManager{}
			if !f.GetTypedConfig().MessageIs(h) || f.GetTypedConfig().UnmarshalTo(h) != nil || h.GetRds() == nil {
				continue
			}
			name := h.GetRds().GetRouteConfigName()
			names = append(names, name)
			var src source
			if cs := h.GetRds().GetConfigSource(); cs != nil {
				var err error
				src, err = d.clientFor(fmt.Sprintf("%s.filter_chains[%d].filters[%d].rds.config_source", path, i, j), cs)
				if err != nil {
					return nil, err
				}
			}
			d.mu.Lock()
			if src != nil && len(d.rds[name]) == 0 {
				d.rdsSrc[name] = src
			}
			if d.rdsStats[name] == nil {
				sc := d.s.stats.Scope("http." + h.GetStatPrefix() + ".rds." + name)
				d.rdsStats[name] = &rdsStats{prefix: h.GetStatPrefix(), attemptC: sc.Counter("update_attempt"), success: sc.Counter("update_success"),
					rejected: sc.Counter("update_rejected"), reload: sc.Counter("config_reload"), version: sc.Gauge("version")}
				sc.Counter("update_failure")
				sc.Counter("update_empty")
			}
			d.mu.Unlock()
		}
	}
	return names, nil
}

// addWarming builds lp and puts it in warming; a listener with nothing to
// wait for goes into service at once. A new listener is bound now, so a
// port already taken is NACKed; a changed one binds when it replaces old.
func (d *dynamic) addWarming(name string, lp *listenerv3.Listener, old *listener.Listener, version string) error {
	if _, err := d.scanListener("listener "+fmt.Sprintf("%q", name), lp); err != nil {
		return err
	}
	d.mu.Lock()
	prev := d.warming[name]
	delete(d.warming, name)
	d.mu.Unlock()
	if prev != nil {
		prev.l.StopAccepting()
		prev.l.Close()
	}
	refs := listenerSDSRefs(fmt.Sprintf("listener %q", name), lp)
	d.sp.expectAll(d.s.stats, refs)
	secrets, err := d.watchSecrets(refs)
	if err != nil {
		return err
	}
	w := &warmListener{name: name, version: version, old: old, since: time.Now(), secrets: secrets}
	w.inPlace = old.SupportsInPlaceUpdate(lp) // a nil old does not
	d.mu.Lock()
	d.building = w
	d.mu.Unlock()
	var l *listener.Listener
	if w.inPlace {
		l, err = listener.BuildInPlace(lp, d.nctx, &d.s.connIDs, old)
	} else {
		l, err = listener.Build(lp, d.nctx, &d.s.connIDs)
	}
	d.mu.Lock()
	d.building = nil
	d.mu.Unlock()
	if err != nil {
		return fmt.Errorf("listener %q: %v", name, err)
	}
	w.l = l
	l.UseHandoff(&d.s.handoff)
	if w.inPlace {
		// Counted when decided, as Envoy does (listener_modified is
		// counted when the listener goes into service).
		d.s.stats.Scope("listener_manager").Counter("listener_in_place_updated").Inc()
	}
	if old == nil {
		if err := l.Bind(context.Background()); err != nil {
			l.Close()
			return err
		}
		w.bound = true
	}
	d.mu.Lock()
	d.warming[name] = w
	d.mu.Unlock()
	d.checkWarming()
	return nil
}

// checkWarming puts every listener whose routes have arrived in service.
func (d *dynamic) checkWarming() {
	var ready []*warmListener
	d.mu.Lock()
	for name, w := range d.warming {
		if w.ready() && d.sp.allReady(w.secrets) {
			ready = append(ready, w)
			delete(d.warming, name)
			d.listeners[name] = w.l
			d.lstate[w.l] = listenerState{name: name, version: w.version, updated: time.Now()}
		}
	}
	// Set before the listeners serve, so that whoever is answered by one
	// sees it counted as no longer warming.
	d.setWarmingGaugeLocked()
	d.mu.Unlock()
	for _, w := range ready {
		if w.inPlace {
			d.s.replaceInPlace(w.l, w.old)
			go w.l.Serve() // returns at once on old's socket, whose accept loop runs
			continue
		}
		if !w.bound && !w.l.TakeOver(w.old) {
			if err := w.l.Bind(context.Background()); err != nil {
				d.s.log.Error("listener warmed but cannot bind", "listener", w.name, "err", err)
				w.l.Close()
				d.mu.Lock()
				if d.listeners[w.name] == w.l {
					delete(d.listeners, w.name)
					if w.old != nil {
						d.listeners[w.name] = w.old
					}
				}
				d.mu.Unlock()
				continue
			}
		}
		d.s.addListener(w.l, w.old)
		go w.l.Serve()
	}
}

func (d *dynamic) listenerGauges() {
	d.mu.Lock()
	d.setWarmingGaugeLocked()
	d.mu.Unlock()
}

// setWarmingGaugeLocked sets total_listeners_warming; d.mu is held, so that
// concurrent callers cannot publish their counts out of order.
func (d *dynamic) setWarmingGaugeLocked() {
	d.s.stats.Scope("listener_manager").Gauge("total_listeners_warming").Set(int64(len(d.warming)))
}

// warmCluster is a cluster staged in the cluster manager (upstream.Stage)
// while it warms.
type warmCluster struct {
	name    string
	cfg     *clusterv3.Cluster
	raw     string // cfg in wire form, kept once active
	cl      *upstream.Cluster
	secrets []string // SDS secrets its transport socket waits for
	// secretsReady is set (under d.mu) when its goroutine, past the wait for
	// secrets, left the activation to onEndpoints' activateReady.
	secretsReady bool
	version      string
	since        time.Time
	// Without secrets to wait for: the initialization callback's stop and the
	// warming timeout's timer (nil without one); set under d.mu.
	stopInit func() bool
	timer    *time.Timer
}

// stopWaiting ends what waits to activate w (under d.mu).
func (w *warmCluster) stopWaiting() {
	if w.stopInit != nil {
		w.stopInit()
	}
	if w.timer != nil {
		w.timer.Stop()
	}
}

// warmCluster activates w once its first host set arrives (or the EDS
// initial fetch timeout passes; zero waits for ever, as in Envoy) and its
// secrets are ready; until then it counts as warming. A newer version of
// the same cluster supersedes it.
func (d *dynamic) warmCluster(w *warmCluster) {
	d.mu.Lock()
	prev := d.warmCl[w.name]
	d.warmCl[w.name] = w
	if prev != nil {
		prev.stopWaiting()
	}
	d.mu.Unlock()
	if prev != nil {
		d.s.clusters.Discard(prev.cl)
	}
	if w.cl.IsInitialized() && d.sp.allReady(w.secrets) {
		d.activate(w)
		return
	}
	d.clusterGauges()
	timeout := 15 * time.Second
	if w.cfg.GetType() == clusterv3.Cluster_EDS {
		if t := w.cfg.GetEdsClusterConfig().GetEdsConfig().GetInitialFetchTimeout(); t != nil {
			timeout = t.AsDuration()
		}
	}
	if len(w.secrets) == 0 {
		// No goroutine per warming cluster (10,000 at a cold start, whose
		// goroutine structs the runtime would keep for ever): a callback on
		// initialization and a timer for the timeout, the first one wins.
		stopInit := w.cl.AfterInitialized(func() {
			if d.edsApplying.Load() > 0 {
				return // initialized by an EDS update: its activateReady installs w with the others
			}
			d.activate(w)
		})
		var timer *time.Timer
		if timeout > 0 {
			timer = time.AfterFunc(timeout, func() { d.activate(w) })
		}
		d.mu.Lock()
		w.stopInit, w.timer = stopInit, timer
		d.mu.Unlock()
		return
	}
	go func() {
		var expired <-chan time.Time
		if timeout > 0 {
			t := time.NewTimer(timeout)
			defer t.Stop()
			expired = t.C
		}
		select {
		case <-w.cl.Initialized():
		case <-expired:
		case <-d.stop:
			return
		}
		// A cluster whose TLS secrets have not arrived is warming too.
		if !d.waitSecrets(w.secrets) {
			return
		}
		d.activate(w)
	}()
}

// activate installs w if it is still the cluster's latest version. Clusters
// that finish warming together (one EDS response for thousands of them) are
// installed in batches: the first caller installs what is pending until
// nothing is, the others only queue.
func (d *dynamic) activate(w *warmCluster) {
	if d.stopping() {
		return
	}
	d.mu.Lock()
	later := d.edsApplying.Load() > 0 && isClosed(w.cl.Initialized())
	if later {
		w.secretsReady = true
	}
	d.mu.Unlock()
	if later {
		return // onEndpoints is applying: its activateReady installs w with the others it warms
	}
	d.activateAll([]*warmCluster{w})
}

func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// activateReady installs every warming cluster whose hosts and secrets are
// ready, in one batch: an EDS response that warms 10,000 clusters installs
// them with one ActivateAll instead of one per woken warmCluster goroutine.
func (d *dynamic) activateReady() {
	d.mu.Lock()
	var ready, check []*warmCluster
	for _, w := range d.warmCl {
		switch {
		case !isClosed(w.cl.Initialized()):
		case w.secretsReady:
			ready = append(ready, w)
		default:
			check = append(check, w)
		}
	}
	d.mu.Unlock()
	for _, w := range check {
		if d.sp.allReady(w.secrets) {
			ready = append(ready, w)
		}
	}
	if len(ready) > 0 {
		d.activateAll(ready)
	}
}

// activateAll is activate for many clusters.
func (d *dynamic) activateAll(ws []*warmCluster) {
	now := time.Now()
	d.mu.Lock()
	for _, w := range ws {
		if d.warmCl[w.name] != w {
			continue
		}
		delete(d.warmCl, w.name)
		w.stopWaiting()
		d.clusters[w.name] = newActiveCluster(w, now)
		d.activations = append(d.activations, w.cl)
	}
	if d.activating || len(d.activations) == 0 {
		d.mu.Unlock()
		return
	}
	d.activating = true
	for len(d.activations) > 0 {
		batch := d.activations
		d.activations = nil
		d.mu.Unlock()
		// Outside d.mu: draining a replaced cluster cancels its EDS watch,
		// which takes d.mu. A removal racing with this either finds the
		// cluster in d.clusters (and removes it after) or discards it
		// first, which ActivateAll then refuses.
		d.s.clusters.ActivateAll(batch)
		d.clusterGauges()
		d.mu.Lock()
	}
	d.activating = false
	d.mu.Unlock()
}

// clusterGauges publishes active_clusters and warming_clusters. gaugeMu
// makes reading the counts and setting the gauges one step, so a caller
// that read them before a change cannot overwrite the figures of one that
// read them after it.
func (d *dynamic) clusterGauges() {
	d.gaugeMu.Lock()
	defer d.gaugeMu.Unlock()
	d.mu.Lock()
	warming := len(d.warmCl)
	d.mu.Unlock()
	cm := d.s.stats.Scope("cluster_manager")
	cm.Gauge("active_clusters").Set(int64(d.s.clusters.Len()))
	cm.Gauge("warming_clusters").Set(int64(warming))
}

// waitInit blocks until the initial xDS fetch is done as Envoy's init
// manager sees it: CDS answered (or timed out) and its clusters warmed, then
// LDS answered and its listeners warmed. It returns false if the server
// stops first.
func (d *dynamic) waitInit() bool {
	return d.waitSecrets(d.staticSecrets()) && d.waitClosed(d.cdsDone) && d.clustersWarmed() &&
		d.waitClosed(d.ldsDone) && d.waitDrained(func() int { return len(d.warming) })
}

// waitClosed blocks until ch is closed; false if the server stops first.
func (d *dynamic) waitClosed(ch chan struct{}) bool {
	select {
	case <-ch:
		return true
	case <-d.stop:
		return false
	}
}

// clustersWarmed waits until no cluster is warming (see waitDrained).
func (d *dynamic) clustersWarmed() bool {
	return d.waitDrained(func() int { return len(d.warmCl) })
}

// waitDrained polls pending (called under d.mu) until it is 0 or 30s have
// passed, as Envoy's init timeout; false if the server stops first.
func (d *dynamic) waitDrained(pending func() int) bool {
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); {
		d.mu.Lock()
		n := pending()
		d.mu.Unlock()
		if n == 0 {
			return true
		}
		select {
		case <-d.stop:
			return false
		case <-time.After(20 * time.Millisecond):
		}
	}
	return true
}

// dump adds the dynamic resources to the config dumps: active and warming
// clusters, active, warming and draining listeners, route configurations
// and endpoint assignments, each with its version and update time.
func (d *dynamic) dump(cl *adminv3.ClustersConfigDump, ls *adminv3.ListenersConfigDump, rt *adminv3.RoutesConfigDump, eps *adminv3.EndpointsConfigDump) {
	any := func(m proto.Message) *anypb.Any { a, _ := anypb.New(m); return a }
	d.mu.Lock()
	defer d.mu.Unlock()
	ts := func(key string) *timestamppb.Timestamp { return timestamppb.New(d.updated[key]) }
	cl.VersionInfo = d.cdsVersion
	ls.VersionInfo = d.ldsVersion
	for _, name := range sortedKeys(d.clusters) {
		c := d.clusters[name]
		cl.DynamicActiveClusters = append(cl.DynamicActiveClusters, &adminv3.ClustersConfigDump_DynamicCluster{
			VersionInfo: c.version, Cluster: &anypb.Any{TypeUrl: client.ClusterURL, Value: []byte(c.raw)},
			LastUpdated: timestamppb.New(c.updated)})
	}
	for _, name := range sortedKeys(d.warmCl) {
		w := d.warmCl[name]
		cl.DynamicWarmingClusters = append(cl.DynamicWarmingClusters, &adminv3.ClustersConfigDump_DynamicCluster{
			VersionInfo: w.version, Cluster: any(w.cfg), LastUpdated: timestamppb.New(w.since)})
	}
	names := map[string]bool{}
	for n := range d.listeners {
		names[n] = true
	}
	for n := range d.warming {
		names[n] = true
	}
	draining := map[string]*listener.Listener{}
	live := map[*listener.Listener]bool{}
	for _, l := range d.listeners {
		live[l] = true
	}
	for _, l := range d.s.allDraining() {
		if st, ok := d.lstate[l]; ok {
			live[l] = true
			names[st.name] = true
			draining[st.name] = l
		}
	}
	for l := range d.lstate {
		if !live[l] {
			delete(d.lstate, l) // finished draining
		}
	}
	for _, name := range sortedKeys(names) {
		dl := &adminv3.ListenersConfigDump_DynamicListener{Name: name}
		if l := d.listeners[name]; l != nil {
			st := d.lstate[l]
			dl.ActiveState = &adminv3.ListenersConfigDump_DynamicListenerState{VersionInfo: st.version, Listener: any(l.Proto), LastUpdated: timestamppb.New(st.updated)}
		}
		if w := d.warming[name]; w != nil {
			dl.WarmingState = &adminv3.ListenersConfigDump_DynamicListenerState{VersionInfo: w.version, Listener: any(w.l.Proto), LastUpdated: timestamppb.New(w.since)}
		}
		if l := draining[name]; l != nil {
			st := d.lstate[l]
			dl.DrainingState = &adminv3.ListenersConfigDump_DynamicListenerState{VersionInfo: st.version, Listener: any(l.Proto), LastUpdated: timestamppb.New(st.updated)}
		}
		ls.DynamicListeners = append(ls.DynamicListeners, dl)
	}
	for _, name := range sortedKeys(d.rdsCache) {
		key := "route/" + name
		rt.DynamicRouteConfigs = append(rt.DynamicRouteConfigs, &adminv3.RoutesConfigDump_DynamicRouteConfig{
			VersionInfo: d.versions[key], RouteConfig: any(d.dumpedRoutes(name)), LastUpdated: ts(key)})
	}
	for _, name := range sortedKeys(d.edsCache) {
		e := d.edsCache[name]
		eps.DynamicEndpointConfigs = append(eps.DynamicEndpointConfigs, &adminv3.EndpointsConfigDump_DynamicEndpointConfig{
			VersionInfo: e.version, EndpointConfig: &anypb.Any{TypeUrl: client.EndpointURL, Value: []byte(e.raw)},
			LastUpdated: timestamppb.New(e.updated)})
	}
}
