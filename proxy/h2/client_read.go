package h2

import (
	"encoding/binary"
	"errors"
	"io"

	"golang.org/x/net/http2"
)

// readLoop reads the connection until it ends, then fails what is left.
func (cc *ClientConn) readLoop() {
	err := cc.readFrames()
	cc.mu.Lock()
	var ce connError
	var cerr *ClientConnError
	switch {
	case errors.As(err, &ce):
		cc.wbuf = appendGoAway(cc.wbuf, 0, ce.Code, nil)
		cc.flushAllLocked()
		cerr = &ClientConnError{Code: ce.Code, Reason: ce.Reason}
	case cc.goAwayErr != nil:
		cerr = cc.goAwayErr
	case errors.Is(err, io.EOF):
		cerr = &ClientConnError{Code: http2.ErrCodeNo, Remote: true, Reason: "server closed the connection"}
	default:
		cerr = &ClientConnError{Code: http2.ErrCodeNo, Remote: true, Reason: err.Error()}
	}
	cc.closeLocked(cerr)
	cc.mu.Unlock()
	cc.releaseReadBuf()
	close(cc.done)
}

// beforeReadLocked sends queued writes; a closed connection ends the read
// loop with its error. The read buffer is kept while the connection lives.
func (cc *ClientConn) beforeReadLocked() (idle bool, err error) {
	cc.flushLocked()
	if cc.closed {
		return false, cc.err
	}
	return false, nil
}

// readFrames reads and handles frames until an error.
func (cc *ClientConn) readFrames() error {
	var f frame
	for first := true; ; first = false {
		if err := cc.readFrame(&f); err != nil {
			return err
		}
		if first && (f.typ != frameSettings || f.has(flagAck)) {
			return connError{http2.ErrCodeProtocol, "first server frame is not SETTINGS"}
		}
		if err := cc.process(&f); err != nil {
			return err
		}
	}
}

// process handles one frame; the error is a connection error.
func (cc *ClientConn) process(f *frame) error {
	if cc.hb.active && (f.typ != frameContinuation || f.id != cc.hb.id) {
		return connError{http2.ErrCodeProtocol, "frame inside a header block"}
	}
	switch f.typ {
	case frameData:
		return cc.onData(f)
	case frameHeaders:
		return cc.onHeaders(f)
	case frameContinuation:
		if !cc.hb.active {
			return connError{http2.ErrCodeProtocol, "CONTINUATION without HEADERS"}
		}
		return cc.onFragment(f.payload, f.has(flagEndHeaders))
	case frameRSTStream:
		return cc.onRST(f)
	case frameSettings:
		if !f.has(flagAck) {
			cc.firstSettings()
		}
		return cc.onSettings(f)
	case framePushPromise:
		return connError{http2.ErrCodeProtocol, "PUSH_PROMISE with push disabled"}
	case framePing:
		return cc.onPing(f)
	case frameGoAway:
		return cc.onGoAway(f)
	case frameWindowUpdate:
		return cc.onWindowUpdate(f)
	case framePriority:
		if f.id == 0 {
			return connError{http2.ErrCodeProtocol, "PRIORITY on stream 0"}
		}
	}
	return nil // unknown frame types are ignored
}

// isIdle reports whether id names a stream this side has not opened.
func (cc *ClientConn) isIdle(id uint32) bool {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	return id >= cc.nextID
}

func (cc *ClientConn) onGoAway(f *frame) error {
	if f.id != 0 {
		return connError{http2.ErrCodeProtocol, "GOAWAY on a stream"}
	}
	if len(f.payload) < 8 {
		return connError{http2.ErrCodeFrameSize, "GOAWAY length"}
	}
	last := binary.BigEndian.Uint32(f.payload) & 0x7fffffff
	code := http2.ErrCode(binary.BigEndian.Uint32(f.payload[4:]))
	cc.mu.Lock()
	defer cc.mu.Unlock()
	if cc.goAway && last > cc.goAwayLast {
		last = cc.goAwayLast // a later GOAWAY may only lower it
	}
	cc.goAway, cc.goAwayLast = true, last
	if code != http2.ErrCodeNo {
		cc.goAwayErr = &ClientConnError{Code: code, Remote: true, Reason: "GOAWAY " + string(f.payload[8:])}
	}
	for id, s := range cc.streams {
		if id > last {
			s.failLocked(ErrUnprocessed)
		}
	}
	cc.closeIfIdleLocked()
	return nil
}

