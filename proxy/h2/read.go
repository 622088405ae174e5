package h2

import (
	"encoding/binary"
	"fmt"
	"time"

	"golang.org/x/net/http2"

	"github.com/outrider-proxy/outrider/proxy/buffer"
)

// fill makes at least n unread bytes available in the read buffer, flushing
// queued writes before it waits for the socket. The pooled buffer is given
// back while the connection is idle (no stream) with nothing unread: the
// wait then reads into the small array, and the buffer is taken again once
// bytes came.
func (c *Conn) fill(n int) error {
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
		c.open -= c.freed
		c.freed = 0
		c.flushLocked()
		idle := c.handlers == 0 && len(c.streams) == 0
		c.mu.Unlock()
		if idle && c.w == 0 && c.rb != nil {
			c.rslab.Release()
			c.rslab, c.rb = nil, nil
		}
		var m int
		var err error
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
		if m > 0 && c.cfg.PingInterval > 0 {
			c.lastRead.Store(time.Now().UnixNano())
		}
		if err != nil && c.w < n {
			return err
		}
	}
	return nil
}

// readFrame reads the next frame; its payload is valid until the next call.
func (c *Conn) readFrame(f *frame) error {
	if err := c.fill(frameHeaderLen); err != nil {
		return err
	}
	f.parseHeader(c.rb[c.r:])
	if f.length > c.cfg.MaxFrameSize {
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

func (c *Conn) readLoop() error {
	if !c.cfg.PrefaceRead {
		if err := c.fill(prefaceLen); err != nil {
			return err
		}
		if string(c.rb[:prefaceLen]) != http2.ClientPreface {
			return connError{http2.ErrCodeProtocol, "bad client preface"}
		}
		c.r += prefaceLen
	}
	var f frame
	first := true
	for {
		if err := c.readFrame(&f); err != nil {
			return err
		}
		if first && (f.typ != frameSettings || f.has(flagAck)) {
			return connError{http2.ErrCodeProtocol, "first frame is not SETTINGS"}
		}
		first = false
		if err := c.process(&f); err != nil {
			return err
		}
		c.mu.Lock()
		closed := c.closed
		c.mu.Unlock()
		if closed {
			return nil
		}
	}
}

// process handles one frame; the error is a connection error or a failed write.
func (c *Conn) process(f *frame) error {
	if c.hb.active && (f.typ != frameContinuation || f.id != c.hb.id) {
		return connError{http2.ErrCodeProtocol, "frame inside a header block"}
	}
	switch f.typ {
	case frameData:
		return c.onData(f)
	case frameHeaders:
		return c.onHeaders(f)
	case frameContinuation:
		if !c.hb.active {
			return connError{http2.ErrCodeProtocol, "CONTINUATION without HEADERS"}
		}
		return c.onFragment(f.payload, f.has(flagEndHeaders))
	case framePriority:
		if f.id == 0 {
			return connError{http2.ErrCodeProtocol, "PRIORITY on stream 0"}
		}
		if len(f.payload) != 5 {
			c.streamError(f.id, http2.ErrCodeFrameSize)
			return nil
		}
		if binary.BigEndian.Uint32(f.payload)&0x7fffffff == f.id {
			c.streamError(f.id, http2.ErrCodeProtocol)
		}
		return nil
	case frameRSTStream:
		return c.onRST(f)
	case frameSettings:
		return c.onSettings(f)
	case framePushPromise:
		return connError{http2.ErrCodeProtocol, "PUSH_PROMISE from a client"}
	case framePing:
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
	case frameGoAway:
		if f.id != 0 {
			return connError{http2.ErrCodeProtocol, "GOAWAY on a stream"}
		}
		if len(f.payload) < 8 {
			return connError{http2.ErrCodeFrameSize, "GOAWAY length"}
		}
		c.mu.Lock()
		c.goAwayRecv = true
		c.mu.Unlock()
		return nil
	case frameWindowUpdate:
		return c.onWindowUpdate(f)
	}
	return nil // unknown frame types are ignored
}

// idle reports whether id was never opened by the client.
func (c *Conn) isIdle(id uint32) bool { return id > c.maxID }

// streamError resets stream id (RFC 9113 section 5.4.2) and forgets it.
func (c *Conn) streamError(id uint32, code http2.ErrCode) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if s := c.streams[id]; s != nil {
		s.resetLocked(code, false)
		return
	}
	c.wbuf = appendRST(c.wbuf, id, code)
}

func (c *Conn) onRST(f *frame) error {
	if f.id == 0 {
		return connError{http2.ErrCodeProtocol, "RST_STREAM on stream 0"}
	}
	if len(f.payload) != 4 {
		return connError{http2.ErrCodeFrameSize, "RST_STREAM length"}
	}
	if c.isIdle(f.id) {
		return connError{http2.ErrCodeProtocol, "RST_STREAM on an idle stream"}
	}
	code := http2.ErrCode(binary.BigEndian.Uint32(f.payload))
	c.mu.Lock()
	if s := c.streams[f.id]; s != nil {
		s.peerResetLocked(code)
	} else {
		// The client closed a stream this side reset: frames it sends on
		// it from now on are errors again, no longer ones in flight.
		c.forgetResetLocked(f.id)
	}
	c.mu.Unlock()
	return nil
}

func (c *Conn) onSettings(f *frame) error {
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
		case http2.SettingEnablePush:
			if v > 1 {
				return connError{http2.ErrCodeProtocol, "SETTINGS_ENABLE_PUSH"}
			}
		case http2.SettingInitialWindowSize:
			if v > maxWindow {
				return connError{http2.ErrCodeFlowControl, "SETTINGS_INITIAL_WINDOW_SIZE"}
			}
			delta := int64(v) - int64(c.peerWindow)
			c.peerWindow = int32(v)
			for _, s := range c.streams {
				s.sendWindow += delta
				if s.sendWindow > maxWindow {
					return connError{http2.ErrCodeFlowControl, "window overflow"}
				}
				s.cond.Broadcast()
			}
		case http2.SettingMaxFrameSize:
			if v < minMaxFrame || v > maxMaxFrame {
				return connError{http2.ErrCodeProtocol, "SETTINGS_MAX_FRAME_SIZE"}
			}
			c.peerMaxFrame = v
		case http2.SettingHeaderTableSize:
			c.enc.SetMaxDynamicTableSizeLimit(min(v, 4096))
		}
	}
	c.wbuf = appendFrame(c.wbuf, frameSettings, flagAck, 0, nil)
	return nil
}

