package hcm

import (
	"context"
	"errors"

	"io"
	"net"
	"net/http"
	"os"
	"time"

	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"

	accesslogdatav3 "github.com/envoyproxy/go-control-plane/envoy/data/accesslog/v3"
	"github.com/outrider-proxy/outrider/telemetry/formatter"

	"github.com/outrider-proxy/outrider/proxy/headers"
	"github.com/outrider-proxy/outrider/proxy/http1"
	"github.com/outrider-proxy/outrider/proxy/listenerfilter"
	"github.com/outrider-proxy/outrider/proxy/netfilter"
	"github.com/outrider-proxy/outrider/proxy/streaminfo"
)

// conn is one downstream HTTP/1 connection, served by one goroutine that reads
// requests in order (pipelined requests are answered in order) and runs each
// to completion before reading the next.
type conn struct {
	cfg     *Config
	nc      *netfilter.Conn
	dec     *http1.Decoder
	enc     *http1.Encoder
	dsMsg   http1.Message
	s       stream
	counted bool // the connection was counted as HTTP/1 (its first byte arrived)
	watch   closeWatch
}

// ServeConn implements netfilter.Terminal: it serves HTTP/1.1 or HTTP/2
// (codec_type; AUTO tells them apart by the HTTP/2 connection preface)
// until the client closes, an error, a drain, or a timeout.
func (cfg *Config) ServeConn(nc *netfilter.Conn) {
	st := cfg.stats
	st.cxTotal.Inc()
	st.cxActive.Inc()
	defer func() {
		_ = nc.Close()
		st.cxActive.Dec()
		st.cxDestroy.Inc()
	}()
	switch cfg.codec {
	case hcmv3.HttpConnectionManager_HTTP2:
		if c, ok := readPreface(nc.Conn); ok {
			cfg.serveH2(nc, c)
		}
	case hcmv3.HttpConnectionManager_AUTO:
		sn := &sniffer{r: nc.Conn}
		cfg.serveHTTP1(nc, sn)
		if sn.state == 2 {
			cfg.serveH2(nc, listenerfilter.Replay(nc.Conn, sn.saved))
		}
	default:
		cfg.serveHTTP1(nc, nc.Conn)
	}
}

// serveHTTP1 serves HTTP/1 requests read from r (nc's connection, or a
// sniffer on it) one at a time. It returns without counting an HTTP/1
// connection when no request byte arrived, or the preface of an HTTP/2 one.
func (cfg *Config) serveHTTP1(nc *netfilter.Conn, r io.Reader) {
	st := cfg.stats
	c := &conn{cfg: cfg, nc: nc, dec: http1.NewDecoder(r, cfg.limits), enc: http1.NewEncoder(nc.Conn)}
	c.s.init(cfg, nc, c)
	defer func() {
		c.s.WatchClose(nil)
		c.dec.Release()
		c.enc.Release()
		if c.counted {
			st.cxHTTP1Active.Dec()
		}
	}()
	var maxDur time.Time
	if cfg.maxConnDuration > 0 {
		maxDur = nc.Info.StartTime.Add(cfg.maxConnDuration)
	}
	for served := uint32(0); ; served++ {
		if cfg.maxRequestsPerConn > 0 && served >= cfg.maxRequestsPerConn {
			return
		}
		if !maxDur.IsZero() && time.Now().After(maxDur) {
			st.cxMaxDurationReached.Inc()
			return
		}
		if !c.waitRequest() || !c.serveOne() {
			return
		}
	}
}

// waitRequest waits, under idle_timeout, for the first byte of the next
// request; false means close the connection. It is a separate, shallow call
// so that a connection idle between requests parks on a small goroutine
// stack, and the decoder holds no buffer meanwhile.
func (c *conn) waitRequest() bool {
	c.s.req.Reset() // its fields may point into the decoder's buffer
	c.armRead(c.cfg.idleTimeout, time.Time{})
	c.idle(true)
	err := c.dec.WaitData()
	c.idle(false)
	if err != nil {
		if errors.Is(err, os.ErrDeadlineExceeded) {
			c.cfg.stats.cxIdleTimeout.Inc()
		}
		return false
	}
	return true
}

