package hcm

import (
	"context"
	"math/rand/v2"
	"net"
	"sync/atomic"
	"time"

	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"

	"github.com/outrider-proxy/outrider/proxy/grpcstatus"
	"github.com/outrider-proxy/outrider/proxy/headers"
	"github.com/outrider-proxy/outrider/proxy/http1"
	"github.com/outrider-proxy/outrider/proxy/httpfilter"
	"github.com/outrider-proxy/outrider/proxy/netfilter"
	"github.com/outrider-proxy/outrider/proxy/router"
	"github.com/outrider-proxy/outrider/proxy/streaminfo"
	"github.com/outrider-proxy/outrider/telemetry/formatter"
)

// downstream is a stream's downstream codec: the HTTP/1 connection (one
// stream at a time) or one HTTP/2 stream. Write errors mean the client is
// gone; read errors are the codec's (io.EOF ends the body).
type downstream interface {
	// writeHeaders sends the response headers (flushing them when end).
	writeHeaders(h *headers.Map, end bool) error
	// writeData sends a body piece and flushes it.
	writeData(p []byte, end bool) error
	// writeTrailers ends the response with trailers.
	writeTrailers(t *headers.Map) error
	flush() error
	// write100Continue answers Expect: 100-continue.
	write100Continue() error
	// readData returns the next piece of the request body, valid until the
	// next call, waiting at most idle (0: no limit) and not past hard
	// (zero: none); hardFired reports that hard is what expired.
	readData(idle time.Duration, hard time.Time) (p []byte, hardFired bool, err error)
	// readTrailers adds the request trailers, once the body ended, to h.
	readTrailers(h *headers.Map)
	// bodyRead reports that the next readData returns the body's end
	// without waiting (a Content-Length body read whole).
	bodyRead() bool
	// bodyBuffered reports that the whole request body arrived and how
	// many of its bytes wait to be read (HTTP/2); false: more may come, or
	// the codec cannot tell.
	bodyBuffered() (n int, ok bool)
	// interrupt makes a readData blocked on another goroutine return soon
	// with an error; reading the body is over after it.
	interrupt()
	// context is done when the client reset the stream; nil: never told.
	context() context.Context
}

// activeFilter is one filter instance of a stream.
type activeFilter struct {
	cfg      httpfilter.Config
	inst     any
	dec      httpfilter.DecoderFilter
	enc      httpfilter.EncoderFilter
	rw       httpfilter.DataRewriter // nil unless inst rewrites body pieces
	reusable bool
	destroy  bool // inst implements destroyer
}

// stream is one request/response exchange. On HTTP/1 a connection has one
// stream object, reset between requests; on HTTP/2 stream objects come from
// a pool. Either way filters that implement Resetter and the header maps are
// reused. Everything here is owned by the goroutine running the stream (the
// connection's on HTTP/1, the stream handler's on HTTP/2).
type stream struct {
	cfg *Config
	nc  *netfilter.Conn
	ds  downstream
	h2  bool // the downstream is HTTP/2: no connection-level side effects

	info     streaminfo.Stream
	req      headers.Map
	reqTrl   headers.Map
	resp     headers.Map
	msg      http1.Message
	routes   *router.Table // the table this stream started with
	scopes   *scopeTable   // with scoped_routes: the scopes it started with; nil otherwise
	route    *router.Route
	routeSet bool
	filters  []activeFilter
	dec, enc side

	localReplied    bool         // a local reply replaced the response
	pending100      bool         // proxy_100_continue: the client's Expect: 100-continue is not answered yet
	responseStarted bool         // headers went to the codec
	responseDone    bool         // the last byte went to the codec
	reset           bool         // the stream was abandoned; close the connection
	closeAfter      bool         // send Connection: close and close after the response
	reqDone         bool         // the whole request was read from the client
	requestDeadline time.Time    // request_timeout's end; zero when unset
	respTrailers    *headers.Map // the response trailers sent, if any
	localHdrs       headers.Map  // added to local replies (AddLocalReplyHeader)
	logCtx          formatter.Context
	writeErr        bool
	// Tunnels: extConnect marks an HTTP/2 extended CONNECT served as an
	// upgrade; tunnel is the HTTP/2 stream's tunnel once started (nil:
	// none), h1tunnel the HTTP/1 connection's; tunnelEOF tells the body
	// reader that the upstream ended it.
	extConnect bool
	tunnel     *h2Tunnel
	h1tunnel   *h1Tunnel
	tunnelEOF  atomic.Bool
	async      <-chan func() // the terminal filter's events (Duplex); nil: none
	// duplexBody's channels to its reader goroutine, kept across streams
	// (nil until the first full-duplex body).
	dxPieces chan bodyPiece
	dxMore   chan bool
	trace    streamTrace // tracing.go
}

