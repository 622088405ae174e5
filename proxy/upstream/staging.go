package upstream

import (
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
)

// Stage compiles c and starts its discovery (DNS, EDS, health checks)
// without installing it: Get keeps returning the cluster of that name that
// was there before, if any, so a changed cluster keeps serving with its old
// configuration while the new one warms, and a new cluster is not routable
// until it is warm, as Envoy's cluster warming does. The caller installs the
// staged cluster with Activate once it is Initialized (or its warming
// timeout passes), or drops it with Discard. On error nothing changes; the
// error names the cluster and the field.
func (m *Manager) Stage(c *clusterv3.Cluster) (*Cluster, error) {
	nc, err := m.build(c)
	if err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		nc.drain()
		return nil, nil
	}
	nc.setPredecessor(m.Get(nc.Name))
	nc.start(m.Endpoints)
	return nc, nil
}

// Activate installs a cluster returned by Stage, replacing (and draining)
// the cluster of the same name. It reports false, and drains nc, when the
// manager is closed or nc was discarded.
func (m *Manager) Activate(nc *Cluster) bool { return m.ActivateAll([]*Cluster{nc}) == 1 }

// ActivateAll is Activate for many clusters at once, publishing one new
// cluster map for all of them (installing 10,000 clusters one by one would
// copy the map 10,000 times). It returns how many were installed.
func (m *Manager) ActivateAll(ncs []*Cluster) int {
	var olds, news, dropped []*Cluster
	m.mu.Lock()
	cur := *m.clusters.Load()
	next := make(map[string]*Cluster, len(cur)+len(ncs))
	for k, v := range cur {
		next[k] = v
	}
	for _, nc := range ncs {
		if m.closed || nc.Draining() {
			dropped = append(dropped, nc)
			continue
		}
		if old := next[nc.Name]; old != nil && old != nc {
			olds = append(olds, old)
			news = append(news, nc)
			nc.Stats.ConfigReload().Inc()
		}
		next[nc.Name] = nc
	}
	m.clusters.Store(&next)
	m.mu.Unlock()
	for _, c := range dropped {
		c.drain()
	}
	for i, c := range olds {
		news[i].adoptConns(c)
		c.drain()
	}
	for _, nc := range ncs {
		nc.setPredecessor(nil)
	}
	return len(ncs) - len(dropped)
}

// Len is the number of installed clusters.
func (m *Manager) Len() int { return len(*m.clusters.Load()) }

// Discard drops a staged cluster that will not be activated: its discovery
// stops and its connections close. Discarding an active cluster does
// nothing; use Remove.
func (m *Manager) Discard(nc *Cluster) {
	if nc == nil || m.Get(nc.Name) == nc {
		return
	}
	nc.drain()
}
