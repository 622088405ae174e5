package server

import (
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/proto"

	"github.com/outrider-proxy/outrider/proxy/listener"
	"github.com/outrider-proxy/outrider/proxy/netfilter"
	"github.com/outrider-proxy/outrider/proxy/upstream"
	"github.com/outrider-proxy/outrider/xds/client"
)

// dynamic is the server's xDS side. It subscribes as Envoy does on ADS —
// CDS first, EDS names from the clusters, then LDS, then RDS names from the
// listeners — and applies what arrives: clusters to the cluster manager,
// endpoints to EDS clusters, listeners (built, bound, and the old ones
// drained) and route tables to the connection managers. Watchers run on the
// xDS client's one goroutine, so applying is serialized; the hot path only
// sees atomic swaps.
type dynamic struct {
	s       *Server
	sp      *secretProvider
	nctx    *netfilter.Context
	clients map[string]source // by config source
	ads     *client.Client
	cds     source // CDS, and EDS of clusters without their own eds_config
	lds     source // LDS, and RDS of listeners without their own config_source

	gaugeMu sync.Mutex // serializes clusterGauges

	mu          sync.Mutex
	cancels     []func()
	subscribed  map[subKey]bool               // (source, type) watched
	clusters    map[string]*activeCluster     // dynamic clusters in force
	listeners   map[string]*listener.Listener // dynamic listeners in force
	eds         map[string][]*edsWatch        // by service name
	edsSrc      map[string]source             // eds_config of a service name
	edsCache    map[string]edsEntry           // by service name: the last applied assignment
	edsDirty    map[source]bool               // sources whose EDS names changed in the open batch
	batching    int                           // open beginBatch calls
	rds         map[string][]*rdsWatch        // by route configuration name
	rdsSrc      map[string]source             // config_source of a route configuration name
	rdsStats    map[string]*rdsStats          // by route configuration name
	rdsCache    map[string]string             // by name: the last applied route configuration's wire bytes
	rdsTimeout  map[string]bool               // names whose initial fetch timed out
	vhds        map[string]*vhdsState         // VHDS of route configurations with vhds, by name
	scoped      []*scopedWatch                // scoped_routes watches, for config_dump
	versions    map[string]string             // resource name -> version, for config_dump
	updated     map[string]time.Time
	cdsVersion  string
	ldsVersion  string
	lstate      map[*listener.Listener]listenerState // of dynamic listeners in service or draining
	building    *warmListener                        // the listener being built, collecting its RDS watches
	warming     map[string]*warmListener             // listeners waiting for their routes
	warmCl      map[string]*warmCluster              // staged clusters waiting for their endpoints and secrets
	activations []*upstream.Cluster                  // warmed clusters queued for ActivateAll
	activating  bool                                 // a caller of activate is installing the queue
	edsApplying atomic.Int32                         // onEndpoints calls running; activate leaves warmed clusters to them
	cdsDone     chan struct{}                        // closed by the first CDS update or timeout
	ldsDone     chan struct{}                        // closed by the first LDS update or timeout
	cdsOnce     sync.Once
	ldsOnce     sync.Once
	stop        chan struct{}
	stopOnce    sync.Once
}

// source is what the applier needs of a subscription: a gRPC client or a
// watched file.
type source interface {
	Watch(t client.ResourceType, names []string, w client.Watcher) (cancel func())
	SetNames(t client.ResourceType, names []string)
	Close()
}

type subKey struct {
	src source
	url string
}

type edsWatch struct {
	update func(*endpointv3.ClusterLoadAssignment) error
}

// rdsWatch is one connection manager's subscription; applied (or timedOut)
// ends the warming of the listener it belongs to.
type rdsWatch struct {
	apply    func(*routev3.RouteConfiguration) error
	applied  bool
	timedOut bool
	scoped   *scopedWatch // set: stands for a scoped_routes, ready with its SRDS and scopes' routes
}

// newDynamic returns the xDS side's state; configure makes the clients
// once the static clusters they dial through exist.
func newDynamic(s *Server, nctx *netfilter.Context) *dynamic {
	return &dynamic{
		s: s, sp: s.secrets, nctx: nctx, clients: map[string]source{}, subscribed: map[subKey]bool{},
		clusters: map[string]*activeCluster{}, listeners: map[string]*listener.Listener{},
		eds: map[string][]*edsWatch{}, edsSrc: map[string]source{}, edsCache: map[string]edsEntry{}, edsDirty: map[source]bool{},
		rds: map[string][]*rdsWatch{}, rdsSrc: map[string]source{}, rdsStats: map[string]*rdsStats{},
		rdsCache: map[string]string{}, rdsTimeout: map[string]bool{}, vhds: map[string]*vhdsState{},
		versions: map[string]string{}, updated: map[string]time.Time{},
		warming: map[string]*warmListener{}, lstate: map[*listener.Listener]listenerState{}, warmCl: map[string]*warmCluster{},
		cdsDone: make(chan struct{}), ldsDone: make(chan struct{}), stop: make(chan struct{}),
	}
}

