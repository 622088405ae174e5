package h2

import (
	"golang.org/x/net/http2"

	"github.com/outrider-proxy/outrider/proxy/headers"
)

// clientBlock is the response header block being read: a HEADERS frame and
// its CONTINUATION frames. The read loop owns it; fields are decoded into
// scratch and handed to the stream (by swapping maps) under the lock once
// the block is complete, so a stream released meanwhile is never written.
type clientBlock struct {
	active    bool // waiting for CONTINUATION
	id        uint32
	decode    bool // fields go to scratch; false: decoded for the HPACK state only
	trailers  bool
	endStream bool
	bytes     int // block bytes so far
	size      int // header list size (RFC 9113 section 6.5.2)
	count     int // fields so far
	bad       bool
	tooLarge  bool
	status    int // -1: none
	regular   bool
	cl        int64 // content-length; -1: none
	scratch   headers.Map
}

func (cc *ClientConn) onHeaders(f *frame) error {
	id := f.id
	p, _, err := headersPayload(f, "HEADERS on a server stream id")
	if err != nil {
		return err
	}
	b := &cc.hb
	*b = clientBlock{active: true, id: id, endStream: f.has(flagEndStream), status: -1, cl: -1, scratch: b.scratch}
	b.scratch.Reset()
	cc.mu.Lock()
	if id >= cc.nextID {
		cc.mu.Unlock()
		return connError{http2.ErrCodeProtocol, "HEADERS on an idle stream"}
	}
	if s := cc.streams[id]; s != nil {
		switch {
		case s.remoteEnded:
			s.resetLocked(http2.ErrCodeStreamClosed)
		case s.gotHeaders:
			b.decode, b.trailers = true, true
		default:
			b.decode = true
		}
	}
	cc.mu.Unlock()
	cc.dec.emitOff = !b.decode
	return cc.onFragment(p, f.has(flagEndHeaders))
}

// onFragment decodes one fragment of the block and ends it on END_HEADERS.
func (cc *ClientConn) onFragment(p []byte, end bool) error {
	b := &cc.hb
	if bad, err := cc.feedBlock(&b.bytes, p, end); err != nil {
		if bad {
			b.active = false
		}
		return err
	}
	if !end {
		return nil
	}
	b.active = false
	if b.decode {
		cc.endBlock()
	}
	return nil
}

// onField is the HPACK decoder's emit function: it validates one response
// field (RFC 9113 sections 8.2 and 8.3.2) and copies it into scratch.
func (cc *ClientConn) onField(name, value []byte) {
	b := &cc.hb
	b.size += len(name) + len(value) + 32
	b.count++
	if !b.decode || b.bad || b.tooLarge {
		return
	}
	if b.size > int(cc.cfg.MaxHeaderListSize) || (cc.cfg.MaxHeaderCount > 0 && b.count > cc.cfg.MaxHeaderCount) {
		b.tooLarge = true
		cc.dec.emitOff = true // the rest is decoded for the table only
		return
	}
	if !validName(name) || !validValue(value) {
		b.bad = true
		return
	}
	if name[0] == ':' {
		if string(name) != headers.Status || b.trailers || b.regular || b.status >= 0 || !validStatus(value) {
			b.bad = true
			return
		}
		b.status = int(value[0]-'0')*100 + int(value[1]-'0')*10 + int(value[2]-'0')
	} else {
		b.regular = true
		switch string(name) {
		case "connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade":
			b.bad = true
			return
		case "content-length":
			n, ok := parseLength(value)
			if !ok || (b.cl >= 0 && b.cl != n) {
				b.bad = true
				return
			}
			if b.cl >= 0 {
				return // the same value again: kept once
			}
			b.cl = n
		}
	}
	b.scratch.AddCopy(name, value)
}

func validStatus(v []byte) bool {
	return len(v) == 3 && v[0] >= '1' && v[0] <= '9' && v[1] >= '0' && v[1] <= '9' && v[2] >= '0' && v[2] <= '9'
}

// endBlock hands a complete block to its stream: the final response
// headers, a 1xx (dropped), or trailers. A malformed block resets the
// stream with PROTOCOL_ERROR.
func (cc *ClientConn) endBlock() {
	b := &cc.hb
	cc.mu.Lock()
	defer cc.mu.Unlock()
	s := cc.streams[b.id]
	if s == nil || s.err != nil || s.remoteEnded || s.gotHeaders != b.trailers {
		return // released or reset meanwhile
	}
	if b.bad || b.tooLarge {
		s.resetLocked(http2.ErrCodeProtocol)
		return
	}
	if b.trailers {
		if !b.endStream || (s.contentLength >= 0 && s.received != s.contentLength) {
			s.resetLocked(http2.ErrCodeProtocol)
			return
		}
		s.trailers, b.scratch = b.scratch, s.trailers
		s.remoteEndLocked()
		s.cond.Broadcast()
		return
	}
	switch {
	case b.status < 0, b.status == 101:
		s.resetLocked(http2.ErrCodeProtocol)
		return
	case b.status < 200:
		if b.endStream {
			s.resetLocked(http2.ErrCodeProtocol)
			return
		}
		if b.status == 100 {
			s.got100 = true
			s.cond.Broadcast()
		}
		return
	}
	cl := b.cl
	if s.head || b.status == 204 || b.status == 304 {
		cl = -1 // content-length describes a body not sent
	}
	if b.endStream && cl > 0 {
		s.resetLocked(http2.ErrCodeProtocol)
		return
	}
	s.resp, b.scratch = b.scratch, s.resp
	s.gotHeaders, s.contentLength = true, cl
	if b.endStream {
		s.remoteEndLocked()
	}
	s.cond.Broadcast()
}
