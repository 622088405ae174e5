package hcm

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"

	"github.com/outrider-proxy/outrider/proxy/h2"
	"github.com/outrider-proxy/outrider/proxy/headers"
	"github.com/outrider-proxy/outrider/proxy/http1"
	"github.com/outrider-proxy/outrider/proxy/netfilter"
)

// h2Preface is the HTTP/2 client connection preface (RFC 9113 section 3.4).
const h2Preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

// errH2Preface stops the HTTP/1 decoder when a connection turns out to be
// HTTP/2 (codec_type AUTO).
var errH2Preface = errors.New("hcm: HTTP/2 connection preface")

// idleGrace is how long after its last stream an HTTP/2 connection becomes
// idle for the listener's drain: x/net writes a stream's last frame after
// the handler returns, and closing the connection must not cut it.
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

// h2Conn is one downstream HTTP/2 connection. x/net runs each stream's
// handler (ServeHTTP) on its own goroutine; h2Conn counts them so that the
// listener sees the connection idle only when no stream is open.
type h2Conn struct {
	cfg     *Config
	nc      *netfilter.Conn
	served  atomic.Uint32 // streams started, for max_requests_per_connection
	expired atomic.Bool   // max_connection_duration reached
	drained atomic.Bool   // a GOAWAY was started for the drain

	closedStreams   atomic.Uint64 // streams finished, for the premature-reset defense
	prematureResets atomic.Uint64 // of which the client reset early
	abusive         atomic.Bool   // closed by the premature-reset defense

	// Two-step GOAWAY (goaway.go): fc writes the frames, drainTimer fires
	// the real GOAWAY (nil: not draining), goneAway is set once it went.
	fc         *frameConn
	own        *h2.Conn // the own codec's connection (h2own.go); nil on x/net
	drainTimer *time.Timer
	goneAway   atomic.Bool

	mu     sync.Mutex
	active int    // open streams
	gen    uint64 // bumped by each stream start, so a stale idle timer does nothing
	done   bool   // ServeConn returned
}

// serveH2 serves HTTP/2 on c (nc's connection, or one replaying read-ahead bytes) until the
// client goes away, a GOAWAY completes, or a timeout.
func (cfg *Config) serveH2(nc *netfilter.Conn, c net.Conn) {
	if cfg.h2.own {
		cfg.serveOwnH2(nc, c)
		return
	}
	st := cfg.stats
	st.cxHTTP2Total.Inc()
	st.cxHTTP2Active.Inc()
	defer st.cxHTTP2Active.Dec()
	_ = c.SetDeadline(time.Time{})
	hc := &h2Conn{cfg: cfg, nc: nc, fc: newFrameConn(c, cfg.h2.lim, cfg.stats.flood)}
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
	cfg.h2.srv.ServeConn(hc.fc, &http2.ServeConnOpts{BaseConfig: cfg.h2.base, Handler: hc})
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
// graceful GOAWAY (x/net does so for "connection: close"): the connection's
// max duration, or its max_requests_per_connection. The drain starts the
// two-step GOAWAY instead (startDrain).
func (hc *h2Conn) goAway() bool {
	cfg := hc.cfg
	if cfg.drain != nil && cfg.drain.ShouldClose() {
		hc.startDrain()
		return false
	}
	return hc.expired.Load() || (cfg.maxRequestsPerConn > 0 && hc.served.Load() >= cfg.maxRequestsPerConn)
}

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

// h2Stream is one HTTP/2 stream: the connection manager's stream plus its
// downstream codec, x/net's ResponseWriter and Request. Pooled per Config.
type h2Stream struct {
	stream
	hc    *h2Conn
	w     http.ResponseWriter
	r     *http.Request
	buf   []byte
	armed time.Time // the read deadline in force; zero when none
	wrote bool      // response headers were handed to x/net

	// The stream_idle_timeout of response writes (armWrite): wtimer fires
	// at writeBy (zero: no write armed); wmu guards them and w against the
	// timer's goroutine.
	wmu     sync.Mutex
	wtimer  *time.Timer
	writeBy time.Time
	wArmed  bool

	// names interns response field names (h2 keys) across the streams
	// that use this object; vbuf collects a response's field values.
	names  map[string]string
	tnames map[string]string // trailer name → x/net's "Trailer:" key
	vbuf   []byte
}

// ServeHTTP runs one HTTP/2 stream through the filter chain on x/net's
// handler goroutine.
func (hc *h2Conn) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	cfg, st := hc.cfg, hc.cfg.stats
	if r.Context().Err() != nil || hc.abusive.Load() {
		// Reset before its handler ran, or on a connection closed for
		// premature resets: the stream costs no filter and no upstream.
		st.rqRxReset.Inc()
		hc.streamClosed(true)
		return
	}
	hs, _ := cfg.h2pool.Get().(*h2Stream)
	if hs == nil {
		hs = &h2Stream{buf: make([]byte, 16<<10)}
		hs.stream.init(cfg, hc.nc, hs)
		hs.h2 = true
	}
	hs.wmu.Lock()
	hs.hc, hs.w, hs.r, hs.nc = hc, w, r, hc.nc
	hs.wmu.Unlock()
	hc.enter()
	hc.served.Add(1)
	start := time.Now()
	s := &hs.stream
	s.req.Reset()
	hs.readRequest(r)
	s.msg = http1.Message{Major: 2, KeepAlive: true, ContentLength: r.ContentLength, NoBody: r.ContentLength == 0}
	s.begin(start)
	if cfg.requestTimeout > 0 {
		s.requestDeadline = start.Add(cfg.requestTimeout)
	}
	st.rqHTTP2Total.Inc()
	s.info.Protocol = "HTTP/2"
	s.run()
	s.finish(start)
	hc.streamClosed(r.Context().Err() != nil && time.Since(start) < prematureResetMinLifetime)
	reset := s.reset
	hs.endWrites()
	hs.hc, hs.r, hs.armed, hs.wrote = nil, nil, time.Time{}, false
	s.req.Reset()
	cfg.h2pool.Put(hs)
	hc.leave()
	if reset {
		panic(http.ErrAbortHandler) // x/net resets the stream (RST_STREAM)
	}
}

