package h2

import (
	"errors"
	"fmt"
	"net"
	"time"

	"golang.org/x/net/http2"

	"github.com/outrider-proxy/outrider/proxy/buffer"
)

// ClientConfig holds a client connection's settings; the zero value (or
// nil) is usable: every zero field takes the default named on it.
type ClientConfig struct {
	// MaxConcurrentStreams is our own cap on streams open at once; the
	// lower of it and the server's SETTINGS_MAX_CONCURRENT_STREAMS
	// applies. Zero: the server's alone.
	MaxConcurrentStreams uint32
	// InitialStreamWindowSize is each stream's receive window: the response
	// body bytes buffered for a caller that has not read them. Zero: 1 MiB.
	InitialStreamWindowSize uint32
	// InitialConnWindowSize is the connection's receive window. Zero: 8 MiB.
	InitialConnWindowSize uint32
	// MaxFrameSize is the largest frame payload accepted
	// (SETTINGS_MAX_FRAME_SIZE). Zero: 16384.
	MaxFrameSize uint32
	// MaxHeaderListSize bounds a response's header list (names, values and
	// 32 bytes a field); a larger one resets the stream. Zero: 60 KiB.
	MaxHeaderListSize uint32
	// MaxHeaderCount bounds a response's (or trailers') fields, pseudo-
	// headers included, as Envoy's max_headers_count; more reset the
	// stream. Zero: no limit.
	MaxHeaderCount int
	// HeaderTableSize is the HPACK dynamic table the request encoder may
	// use (capped by the server's SETTINGS_HEADER_TABLE_SIZE). Zero: no
	// dynamic table: requests are Huffman-coded and static-table indexed
	// only, and header strings are encoded without being copied.
	HeaderTableSize uint32
	// PingInterval sends a PING after that long without a frame from the
	// server; PingTimeout (zero: 15 s) closes the connection when nothing
	// arrives within that long after it. Zero: no PINGs.
	PingInterval, PingTimeout time.Duration
}

func (cfg ClientConfig) withDefaults() ClientConfig {
	defaultTo(&cfg.InitialStreamWindowSize, 1<<20)
	defaultTo(&cfg.InitialConnWindowSize, 8<<20)
	defaultTo(&cfg.MaxFrameSize, minMaxFrame)
	defaultTo(&cfg.MaxHeaderListSize, 60<<10)
	clampSettings(&cfg.InitialStreamWindowSize, &cfg.InitialConnWindowSize, &cfg.MaxFrameSize)
	if cfg.PingTimeout <= 0 {
		cfg.PingTimeout = 15 * time.Second
	}
	return cfg
}

// Errors of a client connection's streams.
var (
	// ErrCannotTakeStream is NewStream's error when the connection takes no
	// new stream (closed, GOAWAY received, at its concurrent stream limit,
	// stream ids used up). Nothing was sent: another connection may take it.
	ErrCannotTakeStream = errors.New("h2: connection cannot take a new stream")
	// ErrUnprocessed fails the streams above a GOAWAY's last stream id: the
	// server did not process them, so a retry is safe.
	ErrUnprocessed = errors.New("h2: stream not processed by the server (GOAWAY)")
)

// ClientConnError is the error of every stream a failed connection ends; it
// matches ErrConnClosed with errors.Is.
type ClientConnError struct {
	Code   http2.ErrCode // the GOAWAY code sent or received; ErrCodeNo for a plain close
	Remote bool          // the server's GOAWAY or close; false: this side found the error
	Reason string
}

func (e *ClientConnError) Error() string {
	who := "local"
	if e.Remote {
		who = "remote"
	}
	return fmt.Sprintf("h2: client connection ended (%s %s): %s", who, e.Code, e.Reason)
}

// Unwrap makes the error match ErrConnClosed.
func (e *ClientConnError) Unwrap() error { return ErrConnClosed }