func (s *stream) init(cfg *Config, nc *netfilter.Conn, ds downstream) {
	s.cfg, s.nc, s.ds = cfg, nc, ds
	s.dec.encode, s.enc.encode = false, true
	s.filters = make([]activeFilter, len(cfg.filters))
	for i := range cfg.filters {
		s.filters[i].cfg = cfg.filters[i].cfg
	}
}

// begin resets the stream for a request whose headers are in s.req.
func (s *stream) begin(now time.Time) {
	s.info.Reset(s.nc.Info, now)
	s.routes = s.cfg.routes.Load()
	s.scopes = nil
	if s.cfg.scoped != nil {
		s.scopes = s.cfg.scoped.current.Load()
	}
	s.route, s.routeSet = nil, false
	s.async = nil
	s.localReplied, s.responseStarted, s.responseDone, s.reset, s.closeAfter, s.writeErr, s.reqDone = false, false, false, false, false, false, false
	s.pending100 = false
	s.extConnect, s.tunnel, s.h1tunnel = false, nil, nil
	s.tunnelEOF.Store(false)
	s.resp.Reset()
	s.reqTrl.Reset()
	s.respTrailers = nil
	s.localHdrs.Reset()
	s.dec.reset(&s.req)
	s.enc.reset(&s.resp)
	for i := range s.filters {
		f := &s.filters[i]
		if f.inst != nil && f.reusable {
			f.inst.(httpfilter.Resetter).Reset()
			continue
		}
		f.inst = f.cfg.New(s)
		f.dec, _ = f.inst.(httpfilter.DecoderFilter)
		f.enc, _ = f.inst.(httpfilter.EncoderFilter)
		f.rw, _ = f.inst.(httpfilter.DataRewriter)
		_, f.reusable = f.inst.(httpfilter.Resetter)
		_, f.destroy = f.inst.(destroyer)
	}
}

// Callbacks implementation.

func (s *stream) Info() *streaminfo.Stream      { return &s.info }
func (s *stream) RequestHeaders() *headers.Map  { return &s.req }
func (s *stream) ResponseHeaders() *headers.Map { return &s.resp }
func (s *stream) ResponseStarted() bool         { return s.responseStarted }
func (s *stream) BufferLimit() int              { return s.bufferLimit() }

func (s *stream) bufferLimit() int {
	if n := s.nc.BufferLimit; n > 0 {
		return n
	}
	return 1 << 20
}

func (s *stream) Route() *router.Route {
	if !s.routeSet {
		s.routeSet = true
		s.route = nil
		if s.scopes != nil { // the scope key is computed again after a route cache clear
			s.routes = s.scopes.tableFor(&s.req)
		}
		if s.routes != nil {
			s.route, _ = s.routes.Select(&s.req, rand.Uint64())
		}
		if s.route != nil {
			s.info.RouteName = s.route.Name
			if vh := s.route.VirtualHost(); vh != nil {
				s.info.VirtualHostName = vh.Name
			}
		}
	}
	return s.route
}

func (s *stream) ClearRouteCache() { s.routeSet = false }

func (s *stream) DecodingBuffer() *[]byte { return &s.dec.buf }

