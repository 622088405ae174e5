// Package h2 is outrider's own HTTP/2 codec (RFC 9113) for both ends of a
// connection: Conn serves downstream clients, running each request stream's
// Handler on a pooled worker, and ClientConn sends upstream requests as
// ClientStreams opened by NewStream. On either side one read loop decodes
// frames and HPACK blocks straight into pooled streams, and every stream's
// frames go to one connection write buffer under a mutex, sent by whichever
// writer finds no write in progress, so frames of many streams share a
// syscall.
package h2

import (
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"
)

// ServerConfig holds a connection's settings; the zero value (or nil) is
// usable: every zero field takes the default named on it.
type ServerConfig struct {
	// MaxConcurrentStreams bounds the streams open at once; a HEADERS frame
	// past it is refused with RST_STREAM(REFUSED_STREAM). Zero: 1024.
	MaxConcurrentStreams uint32
	// InitialStreamWindowSize is the receive window of each stream: the
	// request body bytes buffered for a handler that has not read them yet.
	// Zero: 1 MiB.
	InitialStreamWindowSize uint32
	// InitialConnWindowSize is the connection's receive window. Zero: 1 MiB.
	InitialConnWindowSize uint32
	// MaxFrameSize is the largest frame payload accepted
	// (SETTINGS_MAX_FRAME_SIZE). Zero: 16384.
	MaxFrameSize uint32
	// MaxHeaderListSize bounds a request's header list (names, values and
	// 32 bytes a field, RFC 9113 section 6.5.2); a larger one is answered
	// 431. Zero: 60 KiB.
	MaxHeaderListSize uint32
	// HeaderTableSize is the HPACK decoder's dynamic table size
	// (SETTINGS_HEADER_TABLE_SIZE). Zero: 4096.
	HeaderTableSize uint32
	// AllowExtendedConnect advertises SETTINGS_ENABLE_CONNECT_PROTOCOL and
	// accepts :protocol on CONNECT (RFC 8441); false: :protocol is malformed.
	AllowExtendedConnect bool
	// IdleTimeout closes a connection that has had no open stream for that
	// long, after a GOAWAY (NO_ERROR); zero: never.
	IdleTimeout time.Duration
	// PingInterval sends a PING after that long without a frame from the
	// client; PingTimeout (zero: 15 s) closes the connection when nothing
	// arrives within that long after it. Zero: no PINGs.
	PingInterval, PingTimeout time.Duration
	// PrefaceRead says the client preface was already consumed from the
	// connection (a sniffer read it); false: Serve reads it.
	PrefaceRead bool
}

func (cfg ServerConfig) withDefaults() ServerConfig {
	defaultTo(&cfg.MaxConcurrentStreams, 1024)
	defaultTo(&cfg.InitialStreamWindowSize, 1<<20)
	defaultTo(&cfg.InitialConnWindowSize, 1<<20)
	defaultTo(&cfg.MaxFrameSize, minMaxFrame)
	defaultTo(&cfg.MaxHeaderListSize, 60<<10)
	defaultTo(&cfg.HeaderTableSize, 4096)
	clampSettings(&cfg.InitialStreamWindowSize, &cfg.InitialConnWindowSize, &cfg.MaxFrameSize)
	return cfg
}

// Handler serves one stream. ServeStream runs on a pooled goroutine, one
// per open stream, and the stream is valid only until it returns.
type Handler interface {
	ServeStream(s *Stream)
}

// HandlerFunc adapts a function to Handler.
type HandlerFunc func(s *Stream)

// ServeStream calls f(s).
func (f HandlerFunc) ServeStream(s *Stream) { f(s) }

// ErrConnClosed is what a stream's calls return once its connection ended.
var ErrConnClosed = errors.New("h2: connection closed")

// Conn is one server-side HTTP/2 connection.
type Conn struct {
	connCore
	cfg ServerConfig
	h   Handler

	// Read loop only.
	hb          hblock
	maxID       uint32 // highest client stream id seen
	jobs        chan *Stream
	idleWorkers atomic.Int32  // workers parked on jobs
	quit        chan struct{} // closed when the connection ends
	scratch     []byte        // cookie joining
	pending     []*Stream     // opened, handler not started yet (dispatch)

	// Guarded by mu.
	idle     sync.Cond // signalled when handlers reaches 0
	streams  map[uint32]*Stream
	handlers int // ServeStream calls running
	// open counts streams against MaxConcurrentStreams. Closed streams add
	// to freed, taken off open only when the read loop goes back to the
	// socket: as in Envoy's codec, a burst of HEADERS read together counts
	// whole even when early ones are answered meanwhile.
	open, freed int
	closeErr    error

	goAwaySent  bool
	goAwayLast  uint32 // last stream id of the final GOAWAY; streams above it are ignored
	goAwayFinal bool   // the real last stream id was sent: close once idle
	goAwayRecv  bool
	idleTimer   *time.Timer     // IdleTimeout's; nil: none
	pingTimer   *time.Timer     // PingInterval's; nil: none
	recentReset [16]resetStream // streams this side reset lately: their late frames are ignored
	recentIdx   int
}