// IsRefused reports whether err means the server never processed the
// stream: NewStream's ErrCannotTakeStream, ErrUnprocessed, or a
// RST_STREAM(REFUSED_STREAM) from the server. Such a stream may be retried.
func IsRefused(err error) bool {
	if errors.Is(err, ErrCannotTakeStream) || errors.Is(err, ErrUnprocessed) {
		return true
	}
	var se *StreamError
	return errors.As(err, &se) && se.Remote && se.Code == http2.ErrCodeRefusedStream
}

// ClientConn is one client-side HTTP/2 connection.
type ClientConn struct {
	connCore
	cfg ClientConfig

	// Read loop only.
	hb clientBlock

	// Guarded by mu.
	streams map[uint32]*ClientStream
	nextID  uint32 // the id of the next stream
	err     error  // why the connection ended, for its streams
	done    chan struct{}

	peerMaxStreams uint32 // the server's SETTINGS_MAX_CONCURRENT_STREAMS
	settingsSeen   bool

	goAway     bool // GOAWAY received: no new streams
	goAwayLast uint32
	goAwayErr  *ClientConnError // a GOAWAY with an error code: the streams' error when the connection ends
	pingTimer  *time.Timer
}

// NewClientConn starts HTTP/2 on nc: it writes the preface and SETTINGS
// and starts the connection's read loop. cfg may be nil.
func NewClientConn(nc net.Conn, cfg *ClientConfig) (*ClientConn, error) {
	var cf ClientConfig
	if cfg != nil {
		cf = *cfg
	}
	cf = cf.withDefaults()
	cc := &ClientConn{
		cfg:            cf,
		streams:        make(map[uint32]*ClientStream),
		nextID:         1,
		done:           make(chan struct{}),
		peerMaxStreams: 100, // until the server's SETTINGS say otherwise, as x/net
	}
	cc.initCore(nc, cc, cf.MaxFrameSize, cf.InitialConnWindowSize, cf.InitialStreamWindowSize, cf.PingInterval > 0)
	cc.rxMin = 16 << 10
	cc.lastRead.Store(time.Now().UnixNano())
	cc.enc.SetMaxDynamicTableSizeLimit(cf.HeaderTableSize)
	if cf.HeaderTableSize > 0 {
		cc.intern = make(map[string]string)
	}
	cc.dec = newHpackDecoder(4096, cc.onField)
	cc.maxBlock = maxBlockBytes(cf.MaxHeaderListSize)
	cc.dec.maxStr = cc.maxBlock

	var p []byte
	p = appendSetting(p, http2.SettingEnablePush, 0)
	if cf.InitialStreamWindowSize != defaultWindow {
		p = appendSetting(p, http2.SettingInitialWindowSize, cf.InitialStreamWindowSize)
	}
	if cf.MaxFrameSize != minMaxFrame {
		p = appendSetting(p, http2.SettingMaxFrameSize, cf.MaxFrameSize)
	}
	p = appendSetting(p, http2.SettingMaxHeaderListSize, cf.MaxHeaderListSize)
	out := append(make([]byte, 0, 4<<10), http2.ClientPreface...)
	out = appendFrame(out, frameSettings, 0, 0, p)
	if cf.InitialConnWindowSize > defaultWindow {
		out = appendWindowUpdate(out, 0, cf.InitialConnWindowSize-defaultWindow)
	}
	if _, err := nc.Write(out); err != nil {
		_ = nc.Close()
		return nil, fmt.Errorf("h2: client preface: %w", err)
	}
	cc.wspare = out[:0]
	cc.rslab = buffer.Get(16 << 10)
	cc.rb = cc.rslab.Bytes()
	if cf.PingInterval > 0 {
		cc.pingTimer = time.AfterFunc(cf.PingInterval, cc.keepalive)
	}
	go cc.readLoop()
	return cc, nil
}

// Done is closed once the connection ended (its read loop returned).
func (cc *ClientConn) Done() <-chan struct{} { return cc.done }

// Err is why the connection ended; nil while it runs.
func (cc *ClientConn) Err() error {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	return cc.err
}

