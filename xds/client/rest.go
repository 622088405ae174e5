package client

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"slices"
	"sync"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/outrider-proxy/outrider/telemetry/stats"
)

// restPaths are the REST-JSON endpoints of each type (Envoy's v3 HTTP API).
var restPaths = map[string]string{
	ListenerURL:        "/v3/discovery:listeners",
	RouteURL:           "/v3/discovery:routes",
	ScopedRouteURL:     "/v3/discovery:scoped-routes",
	ClusterURL:         "/v3/discovery:clusters",
	EndpointURL:        "/v3/discovery:endpoints",
	SecretURL:          "/v3/discovery:secrets",
	RuntimeURL:         "/v3/discovery:runtime",
	ExtensionConfigURL: "/v3/discovery:extension_configs",
}

// RESTConfig configures a REST client (api_type: REST).
type RESTConfig struct {
	// Node identifies this proxy in every request; nil means an empty node (user agent filled as Config's).
	Node *corev3.Node
	// HTTP sends the requests; it reaches the management server's cluster. Required.
	HTTP *http.Client
	// BaseURL is prefixed to the endpoint path, e.g. "http://xds_cluster". Required.
	BaseURL string
	// RefreshDelay is the pause after each poll (refresh_delay), to which a random jitter below it is
	// added; zero is taken as 1 s.
	RefreshDelay time.Duration
	// RequestTimeout bounds each poll (request_timeout); zero is Envoy's default 1 s.
	RequestTimeout time.Duration
	// InitialFetchTimeout is as in Config; zero disables it.
	InitialFetchTimeout time.Duration
	// Stats and TypeStats are as in Config (update_attempt, update_success, update_rejected,
	// update_failure, init_fetch_timeout, update_time per type); nil Stats means a private store.
	Stats     *stats.Store
	TypeStats map[string]string
	// Log receives fetch failures and NACK messages; nil discards them.
	Log *slog.Logger
}

// REST polls a management server over REST-JSON as Envoy's HttpSubscriptionImpl does: one poller per
// subscription (a wildcard one for LDS and CDS, one per resource name for the named types), each
// POSTing a DiscoveryRequest (node, type_url, resource_names and the last accepted version_info; REST
// has no nonce and no error_detail: a rejected response only leaves version_info where it was) every
// refresh_delay plus a random jitter below it. A 304 means nothing newer. Watchers run one at a time on
// one goroutine, as with Client; it satisfies the same Watch / SetNames / Close contract.
type REST struct {
	cfg  RESTConfig
	node *corev3.Node
	log  *slog.Logger

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	serial // the loop goroutine's queue
	done   chan struct{}

	types map[string]*restType // owned by the loop
}

// restType is one resource type's watchers, pollers and accepted resources.
type restType struct {
	rt       ResourceType
	watchers []*watchEntry
	stats    *typeStats
	wildcard bool
	names    map[string]bool
	pollers  map[string]*poller // by name; "" is the wildcard poller
	cache    map[string]Resource
}

// poller is one subscription's polling goroutine. Its request state is its own; the verdict on each
// response comes from the loop.
type poller struct {
	name     string
	wildcard bool
	cancel   context.CancelFunc
	answered bool
	timer    *time.Timer
}

