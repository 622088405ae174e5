package hcm

import (
	"context"
	"io"
	"net"
	"os"
	"strconv"
	"time"

	"golang.org/x/net/http2"

	"github.com/outrider-proxy/outrider/proxy/h2"
	"github.com/outrider-proxy/outrider/proxy/headers"
	"github.com/outrider-proxy/outrider/proxy/http1"
	"github.com/outrider-proxy/outrider/proxy/netfilter"
)

// The connection manager over outrider's own HTTP/2 server codec
// (proxy/h2), the default; OUTRIDER_H2_CODEC=xnet, read when a Config is
// compiled, selects x/net's server instead. Flood limits, the two-step
// GOAWAY, max_requests_per_connection, max_connection_duration and the
// premature-reset defense are shared with the x/net path (h2Conn).

// ownH2Codec reports whether the own codec serves (OUTRIDER_H2_CODEC is
// not "xnet").
func ownH2Codec() bool { return os.Getenv("OUTRIDER_H2_CODEC") != "xnet" }

// ownConfig maps the x/net server the Config compiled onto the own codec.
func (cfg *Config) ownConfig() *h2.ServerConfig {
	s := cfg.h2.srv
	return &h2.ServerConfig{
		MaxConcurrentStreams:    s.MaxConcurrentStreams,
		InitialStreamWindowSize: uint32(max(s.MaxUploadBufferPerStream, 0)),
		InitialConnWindowSize:   uint32(max(s.MaxUploadBufferPerConnection, 0)),
		MaxFrameSize:            s.MaxReadFrameSize,
		MaxHeaderListSize:       uint32(max(cfg.h2.base.MaxHeaderBytes, 0)),
		HeaderTableSize:         s.MaxDecoderHeaderTableSize,
		AllowExtendedConnect:    true, // refused with 400 by checkUpgrade unless allow_connect, as on x/net
		IdleTimeout:             cfg.idleTimeout,
		PingInterval:            s.ReadIdleTimeout,
		PingTimeout:             s.PingTimeout,
	}
}

// serveOwnH2 is serveH2 with the own codec.
func (cfg *Config) serveOwnH2(nc *netfilter.Conn, c net.Conn) {
	st := cfg.stats
	st.cxHTTP2Total.Inc()
	st.cxHTTP2Active.Inc()
	defer st.cxHTTP2Active.Dec()
	_ = c.SetDeadline(time.Time{})
	hc := &h2Conn{cfg: cfg, nc: nc, fc: newFrameConn(c, cfg.h2.lim, cfg.stats.flood)}
	hc.own = h2.NewConn(hc.fc, cfg.ownConfig(), hc)
	cfg.trackH2(hc, true)
	defer cfg.trackH2(hc, false)
	if cfg.drain != nil && cfg.drain.Draining() {
		go hc.startDrain()
	}
	if cfg.maxConnDuration > 0 {
		t := time.AfterFunc(time.Until(nc.Info.StartTime.Add(cfg.maxConnDuration)), hc.expire)
		defer t.Stop()
	}
	hc.setIdle(true)
	_ = hc.own.Serve()
	_ = hc.fc.Close()
	hc.mu.Lock()
	hc.done = true
	if hc.drainTimer != nil {
		hc.drainTimer.Stop()
	}
	hc.mu.Unlock()
}

// ownStream is one stream over the own codec: the connection manager's
// stream and its downstream side. Pooled per Config.
type ownStream struct {
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
	o, _ := cfg.h2.ownPool.Get().(*ownStream)
	if o == nil {
		o = &ownStream{}
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
		// As on x/net: Host stands for a missing :authority, and goes.
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
	cfg.h2.ownPool.Put(o)
	hc.leave()
}

// downstream over the own codec.

func (o *ownStream) writeHeaders(h *headers.Map, end bool) error {
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
		// As x/net does for "connection: close": GOAWAY naming the last
		// stream taken; the connection closes once its streams are done.
		o.hc.own.GoAwayFinal(http2.ErrCodeNo, nil)
	}
	return nil
}

func (o *ownStream) writeData(p []byte, end bool) error {
	o.armWrite()
	return o.s.WriteData(p, end)
}

func (o *ownStream) writeTrailers(t *headers.Map) error {
	o.armWrite()
	return o.s.WriteTrailers(t)
}

func (o *ownStream) flush() error { return o.s.Flush() }

var continue100 = func() *headers.Map {
	var h headers.Map
	h.Set(headers.Status, "100")
	return &h
}()

func (o *ownStream) write100Continue() error { return o.s.WriteHeaders(continue100, false) }

// armWrite bounds the waits of response writes (a client that does not
// open its flow-control window) by stream_idle_timeout.
func (o *ownStream) armWrite() {
	if d := o.stream.cfg.streamIdleTimeout; d > 0 {
		o.s.SetWriteDeadline(time.Now().Add(d))
	}
}

func (o *ownStream) readData(idle time.Duration, hard time.Time) ([]byte, bool, error) {
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

func (o *ownStream) readTrailers(h *headers.Map) {
	for _, f := range o.s.Trailers().Fields() {
		h.AddBytes(string(f.Name), f.Value)
	}
}

func (o *ownStream) bodyRead() bool { return o.s.BodyEnded() }
func (o *ownStream) interrupt()     { o.s.Interrupt() }

func (o *ownStream) endTunnelRead() error {
	o.tunnelEOF.Store(true)
	o.s.Interrupt()
	return nil
}

// ownExtendedConnect turns an extended CONNECT (RFC 8441: :protocol) into
// the HTTP/1.1 Upgrade request it stands for, as checkUpgrade does for
// x/net's: 400 unless allow_connect.
func (s *stream) ownExtendedConnect(o *ownStream, h *headers.Map) *requestError {
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
// stream or the connection goes. Unlike x/net's request context it is not
// canceled when the stream ends normally.
func (o *ownStream) context() context.Context { return o.s.Context() }