// Tunnel hands the terminal filter the raw HTTP/1 connection once an
// upgrade (101) was sent: what the client sends keeps arriving through
// DecodeData; the filter writes the upstream's bytes to the returned conn
// and calls done when the tunnel is over. On HTTP/2 the conn writes the
// stream's DATA frames (see h2Tunnel).
func (s *stream) Tunnel() (net.Conn, func()) {
	var down net.Conn
	switch ds := s.ds.(type) {
	case *conn:
		if ds.enc.Flush() != nil {
			return nil, nil
		}
		s.closeAfter = true
		s.h1tunnel = &h1Tunnel{Conn: ds.nc.Conn, done: make(chan struct{})}
		down = s.h1tunnel
	case *h2Stream:
		if down = s.h2TunnelFor(ds); down == nil {
			return nil, nil
		}
	default:
		return nil, nil
	}
	// request_timeout is disarmed once the response starts, as Envoy's: a
	// tunnel is bounded by the stream idle timeout instead.
	s.requestDeadline = time.Time{}
	s.cfg.stats.cxUpgradesActive.Inc()
	return down, func() { s.cfg.stats.cxUpgradesActive.Dec() }
}
func (s *stream) EncodingBuffer() *[]byte { return &s.enc.buf }

// StreamIdleTimeout is the route's idle_timeout when it sets one, else the
// connection manager's stream_idle_timeout; 0 means none.
func (s *stream) StreamIdleTimeout() time.Duration {
	if r := s.Route(); r != nil && r.IdleTimeout() > 0 {
		return r.IdleTimeout()
	}
	return s.cfg.streamIdleTimeout
}

func (s *stream) EncodeHeaders(h *headers.Map, end bool) bool {
	if s.reset || s.responseStarted {
		return false
	}
	s.enc.headers = h
	s.iterHeaders(&s.enc, 0, end)
	return !s.reset && !s.writeErr
}

func (s *stream) EncodeData(p []byte, end bool) bool {
	if s.reset || s.responseDone {
		return false
	}
	s.iterData(&s.enc, 0, p, end)
	return !s.reset && !s.writeErr
}

func (s *stream) EncodeTrailers(t *headers.Map) bool {
	if s.reset || s.responseDone {
		return false
	}
	s.iterTrailers(&s.enc, 0, t)
	return !s.reset && !s.writeErr
}

func (s *stream) Flush() bool {
	if s.writeErr {
		return false
	}
	if err := s.ds.flush(); err != nil {
		s.downstreamWriteFailed()
		return false
	}
	return true
}

func (s *stream) ResetStream(flag streaminfo.ResponseFlag) { s.resetStream(flag) }

func (s *stream) resetStream(flag streaminfo.ResponseFlag) {
	s.info.SetFlag(flag)
	s.reset = true
	s.closeAfter = true
	if flag == streaminfo.DownstreamConnectionTermination {
		s.cfg.stats.rqRxReset.Inc() // the client reset it; the filter only noticed
		return
	}
	s.cfg.stats.rqTxReset.Inc()
}

func (s *stream) AddLocalReplyHeader(name, value string) { s.localHdrs.Add(name, value) }

func (s *stream) SendLocalReply(status int, body, details string, flag streaminfo.ResponseFlag) {
	s.sendLocalReply(status, body, details, flag)
}

