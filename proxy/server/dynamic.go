package server

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"

	"github.com/outrider-proxy/outrider/proxy/confcheck"
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
	nctx    *netfilter.Context
	clients map[string]*client.Client // by config source
	ads     *client.Client
	cds     *client.Client // also carries EDS
	lds     *client.Client // also carries RDS
	cancels []func()

	mu        sync.Mutex
	clusters  map[string]*clusterv3.Cluster // dynamic clusters in force
	listeners map[string]*listener.Listener // dynamic listeners in force
	eds       map[string][]*edsWatch        // by service name
	edsCache  map[string]*endpointv3.ClusterLoadAssignment
	rds       map[string][]*rdsWatch // by route configuration name
	rdsCache  map[string]*routev3.RouteConfiguration
	versions  map[string]string // resource name -> version, for config_dump
}

type edsWatch struct {
	update func(*endpointv3.ClusterLoadAssignment) error
}

type rdsWatch struct {
	apply func(*routev3.RouteConfiguration) error
}

// grpcOnlyClusters are the static clusters that only carry gRPC to a
// management server: grpc-go speaks HTTP/2 to them itself, so their HTTP/2
// options are not refused.
func grpcOnlyClusters(b *bootstrapv3.Bootstrap) map[string]bool {
	out := map[string]bool{}
	add := func(api *corev3.ApiConfigSource) {
		for _, g := range api.GetGrpcServices() {
			if n := g.GetEnvoyGrpc().GetClusterName(); n != "" {
				out[n] = true
			}
		}
	}
	dr := b.GetDynamicResources()
	add(dr.GetAdsConfig())
	add(dr.GetLdsConfig().GetApiConfigSource())
	add(dr.GetCdsConfig().GetApiConfigSource())
	return out
}

// newDynamic returns the xDS side's state; configure makes the clients
// once the static clusters they dial through exist.
func newDynamic(s *Server, nctx *netfilter.Context) *dynamic {
	return &dynamic{
		s: s, nctx: nctx, clients: map[string]*client.Client{},
		clusters: map[string]*clusterv3.Cluster{}, listeners: map[string]*listener.Listener{},
		eds: map[string][]*edsWatch{}, edsCache: map[string]*endpointv3.ClusterLoadAssignment{},
		rds: map[string][]*rdsWatch{}, rdsCache: map[string]*routev3.RouteConfiguration{},
		versions: map[string]string{},
	}
}

// configure checks dynamic_resources and prepares the clients; nothing is
// sent until start.
func (d *dynamic) configure() error {
	dr := d.s.opts.Bootstrap.GetDynamicResources()
	if err := confcheck.Fields(dr, "dynamic_resources", "lds_config", "cds_config", "ads_config", "lds_resources_locator", "cds_resources_locator"); err != nil {
		return err
	}
	if dr.GetLdsResourcesLocator() != "" || dr.GetCdsResourcesLocator() != "" {
		return fmt.Errorf("dynamic_resources: xdstp resource locators are not supported by outrider yet")
	}
	if ads := dr.GetAdsConfig(); ads != nil {
		c, err := d.newClient("dynamic_resources.ads_config", ads, nil, true)
		if err != nil {
			return err
		}
		d.ads = c
	}
	var err error
	if cds := dr.GetCdsConfig(); cds != nil {
		if d.cds, err = d.clientFor("dynamic_resources.cds_config", cds); err != nil {
			return err
		}
	}
	if lds := dr.GetLdsConfig(); lds != nil {
		if d.lds, err = d.clientFor("dynamic_resources.lds_config", lds); err != nil {
			return err
		}
	}
	if d.cds == nil {
		d.cds = d.ads
	}
	if d.lds == nil {
		d.lds = d.ads
	}
	if d.cds == nil && d.lds == nil {
		return fmt.Errorf("dynamic_resources: no lds_config, cds_config or ads_config")
	}
	return nil
}

