package server

import (
	"slices"
	"time"

	"github.com/outrider-proxy/outrider/proxy/listener"
)

// replaceInPlace puts l, built by listener.BuildInPlace from the active
// listener old, in service in old's place (Envoy's
// ListenerManagerImpl::inPlaceFilterChainUpdate): l takes over old's socket
// and the connections on the filter chains they share, which go on
// untouched; old keeps the connections on its removed or changed chains,
// which drain for the drain time and are then closed. old is not a draining
// listener for the admin or total_listeners_draining; its chains count in
// listener_manager.total_filter_chains_draining while they drain.
func (s *Server) replaceInPlace(l, old *listener.Listener) {
	s.listenersMu.Lock()
	if i := slices.Index(s.listeners, old); i >= 0 {
		s.listeners[i] = l
	} else {
		s.listeners = append(s.listeners, l)
	}
	s.chainDraining = append(s.chainDraining, old)
	s.handoff.Set(s.listeners)
	// Under listenersMu, so that a shutdown sees old's connections either
	// still on old or already on l.
	n := l.UpdateInPlace(old)
	s.listenersMu.Unlock()
	lm := s.stats.Scope("listener_manager")
	lm.Counter("listener_modified").Inc()
	chains := lm.Gauge("total_filter_chains_draining")
	chains.Add(int64(n))
	go func() {
		deadline := time.Now().Add(s.drainTime())
		for old.ActiveConns() > 0 && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
		}
		old.CloseAll()
		old.Close()
		s.listenersMu.Lock()
		s.chainDraining = slices.DeleteFunc(s.chainDraining, func(x *listener.Listener) bool { return x == old })
		s.listenersMu.Unlock()
		chains.Add(-int64(n))
	}()
}