// serveOne reads and answers one request whose first byte has arrived;
// false means close the connection. Timers, as Envoy's: idle_timeout while
// waiting for the first byte of a request (waitRequest); then
// request_headers_timeout (or, unset, the stream idle timeout) for the rest
// of the headers; request_timeout bounds the whole request.
func (c *conn) serveOne() bool {
	cfg, st := c.cfg, c.cfg.stats
	s := &c.s
	if !c.counted {
		c.counted = true
		st.cxHTTP1Total.Inc()
		st.cxHTTP1Active.Inc()
	}
	start := time.Now()
	var hardDeadline time.Time
	if cfg.requestTimeout > 0 {
		hardDeadline = start.Add(cfg.requestTimeout)
	}
	wait := cfg.requestHeadersTimeout
	if wait == 0 {
		wait = cfg.streamIdleTimeout
	}
	requestTimerFirst := c.armRead(wait, hardDeadline)
	msg, err := c.dec.ReadRequestHeaders(&s.req)
	if err != nil {
		var perr *http1.Error
		switch {
		case errors.As(err, &perr):
			st.cxProtocolError.Inc()
			c.replyAndClose(start, perr.Status, http.StatusText(perr.Status), perr.Details, streaminfo.DownstreamProtocolError)
		case errors.Is(err, os.ErrDeadlineExceeded) && requestTimerFirst:
			st.rqTimeout.Inc()
			c.replyAndClose(start, 408, "request timeout", "request_overall_timeout", 0)
		case errors.Is(err, os.ErrDeadlineExceeded) && cfg.requestHeadersTimeout > 0:
			st.rqHeadersTimeout.Inc()
			c.replyAndClose(start, 408, "request header timeout", "request_header_timeout", 0)
		case errors.Is(err, os.ErrDeadlineExceeded):
			c.replyAndClose(start, 408, "stream timeout", "stream_idle_timeout", streaminfo.StreamIdleTimeout)
		}
		return false
	}
	c.dsMsg = msg
	s.msg = msg
	s.begin(start)
	s.requestDeadline = hardDeadline
	st.rqHTTP1Total.Inc()
	if msg.Minor == 0 {
		s.info.Protocol = "HTTP/1.0"
	} else {
		s.info.Protocol = "HTTP/1.1"
	}
	s.run()
	s.finish(start)
	return !s.closeAfter && msg.KeepAlive && !s.reset
}

// replyAndClose answers a request that never became a stream (its headers
// were malformed or late) and marks the connection for closing.
func (c *conn) replyAndClose(start time.Time, status int, body, details string, flag streaminfo.ResponseFlag) {
	s := &c.s
	c.dsMsg = http1.Message{Major: 1, Minor: 1}
	s.msg = c.dsMsg
	s.req.Reset()
	s.begin(start)
	s.closeAfter = true
	c.cfg.stats.rqTotal.Inc()
	s.sendLocalReply(status, body, details, flag)
	s.finish(start)
}

// armRead sets the read deadline to the earlier of now+idle (0: none) and
// hard (zero: none), and reports whether hard is the one that will fire.
func (c *conn) armRead(idle time.Duration, hard time.Time) (hardFirst bool) {
	var d time.Time
	if idle > 0 {
		d = time.Now().Add(idle)
	}
	if !hard.IsZero() && (d.IsZero() || hard.Before(d)) {
		d, hardFirst = hard, true
	}
	_ = c.nc.SetReadDeadline(d)
	return hardFirst
}

func (c *conn) idle(idle bool) {
	if c.nc.Idle != nil {
		c.nc.Idle(idle)
	}
}

// run takes one request through the filter chain: headers, then the body
// as it arrives, then trailers. The terminal filter answers within these
// calls.
func (s *stream) run() {
	st := s.cfg.stats
	st.rqTotal.Inc()
	st.rqActive.Inc()
	defer st.rqActive.Dec()
	defer s.destroy()
	s.reqDone = s.msg.NoBody
	if rerr := s.prepareRequest(); rerr != nil {
		s.sendLocalReply(rerr.status, "", rerr.details, streaminfo.InvalidEnvoyRequestHeaders)
		return
	}
	s.startTrace()
	if s.msg.Expect100 {
		if s.cfg.proxy100 {
			s.pending100 = true // the upstream's 100 Continue answers it (Continue100)
		} else {
			s.req.Del("expect")
			if err := s.ds.write100Continue(); err != nil || s.ds.flush() != nil {
				s.downstreamWriteFailed()
				return
			}
		}
	}
	s.iterHeaders(&s.dec, 0, s.reqDone)
	// HTTP/2 stops reading once the response is complete: the codec resets
	// the rest of the request. HTTP/1 must read it to find the next request.
	for !s.reqDone && !s.localReplied && !s.reset && !(s.h2 && s.responseDone) {
		if s.async != nil && !s.ds.bodyRead() {
			s.duplexBody() // the response streams while the body does
			break
		}
		p, requestTimerFirst, err := s.ds.readData(s.StreamIdleTimeout(), s.requestDeadline)
		if !s.bodyPiece(p, requestTimerFirst, err) {
			break
		}
	}
	if !s.reqDone {
		// Answered before the request ended: the rest of it cannot be
		// skipped safely on HTTP/1, so the connection closes after the reply
		// (HTTP/2 resets the stream instead).
		s.closeAfter = true
		s.cfg.stats.rqRespCompleted.Inc()
	}
	if !s.responseDone && !s.reset {
		// No filter answered: Envoy would hang; fail loudly instead.
		s.sendLocalReply(500, "", "filter_chain_ended_without_response", 0)
	}
}

