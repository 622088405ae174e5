// Package upstream compiles Envoy v3 Cluster protos into live clusters that
// choose hosts (with Envoy's load balancers, active health checks, outlier
// detection and circuit breakers) and pool upstream TCP connections, with
// Envoy's semantics and stat names. Readers (ChooseHost, Get, Pool, the
// Report* calls) never lock a shared mutex on their common path; updates
// (AddOrUpdate, DNS refresh, EDS, health changes) swap immutable snapshots.
package upstream

import (
	"context"
	"fmt"
	"net"
	"slices"
	"sort"
	"sync"
	"sync/atomic"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"

	"github.com/outrider-proxy/outrider/proxy/transport"
	"github.com/outrider-proxy/outrider/telemetry/stats"
)

// Manager owns every cluster. Get is lock-free: it reads an immutable map
// published through an atomic pointer; writers serialize on a mutex.
type Manager struct {
	// Resolver resolves STRICT_DNS and LOGICAL_DNS names; nil means
	// net.DefaultResolver. Set it before the first AddOrUpdate.
	Resolver Resolver
	// Endpoints feeds EDS clusters; nil leaves them empty (see EndpointSource).
	Endpoints EndpointSource
	// Secrets resolves secret names for transport sockets (the TLS
	// package's SecretProvider); nil when there are none.
	Secrets any
	// LocalClusterName is the bootstrap's cluster_manager.local_cluster_name:
	// the cluster of this proxy's own fleet, used for zone aware routing.
	// Empty disables zone aware routing. Set it before the first AddOrUpdate.
	LocalClusterName string
	// LocalLocality is the node's locality (node.locality), the "local
	// zone" of zone aware routing; nil when the node has none. Set it
	// before the first AddOrUpdate.
	LocalLocality *corev3.Locality
	// Node is this proxy's node, for clients of a cluster that identify the proxy (the gRPC access log
	// service's first message); nil when unknown.
	Node *corev3.Node

	scope    stats.Scope
	mu       sync.Mutex
	clusters atomic.Pointer[map[string]*Cluster]
	closed   bool
}

// NewManager returns an empty manager whose cluster stats live under
// "cluster.<name>." in scope (normally the store's root scope).
func NewManager(scope stats.Scope) *Manager {
	m := &Manager{scope: scope}
	empty := map[string]*Cluster{}
	m.clusters.Store(&empty)
	return m
}

// compileTransport builds a cluster's transport socket (TLS) from the
// transport registry; raw_buffer gives nil.
func (m *Manager) compileTransport(ts *corev3.TransportSocket, c *Cluster) (transport.Upstream, error) {
	f, err := transport.Registry.Lookup(ts.GetName(), ts.GetTypedConfig().GetTypeUrl())
	if err != nil {
		return nil, err
	}
	if f.Upstream == nil {
		return nil, fmt.Errorf("%q cannot originate upstream connections", ts.GetName())
	}
	return f.Upstream(&transport.Context{Stats: m.scope.Store(), Scope: c.Stats.Scope(), Secrets: m.Secrets}, ts.GetTypedConfig())
}

// AddOrUpdate compiles c and installs it, atomically replacing a cluster of
// the same name, which is then drained: discovery stops, idle connections
// close, and connections in use close when released. On error nothing
// changes; the error names the cluster and the field.
func (m *Manager) AddOrUpdate(c *clusterv3.Cluster) error {
	nc, err := m.build(c)
	if err != nil {
		return err
	}
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		nc.drain()
		return nil
	}
	nc.setPredecessor(m.Get(nc.Name))
	nc.start(m.Endpoints)
	old := m.install(nc)
	m.mu.Unlock()
	if old != nil {
		nc.Stats.ConfigReload().Inc()
		nc.adoptConns(old)
		old.drain()
	}
	nc.setPredecessor(nil)
	return nil
}

