package h2

import (
	"encoding/binary"

	"golang.org/x/net/http2"
)

// beforeReadLocked starts the handlers of the streams opened since the last
// wait, settles the streams freed meanwhile and sends queued writes; the connection is idle without streams or handlers.
func (c *Conn) beforeReadLocked() (idle bool, err error) {
	c.startPendingLocked()
	c.open -= c.freed
	c.freed = 0
	c.flushLocked()
	return c.handlers == 0 && len(c.streams) == 0, nil
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
		return c.onPing(f)
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

// settingLocked applies the client's settings the core leaves to the
// server side.
func (c *Conn) settingLocked(id http2.SettingID, v uint32) error {
	switch id {
	case http2.SettingEnablePush:
		if v > 1 {
			return connError{http2.ErrCodeProtocol, "SETTINGS_ENABLE_PUSH"}
		}
	case http2.SettingHeaderTableSize:
		c.enc.SetMaxDynamicTableSizeLimit(min(v, 4096))
	}
	return nil
}

// addSendWindowLocked moves every open stream's send window by delta.
func (c *Conn) addSendWindowLocked(delta int64) error {
	for _, s := range c.streams {
		s.sendWindow += delta
		if s.sendWindow > maxWindow {
			return connError{http2.ErrCodeFlowControl, "window overflow"}
		}
		s.cond.Broadcast()
	}
	return nil
}

func (c *Conn) onWindowUpdate(f *frame) error {
	incr, err := c.windowUpdate(f)
	if err != nil || f.id == 0 {
		return err
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
	if err := c.takeConnWindowLocked(n); err != nil {
		return err
	}
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