func (cc *ClientConn) onRST(f *frame) error {
	if f.id == 0 {
		return connError{http2.ErrCodeProtocol, "RST_STREAM on stream 0"}
	}
	if len(f.payload) != 4 {
		return connError{http2.ErrCodeFrameSize, "RST_STREAM length"}
	}
	if cc.isIdle(f.id) {
		return connError{http2.ErrCodeProtocol, "RST_STREAM on an idle stream"}
	}
	code := http2.ErrCode(binary.BigEndian.Uint32(f.payload))
	cc.mu.Lock()
	defer cc.mu.Unlock()
	s := cc.streams[f.id]
	if s == nil {
		return nil
	}
	if code == http2.ErrCodeNo && s.remoteEnded {
		// The response is complete; the server wants no more of the
		// request (RFC 9113 section 8.1): stop sending, keep the response.
		s.localEndLocked()
		s.cond.Broadcast()
		return nil
	}
	s.failLocked(&StreamError{Code: code, Remote: true})
	cc.closeIfIdleLocked()
	return nil
}

// firstSettings replaces the assumed stream limit when the server's first
// SETTINGS arrives: without MAX_CONCURRENT_STREAMS there is none.
func (cc *ClientConn) firstSettings() {
	cc.mu.Lock()
	if !cc.settingsSeen {
		cc.settingsSeen = true
		cc.peerMaxStreams = maxWindow
	}
	cc.mu.Unlock()
}

// settingLocked applies the server's settings the core leaves to the
// client side.
func (cc *ClientConn) settingLocked(id http2.SettingID, v uint32) error {
	switch id {
	case http2.SettingEnablePush:
		if v != 0 {
			return connError{http2.ErrCodeProtocol, "SETTINGS_ENABLE_PUSH from a server"}
		}
	case http2.SettingMaxConcurrentStreams:
		cc.peerMaxStreams = v
	case http2.SettingHeaderTableSize:
		cc.enc.SetMaxDynamicTableSizeLimit(min(v, cc.cfg.HeaderTableSize))
	}
	return nil
}

// addSendWindowLocked moves every open stream's send window by delta.
func (cc *ClientConn) addSendWindowLocked(delta int64) error {
	for _, s := range cc.streams {
		s.sendWindow += delta
		if s.sendWindow > maxWindow {
			return connError{http2.ErrCodeFlowControl, "window overflow"}
		}
		s.cond.Broadcast()
	}
	return nil
}

func (cc *ClientConn) onWindowUpdate(f *frame) error {
	incr, err := cc.windowUpdate(f)
	if err != nil || f.id == 0 {
		return err
	}
	if cc.isIdle(f.id) {
		return connError{http2.ErrCodeProtocol, "WINDOW_UPDATE on an idle stream"}
	}
	cc.mu.Lock()
	defer cc.mu.Unlock()
	s := cc.streams[f.id]
	if s == nil {
		return nil
	}
	if incr == 0 {
		s.resetLocked(http2.ErrCodeProtocol)
		return nil
	}
	if s.sendWindow += incr; s.sendWindow > maxWindow {
		s.resetLocked(http2.ErrCodeFlowControl)
		return nil
	}
	s.cond.Broadcast()
	return nil
}

// onData takes a DATA frame: flow control at both levels, then the bytes go
// to the stream's receive buffer.
func (cc *ClientConn) onData(f *frame) error {
	if f.id == 0 || cc.isIdle(f.id) {
		return connError{http2.ErrCodeProtocol, "DATA on an idle stream"}
	}
	p, ok := stripPadding(f)
	if !ok {
		return connError{http2.ErrCodeProtocol, "DATA padding"}
	}
	n := int64(f.length)
	cc.mu.Lock()
	defer cc.mu.Unlock()
	if err := cc.takeConnWindowLocked(n); err != nil {
		return err
	}
	s := cc.streams[f.id]
	switch {
	case s == nil:
		cc.creditConnLocked(n) // a stream this side ended: ignored
		return nil
	case s.remoteEnded:
		cc.creditConnLocked(n)
		s.resetLocked(http2.ErrCodeStreamClosed)
		return nil
	case !s.gotHeaders:
		cc.creditConnLocked(n)
		s.resetLocked(http2.ErrCodeProtocol)
		return nil
	case n > int64(s.recvWindow):
		cc.creditConnLocked(n)
		s.resetLocked(http2.ErrCodeFlowControl)
		return nil
	}
	s.recvWindow -= int32(n)
	if pad := n - int64(len(p)); pad > 0 {
		// Padding is never handed to the caller: give it back now.
		cc.creditConnLocked(pad)
		s.creditLocked(int32(pad))
	}
	s.received += int64(len(p))
	if s.contentLength >= 0 && s.received > s.contentLength {
		cc.creditConnLocked(int64(len(p)))
		s.resetLocked(http2.ErrCodeProtocol)
		return nil
	}
	if len(p) > 0 {
		s.appendRxLocked(p)
	}
	if f.has(flagEndStream) {
		if s.contentLength >= 0 && s.received != s.contentLength {
			s.resetLocked(http2.ErrCodeProtocol)
			return nil
		}
		s.remoteEndLocked()
	}
	s.cond.Broadcast()
	return nil
}
