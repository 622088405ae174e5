package hcm

import (
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/outrider-proxy/outrider/proxy/http1"
	"github.com/outrider-proxy/outrider/proxy/netfilter"
	"github.com/outrider-proxy/outrider/proxy/streaminfo"
)

// conn is one downstream HTTP/1 connection, served by one goroutine that reads
// requests in order (pipelined requests are answered in order) and runs each
// to completion before reading the next.
type conn struct {
	cfg   *Config
	nc    *netfilter.Conn
	dec   *http1.Decoder
	enc   *http1.Encoder
	dsMsg http1.Message
	s     stream
}

// ServeConn implements netfilter.Terminal: it serves HTTP/1.1 until the
// client closes, an error, a drain, or a timeout.
func (cfg *Config) ServeConn(nc *netfilter.Conn) {
	st := cfg.stats
	st.cxTotal.Inc()
	st.cxHTTP1Total.Inc()
	st.cxActive.Inc()
	st.cxHTTP1Active.Inc()
	c := &conn{cfg: cfg, nc: nc, dec: http1.NewDecoder(nc.Conn, cfg.limits), enc: http1.NewEncoder(nc.Conn)}
	c.s.init(cfg, c)
	defer func() {
		c.dec.Release()
		_ = nc.Close()
		st.cxActive.Dec()
		st.cxHTTP1Active.Dec()
		st.cxDestroy.Inc()
	}()
	var maxDur time.Time
	if cfg.maxConnDuration > 0 {
		maxDur = nc.Info.StartTime.Add(cfg.maxConnDuration)
	}
	for served := uint32(0); ; served++ {
		if cfg.drain.Draining() && served > 0 {
			st.cxDrainClose.Inc()
			return
		}
		if cfg.maxRequestsPerConn > 0 && served >= cfg.maxRequestsPerConn {
			return
		}
		if !maxDur.IsZero() && time.Now().After(maxDur) {
			st.cxMaxDurationReached.Inc()
			return
		}
		if !c.serveOne(served) {
			return
		}
	}
}

// serveOne reads and answers one request; false means close the connection.
func (c *conn) serveOne(served uint32) bool {
	cfg, st := c.cfg, c.cfg.stats
	s := &c.s
	s.req.Reset()
	wait := cfg.idleTimeout
	if cfg.requestHeadersTimeout > 0 && (wait == 0 || cfg.requestHeadersTimeout < wait) && c.dec.Buffered() > 0 {
		wait = cfg.requestHeadersTimeout
	}
	c.setReadDeadline(wait)
	c.idle(true)
	msg, err := c.dec.ReadRequestHeaders(&s.req)
	c.idle(false)
	now := time.Now()
	if err != nil {
		var perr *http1.Error
		switch {
		case errors.As(err, &perr):
			st.cxProtocolError.Inc()
			c.dsMsg = http1.Message{Major: 1, Minor: 1}
			s.msg = c.dsMsg
			s.req.Reset()
			s.begin(now)
			s.info.SetFlag(streaminfo.DownstreamProtocolError)
			s.closeAfter = true
			st.rqTotal.Inc()
			s.sendLocalReply(perr.Status, http.StatusText(perr.Status), perr.Details, 0)
			s.finish(now)
		case errors.Is(err, os.ErrDeadlineExceeded):
			if c.dec.Buffered() > 0 && cfg.requestHeadersTimeout > 0 {
				st.rqHeadersTimeout.Inc()
			} else {
				st.cxIdleTimeout.Inc()
			}
		}
		return false
	}
	c.dsMsg = msg
	s.msg = msg
	s.begin(now)
	s.run()
	s.finish(now)
	return !s.closeAfter && msg.KeepAlive && !s.reset
}

func (c *conn) idle(idle bool) {
	if c.nc.Idle != nil {
		c.nc.Idle(idle)
	}
}

func (c *conn) setReadDeadline(d time.Duration) {
	if d > 0 {
		_ = c.nc.SetReadDeadline(time.Now().Add(d))
	} else {
		_ = c.nc.SetReadDeadline(time.Time{})
	}
}

// run takes one request through the filter chain: headers, then the body
// as it arrives, then trailers. The terminal filter answers within these
// calls.
func (s *stream) run() {
	st := s.cfg.stats
	st.rqTotal.Inc()
	st.rqHTTP1Total.Inc()
	st.rqActive.Inc()
	defer st.rqActive.Dec()
	if s.msg.Minor == 0 {
		s.info.Protocol = "HTTP/1.0"
	} else {
		s.info.Protocol = "HTTP/1.1"
	}
	s.reqDone = s.msg.NoBody
	if rerr := s.prepareRequest(); rerr != nil {
		s.sendLocalReply(rerr.status, "", rerr.details, streaminfo.InvalidEnvoyRequestHeaders)
		return
	}
	if s.msg.Expect100 {
		s.req.Del("expect")
		if err := s.conn.enc.Write100Continue(); err != nil || s.conn.enc.Flush() != nil {
			s.downstreamWriteFailed()
			return
		}
	}
	s.iterHeaders(&s.dec, 0, s.reqDone)
	for !s.reqDone && !s.localReplied && !s.reset {
		s.conn.setReadDeadline(s.cfg.streamIdleTimeout)
		p, err := s.conn.dec.ReadData()
		if err == io.EOF {
			s.reqDone = true
			s.info.LastDownstreamRxByte = s.info.Since(time.Now())
			s.conn.dec.Trailers(&s.reqTrl)
			if s.reqTrl.Len() > 0 {
				s.iterTrailers(&s.dec, 0, &s.reqTrl)
			} else {
				s.iterData(&s.dec, 0, nil, true)
			}
			break
		}
		if err != nil {
			s.downstreamReadFailed(err)
			return
		}
		s.info.BytesReceived += uint64(len(p))
		s.iterData(&s.dec, 0, p, false)
	}
	if !s.reqDone {
		// Answered before the request ended: the rest of it cannot be
		// skipped safely on HTTP/1, so the connection closes after the reply.
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
		s.cfg.stats.rqIdleTimeout.Inc()
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

// finish records the stream's stats.
func (s *stream) finish(start time.Time) {
	st := s.cfg.stats
	st.response(s.info.ResponseCode)
	st.rqCompleted.Inc()
	st.rqTime.Record(uint64(time.Since(start).Milliseconds()))
	s.info.LastDownstreamTxByte = s.info.Since(time.Now())
}