// NewREST starts a REST client; polling starts when a type is watched.
func NewREST(cfg RESTConfig) *REST {
	if cfg.RefreshDelay <= 0 {
		cfg.RefreshDelay = time.Second
	}
	if cfg.RequestTimeout <= 0 {
		cfg.RequestTimeout = time.Second
	}
	if cfg.Stats == nil {
		cfg.Stats = stats.NewStore()
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	node := &corev3.Node{}
	if cfg.Node != nil {
		node = proto.Clone(cfg.Node).(*corev3.Node)
	}
	if node.UserAgentName == "" {
		node.UserAgentName = "outrider"
	}
	if node.UserAgentVersionType == nil {
		node.UserAgentVersionType = &corev3.Node_UserAgentBuildVersion{UserAgentBuildVersion: &corev3.BuildVersion{
			Version: &typev3.SemanticVersion{MajorNumber: Version[0], MinorNumber: Version[1], Patch: Version[2]},
		}}
	}
	r := &REST{cfg: cfg, node: node, log: cfg.Log, serial: newSerial(), done: make(chan struct{}),
		types: map[string]*restType{}}
	r.ctx, r.cancel = context.WithCancel(context.Background())
	go r.loop()
	return r
}

// Watch is Client.Watch over REST.
func (r *REST) Watch(t ResourceType, names []string, w Watcher) (cancel func()) {
	e := &watchEntry{w: w}
	names = slices.Clone(names)
	wildcard := names == nil
	r.enqueue(func() {
		rt := r.typeOf(t)
		rt.watchers = append(rt.watchers, e)
		if wildcard {
			rt.wildcard = true
		}
		for _, n := range names {
			rt.names[n] = true
		}
		if len(rt.cache) > 0 {
			_ = e.w.OnUpdate(t.TypeURL(), Update{Resources: cloneResources(rt.cache)})
		}
		r.syncPollers(rt)
	})
	var once sync.Once
	return func() {
		once.Do(func() {
			r.enqueue(func() {
				rt := r.types[t.TypeURL()]
				if rt == nil {
					return
				}
				if i := slices.Index(rt.watchers, e); i >= 0 {
					rt.watchers = slices.Delete(rt.watchers, i, i+1)
				}
				if len(rt.watchers) == 0 {
					rt.wildcard, rt.names, rt.cache = false, map[string]bool{}, map[string]Resource{}
				}
				r.syncPollers(rt)
			})
		})
	}
}

// SetNames is Client.SetNames over REST: pollers start and stop with the names.
func (r *REST) SetNames(t ResourceType, names []string) {
	names = slices.Clone(names)
	wildcard := names == nil
	r.enqueue(func() {
		rt := r.typeOf(t)
		rt.wildcard = wildcard
		rt.names = map[string]bool{}
		for _, n := range names {
			rt.names[n] = true
		}
		for n := range rt.cache {
			if !rt.wildcard && !rt.names[n] {
				delete(rt.cache, n)
			}
		}
		r.syncPollers(rt)
	})
}

// Close stops every poller and the loop and waits for them. It must not be called from a Watcher.
func (r *REST) Close() {
	if !r.close() {
		return
	}
	r.cancel()
	<-r.done
	r.wg.Wait()
}

func cloneResources(m map[string]Resource) map[string]Resource {
	out := make(map[string]Resource, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

func (r *REST) typeOf(t ResourceType) *restType {
	rt := r.types[t.TypeURL()]
	if rt == nil {
		rt = &restType{rt: t, names: map[string]bool{}, pollers: map[string]*poller{}, cache: map[string]Resource{}}
		if p, ok := r.cfg.TypeStats[t.TypeURL()]; ok {
			rt.stats = newTypeStats(r.cfg.Stats.Scope(p))
		}
		r.types[t.TypeURL()] = rt
	}
	return rt
}

func (r *REST) loop() {
	defer close(r.done)
	defer func() {
		for _, rt := range r.types {
			for _, p := range rt.pollers {
				p.stop()
			}
		}
	}()
	r.runQueue(r.ctx)
}

func (p *poller) stop() {
	p.cancel()
	if p.timer != nil {
		p.timer.Stop()
	}
}

// syncPollers starts a poller for every subscribed name (or the wildcard) without one and stops the
// others, as Envoy keeps one HTTP subscription per resource name.
func (r *REST) syncPollers(rt *restType) {
	want := map[string]bool{}
	if len(rt.watchers) > 0 {
		if rt.wildcard {
			want[""] = true
		}
		for n := range rt.names {
			want[n] = true
		}
	}
	for key, p := range rt.pollers {
		if !want[key] {
			p.stop()
			delete(rt.pollers, key)
		}
	}
	for _, key := range sortedNames(want) {
		if rt.pollers[key] != nil {
			continue
		}
		ctx, cancel := context.WithCancel(r.ctx)
		p := &poller{name: key, wildcard: key == "", cancel: cancel}
		rt.pollers[key] = p
		if d := r.cfg.InitialFetchTimeout; d > 0 {
			p.timer = time.AfterFunc(d, func() { r.enqueue(func() { r.fetchTimedOut(rt, p) }) })
		}
		r.wg.Add(1)
		go r.poll(ctx, rt, p)
	}
}

func sortedNames(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

func (r *REST) fetchTimedOut(rt *restType, p *poller) {
	if rt.pollers[p.name] != p || p.answered || len(rt.watchers) == 0 {
		return
	}
	if rt.stats != nil {
		rt.stats.initFetchTimeout.Inc()
	}
	u := Update{InitialFetchTimeout: true}
	if !p.wildcard {
		u.Missing = []string{p.name}
	}
	r.log.Warn("xds: initial fetch timeout", "type", rt.rt.TypeURL(), "missing", u.Missing)
	_ = notifyAll(rt, u)
}

func notifyAll(rt *restType, u Update) error {
	var errs []error
	for _, e := range slices.Clone(rt.watchers) {
		if err := e.w.OnUpdate(rt.rt.TypeURL(), u); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// poll runs one subscription: a request, the verdict on its response, refresh_delay, again.
func (r *REST) poll(ctx context.Context, rt *restType, p *poller) {
	defer r.wg.Done()
	url := rt.rt.TypeURL()
	path, ok := restPaths[url]
	if !ok {
		r.log.Error("xds: no REST endpoint for type", "type", url)
		return
	}
	req := &discoveryv3.DiscoveryRequest{Node: r.node, TypeUrl: url}
	if !p.wildcard {
		req.ResourceNames = []string{p.name}
	}
	for {
		r.enqueue(func() {
			if rt.stats != nil {
				rt.stats.attempt.Inc() // Envoy counts every request
			}
		})
		resp, err := r.fetch(ctx, path, req)
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			r.enqueue(func() {
				if rt.stats != nil {
					rt.stats.failure.Inc()
				}
			})
			r.log.Warn("xds: REST fetch failed", "type", url, "name", p.name, "err", err)
		case resp != nil:
			verdict := make(chan error, 1)
			r.enqueue(func() { verdict <- r.apply(rt, p, resp) })
			select {
			case err = <-verdict:
			case <-ctx.Done():
				return
			}
			if err == nil {
				req.VersionInfo = resp.GetVersionInfo()
			}
		}
		// Envoy's RestApiFetcher: refresh_delay plus a jitter below it.
		delay := r.cfg.RefreshDelay + rand.N(r.cfg.RefreshDelay)
		select {
		case <-ctx.Done():
			return
		case <-time.After(delay):
		}
	}
}

// fetch POSTs req as JSON. A 304 (nothing newer than version_info) returns nil, nil.
func (r *REST) fetch(ctx context.Context, path string, req *discoveryv3.DiscoveryRequest) (*discoveryv3.DiscoveryResponse, error) {
	body, err := protojson.Marshal(req)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, r.cfg.RequestTimeout)
	defer cancel()
	hr, err := http.NewRequestWithContext(ctx, http.MethodPost, r.cfg.BaseURL+path, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	hr.Header.Set("Content-Type", "application/json")
	res, err := r.cfg.HTTP.Do(hr)
	if err != nil {
		return nil, err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(io.LimitReader(res.Body, 64<<20))
	if err != nil {
		return nil, err
	}
	switch res.StatusCode {
	case http.StatusOK:
	case http.StatusNotModified:
		return nil, nil
	default:
		return nil, fmt.Errorf("status %d: %s", res.StatusCode, bytes.TrimSpace(b[:min(len(b), 256)]))
	}
	out := &discoveryv3.DiscoveryResponse{}
	if err := (protojson.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(b, out); err != nil {
		return nil, fmt.Errorf("decoding the DiscoveryResponse: %w", err)
	}
	return out, nil
}

// apply decodes and hands one response to the watchers; the error is the NACK reason.
func (r *REST) apply(rt *restType, p *poller, resp *discoveryv3.DiscoveryResponse) error {
	start := time.Now()
	if rt.pollers[p.name] != p || len(rt.watchers) == 0 {
		return nil // unsubscribed meanwhile
	}
	reject := func(err error) error {
		r.log.Warn("xds: rejecting update", "type", rt.rt.TypeURL(), "version", resp.GetVersionInfo(), "err", err)
		if rt.stats != nil {
			rt.stats.rejected.Inc()
		}
		return err
	}
	if t := resp.GetTypeUrl(); t != "" && t != rt.rt.TypeURL() {
		return reject(fmt.Errorf("type URL %q does not match %q", t, rt.rt.TypeURL()))
	}
	var errs []error
	u := Update{Version: resp.GetVersionInfo()}
	seen := map[string]bool{}
	for i, a := range resp.GetResources() {
		d, err := decodeAny(rt.rt, a, nil)
		if err == nil && seen[d.name] {
			err = errors.New("duplicate resource name")
		}
		if err != nil {
			errs = append(errs, resourceErr(i, d.name, err))
			continue
		}
		seen[d.name] = true
		if d.heartbeat || (!p.wildcard && d.name != p.name) {
			continue
		}
		if u.Resources == nil {
			u.Resources = map[string]Resource{}
		}
		u.Resources[d.name] = d.res
	}
	if len(errs) > 0 {
		return reject(joinErrs(errs))
	}
	if p.wildcard && rt.rt.AllResourcesRequired() {
		for n := range rt.cache {
			if _, ok := u.Resources[n]; !ok {
				u.Removed = append(u.Removed, n)
			}
		}
		slices.Sort(u.Removed)
	}
	p.answered = true
	if p.timer != nil {
		p.timer.Stop()
	}
	if err := notifyAll(rt, u); err != nil {
		return reject(err)
	}
	for _, n := range u.Removed {
		delete(rt.cache, n)
	}
	for n, res := range u.Resources {
		rt.cache[n] = res
	}
	if rt.stats != nil {
		now := time.Now()
		rt.stats.success.Inc()
		rt.stats.updateTime.Set(now.UnixMilli())
		rt.stats.updateDuration.Record(uint64(now.Sub(start).Milliseconds()))
	}
	return nil
}