// start subscribes, CDS before LDS as Envoy does on ADS.
func (d *dynamic) start() {
	if d.cds != nil {
		d.addCancel(d.cds.Watch(client.ClusterType, nil, client.WatcherFunc(d.onClusters)))
	} else {
		d.cdsOnce.Do(func() { close(d.cdsDone) })
	}
	if d.lds == nil {
		d.ldsOnce.Do(func() { close(d.ldsDone) })
		return
	}
	// As Envoy's init manager: LDS starts once CDS answered and its
	// clusters warmed (or timed out), so listeners find their clusters.
	go func() {
		if !d.waitClosed(d.cdsDone) || !d.clustersWarmed() {
			return
		}
		d.mu.Lock()
		defer d.mu.Unlock()
		select {
		case <-d.stop:
			return // closed: d.cancels already ran
		default:
		}
		d.cancels = append(d.cancels, d.lds.Watch(client.ListenerType, nil, client.WatcherFunc(d.onListeners)))
	}()
}

func (d *dynamic) addCancel(c func()) {
	d.mu.Lock()
	d.cancels = append(d.cancels, c)
	d.mu.Unlock()
}

func (d *dynamic) close() {
	d.stopOnce.Do(func() { close(d.stop) })
	d.mu.Lock()
	cancels := d.cancels
	d.cancels = nil
	d.mu.Unlock()
	for _, c := range cancels {
		c()
	}
	for _, c := range d.clients {
		c.Close()
	}
	d.mu.Lock()
	warming := d.warming
	d.warming = map[string]*warmListener{}
	d.mu.Unlock()
	for _, w := range warming {
		w.l.Close()
	}
	d.mu.Lock()
	warmCl := d.warmCl
	d.warmCl = map[string]*warmCluster{}
	for _, w := range warmCl {
		w.stopWaiting()
	}
	d.mu.Unlock()
	for _, w := range warmCl {
		d.s.clusters.Discard(w.cl)
	}
}

// setNames subscribes src to names of type t, watching it the first time.
func (d *dynamic) setNames(src source, t client.ResourceType, names []string, w client.WatcherFunc) {
	k := subKey{src, t.TypeURL()}
	d.mu.Lock()
	first := !d.subscribed[k]
	d.subscribed[k] = true
	d.mu.Unlock()
	if first {
		d.addCancel(src.Watch(t, names, w))
	} else {
		src.SetNames(t, names)
	}
}

// namesOf is the names of m whose source is src (dflt when unset).
func namesOf[V any](m map[string]V, srcs map[string]source, src, dflt source) []string {
	out := []string{}
	for _, n := range sortedKeys(m) {
		s := srcs[n]
		if s == nil {
			s = dflt
		}
		if s == src {
			out = append(out, n)
		}
	}
	return out
}

