package upstream

// close_connections_on_host_set_change (common_lb_config): when an update
// adds or removes hosts, every pooled connection of the cluster drains, as
// Envoy's drainConnPools with DrainExistingConnections: idle connections
// close at once, busy ones when their request or last stream ends, and new
// requests get new connections. setHosts calls drainConns on every host it
// keeps; the removed ones drain anyway.

// drainConns drains the connection pools of h that exist.
func (h *Host) drainConns() {
	r := h.rt.Load()
	if r == nil {
		return // no request has made a pool yet
	}
	if p := r.pool.Load(); p != nil {
		p.DrainConns()
	}
	if p := r.h2pool.Load(); p != nil {
		p.DrainConns()
	}
	if e := h.ext.Load(); e != nil {
		e.sni.h1.Range(func(_, v any) bool {
			v.(*Pool).DrainConns()
			return true
		})
		e.sni.h2.Range(func(_, v any) bool {
			v.(*H2Pool).DrainConns()
			return true
		})
	}
}

// DrainConns closes the idle connections and keeps those in use from going
// back to the idle list; the pool stays open for new connections.
func (p *Pool) DrainConns() {
	p.mu.Lock()
	p.drains++
	idle := p.takeIdleLocked()
	p.mu.Unlock()
	for _, pc := range idle {
		pc.destroy()
	}
}

// DrainConns stops new streams on the pool's current connections (idle ones
// close now, the others when their streams end); later streams dial anew.
func (p *H2Pool) DrainConns() {
	p.mu.Lock()
	for _, hc := range p.conns {
		hc.full = true
	}
	p.mu.Unlock()
	p.sweep()
}
