// Package client speaks the xDS protocol (SotW and delta, aggregated or one stream per type) to a
// management server and hands decoded, validated resources to watchers, ACKing or NACKing each response
// as Envoy does. Watchers run one at a time on one goroutine; Watch, SetNames and Close never wait for
// the control plane, which may be down for any length of time. Resources are held as their wire bytes:
// one pushed again with the bytes last accepted is not decoded, and watchers see it in Update.Unchanged
// rather than among the changed ones.
//
// Ordering over ADS is the caller's concern, as in Envoy: watch CDS first, then subscribe EDS names
// (SetNames) from the clusters a CDS update brings, watch LDS, then subscribe RDS names from the
// listeners. A watcher may call Watch and SetNames; their requests follow the ACK or NACK of the
// response being handled.
package client

import (
	"context"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"github.com/outrider-proxy/outrider/telemetry/stats"
)

// Version is outrider's version, sent as node.user_agent_build_version when the node has none.
var Version = [3]uint32{0, 1, 0}

// RateLimit is Envoy's rate_limit_settings: a token bucket on requests to the management server.
type RateLimit struct {
	// MaxTokens is the bucket size; zero means Envoy's default 100.
	MaxTokens uint32
	// FillRate is tokens per second; zero means Envoy's default 10.
	FillRate float64
}

// Config configures a Client.
type Config struct {
	// Node identifies this proxy; nil means an empty node. user_agent_name defaults to "outrider" and
	// user_agent_build_version to Version. Client features are sent as given: Envoy adds none to xDS.
	Node *corev3.Node
	// Dial opens a connection to the management server; it is called again for every reconnect, and the
	// connection is closed when its stream ends if it has a Close method. Required.
	Dial func(ctx context.Context) (grpc.ClientConnInterface, error)
	// Delta selects incremental xDS (DELTA_GRPC); false is state of the world (GRPC).
	Delta bool
	// ADS multiplexes every type on one aggregated stream; false opens one stream per type.
	ADS bool
	// SetNodeOnFirstMessageOnly sends the node only on the first request of each stream.
	SetNodeOnFirstMessageOnly bool
	// InitialFetchTimeout bounds how long a new subscription waits for its first response before the
	// watcher is told (Update.InitialFetchTimeout); zero disables it.
	InitialFetchTimeout time.Duration
	// Backoff is the delay before reconnect attempt (0-based, reset by a response); nil is Envoy's
	// jittered exponential back-off from 500 ms to 30 s.
	Backoff func(attempt int) time.Duration
	// RateLimit limits requests as rate_limit_settings does; nil means unlimited.
	RateLimit *RateLimit
	// Stats receives control_plane.connected_state, control_plane.rate_limit_enforced and
	// control_plane.pending_requests; nil means a private store.
	Stats *stats.Store
	// TypeStats maps a type URL to the stats prefix of its subscription (e.g. "listener_manager.lds"),
	// which then gets update_attempt, update_success, update_rejected, update_failure,
	// init_fetch_timeout and update_time. Types not in the map have no such stats.
	TypeStats map[string]string
	// Log receives connection and NACK messages; nil discards them.
	Log *slog.Logger
}

// DefaultBackoff is Envoy's JitteredExponentialBackOffStrategy with base 500 ms and maximum 30 s: a
// uniformly random delay below an interval that doubles per attempt.
func DefaultBackoff(attempt int) time.Duration {
	interval := 30 * time.Second
	if attempt < 6 {
		interval = min(500*time.Millisecond<<attempt, interval)
	}
	return rand.N(interval)
}

// Client is one connection (or one per type) to a management server. Create it with New.
type Client struct {
	cfg  Config
	node *corev3.Node
	log  *slog.Logger

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup // stream runners
	done   chan struct{}  // closed when the loop has exited

	serial // the loop goroutine's queue

	connected   *stats.Gauge
	rateLimited *stats.Counter
	pending     *stats.Gauge

	// Owned by the loop goroutine.
	types     map[string]*typeState
	order     []*typeState // in first-watch order, the order requests go out on a new stream
	streams   map[string]*stream
	connCount int
}