// onClusters applies CDS: valid clusters are added or replaced (an
// unchanged one is left alone, so its pools and health stay), removed ones
// dropped. Invalid ones are reported together as the NACK reason. A new or
// changed cluster warms until its first host set (EDS) and secrets arrive:
// until then a changed cluster keeps serving with its old configuration and
// a new one is not routable, as in Envoy.
func (d *dynamic) onClusters(_ string, u client.Update) error {
	defer d.cdsOnce.Do(func() { close(d.cdsDone) })
	d.beginBatch()
	defer d.endBatch()
	var errs []string
	names := sortedKeys(u.Resources)
	for _, name := range names {
		c := u.Resources[name].Msg.(*clusterv3.Cluster)
		var latest *clusterv3.Cluster
		d.mu.Lock()
		active, dynamic := d.clusters[name]
		if w := d.warmCl[name]; w != nil {
			latest, dynamic = w.cfg, true
		}
		d.mu.Unlock()
		if !dynamic && d.s.clusters.Get(name) != nil {
			errs = append(errs, fmt.Sprintf("cluster %q: a static cluster of that name exists", name))
			continue
		}
		if latest == nil && active != nil {
			latest, _ = active.config() // new bytes may still be the same cluster
		}
		if dynamic && proto.Equal(latest, c) {
			continue
		}
		raw, err := wireOf(u.Resources[name])
		if err == nil {
			err = checkClusterFields(c, d.s.log)
		}
		if err == nil {
			err = d.scanCluster(c)
		}
		var secrets []string
		if err == nil {
			refs := clusterSDSRefs("cluster", c)
			d.sp.expectAll(d.s.stats, refs)
			secrets, err = d.watchSecrets(refs)
		}
		var staged *upstream.Cluster
		if err == nil {
			staged, err = d.s.clusters.Stage(c)
		}
		if err != nil {
			msg := err.Error()
			if prefix := fmt.Sprintf("cluster %q: ", name); !strings.HasPrefix(msg, prefix) {
				msg = prefix + msg // the cluster compiler names the cluster itself
			}
			errs = append(errs, msg)
			continue
		}
		if staged == nil {
			continue // shutting down
		}
		d.s.stats.Scope("cluster_manager").Counter(map[bool]string{true: "cluster_modified", false: "cluster_added"}[dynamic]).Inc()
		d.warmCluster(&warmCluster{name: name, cfg: c, raw: raw, cl: staged, secrets: secrets, version: versionOf(u, name), since: time.Now()})
	}
	for _, name := range u.Removed {
		d.mu.Lock()
		_, dynamic := d.clusters[name]
		delete(d.clusters, name)
		w := d.warmCl[name]
		delete(d.warmCl, name)
		if w != nil {
			w.stopWaiting()
		}
		d.mu.Unlock()
		if w != nil {
			d.s.clusters.Discard(w.cl)
		}
		if dynamic {
			d.s.clusters.Remove(name)
		}
		if dynamic || w != nil {
			d.s.stats.Scope("cluster_manager").Counter("cluster_removed").Inc()
		}
	}
	if !u.InitialFetchTimeout {
		d.mu.Lock()
		if len(errs) == 0 {
			d.cdsVersion = u.Version
		}
		d.mu.Unlock()
	}
	d.pruneSecrets() // SDS names only removed resources used (sds.go)
	d.clusterGauges()
	return joinErrs(errs)
}

// scanCluster records which source carries an EDS cluster's endpoints.
func (d *dynamic) scanCluster(c *clusterv3.Cluster) error {
	if c.GetType() != clusterv3.Cluster_EDS {
		return nil
	}
	svc := c.GetEdsClusterConfig().GetServiceName()
	if svc == "" {
		svc = c.GetName()
	}
	cs := c.GetEdsClusterConfig().GetEdsConfig()
	if cs == nil {
		return nil
	}
	src, err := d.clientFor("eds_cluster_config.eds_config", cs)
	if err != nil {
		return err
	}
	d.mu.Lock()
	if _, ok := d.edsSrc[svc]; !ok || len(d.eds[svc]) == 0 {
		d.edsSrc[svc] = src
	}
	d.mu.Unlock()
	return nil
}

// WatchEndpoints implements upstream.EndpointSource over EDS. The EDS
// subscription changes only when a service name gains its first watch or
// loses its last (a replaced cluster's watch hands over to its successor's),
// and within a CDS update (see beginBatch) once for the whole update, so
// that 10,000 clusters cost one subscription change, not 10,000.
func (d *dynamic) WatchEndpoints(service string, update func(*endpointv3.ClusterLoadAssignment) error) (cancel func()) {
	w := &edsWatch{update: update}
	d.mu.Lock()
	added := len(d.eds[service]) == 0
	d.eds[service] = append(d.eds[service], w)
	cached, ok := d.edsCache[service]
	src := d.edsSrc[service]
	if src == nil {
		src = d.cds
	}
	names := d.edsNamesChanged(src, added)
	d.mu.Unlock()
	if ok { // a replaced cluster gets the endpoints its name already has
		if cla, err := decodeCLA(cached.raw); err == nil {
			update(cla)
		}
	}
	if names != nil {
		d.setNames(src, client.EndpointType, names, d.onEndpoints)
	}
	return func() {
		d.mu.Lock()
		d.eds[service] = slices.DeleteFunc(d.eds[service], func(x *edsWatch) bool { return x == w })
		removed := len(d.eds[service]) == 0
		if removed {
			delete(d.eds, service)
			delete(d.edsCache, service)
		}
		names := d.edsNamesChanged(src, removed)
		d.mu.Unlock()
		if names != nil {
			src.SetNames(client.EndpointType, names)
		}
	}
}

