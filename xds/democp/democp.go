// Package democp is a small control plane for demos and tests: it serves,
// over go-control-plane's gRPC server and snapshot cache, the resources of
// one YAML/JSON file (a DiscoveryResponse-shaped `resources:` list of any
// xDS types) to every node, and pushes a new snapshot version whenever the
// file changes on disk.
package democp

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	clusterservice "github.com/envoyproxy/go-control-plane/envoy/service/cluster/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	endpointservice "github.com/envoyproxy/go-control-plane/envoy/service/endpoint/v3"
	listenerservice "github.com/envoyproxy/go-control-plane/envoy/service/listener/v3"
	routeservice "github.com/envoyproxy/go-control-plane/envoy/service/route/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"google.golang.org/grpc"

	"github.com/outrider-proxy/outrider/xds/bootstrap"
)

// anyNode makes every node share one snapshot.
type anyNode struct{}

func (anyNode) ID(*corev3.Node) string { return "" }

// Load reads the file's resources grouped by type URL.
func Load(path string) (map[resourcev3.Type][]types.Resource, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	dr := &discoveryv3.DiscoveryResponse{}
	if err := bootstrap.LoadMessage(path, data, dr); err != nil {
		return nil, err
	}
	out := map[resourcev3.Type][]types.Resource{}
	for i, a := range dr.GetResources() {
		m, err := a.UnmarshalNew()
		if err != nil {
			return nil, fmt.Errorf("%s: resources[%d]: %w", path, i, err)
		}
		out[a.GetTypeUrl()] = append(out[a.GetTypeUrl()], m.(types.Resource))
	}
	return out, nil
}

// Serve serves the file's resources on ln (ADS and the per-type services)
// until ctx ends, checking the file for changes every interval (zero: 100
// ms). A file that does not load is logged and the last snapshot stays.
func Serve(ctx context.Context, ln net.Listener, path string, interval time.Duration, log *slog.Logger) error {
	if interval <= 0 {
		interval = 100 * time.Millisecond
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	cache := cachev3.NewSnapshotCache(false, anyNode{}, nil)
	version := 0
	var lastMod time.Time
	var lastSize int64 = -1
	push := func() {
		fi, err := os.Stat(path)
		if err != nil || (fi.ModTime().Equal(lastMod) && fi.Size() == lastSize) {
			return
		}
		lastMod, lastSize = fi.ModTime(), fi.Size()
		res, err := Load(path)
		if err == nil {
			var snap *cachev3.Snapshot
			snap, err = cachev3.NewSnapshot(strconv.Itoa(version+1), res)
			if err == nil {
				err = cache.SetSnapshot(ctx, "", snap)
			}
		}
		if err != nil {
			log.Warn("snapshot not pushed", "path", path, "err", err)
			return
		}
		version++
		log.Info("snapshot pushed", "version", version)
	}
	push()
	if version == 0 {
		return fmt.Errorf("%s: no valid snapshot to serve", path)
	}
	srv := serverv3.NewServer(ctx, cache, nil)
	gs := grpc.NewServer()
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(gs, srv)
	listenerservice.RegisterListenerDiscoveryServiceServer(gs, srv)
	routeservice.RegisterRouteDiscoveryServiceServer(gs, srv)
	clusterservice.RegisterClusterDiscoveryServiceServer(gs, srv)
	endpointservice.RegisterEndpointDiscoveryServiceServer(gs, srv)
	go func() {
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				gs.Stop()
				return
			case <-t.C:
				push()
			}
		}
	}()
	return gs.Serve(ln)
}