// readRequest fills s.req from x/net's request: the pseudo-headers, then
// the fields with lower-case names. Host is :authority; the cookie fields
// HTTP/2 splits are joined with "; " as Envoy does for HTTP/1 upstreams.
func (hs *h2Stream) readRequest(r *http.Request) {
	h := &hs.req
	h.Add(headers.Method, r.Method)
	if r.Method != http.MethodConnect {
		h.Add(headers.Path, r.RequestURI)
	}
	if r.Host != "" {
		h.Add(headers.Authority, r.Host)
	}
	if r.TLS != nil {
		h.Add(headers.Scheme, "https")
	} else {
		h.Add(headers.Scheme, "http")
	}
	for k, vv := range r.Header {
		switch {
		case k == "Host" || strings.HasPrefix(k, ":"):
			continue
		case k == "Cookie" && len(vv) > 1:
			h.Add("cookie", strings.Join(vv, "; "))
			continue
		case k == "Expect" && len(vv) == 1 && strings.EqualFold(vv[0], "100-continue"):
			continue // x/net answers it when the body is first read
		}
		for _, v := range vv {
			h.Add(k, v)
		}
	}
	// x/net moves the trailer declaration into r.Trailer: restore it, so
	// the upstream learns of the trailers as the client declared them.
	if len(r.Trailer) > 0 {
		names := make([]string, 0, len(r.Trailer))
		for k := range r.Trailer {
			names = append(names, strings.ToLower(k))
		}
		h.Add("trailer", strings.Join(names, ", "))
	}
}

var errH2Status = errors.New("hcm: response status not valid for HTTP/2")

// HTTP/2 implementation of downstream.

func (hs *h2Stream) writeHeaders(h *headers.Map, end bool) error {
	status := h.StatusCode()
	if status < 200 || status > 999 {
		return errH2Status
	}
	hdr := hs.w.Header()
	hs.toHeader(hdr, h)
	if _, ok := hdr["Content-Type"]; !ok {
		hdr["Content-Type"] = nil // no sniffing: Envoy adds no content-type
	}
	if hs.hc.goAway() {
		hdr["Connection"] = []string{"close"}
	}
	hs.armWrite()
	hs.w.WriteHeader(status)
	hs.wrote = true
	if end {
		return nil // the handler's return sends HEADERS with END_STREAM
	}
	return hs.flush()
}

// toHeader adds h's regular fields to hdr with three allocations in all
// rather than two per field: the values share one string and the
// single-value slices one array, and names come interned (h2Key).
func (hs *h2Stream) toHeader(hdr http.Header, h *headers.Map) {
	fields := h.Fields()
	vb, n := hs.vbuf[:0], 0
	for _, f := range fields {
		if len(f.Name) > 0 && f.Name[0] != ':' {
			vb = append(vb, f.Value...)
			n++
		}
	}
	hs.vbuf = vb
	if n == 0 {
		return
	}
	all := string(vb)
	vals := make([]string, n)
	off, i := 0, 0
	for _, f := range fields {
		if len(f.Name) == 0 || f.Name[0] == ':' {
			continue
		}
		v := all[off : off+len(f.Value)]
		off += len(f.Value)
		k := hs.h2Key(f.Name)
		if k == "" {
			continue
		}
		if old, ok := hdr[k]; ok {
			hdr[k] = append(old, v) // a repeated field (set-cookie)
			continue
		}
		vals[i] = v
		hdr[k] = vals[i : i+1 : i+1]
		i++
	}
}