// clientFor returns the client of a config source: the ADS one for
// `ads: {}`, else one per distinct api_config_source.
func (d *dynamic) clientFor(path string, src *corev3.ConfigSource) (*client.Client, error) {
	switch {
	case src.GetAds() != nil:
		if d.ads == nil {
			return nil, fmt.Errorf("%s.ads: no dynamic_resources.ads_config to use", path)
		}
		return d.ads, nil
	case src.GetApiConfigSource() != nil:
		return d.newClient(path+".api_config_source", src.GetApiConfigSource(), src, false)
	case src.GetPath() != "" || src.GetPathConfigSource() != nil:
		return nil, fmt.Errorf("%s: file-based (path) configuration is not supported by outrider yet", path)
	}
	return nil, fmt.Errorf("%s: config source without ads or api_config_source", path)
}

func (d *dynamic) newClient(path string, api *corev3.ApiConfigSource, src *corev3.ConfigSource, ads bool) (*client.Client, error) {
	key, _ := proto.MarshalOptions{Deterministic: true}.Marshal(api)
	if c, ok := d.clients[string(key)]; ok {
		return c, nil
	}
	var delta bool
	switch api.GetApiType() {
	case corev3.ApiConfigSource_GRPC:
	case corev3.ApiConfigSource_DELTA_GRPC:
		delta = true
	case corev3.ApiConfigSource_AGGREGATED_GRPC:
		ads = true
	case corev3.ApiConfigSource_AGGREGATED_DELTA_GRPC:
		ads, delta = true, true
	default:
		return nil, fmt.Errorf("%s.api_type: %s is not supported by outrider yet", path, api.GetApiType())
	}
	if len(api.GetGrpcServices()) == 0 {
		return nil, fmt.Errorf("%s.grpc_services: a gRPC config source needs one", path)
	}
	dial, err := d.dialer(path+".grpc_services[0]", api.GetGrpcServices()[0])
	if err != nil {
		return nil, err
	}
	timeout := 15 * time.Second // Envoy's initial_fetch_timeout default
	if t := src.GetInitialFetchTimeout(); t != nil {
		timeout = t.AsDuration()
	}
	cfg := client.Config{
		Node:                      d.s.node(),
		Dial:                      dial,
		Delta:                     delta,
		ADS:                       ads,
		SetNodeOnFirstMessageOnly: api.GetSetNodeOnFirstMessageOnly(),
		InitialFetchTimeout:       timeout,
		Stats:                     d.s.stats,
		TypeStats:                 map[string]string{client.ListenerURL: "listener_manager.lds", client.ClusterURL: "cluster_manager.cds"},
		Log:                       d.s.log,
	}
	if rl := api.GetRateLimitSettings(); rl != nil {
		cfg.RateLimit = &client.RateLimit{MaxTokens: 100, FillRate: 10}
		if rl.GetMaxTokens() != nil {
			cfg.RateLimit.MaxTokens = rl.GetMaxTokens().GetValue()
		}
		if rl.GetFillRate() != nil {
			cfg.RateLimit.FillRate = rl.GetFillRate().GetValue()
		}
	}
	c := client.New(cfg)
	d.clients[string(key)] = c
	return c, nil
}

// dialer makes the gRPC connection to a management server: through a static
// cluster (envoy_grpc) or to a target URI (google_grpc, unix: included).
func (d *dynamic) dialer(path string, g *corev3.GrpcService) (func(context.Context) (grpc.ClientConnInterface, error), error) {
	switch {
	case g.GetEnvoyGrpc() != nil:
		name := g.GetEnvoyGrpc().GetClusterName()
		if d.s.clusters.Get(name) == nil {
			return nil, fmt.Errorf("%s.envoy_grpc.cluster_name: unknown static cluster %q", path, name)
		}
		return func(ctx context.Context) (grpc.ClientConnInterface, error) {
			return grpc.NewClient("passthrough:///"+name,
				grpc.WithTransportCredentials(insecure.NewCredentials()),
				grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) {
					cl := d.s.clusters.Get(name)
					if cl == nil {
						return nil, fmt.Errorf("xds cluster %q is gone", name)
					}
					h := cl.ChooseHost(&upstream.LBContext{})
					if h == nil {
						return nil, fmt.Errorf("xds cluster %q: no healthy upstream", name)
					}
					return cl.Dial(ctx, h)
				}))
		}, nil
	case g.GetGoogleGrpc() != nil:
		gg := g.GetGoogleGrpc()
		if gg.GetChannelCredentials() != nil || len(gg.GetCallCredentials()) > 0 {
			return nil, fmt.Errorf("%s.google_grpc: credentials are not supported by outrider yet", path)
		}
		target := gg.GetTargetUri()
		return func(ctx context.Context) (grpc.ClientConnInterface, error) {
			return grpc.NewClient(target, grpc.WithTransportCredentials(insecure.NewCredentials()))
		}, nil
	}
	return nil, fmt.Errorf("%s: needs envoy_grpc or google_grpc", path)
}