// sendLocalReply answers from the proxy itself, through the encoder filters.
// Once the response has started it can only reset the stream. The reply is
// built as Envoy's Utility::prepareLocalReply: the status, the filters'
// local-reply headers, then local_reply_config (localreply.go); a gRPC
// request gets a trailers-only reply whose grpc-message is the body.
func (s *stream) sendLocalReply(status int, body, details string, flag streaminfo.ResponseFlag) {
	s.info.SetFlag(flag)
	s.info.ResponseCodeDetails = details
	if s.responseStarted {
		s.resetStream(0)
		return
	}
	s.localReplied = true
	s.enc.reset(&s.resp)
	s.resp.Reset()
	s.resp.SetInt(headers.Status, int64(status))
	for _, f := range s.localHdrs.Fields() {
		s.resp.SetBytes(string(f.Name), f.Value) // replaces, e.g. a filter's own grpc-status
	}
	origBody, contentType, customCT := body, contentTypeText, false
	if lr := s.cfg.localReply; lr != nil {
		ct, _ := s.resp.Get("content-type")
		before := string(ct)
		status, body, contentType = lr.rewrite(s, status, body)
		ct, _ = s.resp.Get("content-type")
		customCT = before != string(ct) // a mapper's headers_to_add set it
	}
	if ct, _ := s.req.Get("content-type"); headers.IsGRPC(ct) {
		// gRPC local replies are trailers-only, as Envoy's.
		s.resp.SetInt(headers.Status, 200)
		s.resp.Set("content-type", "application/grpc")
		if !s.resp.Has("grpc-status") { // a filter's own grpc-status wins
			s.resp.SetInt("grpc-status", int64(grpcstatus.FromHTTP(status)))
		}
		if body != "" {
			if contentType == contentTypeJSON && body[len(body)-1] == '\n' {
				body = body[:len(body)-1] // the JSON formatter's newline
			}
			s.resp.Set("grpc-message", grpcEncode(body))
		}
		s.resp.Del("content-length")
		s.iterHeaders(&s.enc, 0, true)
		return
	}
	if body == "" {
		s.resp.Set("content-length", "0")
		s.resp.Del("content-type")
		s.iterHeaders(&s.enc, 0, true)
		return
	}
	s.resp.SetInt("content-length", int64(len(body)))
	if !s.resp.Has("content-type") || (body != origBody && !customCT) {
		s.resp.Set("content-type", contentType)
	}
	s.iterHeaders(&s.enc, 0, false)
	if !s.reset && !s.responseDone {
		s.iterData(&s.enc, 0, []byte(body), true)
	}
}

// writeHeaders is the end of the encoder chain: connection-manager response
// headers, then the codec.
func (s *stream) writeHeaders(h *headers.Map, end bool) {
	if s.responseStarted {
		return
	}
	s.responseStarted = true
	s.info.ResponseCode = h.StatusCode()
	switch s.cfg.serverHeader {
	case hcmv3.HttpConnectionManager_OVERWRITE:
		h.Set("server", s.cfg.serverName)
	case hcmv3.HttpConnectionManager_APPEND_IF_ABSENT:
		if !h.Has("server") {
			h.Set("server", s.cfg.serverName)
		}
	}
	h.SetBytes("date", dateHeader())
	if id, ok := s.req.Get("x-request-id"); ok && s.cfg.alwaysSetRequestID {
		h.SetBytes("x-request-id", id)
	}
	if s.info.FirstDownstreamTxByte == 0 {
		s.info.FirstDownstreamTxByte = s.info.Since(time.Now())
	}
	s.extConnectStatus(h)
	s.traceResponseHeaders(h)
	if err := s.ds.writeHeaders(h, end); err != nil {
		s.downstreamWriteFailed()
		return
	}
	if end {
		s.responseDone = true
	}
}

func (s *stream) writeData(p []byte, end bool) {
	if s.responseDone || s.writeErr {
		return
	}
	s.info.BytesSent += uint64(len(p))
	if end {
		s.responseDone = true
	}
	if err := s.ds.writeData(p, end); err != nil {
		s.downstreamWriteFailed()
	}
}

func (s *stream) writeTrailers(t *headers.Map) {
	if s.responseDone || s.writeErr {
		return
	}
	s.respTrailers = t
	s.responseDone = true
	if err := s.ds.writeTrailers(t); err != nil {
		s.downstreamWriteFailed()
	}
}

func (s *stream) downstreamWriteFailed() {
	s.writeErr = true
	s.reset = true
	s.closeAfter = true
	s.info.SetFlag(streaminfo.DownstreamConnectionTermination)
}

func mustGet(h *headers.Map, name string) []byte {
	v, _ := h.Get(name)
	return v
}