// NewConn prepares a connection for Serve. cfg may be nil.
func NewConn(nc net.Conn, cfg *ServerConfig, h Handler) *Conn {
	var cf ServerConfig
	if cfg != nil {
		cf = *cfg
	}
	cf = cf.withDefaults()
	c := &Conn{
		cfg: cf, h: h,
		jobs:       make(chan *Stream),
		quit:       make(chan struct{}),
		streams:    make(map[uint32]*Stream),
		goAwayLast: maxWindow,
	}
	c.initCore(nc, c, cf.MaxFrameSize, cf.InitialConnWindowSize, cf.InitialStreamWindowSize, cf.PingInterval > 0)
	c.intern = make(map[string]string)
	c.idle.L = &c.mu
	c.dec = newHpackDecoder(cf.HeaderTableSize, c.onField)
	c.maxBlock = maxBlockBytes(cf.MaxHeaderListSize)
	c.dec.maxStr = c.maxBlock
	return c
}

// Serve runs HTTP/2 on nc until the connection ends, then waits for every
// handler to return. cfg may be nil.
func Serve(nc net.Conn, cfg *ServerConfig, h Handler) error {
	return NewConn(nc, cfg, h).Serve()
}

// Serve reads the connection until it ends (the client closed it, a
// connection error, a completed GOAWAY or Close) and returns once every
// handler returned. The result is nil for a clean end.
func (c *Conn) Serve() error {
	c.writeSettings()
	if d := c.cfg.IdleTimeout; d > 0 {
		c.mu.Lock()
		c.idleTimer = time.AfterFunc(d, c.onIdle)
		c.mu.Unlock()
		defer c.idleTimer.Stop()
	}
	if c.cfg.PingInterval > 0 {
		c.lastRead.Store(time.Now().UnixNano())
		c.mu.Lock()
		c.pingTimer = time.AfterFunc(c.cfg.PingInterval, c.keepalive)
		c.mu.Unlock()
		defer c.pingTimer.Stop()
	}
	err := c.readLoop()
	var ce connError
	if errors.As(err, &ce) {
		c.mu.Lock()
		c.wbuf = appendGoAway(c.wbuf, c.maxID, ce.Code, nil)
		c.flushAllLocked()
		c.mu.Unlock()
	}
	c.mu.Lock()
	c.startPendingLocked() // their handlers see the connection end
	if errors.Is(err, io.EOF) || (c.goAwayFinal && c.closed) || errors.Is(err, net.ErrClosed) && c.closed && c.closeErr == nil {
		err = nil
	}
	c.closeLocked(ErrConnClosed)
	for c.handlers > 0 {
		c.idle.Wait()
	}
	c.mu.Unlock()
	close(c.quit)
	c.releaseReadBuf()
	return err
}

// Close ends the connection at once: streams fail with ErrConnClosed.
func (c *Conn) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closeLocked(nil)
	return nil
}

// closeLocked closes the socket and fails every stream; err (nil: a
// deliberate close) is kept for Serve.
func (c *Conn) closeLocked(err error) {
	if c.closed {
		return
	}
	c.closed, c.closeErr = true, err
	_ = c.nc.Close()
	for id, s := range c.streams {
		delete(c.streams, id)
		s.inMap = false
		s.failLocked(ErrConnClosed)
	}
	c.wakeWritersLocked()
}

// writeSettings queues the server's SETTINGS and the connection window
// beyond the initial 65535.
func (c *Conn) writeSettings() {
	cf := &c.cfg
	var p []byte
	p = appendSetting(p, http2.SettingMaxConcurrentStreams, cf.MaxConcurrentStreams)
	if cf.InitialStreamWindowSize != defaultWindow {
		p = appendSetting(p, http2.SettingInitialWindowSize, cf.InitialStreamWindowSize)
	}
	if cf.MaxFrameSize != minMaxFrame {
		p = appendSetting(p, http2.SettingMaxFrameSize, cf.MaxFrameSize)
	}
	p = appendSetting(p, http2.SettingMaxHeaderListSize, cf.MaxHeaderListSize)
	if cf.HeaderTableSize != 4096 {
		p = appendSetting(p, http2.SettingHeaderTableSize, cf.HeaderTableSize)
	}
	if cf.AllowExtendedConnect {
		p = appendSetting(p, http2.SettingEnableConnectProtocol, 1)
	}
	c.mu.Lock()
	c.wbuf = appendFrame(c.wbuf, frameSettings, 0, 0, p)
	if cf.InitialConnWindowSize > defaultWindow {
		c.wbuf = appendWindowUpdate(c.wbuf, 0, cf.InitialConnWindowSize-defaultWindow)
	}
	c.mu.Unlock()
}

