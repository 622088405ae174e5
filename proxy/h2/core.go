package h2

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/outrider-proxy/outrider/proxy/buffer"
)

// connRole is what the shared connection core asks of its side (Conn or
// ClientConn): the parts that depend on the side's stream table and errors.
type connRole interface {
	// beforeReadLocked runs before the read loop waits for the socket: it
	// sends queued writes; idle says the pooled read buffer may go back,
	// err ends the read loop instead of the wait.
	beforeReadLocked() (idle bool, err error)
	// writeFailedLocked closes the connection after a failed write.
	writeFailedLocked(err error)
	// wakeWritersLocked wakes the streams waiting to write.
	wakeWritersLocked()
	// addSendWindowLocked adds delta to every open stream's send window
	// (SETTINGS_INITIAL_WINDOW_SIZE changed).
	addSendWindowLocked(delta int64) error
	// settingLocked applies a SETTINGS parameter the core does not know.
	settingLocked(id http2.SettingID, v uint32) error
}

// connCore is what both sides of a connection share: the read buffer and
// frame reader, the write buffer and its flusher, the HPACK encoder, the
// connection-level flow-control windows and the peer's settings. The zero
// value is not usable: newConnCore fills it.
type connCore struct {
	nc   net.Conn
	role connRole

	maxFrame     uint32 // the largest frame payload accepted
	connWindow   uint32 // the connection's receive window, credited in halves
	streamWindow uint32 // each stream's receive window, credited in halves
	rxMin        int    // the smallest receive buffer a stream takes
	pingOn       bool   // keepalive PINGs on: lastRead is kept

	// Read loop only.
	rslab *buffer.Slice // nil while idle with nothing unread (server only)
	rb    []byte        // rslab's bytes; unread ones are rb[r:w]
	small [256]byte     // what an idle connection reads into (fill)
	r, w  int

	dec      *hpackDecoder // read loop only
	maxBlock int           // the largest header block accepted (maxBlockBytes)

	lastRead atomic.Int64 // when the last bytes arrived (unix nanoseconds), for the PINGs

	mu     sync.Mutex
	closed bool

	wbuf, wspare []byte
	flushing     bool
	werr         error
	writeWait    int // streams waiting for window or for the write buffer to drain
	enc          *hpack.Encoder
	encBuf       bytes.Buffer
	intern       map[string]string // nil: strings are used in place (no dynamic table)

	peerWindow   int32  // the peer's SETTINGS_INITIAL_WINDOW_SIZE
	peerMaxFrame uint32 // the peer's SETTINGS_MAX_FRAME_SIZE
	sendWindow   int64  // connection-level send window
	recvWindow   int64  // connection-level bytes the peer may still send
	recvUnacked  int64  // consumed bytes not yet given back
}

// initCore sets the core's fields for a new connection.
func (c *connCore) initCore(nc net.Conn, role connRole, maxFrame, connWindow, streamWindow uint32, pingOn bool) {
	c.nc, c.role = nc, role
	c.maxFrame, c.connWindow, c.streamWindow, c.pingOn = maxFrame, connWindow, streamWindow, pingOn
	c.peerWindow = defaultWindow
	c.peerMaxFrame = minMaxFrame
	c.sendWindow = defaultWindow
	c.recvWindow = int64(connWindow)
	c.enc = hpack.NewEncoder(&c.encBuf)
}

// fill makes at least n unread bytes available in the read buffer, letting
// the role flush queued writes before it waits for the socket. The pooled
// buffer is given back while the role says the connection is idle with
// nothing unread: the wait then reads into the small array, and the buffer
// is taken again once bytes came.
func (c *connCore) fill(n int) error {
	if c.w-c.r >= n {
		return nil
	}
	if c.rb != nil && n > len(c.rb) {
		// A frame larger than the buffer: move to a larger pooled one.
		ns := buffer.Get(n)
		c.w = copy(ns.Bytes(), c.rb[c.r:c.w])
		c.r = 0
		c.rslab.Release()
		c.rslab, c.rb = ns, ns.Bytes()
	}
	if c.r > 0 {
		c.w = copy(c.rb, c.rb[c.r:c.w])
		c.r = 0
	}
	for c.w < n {
		c.mu.Lock()
		idle, err := c.role.beforeReadLocked()
		c.mu.Unlock()
		if err != nil {
			return err
		}
		if idle && c.w == 0 && c.rb != nil {
			c.rslab.Release()
			c.rslab, c.rb = nil, nil
		}
		var m int
		if c.rb == nil {
			m, err = c.nc.Read(c.small[:])
			if m > 0 {
				c.rslab = buffer.Get(max(n, 16<<10))
				c.rb = c.rslab.Bytes()
				c.w = copy(c.rb, c.small[:m])
			}
		} else {
			m, err = c.nc.Read(c.rb[c.w:])
			c.w += m
		}
		if m > 0 && c.pingOn {
			c.lastRead.Store(time.Now().UnixNano())
		}
		if err != nil && c.w < n {
			return err
		}
	}
	return nil
}

