package server

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"time"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"

	"github.com/outrider-proxy/outrider/proxy/confcheck"
	"github.com/outrider-proxy/outrider/proxy/upstream"
	"github.com/outrider-proxy/outrider/xds/client"
	"github.com/outrider-proxy/outrider/xds/filesource"
)

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

// configure checks dynamic_resources and prepares the clients; nothing is
// sent until start.
func (d *dynamic) configure() error {
	dr := d.s.opts.Bootstrap.GetDynamicResources()
	if dr == nil {
		return nil // SDS only: sources are made as secrets are subscribed
	}
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
	// d.ads is a *client.Client: assigned only when set, so that a nil one
	// does not become a non-nil source (a CDS-only bootstrap crashed).
	if d.cds == nil && d.ads != nil {
		d.cds = d.ads
	}
	if d.lds == nil && d.ads != nil {
		d.lds = d.ads
	}
	if d.cds == nil && d.lds == nil {
		return fmt.Errorf("dynamic_resources: no lds_config, cds_config or ads_config")
	}
	for i, lp := range d.s.opts.Bootstrap.GetStaticResources().GetListeners() {
		if _, err := d.scanListener(fmt.Sprintf("static_resources.listeners[%d]", i), lp); err != nil {
			return err
		}
	}
	return nil
}

// clientFor returns the source of a config source: the ADS client for
// `ads: {}`, one client per distinct api_config_source, one watched file per
// path.
func (d *dynamic) clientFor(path string, src *corev3.ConfigSource) (source, error) {
	switch {
	case src.GetAds() != nil:
		if d.ads == nil {
			return nil, fmt.Errorf("%s.ads: no dynamic_resources.ads_config to use", path)
		}
		return d.ads, nil
	case src.GetApiConfigSource().GetApiType() == corev3.ApiConfigSource_REST:
		return d.restClient(path+".api_config_source", src.GetApiConfigSource(), src)
	case src.GetApiConfigSource() != nil:
		return d.newClient(path+".api_config_source", src.GetApiConfigSource(), src, false)
	case src.GetPathConfigSource() != nil:
		pcs := src.GetPathConfigSource()
		return d.fileSource(path+".path_config_source.path", pcs.GetPath(), pcs.GetWatchedDirectory().GetPath())
	case src.GetPath() != "":
		return d.fileSource(path+".path", src.GetPath(), "")
	}
	return nil, fmt.Errorf("%s: config source without ads or api_config_source", path)
}

// fileSource is the watched file of a path config source; the file must
// exist, as Envoy requires.
func (d *dynamic) fileSource(field, path, dir string) (source, error) {
	key := "file:" + path + "\x00" + dir
	if c, ok := d.clients[key]; ok {
		return c, nil
	}
	if err := filesource.Check(path); err != nil {
		return nil, fmt.Errorf("%s: %w", field, err)
	}
	c := filesource.New(filesource.Config{Path: path, WatchedDirectory: dir, Stats: d.s.stats, TypeStats: typeStats, Log: d.s.log})
	d.clients[key] = c
	return c, nil
}

// typeStats are the prefixes of the subscription stats of LDS and CDS.
var typeStats = map[string]string{client.ListenerURL: "listener_manager.lds", client.ClusterURL: "cluster_manager.cds"}

func (d *dynamic) newClient(path string, api *corev3.ApiConfigSource, src *corev3.ConfigSource, ads bool) (*client.Client, error) {
	key, _ := proto.MarshalOptions{Deterministic: true}.Marshal(api)
	if c, ok := d.clients[string(key)]; ok {
		if cl, ok := c.(*client.Client); ok {
			return cl, nil
		}
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
		TypeStats:                 typeStats,
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
		if p, ok := d.s.pipes[name]; ok {
			return pipeDialer(p), nil
		}
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
					uc, err := cl.Dial(ctx, h)
					if err != nil {
						return nil, err
					}
					if tr := cl.TransportFor(h); tr != nil { // TLS to the management server
						tc, err := tr.Wrap(ctx, uc, "")
						if err != nil {
							uc.Close()
							return nil, err
						}
						return tc, nil
					}
					return uc, nil
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

// restClient is the REST-JSON poller of an api_config_source with api_type REST: one per distinct
// source, POSTing to its cluster_names[0] (a static cluster) every refresh_delay.
func (d *dynamic) restClient(path string, api *corev3.ApiConfigSource, src *corev3.ConfigSource) (source, error) {
	if err := confcheck.Fields(api, path, "api_type", "transport_api_version", "cluster_names", "refresh_delay",
		"request_timeout"); err != nil {
		return nil, err
	}
	if v := api.GetTransportApiVersion(); v != corev3.ApiVersion_V3 {
		return nil, fmt.Errorf("%s.transport_api_version: %s is not supported", path, v)
	}
	if len(api.GetClusterNames()) != 1 {
		return nil, fmt.Errorf("%s.cluster_names: a REST config source needs exactly one cluster", path)
	}
	name := api.GetClusterNames()[0]
	if d.s.clusters.Get(name) == nil {
		return nil, fmt.Errorf("%s.cluster_names[0]: unknown static cluster %q", path, name)
	}
	keyb, _ := proto.MarshalOptions{Deterministic: true}.Marshal(api)
	key := "rest:" + string(keyb)
	if c, ok := d.clients[key]; ok {
		return c, nil
	}
	timeout := 15 * time.Second // Envoy's initial_fetch_timeout default
	if t := src.GetInitialFetchTimeout(); t != nil {
		timeout = t.AsDuration()
	}
	c := client.NewREST(client.RESTConfig{
		Node:                d.s.node(),
		HTTP:                &http.Client{Transport: clusterTransport(d.s.clusters, name)},
		BaseURL:             "http://" + name,
		RefreshDelay:        api.GetRefreshDelay().AsDuration(),
		RequestTimeout:      api.GetRequestTimeout().AsDuration(),
		InitialFetchTimeout: timeout,
		Stats:               d.s.stats,
		TypeStats:           typeStats,
		Log:                 d.s.log,
	})
	d.clients[key] = c
	return c, nil
}

// clusterTransport is an HTTP/1.1 transport whose connections go to a host of the named cluster, through
// its transport socket (TLS) when it has one.
func clusterTransport(m *upstream.Manager, name string) *http.Transport {
	return &http.Transport{
		MaxIdleConnsPerHost: 4,
		IdleConnTimeout:     time.Minute,
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return m.DialCluster(ctx, name)
		},
	}
}