// start subscribes, CDS before LDS as Envoy does on ADS.
func (d *dynamic) start() {
	if d.cds != nil {
		d.cancels = append(d.cancels, d.cds.Watch(client.ClusterType, nil, client.WatcherFunc(d.onClusters)))
	}
	if d.lds != nil {
		d.cancels = append(d.cancels, d.lds.Watch(client.ListenerType, nil, client.WatcherFunc(d.onListeners)))
	}
}

func (d *dynamic) close() {
	for _, c := range d.cancels {
		c()
	}
	for _, c := range d.clients {
		c.Close()
	}
}

// onClusters applies CDS: valid clusters are added or replaced (an
// unchanged one is left alone, so its pools and health stay), removed ones
// dropped. Invalid ones are reported together as the NACK reason.
func (d *dynamic) onClusters(_ string, u client.Update) error {
	var errs []string
	names := sortedKeys(u.Resources)
	for _, name := range names {
		c := u.Resources[name].Msg.(*clusterv3.Cluster)
		d.mu.Lock()
		old, dynamic := d.clusters[name]
		d.mu.Unlock()
		if !dynamic && d.s.clusters.Get(name) != nil {
			errs = append(errs, fmt.Sprintf("cluster %q: a static cluster of that name exists", name))
			continue
		}
		if dynamic && proto.Equal(old, c) {
			continue
		}
		if err := checkClusterFields(c, d.s.log); err == nil {
			err = d.s.clusters.AddOrUpdate(c)
			if err != nil {
				errs = append(errs, fmt.Sprintf("cluster %q: %v", name, err))
				continue
			}
		} else {
			errs = append(errs, fmt.Sprintf("cluster %q: %v", name, err))
			continue
		}
		d.mu.Lock()
		d.clusters[name] = c
		d.versions["cluster/"+name] = versionOf(u, name)
		d.mu.Unlock()
	}
	for _, name := range u.Removed {
		d.mu.Lock()
		_, dynamic := d.clusters[name]
		delete(d.clusters, name)
		d.mu.Unlock()
		if dynamic {
			d.s.clusters.Remove(name)
		}
	}
	d.s.stats.Scope("cluster_manager").Gauge("active_clusters").Set(int64(len(d.s.clusters.Names())))
	return joinErrs(errs)
}

// WatchEndpoints implements upstream.EndpointSource over EDS.
func (d *dynamic) WatchEndpoints(service string, update func(*endpointv3.ClusterLoadAssignment) error) (cancel func()) {
	w := &edsWatch{update: update}
	d.mu.Lock()
	first := len(d.eds) == 0
	d.eds[service] = append(d.eds[service], w)
	cached := d.edsCache[service]
	names := sortedKeys(d.eds)
	d.mu.Unlock()
	if cached != nil {
		go update(cached) // a replaced cluster gets the endpoints its name already has
	}
	if first {
		d.cancels = append(d.cancels, d.cds.Watch(client.EndpointType, names, client.WatcherFunc(d.onEndpoints)))
	} else {
		d.cds.SetNames(client.EndpointType, names)
	}
	return func() {
		d.mu.Lock()
		d.eds[service] = slices.DeleteFunc(d.eds[service], func(x *edsWatch) bool { return x == w })
		if len(d.eds[service]) == 0 {
			delete(d.eds, service)
			delete(d.edsCache, service)
		}
		names := sortedKeys(d.eds)
		d.mu.Unlock()
		d.cds.SetNames(client.EndpointType, names)
	}
}