// edsNamesChanged returns src's new EDS subscription when changed and no
// batch is open; inside a batch it marks src for endBatch. Nil means no
// change to send now. The caller holds d.mu.
func (d *dynamic) edsNamesChanged(src source, changed bool) []string {
	if !changed || src == nil || d.stopping() {
		return nil
	}
	if d.batching > 0 {
		d.edsDirty[src] = true
		return nil
	}
	return namesOf(d.eds, d.edsSrc, src, d.cds)
}

// beginBatch defers EDS subscription changes until the matching endBatch,
// which sends each changed source's names once.
func (d *dynamic) beginBatch() {
	d.mu.Lock()
	d.batching++
	d.mu.Unlock()
}

func (d *dynamic) endBatch() {
	d.mu.Lock()
	d.batching--
	var srcs []source
	var names [][]string
	if d.batching == 0 && !d.stopping() {
		for src := range d.edsDirty {
			srcs = append(srcs, src)
			names = append(names, namesOf(d.eds, d.edsSrc, src, d.cds))
		}
		clear(d.edsDirty)
	}
	d.mu.Unlock()
	for i, src := range srcs {
		d.setNames(src, client.EndpointType, names[i], d.onEndpoints)
	}
}

// stopping reports whether close has begun.
func (d *dynamic) stopping() bool {
	select {
	case <-d.stop:
		return true
	default:
		return false
	}
}

func (d *dynamic) onEndpoints(_ string, u client.Update) error {
	var errs []string
	d.edsApplying.Add(1) // clusters these endpoints warm are installed together at the end
	for _, name := range sortedKeys(u.Resources) {
		cla := u.Resources[name].Msg.(*endpointv3.ClusterLoadAssignment)
		raw, err := wireOf(u.Resources[name])
		if err != nil {
			errs = append(errs, fmt.Sprintf("cluster load assignment %q: %v", name, err))
			continue
		}
		d.mu.Lock()
		d.edsCache[name] = edsEntry{raw: raw, version: versionOf(u, name), updated: time.Now()}
		ws := slices.Clone(d.eds[name])
		d.mu.Unlock()
		for _, w := range ws {
			if err := w.update(cla); err != nil {
				errs = append(errs, fmt.Sprintf("cluster load assignment %q: %v", name, err))
			}
		}
	}
	d.edsApplying.Add(-1)
	d.activateReady()
	return joinErrs(errs)
}

// WatchRoutes implements netfilter.RouteSource over RDS. The watch belongs
// to the listener being built, whose warming it holds until applied.
func (d *dynamic) WatchRoutes(name string, apply func(*routev3.RouteConfiguration) error) (cancel func()) {
	return d.watchRoutes(name, apply, nil, nil)
}

// watchRoutes watches a route configuration for the listener being built,
// or for owner (a scoped_routes, whose warming it then holds) when set; src,
// when set, is where the name is fetched if nothing watches it yet.
func (d *dynamic) watchRoutes(name string, apply func(*routev3.RouteConfiguration) error, owner *scopedWatch, from source) (cancel func()) {
	w := &rdsWatch{}
	w.apply = func(rc *routev3.RouteConfiguration) error {
		if err := apply(rc); err != nil {
			return err
		}
		d.mu.Lock()
		first := !w.applied
		w.applied = true
		d.mu.Unlock()
		if first {
			d.checkWarming()
		}
		return nil
	}
	d.mu.Lock()
	if from != nil && len(d.rds[name]) == 0 {
		d.rdsSrc[name] = from
	}
	d.rds[name] = append(d.rds[name], w)
	switch {
	case owner != nil:
		owner.watches = append(owner.watches, w)
	case d.building != nil:
		d.building.watches = append(d.building.watches, w)
	}
	if d.rdsTimeout[name] {
		w.timedOut = true
	}
	cached, ok := d.routesToApply(name, d.cachedRoutes(name))
	if !ok {
		cached = nil
	}
	src := d.rdsSrc[name]
	if src == nil {
		src = d.lds
	}
	names := namesOf(d.rds, d.rdsSrc, src, d.lds)
	d.mu.Unlock()
	if cached != nil {
		go w.apply(cached) // a replaced listener gets the routes its name already has
	}
	if src != nil {
		d.setNames(src, client.RouteType, names, d.onRoutes)
	}
	return func() {
		d.mu.Lock()
		d.rds[name] = slices.DeleteFunc(d.rds[name], func(x *rdsWatch) bool { return x == w })
		if owner != nil {
			owner.watches = slices.DeleteFunc(owner.watches, func(x *rdsWatch) bool { return x == w })
		}
		if len(d.rds[name]) == 0 {
			delete(d.rds, name)
			delete(d.rdsCache, name)
			delete(d.rdsTimeout, name)
			delete(d.versions, "route/"+name)
		}
		names := namesOf(d.rds, d.rdsSrc, src, d.lds)
		vhds := d.dropVhdsLocked(name)
		d.mu.Unlock()
		if vhds != nil {
			vhds()
		}
		if src != nil {
			src.SetNames(client.RouteType, names)
		}
	}
}