func (s *stream) downstreamReadFailed(err error) {
	var ne net.Error
	switch {
	case errors.As(err, &ne) && ne.Timeout():
		s.info.SetFlag(streaminfo.StreamIdleTimeout)
		if !s.responseStarted {
			s.sendLocalReply(408, "stream timeout", "stream_idle_timeout", 0)
		}
	default:
		var perr *http1.Error
		if errors.As(err, &perr) && !s.responseStarted {
			s.info.SetFlag(streaminfo.DownstreamProtocolError)
			s.closeAfter = true
			s.sendLocalReply(perr.Status, http.StatusText(perr.Status), perr.Details, 0)
			return
		}
		s.cfg.stats.rqRxReset.Inc()
		s.info.SetFlag(streaminfo.DownstreamConnectionTermination)
	}
	s.reset = true
	s.closeAfter = true
}

// finish records the stream's stats and writes its access logs.
func (s *stream) finish(start time.Time) {
	st := s.cfg.stats
	s.endTunnel()
	if s.info.Has(streaminfo.StreamIdleTimeout) {
		st.rqIdleTimeout.Inc()
	}
	st.response(s.info.ResponseCode)
	st.rqCompleted.Inc()
	st.rqTime.Record(uint64(time.Since(start).Milliseconds()))
	now := time.Now()
	s.info.LastDownstreamTxByte = s.info.Since(now)
	s.finishTrace(now)
	if s.cfg.accessLogs != nil {
		s.logCtx = formatter.Context{Stream: &s.info, Request: &s.req, Response: &s.resp, Trailers: s.respTrailers,
			LogType: accesslogdatav3.AccessLogType_DownstreamEnd}
		s.cfg.accessLogs.Log(&s.logCtx)
	}
}

// HTTP/1 implementation of downstream: c serves one stream at a time, c.s.

func (c *conn) writeHeaders(h *headers.Map, end bool) error {
	s := &c.s
	if !s.closeAfter && s.cfg.drain != nil && s.cfg.drain.ShouldClose() {
		s.closeAfter = true
		s.cfg.stats.cxDrainClose.Inc()
	}
	if !s.reqDone {
		s.closeAfter = true // the rest of the request cannot be skipped on HTTP/1
	}
	if s.closeAfter && !s.tunnelResponse(h) { // a tunnel's answer keeps its own Connection
		h.Set("connection", "close")
	}
	if !c.dsMsg.KeepAlive {
		s.closeAfter = true // the encoder says so on the wire
	}
	if err := c.enc.WriteResponseHeaders(h, end, s.msg, mustGet(&s.req, headers.Method)); err != nil {
		return err
	}
	if end {
		return c.enc.Flush()
	}
	return nil
}

func (c *conn) writeData(p []byte, end bool) error {
	if err := c.enc.WriteData(p, end); err != nil {
		return err
	}
	return c.enc.Flush()
}

func (c *conn) writeTrailers(t *headers.Map) error {
	if err := c.enc.WriteTrailers(t); err != nil {
		return err
	}
	return c.enc.Flush()
}

func (c *conn) flush() error            { return c.enc.Flush() }
func (c *conn) write100Continue() error { return c.enc.Write100Continue() }

func (c *conn) readData(idle time.Duration, hard time.Time) ([]byte, bool, error) {
	hardFirst := c.armRead(idle, hard)
	p, err := c.dec.ReadData()
	return p, hardFirst, err
}

func (c *conn) readTrailers(h *headers.Map) { c.dec.Trailers(h) }

// bodyRead reports that a Content-Length body was read whole: the next
// readData returns its end without waiting.
func (c *conn) bodyRead() bool {
	return c.dsMsg.ContentLength >= 0 && int64(c.s.info.BytesReceived) >= c.dsMsg.ContentLength
}

// interrupt makes a blocked readData return: the connection closes after
// this stream, so the decoder's state no longer matters.
func (c *conn) interrupt() { _ = c.nc.SetReadDeadline(time.Now()) }

// context is nil: nothing watches an HTTP/1 client while a response is
// awaited.
func (c *conn) context() context.Context { return nil }

// bodyBuffered is false: an HTTP/1 body's end is known only once read.
func (c *conn) bodyBuffered() (int, bool) { return 0, false }
