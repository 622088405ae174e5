package upstream

import "sync"

// healthClosers are the connections of one host to close when it turns
// unhealthy (close_connections_on_host_health_failure). The zero value is
// empty and usable.
type healthClosers struct {
	mu    sync.Mutex
	next  uint64
	funcs map[uint64]func() // nil until the first registration
}

// CloseOnHealthFailure registers closeFn to run once if h turns unhealthy
// (it fails active health checking or outlier detection ejects it) while
// registered, when its cluster sets close_connections_on_host_health_failure;
// cancel unregisters. Without that field it registers nothing. Envoy honours
// the field for tcp_proxy connections only, and so does the caller here.
func (h *Host) CloseOnHealthFailure(closeFn func()) (cancel func()) {
	if h.cluster == nil || !h.cluster.closeOnHealthFailure {
		return func() {}
	}
	hc := &h.extras().closers
	hc.mu.Lock()
	if hc.funcs == nil {
		hc.funcs = make(map[uint64]func())
	}
	id := hc.next
	hc.next++
	hc.funcs[id] = closeFn
	hc.mu.Unlock()
	return func() {
		hc.mu.Lock()
		delete(hc.funcs, id)
		hc.mu.Unlock()
	}
}

// closeOnUnhealthy runs and forgets the registered closers; health checking
// and outlier detection call it when the host turns unhealthy.
func (h *Host) closeOnUnhealthy() {
	e := h.ext.Load()
	if e == nil {
		return
	}
	hc := &e.closers
	hc.mu.Lock()
	funcs := hc.funcs
	hc.funcs = nil
	hc.mu.Unlock()
	for _, fn := range funcs {
		fn()
	}
}