// GoAway starts a graceful shutdown as Envoy's drain does: a GOAWAY with
// the last stream id 2^31-1 (the shutdown notice: no stream refused yet).
// A later GoAwayFinal sends the real last stream id.
func (c *Conn) GoAway() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed || c.goAwaySent {
		return
	}
	c.goAwaySent = true
	c.wbuf = appendGoAway(c.wbuf, maxWindow, http2.ErrCodeNo, nil)
	c.flushLocked()
}

// GoAwayFinal sends a GOAWAY naming the last stream the read loop accepted,
// with code and debug data; streams above it are ignored, and the
// connection closes once its streams are done.
func (c *Conn) GoAwayFinal(code http2.ErrCode, debug []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed || c.goAwayFinal {
		return
	}
	c.goAwaySent, c.goAwayFinal = true, true
	c.goAwayLast = c.maxID
	c.wbuf = appendGoAway(c.wbuf, c.maxID, code, debug)
	c.flushLocked()
	c.closeIfIdleLocked()
}

// onIdle is IdleTimeout's timer: GOAWAY and close unless a stream opened
// meanwhile.
func (c *Conn) onIdle() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed || c.handlers > 0 || len(c.streams) > 0 {
		return
	}
	if !c.goAwayFinal {
		c.goAwaySent, c.goAwayFinal = true, true
		c.goAwayLast = c.maxID
		c.wbuf = appendGoAway(c.wbuf, c.maxID, http2.ErrCodeNo, nil)
	}
	c.closeIfIdleLocked()
}

// keepalive runs on the PING timer: a PING once the client has been quiet
// for PingInterval, and the close when it stays quiet PingTimeout more.
func (c *Conn) keepalive() {
	quiet := time.Since(time.Unix(0, c.lastRead.Load()))
	timeout := c.cfg.PingTimeout
	if timeout <= 0 {
		timeout = 15 * time.Second
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	t := c.pingTimer
	switch {
	case c.closed:
		return
	case quiet >= c.cfg.PingInterval+timeout:
		c.closeLocked(errors.New("h2: PING not answered"))
		return
	case quiet >= c.cfg.PingInterval:
		c.wbuf = appendFrame(c.wbuf, framePing, 0, 0, pingPayload[:])
		c.flushLocked()
		t.Reset(timeout)
		return
	}
	t.Reset(c.cfg.PingInterval - quiet)
}

var pingPayload = [8]byte{'o', 'u', 't', 'r', 'i', 'd', 'e', 'r'}

// armIdleLocked starts the idle timer once no stream is left.
func (c *Conn) armIdleLocked() {
	if c.idleTimer != nil && c.handlers == 0 && len(c.streams) == 0 {
		c.idleTimer.Reset(c.cfg.IdleTimeout)
	}
}

// closeIfIdleLocked closes the connection after a final GOAWAY once no
// stream is left.
func (c *Conn) closeIfIdleLocked() {
	if c.goAwayFinal && len(c.streams) == 0 && c.handlers == 0 && !c.closed {
		c.flushAllLocked()
		c.closeLocked(nil)
	}
}

// ActiveStreams is the number of streams open or still being handled.
func (c *Conn) ActiveStreams() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return max(len(c.streams), c.handlers)
}

// GoAwayReceived reports whether the client sent GOAWAY.
func (c *Conn) GoAwayReceived() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.goAwayRecv
}

// dispatch queues s's handler to start when the read loop has processed
// the frames it read with s's HEADERS (startPendingLocked, before the next
// wait on the socket): frames a client sends right behind a request (a
// WINDOW_UPDATE, RST_STREAM, more DATA) are then seen before the handler
// can end the stream, and a batch of new streams starts together.
func (c *Conn) dispatch(s *Stream) { c.pending = append(c.pending, s) }

// startPendingLocked runs each queued stream's handler on an idle worker,
// or a new one.
func (c *Conn) startPendingLocked() {
	for i, s := range c.pending {
		c.pending[i] = nil
		select {
		case c.jobs <- s:
		default:
			go c.worker(s)
		}
	}
	c.pending = c.pending[:0]
}

// maxIdleWorkers bounds the worker goroutines a connection keeps parked
// for its next streams; past it a worker whose stream ended exits.
const maxIdleWorkers = 32

// worker serves streams until the connection ends, or until enough other
// workers are idle.
func (c *Conn) worker(s *Stream) {
	for {
		c.h.ServeStream(s)
		s.finish()
		if c.idleWorkers.Add(1) > maxIdleWorkers {
			c.idleWorkers.Add(-1)
			return
		}
		select {
		case s = <-c.jobs:
			c.idleWorkers.Add(-1)
		case <-c.quit:
			return
		}
	}
}

// maxBlockBytes bounds a header block (HEADERS and CONTINUATION frames) and
// any one string in it: past it the connection is closed
// (ENHANCE_YOUR_CALM, or COMPRESSION_ERROR for a string). A header list
// over MaxHeaderListSize but under this is answered 431.
func maxBlockBytes(maxList uint32) int { return 4*int(maxList) + 64<<10 }
