package h2

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"time"

	"golang.org/x/net/http2"

	"github.com/outrider-proxy/outrider/proxy/buffer"
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
	cc.rslab.Release()
	cc.rslab, cc.rb = nil, nil
	close(cc.done)
}

// fill makes at least n unread bytes available in the read buffer, sending
// queued writes before it waits for the socket.
func (cc *ClientConn) fill(n int) error {
	if cc.w-cc.r >= n {
		return nil
	}
	if n > len(cc.rb) {
		ns := buffer.Get(n)
		cc.w = copy(ns.Bytes(), cc.rb[cc.r:cc.w])
		cc.r = 0
		cc.rslab.Release()
		cc.rslab, cc.rb = ns, ns.Bytes()
	}
	if cc.r > 0 {
		cc.w = copy(cc.rb, cc.rb[cc.r:cc.w])
		cc.r = 0
	}
	for cc.w < n {
		cc.mu.Lock()
		cc.flushLocked()
		closed := cc.closed
		cc.mu.Unlock()
		if closed {
			return cc.Err()
		}
		m, err := cc.nc.Read(cc.rb[cc.w:])
		cc.w += m
		if m > 0 && cc.cfg.PingInterval > 0 {
			cc.mu.Lock()
			cc.lastRead = time.Now().UnixNano()
			cc.mu.Unlock()
		}
		if err != nil && cc.w < n {
			return err
		}
	}
	return nil
}

// readFrames reads and handles frames until an error.
func (cc *ClientConn) readFrames() error {
	var f frame
	for first := true; ; first = false {
		if err := cc.fill(frameHeaderLen); err != nil {
			return err
		}
		f.parseHeader(cc.rb[cc.r:])
		if f.length > cc.cfg.MaxFrameSize {
			return connError{http2.ErrCodeFrameSize, fmt.Sprintf("frame of %d bytes", f.length)}
		}
		n := frameHeaderLen + int(f.length)
		if err := cc.fill(n); err != nil {
			return err
		}
		f.payload = cc.rb[cc.r+frameHeaderLen : cc.r+n]
		cc.r += n
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
		return cc.onSettings(f)
	case framePushPromise:
		return connError{http2.ErrCodeProtocol, "PUSH_PROMISE with push disabled"}
	case framePing:
		if f.id != 0 {
			return connError{http2.ErrCodeProtocol, "PING on a stream"}
		}
		if len(f.payload) != 8 {
			return connError{http2.ErrCodeFrameSize, "PING length"}
		}
		if !f.has(flagAck) {
			cc.mu.Lock()
			cc.wbuf = appendFrame(cc.wbuf, framePing, flagAck, 0, f.payload)
			cc.mu.Unlock()
		}
		return nil
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

func (cc *ClientConn) onSettings(f *frame) error {
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
	cc.mu.Lock()
	defer cc.mu.Unlock()
	if !cc.settingsSeen {
		// The server's first SETTINGS replaces the assumed stream limit;
		// without MAX_CONCURRENT_STREAMS there is none.
		cc.settingsSeen = true
		cc.peerMaxStreams = maxWindow
	}
	for p := f.payload; len(p) > 0; p = p[6:] {
		id, v := http2.SettingID(binary.BigEndian.Uint16(p)), binary.BigEndian.Uint32(p[2:])
		switch id {
		case http2.SettingEnablePush:
			if v != 0 {
				return connError{http2.ErrCodeProtocol, "SETTINGS_ENABLE_PUSH from a server"}
			}
		case http2.SettingMaxConcurrentStreams:
			cc.peerMaxStreams = v
		case http2.SettingInitialWindowSize:
			if v > maxWindow {
				return connError{http2.ErrCodeFlowControl, "SETTINGS_INITIAL_WINDOW_SIZE"}
			}
			delta := int64(v) - int64(cc.peerWindow)
			cc.peerWindow = int32(v)
			for _, s := range cc.streams {
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
			cc.peerMaxFrame = v
		case http2.SettingHeaderTableSize:
			cc.enc.SetMaxDynamicTableSizeLimit(min(v, cc.cfg.HeaderTableSize))
		}
	}
	cc.wbuf = appendFrame(cc.wbuf, frameSettings, flagAck, 0, nil)
	return nil
}

func (cc *ClientConn) onWindowUpdate(f *frame) error {
	if len(f.payload) != 4 {
		return connError{http2.ErrCodeFrameSize, "WINDOW_UPDATE length"}
	}
	incr := int64(binary.BigEndian.Uint32(f.payload) & 0x7fffffff)
	if f.id == 0 {
		if incr == 0 {
			return connError{http2.ErrCodeProtocol, "WINDOW_UPDATE of 0"}
		}
		cc.mu.Lock()
		defer cc.mu.Unlock()
		if cc.sendWindow += incr; cc.sendWindow > maxWindow {
			return connError{http2.ErrCodeFlowControl, "connection window overflow"}
		}
		cc.wakeWritersLocked()
		return nil
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
	if n > cc.recvWindow {
		return connError{http2.ErrCodeFlowControl, "connection window exceeded"}
	}
	cc.recvWindow -= n
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