// readFrame reads the next frame; its payload is valid until the next call.
func (c *connCore) readFrame(f *frame) error {
	if err := c.fill(frameHeaderLen); err != nil {
		return err
	}
	f.parseHeader(c.rb[c.r:])
	if f.length > c.maxFrame {
		return connError{http2.ErrCodeFrameSize, fmt.Sprintf("frame of %d bytes", f.length)}
	}
	n := frameHeaderLen + int(f.length)
	if err := c.fill(n); err != nil {
		return err
	}
	f.payload = c.rb[c.r+frameHeaderLen : c.r+n]
	c.r += n
	return nil
}

// releaseReadBuf gives the read buffer back once the read loop ended.
func (c *connCore) releaseReadBuf() {
	if c.rslab != nil {
		c.rslab.Release()
		c.rslab, c.rb = nil, nil
	}
}

// flushLocked sends the write buffer unless another goroutine is already
// sending it (that one sends what was queued meanwhile too). c.mu is
// released during the write.
func (c *connCore) flushLocked() {
	if c.flushing || len(c.wbuf) == 0 || c.closed || c.werr != nil {
		return
	}
	c.flushing = true
	for len(c.wbuf) > 0 && c.werr == nil && !c.closed {
		buf := c.wbuf
		c.wbuf = c.wspare[:0]
		c.mu.Unlock()
		_, err := c.nc.Write(buf)
		c.mu.Lock()
		if cap(buf) <= 4*writeHighWater {
			c.wspare = buf[:0]
		} else {
			c.wspare = nil
		}
		if err != nil {
			c.werr = err
			c.role.writeFailedLocked(err)
		}
		c.role.wakeWritersLocked()
	}
	c.flushing = false
}

// flushAllLocked sends the write buffer before the connection closes,
// waiting (a bounded while) for a write in progress on another goroutine.
func (c *connCore) flushAllLocked() {
	for i := 0; c.flushing && i < 1000; i++ {
		c.mu.Unlock()
		time.Sleep(time.Millisecond)
		c.mu.Lock()
	}
	c.flushLocked()
}

// str returns b as a string for the HPACK encoder: without an intern map
// (no dynamic table: the encoder keeps nothing) the bytes are used in
// place; with one a string made before for the same bytes is reused.
func (c *connCore) str(b []byte) string {
	if c.intern == nil {
		return unsafeString(b)
	}
	if s, ok := c.intern[string(b)]; ok {
		return s
	}
	s := string(b)
	if len(c.intern) >= internMax {
		clear(c.intern)
	}
	c.intern[s] = s
	return s
}

// appendHeaderBlockLocked queues a HEADERS frame, and CONTINUATION frames
// when the block is larger than the peer's max frame size.
func (c *connCore) appendHeaderBlockLocked(id uint32, block []byte, end bool) {
	typ, flags := frameHeaders, byte(0)
	if end {
		flags = flagEndStream
	}
	for first := true; first || len(block) > 0; first = false {
		n := min(len(block), int(c.peerMaxFrame))
		f := flags
		if n == len(block) {
			f |= flagEndHeaders
		}
		c.wbuf = appendFrame(c.wbuf, typ, f, id, block[:n])
		block = block[n:]
		typ, flags = frameContinuation, 0
	}
}

// creditConnLocked gives n connection-window bytes back, in batches of half
// the window.
func (c *connCore) creditConnLocked(n int64) {
	c.recvUnacked += n
	if c.recvUnacked >= int64(c.connWindow)/2 {
		c.wbuf = appendWindowUpdate(c.wbuf, 0, uint32(c.recvUnacked))
		c.recvWindow += c.recvUnacked
		c.recvUnacked = 0
	}
}

// takeConnWindowLocked charges a DATA frame of n bytes to the connection's
// receive window.
func (c *connCore) takeConnWindowLocked(n int64) error {
	if n > c.recvWindow {
		return connError{http2.ErrCodeFlowControl, "connection window exceeded"}
	}
	c.recvWindow -= n
	return nil
}

