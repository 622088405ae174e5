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
	nc.start(m.Endpoints)
	return nc, nil
}

// Activate installs a cluster returned by Stage, replacing (and draining)
// the cluster of the same name. It reports false, and drains nc, when the
// manager is closed or nc was discarded.
func (m *Manager) Activate(nc *Cluster) bool {
	m.mu.Lock()
	if m.closed || nc.Draining() {
		m.mu.Unlock()
		nc.drain()
		return false
	}
	old := m.install(nc)
	m.mu.Unlock()
	if old != nil {
		nc.Stats.ConfigReload.Inc()
		old.drain()
	}
	return true
}

// Discard drops a staged cluster that will not be activated: its discovery
// stops and its connections close. Discarding an active cluster does
// nothing; use Remove.
func (m *Manager) Discard(nc *Cluster) {
	if nc == nil || m.Get(nc.Name) == nc {
		return
	}
	nc.drain()
}