// build compiles c with the manager's resolver, zone-aware hooks and
// transport socket, without starting or installing it.
func (m *Manager) build(c *clusterv3.Cluster) (*Cluster, error) {
	var res Resolver = net.DefaultResolver
	if m.Resolver != nil {
		res = m.Resolver
	}
	nc, err := compile(c, m.scope, res)
	if err != nil {
		return nil, err
	}
	if m.LocalClusterName != "" {
		name := m.LocalClusterName
		nc.policy.loc.localSet = func() *prioritySet {
			if lc := m.Get(name); lc != nil {
				return lc.set.Load()
			}
			return nil
		}
	}
	if m.LocalLocality != nil {
		nc.policy.loc.node, nc.policy.loc.hasNode = keyOf(m.LocalLocality), true
	}
	if ts := c.GetTransportSocket(); ts != nil {
		if nc.transport, err = m.compileTransport(ts, nc); err != nil {
			nc.drain()
			return nil, fmt.Errorf("cluster %q: transport_socket: %w", c.GetName(), err)
		}
	}
	if err := m.compileSocketMatches(c, nc); err != nil {
		nc.drain()
		return nil, fmt.Errorf("cluster %q: %w", c.GetName(), err)
	}
	return nc, nil
}

// install publishes nc under its name and returns the cluster it replaced,
// nil if none. The caller holds m.mu.
func (m *Manager) install(nc *Cluster) (old *Cluster) {
	cur := *m.clusters.Load()
	next := make(map[string]*Cluster, len(cur)+1)
	for k, v := range cur {
		next[k] = v
	}
	old = cur[nc.Name]
	next[nc.Name] = nc
	m.clusters.Store(&next)
	return old
}

// start begins discovery of a freshly compiled cluster.
func (c *Cluster) start(src EndpointSource) {
	if c.outlier != nil {
		c.outlier.start()
	}
	switch c.Type {
	case clusterv3.Cluster_STATIC:
		hosts := make([]*Host, 0, len(c.x.specs))
		for i := range c.x.specs {
			a, _ := c.x.specs[i].staticAddr()
			hosts = append(hosts, c.x.specs[i].host(c, a, ""))
		}
		c.setHosts(hosts)
		c.publishIfEmpty()
		c.markInitialized()
	case clusterv3.Cluster_STRICT_DNS, clusterv3.Cluster_LOGICAL_DNS:
		c.publishIfEmpty()
		c.startDNS()
	case clusterv3.Cluster_EDS:
		c.publishIfEmpty()
		c.startEDS(src)
	case clusterv3.Cluster_ORIGINAL_DST:
		c.publishIfEmpty()
		c.markInitialized()
		c.x.origDst.start()
	}
}

// publishIfEmpty sets the membership gauges of a cluster that has no hosts
// yet (setHosts does not publish an unchanged empty set).
func (c *Cluster) publishIfEmpty() {
	c.hostMu.Lock()
	defer c.hostMu.Unlock()
	if len(c.set.Load().all) == 0 {
		c.publish(nil)
	}
}

// Remove drains and forgets the named cluster; absent names are ignored.
func (m *Manager) Remove(name string) {
	m.mu.Lock()
	cur := *m.clusters.Load()
	old := cur[name]
	if old == nil {
		m.mu.Unlock()
		return
	}
	next := make(map[string]*Cluster, len(cur))
	for k, v := range cur {
		if k != name {
			next[k] = v
		}
	}
	m.clusters.Store(&next)
	m.mu.Unlock()
	old.drain()
}

// Get is the named cluster, nil if absent. It never locks.
func (m *Manager) Get(name string) *Cluster { return (*m.clusters.Load())[name] }

// Names are the cluster names, sorted.
func (m *Manager) Names() []string {
	cur := *m.clusters.Load()
	out := make([]string, 0, len(cur))
	for k := range cur {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// All are the clusters sorted by name, for /clusters and config_dump.
func (m *Manager) All() []*Cluster {
	cur := *m.clusters.Load()
	out := make([]*Cluster, 0, len(cur))
	for _, c := range cur {
		out = append(out, c)
	}
	slices.SortFunc(out, func(a, b *Cluster) int {
		if a.Name < b.Name {
			return -1
		}
		if a.Name > b.Name {
			return 1
		}
		return 0
	})
	return out
}

// WaitInitialized blocks until every current cluster is initialized (see
// Cluster.Initialized) or ctx ends, like Envoy's cluster warming at start-up.
func (m *Manager) WaitInitialized(ctx context.Context) error {
	for _, c := range m.All() {
		select {
		case <-c.Initialized():
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// Close drains every cluster: DNS refresh goroutines stop and idle
// connections close. Later AddOrUpdate calls are ignored.
func (m *Manager) Close() {
	m.mu.Lock()
	m.closed = true
	cur := *m.clusters.Load()
	m.mu.Unlock()
	for _, c := range cur {
		c.drain()
	}
}
