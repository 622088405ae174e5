package hcm

import (
	"context"
	"io"
	"strconv"
	"time"

	"golang.org/x/net/http2"

	"github.com/outrider-proxy/outrider/proxy/h2"
	"github.com/outrider-proxy/outrider/proxy/headers"
	"github.com/outrider-proxy/outrider/proxy/http1"
)

// The connection manager's HTTP/2 streams over outrider's own server codec
// (proxy/h2): each stream runs the filter chain on the codec's worker
// goroutine. The connection (flood limits, the two-step GOAWAY,
// max_requests_per_connection, max_connection_duration, the premature-reset
// defense) is h2Conn (h2.go).

// h2Stream is one HTTP/2 stream: the connection manager's stream and its
// downstream side, the codec's stream. Pooled per Config.
type h2Stream struct {
	stream
	hc *h2Conn
	s  *h2.Stream
}

// ServeStream runs one HTTP/2 stream through the filter chain on the
// codec's worker goroutine.
func (hc *h2Conn) ServeStream(h2s *h2.Stream) {
	cfg, st := hc.cfg, hc.cfg.stats
	if h2s.Err() != nil || hc.abusive.Load() {
		// Reset before its handler ran, or on a connection closed for
		// premature resets: the stream costs no filter and no upstream.
		st.rqRxReset.Inc()
		hc.streamClosed(true)
		h2s.Reset(http2.ErrCodeRefusedStream)
		return
	}
	o, _ := cfg.h2pool.Get().(*h2Stream)
	if o == nil {
		o = &h2Stream{}
		o.stream.init(cfg, hc.nc, o)
		o.h2 = true
	}
	o.hc, o.s = hc, h2s
	hc.enter()
	hc.served.Add(1)
	start := time.Now()
	s := &o.stream
	s.req.CopyFrom(h2s.Request())
	if host, ok := s.req.Get("host"); ok {
		// Host stands for a missing :authority (RFC 9113 8.3.1), and goes.
		if !s.req.Has(headers.Authority) {
			s.req.SetBytes(headers.Authority, host)
		}
		s.req.Del("host")
	}
	s.msg = http1.Message{Major: 2, KeepAlive: true, ContentLength: -1, NoBody: h2s.BodyEnded()}
	if v, ok := s.req.Get("content-length"); ok {
		if n, err := strconv.ParseInt(string(v), 10, 64); err == nil {
			s.msg.ContentLength = n
		}
	}
	if v, ok := s.req.Get("expect"); ok && headers.EqualFold(v, "100-continue") && !s.msg.NoBody {
		s.msg.Expect100 = true
	}
	s.begin(start)
	if cfg.requestTimeout > 0 {
		s.requestDeadline = start.Add(cfg.requestTimeout)
	}
	st.rqHTTP2Total.Inc()
	s.info.Protocol = "HTTP/2"
	s.run()
	s.finish(start)
	se, _ := h2s.Err().(*h2.StreamError) // a type assertion: errors.As would allocate
	clientReset := se != nil && se.Remote
	hc.streamClosed(clientReset && time.Since(start) < prematureResetMinLifetime)
	if s.reset {
		h2s.Reset(http2.ErrCodeInternal)
	}
	o.hc, o.s = nil, nil
	s.req.Reset()
	cfg.h2pool.Put(o)
	hc.leave()
}

// HTTP/2 implementation of downstream.

func (o *h2Stream) writeHeaders(h *headers.Map, end bool) error {
	status := h.StatusCode()
	if status < 200 || status > 999 {
		return errH2Status
	}
	goAway := o.hc.goAway()
	o.armWrite()
	if err := o.s.WriteHeaders(h, end); err != nil {
		return err
	}
	if goAway {
		// HTTP/2's "connection: close": GOAWAY naming the last stream
		// taken; the connection closes once its streams are done.
		o.hc.codec.GoAwayFinal(http2.ErrCodeNo, nil)
	}
	return nil
}

func (o *h2Stream) writeData(p []byte, end bool) error {
	o.armWrite()
	return o.s.WriteData(p, end)
}

func (o *h2Stream) writeTrailers(t *headers.Map) error {
	o.armWrite()
	return o.s.WriteTrailers(t)
}

func (o *h2Stream) flush() error { return o.s.Flush() }

func (o *h2Stream) bodyBuffered() (int, bool) { return o.s.BodyBuffered() }

var continue100 = func() *headers.Map {
	var h headers.Map
	h.Set(headers.Status, "100")
	return &h
}()

func (o *h2Stream) write100Continue() error { return o.s.WriteHeaders(continue100, false) }

// armWrite bounds the waits of response writes (a client that does not
// open its flow-control window) by stream_idle_timeout.
func (o *h2Stream) armWrite() {
	if d := o.stream.cfg.streamIdleTimeout; d > 0 {
		o.s.SetWriteDeadline(time.Now().Add(d))
	}
}

func (o *h2Stream) readData(idle time.Duration, hard time.Time) ([]byte, bool, error) {
	d := hard
	if idle > 0 {
		if t := time.Now().Add(idle); d.IsZero() || t.Before(d) {
			d = t
		}
	}
	p, err := o.s.ReadData(d)
	if err != nil {
		if o.tunnelEOF.Load() {
			return nil, false, io.EOF // the upstream ended the tunnel
		}
		return nil, !hard.IsZero() && !time.Now().Before(hard), err
	}
	return p, false, nil
}

func (o *h2Stream) readTrailers(h *headers.Map) {
	for _, f := range o.s.Trailers().Fields() {
		h.AddBytes(string(f.Name), f.Value)
	}
}

func (o *h2Stream) bodyRead() bool { return o.s.BodyEnded() }
func (o *h2Stream) interrupt()     { o.s.Interrupt() }

// endTunnelRead makes the stream's next body read report the end (the
// upstream ended the tunnel).
func (o *h2Stream) endTunnelRead() error {
	o.tunnelEOF.Store(true)
	o.s.Interrupt()
	return nil
}

// extendedConnect turns an extended CONNECT (RFC 8441: :protocol) into
// the HTTP/1.1 Upgrade request it stands for: 400 unless allow_connect.
func (s *stream) extendedConnect(h *headers.Map) *requestError {
	m, _ := h.Get(headers.Method)
	p, ok := h.Get(headers.Protocol)
	if !ok || string(m) != "CONNECT" {
		return nil
	}
	if !s.cfg.allowConnect {
		return &requestError{400, "http2.extended_connect_not_allowed"}
	}
	proto := string(p)
	h.Del(headers.Protocol)
	h.Set(headers.Method, "GET")
	h.Set("upgrade", proto)
	h.Set("connection", "upgrade")
	s.msg.Upgrade = true
	s.extConnect = true
	return nil
}

// context is the codec's stream context: done when the client resets the
// stream or the connection goes, not when the stream ends normally.
func (o *h2Stream) context() context.Context { return o.s.Context() }