// maxInterned bounds the names a pooled stream interns.
const maxInterned = 64

// h2Key is h2ResponseKey, with the lower-case names interned per pooled
// stream so that a known name costs no allocation.
func (hs *h2Stream) h2Key(name []byte) string {
	if k, ok := hs.names[string(name)]; ok {
		return k
	}
	k := h2ResponseKey(name)
	if k != "" && len(hs.names) < maxInterned {
		if hs.names == nil {
			hs.names = make(map[string]string)
		}
		lower := k
		if lower != string(name) {
			lower = string(name)
		}
		hs.names[lower] = k
	}
	return k
}

// h2ResponseKey is the http.Header key for a response field: canonical for
// the fields x/net looks at, the lower-case name otherwise (x/net writes
// names lower-case), "" for connection-specific fields, which HTTP/2 forbids.
func h2ResponseKey(name []byte) string {
	switch string(name) {
	case "connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade":
		return ""
	case "content-length":
		return "Content-Length"
	case "content-type":
		return "Content-Type"
	case "content-encoding":
		return "Content-Encoding"
	case "date":
		return "Date"
	case "trailer":
		return "Trailer"
	}
	return string(name)
}

func (hs *h2Stream) writeData(p []byte, end bool) error {
	hs.armWrite()
	if len(p) > 0 {
		if _, err := hs.w.Write(p); err != nil {
			return err
		}
	}
	if end {
		return nil // the handler's return sends END_STREAM
	}
	return hs.flush()
}

func (hs *h2Stream) writeTrailers(t *headers.Map) error {
	hdr := hs.w.Header()
	for _, f := range t.Fields() {
		k, ok := hs.tnames[string(f.Name)]
		if !ok {
			k = http.TrailerPrefix + string(f.Name)
			if len(hs.tnames) < maxInterned {
				if hs.tnames == nil {
					hs.tnames = make(map[string]string)
				}
				hs.tnames[string(f.Name)] = k
			}
		}
		hdr[k] = append(hdr[k], string(f.Value))
	}
	return nil // sent when the handler returns
}

type flushErrorer interface{ FlushError() error }

func (hs *h2Stream) flush() error {
	if !hs.wrote {
		return nil // flushing would commit a 200
	}
	if f, ok := hs.w.(flushErrorer); ok {
		return f.FlushError()
	}
	if f, ok := hs.w.(http.Flusher); ok {
		f.Flush()
	}
	return nil
}

// write100Continue does nothing: x/net sends 100 Continue when the body is
// first read.
func (hs *h2Stream) write100Continue() error { return nil }

type readDeadliner interface{ SetReadDeadline(time.Time) error }

func (hs *h2Stream) readData(idle time.Duration, hard time.Time) ([]byte, bool, error) {
	d := hard
	if idle > 0 {
		if t := time.Now().Add(idle); d.IsZero() || t.Before(d) {
			d = t
		}
	}
	if d != hs.armed {
		if rd, ok := hs.w.(readDeadliner); ok {
			_ = rd.SetReadDeadline(d)
		}
		hs.armed = d
	}
	for range 100 {
		n, err := hs.r.Body.Read(hs.buf)
		if n > 0 {
			return hs.buf[:n], false, nil // an io.EOF comes again on the next read
		}
		if err != nil {
			if hs.tunnelEOF.Load() {
				return nil, false, io.EOF // the upstream ended the tunnel (h2Tunnel.CloseWrite)
			}
			return nil, !hard.IsZero() && !time.Now().Before(hard), err
		}
	}
	return nil, false, io.ErrNoProgress
}

// readTrailers adds the request trailers. x/net keeps only those the
// request declared in its Trailer header.
func (hs *h2Stream) readTrailers(h *headers.Map) {
	for k, vv := range hs.r.Trailer {
		for _, v := range vv {
			h.Add(k, v)
		}
	}
}

// bodyRead is false: x/net reports the end only with END_STREAM.
func (hs *h2Stream) bodyRead() bool { return false }

// interrupt makes a blocked body read fail with a deadline error (x/net
// closes the body for good: the stream is over).
func (hs *h2Stream) interrupt() {
	if rd, ok := hs.w.(readDeadliner); ok {
		_ = rd.SetReadDeadline(time.Now())
	}
}

// context is the request's: x/net cancels it when the client resets the
// stream or the connection goes.
func (hs *h2Stream) context() context.Context { return hs.r.Context() }