func (d *dynamic) onEndpoints(_ string, u client.Update) error {
	var errs []string
	for _, name := range sortedKeys(u.Resources) {
		cla := u.Resources[name].Msg.(*endpointv3.ClusterLoadAssignment)
		d.mu.Lock()
		d.edsCache[name] = cla
		ws := slices.Clone(d.eds[name])
		d.mu.Unlock()
		for _, w := range ws {
			if err := w.update(cla); err != nil {
				errs = append(errs, fmt.Sprintf("cluster load assignment %q: %v", name, err))
			}
		}
	}
	return joinErrs(errs)
}

// WatchRoutes implements netfilter.RouteSource over RDS.
func (d *dynamic) WatchRoutes(name string, apply func(*routev3.RouteConfiguration) error) (cancel func()) {
	w := &rdsWatch{apply: apply}
	d.mu.Lock()
	first := len(d.rds) == 0
	d.rds[name] = append(d.rds[name], w)
	cached := d.rdsCache[name]
	names := sortedKeys(d.rds)
	d.mu.Unlock()
	if cached != nil {
		go apply(cached) // a replaced listener gets the routes its name already has
	}
	if first {
		d.cancels = append(d.cancels, d.lds.Watch(client.RouteType, names, client.WatcherFunc(d.onRoutes)))
	} else {
		d.lds.SetNames(client.RouteType, names)
	}
	return func() {
		d.mu.Lock()
		d.rds[name] = slices.DeleteFunc(d.rds[name], func(x *rdsWatch) bool { return x == w })
		if len(d.rds[name]) == 0 {
			delete(d.rds, name)
			delete(d.rdsCache, name)
		}
		names := sortedKeys(d.rds)
		d.mu.Unlock()
		d.lds.SetNames(client.RouteType, names)
	}
}

func (d *dynamic) onRoutes(_ string, u client.Update) error {
	var errs []string
	for _, name := range sortedKeys(u.Resources) {
		rc := u.Resources[name].Msg.(*routev3.RouteConfiguration)
		d.mu.Lock()
		ws := slices.Clone(d.rds[name])
		d.mu.Unlock()
		failed := false
		for _, w := range ws {
			if err := w.apply(rc); err != nil {
				errs = append(errs, err.Error())
				failed = true
				break
			}
		}
		if !failed {
			d.mu.Lock()
			d.rdsCache[name] = rc
			d.versions["route/"+name] = versionOf(u, name)
			d.mu.Unlock()
		}
	}
	return joinErrs(errs)
}

// onListeners applies LDS: a new or changed listener is built and bound
// (next to the old one, by SO_REUSEPORT) before the old one stops accepting
// and drains; an unchanged one is left alone; a removed one drains.
func (d *dynamic) onListeners(_ string, u client.Update) error {
	var errs []string
	for _, name := range sortedKeys(u.Resources) {
		lp := u.Resources[name].Msg.(*listenerv3.Listener)
		d.mu.Lock()
		old := d.listeners[name]
		d.mu.Unlock()
		if old != nil && proto.Equal(old.Proto, lp) {
			continue
		}
		if old == nil && d.s.hasStaticListener(name) {
			errs = append(errs, fmt.Sprintf("listener %q: a static listener of that name exists", name))
			continue
		}
		l, err := listener.Build(lp, d.nctx, &d.s.connIDs)
		if err != nil {
			errs = append(errs, fmt.Sprintf("listener %q: %v", name, err))
			continue
		}
		if err := l.Bind(context.Background()); err != nil {
			l.Close()
			errs = append(errs, err.Error())
			continue
		}
		d.s.addListener(l, old)
		go l.Serve()
		d.mu.Lock()
		d.listeners[name] = l
		d.versions["listener/"+name] = versionOf(u, name)
		d.mu.Unlock()
	}
	for _, name := range u.Removed {
		d.mu.Lock()
		old := d.listeners[name]
		delete(d.listeners, name)
		d.mu.Unlock()
		if old != nil {
			d.s.addListener(nil, old)
		}
	}
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