// ActiveStreams is the number of streams open on the connection (sent
// and not yet ended both ways, reset or released).
func (cc *ClientConn) ActiveStreams() int {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	return len(cc.streams)
}

// GoAwayReceived reports whether the server sent GOAWAY.
func (cc *ClientConn) GoAwayReceived() bool {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	return cc.goAway
}

// CanTakeNewStream reports whether NewStream would open a stream now.
func (cc *ClientConn) CanTakeNewStream() bool {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	return cc.canTakeLocked()
}

func (cc *ClientConn) canTakeLocked() bool {
	limit := cc.peerMaxStreams
	if m := cc.cfg.MaxConcurrentStreams; m > 0 {
		limit = min(limit, m)
	}
	return !cc.closed && !cc.goAway && cc.werr == nil && cc.nextID <= maxWindow &&
		uint32(len(cc.streams)) < limit
}

// Close ends the connection at once: open streams fail with a
// *ClientConnError.
func (cc *ClientConn) Close() error {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	cc.closeLocked(&ClientConnError{Code: http2.ErrCodeNo, Reason: "closed"})
	return nil
}

// Shutdown sends GOAWAY(NO_ERROR), takes no new stream and closes the
// connection once its streams ended.
func (cc *ClientConn) Shutdown() {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	if cc.closed {
		return
	}
	if !cc.goAway {
		cc.goAway = true
		cc.goAwayLast = maxWindow
	}
	cc.wbuf = appendGoAway(cc.wbuf, 0, http2.ErrCodeNo, nil)
	cc.flushLocked()
	cc.closeIfIdleLocked()
}

// closeLocked closes the socket and fails every stream with err.
func (cc *ClientConn) closeLocked(err error) {
	if cc.closed {
		return
	}
	cc.closed, cc.err = true, err
	_ = cc.nc.Close()
	for id, s := range cc.streams {
		delete(cc.streams, id)
		s.inMap = false
		s.failLocked(err)
	}
	if cc.pingTimer != nil {
		cc.pingTimer.Stop()
	}
	cc.wakeWritersLocked()
}

// closeIfIdleLocked closes the connection after a GOAWAY once no stream
// is left.
func (cc *ClientConn) closeIfIdleLocked() {
	if cc.goAway && len(cc.streams) == 0 && !cc.closed {
		cc.flushAllLocked()
		cc.closeLocked(&ClientConnError{Code: http2.ErrCodeNo, Remote: true, Reason: "GOAWAY and no stream left"})
	}
}

// writeFailedLocked closes the connection after a failed write.
func (cc *ClientConn) writeFailedLocked(err error) {
	cc.closeLocked(&ClientConnError{Code: http2.ErrCodeNo, Reason: "write: " + err.Error()})
}

// wakeWritersLocked wakes the streams waiting to write.
func (cc *ClientConn) wakeWritersLocked() {
	if cc.writeWait == 0 {
		return
	}
	for _, s := range cc.streams {
		if s.writeWaiting {
			s.cond.Broadcast()
		}
	}
}

// keepalive runs on the PING timer: a PING once the server has been quiet
// for PingInterval, and the close when it stays quiet PingTimeout more.
func (cc *ClientConn) keepalive() {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	if cc.closed {
		return
	}
	quiet := time.Since(time.Unix(0, cc.lastRead.Load()))
	switch {
	case quiet >= cc.cfg.PingInterval+cc.cfg.PingTimeout:
		cc.closeLocked(&ClientConnError{Code: http2.ErrCodeNo, Reason: "PING not answered"})
	case quiet >= cc.cfg.PingInterval:
		cc.wbuf = appendFrame(cc.wbuf, framePing, 0, 0, pingPayload[:])
		cc.flushLocked()
		cc.pingTimer.Reset(cc.cfg.PingInterval + cc.cfg.PingTimeout - quiet)
	default:
		cc.pingTimer.Reset(cc.cfg.PingInterval - quiet)
	}
}