func (d *dynamic) onRoutes(_ string, u client.Update) error {
	var errs []string
	for _, name := range u.Unchanged {
		d.mu.Lock()
		st := d.rdsStats[name]
		d.mu.Unlock()
		st.unchanged(u.Version)
	}
	for _, name := range sortedKeys(u.Resources) {
		rc := u.Resources[name].Msg.(*routev3.RouteConfiguration)
		d.mu.Lock()
		ws := slices.Clone(d.rds[name])
		st := d.rdsStats[name]
		d.mu.Unlock()
		st.attempt()
		eff, hold, err := d.vhdsRoutes(name, rc, st)
		if err != nil {
			errs = append(errs, fmt.Sprintf("route configuration %q: %v", name, err))
			st.result(false, "")
			continue
		}
		if hold { // as Envoy's init manager: applied once VHDS has answered
			ws = nil
		}
		failed := false
		for _, w := range ws {
			if err := w.apply(eff); err != nil {
				errs = append(errs, err.Error())
				failed = true
				break
			}
		}
		raw, err := wireOf(u.Resources[name])
		if err != nil {
			errs = append(errs, fmt.Sprintf("route configuration %q: %v", name, err))
			failed = true
		}
		st.result(!failed, versionOf(u, name))
		if !failed {
			d.mu.Lock()
			d.rdsCache[name] = raw
			d.versions["route/"+name] = versionOf(u, name)
			d.updated["route/"+name] = time.Now()
			d.mu.Unlock()
			if hold {
				d.vhdsCatchUp(name)
			}
		}
	}
	if u.InitialFetchTimeout {
		d.mu.Lock()
		for _, name := range u.Missing {
			d.rdsTimeout[name] = true
			for _, w := range d.rds[name] {
				w.timedOut = true
			}
		}
		d.mu.Unlock()
		d.checkWarming()
	}
	return joinErrs(errs)
}

// onListeners applies LDS: a new or changed listener is built, warms until
// its route configurations have arrived, and is then put in service (bound
// next to the old one by SO_REUSEPORT) before the old one stops accepting
// and drains; an unchanged one is left alone; a removed one drains.
func (d *dynamic) onListeners(_ string, u client.Update) error {
	defer d.ldsOnce.Do(func() { close(d.ldsDone) })
	var errs []string
	for _, name := range sortedKeys(u.Resources) {
		lp := u.Resources[name].Msg.(*listenerv3.Listener)
		d.mu.Lock()
		old := d.listeners[name]
		warm := d.warming[name]
		d.mu.Unlock()
		if warm != nil && proto.Equal(warm.l.Proto, lp) {
			continue
		}
		if warm == nil && old != nil && proto.Equal(old.Proto, lp) {
			continue
		}
		if old == nil && d.s.hasStaticListener(name) {
			errs = append(errs, fmt.Sprintf("listener %q: a static listener of that name exists", name))
			continue
		}
		if err := d.addWarming(name, lp, old, versionOf(u, name)); err != nil {
			errs = append(errs, err.Error())
		}
	}
	for _, name := range u.Removed {
		d.mu.Lock()
		old := d.listeners[name]
		warm := d.warming[name]
		delete(d.listeners, name)
		delete(d.warming, name)
		delete(d.versions, "listener/"+name)
		d.mu.Unlock()
		if warm != nil {
			warm.l.Close()
		}
		if old != nil {
			d.s.addListener(nil, old)
		}
	}
	if !u.InitialFetchTimeout && len(errs) == 0 {
		d.mu.Lock()
		d.ldsVersion = u.Version
		d.mu.Unlock()
	}
	d.pruneSecrets() // SDS names only removed resources used (sds.go)
	d.listenerGauges()
	return joinErrs(errs)
}

// routeNames is the RDS names currently subscribed, for tests.
func (d *dynamic) routeNames() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return sortedKeys(d.rds)
}

func versionOf(u client.Update, name string) string {
	if v := u.Resources[name].Version; v != "" {
		return v
	}
	return u.Version
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func joinErrs(errs []string) error {
	if len(errs) == 0 {
		return nil
	}
	return errors.New(strings.Join(errs, "; "))
}
