package hcm

import (
	"time"

	"golang.org/x/net/http2"
)

// Two-step GOAWAY, Envoy's drain sequence for HTTP/2: a first GOAWAY with
// the last stream id 2^31-1 (the shutdown notice: "stop opening streams
// soon", h2.Conn.GoAway), then, drain_timeout later, the real GOAWAY naming
// the last stream the proxy took (h2.Conn.GoAwayFinal); the connection
// closes once its streams are done. Streams the client opens between the
// two are served.

// goAwayAll starts the two-step GOAWAY on every HTTP/2 connection of the
// config (the drain): streams in flight and those opened before the real
// GOAWAY finish, later ones go to another connection. It does not block.
func (cfg *Config) goAwayAll() {
	cfg.h2mu.Lock()
	for hc := range cfg.h2conns {
		go hc.startDrain()
	}
	cfg.h2mu.Unlock()
}

// startDrain begins the two-step GOAWAY on hc, once: the shutdown notice
// now, the real GOAWAY after drain_timeout.
func (hc *h2Conn) startDrain() {
	if hc.drained.Swap(true) {
		return
	}
	hc.cfg.stats.cxDrainClose.Inc()
	hc.codec.GoAway()
	t := time.AfterFunc(hc.cfg.drainTimeout, hc.finalGoAway)
	hc.mu.Lock()
	hc.drainTimer = t
	hc.mu.Unlock()
}

// finalGoAway sends the real GOAWAY, naming the last stream the client
// opened, and closes the connection once no stream is open.
func (hc *h2Conn) finalGoAway() {
	hc.codec.GoAwayFinal(http2.ErrCodeNo, nil)
	hc.goneAway.Store(true)
	hc.mu.Lock()
	idle, done := hc.active == 0, hc.done
	hc.mu.Unlock()
	if idle && !done {
		// Give the client a moment to read the GOAWAY before the close.
		time.AfterFunc(idleGrace, func() {
			hc.mu.Lock()
			idle := hc.active == 0
			hc.mu.Unlock()
			if idle {
				_ = hc.nc.Close()
			}
		})
	}
}