// New starts a client; streams open when the first type is watched.
func New(cfg Config) *Client {
	if cfg.Backoff == nil {
		cfg.Backoff = DefaultBackoff
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
	cp := cfg.Stats.Scope("control_plane")
	c := &Client{
		cfg: cfg, node: node, log: cfg.Log,
		done:        make(chan struct{}),
		serial:      newSerial(),
		connected:   cp.Gauge("connected_state"),
		rateLimited: cp.Counter("rate_limit_enforced"),
		pending:     cp.Gauge("pending_requests"),
		types:       map[string]*typeState{},
		streams:     map[string]*stream{},
	}
	c.connected.Set(0)
	c.ctx, c.cancel = context.WithCancel(context.Background())
	go c.loop()
	return c
}

// Watch subscribes w to type t: names, or every resource of the type (wildcard) when names is nil. A new
// watcher of a type already known is first told the resources held. Watch returns at once; cancel
// removes the watcher, and the type is unsubscribed when its last watcher goes.
func (c *Client) Watch(t ResourceType, names []string, w Watcher) (cancel func()) {
	e := &watchEntry{w: w}
	names = slices.Clone(names)
	wildcard := names == nil
	c.enqueue(func() { c.addWatch(t, names, wildcard, e) })
	var once sync.Once
	return func() { once.Do(func() { c.enqueue(func() { c.removeWatch(t.TypeURL(), e) }) }) }
}

// SetNames replaces the subscription of type t with names, or with wildcard when names is nil: RDS and
// EDS names come and go with listeners and clusters. Resources no longer subscribed are forgotten
// without telling watchers. It takes effect once t has a watcher, and returns at once.
func (c *Client) SetNames(t ResourceType, names []string) {
	names = slices.Clone(names)
	wildcard := names == nil
	c.enqueue(func() {
		ts := c.typeState(t)
		ts.setNames(names, wildcard)
		c.subscriptionChanged(ts)
	})
}

// Close stops every stream and the loop and waits for their goroutines. It must not be called from a
// Watcher. Watchers are not called after Close returns.
func (c *Client) Close() {
	if !c.close() {
		return
	}
	c.cancel()
	<-c.done
	c.wg.Wait()
	c.connected.Set(0)
}

func (c *Client) loop() {
	defer close(c.done)
	defer c.stopTimers()
	c.runQueue(c.ctx)
}

func (c *Client) stopTimers() {
	for _, ts := range c.types {
		ts.stopTimers()
	}
}

// typeState returns the state of t, creating it.
func (c *Client) typeState(t ResourceType) *typeState {
	url := t.TypeURL()
	ts := c.types[url]
	if ts == nil {
		ts = newTypeState(t)
		if p, ok := c.cfg.TypeStats[url]; ok {
			ts.stats = newTypeStats(c.cfg.Stats.Scope(p))
		}
		c.types[url] = ts
		c.order = append(c.order, ts)
	}
	return ts
}

func (c *Client) addWatch(t ResourceType, names []string, wildcard bool, e *watchEntry) {
	ts := c.typeState(t)
	ts.watchers = append(ts.watchers, e)
	if wildcard {
		ts.wildcard = true
	}
	for _, n := range names {
		ts.names[n] = true
	}
	if len(ts.cache) > 0 {
		u := Update{Resources: make(map[string]Resource, len(ts.cache)), Version: ts.version}
		for name, ce := range ts.cache {
			res, err := ts.decode(ce)
			if err != nil { // it was decoded and validated when it arrived
				c.log.Error("xds: cached resource no longer decodes", "type", ts.url, "name", name, "err", err)
				continue
			}
			u.Resources[name] = res
		}
		_ = e.w.OnUpdate(ts.url, u)
	}
	c.subscriptionChanged(ts)
}

func (c *Client) removeWatch(url string, e *watchEntry) {
	ts := c.types[url]
	if ts == nil {
		return
	}
	i := slices.Index(ts.watchers, e)
	if i < 0 {
		return
	}
	ts.watchers = slices.Delete(ts.watchers, i, i+1)
	if len(ts.watchers) == 0 {
		ts.setNames(nil, false)
		ts.names = map[string]bool{}
		c.subscriptionChanged(ts)
	}
}

// subscriptionChanged opens or stops the type's stream as needed, arms the initial fetch timeout for new
// interest, and tells the server.
func (c *Client) subscriptionChanged(ts *typeState) {
	active := len(ts.watchers) > 0
	key := ""
	if !c.cfg.ADS {
		key = ts.url
	}
	s := c.streams[key]
	if active && s == nil {
		s = c.startStream(key)
	}
	if active {
		c.armFetchTimeout(ts)
	}
	if s != nil && s.live != nil {
		c.sendSubscription(s.live, ts)
	}
	if !active && !c.cfg.ADS && s != nil {
		c.stopStream(s)
		ts.forget()
	}
}

// armFetchTimeout starts the initial fetch timer for the names (or wildcard) not yet waited for.
func (c *Client) armFetchTimeout(ts *typeState) {
	if c.cfg.InitialFetchTimeout <= 0 {
		return
	}
	var names []string
	for n := range ts.names {
		if !ts.awaited[n] && !ts.answered[n] && !ts.timedOut[n] {
			ts.awaited[n] = true
			names = append(names, n)
		}
	}
	wildcard := ts.wildcard && !ts.awaitedWildcard && !ts.gotResponse
	if wildcard {
		ts.awaitedWildcard = true
	}
	if len(names) == 0 && !wildcard {
		return
	}
	slices.Sort(names)
	b := &fetchBatch{names: names, wildcard: wildcard}
	b.timer = time.AfterFunc(c.cfg.InitialFetchTimeout, func() { c.enqueue(func() { c.fetchTimedOut(ts, b) }) })
	ts.batches[b] = struct{}{}
}

func (c *Client) fetchTimedOut(ts *typeState, b *fetchBatch) {
	if _, ok := ts.batches[b]; !ok {
		return
	}
	delete(ts.batches, b)
	if len(ts.watchers) == 0 {
		return
	}
	var missing []string
	for _, n := range b.names {
		delete(ts.awaited, n)
		if ts.names[n] && !ts.answered[n] {
			ts.timedOut[n] = true
			missing = append(missing, n)
		}
	}
	if b.wildcard {
		ts.awaitedWildcard = false
	}
	if len(missing) == 0 && !(b.wildcard && ts.wildcard && !ts.gotResponse) {
		return
	}
	if ts.stats != nil {
		ts.stats.initFetchTimeout.Inc()
	}
	c.log.Warn("xds: initial fetch timeout", "type", ts.url, "missing", missing)
	ts.notify(Update{InitialFetchTimeout: true, Missing: missing})
}

// expire removes a resource whose TTL ran out and tells the watchers.
func (c *Client) expire(ts *typeState, name string, ce *cacheEntry) {
	if ts.cache[name] != ce {
		return
	}
	ts.drop(name)
	c.log.Info("xds: resource TTL expired", "type", ts.url, "name", name)
	ts.notify(Update{Removed: []string{name}})
}

// setTTL (re)arms or clears the TTL timer of a cached resource.
func (c *Client) setTTL(ts *typeState, name string, ce *cacheEntry, ttl time.Duration) {
	if ce.ttl != nil {
		ce.ttl.Stop()
		ce.ttl = nil
	}
	if ttl > 0 {
		ce.ttl = time.AfterFunc(ttl, func() { c.enqueue(func() { c.expire(ts, name, ce) }) })
	}
}