// onPing answers a PING.
func (c *connCore) onPing(f *frame) error {
	if f.id != 0 {
		return connError{http2.ErrCodeProtocol, "PING on a stream"}
	}
	if len(f.payload) != 8 {
		return connError{http2.ErrCodeFrameSize, "PING length"}
	}
	if !f.has(flagAck) {
		c.mu.Lock()
		c.wbuf = appendFrame(c.wbuf, framePing, flagAck, 0, f.payload)
		c.mu.Unlock()
	}
	return nil
}

// onSettings applies the peer's SETTINGS and queues the ACK; the settings
// the core does not handle go to the role.
func (c *connCore) onSettings(f *frame) error {
	if f.id != 0 {
		return connError{http2.ErrCodeProtocol, "SETTINGS on a stream"}
	}
	if f.has(flagAck) {
		if len(f.payload) != 0 {
			return connError{http2.ErrCodeFrameSize, "SETTINGS ACK with a payload"}
		}
		return nil
	}
	if len(f.payload)%6 != 0 {
		return connError{http2.ErrCodeFrameSize, "SETTINGS length"}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for p := f.payload; len(p) > 0; p = p[6:] {
		id, v := http2.SettingID(binary.BigEndian.Uint16(p)), binary.BigEndian.Uint32(p[2:])
		switch id {
		case http2.SettingInitialWindowSize:
			if v > maxWindow {
				return connError{http2.ErrCodeFlowControl, "SETTINGS_INITIAL_WINDOW_SIZE"}
			}
			delta := int64(v) - int64(c.peerWindow)
			c.peerWindow = int32(v)
			if err := c.role.addSendWindowLocked(delta); err != nil {
				return err
			}
		case http2.SettingMaxFrameSize:
			if v < minMaxFrame || v > maxMaxFrame {
				return connError{http2.ErrCodeProtocol, "SETTINGS_MAX_FRAME_SIZE"}
			}
			c.peerMaxFrame = v
		default:
			if err := c.role.settingLocked(id, v); err != nil {
				return err
			}
		}
	}
	c.wbuf = appendFrame(c.wbuf, frameSettings, flagAck, 0, nil)
	return nil
}

// windowUpdate checks a WINDOW_UPDATE and applies one for the connection
// (stream 0, then incr is 0); for a stream it returns the increment, which
// may be 0 (a stream error).
func (c *connCore) windowUpdate(f *frame) (incr int64, err error) {
	if len(f.payload) != 4 {
		return 0, connError{http2.ErrCodeFrameSize, "WINDOW_UPDATE length"}
	}
	incr = int64(binary.BigEndian.Uint32(f.payload) & 0x7fffffff)
	if f.id != 0 {
		return incr, nil
	}
	if incr == 0 {
		return 0, connError{http2.ErrCodeProtocol, "WINDOW_UPDATE of 0"}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.sendWindow += incr; c.sendWindow > maxWindow {
		return 0, connError{http2.ErrCodeFlowControl, "connection window overflow"}
	}
	c.role.wakeWritersLocked()
	return 0, nil
}

// feedBlock decodes fragment p of a header block of which *n bytes came
// before, and checks the end of the block on END_HEADERS. The error is a
// connection error; decodeFailed says the HPACK data was bad (the block
// is dropped), as opposed to a block past maxBlock.
func (c *connCore) feedBlock(n *int, p []byte, end bool) (decodeFailed bool, err error) {
	*n += len(p)
	if *n > c.maxBlock {
		return false, connError{http2.ErrCodeEnhanceYourCalm, "header block too large"}
	}
	if err := c.dec.write(p); err != nil {
		c.dec.close()
		return true, connError{http2.ErrCodeCompression, err.Error()}
	}
	if end {
		if err := c.dec.close(); err != nil {
			return true, connError{http2.ErrCodeCompression, err.Error()}
		}
	}
	return false, nil
}

// defaultTo sets *v to d when it is zero.
func defaultTo(v *uint32, d uint32) {
	if *v == 0 {
		*v = d
	}
}

// clampSettings bounds the settings both sides share to what RFC 9113
// allows: windows up to 2^31-1 (the connection's at least the initial
// 65535), frames between 16384 and 2^24-1.
func clampSettings(streamWindow, connWindow, maxFrame *uint32) {
	*streamWindow = min(*streamWindow, maxWindow)
	*connWindow = min(max(*connWindow, defaultWindow), maxWindow)
	*maxFrame = min(max(*maxFrame, minMaxFrame), maxMaxFrame)
}