func (c *Conn) onWindowUpdate(f *frame) error {
	if len(f.payload) != 4 {
		return connError{http2.ErrCodeFrameSize, "WINDOW_UPDATE length"}
	}
	incr := int64(binary.BigEndian.Uint32(f.payload) & 0x7fffffff)
	if f.id == 0 {
		if incr == 0 {
			return connError{http2.ErrCodeProtocol, "WINDOW_UPDATE of 0"}
		}
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.sendWindow += incr; c.sendWindow > maxWindow {
			return connError{http2.ErrCodeFlowControl, "connection window overflow"}
		}
		c.wakeWritersLocked()
		return nil
	}
	if c.isIdle(f.id) {
		return connError{http2.ErrCodeProtocol, "WINDOW_UPDATE on an idle stream"}
	}
	if incr == 0 {
		c.streamError(f.id, http2.ErrCodeProtocol)
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.streams[f.id]
	if s == nil {
		return nil
	}
	if s.sendWindow += incr; s.sendWindow > maxWindow {
		s.resetLocked(http2.ErrCodeFlowControl, false)
		return nil
	}
	s.cond.Broadcast()
	return nil
}

// onData takes a DATA frame: flow control at both levels, then the bytes go
// to the stream's receive buffer.
func (c *Conn) onData(f *frame) error {
	if f.id == 0 || c.isIdle(f.id) {
		return connError{http2.ErrCodeProtocol, "DATA on an idle stream"}
	}
	p, ok := stripPadding(f)
	if !ok {
		return connError{http2.ErrCodeProtocol, "DATA padding"}
	}
	n := int64(f.length)
	c.mu.Lock()
	defer c.mu.Unlock()
	if n > c.recvWindow {
		return connError{http2.ErrCodeFlowControl, "connection window exceeded"}
	}
	c.recvWindow -= n
	s := c.streams[f.id]
	if s == nil || s.remoteEnded {
		c.creditConnLocked(n)
		if e := c.resetEntryLocked(f.id); s == nil && e != nil {
			// In flight when this side reset the stream: ignored, unless
			// past the declared content-length (malformed, RFC 9113
			// section 8.1.1).
			e.body += int64(len(p))
			if e.cl >= 0 && (e.body > e.cl || f.has(flagEndStream) && e.body != e.cl) {
				c.wbuf = appendRST(c.wbuf, f.id, http2.ErrCodeProtocol)
				*e = resetStream{}
			}
			return nil
		}
		if s != nil {
			s.resetLocked(http2.ErrCodeStreamClosed, false)
		} else {
			c.wbuf = appendRST(c.wbuf, f.id, http2.ErrCodeStreamClosed)
		}
		return nil
	}
	if n > int64(s.recvWindow) {
		c.creditConnLocked(n)
		s.resetLocked(http2.ErrCodeFlowControl, false)
		return nil
	}
	s.recvWindow -= int32(n)
	if pad := n - int64(len(p)); pad > 0 {
		// Padding is never handed to the handler: give it back now.
		c.creditConnLocked(pad)
		s.creditLocked(int32(pad))
	}
	s.received += int64(len(p))
	if s.contentLength >= 0 && s.received > s.contentLength {
		s.resetLocked(http2.ErrCodeProtocol, false)
		return nil
	}
	if len(p) > 0 {
		s.appendRxLocked(p)
	}
	if f.has(flagEndStream) {
		if s.contentLength >= 0 && s.received != s.contentLength {
			s.resetLocked(http2.ErrCodeProtocol, false)
			return nil
		}
		s.remoteEndLocked()
	}
	s.cond.Broadcast()
	return nil
}

// creditConnLocked gives n connection-window bytes back, in batches of half
// the window.
func (c *Conn) creditConnLocked(n int64) {
	c.recvUnacked += n
	if c.recvUnacked >= int64(c.cfg.InitialConnWindowSize)/2 {
		c.wbuf = appendWindowUpdate(c.wbuf, 0, uint32(c.recvUnacked))
		c.recvWindow += c.recvUnacked
		c.recvUnacked = 0
	}
}
