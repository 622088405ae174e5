package hcm

import (
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/outrider-proxy/outrider/proxy/h2"
	"github.com/outrider-proxy/outrider/proxy/netfilter"
)

// h2Preface is the HTTP/2 client connection preface (RFC 9113 section 3.4).
const h2Preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

// errH2Preface stops the HTTP/1 decoder when a connection turns out to be
// HTTP/2 (codec_type AUTO).
var errH2Preface = errors.New("hcm: HTTP/2 connection preface")

// idleGrace is how long after its last stream an HTTP/2 connection becomes
// idle for the listener's drain: a stream's last frames may still be on
// their way to the socket, and closing the connection must not cut them.
const idleGrace = 50 * time.Millisecond

// sniffer sits between the connection and the HTTP/1 decoder when
// codec_type is AUTO. The first read decides: bytes that are not the HTTP/2
// preface pass through untouched from then on; the preface is kept, with
// whatever followed it, and the read fails with errH2Preface.
type sniffer struct {
	r     io.Reader
	state uint8 // 0 undecided, 1 HTTP/1, 2 HTTP/2
	saved []byte
}

func (s *sniffer) Read(p []byte) (int, error) {
	switch s.state {
	case 1:
		return s.r.Read(p)
	case 2:
		return 0, errH2Preface
	}
	n := 0
	for range 100 {
		m, err := s.r.Read(p[n:])
		n += m
		k := min(n, len(h2Preface))
		switch {
		case string(p[:k]) != h2Preface[:k]:
			s.state = 1
			return n, err
		case n >= len(h2Preface):
			s.state = 2
			s.saved = append([]byte(nil), p[:n]...)
			return 0, errH2Preface
		case err != nil || n == len(p):
			// A partial preface and then an error (or no room): the HTTP/1
			// decoder reports it as it always did.
			s.state = 1
			return n, err
		}
	}
	s.state = 1
	return n, io.ErrNoProgress
}

// h2Conn is one downstream HTTP/2 connection. The codec runs each stream's
// handler (ServeStream, h2stream.go) on a worker goroutine; h2Conn counts
// them so that the listener sees the connection idle only when no stream is
// open.
type h2Conn struct {
	cfg     *Config
	nc      *netfilter.Conn
	served  atomic.Uint32 // streams started, for max_requests_per_connection
	expired atomic.Bool   // max_connection_duration reached
	drained atomic.Bool   // a GOAWAY was started for the drain

	closedStreams   atomic.Uint64 // streams finished, for the premature-reset defense
	prematureResets atomic.Uint64 // of which the client reset early
	abusive         atomic.Bool   // closed by the premature-reset defense

	// fc is the socket side (flood limits, h2limits.go), codec the
	// connection over it; the two-step GOAWAY (goaway.go) goes through
	// codec, drainTimer fires the real GOAWAY (nil: not draining), goneAway
	// is set once it went.
	fc         *frameConn
	codec      *h2.Conn
	drainTimer *time.Timer
	goneAway   atomic.Bool

	mu     sync.Mutex
	active int    // open streams
	gen    uint64 // bumped by each stream start, so a stale idle timer does nothing
	done   bool   // Serve returned
}

// serveH2 serves HTTP/2 on c (nc's connection, or one replaying read-ahead bytes) until the
// client goes away, a GOAWAY completes, or a timeout.
func (cfg *Config) serveH2(nc *netfilter.Conn, c net.Conn) {
	st := cfg.stats
	st.cxHTTP2Total.Inc()
	st.cxHTTP2Active.Inc()
	defer st.cxHTTP2Active.Dec()
	_ = c.SetDeadline(time.Time{})
	hc := &h2Conn{cfg: cfg, nc: nc, fc: newFrameConn(c, cfg.h2.lim, cfg.stats.flood)}
	hc.codec = h2.NewConn(hc.fc, &cfg.h2.cfg, hc)
	cfg.trackH2(hc, true)
	defer cfg.trackH2(hc, false)
	if cfg.drain != nil && cfg.drain.Draining() {
		go hc.startDrain() // accepted as the drain started: goAwayAll may have missed it
	}
	if cfg.maxConnDuration > 0 {
		t := time.AfterFunc(time.Until(nc.Info.StartTime.Add(cfg.maxConnDuration)), hc.expire)
		defer t.Stop()
	}
	hc.setIdle(true)
	_ = hc.codec.Serve()
	_ = hc.fc.Close()
	hc.mu.Lock()
	hc.done = true
	if hc.drainTimer != nil {
		hc.drainTimer.Stop()
	}
	hc.mu.Unlock()
}

// trackH2 adds or removes a live HTTP/2 connection, for the drain.
func (cfg *Config) trackH2(hc *h2Conn, add bool) {
	cfg.h2mu.Lock()
	defer cfg.h2mu.Unlock()
	if add {
		if cfg.h2conns == nil {
			cfg.h2conns = make(map[*h2Conn]struct{})
		}
		cfg.h2conns[hc] = struct{}{}
		return
	}
	delete(cfg.h2conns, hc)
}

func (hc *h2Conn) setIdle(idle bool) {
	if hc.nc.Idle != nil {
		hc.nc.Idle(idle)
	}
}

// expire is max_connection_duration: the next response asks for a GOAWAY,
// and an idle connection closes.
func (hc *h2Conn) expire() {
	hc.cfg.stats.cxMaxDurationReached.Inc()
	hc.expired.Store(true)
	hc.mu.Lock()
	idle := hc.active == 0
	hc.mu.Unlock()
	if idle {
		_ = hc.nc.Close()
	}
}

func (hc *h2Conn) enter() {
	hc.mu.Lock()
	hc.active++
	hc.gen++
	if hc.active == 1 {
		hc.setIdle(false)
	}
	hc.mu.Unlock()
}

func (hc *h2Conn) leave() {
	hc.mu.Lock()
	defer hc.mu.Unlock()
	hc.active--
	if hc.active > 0 {
		return
	}
	gen := hc.gen
	time.AfterFunc(idleGrace, func() {
		hc.mu.Lock()
		defer hc.mu.Unlock()
		if hc.active != 0 || hc.gen != gen || hc.done {
			return
		}
		hc.setIdle(true)
		if hc.expired.Load() || hc.goneAway.Load() {
			_ = hc.nc.Close()
		}
	})
}

// goAway reports whether this response should start the connection's
// graceful GOAWAY (HTTP/2's "connection: close"): the connection's max
// duration, or its max_requests_per_connection. The drain starts the
// two-step GOAWAY instead (startDrain).
func (hc *h2Conn) goAway() bool {
	cfg := hc.cfg
	if cfg.drain != nil && cfg.drain.ShouldClose() {
		hc.startDrain()
		return false
	}
	return hc.expired.Load() || (cfg.maxRequestsPerConn > 0 && hc.served.Load() >= cfg.maxRequestsPerConn)
}

var errH2Status = errors.New("hcm: response status not valid for HTTP/2")
